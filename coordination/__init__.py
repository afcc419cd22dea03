"""Short-lived coordination between replicas: duplicate-delivery keys, session locks, rate budgets, replies in
flight, named leases (Discord shards), the directory of replicas alive. Each sits behind a small interface with
an in-process implementation (one replica, the default, nothing to run) and a Redis one (`REDIS_URL` set: every
replica shares them).

`connect(redis_url)` is the one entry point: it returns a `Coordination` bundling them, in-process when the
URL is None. Nothing here imports the rest of Switchboard; `core/`, `bots/` and `switchboard/` import this.
The in-process budgets live in `bots/pacing.py` (the renderer owns pacing), so `budget()`/`budget_pool()` take
the in-process class as `local=` and return it when there is no Redis.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable
from typing import Any, TypeVar

from coordination._redis import DEFAULT_PREFIX, CoordinationUnavailable, make_client, ping_sentence
from coordination.budgets import FINAL, FIRST, PROGRESS, RedisBudget, RedisBudgetPool
from coordination.dedupe import DEFAULT_TTL_S, DeliveryKeys, LocalDeliveryKeys, RedisDeliveryKeys
from coordination.inflight import InflightRegistry, LocalInflightRegistry, RedisInflightRegistry
from coordination.leases import Leases, LocalLeases, RedisLeases
from coordination.locks import (DEFAULT_LEASE_S, Lease, LeaseLost, LocalSessionLocks, RedisSessionLocks,
                                SessionLocks)
from coordination.replicas import LocalReplicaDirectory, RedisReplicaDirectory, ReplicaDirectory

__all__ = [
    "FINAL", "FIRST", "PROGRESS", "Coordination", "CoordinationUnavailable", "DeliveryKeys", "InflightRegistry",
    "Lease", "LeaseLost", "Leases", "LocalDeliveryKeys", "LocalInflightRegistry", "LocalLeases", "LocalReplicaDirectory",
    "LocalSessionLocks", "RedisBudget", "RedisBudgetPool", "RedisDeliveryKeys", "RedisInflightRegistry", "RedisLeases",
    "RedisReplicaDirectory", "RedisSessionLocks", "ReplicaDirectory", "SessionLocks",
    "connect", "replica_name",
]

B = TypeVar("B")


def replica_name() -> str:
    """Who this process is, in the registry of replies in flight: host, pid and a random tail (pids recur)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Coordination:
    """The pieces one process uses. Build it with `connect()`; close it with `aclose()`."""

    def __init__(self, redis_url: str | None = None, *, prefix: str = DEFAULT_PREFIX,
                 lease_s: float = DEFAULT_LEASE_S, dedupe_ttl_s: float = DEFAULT_TTL_S,
                 replica_id: str | None = None) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.replica_id = replica_id or replica_name()
        self.lease_s = lease_s  # session locks and replies in flight: how soon a dead replica's are taken over
        self._dedupe_ttl_s = dedupe_ttl_s
        self._client = make_client(redis_url) if redis_url else None
        self._delivery_keys: dict[str, DeliveryKeys] = {}
        self.locks: SessionLocks
        self.inflight: InflightRegistry
        self.leases: Leases  # named resources held by one replica at a time (Discord shards)
        # The replicas alive, one member per process (REPLICA_ID may be shared by a replica's workers).
        self.replicas: ReplicaDirectory
        member = replica_name()
        if self._client is None:
            self.locks = LocalSessionLocks()
            self.inflight = LocalInflightRegistry(self.replica_id, lease_s=lease_s)
            self.leases = LocalLeases(self.replica_id)
            self.replicas = LocalReplicaDirectory(member)
        else:
            self.locks = RedisSessionLocks(self._client, prefix=prefix, lease_s=lease_s)
            self.inflight = RedisInflightRegistry(self._client, self.replica_id, prefix=prefix, lease_s=lease_s)
            self.leases = RedisLeases(self._client, self.replica_id, prefix=prefix)
            self.replicas = RedisReplicaDirectory(self._client, member, prefix=prefix)

    @property
    def backend(self) -> str:
        return "local" if self._client is None else "redis"

    @property
    def shared(self) -> bool:
        """True when other replicas see what this one does (Redis)."""
        return self._client is not None

    def delivery_keys(self, scope: str = "default", *, capacity: int = 10_000) -> DeliveryKeys:
        """The delivery memory for one front-end (`scope`: "slack", "discord", "web"); one object per scope."""
        keys = self._delivery_keys.get(scope)
        if keys is None:
            keys = (LocalDeliveryKeys(capacity) if self._client is None else
                    RedisDeliveryKeys(self._client, scope, prefix=self.prefix, ttl_s=self._dedupe_ttl_s))
            self._delivery_keys[scope] = keys
        return keys

    def budget(self, name: str, max_ops: int, window_s: float, *,
               local: Callable[[int, float], B]) -> B | RedisBudget:
        """One shared budget (Slack's workspace `chat.update`): `local(max_ops, window_s)` without Redis."""
        if self._client is None:
            return local(max_ops, window_s)
        return RedisBudget(self._client, name, max_ops, window_s, prefix=self.prefix)

    def budget_pool(self, name: str, max_ops: int, window_s: float, *,
                    local: Callable[[int, float], B]) -> B | RedisBudgetPool:
        """One budget per key (Slack posts per channel, Discord writes per channel)."""
        if self._client is None:
            return local(max_ops, window_s)
        return RedisBudgetPool(self._client, name, max_ops, window_s, prefix=self.prefix)

    async def ping(self) -> str | None:
        """None when coordination works; otherwise one sentence saying what is wrong and how to fix it."""
        if self._client is None or self.redis_url is None:
            return None
        return await ping_sentence(self._client, self.redis_url)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def connect(redis_url: str | Any | None, **options: Any) -> Coordination:
    """In-process coordination when `redis_url` is None or empty, Redis-backed otherwise (a pydantic `SecretStr`,
    as `Settings.redis_url` is, is accepted as it is). No I/O happens here (the first command connects); call
    `ping()` to check Redis answers."""
    if hasattr(redis_url, "get_secret_value"):
        redis_url = redis_url.get_secret_value()
    return Coordination(str(redis_url) if redis_url else None, **options)

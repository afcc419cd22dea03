"""Replies in flight, each under a lease, so a replica that dies mid-reply leaves a trace another can act on.

A reply being streamed is registered with where its message is (platform, session key, channel, message id or
ts, replica id) and a lease its replica renews while it runs (`track()` does both, and finishes it on the way
out, however the reply ends). A replica killed with SIGKILL stops renewing; once the lease has expired the
reply shows up in `orphans()` on every replica, and `claim(reply_id)` lets exactly one of them take it (it is
removed in the same atomic step), to edit the orphaned "Thinking…" message into "the answer was interrupted,
please ask again". `reap(handler)` is that loop's body: list, claim, hand over.

In-process (`LocalInflightRegistry`) the same interface runs on a dict; orphans only appear there if a reply
stopped renewing without finishing, which one process never does by dying, but tests and callers need not care
which one they have.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol, runtime_checkable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from coordination._redis import DEFAULT_PREFIX, NOW_LUA, Clock, now_arg, retry_when_back, us

log = logging.getLogger("coordination.inflight")

DEFAULT_LEASE_S = 15.0
FINISH_GIVE_UP_S = 300.0  # how long a finish Redis could not take is retried
Info = dict[str, Any]


@runtime_checkable
class InflightRegistry(Protocol):
    replica_id: str
    lease_s: float  # the lease a reply gets when none is given

    async def start(self, reply_id: str, info: Info, lease_s: float | None = None) -> None:
        """Register a reply (its `info` must be JSON-serialisable) under a lease of `lease_s` (None: the
        registry's own, `lease_s` given at construction)."""

    async def renew(self, reply_id: str, lease_s: float | None = None) -> bool:
        """Extend the lease; False when the reply is no longer registered (finished, or claimed as an orphan)."""

    async def finish(self, reply_id: str) -> None:
        """The reply ended (landed, failed readably, or was marked interrupted by its own replica)."""

    async def orphans(self, limit: int = 100) -> list[Info]:
        """Replies whose lease expired without `finish`: their info, with `reply_id` added."""

    async def claim(self, reply_id: str) -> bool:
        """Take an orphan: True for exactly one caller across replicas, and only while its lease is expired."""


class _Tracking:
    """Shared by both implementations: the lease-renewing context manager and the orphan sweep."""

    replica_id: str

    @asynccontextmanager
    async def track(self: Any, reply_id: str, info: Info, lease_s: float | None = None) -> AsyncIterator[None]:
        """Registered while the block runs, renewed every `lease_s / 3`, finished however the block ends.

        The registry is a safety net, never a reason to drop an answer: if Redis is unreachable the reply runs
        untracked (a warning says so)."""
        lease_s = lease_s or self.lease_s
        try:
            await self.start(reply_id, info, lease_s)
        except RedisError as exc:
            log.warning("inflight: reply %s runs untracked: Redis is unreachable (%s)", reply_id, exc)
            tracked = False
        else:
            tracked = True
        if not tracked:
            yield
            return
        keeper = asyncio.create_task(_renew_every(self, reply_id, lease_s), name=f"inflight:{reply_id}")
        try:
            yield
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            try:
                await asyncio.shield(self.finish(reply_id))
            except RedisError as exc:
                # Retried every half second: when Redis is back this should beat the other replicas' orphan
                # sweeps, so an answer that did land is not marked interrupted.
                log.warning("inflight: reply %s could not be marked finished (%s); retrying", reply_id, exc)
                retry_when_back(f"inflight: finishing reply {reply_id}", lambda: self.finish(reply_id),
                                FINISH_GIVE_UP_S)

    async def reap(self: Any, handler: Callable[[Info], Awaitable[None]], limit: int = 100) -> int:
        """Claim every orphan this replica wins and hand it to `handler` (which edits the message); how many."""
        handled = 0
        for info in await self.orphans(limit):
            if await self.claim(info["reply_id"]):
                try:
                    await handler(info)
                except Exception:  # noqa: BLE001 - one message that cannot be edited must not stop the sweep
                    log.exception("inflight: handling orphan %s failed", info["reply_id"])
                handled += 1
        return handled


async def _renew_every(registry: InflightRegistry, reply_id: str, lease_s: float) -> None:
    while True:
        await asyncio.sleep(lease_s / 3)
        try:
            if not await registry.renew(reply_id, lease_s):
                log.error("inflight: reply %s was claimed as an orphan while still running", reply_id)
                return
        except RedisError as exc:
            log.warning("inflight: cannot renew reply %s (%s)", reply_id, exc)


class LocalInflightRegistry(_Tracking):
    """The in-process registry: reply id -> (info, lease deadline on this process's monotonic clock)."""

    def __init__(self, replica_id: str = "local", clock: Clock = time.monotonic, *,
                 lease_s: float = DEFAULT_LEASE_S) -> None:
        self.replica_id = replica_id
        self.lease_s = lease_s
        self._clock = clock
        self._replies: dict[str, tuple[Info, float]] = {}

    async def start(self, reply_id: str, info: Info, lease_s: float | None = None) -> None:
        info = {"replica": self.replica_id, **info}
        self._replies[reply_id] = (info, self._clock() + (lease_s or self.lease_s))

    async def renew(self, reply_id: str, lease_s: float | None = None) -> bool:
        entry = self._replies.get(reply_id)
        if entry is None:
            return False
        self._replies[reply_id] = (entry[0], self._clock() + (lease_s or self.lease_s))
        return True

    async def finish(self, reply_id: str) -> None:
        self._replies.pop(reply_id, None)

    async def orphans(self, limit: int = 100) -> list[Info]:
        now = self._clock()
        return [{**info, "reply_id": reply_id} for reply_id, (info, deadline) in self._replies.items()
                if deadline <= now][:limit]

    async def claim(self, reply_id: str) -> bool:
        entry = self._replies.get(reply_id)
        if entry is None or entry[1] > self._clock():
            return False
        del self._replies[reply_id]
        return True

    def __len__(self) -> int:
        return len(self._replies)


# KEYS: expiries (zset reply id -> deadline us), infos (hash reply id -> JSON).
START_LUA = NOW_LUA + """
redis.call('ZADD', KEYS[1], now_us() + tonumber(ARGV[3]), ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
return 1
"""
RENEW_LUA = NOW_LUA + """
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now_us() + tonumber(ARGV[3]), ARGV[2])
return 1
"""
ORPHANS_LUA = NOW_LUA + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_us(), 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[2], id) or ''
end
return out
"""
CLAIM_LUA = NOW_LUA + """
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not deadline or tonumber(deadline) > now_us() then return 0 end
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[2])
return 1
"""


class RedisInflightRegistry(_Tracking):
    """Replies in flight on every replica: `{prefix}:inflight:exp` (zset) and `{prefix}:inflight:info` (hash)."""

    def __init__(self, client: Redis, replica_id: str, *, prefix: str = DEFAULT_PREFIX,
                 clock: Clock | None = None, lease_s: float = DEFAULT_LEASE_S) -> None:
        self.replica_id = replica_id
        self.lease_s = lease_s
        self._client = client
        self._clock = clock
        self._keys = [f"{prefix}:inflight:exp", f"{prefix}:inflight:info"]
        self._start = client.register_script(START_LUA)
        self._renew = client.register_script(RENEW_LUA)
        self._orphans = client.register_script(ORPHANS_LUA)
        self._claim = client.register_script(CLAIM_LUA)

    async def start(self, reply_id: str, info: Info, lease_s: float | None = None) -> None:
        payload = json.dumps({"replica": self.replica_id, **info}, default=str)
        await self._start(keys=self._keys, args=[now_arg(self._clock), reply_id, us(lease_s or self.lease_s), payload])

    async def renew(self, reply_id: str, lease_s: float | None = None) -> bool:
        return bool(await self._renew(keys=self._keys, args=[now_arg(self._clock), reply_id, us(lease_s or self.lease_s)]))

    async def finish(self, reply_id: str) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.zrem(self._keys[0], reply_id)
            pipe.hdel(self._keys[1], reply_id)
            await pipe.execute()

    async def orphans(self, limit: int = 100) -> list[Info]:
        flat = await self._orphans(keys=self._keys, args=[now_arg(self._clock), limit])
        found: list[Info] = []
        for reply_id, raw in zip(flat[::2], flat[1::2]):
            try:
                info = json.loads(raw) if raw else {}
            except ValueError:
                info = {}
            found.append({**info, "reply_id": reply_id})
        return found

    async def claim(self, reply_id: str) -> bool:
        return bool(await self._claim(keys=self._keys, args=[now_arg(self._clock), reply_id]))

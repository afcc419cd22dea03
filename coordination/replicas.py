"""A directory of the replicas alive on one Redis: each announces itself (a small JSON document) under a lease.

Why: replicas that share Redis are one service, and some things every one of them must agree on cannot be
coordinated at run time, only checked at start-up; the conversation store is the one today (two replicas on
SQLite on different machines would each remember their own half of a thread). A starting replica `join`s: in
one atomic step it drops the members whose lease expired, adds itself and learns who else is alive, so of two
replicas starting at the same moment the second always sees the first. What the documents mean, and what
clashes, is the caller's business (`switchboard/placement.py`); this module only keeps the directory.

Redis: `{prefix}:replicas:exp` (a sorted set, member -> lease deadline in microseconds on the Redis server's
clock, so machines need not agree about the time) and `{prefix}:replicas:info` (a hash, member -> document).
A member is a process (`member`, unique per process), renewed with `join` again every `ttl_s / 3`; one that dies
drops out within `ttl_s`; `leave()` takes it out at once on a clean stop. Redis failures raise `RedisError`.

`LocalReplicaDirectory` (no Redis, one replica) knows only itself.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

from redis.asyncio import Redis

from coordination._redis import DEFAULT_PREFIX, NOW_LUA, us

DEFAULT_TTL_S = 15.0
Document = dict[str, Any]

# KEYS: deadlines (zset), documents (hash). ARGV: now, member, ttl us, document.
# Drops the expired members, adds or renews this one, returns the others alive as [member, document, ...]. The
# keys outlive the longest lease by a margin (never shortened by a member with a shorter one), then vanish.
JOIN_LUA = NOW_LUA + """
local now = now_us()
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  redis.call('ZREM', KEYS[1], gone)
  redis.call('HDEL', KEYS[2], gone)
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
local keep = math.floor(tonumber(ARGV[3]) / 1000) * 3 + 1000
for i = 1, 2 do
  if redis.call('PTTL', KEYS[i]) < keep then redis.call('PEXPIRE', KEYS[i], keep) end
end
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if id ~= ARGV[2] then
    out[#out + 1] = id
    out[#out + 1] = redis.call('HGET', KEYS[2], id) or ''
  end
end
return out
"""

# Same KEYS; ARGV: now. Read-only: the members alive now, as [member, document, ...].
MEMBERS_LUA = NOW_LUA + """
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now_us(), '+inf')) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[2], id) or ''
end
return out
"""


@runtime_checkable
class ReplicaDirectory(Protocol):
    member: str

    async def join(self, document: Document, ttl_s: float = DEFAULT_TTL_S) -> list[Document]:
        """Announce (or renew) this member for `ttl_s`; the documents of the other members alive."""

    async def members(self) -> list[Document]:
        """Every member alive (this one included if it joined), without changing anything."""

    async def leave(self) -> None:
        """Take this member out now."""


class LocalReplicaDirectory:
    """One replica, nothing shared: the directory holds this member alone."""

    def __init__(self, member: str) -> None:
        self.member = member
        self._document: Document | None = None

    async def join(self, document: Document, ttl_s: float = DEFAULT_TTL_S) -> list[Document]:
        self._document = {**document, "member": self.member}
        return []

    async def members(self) -> list[Document]:
        return [] if self._document is None else [self._document]

    async def leave(self) -> None:
        self._document = None


class RedisReplicaDirectory:
    """The replicas alive on one Redis under `prefix`; each document gets its `member` added when read back."""

    def __init__(self, client: Redis, member: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.member = member
        self.prefix = prefix
        self._client = client
        self._keys = [f"{prefix}:replicas:exp", f"{prefix}:replicas:info"]
        self._join = client.register_script(JOIN_LUA)
        self._members = client.register_script(MEMBERS_LUA)

    def as_member(self, member: str) -> RedisReplicaDirectory:
        """Another member on the same client (tests: a replica on another machine)."""
        return RedisReplicaDirectory(self._client, member, prefix=self.prefix)

    async def join(self, document: Document, ttl_s: float = DEFAULT_TTL_S) -> list[Document]:
        payload = json.dumps(document, default=str, separators=(",", ":"))
        return _documents(await self._join(keys=self._keys, args=["", self.member, us(ttl_s), payload]))

    async def members(self) -> list[Document]:
        return _documents(await self._members(keys=self._keys, args=[""]))

    async def leave(self) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.zrem(self._keys[0], self.member)
            pipe.hdel(self._keys[1], self.member)
            await pipe.execute()


def _documents(flat: list[Any]) -> list[Document]:
    found = []
    for member, raw in zip(flat[::2], flat[1::2]):
        try:
            document = json.loads(raw) if raw else {}
        except ValueError:
            document = {}
        found.append({**(document if isinstance(document, dict) else {}), "member": member})
    return found

"""Named leases: one holder at a time for a named resource (a Discord shard), across every replica; and a
member count, so holders can share the resources out evenly.

A lease is a Redis string `{prefix}:lease:{name}` whose value is the holder (`owner`, the replica id) and whose
expiry is the lease:
- `claim(name, ttl_s)`: SET NX PX, atomically; a claim by the current holder extends it instead (re-entrant).
- `renew(name, ttl_s)`: compare-and-PEXPIRE; False when the lease is not this owner's any more.
- `release(name)`: compare-and-delete; never removes another holder's lease.
- `holder(name)`: who holds it (None when free).
A holder that dies stops renewing, and the name is free again within one `ttl_s`.

`heartbeat(group, ttl_s)` marks this owner alive in a group (a sorted set scored by expiry, on the Redis
server's clock) and answers how many owners are alive in it; `leave(group)` takes this owner out at once (a
graceful stop), so the others see it go without waiting for its entry to expire.

Redis failures raise `CoordinationUnavailable`; callers decide what a lease they cannot confirm means.
`LocalLeases` answers the same in one process (a dict and the monotonic clock).
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from coordination._redis import DEFAULT_PREFIX, NOW_LUA, Clock, CoordinationUnavailable, us


@runtime_checkable
class Leases(Protocol):
    owner: str

    async def claim(self, name: str, ttl_s: float) -> bool:
        """Take the lease when free (or extend it when already this owner's); True when this owner holds it."""

    async def renew(self, name: str, ttl_s: float) -> bool:
        """Extend this owner's lease; False when it is not this owner's (expired, taken, released)."""

    async def release(self, name: str) -> bool:
        """Free the lease if this owner holds it; True when it did."""

    async def holder(self, name: str) -> str | None:
        """The owner holding the lease, or None."""

    async def heartbeat(self, group: str, ttl_s: float) -> int:
        """Mark this owner alive in `group` for `ttl_s`; the number of owners alive in it (this one included)."""

    async def leave(self, group: str) -> None:
        """Take this owner out of `group` now."""


class LocalLeases:
    """The in-process twin: one process, so every claim by another owner name is another "replica" in tests."""

    def __init__(self, owner: str = "local", *, clock: Clock | None = None,
                 _store: dict[str, tuple[str, float]] | None = None,
                 _groups: dict[str, dict[str, float]] | None = None) -> None:
        self.owner = owner
        self._clock: Clock = clock or time.monotonic
        self._leases: dict[str, tuple[str, float]] = {} if _store is None else _store
        self._groups: dict[str, dict[str, float]] = {} if _groups is None else _groups

    def as_owner(self, owner: str) -> LocalLeases:
        """Another owner on the same in-process store (tests)."""
        return LocalLeases(owner, clock=self._clock, _store=self._leases, _groups=self._groups)

    def _current(self, name: str) -> str | None:
        entry = self._leases.get(name)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del self._leases[name]
            return None
        return entry[0]

    async def claim(self, name: str, ttl_s: float) -> bool:
        current = self._current(name)
        if current not in (None, self.owner):
            return False
        self._leases[name] = (self.owner, self._clock() + ttl_s)
        return True

    async def renew(self, name: str, ttl_s: float) -> bool:
        if self._current(name) != self.owner:
            return False
        self._leases[name] = (self.owner, self._clock() + ttl_s)
        return True

    async def release(self, name: str) -> bool:
        if self._current(name) != self.owner:
            return False
        del self._leases[name]
        return True

    async def holder(self, name: str) -> str | None:
        return self._current(name)

    async def heartbeat(self, group: str, ttl_s: float) -> int:
        now = self._clock()
        members = self._groups.setdefault(group, {})
        for owner, until in list(members.items()):
            if until <= now:
                del members[owner]
        members[self.owner] = now + ttl_s
        return len(members)

    async def leave(self, group: str) -> None:
        self._groups.get(group, {}).pop(self.owner, None)


# KEYS[1]: the lease; ARGV: owner, ttl ms. 1 when this owner holds it afterwards, 0 when another does.
CLAIM_LUA = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if current then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
return 1
"""

# KEYS[1]: the lease; ARGV: owner, ttl ms. Compare-and-PEXPIRE.
RENEW_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS[1]: the lease; ARGV: owner. Compare-and-delete.
RELEASE_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS[1]: the group (zset owner -> expiry us); ARGV: now ('' = the server's clock), owner, ttl us.
# Drops expired members, (re)adds this one, returns the number alive.
HEARTBEAT_LUA = NOW_LUA + """
local now = now_us()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.floor(tonumber(ARGV[3]) / 1000) * 3 + 1000)
return redis.call('ZCARD', KEYS[1])
"""


class RedisLeases:
    """Named leases and member groups on one Redis, shared by every replica using the same `prefix`."""

    def __init__(self, client: Redis, owner: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.owner = owner
        self.prefix = prefix
        self._client = client
        self._claim = client.register_script(CLAIM_LUA)
        self._renew = client.register_script(RENEW_LUA)
        self._release = client.register_script(RELEASE_LUA)
        self._heartbeat = client.register_script(HEARTBEAT_LUA)

    def as_owner(self, owner: str) -> RedisLeases:
        """Another owner on the same client (tests)."""
        return RedisLeases(self._client, owner, prefix=self.prefix)

    def _key(self, name: str) -> str:
        return f"{self.prefix}:lease:{name}"

    async def claim(self, name: str, ttl_s: float) -> bool:
        return await self._run("claim the lease on", name, self._claim, [self.owner, _ms(ttl_s)])

    async def renew(self, name: str, ttl_s: float) -> bool:
        return await self._run("renew the lease on", name, self._renew, [self.owner, _ms(ttl_s)])

    async def release(self, name: str) -> bool:
        return await self._run("release the lease on", name, self._release, [self.owner])

    async def holder(self, name: str) -> str | None:
        try:
            value = await self._client.get(self._key(name))
        except RedisError as exc:
            raise CoordinationUnavailable(f"cannot read the lease on {name}: Redis is unreachable ({exc})") from exc
        return None if value is None else str(value)

    async def heartbeat(self, group: str, ttl_s: float) -> int:
        try:
            return int(await self._heartbeat(keys=[f"{self.prefix}:members:{group}"],
                                             args=["", self.owner, us(ttl_s)]))
        except RedisError as exc:
            raise CoordinationUnavailable(f"cannot count the members of {group}: Redis is unreachable ({exc})") \
                from exc

    async def leave(self, group: str) -> None:
        try:
            await self._client.zrem(f"{self.prefix}:members:{group}", self.owner)
        except RedisError as exc:
            raise CoordinationUnavailable(f"cannot leave {group}: Redis is unreachable ({exc})") from exc

    async def _run(self, what: str, name: str, script: object, args: list[object]) -> bool:
        try:
            return bool(await script(keys=[self._key(name)], args=args))  # type: ignore[operator]
        except RedisError as exc:
            raise CoordinationUnavailable(f"cannot {what} {name}: Redis is unreachable ({exc})") from exc


def _ms(seconds: float) -> int:
    return max(1, int(round(seconds * 1000)))

"""Per-session locks: one message at a time per conversation, across every replica, in arrival order.

`hold(key)` is an async context manager yielding a `Lease`. What holds:
- One holder per key at a time (within one process, and across replicas sharing one Redis).
- Waiters are served in arrival order (FIFO per key), so a thread's queued messages keep their order even when
  they land on different replicas: arrival is the moment a waiter took its ticket in Redis (in-process, the
  moment it called `hold`). Within one process tickets are taken in call order (a short per-key lock around
  the first round trip), so a connection that happens to be slower to open cannot reorder two messages.
- A holder's lease (`lease_s`, 15 s) is renewed in the background every `lease_s / 3` while the block runs. A
  replica that dies (SIGKILL, power loss) stops renewing, and the key is free within one lease: any waiter's
  next poll evicts expired entries. Waiters refresh their own entry on every poll, so a waiter that died
  leaves the queue just as fast and never blocks the ones behind it.
- Release is compare-and-delete (only this holder's own ticket is removed). A release Redis cannot take (it is
  away) is retried in the background until it is back, so the thread's next message does not wait out the lease.
- A lost lease (Redis said the ticket is gone, or no renewal succeeded for a whole lease) sets `lease.lost`
  and is logged as an error; the block is not interrupted (cutting a reply in half helps nobody), so code about
  to commit something that needs exclusivity checks `lease.lost` (or calls `lease.check()`) first.

Waiting is short polling with jittered backoff (10 ms growing to 50 ms) plus an immediate wake-up when a
holder in the same process releases: no pub/sub connection to keep, and an uncontended acquire costs one
round trip (enqueue and first try are one script).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from coordination._redis import DEFAULT_PREFIX, NOW_LUA, CoordinationUnavailable, retry_when_back, us

log = logging.getLogger("coordination.locks")

DEFAULT_LEASE_S = 15.0
POLL_MIN_S, POLL_MAX_S = 0.010, 0.050
GC_MIN_MS = 60_000  # idle lock keys of dead replicas disappear after max(3 leases, a minute)


class LeaseLost(RuntimeError):
    """This holder's lease expired or was taken away while the block ran."""


@dataclass(slots=True)
class Lease:
    """What `hold()` yields: `lost` turns True (and an error is logged) if exclusivity may have ended."""

    key: str
    lost: bool = False
    token: str = field(default="", repr=False)
    asking: asyncio.Future[int] | None = field(default=None, repr=False, compare=False)

    def check(self) -> None:
        if self.lost:
            raise LeaseLost(f"the lock on {self.key} was lost (its lease expired); another replica may hold it")


@runtime_checkable
class SessionLocks(Protocol):
    def hold(self, key: str) -> AbstractAsyncContextManager[Lease]:
        """Wait for the key (FIFO), hold it while the block runs, release it after."""


class LocalSessionLocks:
    """In-process: an `asyncio.Lock` per key (FIFO), dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[Lease]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield Lease(key)
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


# KEYS: queue (zset token -> ticket), expiries (zset token -> deadline us), ticket counter.
# ARGV: now, token, lease us, gc ms, first ('1' enqueues when absent; '0' reports absence as -1).
# Returns 0 when the token is at the head (holds the lock), its 1-based place behind the head when waiting,
# -1 when it is no longer queued (its entry expired while this waiter stalled).
ACQUIRE_LUA = NOW_LUA + """
local now = now_us()
local token = ARGV[2]
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, dead in ipairs(expired) do
  if dead ~= token then
    redis.call('ZREM', KEYS[1], dead)
    redis.call('ZREM', KEYS[2], dead)
  end
end
if not redis.call('ZSCORE', KEYS[1], token) then
  if ARGV[5] ~= '1' then return -1 end
  redis.call('ZADD', KEYS[1], redis.call('INCR', KEYS[3]), token)
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), token)
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[4]) end
return redis.call('ZRANK', KEYS[1], token)
"""

# Same KEYS; ARGV: now, token, lease us, gc ms. 1 when renewed, 0 when the token is no longer queued.
RENEW_LUA = NOW_LUA + """
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[2], now_us() + tonumber(ARGV[3]), ARGV[2])
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[4]) end
return 1
"""

# Same KEYS; ARGV: now, token. Compare-and-delete: 1 released as the holder, 0 left the queue as a waiter,
# -1 was not there any more (lost). The keys go when the queue empties.
RELEASE_LUA = """
local head = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
local removed = redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[2])
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('DEL', KEYS[1], KEYS[2], KEYS[3]) end
if removed == 0 then return -1 end
if head == ARGV[2] then return 1 end
return 0
"""


class _Local:
    """Per key in this process: the lock around taking a ticket, a wake-up for local waiters, and a user count."""

    __slots__ = ("enqueue", "released", "users")

    def __init__(self) -> None:
        self.enqueue = asyncio.Lock()
        self.released = asyncio.Event()
        self.users = 0


class RedisSessionLocks:
    """FIFO session locks with leases, shared by every replica on one Redis: `{prefix}:lock:{key}:{q,exp,n}`."""

    def __init__(self, client: Redis, *, prefix: str = DEFAULT_PREFIX, lease_s: float = DEFAULT_LEASE_S) -> None:
        if lease_s <= 0:
            raise ValueError("lease_s must be > 0")
        self.prefix = prefix
        self.lease_s = lease_s
        self._gc_ms = max(GC_MIN_MS, int(lease_s * 3000))
        self._acquire = client.register_script(ACQUIRE_LUA)
        self._renew = client.register_script(RENEW_LUA)
        self._release = client.register_script(RELEASE_LUA)
        self._local: dict[str, _Local] = {}

    def _keys(self, key: str) -> list[str]:
        base = f"{self.prefix}:lock:{key}"
        return [f"{base}:q", f"{base}:exp", f"{base}:n"]

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[Lease]:
        lease = Lease(key, token=secrets.token_hex(8))
        local = self._local.setdefault(key, _Local())
        local.users += 1
        renewer: asyncio.Task[None] | None = None
        try:
            await self._wait_turn(key, lease, local)
            renewer = asyncio.create_task(self._keep(key, lease), name=f"lease:{key}")
            yield lease
        finally:
            if renewer is not None:
                renewer.cancel()
                await asyncio.gather(renewer, return_exceptions=True)
            await asyncio.shield(self._leave(key, lease, holding=renewer is not None))
            local.users -= 1
            local.released.set()
            local.released = asyncio.Event()
            if local.users <= 0:
                self._local.pop(key, None)

    async def _wait_turn(self, key: str, lease: Lease, local: _Local) -> None:
        keys = self._keys(key)
        args = ["", lease.token, us(self.lease_s), self._gc_ms]
        try:
            async with local.enqueue:  # tickets in this process are taken in call order
                place = await self._ask(lease, keys, [*args, "1"])
            delay = POLL_MIN_S
            while place != 0:
                if place < 0:
                    log.warning("lock %s: this waiter's place expired while it stalled; queueing again", key)
                    place = await self._ask(lease, keys, [*args, "1"])
                    continue
                released = local.released
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(released.wait(), delay * random.uniform(0.8, 1.2))
                delay = min(POLL_MAX_S, delay * 1.5)
                place = await self._ask(lease, keys, [*args, "0"])
        except RedisError as exc:
            raise CoordinationUnavailable(f"cannot queue for the lock on {key}: Redis is unreachable ({exc})") from exc

    async def _ask(self, lease: Lease, keys: list[str], args: list[object]) -> int:
        """One acquire script, shielded: if the waiter is cancelled meanwhile, `_leave` waits for the script to
        have run before removing the ticket, so a late enqueue cannot leave a ticket nobody renews."""
        lease.asking = asyncio.ensure_future(self._acquire(keys=keys, args=args))
        return int(await asyncio.shield(lease.asking))

    async def _keep(self, key: str, lease: Lease) -> None:
        """Renew every lease/3; a renewal Redis refuses, or none succeeding for a whole lease, loses the lease."""
        keys, every = self._keys(key), self.lease_s / 3
        renewed_at = time.monotonic()
        while not lease.lost:
            await asyncio.sleep(every)
            try:
                ok = await self._renew(keys=keys, args=["", lease.token, us(self.lease_s), self._gc_ms])
            except RedisError as exc:
                if time.monotonic() - renewed_at < self.lease_s:
                    log.warning("lock %s: lease renewal failed (%s); retrying", key, exc)
                    continue
                ok = 0
            if ok:
                renewed_at = time.monotonic()
            else:
                lease.lost = True
                log.error("lock %s: lease lost (expired before it could be renewed); another replica may now "
                          "answer in this session", key)

    async def _leave(self, key: str, lease: Lease, *, holding: bool) -> None:
        if lease.asking is not None:
            if not lease.asking.done():
                await asyncio.wait([lease.asking])
            if not lease.asking.cancelled():
                lease.asking.exception()  # retrieved here; a Redis failure shows again in the release below
        keys, args = self._keys(key), ["", lease.token]
        try:
            outcome = await self._release(keys=keys, args=args)
        except RedisError as exc:  # retried until Redis is back; the entry expires by itself within one lease
            log.warning("lock %s: release failed (%s); retrying until Redis is back", key, exc)
            retry_when_back(f"lock {key}: release", lambda: self._release(keys=keys, args=args), self.lease_s)
            return
        if holding and outcome != 1 and not lease.lost:
            lease.lost = True
            log.error("lock %s: lease was already lost when released", key)

    def __len__(self) -> int:
        """Keys this process holds or waits for."""
        return len(self._local)

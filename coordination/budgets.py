"""Rate budgets shared by every replica: the Redis twin of `bots.pacing.EditBudget` / `BudgetPool`.

A platform counts writes per app (Slack's workspace `chat.update`) or per channel (Discord's 5 per 5 s), not per
process, so two replicas each spending the budget as if alone get 429s. `RedisBudget` has the `Budget`
protocol of `bots/pacing.py` (`wait_time`, `slot`, `note_rate_limited`, plus `acquire`) and the same meaning:

What holds across replicas (atomic, one Lua script per step, on the Redis server's clock):
- At most `max_ops` writes in any `window_s`: a write counts from the moment the platform answered it (the end
  of `slot()`), and while in flight it counts as happening now, exactly like `EditBudget`. Done writes live in
  a sorted set scored by time; writes in flight in another, scored by a deadline (`inflight_ttl_s`), so a
  replica killed mid-write does not hold the slot for ever.
- `reserve`: a write asking for a reserve only goes while that many more would still fit, on the shared count,
  so a progress edit (reserve 1) on one replica never takes the last write a final text on another needs.
- A 429 (`note_rate_limited`) sets a shared `blocked_until`; every replica's next write waits for it.

What is approximate: `priority` orders the waiters of one process (a queue in front of the shared window, as in
`EditBudget`); across replicas, whichever queue head asks first after room appears wins. The reserve is what
keeps final texts ahead of progress edits across replicas. `wait_time()` is synchronous in the protocol, so it
answers from what this process last learned (its own 429s and Redis's last answer); `slot()` is the authority,
and `shared_wait_time()` asks Redis.

If Redis cannot be reached, a write is not refused: it goes after a local `window_s / max_ops` pause (so one
replica alone stays within the rate) and a warning is logged; the renderer handles any 429 that results.
"""

from __future__ import annotations

import asyncio
import contextlib
import bisect
import itertools
import logging
import random
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterator
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from coordination._redis import DEFAULT_PREFIX, NOW_LUA, Clock, Throttled, key_text, now_arg, us

log = logging.getLogger("coordination.budgets")

Sleep = Callable[[float], Awaitable[None]]
FIRST, FINAL, PROGRESS = 0, 1, 2  # bots.pacing.Priority's values; any int is accepted, lower goes first

# KEYS: done (zset id -> answered us), flying (zset id -> deadline us), blocked (string: until us).
# ARGV: now, max_ops, window us, reserve, op id, in-flight ttl us, take ('1' counts the write when it fits).
# Returns {1, ops counted} when taken, {0, wait us, ops counted} otherwise.
ACQUIRE_LUA = NOW_LUA + """
local now, max_ops, window = now_us(), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local wait = 0
local blocked = tonumber(redis.call('GET', KEYS[3]) or '0')
if blocked > now then wait = blocked - now end
local done, flying = redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2])
local count = done + flying
local allowed = math.max(1, max_ops - math.max(0, tonumber(ARGV[4])))
if count >= allowed then
  local index = count - allowed
  local at = now
  if index < done then at = tonumber(redis.call('ZRANGE', KEYS[1], index, index, 'WITHSCORES')[2]) end
  wait = math.max(wait, at + window - now)
end
if wait > 0 or ARGV[7] ~= '1' then return {0, wait, count} end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[6]), ARGV[5])
redis.call('PEXPIRE', KEYS[2], math.floor(tonumber(ARGV[6]) / 1000) + 1000)
return {1, count + 1}
"""

# Same KEYS; ARGV: now, op id, window us. The write was answered: it counts from now.
DONE_LUA = NOW_LUA + """
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[1], now_us(), ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.floor(tonumber(ARGV[3]) / 1000) + 1000)
return 1
"""

# Same KEYS; ARGV: now, retry-after us. Returns the shared blocked-until (us).
BLOCK_LUA = NOW_LUA + """
local now = now_us()
local until_us = math.max(now + tonumber(ARGV[2]), tonumber(redis.call('GET', KEYS[3]) or '0'))
redis.call('SET', KEYS[3], string.format('%d', until_us), 'PX', math.floor((until_us - now) / 1000) + 1000)
return until_us
"""


class _Scripts:
    def __init__(self, client: Redis) -> None:
        self.acquire = client.register_script(ACQUIRE_LUA)
        self.done = client.register_script(DONE_LUA)
        self.block = client.register_script(BLOCK_LUA)


class RedisBudget:
    """At most `max_ops` writes in any `window_s` seconds across every replica using `name`."""

    def __init__(self, client: Redis, name: str, max_ops: int, window_s: float, *, prefix: str = DEFAULT_PREFIX,
                 clock: Clock | None = None, sleep: Sleep = asyncio.sleep, inflight_ttl_s: float = 30.0,
                 _scripts: _Scripts | None = None) -> None:
        if max_ops < 1 or window_s <= 0:
            raise ValueError("a budget needs max_ops >= 1 and window_s > 0")
        self.name, self.max_ops, self.window_s = name, max_ops, window_s
        base = f"{prefix}:budget:{name}"
        self._keys = [f"{base}:done", f"{base}:flying", f"{base}:blocked"]
        self._client = client
        self._scripts = _scripts or _Scripts(client)
        self._clock, self._sleep = clock, sleep
        self._inflight_ttl_us = us(inflight_ttl_s)
        self._waiters: list[tuple[int, int]] = []  # (priority, ticket), sorted: the head asks Redis
        self._turns: dict[tuple[int, int], asyncio.Event] = {}  # set when that waiter becomes the head
        self._tickets = itertools.count()
        self._hint_until = 0.0  # local monotonic time before which this process expects no room
        self._pending: set[asyncio.Task[Any]] = set()
        self._outage = Throttled()

    # --- the Budget protocol ---------------------------------------------------------------------------------
    def wait_time(self, reserve: int = 0) -> float:
        """This process's estimate (its own 429s, Redis's last answer); `slot()` asks Redis itself."""
        return max(0.0, self._hint_until - time.monotonic())

    @asynccontextmanager
    async def slot(self, priority: int = PROGRESS, reserve: int = 0) -> AsyncIterator[None]:
        """Wait for room (this process's waiters by priority), count the write, restamp it when it is answered."""
        op = await self._reserve(priority, reserve)
        try:
            yield
        finally:
            if op is not None:
                await asyncio.shield(self._done(op))

    async def acquire(self, priority: int = PROGRESS, reserve: int = 0) -> None:
        """Wait for room and count one write as done now."""
        op = await self._reserve(priority, reserve)
        if op is not None:
            await self._done(op)

    def note_rate_limited(self, retry_after: float) -> None:
        """A 429: block this process at once and every replica as soon as Redis has it (a background write)."""
        retry_after = max(0.0, retry_after)
        self._hint_until = max(self._hint_until, time.monotonic() + retry_after)
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no loop: nothing to share it with from here
            return
        self._background(self._block(retry_after))

    # --- beyond the protocol -----------------------------------------------------------------------------------
    async def flush(self) -> None:
        """Wait until the 429s noted so far are in Redis (tests; shutdown)."""
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def shared_wait_time(self, reserve: int = 0) -> float:
        """Seconds until one more write fits across all replicas, leaving room for `reserve` (asks Redis)."""
        taken, wait, _ = await self._ask(reserve, "", take=False)
        return wait

    async def ops_in_window(self) -> int:
        """Writes counted across all replicas (in flight or answered within the window)."""
        _, _, count = await self._ask(0, "", take=False)
        return count

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    # --- internals ---------------------------------------------------------------------------------------------
    async def _ask(self, reserve: int, op: str, *, take: bool) -> tuple[bool, float, int]:
        reply = await self._scripts.acquire(keys=self._keys, args=[
            now_arg(self._clock), self.max_ops, us(self.window_s), max(0, int(reserve)), op,
            self._inflight_ttl_us, "1" if take else "0"])
        if int(reply[0]) == 1:
            return True, 0.0, int(reply[1])
        return False, int(reply[1]) / 1e6, int(reply[2])

    async def _reserve(self, priority: int, reserve: int) -> str | None:
        """The op id once the write is counted; None when Redis was unreachable (the write goes uncounted)."""
        me = (int(priority), next(self._tickets))
        bisect.insort(self._waiters, me)
        turn = self._turns[me] = asyncio.Event()
        op = secrets.token_hex(8)
        try:
            while True:
                if self._waiters[0] != me:  # only the head of this process's queue asks Redis
                    turn.clear()
                    await turn.wait()
                    continue
                asking = asyncio.ensure_future(self._ask(reserve, op, take=True))
                try:
                    # Shielded: a reply cancelled while Redis counts its write must uncount it, not leak it.
                    taken, wait, _ = await asyncio.shield(asking)
                except asyncio.CancelledError:
                    asking.add_done_callback(lambda done: self._uncount(done, op))
                    raise
                except RedisError as exc:
                    self._outage.warning("budget %s: Redis unreachable (%s); pacing this replica alone",
                                         self.name, exc)
                    await self._sleep(self.window_s / self.max_ops)
                    return None
                if taken:
                    self._hint_until = 0.0  # Redis found room (and no shared 429 in force)
                    return op
                self._hint_until = max(self._hint_until, time.monotonic() + wait)
                # Capped, so a higher-priority waiter arriving meanwhile gets its turn; jittered, so replicas
                # waiting for the same moment do not all ask at once.
                await self._sleep(min(wait, self.window_s) + random.uniform(0.0, 0.003))
        finally:
            was_head = self._waiters[0] == me
            self._waiters.remove(me)
            del self._turns[me]
            if was_head and self._waiters:
                self._turns[self._waiters[0]].set()

    def _uncount(self, asked: asyncio.Future[tuple[bool, float, int]], op: str) -> None:
        if not asked.cancelled() and asked.exception() is None and asked.result()[0]:
            self._background(self._client.zrem(self._keys[1], op))

    def _background(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _done(self, op: str) -> None:
        try:
            await self._scripts.done(keys=self._keys, args=[now_arg(self._clock), op, us(self.window_s)])
        except RedisError as exc:
            self._outage.warning("budget %s: cannot record a write (%s)", self.name, exc)

    async def _block(self, retry_after: float) -> None:
        try:
            await self._scripts.block(keys=self._keys, args=[now_arg(self._clock), us(retry_after)])
        except RedisError as exc:
            self._outage.warning("budget %s: cannot share a 429 (%s)", self.name, exc)


class RedisBudgetPool:
    """One `RedisBudget` per key (channel, workspace) under `name`, like `bots.pacing.BudgetPool`: the objects
    are cached so one process's waiters for a key share one priority queue; idle ones are dropped past `keep`."""

    def __init__(self, client: Redis, name: str, max_ops: int, window_s: float, keep: int = 256,
                 **budget_options: Any) -> None:
        self.name, self.max_ops, self.window_s, self.keep = name, max_ops, window_s, keep
        self._client = client
        self._scripts = _Scripts(client)
        self._options = budget_options
        self._budgets: dict[Hashable, RedisBudget] = {}
        self._users: Counter[Hashable] = Counter()

    def budget(self, key: Hashable) -> RedisBudget:
        budget = self._budgets.get(key)
        if budget is None:
            self._prune()
            budget = self._budgets[key] = RedisBudget(
                self._client, f"{self.name}:{key_text(key)}", self.max_ops, self.window_s,
                _scripts=self._scripts, **self._options)
        return budget

    @contextlib.contextmanager
    def using(self, key: Hashable) -> Iterator[RedisBudget]:
        """The key's budget, kept (never pruned) while the block runs."""
        budget = self.budget(key)
        self._users[key] += 1
        try:
            yield budget
        finally:
            self._users[key] -= 1
            if self._users[key] <= 0:
                del self._users[key]

    def note_rate_limited(self, key: Hashable, retry_after: float) -> None:
        """A 429 seen outside the renderer for `key`: shared with every replica even if no reply here uses it."""
        self.budget(key).note_rate_limited(retry_after)

    def _prune(self) -> None:
        if len(self._budgets) < self.keep:
            return
        for key, budget in list(self._budgets.items()):
            if key not in self._users and not budget.waiting and not budget._pending and budget.wait_time() == 0:
                del self._budgets[key]

    def __len__(self) -> int:
        return len(self._budgets)

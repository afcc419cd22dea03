"""How fast a reply may write to a platform: pure maths over an injected clock, waiting through an injected sleep.

This module is the one owner of pacing and of what a 429 means. Two kinds of limit, because the platforms have
two kinds:
- `EditPacer` — a minimum interval between two edits of one reply (Slack: about one `chat.update` a second per
  message). One pacer per reply; it only answers "how long until the next edit may go".
- `Budget` — at most `max_ops` writes in any `window_s` seconds, shared by every reply writing to the same
  place (Discord: 5 per 5 s per channel; Slack: the workspace's `chat.update` budget, and posts per channel). A
  429 from the platform (`note_rate_limited`) blocks every user of the budget until it has passed.
  `EditBudget` is the in-process implementation; a shared store (Redis, for replicas) can implement the same
  protocol, and `BudgetPool` hands out one per key (channel, workspace).
- `retry_after_of(headers)` — the one parser of `Retry-After` (and Discord's `X-RateLimit-Reset-After`).

Nothing here does I/O; tests drive it with a fake clock and never sleep for real.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from enum import IntEnum
from typing import Any, Protocol, runtime_checkable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
DEFAULT_RETRY_AFTER_S = 1.0
RETRY_AFTER_HEADERS = ("X-RateLimit-Reset-After", "Retry-After")  # Discord's precise value first


def retry_after_of(headers: Mapping[str, Any] | None, default: float = DEFAULT_RETRY_AFTER_S) -> float:
    """Seconds a 429 asks to wait, from its headers (case-insensitive; a list value takes its first item)."""
    if headers:
        lowered = {str(name).lower(): value for name, value in headers.items()}
        for name in RETRY_AFTER_HEADERS:
            raw = lowered.get(name.lower())
            if isinstance(raw, (list, tuple)):
                raw = raw[0] if raw else None
            try:
                return max(0.0, float(raw))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                continue
    return default


class EditPacer:
    """The minimum interval between edits of one reply. Times are passed in, so this is arithmetic only."""

    def __init__(self, min_interval_s: float) -> None:
        if min_interval_s < 0:
            raise ValueError("min_interval_s must be >= 0")
        self.min_interval_s = min_interval_s
        self.last_edit_at: float | None = None

    def delay(self, now: float) -> float:
        """Seconds from `now` until the next edit may go (0 when it may go now)."""
        if self.last_edit_at is None:
            return 0.0
        return max(0.0, self.last_edit_at + self.min_interval_s - now)

    def record(self, now: float) -> None:
        """An edit went out at `now`."""
        self.last_edit_at = now


class Priority(IntEnum):
    """Who goes first when writes queue for a budget: a reply that shows nothing yet, then a reply's final
    text, then progress edits of replies already streaming."""

    FIRST = 0
    FINAL = 1
    PROGRESS = 2


@runtime_checkable
class Budget(Protocol):
    """Writes shared by every reply writing to one place. The renderer is its only caller."""

    def wait_time(self, reserve: int = 0) -> float:
        """Seconds until one more write fits, leaving room for `reserve` more (0 when it fits now)."""

    def slot(self, priority: int = Priority.PROGRESS, reserve: int = 0) -> AbstractAsyncContextManager[None]:
        """Wait for room (served by `Priority`), then count the write made inside the block."""

    def note_rate_limited(self, retry_after: float) -> None:
        """The platform answered 429: nobody sharing this budget may write before `retry_after` has passed."""


class _Op:
    """One counted operation: stamped when it starts, restamped when the platform has answered."""

    __slots__ = ("at", "in_flight")

    def __init__(self, at: float) -> None:
        self.at = at
        self.in_flight = True


class EditBudget:
    """At most `max_ops` operations in any `window_s` seconds, across every reply sharing this object.

    An operation counts from the moment the platform answered it (`slot()`), not from when it was sent, so
    network latency cannot squeeze one more request into the platform's window than it allows; while in flight
    it counts as happening now. Waiters are served by `Priority`, then first come, first served; a waiter that
    asks for a `reserve` only goes while that many operations would still fit afterwards (progress edits keep
    one in reserve, so a reply's final text never waits for the window to reopen).
    """

    POLL_S = 0.02  # how often a waiter behind another re-checks whether it is its turn

    def __init__(self, max_ops: int, window_s: float, clock: Clock = time.monotonic,
                 sleep: Sleep = asyncio.sleep) -> None:
        if max_ops < 1 or window_s <= 0:
            raise ValueError("an edit budget needs max_ops >= 1 and window_s > 0")
        self.max_ops = max_ops
        self.window_s = window_s
        self._clock = clock
        self._sleep = sleep
        self._ops: list[_Op] = []
        self._blocked_until = 0.0
        self._waiters: list[tuple[int, int]] = []  # (priority, ticket), kept sorted
        self._tickets = itertools.count()

    def wait_time(self, reserve: int = 0) -> float:
        """Seconds until one more operation fits with `reserve` more still fitting (0 when it fits now)."""
        now = self._clock()
        self._ops = [op for op in self._ops if op.in_flight or op.at > now - self.window_s]
        wait = max(0.0, self._blocked_until - now)
        allowed = max(1, self.max_ops - max(0, reserve))
        if len(self._ops) >= allowed:
            times = sorted(now if op.in_flight else op.at for op in self._ops)
            wait = max(wait, times[len(self._ops) - allowed] + self.window_s - now)
        return wait

    def ops_in_window(self) -> int:
        """Operations currently counted against the window (in flight or answered within `window_s`)."""
        self.wait_time()
        return len(self._ops)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def _reserve(self, priority: int, reserve: int) -> _Op:
        me = (int(priority), next(self._tickets))
        bisect.insort(self._waiters, me)
        try:
            while True:
                wait = self.wait_time(reserve)
                if self._waiters[0] == me and wait <= 0:
                    break
                await self._sleep(wait if self._waiters[0] == me else max(wait, self.POLL_S))
        finally:
            self._waiters.remove(me)
        op = _Op(self._clock())
        self._ops.append(op)
        return op

    async def acquire(self, priority: int = Priority.PROGRESS, reserve: int = 0) -> None:
        """Wait until one more operation fits, and count it as done now."""
        op = await self._reserve(priority, reserve)
        op.in_flight = False

    @asynccontextmanager
    async def slot(self, priority: int = Priority.PROGRESS, reserve: int = 0) -> AsyncIterator[None]:
        """Wait for room, then count the operation run inside the block from when it finishes."""
        op = await self._reserve(priority, reserve)
        try:
            yield
        finally:
            op.at = self._clock()
            op.in_flight = False

    def note_rate_limited(self, retry_after: float) -> None:
        """The platform answered 429: nobody sharing this budget may go before `retry_after` has passed."""
        self._blocked_until = max(self._blocked_until, self._clock() + max(0.0, retry_after))

    @property
    def blocked_until(self) -> float:
        return self._blocked_until


class BudgetPool:
    """One `EditBudget` per key (a channel, a workspace), shared by every reply writing there. Idle ones are
    dropped when there are more than `keep`, so a bot in thousands of channels holds budgets only for the busy
    ones. A shared-store implementation for replicas offers the same `using(key)`."""

    def __init__(self, max_ops: int, window_s: float, keep: int = 256, *, clock: Clock = time.monotonic,
                 sleep: Sleep = asyncio.sleep) -> None:
        self.max_ops, self.window_s, self.keep = max_ops, window_s, keep
        self._clock, self._sleep = clock, sleep
        self._budgets: dict[Hashable, EditBudget] = {}
        self._users: Counter[Hashable] = Counter()

    @contextlib.contextmanager
    def using(self, channel_id: Hashable) -> Iterator[EditBudget]:
        """The key's budget, kept alive (never pruned) while the block runs."""
        budget = self._budgets.get(channel_id)
        if budget is None:
            self._prune()
            budget = self._budgets[channel_id] = EditBudget(self.max_ops, self.window_s, self._clock, self._sleep)
        self._users[channel_id] += 1
        try:
            yield budget
        finally:
            self._users[channel_id] -= 1
            if self._users[channel_id] <= 0:
                del self._users[channel_id]

    def note_rate_limited(self, key: Hashable, retry_after: float) -> None:
        """A 429 seen outside the renderer (a client library's own retry) for `key`: hold its users back."""
        budget = self._budgets.get(key)
        if budget is not None:
            budget.note_rate_limited(retry_after)

    def _prune(self) -> None:
        if len(self._budgets) < self.keep:
            return
        for channel_id, budget in list(self._budgets.items()):
            if channel_id not in self._users and budget.wait_time() == 0 and budget.ops_in_window() == 0:
                del self._budgets[channel_id]

    def __len__(self) -> int:
        return len(self._budgets)

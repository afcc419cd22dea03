"""Pacing edits under a platform's budget. Pure maths over an injected clock; waiting uses an injected sleep.

- `EditPacer`: the minimum interval between two edits of one message (Slack: about one a second).
- `EditBudget`: N operations per sliding window, shared by every reply that posts to the same place
  (Discord: 5 creates/edits per 5 s per channel). A 429 blocks every user of the budget until it expires.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class EditPacer:
    def __init__(self, min_interval_s: float, clock: Clock = time.monotonic) -> None:
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._last: float | None = None

    def wait_time(self) -> float:
        """Seconds until the next edit may go (0 when it may go now)."""
        if self._last is None:
            return 0.0
        return max(0.0, self._last + self.min_interval_s - self._clock())

    def record(self) -> None:
        self._last = self._clock()


class EditBudget:
    """At most `max_ops` operations in any `window_s` seconds, across all replies sharing this object."""

    def __init__(self, max_ops: int, window_s: float, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep):
        self.max_ops = max_ops
        self.window_s = window_s
        self._clock = clock
        self._sleep = sleep
        self._times: deque[float] = deque()
        self._blocked_until = 0.0
        self._lock = asyncio.Lock()

    def wait_time(self) -> float:
        now = self._clock()
        while self._times and self._times[0] <= now - self.window_s:
            self._times.popleft()
        wait = max(0.0, self._blocked_until - now)
        if len(self._times) >= self.max_ops:
            wait = max(wait, self._times[0] + self.window_s - now)
        return wait

    async def acquire(self) -> None:
        """Wait until an operation fits in the window, then count it."""
        async with self._lock:  # first come, first served across replies
            while (wait := self.wait_time()) > 0:
                await self._sleep(wait)
            self._times.append(self._clock())

    def note_rate_limited(self, retry_after: float) -> None:
        self._blocked_until = max(self._blocked_until, self._clock() + retry_after)

    def ops_in_window(self) -> int:
        self.wait_time()
        return len(self._times)


class NoBudget:
    """A budget that never waits (platforms whose limit is per message, handled by `EditPacer`)."""

    async def acquire(self) -> None:
        return None

    def note_rate_limited(self, retry_after: float) -> None:
        return None

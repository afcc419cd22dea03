"""How often a streaming answer's text is handed on: the first piece at once, then at most every `interval_s`.

Why: a model streams a token every 10-30 ms, and every token handed on costs the same whatever its length: a
wake-up of the task reading the turn, a trip through each front-end's layers, and a write to the user (an SSE
frame and a `send` on the web, where a `send` that wakes its reader costs 30-120 µs of CPU on a VM). Under a
burst of 200 questions that per-token cost was the largest part of the event loop's work after the fixed cost of
a turn (issue 12). Nobody reads faster than every 50 ms, and Slack and Discord edit a reply at most about once a
second anyway (`bots.pacing`, the owner of what a platform allows), so pieces that arrive within one interval go
on as one.

Nothing waits for a batch to fill: a piece that arrives after a quiet interval goes on at once (so the first
token, and a slow model's every token, is never delayed); only pieces that follow one within `interval_s` wait,
for at most the rest of it, on one timer per batch (not per piece). `flush()` hands on what is pending now (the
answer ended, or failed), and `interval_s = 0` hands on every piece as it comes (STREAM_BATCH_MS=0).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class TokenBatcher:
    """Joins the pieces `feed` gets into the texts `emit` receives; see the module docstring."""

    def __init__(self, emit: Callable[[str], None], interval_s: float) -> None:
        if interval_s < 0:
            raise ValueError("interval_s must be >= 0")
        self._emit = emit
        self._interval_s = interval_s
        self._loop = asyncio.get_running_loop()
        self._pending: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._last = float("-inf")  # loop time of the last hand-over
        self.batches = 0  # texts handed on (tests read it)

    def feed(self, text: str) -> None:
        if not text:
            return
        if self._timer is not None:  # a batch is open: it goes with it
            self._pending.append(text)
            return
        due = self._last + self._interval_s
        if self._loop.time() >= due:  # quiet for a whole interval: at once
            self._hand_on(text)
            return
        self._pending.append(text)
        self._timer = self._loop.call_at(due, self._on_time)

    def flush(self) -> None:
        """Hand on what is pending now and stop the timer (the stream ended, failed or was cancelled)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            text = "".join(self._pending)
            self._pending.clear()
            self._hand_on(text)

    def _on_time(self) -> None:
        self._timer = None
        self.flush()

    def _hand_on(self, text: str) -> None:
        self._last = self._loop.time()
        self.batches += 1
        self._emit(text)

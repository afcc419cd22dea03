"""Tasks in flight: every answer a front-end is working on, so shutdown can land or mark each one.

One small class every front-end shares (Slack and Discord spawn answer tasks; the web tracks its request tasks):
`spawn` starts and tracks a task, `track` adopts the current one, `idle` waits for all of them (tests and
benchmarks), and `drain` cancels them (each reply lands an "interrupted" note as it unwinds) and waits up to a
timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class Inflight:
    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine)
        self.track(task)
        return task

    def track(self, task: asyncio.Task[Any] | None = None) -> asyncio.Task[Any]:
        """Track `task` (default: the current one) until it is done."""
        task = task or asyncio.current_task()
        assert task is not None, "track() outside a task"
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __len__(self) -> int:
        return sum(1 for task in self._tasks if not task.done())

    async def idle(self) -> None:
        """Wait until every task in flight (including ones started meanwhile) has finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Cancel every task in flight and wait for them to unwind (up to `timeout_s`)."""
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if not task.done() and task is not current]
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        if pending:
            log.warning("%s: %d repl(ies) did not finish within %.0fs of shutdown", self.name, len(pending),
                        timeout_s)

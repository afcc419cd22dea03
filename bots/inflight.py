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

    async def drain(self, timeout_s: float = 30.0, *, grace_s: float = 0.0) -> None:
        """Let the tasks in flight finish for up to `grace_s` (a rolling deploy: the answers land whole), then
        cancel the rest (each lands an "interrupted" note) and wait for them to unwind (up to `timeout_s`)."""
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if not task.done() and task is not current]
        if tasks and grace_s > 0:
            _, still = await asyncio.wait(tasks, timeout=grace_s)
            tasks = list(still)
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        if pending:
            log.warning("%s: %d repl(ies) did not finish within %.0fs of shutdown", self.name, len(pending),
                        timeout_s)


class ReplyTracker:
    """Registers one reply in the replicas' registry of replies in flight once its first message exists.

    Why: a replica killed mid-reply leaves a message on "Thinking…" or a cursor; while this reply's lease is
    renewed nobody touches it, and once it expires another replica claims it and edits the message to say the
    answer was interrupted (`switchboard.run`'s sweeper). `locate(handle)` is the surface's way to name a
    message so another process can edit it; a surface without it is not tracked.
    """

    def __init__(self, registry: Any, reply_id: str, info: dict[str, Any], locate: Any | None) -> None:
        self._registry = registry
        self._reply_id = reply_id
        self._info = info
        self._locate = locate
        self._done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._moves: set[asyncio.Task[None]] = set()

    def posted(self, handle: Any) -> None:
        """The renderer posted a message. The newest one is where an orphaned reply is marked: it is the one
        that may be left on "Thinking…" or a cursor (the ones above it are finished)."""
        if self._locate is None or self._registry is None or self._done.is_set():
            return
        where = self._locate(handle)
        if not where:
            return
        info = {**self._info, **where}
        if self._task is None:
            self._task = asyncio.create_task(self._hold(info))
        else:  # re-register under the same id: the entry now points at the newest message
            self._moves.add(move := asyncio.create_task(self._move(info)))
            move.add_done_callback(self._moves.discard)

    async def _move(self, info: dict[str, Any]) -> None:
        try:
            await self._registry.start(self._reply_id, info)
        except Exception:  # noqa: BLE001 - a safety net: at worst the older message is the one marked
            log.warning("reply %s: its newest message could not be registered", self._reply_id, exc_info=True)

    async def _hold(self, info: dict[str, Any]) -> None:
        try:
            async with self._registry.track(self._reply_id, info):
                await self._done.wait()
        except Exception:  # noqa: BLE001 - the registry is a safety net, never a reason to fail a reply
            log.warning("reply %s could not be tracked", self._reply_id, exc_info=True)

    async def close(self) -> None:
        """The reply ended (landed, failed or interrupted): take it out of the registry."""
        self._done.set()
        if self._moves:
            await asyncio.wait(self._moves, timeout=5)  # before the finish, so no move re-registers it after
        if self._task is not None:
            await asyncio.wait((self._task,), timeout=5)

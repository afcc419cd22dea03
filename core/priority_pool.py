"""A pool of threads that runs the waiting job with the lowest priority value first, not the oldest submitted.

Why routing needs it: a turn sends two jobs to the routing threads, its question's embedding as it arrives
(`core.graph.embed_ahead`) and its routing decision once its conversation is read. In a first-come-first-served
pool, 200 questions arriving together queue 200 embeddings ahead of the first routing job, so every question
is routed only after the whole burst is embedded, and every first token waits for the last arrival's work.
Keyed by the turn's arrival time, the first question's routing goes before the last question's embedding, and
first tokens come out in the order the questions came in. `concurrent.futures.ThreadPoolExecutor` has no
priorities; the queue here is a heap, the rest is what that executor does.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class PriorityThreadPool:
    """Up to `workers` threads (started as jobs need them), each taking the lowest (priority, submission)
    job from a heap. Threads are daemons: a job left when the process exits is dropped, as the questions
    that asked for it are."""

    def __init__(self, workers: int, name: str) -> None:
        self._workers = workers
        self._name = name
        self._jobs: list[tuple[float, int, Future[Any], Callable[[], Any]]] = []
        self._ready = threading.Condition()
        self._order = itertools.count()  # equal priorities: first submitted, first run
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    @property
    def workers(self) -> int:
        """The most threads the pool runs."""
        return self._workers

    def queued(self) -> int:
        """How many jobs wait for a thread."""
        with self._ready:
            return len(self._jobs)

    def submit(self, priority: float, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run `fn(*args, **kwargs)` in a pool thread once no job with a lower priority waits."""
        future: Future[T] = Future()
        with self._ready:
            if self._closed:
                raise RuntimeError(f"{self._name}: the pool is shut down")
            heapq.heappush(self._jobs, (priority, next(self._order), future, functools.partial(fn, *args, **kwargs)))
            self._ready.notify()
            if self._idle < len(self._jobs) and len(self._threads) < self._workers:
                thread = threading.Thread(target=self._work, name=f"{self._name}_{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
        return future

    def shutdown(self) -> None:
        """Refuse new jobs; the threads end once the waiting ones are done."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def _next(self) -> tuple[Future[Any], Callable[[], Any]] | None:
        with self._ready:
            while not self._jobs:
                if self._closed:
                    return None
                self._idle += 1
                try:
                    self._ready.wait()
                finally:
                    self._idle -= 1
            _, _, future, job = heapq.heappop(self._jobs)
            return future, job

    def _work(self) -> None:
        while (taken := self._next()) is not None:
            future, job = taken
            if not future.set_running_or_notify_cancel():  # cancelled while it waited
                continue
            try:
                result = job()
            except BaseException as exc:  # noqa: BLE001 - handed to whoever awaits the future
                future.set_exception(exc)
            else:
                future.set_result(result)
            del future, job, taken  # no reference to a finished job's result while waiting for the next

"""Events with heartbeats: while the core is silent (a slow first token, a pause between tokens) the SSE writer
gets a `HEARTBEAT` every `interval_s`, so proxies that cut idle connections keep the stream open.

The events are read by one producer task for their whole life (never `wait_for` on `__anext__`, which would cancel
the generator at its first timeout; nor one task per step, which would give LangGraph's context variables a new
context each time), and handed over through a small queue the writer waits on with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Final

from core.events import Event


class _Heartbeat:
    def __repr__(self) -> str:
        return "HEARTBEAT"


HEARTBEAT: Final = _Heartbeat()
_END: Final = object()


async def with_heartbeats(events: AsyncIterator[Event], interval_s: float
                          ) -> AsyncIterator[Event | _Heartbeat]:
    """`events`, with `HEARTBEAT` whenever none came for `interval_s`. Closing this closes `events` (the
    producer is cancelled and `events.aclose()` runs in it); an exception from `events` is raised here."""
    queue: asyncio.Queue[object] = asyncio.Queue(maxsize=64)

    async def produce() -> None:
        try:
            async for event in events:
                await queue.put(event)
        except Exception as exc:  # noqa: BLE001 - handed to the reader, raised there
            await queue.put(exc)
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
        await queue.put(_END)

    producer = asyncio.create_task(produce())
    try:
        while True:
            try:
                # A token already waiting is taken at once; otherwise wait under `asyncio.timeout` (one timer, no
                # task, unlike `wait_for`), so the streaming hot path pays little for the heartbeat clock.
                if not queue.empty():
                    item = queue.get_nowait()
                else:
                    async with asyncio.timeout(interval_s):
                        item = await queue.get()
            except TimeoutError:
                if producer.done() and queue.empty():  # it died without its end marker (its aclose raised)
                    producer.result()
                    return
                yield HEARTBEAT
                continue
            if item is _END:
                return
            if isinstance(item, Exception):
                raise item
            yield item  # type: ignore[misc]
    finally:
        if not producer.done():
            producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer

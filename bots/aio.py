"""Small asyncio helpers the renderers share."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from core.events import Event

log = logging.getLogger(__name__)


async def quietly(awaitable: Awaitable[Any], session: str) -> None:
    try:
        await awaitable
    except Exception:  # a typing indicator is decoration
        log.debug("session %s: typing indicator failed", session, exc_info=True)


async def close_quietly(events: AsyncIterator[Event]) -> None:
    """Close an async generator left mid-way (after the terminal event), so its cleanup runs now."""
    aclose = getattr(events, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception:
        log.debug("closing the event stream failed", exc_info=True)


async def first_of(awaitable: Awaitable[Any], *stoppers: Awaitable[Any]) -> bool:
    """Await `awaitable` until it or any of `stoppers` completes (the rest are cancelled); True when
    `awaitable` completed."""
    waiter = asyncio.ensure_future(awaitable)
    others = [asyncio.ensure_future(stopper) for stopper in stoppers]
    try:
        await asyncio.wait((waiter, *others), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiter, *others):
            if not task.done():
                task.cancel()
    return waiter.done() and not waiter.cancelled()

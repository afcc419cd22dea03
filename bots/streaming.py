"""The streaming renderer: core events in, messages edited in place out. Platform-neutral.

`StreamingReply` consumes the events of `Orchestrator.respond()` and drives a `bots.surface.Surface`. The
consumer only updates state and never waits for the platform; a background flusher does every platform call.
What a user sees:
1. a placeholder at once (status "thinking"), edited to name the agent as soon as the core has routed;
2. the first words as soon as they arrive (never held back by the pacing interval, only by the shared budget),
   then edits at most once per `pacer.min_interval_s`, each carrying everything that arrived meanwhile;
3. past `surface.max_chars` (measured on the rendered text) the message is finished and the answer continues
   in a new one (`bots.layout`); a cut never leaves a code fence open;
4. on a 429 (`RateLimited`) the budget the write spent learns of it (every reply sharing it waits), and
   everything pending goes out as one write afterwards; the final text is retried until it lands (up to
   `final_attempts` tries, logged if abandoned);
5. the last message ends with the agent tag and sources, or with a readable error line, or - when the task is
   cancelled at shutdown - with an "interrupted" note before the cancellation propagates.

Every write takes a slot of the budget `surface.budget_for(write)` names, so pacing has one owner: this class,
over the budgets and pacer of `bots.pacing`, on an injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractAsyncContextManager
from typing import Any

from bots.layout import Layout, ReplyState
from bots.pacing import Budget, Clock, EditPacer, Sleep
from bots.surface import (
    FINAL_STATUSES,
    AgentTag,
    MessageTooLong,
    RateLimited,
    ReplyOutcome,
    ReplyView,
    Surface,
    SurfaceGone,
    Write,
)
from core.events import Agent, Complete, Error, Event, Sources, Start, Token
from core.retry import USER_MESSAGES

log = logging.getLogger(__name__)

ERROR_BACKOFF_S = 1.0  # after an unexpected platform error, the next edit waits at least this long


class StreamingReply:
    """One answer, streamed into one or more messages of a `Surface`. Use once: `await reply.run(events)`.

    `pacer` is this reply's own (never share one). `clock` and `sleep` are injectable so tests run in virtual
    time.
    """

    def __init__(self, surface: Surface, pacer: EditPacer | None = None, *, clock: Clock = time.monotonic,
                 sleep: Sleep = asyncio.sleep, final_attempts: int = 10) -> None:
        self.surface = surface
        self.pacer = pacer if pacer is not None else EditPacer(1.0)
        self._clock = clock
        self._sleep = sleep
        self._final_attempts = final_attempts
        self.outcome = ReplyOutcome()
        self._session = "-"
        self._body = ""
        self._state = ReplyState()
        self._layout = Layout(surface.render, surface.max_chars)
        self._sending_index = 0
        self._blocked_until = 0.0
        self._shown_agent = False
        self._shown_text = False
        self._changed = asyncio.Event()
        self._closing = asyncio.Event()
        self._typing: asyncio.Task[None] | None = None
        self._finalized = False
        self._gone = False

    # --- the consumer: events in, state updated; never waits for the platform -------------------------------
    async def run(self, events: AsyncIterator[Event]) -> ReplyOutcome:
        """Consume `events` to the end and return once the final text has landed (or been abandoned)."""
        flusher = asyncio.create_task(self._flush_loop())
        try:
            async for event in events:
                self._apply(event)
                if self._state.status in FINAL_STATUSES:
                    break
            else:
                log.error("session %s: event stream ended without Complete or Error", self._session)
                self._fail("internal", USER_MESSAGES["internal"])
        except asyncio.CancelledError:
            self._fail("interrupted", USER_MESSAGES["interrupted"])
            await self._finish(flusher)
            raise
        except Exception:  # the core failed mid-stream: the user still gets a readable end
            log.exception("session %s: event stream raised", self._session)
            self._fail("internal", USER_MESSAGES["internal"])
        await _close_quietly(events)
        try:
            await self._finish(flusher)
        except asyncio.CancelledError:  # shutdown while the final text was on its way: land it, then stop
            await self._finish(flusher)
            raise
        return self.outcome

    def _apply(self, event: Event) -> None:
        state = self._state
        if isinstance(event, Start):
            self._session = event.session_key
            return
        if isinstance(event, Agent):
            self.outcome.agent = event.name
            status = "routed" if state.status == "thinking" else state.status
            self._state = ReplyState(AgentTag(event.name, event.label), status, state.sources, state.error_message)
        elif isinstance(event, Token):
            if not event.text:
                return
            if self.outcome.first_token_received_at is None:
                self.outcome.first_token_received_at = self._clock()
            self._body += event.text
            self._state = ReplyState(state.agent, "streaming", state.sources, state.error_message)
        elif isinstance(event, Sources):
            self._state = ReplyState(state.agent, state.status, tuple(event.items), state.error_message)
        elif isinstance(event, Complete):
            self.outcome.last_token_at = self._clock()
            self._state = ReplyState(state.agent, "done", state.sources, "")
            self.outcome.status = "done"
            self.outcome.agent = self.outcome.agent or event.agent
        elif isinstance(event, Error):
            self._fail(event.code, event.user_message)
            return
        else:
            return
        self._changed.set()

    def _fail(self, code: str, message: str) -> None:
        if self.outcome.last_token_at is None:
            self.outcome.last_token_at = self._clock()
        state = self._state
        self._state = ReplyState(state.agent, "error", state.sources, message)
        self.outcome.status = "interrupted" if code == "interrupted" else "error"
        self.outcome.error_code = code
        self._changed.set()

    # --- the flusher: all platform I/O happens here -------------------------------------------------------
    def _views(self) -> list[ReplyView]:
        return self._layout.views(self._body, self._state)

    def _next_write(self) -> Write:
        return "post" if not self.outcome.handles else "edit"

    def _budget(self, write: Write) -> Budget | None:
        return self.surface.budget_for(write)

    async def _flush_loop(self) -> None:
        await self._post_placeholder()
        while not self._closing.is_set() and not self._gone:
            if not await self._wait_for(self._changed.wait()):
                return
            now = self._clock()
            urgent = (self._state.agent is not None and not self._shown_agent) or (self._body and not self._shown_text)
            budget = self._budget(self._next_write())
            delay = max(0.0 if urgent else self.pacer.delay(now), self._blocked_until - now,
                        budget.wait_time() if budget is not None else 0.0)
            if delay > 0 and not await self._wait_for(self._sleep(delay)):
                return
            self._changed.clear()
            try:
                await self._push()
            except RateLimited:
                self._changed.set()  # everything pending goes out merged in the next edit
            except MessageTooLong:
                self._note_too_long()
                self._changed.set()
            except SurfaceGone:
                log.warning("session %s: the reply's channel or message is gone; stopping", self._session)
                self._gone = True
                return
            except Exception:  # an intermediate edit may fail; the next one (and the final one) is retried
                log.exception("session %s: edit failed", self._session)
                self._blocked_until = max(self._blocked_until, self._clock() + ERROR_BACKOFF_S)
                self._changed.set()

    async def _wait_for(self, awaitable: Awaitable[Any]) -> bool:
        """Await `awaitable` unless the reply starts closing first; True when it completed."""
        waiter = asyncio.ensure_future(awaitable)
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait((waiter, closing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, closing):
                if not task.done():
                    task.cancel()
        return waiter.done() and not waiter.cancelled() and not self._closing.is_set()

    async def _post_placeholder(self) -> None:
        if self._closing.is_set():  # the answer was over before the flusher ran: the final post is enough
            return
        typing = getattr(self.surface, "typing", None)
        if typing is not None:
            self._typing = asyncio.create_task(_quietly(typing(), self._session))
        text = self.surface.render(ReplyView(status="thinking"))
        for _ in range(self._final_attempts):
            try:
                await self._send(0, text)
                self.outcome.placeholder_at = self._clock()
                return
            except RateLimited as limited:
                if not await self._wait_for(self._sleep(limited.retry_after)):
                    return
            except SurfaceGone:
                log.warning("session %s: cannot post here; the reply is dropped", self._session)
                self._gone = True
                return
            except Exception:  # the first real edit will post instead
                log.exception("session %s: placeholder post failed", self._session)
                return

    async def _push(self, *, final: bool = False) -> None:
        """Bring every message up to date: edit those whose text changed, post the new ones."""
        views = self._views()
        for index, view in enumerate(views):
            text = self.surface.render(view)
            last = index == len(views) - 1
            if final and last and index < len(self.outcome.handles) and self._finalize_sets_text:
                await self._send_finalized(index, view, text)
                continue
            if index < len(self.outcome.texts) and self.outcome.texts[index] == text:
                continue
            await self._send(index, text)
            if view.body.strip():
                self._shown_text = True
                if self.outcome.first_token_at is None:
                    self.outcome.first_token_at = self._clock()
            self._shown_agent = self._shown_agent or view.agent is not None

    @property
    def _finalize_sets_text(self) -> bool:
        return getattr(self.surface, "finalize", None) is not None and getattr(self.surface, "finalize_sets_text",
                                                                              False)

    async def _send_finalized(self, index: int, view: ReplyView, text: str) -> None:
        """The last message's final edit done by `surface.finalize` (text and extras in one call)."""
        try:
            async with self._slot("edit"):
                await self.surface.finalize(self.outcome.handles[index], view)  # type: ignore[attr-defined]
        except (RateLimited, MessageTooLong, SurfaceGone):
            raise
        except Exception:  # the extras were refused: the text alone must still land
            log.exception("session %s: finalize failed; sending the final text alone", self._session)
            await self._send(index, text)
            return
        self.pacer.record(self._clock())
        self.outcome.texts[index] = text
        self.outcome.edits += 1
        self._finalized = True

    async def _send(self, index: int, text: str) -> None:
        self._sending_index = index
        write: Write = "edit" if index < len(self.outcome.handles) else "post"
        async with self._slot(write):
            self.pacer.record(self._clock())
            if write == "edit":
                await self.surface.edit(self.outcome.handles[index], text)
                self.outcome.texts[index] = text
                self.outcome.edits += 1
            else:
                self.outcome.handles.append(await self.surface.post(text))
                self.outcome.texts.append(text)
                self.outcome.posts += 1

    @contextlib.asynccontextmanager
    async def _slot(self, write: Write) -> AsyncIterator[None]:
        """The budget's slot for one platform call; a 429 inside it is fed to that budget, then re-raised."""
        budget = self._budget(write)
        slot: AbstractAsyncContextManager[None] = budget.slot() if budget is not None else contextlib.nullcontext()
        try:
            async with slot:
                yield
        except RateLimited as limited:
            self.outcome.rate_limited += 1
            self._blocked_until = max(self._blocked_until, self._clock() + limited.retry_after)
            if budget is not None:
                budget.note_rate_limited(limited.retry_after)
            log.info("session %s: platform 429 on %s, retrying in %.2fs", self._session, write, limited.retry_after)
            raise

    def _note_too_long(self) -> None:
        """Cut smaller from the refused message on; the answer continues in a new message."""
        self._layout.refused(self._sending_index)
        log.warning("session %s: message %d refused as too long; cutting %d characters shorter",
                    self._session, self._sending_index, self._layout.shrink)

    # --- the end: stop the flusher, land the final text ---------------------------------------------------
    async def _finish(self, flusher: asyncio.Task[None]) -> None:
        """Let an edit in flight finish (never cut a request in half), then land the final text."""
        self._closing.set()
        await asyncio.wait((flusher,))
        if not flusher.cancelled() and flusher.exception() is not None:
            log.error("session %s: edit flusher crashed", self._session, exc_info=flusher.exception())
        try:
            await self._land_final()
        finally:
            self.outcome.answer = self._body
            if self.outcome.status == "pending":
                self.outcome.status = "done" if self._state.status == "done" else "error"

    async def _land_final(self) -> None:
        if self._gone:
            return
        for attempt in range(self._final_attempts):
            wait = self._blocked_until - self._clock()
            if wait > 0:
                await self._sleep(wait)
            try:
                await self._push(final=True)
                self.outcome.delivered = True
                self.outcome.final_at = self._clock()
                break
            except RateLimited:
                continue
            except MessageTooLong:
                self._note_too_long()
            except SurfaceGone:
                log.warning("session %s: the reply's channel or message is gone; final text dropped", self._session)
                self._gone = True
                return
            except Exception:
                log.exception("session %s: final edit failed (attempt %d)", self._session, attempt + 1)
                await self._sleep(min(2.0**attempt, 30.0))
        else:
            log.error("session %s: final text abandoned after %d attempts", self._session, self._final_attempts)
            return
        await self._finalize()

    async def _finalize(self) -> None:
        finalize = getattr(self.surface, "finalize", None)
        if finalize is None or not self.outcome.handles or self._finalized or self._gone:
            return
        views = self._views()
        view, handle = views[-1], self.outcome.handles[min(len(views), len(self.outcome.handles)) - 1]
        for _ in range(self._final_attempts):
            wait = self._blocked_until - self._clock()
            if wait > 0:
                await self._sleep(wait)
            try:
                async with self._slot("edit"):
                    await finalize(handle, view)
                return
            except RateLimited:
                continue
            except Exception:  # the text is already there; extras are not worth more retries
                log.exception("session %s: finalize failed", self._session)
                return


async def _quietly(awaitable: Awaitable[Any], session: str) -> None:
    try:
        await awaitable
    except Exception:  # a typing indicator is decoration
        log.debug("session %s: typing indicator failed", session, exc_info=True)


async def _close_quietly(events: AsyncIterator[Event]) -> None:
    """Close an async generator left mid-way (after the terminal event), so its cleanup runs now."""
    aclose = getattr(events, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception:
        log.debug("closing the event stream failed", exc_info=True)

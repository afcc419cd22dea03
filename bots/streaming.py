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

Every write takes a slot of the budget `surface.budget_for(write)` names, in the order `bots.write_plan`
decides, so pacing has one owner: this class, over `bots.pacing`, on an injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

from bots.aio import close_quietly, first_of, quietly
from bots.layout import Layout, ReplyState
from bots.pacing import Clock, EditPacer, Priority, Sleep
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
    spending,
)
from bots.write_plan import Progress, final_priority, plan_next_write
from core.tracing import span
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
                 sleep: Sleep = asyncio.sleep, final_attempts: int = 10,
                 on_post: Callable[[Any], None] | None = None) -> None:
        self.surface = surface
        self.on_post = on_post  # told each new message's handle (the pipeline registers replies in flight)
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
        self._changed = asyncio.Event()
        self._closing = asyncio.Event()
        self._typing: asyncio.Task[None] | None = None
        self._routed_at: float | None = None
        self._queueing = False
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
        await close_quietly(events)
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
            self._routed_at = self._clock()
            status = "routed" if state.status == "thinking" else state.status
            self._state = replace(state, agent=AgentTag(event.name, event.label), status=status)
        elif isinstance(event, Token):
            if not event.text:
                return
            if self.outcome.first_token_received_at is None:
                self.outcome.first_token_received_at = self._clock()
            self._body += event.text
            self._state = replace(state, status="streaming")
        elif isinstance(event, Sources):
            self._state = replace(state, sources=tuple(event.items))
        elif isinstance(event, Complete):
            self.outcome.last_token_at = self._clock()
            self._state = replace(state, status="done", error_message="")
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
        self._state = replace(self._state, status="error", error_message=message)
        self.outcome.status = "interrupted" if code == "interrupted" else "error"
        self.outcome.error_code = code
        self._changed.set()

    # --- the flusher: all platform I/O happens here -------------------------------------------------------
    def _views(self) -> list[ReplyView]:
        return self._layout.views(self._body, self._state)

    @property
    def _shown_text(self) -> bool:
        return self.outcome.first_token_at is not None

    def _progress(self) -> Progress:
        now = self._clock()
        return Progress(posted=bool(self.outcome.handles), has_text=bool(self._body), shown_text=self._shown_text,
                        has_agent=self._state.agent is not None, shown_agent=self._shown_agent,
                        routed_at=self._routed_at, blocked_until=self._blocked_until,
                        next_edit_at=now + self.pacer.delay(now))

    async def _flush_loop(self) -> None:
        self._start_typing()
        await self._await_first_words()
        while not self._closing.is_set() and not self._gone:
            if not await self._wait_for(self._changed.wait()):
                return
            plan = plan_next_write(self._progress(), self._clock())
            if plan is None:
                self._changed.clear()
                continue
            if plan.delay_s > 0:
                if plan.overtakable:
                    self._changed.clear()
                slept = await self._wait_for(self._sleep(plan.delay_s), wake_on_change=plan.overtakable)
                if self._closing.is_set():
                    return
                self._changed.set()
                if not slept:  # the answer changed first: plan again
                    continue
            self._changed.clear()
            try:
                await self._push(plan.priority, plan.reserve)
            except RateLimited:
                self._changed.set()  # everything pending goes out merged in the next write
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

    def _start_typing(self) -> None:
        typing = getattr(self.surface, "typing", None)
        if typing is not None:
            self._typing = asyncio.create_task(quietly(typing(), self._session))

    async def _await_first_words(self) -> None:
        """Up to the surface's `first_write_wait_s` (Discord: a typing indicator shows meanwhile), wait for words
        to arrive, so the first write carries text instead of a placeholder that costs a write of its own."""
        wait = float(getattr(self.surface, "first_write_wait_s", 0.0))
        deadline = self._clock() + wait
        while not self._body and not self._closing.is_set() and (remaining := deadline - self._clock()) > 0:
            self._changed.clear()
            await self._wait_for(self._sleep(remaining), wake_on_change=True)
        self._changed.set()

    async def _wait_for(self, awaitable: Awaitable[Any], *, wake_on_change: bool = False) -> bool:
        """Await `awaitable` unless the reply starts closing first (or, with `wake_on_change`, the answer
        changes); True when it completed."""
        done = await first_of(awaitable, self._closing.wait(), *([self._changed.wait()] if wake_on_change else []))
        return done and not self._closing.is_set()

    def _stale(self, views: list[ReplyView], final: bool) -> int | None:
        """The first message whose platform text is not what it should be (None when all are current)."""
        for index, view in enumerate(views):
            if index >= len(self.outcome.handles):
                return index
            last = index == len(views) - 1
            if final and last and self._finalize_sets_text and not self._finalized:
                return index
            if self.outcome.texts[index] != self.surface.render(view):
                return index
        return None

    async def _push(self, priority: Priority, reserve: int = 0, *, final: bool = False) -> None:
        """Bring every message up to date, one write at a time; each write renders the answer as it is when
        its slot comes, so time spent queueing for the budget is never spent on stale text."""
        written: set[int] = set()
        while (index := self._stale(self._views(), final)) is not None and index not in written:
            written.add(index)  # text that arrived during this write waits for the next one (and its pacing)
            write: Write = "edit" if index < len(self.outcome.handles) else "post"
            async with self._slot(write, priority, reserve):
                views = self._views()
                index = min(index, len(views) - 1)
                view = views[index]
                last = index == len(views) - 1
                if final and last and write == "edit" and self._finalize_sets_text:
                    await self._send_finalized(index, view)
                elif final and last and write == "post" and hasattr(self.surface, "post_final"):
                    await self._post_final(view)
                else:
                    await self._send(index, write, self.surface.render(view))
            if view.body.strip() and self.outcome.first_token_at is None:
                self.outcome.first_token_at = self._clock()  # the first words are visible
            self._shown_agent = self._shown_agent or view.agent is not None
            if self.outcome.placeholder_at is None:
                self.outcome.placeholder_at = self._clock()

    @property
    def _finalize_sets_text(self) -> bool:
        return hasattr(self.surface, "finalize") and getattr(self.surface, "finalize_sets_text", False)

    async def _send_finalized(self, index: int, view: ReplyView) -> None:
        """The last message's final edit done by `surface.finalize` (text and extras in one call)."""
        text = self.surface.render(view)
        self.pacer.record(self._clock())
        try:
            with span("switchboard.write", write="finalize"):  # core/tracing.py: each platform write
                await self.surface.finalize(self.outcome.handles[index], view)  # type: ignore[attr-defined]
        except (RateLimited, MessageTooLong, SurfaceGone):
            raise
        except Exception:  # the extras were refused: the text alone must still land
            log.exception("session %s: finalize failed; sending the final text alone", self._session)
            await self._send(index, "edit", text)
            self._finalized = True
            return
        self.outcome.texts[index] = text
        self.outcome.edits += 1
        self._finalized = True

    async def _post_final(self, view: ReplyView) -> None:
        """A last message posted already final, extras included (`surface.post_final`): one write, not two."""
        self.pacer.record(self._clock())
        with span("switchboard.write", write="post_final"):
            self._posted(await self.surface.post_final(view))  # type: ignore[attr-defined]
        self.outcome.texts.append(self.surface.render(view))
        self.outcome.posts += 1
        self._finalized = True

    async def _send(self, index: int, write: Write, text: str) -> None:
        self._sending_index = index
        self.pacer.record(self._clock())
        if write == "edit":
            with span("switchboard.write", write="edit"):
                await self.surface.edit(self.outcome.handles[index], text)
            self.outcome.texts[index] = text
            self.outcome.edits += 1
        else:
            with span("switchboard.write", write="post"):
                self._posted(await self.surface.post(text))
            self.outcome.texts.append(text)
            self.outcome.posts += 1

    def _posted(self, handle: Any) -> None:
        self.outcome.handles.append(handle)
        if self.on_post is not None:
            self.on_post(handle)

    @contextlib.asynccontextmanager
    async def _slot(self, write: Write, priority: Priority, reserve: int) -> AsyncIterator[None]:
        """The budget's slot for one platform call (`spending`: a 429 inside teaches that budget), and this
        reply's own note of the 429.

        While queueing for the slot the reply may be cancelled by `_finish` (the final write then queues with
        its own priority); once the slot is held, the platform call is never cut in half."""
        self._queueing = True
        try:
            async with spending(self.surface.budget_for(write), priority, reserve):
                self._queueing = False
                yield
        except RateLimited as limited:
            self.outcome.rate_limited += 1
            self._blocked_until = max(self._blocked_until, self._clock() + limited.retry_after)
            log.info("session %s: platform 429 on %s, retrying in %.2fs", self._session, write, limited.retry_after)
            raise
        finally:
            self._queueing = False

    def _note_too_long(self) -> None:
        """Cut smaller from the refused message on; the answer continues in a new message."""
        self._layout.refused(self._sending_index)
        log.warning("session %s: message %d refused as too long; cutting %d characters shorter",
                    self._session, self._sending_index, self._layout.shrink)

    # --- the end: stop the flusher, land the final text ---------------------------------------------------
    async def _finish(self, flusher: asyncio.Task[None]) -> None:
        """Let an edit in flight finish (never cut a request in half), then land the final text."""
        self._closing.set()
        if self._queueing:  # waiting for a budget slot for a progress write: the final write goes instead
            flusher.cancel()
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
                await self._push(final_priority(self._shown_text), final=True)
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
                async with self._slot("edit", Priority.FINAL, 0):
                    await finalize(handle, view)
                return
            except RateLimited:
                continue
            except Exception:  # the text is already there; extras are not worth more retries
                log.exception("session %s: finalize failed", self._session)
                return

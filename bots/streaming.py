"""The platform-neutral streaming renderer: core events in, messages edited in place out.

`StreamingReply` consumes the events of `Orchestrator.respond()` and drives a `Surface` (Slack, Discord, a test
fake). It knows no platform; a surface knows no pacing. A front-end's whole job for one answer is:

    reply = StreamingReply(surface, EditPacer(1.0), budget=channel_budget)   # budget: Discord only
    outcome = await reply.run(orchestrator.respond(session_key, text, user))

What a user sees:
1. a placeholder at once (status "thinking"), edited to name the agent as soon as the core has routed;
2. the first words as soon as they arrive (never held back by the pacing interval, only by the shared budget),
   then edits at most once per `pacer.min_interval_s`, each carrying everything that arrived meanwhile. Edits
   run in a background flusher, so the core's stream is consumed at its own pace and never waits for a platform;
3. past `surface.max_chars` (measured on the rendered text, tag and footer included) the message is finished and
   the answer continues in a new one; a cut never leaves a code fence open (`bots.splitting`);
4. on a 429 (`RateLimited`) it waits `retry_after` and sends everything pending as one edit; the final text is
   retried until it lands (up to `final_attempts` tries, logged if abandoned);
5. the last message ends with the agent tag and sources, or with a readable error line, or - when the task is
   cancelled at shutdown - with an "interrupted" note before the cancellation propagates. No message is left
   "thinking" or with the in-progress marker.

The surface contract (`Surface`):
- `max_chars`: the platform's limit for one message's text.
- `post(text) -> handle` and `edit(handle, text)`: raise `RateLimited(retry_after)` on a 429 and
  `MessageTooLong()` when the platform refuses the length; any other exception is logged and retried.
- `render(view) -> str`: the platform text of one message (`ReplyView`). `render_plain` is a usable default
  and a base to wrap: platforms pass their own `bold`/`italic` and a `sanitize` that neutralises mentions.
- optional `finalize(handle, view)`: called once, for the last message, after the final text has landed
  (Slack blocks and buttons, a Discord embed colour). It may raise `RateLimited` like `edit`. A surface whose
  finalize also sets the final text sets `finalize_sets_text = True`: finalize then *is* the last message's
  final edit (one platform call instead of two, which matters under Slack's per-workspace edit budget), and a
  failure other than a 429 falls back to a plain edit so the text still lands.
- optional `typing()`: started alongside the placeholder (Discord's typing indicator); failures are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

from bots.pacing import Clock, EditBudget, EditPacer, Sleep
from bots.splitting import Cut, close_open_fence, cut_markdown
from core.events import Agent, Complete, Error, Event, SourceRef, Sources, Start, Token
from core.retry import USER_MESSAGES

log = logging.getLogger(__name__)

Status = Literal["thinking", "routed", "streaming", "done", "error"]
FINAL_STATUSES = ("done", "error")
MIN_PART_CHARS = 60  # the splitter is never asked for smaller parts than this
TOO_LONG_STEP = 0.1  # after a MessageTooLong, parts are cut this fraction of max_chars smaller
ERROR_BACKOFF_S = 1.0  # after an unexpected platform error, the next edit waits at least this long
MOVED_NOTE = "(this part of the answer moved into the message above)"  # a message a rewritten answer left over


class RateLimited(Exception):
    """The platform answered 429: nothing more may be sent for `retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited for {retry_after:.2f}s")
        self.retry_after = max(0.0, float(retry_after))


class MessageTooLong(Exception):
    """The platform refused a message's text as too long."""


class SurfaceGone(Exception):
    """The place the reply was going is gone for good (channel deleted or archived, bot removed, message
    deleted): retrying cannot help, so the reply stops at once instead of backing off for minutes."""


class AgentTag(NamedTuple):
    name: str  # billing | technical | policy
    label: str  # "Billing", as users see it


@dataclass(frozen=True, slots=True)
class ReplyView:
    """What one message of a reply should show; `Surface.render` turns it into platform text.

    `body` is the Markdown that belongs in this message (fences balanced between messages; the last message may
    end inside a fence while streaming). `is_continuation` is true for every message after the first;
    `is_last_part` for the message that carries the in-progress marker, the sources and the error line.
    """

    body: str = ""
    agent: AgentTag | None = None
    status: Status = "thinking"
    sources: tuple[SourceRef, ...] = ()
    error_message: str = ""
    is_continuation: bool = False
    is_last_part: bool = True


@runtime_checkable
class Surface(Protocol):
    max_chars: int

    async def post(self, text: str) -> Any:
        """Post a new message and return its handle (Slack ts, Discord Message)."""

    async def edit(self, handle: Any, text: str) -> None:
        """Replace the text of a posted message."""

    def render(self, view: ReplyView) -> str:
        """The platform text for one message."""


def _same(text: str) -> str:
    return text


def render_plain(
    view: ReplyView,
    *,
    sanitize: Callable[[str], str] = _same,
    marker: str = " ▌",
    bold: Callable[[str], str] = lambda s: f"*{s}*",
    italic: Callable[[str], str] = lambda s: f"_{s}_",
) -> str:
    """A default rendering: agent tag on the first message, marker while streaming, footer on the last.

    `sanitize` is applied to everything that came from the model or the documents (body, source titles), so a
    platform can neutralise mentions there. The result is never empty (platforms refuse empty messages).
    """
    if view.status == "thinking":
        return italic("Thinking…")
    body = sanitize(view.body).lstrip("\n").rstrip()
    streaming = view.status in ("routed", "streaming") and view.is_last_part
    if streaming:
        body = close_open_fence(body)
    lines: list[str] = []
    if view.agent and not view.is_continuation:
        routed_only = view.status == "routed" and not body
        lines.append(f"{bold(view.agent.label)} {italic('is looking into it…')}" if routed_only
                     else bold(view.agent.label))
    if body:
        lines.append(body)
    elif view.status == "done" and view.is_last_part and not view.is_continuation:
        lines.append(italic("(no answer)"))
    if not view.is_last_part:
        lines.append(italic("(continued below)"))
    elif streaming and body:
        if body.rstrip().endswith("`"):
            lines.append(marker.strip())  # after a closing fence line the marker needs a line of its own
        else:
            lines[-1] += marker
    elif view.status == "error":
        lines.append(f"\n⚠️ {view.error_message}")
    elif view.status == "done" and view.sources:
        lines.append("\n" + italic("Sources: " + ", ".join(sanitize(s.title) for s in view.sources)))
    return "\n".join(lines).strip("\n") or italic("(no answer)")


@dataclass
class ReplyOutcome:
    """What happened to one reply; front-ends record metrics from it and benchmarks read it."""

    handles: list[Any] = field(default_factory=list)  # every message posted, in order
    texts: list[str] = field(default_factory=list)  # the last text sent to each message
    posts: int = 0
    edits: int = 0
    rate_limited: int = 0  # 429s seen
    placeholder_at: float | None = None  # clock time the placeholder was posted
    first_token_received_at: float | None = None  # clock time the first token arrived from the core
    first_token_at: float | None = None  # clock time the first answer text was visible on the platform
    delivered: bool = False  # the final text landed
    status: Literal["done", "error", "interrupted", "pending"] = "pending"
    error_code: str | None = None
    agent: str | None = None
    answer: str = ""  # the whole answer text as rendered from


@dataclass(frozen=True, slots=True)
class _Seal:
    """A finished message: its body, and where the rest of the answer resumes."""

    body: str
    end: int  # offset in the answer where the next message's own text starts
    reopen: str  # a fence opening line the next message starts with, or ""
    covered: str  # the answer's text this message was cut from (to notice a replaced answer)


class StreamingReply:
    """One answer, streamed into one or more messages of a `Surface`. Use once: `await reply.run(events)`.

    `pacer` is this reply's own (never share one); `budget`, when given, is shared by every reply posting to
    the same place. `clock` and `sleep` are injectable so tests run in virtual time.
    """

    def __init__(
        self,
        surface: Surface,
        pacer: EditPacer | None = None,
        *,
        budget: EditBudget | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        final_attempts: int = 10,
    ) -> None:
        self.surface = surface
        self.pacer = pacer if pacer is not None else EditPacer(1.0)
        self.budget = budget
        self._clock = clock
        self._sleep = sleep
        self._final_attempts = final_attempts
        self.outcome = ReplyOutcome()
        self._session = "-"
        # The answer as known so far.
        self._body = ""
        self._agent: AgentTag | None = None
        self._status: Status = "thinking"
        self._sources: tuple[SourceRef, ...] = ()
        self._error_message = ""
        # What has been laid out and sent.
        self._seals: list[_Seal] = []
        self._shrink = 0  # characters taken off max_chars for new cuts after a MessageTooLong
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
                if self._status in FINAL_STATUSES:
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
        if isinstance(event, Start):
            self._session = event.session_key
            return
        if isinstance(event, Agent):
            self._agent = AgentTag(event.name, event.label)
            self.outcome.agent = event.name
            if self._status == "thinking":
                self._status = "routed"
        elif isinstance(event, Token):
            if not event.text:
                return
            if self.outcome.first_token_received_at is None:
                self.outcome.first_token_received_at = self._clock()
            self._body += event.text
            self._status = "streaming"
        elif isinstance(event, Sources):
            self._sources = tuple(event.items)
        elif isinstance(event, Complete):
            if event.text.strip():  # the core's whole answer wins over tokens that may have been lost
                self._body = event.text
            self._status = "done"
            self.outcome.status = "done"
            self.outcome.agent = self.outcome.agent or event.agent
        elif isinstance(event, Error):
            if event.partial_text.strip() and event.partial_text.startswith(self._body):
                self._body = event.partial_text
            self._fail(event.code, event.user_message)
            return
        else:
            return
        self._changed.set()

    def _fail(self, code: str, message: str) -> None:
        self._status = "error"
        self._error_message = message
        self.outcome.status = "interrupted" if code == "interrupted" else "error"
        self.outcome.error_code = code
        self._changed.set()

    # --- layout: the answer cut into messages that fit once rendered ----------------------------------------
    def _view(self, body: str, index: int, last: bool) -> ReplyView:
        return ReplyView(body=body, agent=self._agent, status=self._status, sources=self._sources,
                         error_message=self._error_message, is_continuation=index > 0, is_last_part=last)

    def _layout(self) -> list[ReplyView]:
        """One view per message. Finished messages keep their cut; only the growing tail is cut anew."""
        body = self._body
        if self._seals and not body.startswith(self._prefix_sealed()):
            self._seals = []  # the answer was replaced (Complete.text differs): lay it out afresh
        for index, seal in enumerate(self._seals):
            if len(self.surface.render(self._view(seal.body, index, False))) > self.surface.max_chars:
                del self._seals[index:]  # the surface renders this part longer now: cut again from here
                break
        limit = max(MIN_PART_CHARS, self.surface.max_chars - self._shrink)
        while True:
            start, reopen = (self._seals[-1].end, self._seals[-1].reopen) if self._seals else (0, "")
            tail = reopen + body[start:]
            index = len(self._seals)
            if len(self.surface.render(self._view(tail, index, True))) <= limit or not tail[len(reopen):].strip():
                break
            cut = self._cut_to_fit(tail, index, limit)
            end = start + cut.consumed - len(reopen) if cut else start
            if cut is None or end <= start:  # cannot cut smaller: send as is, the surface may refuse it
                log.warning("session %s: message %d cannot be cut to fit %d characters", self._session, index, limit)
                break
            self._seals.append(_Seal(cut.head, end, cut.reopen, body[start:end]))
        views = [self._view(seal.body, i, False) for i, seal in enumerate(self._seals)]
        return [*views, self._view(tail, len(self._seals), True)]

    def _prefix_sealed(self) -> str:
        return "".join(seal.covered for seal in self._seals)

    def _cut_to_fit(self, tail: str, index: int, limit: int) -> Cut | None:
        """The longest cut of `tail` whose rendered message fits `limit`, or None if none can."""
        overhead = len(self.surface.render(self._view("", index, False)))
        chars = min(len(tail) - 1, limit - overhead)
        for _ in range(20):
            chars = max(chars, MIN_PART_CHARS)
            try:
                cut = cut_markdown(tail, chars)
            except ValueError:
                return None
            over = len(self.surface.render(self._view(cut.head, index, False))) - limit
            if over <= 0 or chars == MIN_PART_CHARS:
                return cut
            chars -= over
        return None

    # --- the flusher: all platform I/O happens here -------------------------------------------------------
    async def _flush_loop(self) -> None:
        await self._post_placeholder()
        while not self._closing.is_set() and not self._gone:
            if not await self._wait_for(self._changed.wait()):
                return
            now = self._clock()
            urgent = (self._agent is not None and not self._shown_agent) or (self._body and not self._shown_text)
            delay = max(0.0 if urgent else self.pacer.delay(now), self._blocked_until - now,
                        self.budget.wait_time() if self.budget is not None else 0.0)
            if delay > 0 and not await self._wait_for(self._sleep(delay)):
                return
            self._changed.clear()
            try:
                await self._push()
            except RateLimited as limited:
                self._note_rate_limited(limited)
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
                self._note_rate_limited(limited)
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
        views = self._layout()
        for index in range(len(views), len(self.outcome.handles)):
            # Only when Complete.text rewrote an already split answer shorter: platforms here cannot delete a
            # message for us, so a message the new layout does not need says where its text went.
            note = self.surface.render(ReplyView(body=MOVED_NOTE, status="done", is_continuation=True))
            if self.outcome.texts[index] != note:
                await self._send(index, note)
        for index, view in enumerate(views):
            text = self.surface.render(view)
            if final and index == len(views) - 1 and index < len(self.outcome.handles) and self._finalize_sets_text:
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
            async with self._slot():
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
        async with self._slot():
            await self._send_now(index, text)

    def _slot(self) -> AbstractAsyncContextManager[None]:
        """The shared budget's slot for one platform call, or nothing when this reply has no budget."""
        return self.budget.slot() if self.budget is not None else contextlib.nullcontext()

    async def _send_now(self, index: int, text: str) -> None:
        self.pacer.record(self._clock())
        if index < len(self.outcome.handles):
            await self.surface.edit(self.outcome.handles[index], text)
            self.outcome.texts[index] = text
            self.outcome.edits += 1
        else:
            self.outcome.handles.append(await self.surface.post(text))
            self.outcome.texts.append(text)
            self.outcome.posts += 1

    def _note_rate_limited(self, limited: RateLimited) -> None:
        self.outcome.rate_limited += 1
        self._blocked_until = max(self._blocked_until, self._clock() + limited.retry_after)
        if self.budget is not None:
            self.budget.note_rate_limited(limited.retry_after)
        log.info("session %s: platform 429, retrying in %.2fs", self._session, limited.retry_after)

    def _note_too_long(self) -> None:
        """Cut smaller from the refused message on; the answer continues in a new message."""
        del self._seals[self._sending_index:]
        self._shrink = min(self._shrink + max(1, int(self.surface.max_chars * TOO_LONG_STEP)),
                           self.surface.max_chars - MIN_PART_CHARS)
        log.warning("session %s: message %d refused as too long; cutting %d characters shorter",
                    self._session, self._sending_index, self._shrink)

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
                self.outcome.status = "done" if self._status == "done" else "error"

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
                break
            except RateLimited as limited:
                self._note_rate_limited(limited)
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
        views = self._layout()
        view, handle = views[-1], self.outcome.handles[min(len(views), len(self.outcome.handles)) - 1]
        for _ in range(self._final_attempts):
            wait = self._blocked_until - self._clock()
            if wait > 0:
                await self._sleep(wait)
            try:
                async with self._slot():
                    await finalize(handle, view)
                return
            except RateLimited as limited:
                self._note_rate_limited(limited)
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

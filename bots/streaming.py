"""The platform-neutral streaming renderer: core events in, one message edited in place out.

`StreamingReply` consumes `Orchestrator.respond()` events and drives a `Surface` (Slack, Discord, tests):
1. posts a placeholder at once ("thinking"), shows the agent once routed;
2. shows the first tokens as soon as they arrive, then edits at most once per `min_interval_s` per message and
   within the shared `EditBudget`, merging everything that arrived meanwhile into the next edit; the core's
   stream is never slowed down by the platform (a background flusher does the edits);
3. past the surface's length limit it continues in a new message, never splitting inside a code fence;
4. on a 429 (`RateLimited`) it waits `retry_after` and sends the merged text; the final text always lands;
5. ends with the agent tag and sources, or with a readable error, or — when cancelled at shutdown — with an
   "interrupted" note. It never leaves a message "thinking".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from bots.pacing import EditBudget, EditPacer, NoBudget
from bots.splitting import split_markdown
from core.events import Agent, Complete, Error, Event, SourceRef, Sources, Token
from core.retry import USER_MESSAGES

log = logging.getLogger(__name__)

Status = Literal["thinking", "routed", "streaming", "done", "error", "interrupted"]
FINAL_ATTEMPTS = 10


class RateLimited(Exception):
    """The platform answered 429; wait `retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited for {retry_after}s")
        self.retry_after = retry_after


class MessageTooLong(Exception):
    """The platform refused the text as too long."""


@dataclass(frozen=True, slots=True)
class ReplyView:
    """One message's state; a surface turns it into platform text."""

    body: str = ""
    agent: str | None = None
    agent_label: str | None = None
    status: Status = "thinking"
    sources: tuple[SourceRef, ...] = ()
    error_message: str = ""
    part: int = 0
    parts: int = 1

    @property
    def is_last(self) -> bool:
        return self.part == self.parts - 1

    @property
    def final(self) -> bool:
        return self.status in ("done", "error", "interrupted")


class Surface(Protocol):
    max_chars: int

    async def post(self, text: str, view: ReplyView) -> Any:
        """Post a new message; returns its handle."""

    async def edit(self, handle: Any, text: str, view: ReplyView) -> None:
        """Replace a message's text."""

    def render(self, view: ReplyView) -> str:
        """Platform text for a view (tag, marker, sources footer, error line)."""


@dataclass
class ReplyOutcome:
    handles: list[Any] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    posts: int = 0
    edits: int = 0
    rate_limited: int = 0
    first_token_at: float | None = None  # clock time the first token became visible
    placeholder_at: float | None = None
    delivered: bool = False
    status: Status = "thinking"
    agent: str | None = None
    answer: str = ""


def render_plain(view: ReplyView, *, marker: str = " ▌", sanitize: Callable[[str], str] = lambda s: s) -> str:
    """A reasonable default rendering; platforms override for their own markup."""
    body = sanitize(view.body)
    if view.status == "thinking":
        return "_Thinking…_"
    if view.status == "routed" and not body:
        return f"_{view.agent_label} is looking into it…_"
    lines = [body] if body else []
    if view.agent_label and view.part == 0:
        lines.insert(0, f"*{view.agent_label}*")
    if view.status == "streaming" and view.is_last:
        lines[-1:] = [(lines[-1] if lines else "") + marker]
    if view.final and view.is_last:
        if view.status == "error":
            lines.append(f"⚠️ {view.error_message}")
        elif view.status == "interrupted":
            lines.append(f"⚠️ {USER_MESSAGES['interrupted']}")
        footer = f"— {view.agent_label}" if view.agent_label else ""
        if view.sources:
            footer += " · Sources: " + ", ".join(s.title for s in view.sources)
        footer = footer.lstrip(" ·")
        if footer:
            lines.append(footer)
    elif not view.is_last:
        lines.append("_(continued below)_")
    return "\n\n".join(lines)


class StreamingReply:
    def __init__(
        self,
        surface: Surface,
        *,
        min_interval_s: float = 1.0,
        budget: EditBudget | NoBudget | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        reserve_chars: int = 400,
    ) -> None:
        self.surface = surface
        self._pacer = EditPacer(min_interval_s, clock)
        self._budget = budget or NoBudget()
        self._clock = clock
        self._sleep = sleep
        self._reserve = reserve_chars
        self._view = ReplyView()
        self._sent: list[str] = []
        self._dirty = asyncio.Event()
        self._first_text_pending = False
        self.outcome = ReplyOutcome()

    # --- public --------------------------------------------------------------------------------------------
    async def run(self, events: AsyncIterator[Event]) -> ReplyOutcome:
        await self._post_placeholder()
        flusher = asyncio.create_task(self._flush_loop())
        try:
            async for event in events:
                self._apply(event)
                if self._view.final:
                    break
            else:
                if not self._view.final:
                    self._view = replace(self._view, status="error", error_message=USER_MESSAGES["internal"])
        except asyncio.CancelledError:
            self._view = replace(self._view, status="interrupted")
            await self._stop(flusher)
            await asyncio.shield(self._land_final())
            raise
        except Exception:  # noqa: BLE001 - the core failed mid-stream; the user still gets a readable end
            log.exception("reply stream failed")
            self._view = replace(self._view, status="error", error_message=USER_MESSAGES["internal"])
        await self._stop(flusher)
        await self._land_final()
        return self.outcome

    # --- events --------------------------------------------------------------------------------------------
    def _apply(self, event: Event) -> None:
        view = self._view
        if isinstance(event, Agent):
            self._view = replace(view, agent=event.name, agent_label=event.label,
                                 status="routed" if not view.body else view.status)
            self.outcome.agent = event.name
        elif isinstance(event, Token):
            if not view.body:
                self._first_text_pending = True
            self._view = replace(view, body=view.body + event.text, status="streaming")
        elif isinstance(event, Sources):
            self._view = replace(view, sources=event.items)
        elif isinstance(event, Complete):
            body = event.text if len(event.text) >= len(view.body) else view.body
            self._view = replace(view, body=body, status="done")
        elif isinstance(event, Error):
            body = view.body or event.partial_text
            self._view = replace(view, body=body, status="error", error_message=event.user_message)
        else:
            return
        self._dirty.set()

    # --- rendering into parts --------------------------------------------------------------------------------
    def _rendered_parts(self) -> list[tuple[str, ReplyView]]:
        limit = max(200, self.surface.max_chars - self._reserve)
        bodies = split_markdown(self._view.body, limit) if self._view.body else [""]
        views = [replace(self._view, body=b, part=i, parts=len(bodies)) for i, b in enumerate(bodies)]
        return [(self.surface.render(v)[: self.surface.max_chars], v) for v in views]

    async def _send(self, index: int, text: str, view: ReplyView) -> None:
        await self._budget.acquire()
        if index < len(self.outcome.handles):
            await self.surface.edit(self.outcome.handles[index], text, view)
            self.outcome.edits += 1
            self._sent[index] = text
        else:
            handle = await self.surface.post(text, view)
            self.outcome.handles.append(handle)
            self._sent.append(text)
            self.outcome.posts += 1
        self._pacer.record()

    async def _push(self) -> None:
        """Send every part whose text changed. Raises RateLimited/MessageTooLong from the surface."""
        first_text = self._first_text_pending and bool(self._view.body)
        for index, (text, view) in enumerate(self._rendered_parts()):
            if index < len(self._sent) and self._sent[index] == text:
                continue
            await self._send(index, text, view)
        if first_text and self.outcome.first_token_at is None:
            self.outcome.first_token_at = self._clock()
            self._first_text_pending = False

    async def _post_placeholder(self) -> None:
        text, view = self._rendered_parts()[0]
        for _ in range(FINAL_ATTEMPTS):
            try:
                await self._send(0, text, view)
                break
            except RateLimited as limited:
                await self._on_rate_limited(limited)
        self.outcome.placeholder_at = self._clock()

    async def _on_rate_limited(self, limited: RateLimited) -> None:
        self.outcome.rate_limited += 1
        self._budget.note_rate_limited(limited.retry_after)
        await self._sleep(limited.retry_after)

    async def _flush_loop(self) -> None:
        while True:
            await self._dirty.wait()
            # Status changes and the first words go out at once (within the budget); text edits are paced.
            wait = self._pacer.wait_time() if self.outcome.first_token_at is not None else 0.0
            if wait > 0:
                await self._sleep(wait)
            self._dirty.clear()
            try:
                await self._push()
            except RateLimited as limited:
                await self._on_rate_limited(limited)
                self._dirty.set()  # everything pending goes out merged in the next edit
            except MessageTooLong:
                self._reserve += 500  # split smaller from now on
                self._dirty.set()
            except Exception:  # noqa: BLE001 - an intermediate edit may fail; the final one is retried
                log.exception("intermediate edit failed")

    async def _stop(self, flusher: asyncio.Task[None]) -> None:
        flusher.cancel()
        try:
            await flusher
        except asyncio.CancelledError:
            pass

    async def _land_final(self) -> None:
        for _ in range(FINAL_ATTEMPTS):
            try:
                await self._push()
                finalize = getattr(self.surface, "finalize", None)
                if finalize is not None:
                    await finalize(self.outcome.handles, self._view)
                self.outcome.delivered = True
                break
            except RateLimited as limited:
                await self._on_rate_limited(limited)
            except MessageTooLong:
                self._reserve += 500
            except Exception:  # noqa: BLE001
                log.exception("final edit failed; retrying")
                await self._sleep(1.0)
        else:
            log.error("final edit abandoned after %d attempts", FINAL_ATTEMPTS)
        self.outcome.texts = list(self._sent)
        self.outcome.status = self._view.status
        self.outcome.answer = self._view.body

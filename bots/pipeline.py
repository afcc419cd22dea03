"""One answer pipeline for every chat front-end.

Every front-end is the same three steps:
1. a pure `payload → Inbound | None` of its own (who is asking, in which conversation, what);
2. `AnswerPipeline.answer(inbound, surface)`, shared: help and reset, `respond()`, rendering, recording the
   outcome (the same metric names and meanings everywhere: first token = first answer text visible to the
   user), and tracking the task so shutdown can land or mark it;
3. a `bots.surface.Surface` of its own that knows the platform's calls and limits.

With a support desk (`bots.support.desk`), a conversation a person is handling gets no answer (the message is
kept as a note), a request for a person in words becomes the handoff, and every turn's outcome is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from bots import metrics
from bots.admission import Admission
from bots.inflight import Inflight, ReplyTracker
from bots.pacing import Clock, EditPacer, Sleep
from bots.streaming import StreamingReply
from bots.support.desk import HandoffRequest
from bots.surface import RateLimited, ReplyOutcome, Surface, SurfaceGone, spending
from core.events import Event
from core.workspaces import ANSWER_MODEL
from core.tracing import Turn, begin_turn
from core.turn_records import TurnFacts, turn_store_of
from core.turn_input import TurnInput

log = logging.getLogger(__name__)

Intent = Literal["help", "reset", "question"]
RESET_WORDS = frozenset({"reset", "start over", "new conversation", "forget"})
SAY_ATTEMPTS = 3
FAILED = "⚠️ Something went wrong while answering. Please try again."


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message for the bot, platform-neutral. `place` is where to reply, in the adapter's own terms.

    `addressed` is False for a message that is only for the bot if its conversation is one the bot is having
    (a reply in a Slack thread without a mention): the adapter checks that before answering.
    """

    platform: str
    session_key: str
    text: str
    user: str | None
    place: Any = None
    addressed: bool = True
    channel: str | None = None  # the platform channel (a thread counts as its parent): per-channel settings
    extras: TurnInput | None = None  # the thread the bot was called into, attached files


def intent_of(text: str) -> Intent:
    """What a message asks for: usage help (empty, or just 'help'), a fresh start, or an answer."""
    words = text.strip().lower().strip(" ?!.")
    if words in ("", "help"):
        return "help"
    if words in RESET_WORDS:
        return "reset"
    return "question"


class Reply(Protocol):
    """A renderer of one answer: `StreamingReply`, or Slack's native stream."""

    outcome: ReplyOutcome

    async def run(self, events: AsyncIterator[Event]) -> ReplyOutcome: ...


@dataclass(frozen=True, slots=True)
class PlatformTexts:
    """The sentences a platform shows for help and reset, in its own formatting."""

    usage: str
    reset_done: str = "🔄 Starting over: I've forgotten this conversation. Ask away."


class AnswerPipeline:
    """Answers inbound messages of one platform on the shared orchestrator."""

    def __init__(self, orchestrator: Any, platform: str, texts: PlatformTexts, *, edit_interval_s: float = 1.0,
                 clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep, keep: int = 200,
                 replies: Any | None = None, support: Any | None = None) -> None:
        self.orchestrator = orchestrator
        self.platform = platform
        self.texts = texts
        self.edit_interval_s = edit_interval_s
        self.inflight = Inflight(platform)
        self.recent: deque[tuple[str, ReplyOutcome]] = deque(maxlen=keep)  # (session key, outcome), newest last
        self.replies = replies  # the replicas' registry of replies in flight (coordination), or None
        self.support = support  # the support desk (handoffs, quiet threads, outcomes), or None
        # the workspace's settings and the daily quotas, checked before the core is called (`bots.admission`)
        self.admission = Admission(orchestrator, platform)
        self._clock = clock
        self._sleep = sleep

    def streaming(self, surface: Surface) -> Reply:
        """The default renderer: messages edited in place, paced by this platform's interval."""
        return StreamingReply(surface, EditPacer(self.edit_interval_s), clock=self._clock, sleep=self._sleep)

    async def answer(self, inbound: Inbound, surface: Surface, *, started: float | None = None,
                     reply: Callable[[Surface], Reply] | None = None) -> ReplyOutcome | None:
        """Answer one message on `surface`; returns the outcome of a streamed answer (None for help/reset)."""
        started = self._clock() if started is None else started
        if self.support is not None and await self.support.quiet(inbound.session_key):
            # A person handles this conversation: the bot says nothing, and keeps the message for the record.
            await self.support.note(self.platform, inbound.session_key, inbound.user, inbound.text)
            return None
        intent = intent_of(inbound.text)
        if intent == "help":
            await self.say(surface, self.texts.usage)
            return None
        if intent == "reset":
            await self.orchestrator.reset(inbound.session_key)
            await self.say(surface, self.texts.reset_done)
            return None
        refused = await self.admission.refusal(inbound)  # workspace off, or a daily quota reached
        if refused is not None:
            await self.say(surface, refused)  # one sentence; the model is not called
            return None
        renderer = (reply or self.streaming)(surface)
        tracker = ReplyTracker(self.replies, f"{self.platform}:{uuid.uuid4().hex}",
                               {"platform": self.platform, "session_key": inbound.session_key},
                               getattr(surface, "locate", None))
        if isinstance(renderer, StreamingReply):
            renderer.on_post = tracker.posted
        facts = TurnFacts()  # what the core said, for the turn record (the dashboard's data)
        turn = begin_turn(self.platform, inbound.session_key)  # the trace's root span and the log context
        try:
            await renderer.run(facts.watch(self._events(inbound, surface)))
        except asyncio.CancelledError:  # shutdown: the renderer landed an "interrupted" note; count it, then stop
            self.record(inbound.session_key, renderer.outcome, started, facts=facts, question=inbound.text,
                        turn=turn)
            raise
        except Exception:  # noqa: BLE001 - the platform itself failed (the renderer handled the core's failures)
            log.exception("%s: answering in %s failed", self.platform, inbound.session_key)
            turn.end(status="error", error_code="platform")
            await self.say(surface, FAILED)
            return None
        finally:
            await tracker.close()
        self.record(inbound.session_key, renderer.outcome, started, facts=facts, question=inbound.text, turn=turn)
        return renderer.outcome

    async def _events(self, inbound: Inbound, surface: Surface) -> AsyncIterator[Event]:
        """The core's events; a core that raises (even when called) fails inside the stream, where the renderer
        turns it into a readable error. The core's stream is always closed, releasing its session lock."""
        user = f"{inbound.platform}:{inbound.user}" if inbound.user else None
        limits = {"channel": (inbound.platform, inbound.channel)} if inbound.channel and getattr(
            self.orchestrator, "channels", None) else {}
        if inbound.extras is not None:
            limits["extras"] = inbound.extras
        workspace = await self.admission.workspace(inbound)
        if workspace is not None and workspace.agents is not None:  # the workspace's agents, as a channel's
            limits["agents"] = workspace.agents
        if workspace is not None and "model" in workspace.configured:  # the model it chose (`core.workspaces`)
            ANSWER_MODEL.set(workspace.model)
        stream = self.orchestrator.respond(inbound.session_key, inbound.text, user=user, **limits)
        if self.support is not None:
            where = getattr(surface, "where", None)
            request = HandoffRequest(inbound.platform, inbound.session_key, inbound.user, inbound.channel,
                                     where() if where is not None else {}, "words")
            stream = self.support.watch(stream, request, inbound.text)
        async with contextlib.aclosing(stream):
            async for event in stream:
                yield event

    def record(self, key: str, outcome: ReplyOutcome, started: float, *, facts: TurnFacts | None = None,
               question: str = "", turn: Turn | None = None) -> None:
        self.recent.append((key, outcome))
        first = outcome.first_token_at - started if outcome.first_token_at is not None else None
        metrics.record_reply(self.platform, status=outcome.status, agent=outcome.agent,
                             error_code=outcome.error_code, first_token_s=first)
        if facts is not None:  # the turn record: first token as the user saw it, written in the background
            total = (self._clock() - started) * 1000
            first_ms = first * 1000 if first is not None else None
            if turn is not None:
                turn.end(agent=outcome.agent or facts.agent, status=outcome.status, error_code=outcome.error_code,
                         confidence=facts.complete.confidence if facts.complete else None,
                         declined=facts.complete.declined if facts.complete else None,
                         handed_off=facts.handed_off, first_token_ms=first_ms, total_ms=total)
            store = turn_store_of(self.orchestrator)
            if store is not None:
                store.record_soon(facts.record(self.platform, key, question, first_token_ms=first_ms,
                                               total_ms=total, status=outcome.status,
                                               error_code=outcome.error_code))
        if not outcome.delivered:
            log.error("[%s] the final text of a %s reply was not delivered", key, self.platform)

    async def say(self, surface: Surface, text: str) -> Any:
        """Post one plain message (help, reset, a notice) within the surface's post budget."""
        for _ in range(SAY_ATTEMPTS):
            try:
                async with spending(surface.budget_for("post")):
                    return await surface.post(text)
            except RateLimited as limited:
                await self._sleep(limited.retry_after)
            except SurfaceGone:
                log.info("%s: cannot post here any more", self.platform)
                return None
            except Exception:  # noqa: BLE001 - a notice that cannot be sent is logged, not raised
                log.exception("%s: sending a message failed", self.platform)
                return None
        return None

    @property
    def outcomes(self) -> list[ReplyOutcome]:
        return [outcome for _, outcome in self.recent]

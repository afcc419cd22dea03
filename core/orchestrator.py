"""`Orchestrator.respond()`: the one call every front-end makes.

It validates the message, serialises turns per session, runs the graph with the session key as the
checkpointer's thread id, and translates what the graph streams into the typed events of `core.events`. Every
stream ends with exactly one `Complete` or `Error`; an `Error` carries a sentence written for a user, and the
detail goes to the log with the session key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import HumanMessage

from core.checkpoints import keep_latest, open_checkpointer  # open_checkpointer: re-exported for old callers
from core.channels import ChannelSettings, load_channel_settings
from core.workspaces import narrow_agents
from core.events import Agent, Complete, Error, Event, Handoff, SourceRef, Sources, Start, Token
from core.graph import Brain, EmbeddingAhead, TurnContext, build_graph, decide_route, embed_ahead
from core.health import HealthReport, probe
from core.interrupted import TURN_LIMIT_MESSAGE, Opening, TurnLedger
from core.redaction import guard_log_content, redactor_for
from core.knowledge_port import KnowledgeBase
from core.retry import USER_MESSAGES, RetryPolicy
from core.router import RouteDecision, SemanticRouter
from coordination import CoordinationUnavailable, LocalSessionLocks, SessionLocks
from core.sessions import SessionInfo
from core.transcript import Turn, turns_of
from core.thread_context import is_context, masked
from core.turn_input import TurnInput, input_messages
from core.attachments import notes_for, redacted, vision_enabled, with_notes
from core.settings import Settings
from knowledge.agents import AgentRegistry, load_agents

log = logging.getLogger(__name__)


def clean_message(text: str) -> str:
    """Normalise odd Unicode (NFC, no control characters but newlines and tabs) and strip the ends."""
    text = unicodedata.normalize("NFC", text or "")
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    return text.strip()


class Orchestrator:
    """The brain's front door. Build it with `build_orchestrator()`; close it with `aclose()`."""

    def __init__(
        self,
        settings: Settings,
        brain: Brain,
        checkpointer: Any,
        *,
        on_close: Callable[[], Awaitable[None]] | None = None,
        coordination: Any | None = None,
        channels: ChannelSettings | None = None,
    ) -> None:
        self.settings = settings
        self.channels = channels or ChannelSettings()  # per-channel agents and handoff places (`core.channels`)
        self.coordination = coordination  # shared with the other replicas (Redis), reported by health()
        self.brain = brain
        self.checkpointer = checkpointer
        self.graph = build_graph(brain, checkpointer)
        self._locks: SessionLocks = coordination.locks if coordination is not None else LocalSessionLocks()
        self._on_close = on_close
        self._shared: dict[str, Any] = {}  # `shared()`: objects the front-ends share, closed with this
        self.ledger = TurnLedger(checkpointer)  # turn counts, who asked, the question being answered
        self.redact = redactor_for(settings)  # REDACT: applied once, at the entry, before anything keeps text
        guard_log_content(settings)  # LOG_CONTENT=false: no library logs message text either

    @property
    def agents(self) -> AgentRegistry:
        """The agents this orchestrator routes to (from the agents file): front-ends read their help texts here."""
        return self.brain.agents

    @property
    def mode(self) -> str:
        return "offline" if self.brain.llm is None else "openai"

    def validate(self, text: str) -> str | None:
        """A user-facing reason the message cannot be answered, or None when it can."""
        if not text:
            return f"Your message is empty. Ask me a question about {self.agents.topics_sentence()}."
        if len(text) > self.settings.max_message_chars:
            return (
                f"Your message is {len(text):,} characters long; the limit is "
                f"{self.settings.max_message_chars:,}. Please shorten it and ask again."
            )
        return None

    async def respond(self, session_key: str, text: str, user: str | None = None, *,
                      channel: tuple[str, str] | None = None,
                      extras: TurnInput | None = None,
                      agents: tuple[str, ...] | None = None) -> AsyncIterator[Event]:
        """Answer one message in a session, as a stream of events (see `core.events`). `channel` is the
        (platform, channel id) it was asked in: a channel limited to some agents routes among those only.
        `extras` carries the thread the bot was called into and attached files (`core.turn_input`). `agents`
        is the workspace's limit (`core.workspaces`), narrowing the channel's."""
        started = time.perf_counter()
        yield Start(session_key)
        question = self.redact(clean_message(text))
        extras = masked(extras, self.redact)  # the thread the bot was called into is masked like the question
        problem = self.validate(question)
        if problem:
            yield Error("bad_input", problem)
            return

        ended = False
        ahead = embed_ahead(self.brain, question)  # routing's embedding runs while the turn opens
        try:
            async with self._locks.hold(session_key), contextlib.aclosing(with_notes(
                    self._ledgered(session_key, question, user, started,
                                   narrow_agents(self.channels.agents_for(channel), agents), extras, ahead),
                    self._notes(extras))) as turn:
                async for event in turn:
                    ended = ended or isinstance(event, (Complete, Error))
                    yield event
        except CoordinationUnavailable:  # the shared lock store (Redis) is unreachable: say so, keep nothing
            log.warning("[%s] the session lock could not be taken: coordination is unavailable", session_key)
            if not ended:
                yield Error("unavailable", USER_MESSAGES["unavailable"])

    def _notes(self, extras: TurnInput | None) -> tuple[str, ...]:
        """What the reply says first about the files attached (`core.attachments`)."""
        has_model = self.brain.llm is not None
        return notes_for(extras, has_model=has_model, vision=vision_enabled(self.settings, has_model))

    async def _ledgered(self, session_key: str, question: str, user: str | None, started: float,
                        allowed: tuple[str, ...] | None, extras: TurnInput | None,
                        ahead: EmbeddingAhead | None = None) -> AsyncIterator[Event]:
        """A turn recorded in the ledger (`core.interrupted`): refused at MAX_TURNS without calling the model; its
        question recorded until the turn ends, so a crash mid-reply leaves it marked unanswered for the next turn."""
        try:
            opening = await self.ledger.begin(session_key, question, user, self.settings.max_turns)
        except Exception:  # noqa: BLE001 - the ledger is a safety net: the turn itself reports a broken store
            log.warning("[%s] the turn could not be recorded", session_key, exc_info=True)
            opening = Opening(0)
        if opening.refused:
            yield Error("turn_limit", TURN_LIMIT_MESSAGE.format(limit=self.settings.max_turns))
            return
        turn = self._turn(session_key, question, started, allowed, extras, carried=opening.carried(), ahead=ahead)
        async with contextlib.aclosing(turn):  # a reader that stops early stops the turn's graph now, not at GC
            async for event in turn:
                if isinstance(event, (Complete, Error)):  # before yielding: a consumer may stop at the terminal event
                    with contextlib.suppress(Exception):
                        await self.ledger.finish(session_key, opening)
                yield event

    async def _turn(self, session_key: str, question: str, started: float,
                    allowed: tuple[str, ...] | None = None,
                    extras: TurnInput | None = None, *, carried: list[Any] | None = None,
                    ahead: EmbeddingAhead | None = None) -> AsyncIterator[Event]:
        """One turn of the graph, inside the session's lock."""
        ctx = TurnContext(session_key=session_key, allowed_agents=allowed, ahead=ahead,
                          attachments=redacted(extras.attachments, self.redact) if extras is not None else ())
        config = {"configurable": {"thread_id": session_key}}
        now = time.time()
        graph_input = {"messages": [*(carried or []), *input_messages(question, extras)], "created_at": now, "updated_at": now}
        pieces: list[str] = []
        first_token_ms: float | None = None
        agent_name = ""
        budget = self.brain.retry_policy.start_answer()  # one ANSWER_TIMEOUT_S for routing and answering
        events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        ctx.emit = events.put_nowait  # the nodes' events, handed over on the loop (`TurnContext.emit`)
        run = asyncio.ensure_future(self._run_graph(graph_input, config, ctx))
        run.add_done_callback(lambda _: events.put_nowait(None))  # after the last event: the graph has ended
        try:
            while (chunk := await events.get()) is not None:
                kind = chunk.get("kind")
                if kind == "agent":
                    agent_name = chunk["name"]
                    yield Agent(chunk["name"], chunk["label"], chunk.get("reason", ""))
                elif kind == "handoff":
                    yield Handoff()
                elif kind == "token" and chunk["text"]:
                    if first_token_ms is None:
                        first_token_ms = (time.perf_counter() - started) * 1000
                    pieces.append(chunk["text"])
                    yield Token(chunk["text"])
            await run  # its failure, if it failed
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a user never sees a stack trace
            log.exception("[%s] answering failed", session_key)
            yield Error("internal", USER_MESSAGES["internal"], "".join(pieces))
            return
        finally:
            if not run.done():  # the reader stopped (cancelled, or closed early): so does the graph
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run
            self.brain.retry_policy.end_answer(budget)
        try:  # the turn is saved; the conversation's older checkpoints are now only history
            await keep_latest(self.checkpointer, session_key)
        except Exception:  # noqa: BLE001 - pruning is housekeeping: the next turn tries again
            log.warning("[%s] older checkpoints could not be pruned", session_key, exc_info=True)

        if ctx.failure is not None:
            code = ctx.failure.kind.code
            yield Error(code, USER_MESSAGES.get(code, USER_MESSAGES["internal"]), "".join(pieces))
            return
        if ctx.sources:
            yield Sources(
                tuple(
                    SourceRef(title=p.title, source=p.source, heading=p.heading, score=round(p.score, 3))
                    for p in _unique_by_source(ctx.sources)
                )
            )
        yield Complete(
            agent=agent_name,
            duration_ms=(time.perf_counter() - started) * 1000,
            first_token_ms=first_token_ms,
            route_ms=ctx.route_ms,
            retrieval_ms=ctx.retrieval_ms,
            tokens=ctx.output_tokens or len(pieces),
            text="".join(pieces),
            confidence=None if ctx.confidence is None else round(ctx.confidence, 4),
            declined=ctx.declined,
        )

    async def _run_graph(self, graph_input: dict[str, Any], config: dict[str, Any], ctx: TurnContext) -> None:
        """Run the turn's graph to its end; its events reach `_turn` through `ctx.emit`, not the stream.

        durability="exit": the turn is checkpointed once, when the graph finishes (before `Complete` is yielded),
        instead of after every node: a third of the writes, and nothing acknowledged is lost."""
        async for _ in self.graph.astream(graph_input, config, context=ctx, stream_mode="custom", durability="exit"):
            pass  # nothing comes this way: the nodes write to `ctx.emit`

    async def route(self, question: str, previous_agent: str | None = None) -> RouteDecision:
        """Routing alone, as a turn would do it (used by `switchboard eval`)."""
        return await decide_route(self.brain, clean_message(question), previous_agent, "eval")

    async def assess(self, question: str) -> tuple[RouteDecision, float | None, bool]:
        """Routing and the retrieval half of the confidence check, as a first turn would do them, without
        answering: (decision, confidence, declined). `switchboard eval` predicts "none" when it declines."""
        from core.grounding import assess

        question = clean_message(question)
        decision = await self.route(question)
        if decision.handoff:
            return decision, None, False
        passages = decision.probes.get(decision.agent)
        if passages is None:
            passages = tuple(await asyncio.to_thread(self.brain.knowledge.retrieve, decision.agent, question,
                                                     self.settings.retrieval_k))
        grounding = assess(list(passages), self.settings.confidence_threshold)
        return decision, grounding.confidence, not grounding.grounded

    async def transcript(self, session_key: str) -> list[Turn]:
        """The session's turns as remembered: each question with the bot's answer, agent, confidence and sources
        (a handoff's ticket, `switchboard draft-article`)."""
        state = await self.graph.aget_state({"configurable": {"thread_id": session_key}})
        return turns_of((state.values or {}).get("messages") or [])

    async def session_info(self, session_key: str) -> SessionInfo | None:
        state = await self.graph.aget_state({"configurable": {"thread_id": session_key}})
        values = state.values or {}
        messages = values.get("messages") or []
        if not messages:
            return None
        return SessionInfo(
            session_key=session_key,
            turns=sum(1 for m in messages if isinstance(m, HumanMessage) and not is_context(m)),
            agents=tuple(values.get("agents_used") or ()),
            current_agent=values.get("agent"),
            created_at=values.get("created_at"),
            updated_at=values.get("updated_at"),
        )

    async def health(self) -> HealthReport:
        """Whether the knowledge store (chunks per agent) and the checkpoints can be read, for `/health` and
        the start-up check of `switchboard run`."""
        return await probe(self.mode, self.brain.knowledge, self.checkpointer, self.coordination,
                           data_dir=self.settings.data_dir)

    async def reset(self, session_key: str) -> None:
        """Forget a session's conversation (its checkpoints)."""
        async with self._locks.hold(session_key):
            await self.checkpointer.adelete_thread(session_key)
            await self.ledger.drop([session_key])  # a new conversation: its turns count from zero

    def shared(self, name: str, build: Callable[[], Any]) -> Any:
        """The one object called `name` for this orchestrator, built on first use and closed (its `aclose()`)
        when the orchestrator closes: what every front-end of a process shares without the composition root
        wiring it (the support desk, `bots.support.desk.desk_for`)."""
        if name not in self._shared:
            self._shared[name] = build()
        return self._shared[name]

    async def aclose(self) -> None:
        shared, self._shared = list(self._shared.values()), {}
        for thing in reversed(shared):
            try:
                await thing.aclose()
            except Exception:  # noqa: BLE001 - closing the rest matters more
                log.exception("closing %s failed", type(thing).__name__)
        if self._on_close is not None:
            await self._on_close()
            self._on_close = None


def _unique_by_source(passages: list[Any]) -> list[Any]:
    seen: set[str] = set()
    unique = []
    for passage in passages:
        if passage.source not in seen:
            seen.add(passage.source)
            unique.append(passage)
    return unique


async def build_orchestrator(
    settings: Settings,
    *,
    knowledge: KnowledgeBase | None = None,
    embedder: Any | None = None,
    llm: BaseChatModel | None | str = "auto",
    retry_policy: RetryPolicy | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    agents: AgentRegistry | None = None,
    coordination: Any | None = None,
) -> Orchestrator:
    """Wire the real parts from settings; tests may pass any of them in.

    The agents come from `settings.agents_file` (None: the shipped knowledge/agents.yml) unless given; a bad
    file raises `knowledge.agents.AgentsFileError`, whose message is the fix."""
    from core.llm import build_chat_model, close_chat_model

    agents = agents if agents is not None else load_agents(settings.agents_file)
    channels = load_channel_settings(settings, agents)  # before anything opens: one sentence per mistake
    if embedder is None:
        from knowledge.embeddings import make_embedder

        embedder = make_embedder(settings)
    if knowledge is None:
        from knowledge.base import open_knowledge_base

        knowledge = open_knowledge_base(settings, embedder, agents)
    chat_model = build_chat_model(settings) if llm == "auto" else llm
    router = build_router(settings, embedder, knowledge, agents)
    checkpointer, close_checkpointer = await open_checkpointer(settings)

    async def close() -> None:
        try:
            if llm == "auto" and chat_model is not None:  # the model built here is closed here
                await close_chat_model(chat_model)
        finally:
            await close_checkpointer()

    brain = Brain(
        settings=settings,
        agents=agents,
        router=router,
        knowledge=knowledge,
        llm=chat_model,  # type: ignore[arg-type]
        retry_policy=retry_policy or RetryPolicy(max_retries=settings.llm_max_retries,
                                                budget_s=settings.answer_timeout_s),
        sleep=sleep,
    )
    return Orchestrator(settings, brain, checkpointer, on_close=close, coordination=coordination, channels=channels)


def build_router(
    settings: Settings, embedder: Any, knowledge: KnowledgeBase | None, agents: AgentRegistry
) -> SemanticRouter:
    return SemanticRouter(
        agents,
        embed_texts=embedder.embed_documents,
        embed_query=embedder.embed_query,
        probe=knowledge.retrieve if knowledge is not None else None,
        min_margin=settings.router_confidence,
        probe_k=settings.retrieval_k,
    )

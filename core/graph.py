"""The LangGraph graph: a router node, then one node per agent of the registry (the agents file).

State is small and checkpointed per thread (`thread_id` = session key): the messages, the thread's current
agent, the agents used and two timestamps. Everything that matters only for the current turn (the routing
decision, timings, sources, a failure) lives in a `TurnContext` passed as the run's context, never in the
checkpoint. Tokens leave the graph through LangGraph's custom stream writer, so only agent nodes can ever put
text in front of a user; the router's structured decision is never streamed.

Grounded or honest (`core.grounding`): an agent node declines, streaming what it searched and the way to a
person instead of an answer, when its passages are too far from the question (or, with a model, when the model
says the documents do not answer). A message asking for a person ends at the router: it writes a `handoff`
chunk and no agent runs.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypedDict

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage, SystemMessage
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.runtime import Runtime
from langgraph.types import Command
from pydantic import BaseModel, Field, create_model

from core.tracing import annotate, end_step, span, start_step
from core.context_window import plan as plan_window, recent_room, summary_budget
from core.grounding import MarkerGate, assess, decline_text
from core.knowledge_port import KnowledgeBase
from core.offline import HEADER as OFFLINE_HEADER, compose_offline_answer, stream_pieces
from core.answer_stream import answer_pieces
from core.attachments import question_message, vision_enabled
from core.prompts import agent_system_prompt, router_system_prompt, summary_message, user_turn
from core.retry import RetryPolicy, StreamFailed, call_with_retries, stream_with_retries
from core.router import RouteDecision, SemanticRouter
from core.settings import Settings
from core.summary import summarize
from core.thread_context import is_context
from core.token_batching import TokenBatcher
from core.tokens import count_message_tokens, count_text_tokens
from core.workspaces import model_for_turn
from knowledge.coalescer import MAX_QUERY_BATCH
from knowledge.agents import AgentRegistry, AgentSpec
from knowledge.types import Passage

MIN_SOURCE_SCORE = 0.30
CITED_FROM_CACHED = 2  # sources cited by an agent that answers from its cached documents


def _keep_first(old: float | None, new: float | None) -> float | None:
    return old if old else new


def _merge_unique(old: list[str] | None, new: list[str] | None) -> list[str]:
    merged = list(old or [])
    for item in new or []:
        if item not in merged:
            merged.append(item)
    return merged


class ConversationState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    agent: str | None
    agents_used: Annotated[list[str], _merge_unique]
    created_at: Annotated[float, _keep_first]
    updated_at: float
    summary: str  # the running summary of the older turns (`core.summary`), checkpointed with them
    folded: int  # how many messages, from the first, the summary covers (they stay in `messages` for transcripts)


@dataclass
class TurnContext:
    """Per-turn, never checkpointed: what the orchestrator reports once the graph has run."""

    session_key: str
    decision: RouteDecision | None = None
    route_ms: float = 0.0
    retrieval_ms: float = 0.0
    sources: list[Passage] = field(default_factory=list)
    failure: StreamFailed | None = None
    output_tokens: int | None = None
    allowed_agents: tuple[str, ...] | None = None  # the channel's agents (`core.channels`); None = all
    confidence: float | None = None  # the best passage's cosine similarity (`core.grounding`)
    declined: bool = False  # the bot said it does not know instead of answering
    handoff: bool = False  # the message asked for a person; no agent answered
    attachments: tuple[Any, ...] = ()  # this turn's files (`core.attachments`): never in the checkpointed state
    ahead: EmbeddingAhead | None = None  # the question, already being embedded (`embed_ahead`)
    # Where the nodes' events (agent, handoff, token) go: the orchestrator's own queue, on the event loop. None
    # (the graph run on its own) falls back to LangGraph's custom stream. Why not always that stream: its writer
    # hands every chunk over with `call_soon_threadsafe`, a wake-up of the event loop through its self-pipe per
    # streamed token, meant for nodes in other threads; ours run on the loop.
    emit: Callable[[dict[str, Any]], None] | None = None


def _event_sink(ctx: TurnContext) -> Callable[[dict[str, Any]], None]:
    """The turn's event sink: the orchestrator's (`TurnContext.emit`), else LangGraph's custom stream."""
    return ctx.emit if ctx.emit is not None else get_stream_writer()


@dataclass(frozen=True, slots=True)
class EmbeddingAhead:
    """A question being embedded in the routing pool while its turn opens (`embed_ahead`)."""

    question: str
    vector: Future[Any]

    def for_question(self, question: str) -> Future[Any] | None:
        """The vector's future, if it is this question's (routing may see another text, e.g. a carried one)."""
        return self.vector if question == self.question else None


def embed_ahead(brain: Brain, question: str) -> EmbeddingAhead:
    """Start embedding `question` for routing now, in the routing pool, without waiting for it.

    Why: before routing, a turn records itself in the ledger, reads its conversation's checkpoint and sets up the
    graph (about 3 ms alone, far more in a burst); the embedding (6 ms alone, the largest part of routing) needs
    none of that, so it runs meanwhile, and the router takes the vector when it gets there."""
    return EmbeddingAhead(question, routing_pool().submit(brain.router.embed, question))


class RouteChoice(BaseModel):
    """The language model's routing decision (structured output)."""

    # `route_choice_model` narrows `agent` to the registry's names (a JSON-schema enum), so the model can only
    # answer with an agent that exists; this docstring is the tool description the model reads.

    agent: str = Field(description="The specialist that should answer.")
    reason: str = Field(default="", description="A few words on why.")


@functools.lru_cache(maxsize=8)
def route_choice_model(names: tuple[str, ...]) -> type[RouteChoice]:
    """`RouteChoice` with `agent` as a `Literal` of these names (a JSON-schema enum); built once per agent list."""
    return create_model(  # type: ignore[call-overload,no-any-return]
        "RouteChoice",
        __base__=RouteChoice,
        __doc__=RouteChoice.__doc__,
        agent=(Literal[tuple(names)], Field(description="The specialist that should answer.")),
    )


@dataclass
class Brain:
    """Everything the nodes need, injected once; the graph has no globals."""

    settings: Settings
    agents: AgentRegistry
    router: SemanticRouter
    knowledge: KnowledgeBase
    llm: BaseChatModel | None
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


def _last_question(state: ConversationState) -> str:
    for message in reversed(state.get("messages", [])):
        if isinstance(message, HumanMessage) and not is_context(message):
            return message.text if isinstance(message.content, list) else str(message.content)
    return ""


@dataclass(frozen=True, slots=True)
class Conversation:
    """What of the earlier conversation this turn's request carries: the running summary, the recent messages
    whole, and the state update that records any folding."""

    summary: str
    recent: list[BaseMessage]
    update: dict[str, Any]


async def _conversation(brain: Brain, state: ConversationState, fixed_tokens: int,
                        session_key: str) -> Conversation:
    """The earlier messages (not the current question) within the context budget: when they outgrow their room
    the oldest turns are folded into the summary, by the model when there is one (`core.context_window`)."""
    settings = brain.settings
    messages = list(state.get("messages", []))[:-1]
    folded = min(int(state.get("folded") or 0), len(messages))
    summary = str(state.get("summary") or "")
    limit = settings.max_context_tokens
    room = recent_room(limit, settings.history_token_budget, fixed_tokens + count_text_tokens(summary))
    window = plan_window(messages[folded:], room)
    if not window.to_fold:
        return Conversation(summary, window.recent, {})
    budget = summary_budget(limit)
    invoke = None
    if brain.llm is not None:
        summarizer = brain.llm.with_config(tags=["nostream"])

        async def invoke(request: list[BaseMessage]) -> Any:
            return await call_with_retries(lambda: summarizer.ainvoke(request), brain.retry_policy, brain.sleep,
                                           log_context=f"[{session_key}] summary")

    summary = await summarize(summary, window.to_fold, budget=budget,
                              batch_tokens=max(200, limit - budget - SUMMARY_OVERHEAD), invoke=invoke)
    return Conversation(summary, window.recent,
                        {"summary": summary, "folded": folded + len(window.to_fold)})


SUMMARY_OVERHEAD = 400  # the summarising request's instructions and framing


def build_graph(brain: Brain, checkpointer: Any) -> Any:
    """Compile the router → agent graph with the given checkpointer."""

    async def route(state: ConversationState, runtime: Runtime[TurnContext]) -> Command[Any]:
        ctx = runtime.context
        writer = _event_sink(ctx)
        question = _last_question(state)
        previous = state.get("agent")
        started = time.perf_counter()
        with span("switchboard.route") as routing:  # core/tracing.py: a child of the front-end's turn span
            ahead = ctx.ahead.for_question(question) if ctx.ahead is not None else None
            decision = await decide_route(brain, question, previous, ctx.session_key, allowed=ctx.allowed_agents,
                                          ahead=ahead)
            annotate(routing, agent=decision.agent, reason=decision.reason, handoff=decision.handoff)
        ctx.decision = decision
        ctx.route_ms = (time.perf_counter() - started) * 1000
        if decision.handoff:  # a request for a person: the front-end hands the thread over, no agent answers
            ctx.handoff = True
            writer({"kind": "handoff"})
            return Command(goto=END, update={"messages": _marked_handoff(state), "updated_at": time.time()})
        spec = brain.agents[decision.agent]
        writer({"kind": "agent", "name": spec.name, "label": spec.label, "reason": decision.reason})
        return Command(goto=spec.name, update={"agent": spec.name})

    builder = StateGraph(ConversationState, context_schema=TurnContext)
    builder.add_node("router", route, destinations=(*brain.agents.names, END))
    for spec in brain.agents.values():
        builder.add_node(spec.name, _agent_node(brain, spec))
        builder.add_edge(spec.name, END)
    builder.add_edge(START, "router")
    return builder.compile(checkpointer=checkpointer)


def _marked_handoff(state: ConversationState) -> list[AnyMessage]:
    """The question, replaced in place (same id) by a copy marked as a request for a person, so a transcript
    (`core.transcript`) can tell it from the questions the bot was asked."""
    messages = state.get("messages", [])
    if not messages or not isinstance(messages[-1], HumanMessage):
        return []
    last = messages[-1]
    return [last.model_copy(update={"additional_kwargs": {**last.additional_kwargs, "handoff": True}})]


@functools.cache
def routing_pool() -> ThreadPoolExecutor:
    """The threads routing runs in: as many as the embedder puts in one forward pass.

    Why not asyncio's default executor: it has cpu_count + 4 threads (6 here), so under a burst only 6
    questions could wait on the embedder together, and the coalescer's batches (`knowledge.coalescer`), which
    cost half as much per question from 8 up, never grew past 6. Routing's threads mostly wait for that
    batch; the embedding and searches in them release the GIL."""
    return ThreadPoolExecutor(max_workers=MAX_QUERY_BATCH, thread_name_prefix="route")


async def decide_route(brain: Brain, question: str, previous: str | None, session_key: str, *,
                       allowed: tuple[str, ...] | None = None, ahead: Future[Any] | None = None) -> RouteDecision:
    """Semantic routing first; the language model only when the semantic router is unsure and one exists.
    `allowed` limits the choice to a channel's agents; `ahead`, the question's vector being computed already."""
    limit: dict[str, Any] = {"allowed": allowed} if allowed else {}  # a router without channel limits: as before
    if ahead is not None:
        limit["vector"] = await asyncio.wrap_future(ahead)
    route = functools.partial(brain.router.route, question, previous, **limit)
    decision = await asyncio.get_running_loop().run_in_executor(routing_pool(), route)
    if not decision.confident and brain.llm is not None:
        decision = await _ask_llm_to_route(brain, question, previous, decision, session_key, allowed)
    return decision


async def _ask_llm_to_route(
    brain: Brain, question: str, previous: str | None, semantic: RouteDecision, session_key: str,
    allowed: tuple[str, ...] | None = None,
) -> RouteDecision:
    assert brain.llm is not None
    names = tuple(n for n in brain.agents.names if not allowed or n in allowed)
    schema = route_choice_model(names)
    chooser = brain.llm.with_structured_output(schema, method="function_calling").with_config(tags=["nostream"])
    system = router_system_prompt({n: brain.agents[n] for n in names}, previous if previous in names else None)
    try:
        choice = await call_with_retries(
            lambda: chooser.ainvoke([SystemMessage(system), HumanMessage(question)]),
            brain.retry_policy,
            brain.sleep,
            log_context=f"[{session_key}] routing",
        )
    except StreamFailed:
        # The semantic router's best guess is still a good answer; routing must not fail the turn.
        return semantic
    if not isinstance(choice, RouteChoice) or choice.agent not in names:
        return semantic
    return RouteDecision(
        agent=choice.agent,
        confidence=semantic.confidence,
        confident=True,
        reason=f"language model decided: {choice.reason}".strip(": "),
        scores=semantic.scores,
        probes=semantic.probes,
    )


def _agent_node(brain: Brain, spec: AgentSpec) -> Callable[..., Awaitable[dict[str, Any]]]:
    settings = brain.settings

    async def answer(state: ConversationState, runtime: Runtime[TurnContext]) -> dict[str, Any]:
        ctx = runtime.context
        writer = _event_sink(ctx)
        question = _last_question(state)
        offline = brain.llm is None

        started = time.perf_counter()
        retrieving = start_step("switchboard.retrieve", agent=spec.name, strategy=spec.strategy)
        passages: list[Passage] = []
        if offline or spec.strategy in ("rag", "hybrid"):
            passages = _probed(brain, ctx, spec.name)
            if passages is None:
                passages = await asyncio.to_thread(
                    brain.knowledge.retrieve, spec.name, question, settings.retrieval_k
                )
        cached = None
        if not offline and spec.strategy in ("cag", "hybrid"):
            cached = await asyncio.to_thread(brain.knowledge.cached_context, spec.name)
            if cached is None and not passages:
                # No cached documents (none marked, or over budget): fall back to retrieval, never to nothing.
                passages = _probed(brain, ctx, spec.name) or await asyncio.to_thread(
                    brain.knowledge.retrieve, spec.name, question, settings.retrieval_k
                )
        citable = passages
        if cached is not None and not passages:
            # A cached-only agent cites the passages routing found in its documents; routed here without a probe
            # (the language model chose an agent the router did not probe), it looks them up. The prompt itself
            # keeps only the cached documents.
            probed = _probed(brain, ctx, spec.name)
            citable = probed if probed is not None else await asyncio.to_thread(
                brain.knowledge.retrieve, spec.name, question, settings.retrieval_k
            )
            citable = citable[:CITED_FROM_CACHED]
        ctx.retrieval_ms = (time.perf_counter() - started) * 1000
        end_step(retrieving, passages=len(passages or citable), retrieval_ms=ctx.retrieval_ms,
                 best_score=max((p.score for p in passages or citable), default=None))
        conversation = await _conversation(brain, state, _fixed_tokens(brain, spec, question, passages, ctx),
                                           ctx.session_key)

        follow_up = any(isinstance(m, AIMessage) for m in state.get("messages", []))
        grounding = assess(passages or citable, settings.confidence_threshold,
                           defer_to_model=not offline and follow_up)
        ctx.confidence = grounding.confidence
        if not grounding.grounded:
            text = _declined(brain, ctx, spec, offline)
            await _stream_text(text, writer)
        elif offline:
            text, used = compose_offline_answer(passages, support_email=settings.support_email, question=question)
            await _stream_text(text, writer)
            ctx.sources = used
        else:
            with span("switchboard.model", agent=spec.name, model=getattr(brain.llm, "model_name", None)) as calling:
                text = await _stream_llm_answer(brain, spec, conversation, question, passages, cached, ctx, writer)
                annotate(calling, output_tokens=ctx.output_tokens, declined=ctx.declined)
            ctx.sources = [] if ctx.declined else _worth_citing(citable)

        update: dict[str, Any] = {"agents_used": [spec.name], "updated_at": time.time(), **conversation.update}
        if text:
            update["messages"] = [AIMessage(content=text, response_metadata=_turn_metadata(spec, ctx))]
        return update

    answer.__name__ = f"{spec.name}_agent"
    return answer


async def _stream_text(text: str, writer: Callable[[Any], None]) -> None:
    """A composed answer (offline, or a decline) streamed in small pieces, like a model's."""
    for piece in stream_pieces(text):
        writer({"kind": "token", "text": piece})
        await asyncio.sleep(0)  # let other sessions' streams interleave


def _declined(brain: Brain, ctx: TurnContext, spec: AgentSpec, offline: bool) -> str:
    """The honest answer of a turn the knowledge base cannot ground: what was searched, and the way to a
    person. Marks the turn declined (no sources: nothing was used)."""
    ctx.declined = True
    ctx.sources = []
    searched = [spec.name, *(name for name in (ctx.decision.probes if ctx.decision else {}) if name != spec.name)]
    text = decline_text([brain.agents[name].label for name in searched if name in brain.agents],
                        support_email=brain.settings.support_email)
    return f"{OFFLINE_HEADER}\n\n{text}" if offline else text


def _turn_metadata(spec: AgentSpec, ctx: TurnContext) -> dict[str, Any]:
    """Kept with the answer in the conversation: who answered, how sure, from what (a handoff's ticket and the
    session transcript read it)."""
    return {"agent": spec.name, "declined": ctx.declined,
            "confidence": None if ctx.confidence is None else round(ctx.confidence, 4),
            "sources": [{"title": p.title, "source": p.source} for p in ctx.sources]}


def _probed(brain: Brain, ctx: TurnContext, agent: str) -> list[Passage] | None:
    """The agent's retrieval as routing already ran it (one retrieval per turn), or None when routing did not
    probe this agent, or probed it less deeply than the agent retrieves."""
    if ctx.decision is None or agent not in ctx.decision.probes or brain.router.probe_k < brain.settings.retrieval_k:
        return None
    return list(ctx.decision.probes[agent][: brain.settings.retrieval_k])


def _worth_citing(passages: list[Passage]) -> list[Passage]:
    """Passages close enough to the question to cite (for a cached-only agent, those routing matched)."""
    return [p for p in passages if p.score >= MIN_SOURCE_SCORE]


def _fixed_tokens(brain: Brain, spec: AgentSpec, question: str, passages: list[Passage],
                  ctx: TurnContext) -> int:
    """What the request costs besides the earlier conversation: the system prompt (without cached reference
    documents, which have their own budget) and the question with its passages."""
    if brain.llm is None:
        return count_text_tokens(question)
    settings = brain.settings
    system = agent_system_prompt(spec, brain.agents, company=settings.company_name,
                                 support_email=settings.support_email)
    turn = question_message(user_turn(question, passages), ctx.attachments, vision_enabled(settings))
    return count_message_tokens([SystemMessage(system), turn])


async def _stream_llm_answer(
    brain: Brain,
    spec: AgentSpec,
    conversation: Conversation,
    question: str,
    passages: list[Passage],
    cached: Any,
    ctx: TurnContext,
    writer: Callable[[Any], None],
) -> str:
    settings = brain.settings
    assert brain.llm is not None
    system = agent_system_prompt(
        spec,
        brain.agents,
        company=settings.company_name,
        support_email=settings.support_email,
        cached_text=cached.text if cached else "",
    )
    messages: list[BaseMessage] = [
        SystemMessage(system),
        *([SystemMessage(summary_message(conversation.summary))] if conversation.summary else []),
        *conversation.recent,
        question_message(user_turn(question, passages), ctx.attachments, vision_enabled(settings)),
    ]
    llm = model_for_turn(brain.llm)  # the workspace's model, when it chose one (`core.workspaces`)

    def count(tokens: int) -> None:
        ctx.output_tokens = tokens

    def pieces() -> AsyncIterator[str]:
        return answer_pieces(llm, messages, count)  # `core.answer_stream`: the wire, not langchain, per token

    produced: list[str] = []
    gate = MarkerGate()  # the model's "the documents do not answer this" never reaches the user
    # The text goes on in batches (the first piece at once), not a token at a time (`core.token_batching`).
    batcher = TokenBatcher(lambda text: writer({"kind": "token", "text": text}), settings.stream_batch_ms / 1000)

    def show(text: str) -> None:
        if text:
            produced.append(text)
            batcher.feed(text)

    try:
        try:
            await stream_with_retries(pieces, brain.retry_policy, lambda piece: show(gate.feed(piece)),
                                      brain.sleep, log_context=f"[{ctx.session_key}] {spec.name}")
        except StreamFailed as failure:
            ctx.failure = failure
        show(gate.close())
    finally:
        batcher.flush()  # before anything else is emitted, and before the turn reads what was streamed
    if gate.declined and ctx.failure is None:
        text = _declined(brain, ctx, spec, offline=False)
        await _stream_text(text, writer)
        return text
    return "".join(produced)

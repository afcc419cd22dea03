"""Long threads (issue 17, part 2): the request stays within MAX_CONTEXT_TOKENS, older turns live on in a
running summary kept in the checkpointed state.

The 299 earlier turns are seeded straight into the checkpoint (one `aupdate_state`, as the agent node would have
left them) rather than answered one by one; turn 300 then runs the whole graph against the fake OpenAI server,
whose recorded requests are measured.
"""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import AIMessage, HumanMessage, convert_to_messages

from core.context_window import summary_budget
from core.orchestrator import build_orchestrator
from core.tokens import count_message_tokens, count_text_tokens
from tests.conftest import make_settings
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.test_slack import ANSWER, answer_with

FACT = "WS-88417"
BUDGET = 3_000
KEY = "slack:T1:C1:300.0"


def seeded_turns() -> list:
    """299 turns: a greeting, the fact at turn 2, then questions about webhooks with full answers."""
    messages: list = [HumanMessage("Hi there, I have a question about webhooks."), AIMessage(ANSWER)]
    messages += [HumanMessage(f"My workspace id is {FACT} and we are on the Enterprise plan."), AIMessage(ANSWER)]
    for number in range(3, 300):
        messages += [HumanMessage(f"Why did webhook delivery {number} time out again?"),
                     AIMessage(ANSWER, response_metadata={"agent": "technical"})]
    return messages


async def seed(orchestrator) -> None:
    config = {"configurable": {"thread_id": KEY}}
    await orchestrator.graph.aupdate_state(
        config, {"messages": seeded_turns(), "agent": "technical", "agents_used": ["technical"],
                 "created_at": 1.0, "updated_at": 1.0}, as_node="technical")


async def state_of(orchestrator) -> dict:
    return (await orchestrator.graph.aget_state({"configurable": {"thread_id": KEY}})).values


def is_summary_request(body: dict) -> bool:
    return "running summary" in str(body["messages"][0].get("content", ""))


def summarising_model(body: dict) -> Reply:
    """A model that summarises as asked: it keeps the lines with facts the user stated (here: the workspace)."""
    if not is_summary_request(body):
        return answer_with(ANSWER)(body)
    text = body["messages"][-1]["content"]
    kept = [line.strip("- ") for line in text.splitlines() if "workspace" in line.lower()]
    return Reply(text="\n".join(dict.fromkeys(kept)) or "The user keeps asking about webhook timeouts.")


async def ask(orchestrator, text: str) -> str:
    events = [event async for event in orchestrator.respond(KEY, text)]
    return getattr(events[-1], "text", "")


@pytest.fixture
async def fake():
    async with FakeOpenAI() as server:
        server.responder = summarising_model
        yield server


async def test_turn_300_stays_under_budget_and_still_knows_turn_2(corpus_settings, fake) -> None:
    settings = make_settings(corpus_settings.data_dir, llm_provider="openai", openai_base_url=fake.base_url,
                             openai_api_key="sk-test", llm_timeout_s=5, max_context_tokens=BUDGET)
    orchestrator = await build_orchestrator(settings)
    try:
        await seed(orchestrator)
        assert await ask(orchestrator, "Which workspace id did I give you? Also, how do webhook retries work?")

        requests = [r.body for r in fake.chat_requests]
        summaries = [b for b in requests if is_summary_request(b)]
        answers = [b for b in requests if not is_summary_request(b) and not b.get("tools")]
        assert len(summaries) > 1  # folded a batch at a time: no summarising request outgrows the budget either
        for body in requests:
            assert count_message_tokens(convert_to_messages(body["messages"])) <= BUDGET
        [answer] = answers
        summary_parts = [m["content"] for m in answer["messages"] if m["role"] == "system"][1:]
        assert any(FACT in part for part in summary_parts)  # via the summary...
        assert not any(FACT in str(m["content"]) for m in answer["messages"] if m["role"] != "system")  # ...only
        assert "delivery 299" in json.dumps(answer["messages"])  # the recent turns are there whole

        state = await state_of(orchestrator)
        assert FACT in state["summary"] and state["folded"] > 500
        assert count_text_tokens(state["summary"]) <= summary_budget(BUDGET)
        assert (await orchestrator.session_info(KEY)).turns == 300  # folded turns still count and stay in transcripts
    finally:
        await orchestrator.aclose()

    fake.requests.clear()  # a restart: the summary is read back from the checkpoint, not rebuilt
    orchestrator = await build_orchestrator(settings)
    try:
        assert FACT in (await state_of(orchestrator))["summary"]
        await ask(orchestrator, "And how do I verify webhook signatures?")
        answer = [r.body for r in fake.chat_requests if not r.body.get("tools")][-1]
        assert not is_summary_request(answer) and FACT in json.dumps(answer["messages"])
        assert not any(is_summary_request(r.body) for r in fake.chat_requests)
    finally:
        await orchestrator.aclose()


async def test_offline_the_summary_is_extractive_and_keeps_the_users_facts(corpus_settings) -> None:
    orchestrator = await build_orchestrator(corpus_settings.model_copy(update={"max_context_tokens": BUDGET}))
    try:
        await seed(orchestrator)
        await ask(orchestrator, "How do webhook retries work?")
        state = await state_of(orchestrator)
        assert state["folded"] > 500
        assert f"User: My workspace id is {FACT}" in state["summary"]  # the user's fact outranks repeated chatter
        assert count_text_tokens(state["summary"]) <= summary_budget(BUDGET)
    finally:
        await orchestrator.aclose()


def test_the_window_folds_whole_turns_and_keeps_the_newest() -> None:
    from core.context_window import plan

    history = seeded_turns()[:40]
    assert plan(history, 100_000).to_fold == []
    window = plan(history, 400)
    assert window.to_fold and window.recent and isinstance(window.recent[0], HumanMessage)  # at a turn's start
    assert window.to_fold + window.recent == history
    assert count_message_tokens(window.recent) <= 200  # folded down to half the room: not again next turn


async def test_a_model_summary_that_fails_or_runs_long_is_still_bounded() -> None:
    from core.summary import summarize

    async def failing(request):
        raise RuntimeError("model down")

    async def verbose(request):
        return AIMessage("word " * 5_000)

    turns = seeded_turns()[:60]
    kept = await summarize("", turns, budget=300, batch_tokens=500, invoke=failing)  # extractive fallback
    assert FACT in kept and count_text_tokens(kept) <= 300
    long = await summarize("", turns, budget=300, batch_tokens=500, invoke=verbose)
    assert 0 < count_text_tokens(long) <= 300

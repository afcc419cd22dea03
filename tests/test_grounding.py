"""Grounded or honest, in the core: the confidence check per turn, the model's own "no answer", a request for a
person recognised instead of routed, per-channel agent limits, and `switchboard eval` predicting `none`.

Offline tests run the real local embeddings over the sample corpus; model tests drive the real ChatOpenAI against
the loopback fake OpenAI server.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.channels import ChannelsFileError, load_channel_settings
from core.evaluation import load_labelled
from core.events import Agent, Complete, Handoff, Sources, Token
from core.grounding import NO_ANSWER_MARKER, MarkerGate
from core.handoff_intent import asks_for_person
from core.orchestrator import build_orchestrator
from knowledge.agents import load_agents
from tests.conftest import ROOT, make_settings
from tests.fakes.openai_server import (
    FakeOpenAI,
    Reply,
    default_responder,
    requested_schema,
)

OFF_TOPIC = "What's the capital of Australia?"
ANSWERABLE = "What does the Enterprise plan cost?"


async def collect(orchestrator, key: str, text: str, **kwargs) -> list:
    return [event async for event in orchestrator.respond(key, text, **kwargs)]


def text_of(events: list) -> str:
    return "".join(e.text for e in events if isinstance(e, Token))


def llm_settings(base, fake: FakeOpenAI, **overrides):
    return make_settings(base.data_dir, llm_provider="openai", openai_base_url=fake.base_url,
                         openai_api_key="sk-test", llm_timeout_s=5, **overrides)


def answers_with(text: str):
    """Routing calls get the default structured answer; answers get `text`."""
    return lambda body: default_responder(body) if requested_schema(body) or body.get("tools") else Reply(text=text)


@pytest.fixture
async def offline(corpus_settings):
    orchestrator = await build_orchestrator(corpus_settings)
    yield orchestrator
    await orchestrator.aclose()


# --- the pure pieces -------------------------------------------------------------------------------------------

def test_the_marker_gate_swallows_the_marker_and_streams_anything_else() -> None:
    gate = MarkerGate()
    assert [gate.feed(p) for p in ("NO_", "ANS", "WER", " — not in the docs")] == ["", "", "", ""]
    assert gate.declined and gate.close() == ""
    gate = MarkerGate()
    assert gate.feed("NO") == "" and gate.feed("NE of the plans") == "NONE of the plans"  # held one piece only
    assert not gate.declined and gate.feed(" limit seats.") == " limit seats."
    gate = MarkerGate()
    assert gate.feed("NO") == "" and gate.close() == "NO"  # an answer that is only a prefix is still shown


def test_requests_for_a_person_are_recognised_by_their_words() -> None:
    for text in ("can I talk to a human?", "agent please", "Human!", "I want to speak to a real person",
                 "connect me with someone from support", "escalate this to a person please"):
        assert asks_for_person(text), text
    for text in ("How do I add a person to my workspace?", "which agent answered this?",
                 "What does the Enterprise plan cost?"):
        assert not asks_for_person(text), text


# --- offline: the retrieval check --------------------------------------------------------------------------------

async def test_offline_an_unanswerable_question_gets_an_honest_answer_and_an_offer(offline) -> None:
    events = await collect(offline, "t:none", OFF_TOPIC)
    complete = events[-1]
    assert isinstance(complete, Complete) and complete.declined
    assert complete.confidence is not None and complete.confidence < offline.settings.confidence_threshold
    text = text_of(events)
    assert "I don't know the answer" in text and "Talk to a person" in text and "without a language model" in text
    searched = next(e.label for e in events if isinstance(e, Agent))
    assert f"I searched our {searched}" in text  # names what it searched, starting with the agent routed to
    assert not [e for e in events if isinstance(e, Sources)]  # nothing was used, nothing is cited
    [turn] = await offline.transcript("t:none")
    assert turn.declined and turn.answer == text and turn.confidence == complete.confidence


async def test_offline_an_answerable_question_is_answered_with_its_confidence(offline) -> None:
    events = await collect(offline, "t:yes", ANSWERABLE)
    complete = events[-1]
    assert isinstance(complete, Complete) and not complete.declined
    assert complete.confidence >= offline.settings.confidence_threshold and "$1,200" in text_of(events)
    [turn] = await offline.transcript("t:yes")
    assert turn.agent == "billing" and turn.sources and not turn.declined


# --- with a model: the retrieval check first, then the model's own statement -------------------------------------

async def test_the_model_saying_the_documents_do_not_answer_becomes_the_honest_answer(corpus_settings) -> None:
    async with FakeOpenAI() as fake:
        fake.responder = answers_with(NO_ANSWER_MARKER)
        orchestrator = await build_orchestrator(llm_settings(corpus_settings, fake))
        try:
            events = await collect(orchestrator, "t:model-none", "Does the Pro plan include a dedicated CSM?")
        finally:
            await orchestrator.aclose()
    text = text_of(events)
    assert NO_ANSWER_MARKER not in text and "I don't know the answer" in text
    assert isinstance(events[-1], Complete) and events[-1].declined
    assert not [e for e in events if isinstance(e, Sources)]


async def test_with_a_model_an_off_topic_first_question_is_declined_without_a_model_call(corpus_settings) -> None:
    async with FakeOpenAI() as fake:
        fake.responder = answers_with("A made-up answer.")
        orchestrator = await build_orchestrator(llm_settings(corpus_settings, fake))
        try:
            events = await collect(orchestrator, "t:model-off", OFF_TOPIC)
            answers = [r for r in fake.chat_requests if not r.body.get("tools")]
            assert answers == [] and events[-1].declined and "made-up" not in text_of(events)
            # A follow-up in the same thread is left to the model: it may be answerable from the conversation.
            events = await collect(orchestrator, "t:model-off", "and what about that?")
            assert "A made-up answer." in text_of(events) and not events[-1].declined
        finally:
            await orchestrator.aclose()


# --- a request for a person -----------------------------------------------------------------------------------

async def test_asking_for_a_person_is_a_handoff_not_an_answer(offline) -> None:
    await collect(offline, "t:human", ANSWERABLE)
    events = await collect(offline, "t:human", "can I talk to a human?")
    assert [type(e).__name__ for e in events] == ["Start", "Handoff", "Complete"]
    assert isinstance(events[1], Handoff) and text_of(events) == ""
    first, second = await offline.transcript("t:human")
    assert not first.asked_for_person and first.answer and second.asked_for_person and not second.answer


@pytest.mark.parametrize("eval_file", ["routing.tsv", "routing_holdout.tsv"])
async def test_no_eval_question_is_taken_for_a_request_for_a_person(offline, eval_file) -> None:
    questions = load_labelled(ROOT / "eval" / eval_file, list(offline.agents.names))
    flagged = [q.question for q in questions if (await offline.route(q.question)).handoff]
    assert flagged == []


# --- per-channel agents --------------------------------------------------------------------------------------------

async def test_a_channel_limited_to_billing_routes_only_to_billing(corpus_settings, tmp_path) -> None:
    channels = tmp_path / "channels.yml"
    channels.write_text("channels:\n  - platform: slack\n    channel: C0BILLING1\n    agents: [billing]\n")
    orchestrator = await build_orchestrator(corpus_settings.model_copy(update={"channels_file": channels}))
    try:
        question = "My API integration keeps timing out. How do I fix this?"
        limited = await collect(orchestrator, "t:billing-only", question, channel=("slack", "C0BILLING1"))
        elsewhere = await collect(orchestrator, "t:anywhere", question, channel=("slack", "C0GENERAL1"))
    finally:
        await orchestrator.aclose()
    assert [e.name for e in limited if isinstance(e, Agent)] == ["billing"]
    assert [e.name for e in elsewhere if isinstance(e, Agent)] == ["technical"]


def test_a_bad_channels_file_is_one_sentence_per_mistake(tmp_path) -> None:
    path = tmp_path / "channels.yml"
    path.write_text("channels:\n"
                    "  - platform: slack\n    channel: general\n"
                    "  - platform: discord\n    channel: '123'\n    agents: [sales]\n    handoff_mention: S0X\n"
                    "  - platform: slack\n    channel: C0AAA\n    handoff_channel: C0BBB\n    handoff_mention: S0ONC\n")
    with pytest.raises(ChannelsFileError) as raised:
        load_channel_settings(make_settings(tmp_path, channels_file=path), load_agents())
    lines = str(raised.value).splitlines()
    assert len(lines) == 3
    assert "entry 1" in lines[0] and "slack channel id such as C0123ABCD" in lines[0]
    assert "entry 2" in lines[1] and "unknown agent(s) sales" in lines[1]
    assert "entry 2" in lines[2] and "handoff_role" in lines[2]


# --- `switchboard eval` ----------------------------------------------------------------------------------------

def test_eval_json_predicts_none_when_the_bot_declines(corpus_settings, tmp_path: Path, monkeypatch) -> None:
    from switchboard.cli import app

    data = tmp_path / "eval.tsv"
    data.write_text(f"label\tquestion\nnone\t{OFF_TOPIC}\nbilling\t{ANSWERABLE}\nnone\tDo you have a Ruby SDK?\n")
    monkeypatch.chdir(tmp_path)  # no developer .env
    env = {"SWITCHBOARD_DATA_DIR": str(corpus_settings.data_dir), "LLM_PROVIDER": "offline", "CHROMA_HOST": "",
           "OPENAI_API_KEY": "", "OPENAI_BASE_URL": "", "EMBEDDING_PROVIDER": "local"}
    result = CliRunner().invoke(app, ["eval", str(data), "--json"], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [i["predicted"] for i in report["items"]] == ["none", "billing", "technical"]
    assert report["items"][0]["routed"] and report["items"][0]["grounding"] < 0.31
    assert report["decline"] == {"precision": 1.0, "recall": 0.5, "declined": 1, "unanswerable": 2,
                                 "answerable_declined": 0}
    assert report["routing_accuracy"] == 1.0


async def test_a_bad_channels_file_stops_the_start_as_switchboard_run_reports_it(corpus_settings, tmp_path) -> None:
    """`build_orchestrator` reads it before opening anything; `switchboard run` turns an AgentsFileError (which a
    ChannelsFileError is) into its one-sentence "Cannot start"."""
    from knowledge.agents import AgentsFileError

    path = tmp_path / "channels.yml"
    path.write_text("channels:\n  - platform: slack\n    channel: C0AAA\n    agents: [sales]\n")
    with pytest.raises(AgentsFileError, match="unknown agent"):
        await build_orchestrator(corpus_settings.model_copy(update={"channels_file": path}))

"""Issue 15, bounded storage: RETENTION_DAYS expires conversations, support-log rows and votes (SQLite and
Postgres), MAX_TURNS stops a conversation without calling the model, and a question cut by a crash is kept,
marked unanswered, for the next turn."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from bots.feedback import feedback_store
from bots.support.store import SupportEvent, support_store
from core.events import Agent, Complete, Error, Token
from core.interrupted import UNANSWERED_NOTE
from core.orchestrator import build_orchestrator
from core.retention import DAY_S, prune_conversations, uuid6_time
from coordination.leases import LocalLeases
from switchboard.privacy_cli import RetentionJob, prune_everything
from tests.conftest import ROOT, make_settings
from tests.fakes.openai_server import FakeOpenAI


async def _turn(orchestrator, key: str, text: str, user: str | None = "U1") -> list:
    return [event async for event in orchestrator.respond(key, text, user=user)]


def test_a_checkpoint_id_tells_when_it_was_written() -> None:
    from langgraph.checkpoint.base.id import uuid6

    assert abs(uuid6_time(str(uuid6())) - time.time()) < 1
    assert uuid6_time(str(uuid.uuid4())) is None and uuid6_time("not-an-id") is None


async def test_everything_older_than_the_retention_period_is_deleted(corpus_settings) -> None:
    orchestrator = await build_orchestrator(corpus_settings)
    try:
        async for event in orchestrator.respond("old:1", "Do you comply with GDPR?", user="U1"):
            if isinstance(event, Complete):
                break  # front-ends stop reading at the terminal event: the turn is closed by then
        assert [row[0] for row in await (await orchestrator.checkpointer.conn.execute(
            "SELECT open_question FROM switchboard_sessions")).fetchall()] == [None]
        votes = feedback_store(corpus_settings)
        await votes.record(frontend="slack", session_key="old:1", vote="up", user="U1")
        middle = time.time()
        assert isinstance((await _turn(orchestrator, "new:1", "Do you comply with GDPR?"))[-1], Complete)
        await votes.record(frontend="slack", session_key="new:1", vote="down", user="U1")
        support = support_store(corpus_settings)
        try:
            for at, key in ((middle - 1, "old:1"), (middle + 1, "new:1")):
                await support.add_event(SupportEvent("slack", key, "answered", "Do you comply?", at=at))
            # RETENTION_DAYS (90) after `middle`: the first conversation is past it, the second is not
            removed = await prune_everything(corpus_settings, orchestrator.checkpointer,
                                             now=middle + corpus_settings.retention_days * DAY_S)
            assert (removed.conversations, removed.support_rows, removed.votes) == (1, 1, 1)
            assert [event.session_key for event in await support.events()] == ["new:1"]
        finally:
            await support.aclose()
        assert await orchestrator.session_info("old:1") is None
        assert (await orchestrator.session_info("new:1")).turns == 1
        assert [row["session_key"] for row in await votes.read()] == ["new:1"]
        assert await orchestrator.ledger.idle_since(time.time() + 1) == ["new:1"]

        # the daily job of `switchboard run`: one replica a day (the lease), the next day again
        leases = LocalLeases("replica-a")
        job = RetentionJob(corpus_settings, orchestrator.checkpointer, leases)
        assert await job.run_once() is not None
        assert await RetentionJob(corpus_settings, orchestrator.checkpointer, leases.as_owner("b")).run_once() is None
        assert (await orchestrator.session_info("new:1")).turns == 1  # still within the period
    finally:
        await orchestrator.aclose()


async def test_a_conversation_stops_at_max_turns_without_calling_the_model(corpus_settings) -> None:
    async with FakeOpenAI() as fake:
        settings = make_settings(corpus_settings.data_dir, llm_provider="openai", openai_base_url=fake.base_url,
                                 openai_api_key="sk-test", llm_timeout_s=5, max_turns=2)
        orchestrator = await build_orchestrator(settings)
        try:
            for question in ("How much is the Pro plan?", "And with yearly billing?"):
                assert isinstance((await _turn(orchestrator, "long:1", question))[-1], Complete)
            calls = len(fake.chat_requests)
            events = await _turn(orchestrator, "long:1", "And for ten seats?")
            assert isinstance(events[-1], Error) and events[-1].code == "turn_limit"
            assert "start a new conversation" in events[-1].user_message
            assert not [e for e in events if isinstance(e, (Agent, Token))]
            assert len(fake.chat_requests) == calls  # the model was not called
            assert (await orchestrator.session_info("long:1")).turns == 2  # nothing stored either
            await orchestrator.reset("long:1")  # a new conversation counts from zero
            assert isinstance((await _turn(orchestrator, "long:1", "How much is the Pro plan?"))[-1], Complete)
        finally:
            await orchestrator.aclose()


async def test_conversations_expire_in_postgres_too(corpus_settings) -> None:
    """DATABASE_URL: the same prune over LangGraph's Postgres tables and the ledger beside them."""
    psycopg = pytest.importorskip("psycopg")
    from tests.test_postgres import _server_problem, SERVER, url_with

    if _server_problem():
        pytest.skip(_server_problem())
    name = f"sb_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        settings = make_settings(corpus_settings.data_dir, database_url=url_with(SERVER, schema=name))
        orchestrator = await build_orchestrator(settings)
        try:
            assert isinstance((await _turn(orchestrator, "pg:old", "Do you comply with GDPR?"))[-1], Complete)
            middle = time.time()
            assert isinstance((await _turn(orchestrator, "pg:new", "Do you comply with GDPR?"))[-1], Complete)
            assert await orchestrator.ledger.sessions_of("U1") == ["pg:new", "pg:old"] or \
                sorted(await orchestrator.ledger.sessions_of("U1")) == ["pg:new", "pg:old"]
            deleted = await prune_conversations(orchestrator.checkpointer, middle)
            assert deleted == ["pg:old"]
            assert await orchestrator.session_info("pg:old") is None
            assert (await orchestrator.session_info("pg:new")).turns == 1
            assert await orchestrator.ledger.sessions_of("U1") == ["pg:new"]
        finally:
            await orchestrator.aclose()
    finally:
        with psycopg.connect(SERVER, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


CHILD = textwrap.dedent("""
    import asyncio, sys, time
    from pathlib import Path
    from core.events import Token
    from core.orchestrator import build_orchestrator
    from tests.conftest import make_settings

    async def main():
        orchestrator = await build_orchestrator(make_settings(Path(sys.argv[1])))
        async for event in orchestrator.respond("killed:mid", "Do you comply with GDPR?", user="U7"):
            if isinstance(event, Token):
                print("STREAMING", flush=True)
                time.sleep(60)  # killed here, mid-reply: the turn's checkpoint is never written

    asyncio.run(main())
""")


async def test_a_question_cut_by_a_crash_is_seen_by_the_next_turn(corpus_settings) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(corpus_settings.data_dir)], cwd=ROOT,
                             stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 90)
        assert line == b"STREAMING\n", line
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(10)
    orchestrator = await build_orchestrator(corpus_settings)
    try:
        assert await orchestrator.session_info("killed:mid") is None  # nothing was checkpointed…
        events = await _turn(orchestrator, "killed:mid", "What is your data retention period?", user="U7")
        assert isinstance(events[-1], Complete)
        state = await orchestrator.graph.aget_state({"configurable": {"thread_id": "killed:mid"}})
        humans = [m.content for m in state.values["messages"] if m.type == "human"]
        # …but the question was kept: the next turn's conversation carries it, marked
        assert humans == [f"Do you comply with GDPR?\n\n{UNANSWERED_NOTE}", "What is your data retention period?"]
        events = await _turn(orchestrator, "killed:mid", "Thanks!", user="U7")  # said once, not every turn
        state = await orchestrator.graph.aget_state({"configurable": {"thread_id": "killed:mid"}})
        assert sum(UNANSWERED_NOTE in m.content for m in state.values["messages"] if m.type == "human") == 1
    finally:
        await orchestrator.aclose()

"""DATABASE_URL: conversations and feedback votes in a real Postgres, shared by replicas.

Against the Postgres on 127.0.0.1:5432 (trust auth, database `test`; `SWITCHBOARD_TEST_POSTGRES` names another),
which `.ci/run` starts on this machine. Each test gets its own schema (`search_path` set through the URL's
`options`), dropped at the end, so tests never see each other's rows. Without that server every test here is
skipped, with a reason saying what is missing.

The URLs carry a password (trust auth ignores it) so the tests can check that it never shows: not in doctor's
sentence, not in /health, not in a log line, not in `switchboard migrate`'s output.

- a conversation written by one orchestrator (a "replica") is read back whole by a second one: session info,
  a follow-up that sees the earlier turns (in the state, and in the prompt a model receives); reset on one
  forgets it on both;
- `setup()` (migrate) is idempotent, also when replicas start together, and `switchboard migrate` says so;
- feedback votes land in Postgres (from the store, a Slack click and a Discord click) and `summarize` and
  `switchboard feedback` count them;
- doctor and /health report an unreachable Postgres in one sentence with the fix and without the password;
  Postgres going away mid-run ends a reply with a readable error and the service recovers when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from pydantic import SecretStr

from core.events import Agent, Complete, Error
from core.orchestrator import build_orchestrator
from tests.conftest import make_settings
from tests.proxy import CuttableProxy

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed: run `pip install -e '.[dev]'`")

SERVER = os.environ.get("SWITCHBOARD_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test")
PASSWORD = "pw-never-shown-7f3a"


async def collect(orchestrator: Any, key: str, text: str) -> list:
    return [event async for event in orchestrator.respond(key, text)]


def _server_problem() -> str | None:
    try:
        with psycopg.connect(SERVER, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means: skip, saying why
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return (f"Postgres is not reachable at {SERVER} ({first}); start it (`.ci/run` does, or "
                "set SWITCHBOARD_TEST_POSTGRES) to run the DATABASE_URL tests")
    return None


@pytest.fixture(scope="module")
def server() -> str:
    problem = _server_problem()
    if problem:
        pytest.skip(problem)
    return SERVER


def url_with(base: str, *, schema: str, host: str | None = None, port: int | None = None) -> str:
    """`base` with the test's password, optionally another host/port, and `search_path` set to `schema`."""
    params = psycopg.conninfo.conninfo_to_dict(base)
    user = params.get("user") or psycopg.connect(base).info.user
    where = f"{host or params.get('host') or '127.0.0.1'}:{port or params.get('port') or 5432}"
    options = quote(f"-c search_path={schema}", safe="")
    return f"postgresql://{user}:{PASSWORD}@{where}/{params.get('dbname', 'test')}?options={options}"


@pytest.fixture
def schema(server: str) -> Any:
    """A fresh schema for one test, and the DATABASE_URL that uses it; dropped afterwards."""
    name = f"sb_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    yield url_with(server, schema=name)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def replica_settings(ingested_dir: Path, tmp_path: Path, name: str, url: str, **overrides: Any) -> Any:
    """Offline settings for one replica: its own copy of the knowledge store, the shared Postgres."""
    data_dir = tmp_path / name
    shutil.copytree(ingested_dir, data_dir)
    return make_settings(data_dir, database_url=url, **overrides)


@contextlib.asynccontextmanager
async def replicas(*settings: Any, **kwargs: Any) -> AsyncIterator[list[Any]]:
    built = [await build_orchestrator(s, **kwargs) for s in settings]
    try:
        yield built
    finally:
        for orchestrator in built:
            await orchestrator.aclose()


# --- conversations across replicas ----------------------------------------------------------------------------


async def test_a_conversation_written_by_one_replica_is_read_whole_by_another(ingested_dir, tmp_path,
                                                                              schema) -> None:
    key = f"slack:T1:C1:{uuid.uuid4().hex}"
    a_settings = replica_settings(ingested_dir, tmp_path, "a", schema)
    b_settings = replica_settings(ingested_dir, tmp_path, "b", schema)
    async with replicas(a_settings, b_settings) as (a, b):
        assert type(a.checkpointer).__name__ == "PostgresCheckpointer"
        first = await collect(a, key, "How do I verify webhook signatures?")
        assert isinstance(first[-1], Complete) and first[-1].agent == "technical"

        info = await b.session_info(key)  # replica B never saw this thread
        assert info is not None and info.turns == 1 and info.agents == ("technical",)
        assert info.current_agent == "technical" and info.created_at is not None

        follow_up = await collect(b, key, "ok and what if it keeps failing for days?")
        assert [e.name for e in follow_up if isinstance(e, Agent)] == ["technical"]  # stays with the thread's agent
        state = await b.graph.aget_state({"configurable": {"thread_id": key}})
        humans = [m.content for m in state.values["messages"] if m.type == "human"]
        assert humans == ["How do I verify webhook signatures?", "ok and what if it keeps failing for days?"]
        assert len(state.values["messages"]) == 4  # two questions, two answers: B appended to A's history

        back_on_a = await a.session_info(key)
        assert back_on_a is not None and back_on_a.turns == 2 and back_on_a.updated_at >= info.updated_at


async def test_a_follow_up_on_another_replica_sends_the_earlier_turns_to_the_model(ingested_dir, tmp_path,
                                                                                   schema) -> None:
    from tests.fakes.openai_server import FakeOpenAI

    key = f"web:{uuid.uuid4()}"
    async with FakeOpenAI() as fake:
        llm = {"llm_provider": "openai", "openai_base_url": fake.base_url, "openai_api_key": "sk-test",
               "llm_timeout_s": 5}
        async with replicas(replica_settings(ingested_dir, tmp_path, "a", schema, **llm),
                            replica_settings(ingested_dir, tmp_path, "b", schema, **llm)) as (a, b):
            await collect(a, key, "Can I upgrade from the Basic plan?")
            events = await collect(b, key, "and how much would that cost me?")
    assert isinstance(events[-1], Complete)
    history = fake.chat_requests[-1].body["messages"]
    assert any(m["role"] == "user" and m["content"] == "Can I upgrade from the Basic plan?" for m in history)
    assert any(m["role"] == "assistant" and "Here is what I found" in m["content"] for m in history)


async def test_a_conversation_keeps_one_checkpoint_in_postgres(ingested_dir, tmp_path, server, schema) -> None:
    """LangGraph's keep-latest prune after each turn: a conversation of n turns is one checkpoint, not n copies
    of its history, and reads back whole."""
    key = f"web:{uuid.uuid4().hex}"
    async with replicas(replica_settings(ingested_dir, tmp_path, "a", schema)) as (a,):
        for turn in range(3):
            events = await collect(a, key, f"How do I verify webhook signatures? ({turn})")
            assert isinstance(events[-1], Complete)
        info = await a.session_info(key)
        assert info is not None and info.turns == 3
    with psycopg.connect(schema) as conn:  # the URL's search_path is the test's schema
        count = conn.execute("SELECT COUNT(*) FROM checkpoints WHERE thread_id = %s", (key,)).fetchone()[0]
    assert count == 1


async def test_reset_on_one_replica_forgets_the_conversation_on_both(ingested_dir, tmp_path, schema) -> None:
    key, other = f"web:{uuid.uuid4()}", f"web:{uuid.uuid4()}"
    async with replicas(replica_settings(ingested_dir, tmp_path, "a", schema),
                        replica_settings(ingested_dir, tmp_path, "b", schema)) as (a, b):
        await collect(a, key, "Do you comply with GDPR?")
        await collect(a, other, "Do you comply with GDPR?")
        assert await b.session_info(key) is not None
        await b.reset(key)
        assert await a.session_info(key) is None and await b.session_info(key) is None
        assert (await a.session_info(other)).turns == 1  # other threads untouched
        again = await collect(a, key, "How long do you keep backups?")
        assert isinstance(again[-1], Complete) and (await b.session_info(key)).turns == 1  # a fresh start


# --- migrations -----------------------------------------------------------------------------------------------


def _tables(server: str, schema_url: str) -> set[str]:
    schema_name = psycopg.conninfo.conninfo_to_dict(schema_url)["options"].split("=", 1)[1]
    with psycopg.connect(server) as conn:
        rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                            (schema_name,)).fetchall()
    return {row[0] for row in rows}


async def test_migrate_is_idempotent_and_safe_when_replicas_start_together(server, schema, tmp_path,
                                                                           caplog) -> None:
    from bots.feedback import feedback_store
    from core.checkpoints import migrate
    from switchboard.cli import _migrate

    caplog.set_level(logging.DEBUG)
    settings = make_settings(tmp_path, database_url=schema)
    first = await asyncio.gather(*(_migrate(settings) for _ in range(3)))  # three replicas at once
    assert len({tuple(lines) for lines in first}) == 1
    tables = _tables(server, schema)
    assert {"checkpoints", "checkpoint_blobs", "checkpoint_writes", "checkpoint_migrations",
            "switchboard_feedback"} <= tables
    again = await migrate(settings)
    assert again == first[0][0] and "migrations applied" in again and PASSWORD not in again
    await feedback_store(settings).setup()
    assert _tables(server, schema) == tables
    assert PASSWORD not in caplog.text


def test_the_migrate_command_prints_what_it_did_without_the_password(schema, tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from switchboard.cli import app

    monkeypatch.setenv("DATABASE_URL", schema)
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    for _ in range(2):
        result = CliRunner().invoke(app, ["migrate"])
        assert result.exit_code == 0, result.output
        assert "checkpoints: Postgres at postgresql://" in result.output and ":****@" in result.output
        assert "feedback: switchboard_feedback in Postgres" in result.output and PASSWORD not in result.output
    monkeypatch.setenv("DATABASE_URL", url_with(SERVER, schema="public", port=1))
    failed = CliRunner().invoke(app, ["migrate"])
    assert failed.exit_code == 1 and "refused the connection (DATABASE_URL): start it or fix the URL" in failed.output
    assert PASSWORD not in failed.output


# --- feedback -------------------------------------------------------------------------------------------------


async def test_feedback_votes_go_to_postgres_and_summarize_counts_them(schema, tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from bots.feedback import FEEDBACK_FILE, PostgresFeedbackStore, feedback_store, summarize
    from switchboard.cli import app

    settings = make_settings(tmp_path, database_url=schema)
    store = feedback_store(settings)
    assert isinstance(store, PostgresFeedbackStore) and PASSWORD not in store.where
    assert await store.read() == []  # no table yet: nothing, not an error
    await store.record(frontend="slack", session_key="slack:T:C:1.0", vote="up", user="U1", message="1.1")
    await store.record(frontend="slack", session_key="slack:T:C:2.0", vote="down", user="U2")
    await store.record(frontend="discord", session_key="discord:thread:9", vote="down", user="42")

    rows = await feedback_store(settings).read()  # another store (another replica) reads the same rows
    assert [(r["frontend"], r["session_key"], r["vote"], r["user"]) for r in rows] == [
        ("slack", "slack:T:C:1.0", "up", "U1"), ("slack", "slack:T:C:2.0", "down", "U2"),
        ("discord", "discord:thread:9", "down", "42")]
    assert rows[0]["message"] == "1.1" and isinstance(rows[0]["at"], float)
    summary = summarize(rows)
    assert summary["total"] == 3
    assert summary["by_frontend"] == {"slack": {"up": 1, "down": 1}, "discord": {"up": 0, "down": 1}}
    assert [r["session_key"] for r in summary["recent_down"]] == ["discord:thread:9", "slack:T:C:2.0"]
    assert not (tmp_path / FEEDBACK_FILE).exists()  # nothing went to the file

    monkeypatch.setenv("DATABASE_URL", schema)
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    printed = await asyncio.to_thread(CliRunner().invoke, app, ["feedback", "--json"])  # it runs its own loop
    assert printed.exit_code == 0, printed.output
    assert '"total": 3' in printed.output and "discord:thread:9" in printed.output


async def test_a_slack_click_is_recorded_in_postgres(corpus_settings, schema) -> None:
    from bots.feedback import feedback_store, read_feedback
    from bots.slack.app import session_key
    from tests.fakes.slack import CHANNEL, TEAM_ID, USER_ID, FakeSlack
    from tests.test_slack import FAST_UPDATES, final_reply, start_bot

    settings = corpus_settings.model_copy(update={"database_url": SecretStr(schema)})
    async with FakeSlack(limits={"chat.update": FAST_UPDATES}) as slack:
        bot = await start_bot(settings, slack)
        try:
            event = slack.app_mention("What does the Enterprise plan cost?")
            await slack.send_event(event)
            [reply] = await final_reply(slack, bot, CHANNEL, event["ts"])
            key = session_key(TEAM_ID, CHANNEL, event["ts"])
            await slack.send_block_action("feedback_down", key, message_ts=reply.ts, block_id="feedback")
            await slack.wait_for(lambda: slack.responses)
        finally:
            await bot.frontend.stop()
            await bot.orchestrator.aclose()
    [row] = await feedback_store(settings).read()
    assert (row["frontend"], row["session_key"], row["vote"], row["user"], row["message"]) == (
        "slack", key, "down", USER_ID, reply.ts)
    assert slack.responses[-1].body["text"].startswith("Thanks for telling us")
    assert read_feedback(settings.data_dir) == []


async def test_a_discord_click_is_recorded_in_postgres(corpus_settings, schema) -> None:
    from bots.discord.bot import DiscordFrontend
    from bots.discord.feedback import THANKS
    from bots.feedback import feedback_store
    from tests.fakes.discord import FakeDiscord
    from tests.test_discord_feedback import answered_mention, click

    core = await build_orchestrator(corpus_settings)
    try:
        async with FakeDiscord() as fake:
            settings = make_settings(corpus_settings.data_dir, discord_token=fake.token,
                                     discord_guild_id=fake.guild_id, discord_edit_window_s=fake.limiter.window_s,
                                     database_url=schema)
            frontend = DiscordFrontend(settings, core, guild_ready_timeout=0.05, ready_timeout_s=10)
            await frontend.start()
            try:
                key, final = await answered_mention(fake, frontend)
                reply = await click(fake, final, f"sb:fb:up:{key}")
            finally:
                await frontend.stop()
    finally:
        await core.aclose()
    assert reply["content"] == THANKS["up"]
    [row] = await feedback_store(settings).read()
    assert (row["frontend"], row["session_key"], row["vote"], row["message"]) == ("discord", key, "up", final["id"])


# --- an unreachable Postgres: doctor, start-up, /health ---------------------------------------------------------

REFUSED = "Postgres at 127.0.0.1:1 refused the connection (DATABASE_URL): start it or fix the URL"


async def test_doctor_and_start_up_name_an_unreachable_postgres_in_one_sentence(server, tmp_path, caplog) -> None:
    from core.checkpoints import CheckpointsUnavailable
    from core.doctor import check_checkpoints, settings_rows

    caplog.set_level(logging.DEBUG)
    settings = make_settings(tmp_path, database_url=url_with(server, schema="public", port=1))
    result = await check_checkpoints(settings)
    assert not result.ok
    assert (result.detail, result.fix) == ("Postgres at 127.0.0.1:1 refused the connection (DATABASE_URL)",
                                           "start it or fix the URL")
    shown = dict(settings_rows(settings))["database_url"]
    assert shown.startswith("postgresql://") and ":****@127.0.0.1:1/" in shown

    with pytest.raises(CheckpointsUnavailable) as refused:  # what `switchboard run` prints, then exits
        await build_orchestrator(settings)
    assert str(refused.value) == REFUSED
    assert refused.value.public == "Postgres (DATABASE_URL) refused the connection: start it or fix the URL"
    for text in (result.detail, result.fix, shown, str(refused.value), caplog.text):
        assert PASSWORD not in text


async def test_doctor_reports_a_reachable_postgres_and_its_tables(schema, tmp_path) -> None:
    from core.checkpoints import migrate
    from core.doctor import check_checkpoints

    settings = make_settings(tmp_path, database_url=schema)
    before = await check_checkpoints(settings)  # read-only: doctor creates nothing
    assert before.ok and "0 of" in before.detail and "switchboard migrate" in before.detail
    await migrate(settings)
    after = await check_checkpoints(settings)
    assert after.ok and after.detail.startswith("Postgres ") and "tables ready" in after.detail
    assert PASSWORD not in before.detail + after.detail


async def test_health_reports_postgres_going_away_and_the_service_recovers(ingested_dir, tmp_path, server,
                                                                          schema, monkeypatch, caplog) -> None:
    import core.checkpoints

    monkeypatch.setattr(core.checkpoints, "POOL_TIMEOUT_S", 1.0)  # fail a checkpoint read in 1 s, not 5
    caplog.set_level(logging.DEBUG)
    params = psycopg.conninfo.conninfo_to_dict(server)
    proxy = CuttableProxy(params.get("host") or "127.0.0.1", int(params.get("port") or 5432))
    await proxy.start()
    schema_name = psycopg.conninfo.conninfo_to_dict(schema)["options"].split("=", 1)[1]
    url = url_with(server, schema=schema_name, port=proxy.port)
    key = f"web:{uuid.uuid4()}"
    async with replicas(replica_settings(ingested_dir, tmp_path, "a", url)) as (orchestrator,):
        assert (await orchestrator.health()).failing == []
        await collect(orchestrator, key, "Do you comply with GDPR?")

        await proxy.cut()
        report = await orchestrator.health()
        assert report.failing == ["checkpoints"]
        assert report.checks()["checkpoints"] == {
            "ok": False, "error": "Postgres (DATABASE_URL) refused the connection: start it or fix the URL"}
        during = await collect(orchestrator, key, "How long do you keep backups?")
        assert isinstance(during[-1], Error) and "Traceback" not in during[-1].user_message

        await proxy.start()  # Postgres is back, same address
        for _ in range(60):
            if (await orchestrator.health()).failing == []:
                break
            await asyncio.sleep(0.25)
        assert (await orchestrator.health()).failing == []
        after = await collect(orchestrator, key, "How long do you keep backups?")
        assert isinstance(after[-1], Complete)
        assert (await orchestrator.session_info(key)).turns == 2  # the turn that failed left nothing behind
    await proxy.cut()
    assert PASSWORD not in caplog.text

"""`switchboard gaps` and `switchboard draft-article` on a seeded set of sessions, through the real CLI, the real
support store (SQLite), the real feedback file, a real checkpointed conversation and the local embedding model;
and the support store's guarantees (one open handoff per conversation, compare-and-set staff actions) on SQLite
and, when a server is there, on Postgres shared by two "replicas".
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import time
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bots.feedback import record_feedback
from bots.support.gaps import outcome_of
from bots.support.store import (
    PostgresSupportStore,
    SqliteSupportStore,
    SupportEvent,
    support_store,
)
from core.orchestrator import build_orchestrator
from knowledge.loaders import load_document

DAY = 86400.0
MOBILE = ["Is there a Lumenly mobile app for iOS or Android?", "do you have an iphone app"]
GRAPHQL = ["Do you have a GraphQL API?", "is there a graphql endpoint"]
STAFF_ANSWER = "Not yet: a mobile app is on our roadmap. Meanwhile the dashboard works in any mobile browser."


def cli_env(data_dir: Path) -> dict[str, str]:
    return {"SWITCHBOARD_DATA_DIR": str(data_dir), "LLM_PROVIDER": "offline", "CHROMA_HOST": "",
            "OPENAI_API_KEY": "", "OPENAI_BASE_URL": "", "EMBEDDING_PROVIDER": "local", "DATABASE_URL": ""}


async def seed(settings) -> None:
    """Six recent gaps in three topics plus one 👎, one old gap, an answered session and a handoff with notes."""
    now = time.time()
    store = SqliteSupportStore(settings.data_dir / "support.sqlite")
    try:
        for number, question in enumerate([*MOBILE, *GRAPHQL, "Does the dashboard have a dark mode?"]):
            await store.add_event(SupportEvent("slack", f"slack:T:C:{number}", "declined", question, "technical",
                                               "U1", 0.2, at=now - 3600 - number))
        await store.add_event(SupportEvent("slack", "slack:T:C:old", "declined", "Can I pay with a gift card?",
                                           "billing", "U1", 0.25, at=now - 10 * DAY))
        await store.add_event(SupportEvent("slack", "slack:T:C:fine", "answered", "What does Pro cost?", "billing",
                                           "U1", 0.7, at=now - 7200))
        key = "slack:T:C:handoff"
        ticket = {"session_key": key, "questions": ["mobile app for android?"], "agent": "technical",
                  "link": "https://x.slack.com/archives/C/p1"}
        await store.add_event(SupportEvent("slack", key, "declined", "mobile app for android?", "technical",
                                           "U1", 0.3, at=now - 600))
        assert await store.open_handoff(key, "slack", "U1", ticket) is not None
        await store.set_staff(key, {"platform": "slack", "channel": "C0STAFF001", "ts": "1.1"})
        await store.add_event(SupportEvent("slack", key, "handoff", "mobile app for android?", "technical", "U1",
                                           0.3, {"trigger": "button", "link": ticket["link"]}))
        await store.add_event(SupportEvent("slack", key, "note", "hello?", user="U1"))
        await store.add_event(SupportEvent("slack", key, "taken", user="U2", detail={"by": "Bob"}))
        await store.add_event(SupportEvent("slack", key, "note", STAFF_ANSWER, user="U2"))
    finally:
        await store.aclose()
    orchestrator = await build_orchestrator(settings)  # a real conversation, then a 👎 on its answer
    try:
        async for _ in orchestrator.respond("slack:T:C:down", "What does the Enterprise plan cost?"):
            pass
    finally:
        await orchestrator.aclose()
    record_feedback(settings.data_dir, frontend="slack", session_key="slack:T:C:down", vote="down", user="U3")


def test_gaps_groups_the_unanswered_questions_by_topic_largest_first(corpus_settings, tmp_path, monkeypatch) -> None:
    from switchboard.cli import app

    asyncio.run(seed(corpus_settings))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "gaps.csv"
    result = CliRunner().invoke(app, ["gaps", "--since", "7d", "--csv", str(out), "--json"],
                                env=cli_env(corpus_settings.data_dir))
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    topics = report["topics"]
    assert [t["count"] for t in topics] == [4, 2, 1, 1]
    mobile, graphql = topics[0], topics[1]
    assert set(mobile["questions"]) == {*MOBILE, "mobile app for android?"}
    assert mobile["kinds"] == {"declined": 3, "handoff": 1}
    assert mobile["example"]["link"] == "https://x.slack.com/archives/C/p1"
    assert set(graphql["questions"]) == set(GRAPHQL)
    down = next(t for t in topics if t["kinds"] == {"down": 1})
    assert down["questions"] == ["What does the Enterprise plan cost?"]  # from the voted conversation
    assert all("gift card" not in q for t in topics for q in t["questions"])  # older than 7 days
    assert report["outcomes"]["handed_off"] == 1 and report["outcomes"]["down"] == 1
    assert report["outcomes"]["answered"] == 1 and report["sessions"]["slack:T:C:handoff"] == "handed_off"
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 8 and rows[0]["topic_count"] == "4" and {r["kind"] for r in rows} == {
        "declined", "handoff", "down"}


def test_draft_article_writes_the_staffs_answer_and_is_never_ingested(corpus_settings, tmp_path, monkeypatch) -> None:
    from switchboard.cli import app

    asyncio.run(seed(corpus_settings))
    monkeypatch.chdir(tmp_path)
    drafts = tmp_path / "drafts"
    result = CliRunner().invoke(app, ["draft-article", "slack:T:C:handoff", "--out", str(drafts)],
                                env=cli_env(corpus_settings.data_dir))
    assert result.exit_code == 0, result.output
    [path] = drafts.iterdir()
    text = path.read_text(encoding="utf-8")
    assert STAFF_ANSWER in text and "hello?" not in text  # the staff's answer, not the user's messages
    front = text.split("---")[1]
    assert "agent: technical" in front and "question: mobile app for android?" in front and "ingest: false" in front
    assert load_document(path, drafts, ["technical"]) is None  # the loader leaves it out
    missing = CliRunner().invoke(app, ["draft-article", "slack:T:C:fine", "--out", str(drafts)],
                                 env=cli_env(corpus_settings.data_dir))
    assert missing.exit_code == 1 and "never handed to a person" in missing.output


def test_a_declined_session_nobody_followed_up_is_abandoned() -> None:
    declined = [SupportEvent("web", "k", "declined", "q", at=1000.0)]
    assert outcome_of(declined, None, [], now=1000.0 + 60) == "unanswered"
    assert outcome_of(declined, None, [], now=1000.0 + 3600) == "abandoned"
    assert outcome_of(declined, None, [{"vote": "up", "at": 1001.0}], now=5000.0) == "up"


async def check_store_guarantees(first, second) -> None:
    """Two stores over one database (two replicas): one open handoff, one winner per staff action."""
    key = f"k:{uuid.uuid4().hex[:8]}"
    opened = await asyncio.gather(first.open_handoff(key, "slack", "U1", {"q": 1}),
                                  second.open_handoff(key, "slack", "U1", {"q": 1}))
    assert sum(record is not None for record in opened) == 1
    await first.set_staff(key, {"channel": "C", "ts": "1"})
    assert (await second.get_handoff(key)).quiet  # the other replica sees the handoff at once
    taken = await asyncio.gather(first.transition(key, "taken", sources=("requested",), taken_by="Bob"),
                                 second.transition(key, "taken", sources=("requested",), taken_by="Eve"))
    assert sum(record is not None for record in taken) == 1
    back = await second.transition(key, "returned", sources=("requested", "taken"))
    assert back is not None and not back.quiet and not (await first.get_handoff(key)).quiet
    assert await first.open_handoff(key, "slack", "U1", {"q": 2}) is not None  # a new request reopens it


async def test_the_sqlite_store_keeps_one_open_handoff_across_processes(tmp_path) -> None:
    first, second = SqliteSupportStore(tmp_path / "s.sqlite"), SqliteSupportStore(tmp_path / "s.sqlite")
    try:
        await check_store_guarantees(first, second)
    finally:
        await first.aclose()
        await second.aclose()


async def test_the_postgres_store_is_shared_by_replicas(tmp_path) -> None:
    psycopg = pytest.importorskip("psycopg")
    server = os.environ.get("SWITCHBOARD_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test")
    try:
        with psycopg.connect(server, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"Postgres is not reachable at {server} ({type(exc).__name__}); start it to run this test")
    from urllib.parse import quote

    schema = f"sb_support_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = f"{server}?options={quote(f'-c search_path={schema}', safe='')}"
    from tests.conftest import make_settings

    first = support_store(make_settings(tmp_path, database_url=url))
    second = support_store(make_settings(tmp_path, database_url=url))
    assert isinstance(first, PostgresSupportStore)
    try:
        await check_store_guarantees(first, second)
        await first.add_event(SupportEvent("discord", "k", "declined", "q?", "billing", "U", 0.2))
        [event] = await second.events(session_key="k")
        assert (event.kind, event.text, event.confidence) == ("declined", "q?", 0.2)
    finally:
        await first.aclose()
        await second.aclose()
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_handoff_settings_are_checked_one_sentence_each(tmp_path) -> None:
    from bots.startup import validate_settings
    from tests.conftest import make_settings

    problems = validate_settings(make_settings(tmp_path, handoff_webhook_url="https://tickets.example/hook",
                                               slack_handoff_channel="#support", discord_handoff_channel=5))
    assert [p.message.split(" ")[0] for p in problems] == ["HANDOFF_WEBHOOK_URL", "SLACK_HANDOFF_CHANNEL",
                                                          "DISCORD_HANDOFF_CHANNEL"]
    assert all(p.fix for p in problems)

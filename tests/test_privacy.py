"""Issue 15, privacy: REDACT masks before anything stores, logs or sends a message; no log line carries message
text unless LOG_CONTENT=true; votes live in the support store (no unbounded feedback.jsonl); `forget --user`
erases a person on every platform."""

from __future__ import annotations

import json
import logging
import sqlite3

import pytest

from bots.feedback import FEEDBACK_FILE, SqliteFeedbackStore, feedback_store, read_feedback
from bots.support.store import SupportEvent, support_store
from core.events import Complete
from core.orchestrator import build_orchestrator
from core.redaction import CONTENT_LOGGERS, Redactor
from core.settings import Settings
from tests.conftest import make_settings
from tests.fakes.openai_server import FakeOpenAI

CARD = "4242 4242 4242 4242"
EMAIL = "jane.doe@example.com"
PHONE = "+1 (415) 555-0123"
# Token-shaped test values are assembled from parts, so no real-looking credential sits in the repository.
SECRET = "sk-" + "proj-" + "NOT-A-REAL-KEY-0000000000"
SLACK_TOKEN = "xox" + "b-0000000000-notarealtoken"


@pytest.mark.parametrize("kind,text,secret,mask", [
    ("cards", f"my card {CARD} was charged twice", CARD, "[card]"),
    ("cards", "card 5555-5555-5555-4444 declined", "5555-5555-5555-4444", "[card]"),
    ("emails", f"write to {EMAIL} please", EMAIL, "[email]"),
    ("phones", f"call me on {PHONE} or 415-555-0199", PHONE, "[phone]"),
    ("secrets", f"our key is {SECRET}, is that ok?", SECRET, "[secret]"),
    ("secrets", "password: hunter2hunter2 stopped working", "hunter2hunter2", "[secret]"),
    ("secrets", f"token {SLACK_TOKEN} fails", SLACK_TOKEN, "[secret]"),
])
def test_each_kind_is_masked(kind: str, text: str, secret: str, mask: str) -> None:
    masked = Redactor([kind])(text)
    assert secret not in masked and mask in masked
    assert Redactor([])(text) == text  # nothing configured, nothing changed


def test_what_is_not_personal_stays_readable() -> None:
    redact = Redactor(["cards", "emails", "phones", "secrets"])
    text = ("Order 1234567890123 (not a valid card number) on 2024-05-01, API v1.2.3 on port 8000: "
            "the token expires tomorrow.")
    assert redact(text) == text


def test_the_setting_defaults_to_cards_and_secrets_and_refuses_a_typo() -> None:
    assert make_settings(__import__("pathlib").Path("/tmp/x")).redact == ["cards", "secrets"]
    assert Settings(_env_file=None, redact="emails, phones").redact == ["emails", "phones"]
    with pytest.raises(ValueError, match="unknown kind"):
        Settings(_env_file=None, redact="cards,emials")


@pytest.fixture
def restore_loggers():
    yield
    for name in CONTENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)


async def _answer(settings, question: str, user: str = "U1", key: str = "redact:1") -> list:
    orchestrator = await build_orchestrator(settings)
    try:
        return [event async for event in orchestrator.respond(key, question, user=user)]
    finally:
        await orchestrator.aclose()


async def test_masked_before_the_model_the_checkpoint_and_the_logs(corpus_settings, caplog,
                                                                   restore_loggers) -> None:
    """The real OpenAI client against the fake server: the request body, the stored conversation (raw bytes of
    the SQLite file) and every log record (DEBUG, the OpenAI client's and aiosqlite's included) carry only the
    masks, and no message text at all while LOG_CONTENT is false."""
    question = f"My card {CARD} and {EMAIL} / {PHONE} with key {SECRET}: why was I charged twice?"
    async with FakeOpenAI() as fake:
        settings = make_settings(corpus_settings.data_dir, llm_provider="openai", openai_base_url=fake.base_url,
                                 openai_api_key="sk-test", llm_timeout_s=5, redact="cards,emails,phones,secrets")
        orchestrator = await build_orchestrator(settings)
        try:
            with caplog.at_level(logging.DEBUG):
                events = [e async for e in orchestrator.respond("redact:1", question, user="U1")]
            assert isinstance(events[-1], Complete)
            sent = json.dumps([request.body for request in fake.chat_requests])
            for original, mask in ((CARD, "[card]"), (EMAIL, "[email]"), (PHONE, "[phone]"), (SECRET, "[secret]")):
                assert original not in sent and mask in sent
            stored = b"".join(path.read_bytes() for path in settings.data_dir.glob("checkpoints.sqlite*"))
            # the card's own digit groups, not any "4242": random hex ids in a checkpoint hold that now and then
            for form in (CARD, CARD.replace(" ", ""), "4242 4242"):
                assert form.encode() not in stored
            assert b"[card]" in stored and EMAIL.encode() not in stored
            leaks = {(r.name, r.getMessage()[:300]) for r in caplog.records if CARD in r.getMessage() or "charged twice" in r.getMessage()}
            assert not leaks  # LOG_CONTENT=false: no text at all

            # the counterpart, proving the check above can fail: without the guard (as with LOG_CONTENT=true)
            # the libraries' DEBUG request logs carry the (still masked) question
            caplog.clear()
            for name in CONTENT_LOGGERS:
                logging.getLogger(name).setLevel(logging.NOTSET)
            with caplog.at_level(logging.DEBUG):
                [e async for e in orchestrator.respond("redact:2", "Why was I charged twice?", user="U1")]
            assert "charged twice" in "\n".join(record.getMessage() for record in caplog.records)
        finally:
            await orchestrator.aclose()


def test_log_content_true_leaves_the_loggers_alone(restore_loggers) -> None:
    from core.redaction import guard_log_content

    logging.getLogger("openai").setLevel(logging.DEBUG)
    guard_log_content(make_settings(__import__("pathlib").Path("/tmp/x"), log_content=True))
    assert logging.getLogger("openai").level == logging.DEBUG
    guard_log_content(make_settings(__import__("pathlib").Path("/tmp/x")))
    assert logging.getLogger("openai").level == logging.INFO


# --- votes: one store, bounded ----------------------------------------------------------------------------------

async def test_votes_go_to_the_support_database_not_a_file(tmp_path) -> None:
    settings = make_settings(tmp_path)
    store = feedback_store(settings)
    assert isinstance(store, SqliteFeedbackStore)
    await store.record(frontend="slack", session_key="slack:T:C:1", vote="up", user="U1")
    assert not (tmp_path / FEEDBACK_FILE).exists()
    with sqlite3.connect(tmp_path / "support.sqlite") as db:
        assert db.execute("SELECT session_key, vote, user_id FROM switchboard_feedback").fetchall() == [
            ("slack:T:C:1", "up", "U1")]
    assert [row["vote"] for row in await store.read()] == ["up"]


async def test_an_old_feedback_file_is_moved_into_the_store_once(tmp_path) -> None:
    rows = [{"at": 1.0, "frontend": "web", "session_key": "web:a", "vote": "down", "user": "1.2.3.4",
             "message": None}]
    (tmp_path / FEEDBACK_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert read_feedback(tmp_path) == rows
    assert not (tmp_path / FEEDBACK_FILE).exists()  # personal data no longer in an unbounded file
    assert read_feedback(tmp_path) == rows


# --- erasure ----------------------------------------------------------------------------------------------------

async def test_forget_erases_a_person_on_every_platform(corpus_settings) -> None:
    from switchboard.privacy_cli import forget_everything

    orchestrator = await build_orchestrator(corpus_settings)
    support = support_store(corpus_settings)
    votes = feedback_store(corpus_settings)
    try:
        for key, user in {"slack:T1:C1:1.0": "U1", "discord:dm:55": "U1", "web:abc": "U2"}.items():
            events = [e async for e in orchestrator.respond(key, "Do you comply with GDPR?", user=user)]
            assert isinstance(events[-1], Complete)
            await support.add_event(SupportEvent(key.split(":")[0], key, "answered", "Do you comply?", user=user))
        await votes.record(frontend="discord", session_key="discord:dm:55", vote="down", user="U1")
        await votes.record(frontend="web", session_key="web:abc", vote="up", user="U2")

        removed = await forget_everything(corpus_settings, orchestrator.checkpointer, "U1")
        assert (removed.conversations, removed.support_rows, removed.votes) == (2, 2, 1)
        assert await orchestrator.session_info("slack:T1:C1:1.0") is None
        assert await orchestrator.session_info("discord:dm:55") is None
        assert (await orchestrator.session_info("web:abc")).turns == 1
        assert await orchestrator.ledger.sessions_of("U1") == []
        assert [e.session_key for e in await support.events()] == ["web:abc"]
        assert [row["user"] for row in await votes.read()] == ["U2"]
    finally:
        await support.aclose()
        await orchestrator.aclose()


async def test_forget_and_prune_clear_the_dashboard_turn_records(corpus_settings) -> None:
    """The admin dashboard keeps each turn's question and answer: `forget --user` deletes the person's rows,
    `prune` the expired ones, like every other store."""
    import time

    from core.turn_records import Query, TurnRecord, turn_store
    from switchboard.privacy_cli import forget_everything, prune_everything

    orchestrator = await build_orchestrator(corpus_settings)
    store = turn_store(corpus_settings)
    try:
        for key, user in {"slack:T1:C1:1.0": "U1", "web:abc": "U2"}.items():
            [e async for e in orchestrator.respond(key, "Do you comply with GDPR?", user=user)]
            await store.add(TurnRecord("slack" if key.startswith("slack") else "web", key,
                                       question="Do you comply with GDPR?", answer="Yes."))
        old = time.time() - (corpus_settings.retention_days + 1) * 86400
        await store.add(TurnRecord("web", "web:old", question="an old question", at=old))

        removed = await forget_everything(corpus_settings, orchestrator.checkpointer, "U1")
        assert removed.turn_records == 1 and "1 dashboard turn record(s)" in removed.sentence()
        assert sorted(r.session_key for r in await store.turns(Query())) == ["web:abc", "web:old"]

        removed = await prune_everything(corpus_settings, orchestrator.checkpointer)
        assert removed.turn_records == 1
        assert [r.session_key for r in await store.turns(Query())] == ["web:abc"]
    finally:
        await store.aclose()
        await orchestrator.aclose()


async def test_the_support_log_keeps_masked_text(tmp_path) -> None:
    """A note (a message posted in a handed-off thread) is stored as the core stores questions: masked."""
    store = support_store(make_settings(tmp_path))
    try:
        await store.add_event(SupportEvent("slack", "slack:T:C:1", "note", f"my card is {CARD}", user="U1"))
        [event] = await store.events()
    finally:
        await store.aclose()
    assert event.text == "my card is [card]"


def test_forget_and_prune_commands(corpus_settings, monkeypatch) -> None:
    """The CLI: `switchboard prune` and `switchboard forget --user U9 --yes` say what they deleted."""
    import asyncio

    from typer.testing import CliRunner

    from core.checkpoints import open_checkpointer
    from core.interrupted import TurnLedger
    from switchboard.cli import app

    async def asked() -> None:  # a conversation U9 asked in, as the ledger records it
        checkpointer, close = await open_checkpointer(corpus_settings)
        try:
            await TurnLedger(checkpointer).begin("slack:T:C:9.0", "Do you comply with GDPR?", "U9", 100)
        finally:
            await close()

    asyncio.run(asked())
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(corpus_settings.data_dir))
    monkeypatch.setenv("LLM_PROVIDER", "offline")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    runner = CliRunner()
    result = runner.invoke(app, ["prune"])
    assert result.exit_code == 0, result.output
    assert "Deleted 0 conversation(s)" in result.output  # the conversation is recent
    result = runner.invoke(app, ["forget", "--user", "U9", "--yes"])
    assert result.exit_code == 0, result.output
    assert "Deleted 1 conversation(s)" in result.output
    result = runner.invoke(app, ["forget", "--user", "U9", "--yes"])
    assert "Deleted 0 conversation(s)" in result.output

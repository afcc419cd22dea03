"""The operator's dashboard (/admin, bots/web/admin.py) and the turn records it reads (core/turn_records.py).

Plain HTTP for the switch and the auth (404 without ADMIN_TOKEN, 401 without or with a wrong token, Bearer or the
login form's signed cookie); headless Chromium (as the chat page's test) on a seeded store for the page itself:
charts drawn, the transcript search, the conversation page, and no request leaving the server's origin.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from bots.feedback import record_feedback
from bots.web.admin import COOKIE, attach_votes, cookie_valid, percentile, session_cookie
from bots.web.server import create_app
from core.orchestrator import build_orchestrator
from core.turn_records import Query, TurnRecord, turn_store, turn_store_of
from knowledge.sources.state import SourceState, StateStore
from tests.conftest import ROOT, make_settings
from tests.test_browser import Browser, browser, new_page  # noqa: F401 - `browser` is the module fixture

TOKEN = "admin-test-token-4f9c2e"
ARTIFACTS = ROOT / "test-artifacts"
DAY = 86400.0
SEEDED = [  # (days ago, platform, agent, question, first token ms, declined, handed off)
    (0, "slack", "billing", "Can I pay the Enterprise plan by invoice?", 800, False, False),
    (0, "discord", "technical", "How do I rotate an API key?", 1200, False, False),
    (1, "web", "policy", "Do you comply with GDPR?", 650, False, False),
    (1, "slack", "billing", "Why was my card charged twice?", 2400, True, False),
    (2, "discord", "technical", "The SDK times out behind our proxy", 3100, False, True),
    (3, "web", "billing", "Is there a discount for nonprofits?", 900, False, False),
    (5, "slack", "policy", "Where is our data stored?", 700, False, False),
]


@contextlib.asynccontextmanager
async def served(settings: Any) -> AsyncIterator[tuple[TestServer, Any]]:
    orchestrator = await build_orchestrator(settings)
    server = TestServer(create_app(orchestrator))
    try:
        await server.start_server()
        yield server, orchestrator
    finally:
        await server.close()
        await orchestrator.aclose()


async def seed(settings: Any) -> list[TurnRecord]:
    """Turn records over a week, votes on two of them, and a synced source whose last sync failed."""
    now = time.time()
    store = turn_store(settings)
    records = []
    for ago, platform, agent, question, first_ms, declined, handed in SEEDED:
        record = TurnRecord(platform=platform, session_key=f"{platform}:seed:{uuid.uuid4().hex[:8]}", agent=agent,
                            question=question, answer=f"An answer about {question.lower()}", confidence=0.5,
                            first_token_ms=first_ms, total_ms=first_ms + 1500, declined=declined,
                            handed_off=handed, at=now - ago * DAY - 60)
        await store.add(record)
        records.append(record)
    await store.aclose()
    record_feedback(settings.data_dir, frontend="slack", session_key=records[0].session_key, vote="up")
    record_feedback(settings.data_dir, frontend="slack", session_key=records[3].session_key, vote="down")
    StateStore(settings.sources_state_dir).save(SourceState(
        "help-center", kind="zendesk", documents=12, last_success=now - DAY, last_error="HTTP 503 from the API",
        failures=2))
    return records


# --- the switch and the auth, over plain HTTP --------------------------------------------------------------------

async def test_admin_is_off_without_a_token_and_needs_it_as_bearer_or_signed_cookie(corpus_settings, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    settings = make_settings(corpus_settings.data_dir, admin_token=TOKEN, web_rate_limit="5/minute")
    await seed(settings)
    async with served(settings) as (server, orchestrator), ClientSession() as http:
        # Without ADMIN_TOKEN the routes do not exist (an app built over the same core with the setting blank).
        orchestrator.settings = settings.model_copy(update={"admin_token": None})
        off = TestServer(create_app(orchestrator))
        await off.start_server()
        try:
            for method, path in (("GET", "/admin"), ("POST", "/admin/login"), ("GET", "/admin/conversation")):
                async with http.request(method, off.make_url(path)) as response:
                    assert response.status == 404, path
        finally:
            await off.close()
            orchestrator.settings = settings

        url = server.make_url("/admin")
        async with http.get(url) as response:  # no token: the sign-in form, 401
            assert response.status == 401 and 'name="token"' in await response.text()
            assert response.headers["Cache-Control"] == "no-store"
        async with http.get(url, headers={"Authorization": "Bearer wrong-token"}) as response:
            assert response.status == 401
        async with http.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            assert response.status == 200
            page = await response.text()
            assert page.count("<svg") >= 4 and "Can I pay the Enterprise plan by invoice?" in page
            assert "help-center" in page and "HTTP 503 from the API" in page  # the failing source, with its error
            assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]

        async with http.post(server.make_url("/admin/login"), data={"token": "nope"},
                             allow_redirects=False) as response:
            assert response.status == 401 and 'id="wrong"' in await response.text()
            assert COOKIE not in response.cookies
        async with http.post(server.make_url("/admin/login"), data={"token": TOKEN},
                             allow_redirects=False) as response:
            assert response.status == 303 and response.headers["Location"] == "/admin"
            set_cookie = response.headers["Set-Cookie"]
            assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Path=/admin" in set_cookie
            cookie = response.cookies[COOKIE].value
        assert TOKEN not in cookie and cookie_valid(cookie, TOKEN)
        async with http.get(url, headers={"Cookie": f"{COOKIE}={cookie}"}) as response:
            assert response.status == 200 and "Latest conversations" in await response.text()
        expires, _, signature = cookie.partition(".")
        for forged in (f"{int(expires) + 3600}.{signature}", f"{expires}.{'0' * 64}", session_cookie("other-token")):
            async with http.get(url, headers={"Cookie": f"{COOKIE}={forged}"}) as response:
                assert response.status == 401, forged
        # Sign-ins count against the client's WEB_RATE_LIMIT (5/minute here; two were used above): guessing is slow.
        statuses = []
        for _ in range(4):
            async with http.post(server.make_url("/admin/login"), data={"token": "guess"},
                                 allow_redirects=False) as response:
                statuses.append(response.status)
        assert statuses == [401, 401, 401, 429]
    assert not cookie_valid(session_cookie(TOKEN, now=time.time() - 13 * 3600), TOKEN)  # expired
    assert TOKEN not in caplog.text  # never logged, not even on a wrong sign-in



# --- the data ------------------------------------------------------------------------------------------------------

def test_votes_go_to_the_turn_they_were_cast_under_and_percentiles() -> None:
    first = TurnRecord("slack", "s1", question="a", at=100.0)
    second = TurnRecord("slack", "s1", question="b", at=200.0)
    other = TurnRecord("web", "s2", question="c", at=150.0)
    votes = attach_votes([first, second, other], [
        {"session_key": "s1", "vote": "down", "at": 150.0}, {"session_key": "s1", "vote": "up", "at": 250.0},
        {"session_key": "gone", "vote": "up", "at": 1.0}])
    assert votes == {first.turn_id: "down", second.turn_id: "up"}
    assert percentile([], 0.5) is None and percentile([5.0], 0.95) == 5.0
    assert percentile([float(i) for i in range(1, 101)], 0.5) == 50.0
    assert percentile([float(i) for i in range(1, 101)], 0.95) == 95.0


async def test_turn_records_are_searchable_and_pruned_after_retention(tmp_path) -> None:
    store = turn_store(make_settings(tmp_path, retention_days=30))
    now = time.time()
    old = TurnRecord("slack", "slack:old", question="an old question about invoices", at=now - 31 * DAY)
    new = TurnRecord("web", "web:new", question="How do I pay by INVOICE?", answer="By bank transfer 100%_sure",
                     at=now)
    try:
        await store.add(new)  # the first write prunes; the next ones only once an hour
        await store.add(old)
        assert {t.turn_id for t in await store.turns(Query(text="invoice"))} == {old.turn_id, new.turn_id}
        assert [t.turn_id for t in await store.turns(Query(text="bank 100%_"))] == [new.turn_id]
        assert await store.turns(Query(text="100%x")) == []  # % and _ are literal, not wildcards
        assert await store.prune(now) == 1
        [kept] = await store.turns(Query(platform="web"))
        assert kept.question == new.question and kept.at == pytest.approx(now)
        assert await store.forget(["web:new", "web:unknown"]) == 1 and await store.turns() == []
    finally:
        await store.aclose()


async def test_turn_records_in_postgres(tmp_path) -> None:
    server = os.environ.get("SWITCHBOARD_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test")
    store = turn_store(make_settings(tmp_path, database_url=server))
    key = f"web:pg-{uuid.uuid4().hex}"
    try:
        try:
            await store.setup()
        except Exception as exc:  # noqa: BLE001
            pytest.skip(f"Postgres at {server} is not usable here: {exc}")
        record = TurnRecord("web", key, agent="billing", question="Card declined 50% of the time?",
                            first_token_ms=420.0, declined=True)
        await store.add(record)
        await store.add(record)  # written twice (a retry): one row
        [found] = await store.turns(Query(session_key=key, text="50%"))
        assert found.turn_id == record.turn_id and found.declined and found.first_token_ms == 420.0
    finally:
        await store.aclose()


async def test_stored_question_text_is_masked_like_everything_stored(tmp_path) -> None:
    store = turn_store(make_settings(tmp_path))
    try:
        await store.add(TurnRecord("web", "web:x", question="my card is 4111 1111 1111 1111, why declined?"))
        [found] = await store.turns()
        assert "4111 1111 1111 1111" not in found.question and "why declined" in found.question
    finally:
        await store.aclose()


# --- the page in Chromium --------------------------------------------------------------------------------------------

async def test_dashboard_in_chromium_on_a_seeded_store(browser: Browser, corpus_settings) -> None:  # noqa: F811
    settings = make_settings(corpus_settings.data_dir, admin_token=TOKEN)
    await seed(settings)
    async with served(settings) as (server, orchestrator), new_page(browser) as page:
        # A real turn on the web, so a transcript exists to open.
        async with ClientSession() as http, http.post(server.make_url("/chat"), json={
                "message": "What does the Enterprise plan cost?", "session_id": "admin-live"}) as response:
            assert "event: complete" in await response.text()
        store = turn_store_of(orchestrator)
        assert store is not None
        await store.drain()

        await page.send("Network.enable")
        origin = str(server.make_url("/")).rstrip("/")
        await page.goto(f"{origin}/admin")
        assert await page.evaluate("!!document.getElementById('token')")  # the sign-in form
        await page.evaluate("document.getElementById('token').focus()")
        await page.send("Input.insertText", text=TOKEN)
        await page.evaluate("document.getElementById('sign-in').click()")
        await page.wait_for("location.pathname === '/admin' && !!document.getElementById('turns')")

        drawn = await page.evaluate("""(() => ({
            charts: document.querySelectorAll('svg.chart').length,
            bars: document.querySelectorAll('svg.chart rect.bar').length,
            lines: document.querySelectorAll('svg.chart polyline.line').length,
            rows: document.querySelectorAll('#turns tr.turn').length,
            totals: document.getElementById('totals').textContent,
            sources: document.getElementById('sources').textContent,
        }))()""")
        assert drawn["charts"] >= 4 and drawn["bars"] >= 2 * len(SEEDED) and drawn["lines"] >= 1, drawn
        assert drawn["rows"] == len(SEEDED) + 1 and "8 questions" in drawn["totals"], drawn
        assert "votes: 1 up, 1 down" in drawn["totals"]
        assert "help-center" in drawn["sources"] and "HTTP 503" in drawn["sources"]
        ARTIFACTS.mkdir(exist_ok=True)
        shot = await page.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        (ARTIFACTS / "admin.png").write_bytes(base64.b64decode(shot["data"]))

        # The search finds a seeded question, and only the turns that match.
        await page.evaluate("document.getElementById('q').focus()")
        await page.send("Input.insertText", text="nonprofits")
        await page.evaluate("document.getElementById('apply').click()")
        await page.wait_for("location.search.includes('q=nonprofits')")
        await page.wait_for("document.readyState === 'complete'")
        found = await page.evaluate("[...document.querySelectorAll('#turns tr.turn .question')].map(n => n.textContent)")
        assert found == ["Is there a discount for nonprofits?"]

        # Filters: the 👎 turn; platform and agent together.
        await page.goto(f"{origin}/admin?vote=down")
        assert await page.evaluate("[...document.querySelectorAll('#turns .question')].map(n => n.textContent)") \
            == ["Why was my card charged twice?"]
        await page.goto(f"{origin}/admin?platform=discord&agent=technical")
        assert len(await page.evaluate("[...document.querySelectorAll('#turns tr.turn')]")) == 2

        # The live conversation's transcript, from the dashboard's link.
        await page.goto(f"{origin}/admin?platform=web&q=Enterprise")
        await page.evaluate("document.querySelector('#turns .question a').click()")
        await page.wait_for("location.pathname === '/admin/conversation' && !!document.getElementById('transcript')")
        transcript = await page.evaluate("document.getElementById('transcript').textContent")
        assert "What does the Enterprise plan cost?" in transcript and "billing" in transcript

        requests = [e["params"]["request"]["url"] for e in page.events
                    if e.get("method") == "Network.requestWillBeSent"]
        assert requests and all(url.startswith(origin) for url in requests), requests  # nothing external
        assert any(url.endswith("/static/admin.css") for url in requests)
        assert page.exceptions() == []
        assert json.dumps(requests).count(TOKEN) == 0

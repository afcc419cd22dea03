"""The HTTP API end to end over real sockets: SSE order, sessions, bad input, health, CORS, shutdown."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer

from bots.web.server import create_app
from core.orchestrator import build_orchestrator
from tests.conftest import make_settings
from tests.fakes.openai_server import FakeOpenAI

FOUR = [
    ("What does the Enterprise plan cost?", "billing"),
    ("Can I upgrade from the Basic plan?", "billing"),
    ("My API integration keeps timing out. How do I fix this?", "technical"),
    ("Do you comply with GDPR?", "policy"),
]


def parse_sse(raw: str) -> list[tuple[str, dict]]:
    events = []
    for frame in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
        events.append((lines["event"], json.loads(lines["data"])))
    return events


@pytest.fixture
async def client(corpus_settings):
    orchestrator = await build_orchestrator(corpus_settings)
    async with TestClient(TestServer(create_app(orchestrator))) as test_client:
        yield test_client
    await orchestrator.aclose()


async def ask(client, message: str, **extra) -> tuple[int, list[tuple[str, dict]], dict]:
    response = await client.post("/chat", json={"message": message, **extra})
    text = await response.text()
    if response.status != 200:
        return response.status, [], json.loads(text)
    return 200, parse_sse(text), dict(response.headers)


def assert_order(events: list[tuple[str, dict]], agent: str) -> None:
    types = [t for t, _ in events]
    assert types[0] == "start" and types[1] == "agent" and types[-1] == "complete"
    assert set(types[2:-1]) <= {"token", "sources"} and types.count("token") > 3
    assert types.index("sources") > max(i for i, t in enumerate(types) if t == "token")
    assert events[1][1]["name"] == agent
    tokens = "".join(d["text"] for t, d in events if t == "token")
    assert events[-1][1]["text"] == tokens


@pytest.mark.parametrize("question,agent", FOUR)
async def test_sse_order_and_contents_offline(client, question, agent) -> None:
    status, events, headers = await ask(client, question)
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    assert headers["Cache-Control"] == "no-cache" and headers["X-Accel-Buffering"] == "no"
    assert_order(events, agent)
    assert events[0][1]["session_id"]


@pytest.mark.parametrize("question,agent", FOUR)
async def test_sse_against_the_fake_llm(corpus_settings, question, agent) -> None:
    async with FakeOpenAI() as fake:  # as fast as it can: every token its own frame only without batching
        settings = make_settings(corpus_settings.data_dir, llm_provider="openai", openai_base_url=fake.base_url,
                                 openai_api_key="sk-test", stream_batch_ms=0)
        orchestrator = await build_orchestrator(settings)
        try:
            async with TestClient(TestServer(create_app(orchestrator))) as test_client:
                status, events, _ = await ask(test_client, question)
        finally:
            await orchestrator.aclose()
    assert status == 200
    assert_order(events, agent)
    assert "Here is what I found" in events[-1][1]["text"]


async def test_sessions_endpoints(client) -> None:
    _, events, _ = await ask(client, "Do you comply with GDPR?", session_id="abc-1")
    assert events[0][1]["session_id"] == "abc-1"
    mine = {"X-Session-Secret": events[0][1]["session_secret"]}  # sessions belong to their creator (issue 15)
    await ask(client, "And how long do you keep backups?", session_id="abc-1",
              session_secret=mine["X-Session-Secret"])
    info = await (await client.get("/sessions/abc-1", headers=mine)).json()
    assert info["turns"] == 2 and info["agents"] == ["policy"] and info["created_at"] <= info["updated_at"]
    assert (await client.delete("/sessions/abc-1", headers=mine)).status == 204
    missing = await client.get("/sessions/abc-1", headers=mine)
    assert missing.status == 404 and "No session" in (await missing.json())["error"]
    assert (await client.delete("/sessions/nope")).status == 404


async def test_bad_input_gets_json_errors_with_the_right_status(client) -> None:
    assert (await ask(client, ""))[0] == 422
    status, _, body = await ask(client, "   \n\t ")
    assert status == 422 and "empty" in body["error"]
    status, _, body = await ask(client, "x" * 5000)
    assert status == 413 and "5,000" in body["error"]
    bad = await client.post("/chat", data="{not json", headers={"Content-Type": "application/json"})
    assert bad.status == 400 and "not valid JSON" in (await bad.json())["error"]
    wrong = await client.post("/chat", json=["a list"])
    assert wrong.status == 400
    odd = await client.post("/chat", json={"message": "hi", "session_id": "../etc/passwd"})
    assert odd.status == 422


async def test_odd_unicode_is_answered(client) -> None:
    status, events, _ = await ask(client, "ＧＤＰＲ？ Do you comply with GDPR? 🇪🇺\u200b")
    assert status == 200 and events[-1][0] == "complete"


async def test_root_negotiates_html_or_json_and_docs_work_offline(client) -> None:
    page = await client.get("/", headers={"Accept": "text/html"})
    assert page.status == 200 and "<textarea" in await page.text()
    info = await (await client.get("/", headers={"Accept": "application/json"})).json()
    assert info["name"] == "Switchboard" and info["links"]["docs"] == "/docs"
    docs = await (await client.get("/docs")).text()
    assert "/openapi.json" in docs and "cdn" not in docs.lower() and "https://" not in docs
    spec = await (await client.get("/openapi.json")).json()
    assert "/chat" in spec["paths"] and "413" in spec["paths"]["/chat"]["post"]["responses"]


async def test_health_and_metrics(client) -> None:
    await ask(client, "Do you comply with GDPR?")
    health = await client.get("/health")
    body = await health.json()
    assert health.status == 200 and body["status"] == "ok" and body["checks"]["llm"]["mode"] == "offline"
    text = await (await client.get("/metrics")).text()
    assert 'switchboard_replies_total{agent="policy",frontend="web"}' in text
    assert "switchboard_first_token_seconds" in text


async def test_health_is_degraded_not_down_while_a_knowledge_source_fails(client) -> None:
    """A source whose last sync failed (as `switchboard sync` records it) keeps its documents: the bot answers, so
    /health says degraded with 200 and names the source, then ok again once a sync succeeds."""
    from bots.web.server import ORCHESTRATOR
    from knowledge.sources.state import SourceState, StateStore

    states = StateStore(client.server.app[ORCHESTRATOR].settings.sources_state_dir)
    states.save(SourceState("help-site", kind="website", last_error="robots.txt answered 503", failures=2))
    states.save(SourceState("handbook", kind="confluence", last_success=1.0))
    response = await client.get("/health")
    body = await response.json()
    assert response.status == 200 and body["status"] == "degraded" and body["degraded"] == ["source help-site"]
    states.save(SourceState("help-site", kind="website", last_success=2.0))
    body = await (await client.get("/health")).json()
    assert body["status"] == "ok" and body["degraded"] == []


async def test_health_is_503_naming_the_store_when_it_breaks(client) -> None:
    from bots.web.server import ORCHESTRATOR

    orchestrator = client.server.app[ORCHESTRATOR]
    knowledge = orchestrator.brain.knowledge

    def broken() -> dict:
        raise OSError("disk gone")

    original = knowledge.counts
    knowledge.counts = broken
    try:
        response = await client.get("/health")
        body = await response.json()
    finally:
        knowledge.counts = original
    assert response.status == 503 and body["failing"] == ["store"]
    assert "cannot be read" in body["checks"]["store"]["error"]


async def test_cors_allows_configured_origins_only(client) -> None:
    allowed = await client.get("/health", headers={"Origin": "http://localhost"})
    assert allowed.headers.get("Access-Control-Allow-Origin") == "http://localhost"
    denied = await client.get("/health", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in denied.headers


async def test_shutdown_mid_stream_sends_an_interrupted_event(corpus_settings) -> None:
    async with FakeOpenAI(tokens_per_s=5) as fake:
        settings = make_settings(corpus_settings.data_dir, llm_provider="openai", openai_base_url=fake.base_url,
                                 openai_api_key="sk-test")
        orchestrator = await build_orchestrator(settings)
        try:
            server = TestServer(create_app(orchestrator))
            await server.start_server()
            frames: list[str] = []
            closing = None
            async with ClientSession() as session:
                async with session.post(server.make_url("/chat"), json={"message": "How do API timeouts work?"}
                                        ) as resp:
                    try:
                        async for line in resp.content:
                            frames.append(line.decode())
                            if line.startswith(b"event: token") and closing is None:
                                closing = asyncio.create_task(server.close())
                    except Exception:  # noqa: BLE001 - the server may cut the connection after the last frame
                        pass
            assert closing is not None, "".join(frames)
            await closing
        finally:
            await orchestrator.aclose()
    raw = "".join(frames)
    assert "event: token" in raw and "interrupted" in raw


async def test_a_retried_message_with_the_same_id_is_answered_once(client) -> None:
    body = {"message": "How much is the Pro plan?", "session_id": "retry-1", "message_id": "m-1"}
    first = await client.post("/chat", json=body)
    text = await first.text()
    assert first.status == 200 and "event: complete" in text
    secret = json.loads(text.split("data: ", 1)[1].split("\n", 1)[0])["session_secret"]  # issue 15: the owner's
    body["session_secret"] = secret
    again = await client.post("/chat", json=body)
    assert again.status == 409 and "already received" in (await again.json())["error"]
    other = await client.post("/chat", json={**body, "message_id": "m-2"})
    assert other.status == 200 and "event: complete" in await other.text()
    info = await (await client.get("/sessions/retry-1", headers={"X-Session-Secret": secret})).json()
    assert info["turns"] == 2  # the retry added no turn
    bad = await client.post("/chat", json={**body, "message_id": "has spaces"})
    assert bad.status == 422


async def test_the_last_frames_go_out_with_the_end_of_the_body_in_one_write(corpus_settings, monkeypatch) -> None:
    """Sources, then complete, then the end of the chunked body: one write (one `send`), not three; the client
    still reads them in order."""
    from aiohttp import web

    writes: list[bytes] = []
    ends: list[bytes] = []
    write, write_eof = web.StreamResponse.write, web.StreamResponse.write_eof

    async def recorded_write(self, data):
        writes.append(bytes(data))
        return await write(self, data)

    async def recorded_eof(self, data=b""):
        ends.append(bytes(data))
        return await write_eof(self, data)

    monkeypatch.setattr(web.StreamResponse, "write", recorded_write)
    monkeypatch.setattr(web.StreamResponse, "write_eof", recorded_eof)
    async with FakeOpenAI() as fake:
        settings = make_settings(corpus_settings.data_dir, llm_provider="openai", openai_base_url=fake.base_url,
                                 openai_api_key="sk-test", stream_batch_ms=0)
        orchestrator = await build_orchestrator(settings)
        try:
            async with TestClient(TestServer(create_app(orchestrator))) as test_client:
                status, events, _ = await ask(test_client, "What does the Enterprise plan cost?")
        finally:
            await orchestrator.aclose()
    assert status == 200
    assert_order(events, "billing")
    assert [name for name, _ in events][-2:] == ["sources", "complete"]
    last = [end for end in ends if end]
    assert len(last) == 1 and last[0].startswith(b"event: sources\n") and b"event: complete\n" in last[0]
    assert not any(b"event: complete" in data or b"event: sources" in data for data in writes)

"""Issue 15, the web API's part, over real sockets (the real app on loopback, the fake OpenAI server for the model):

- every malformed request is a JSON error with its documented status: unknown charset (415), 100k-deep nesting
  and a 5,000-digit number (400), an oversized body (413, not aiohttp's text), text/plain and form bodies (415),
  "abc\\n" as session id (422), unknown paths (404) and methods (405, with Allow);
- a lone surrogate in the model's output: every byte of the stream is UTF-8 and it ends with its final frame; a
  failure below the web layer after the stream started ends it with an `error` frame; closing a heartbeat stream
  closes the core's events (what releases a session's lock when a client goes away);
- CORS on the SSE response for a configured origin, and for no other (preflight too);
- per-client request rate (429 + Retry-After), one client's stream cap not touching another client (a second
  loopback address, 127.0.0.2, is another client), the global answer cap with its short queue (503 + Retry-After),
  and `: keep-alive` heartbeats before the first token and between tokens of a slow model.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import ClientSession, TCPConnector
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from bots.web.limits import client_id
from bots.web.server import create_app
from core.orchestrator import build_orchestrator
from tests.conftest import make_settings
from tests.fakes.openai_server import (
    FakeOpenAI,
    Reply,
    default_responder,
    requested_schema,
)

QUESTION = "What does the Enterprise plan cost?"
JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def client(corpus_settings):
    settings = corpus_settings.model_copy(update={"web_rate_limit": "3/minute"})
    orchestrator = await build_orchestrator(settings)
    async with TestClient(TestServer(create_app(orchestrator))) as test_client:
        yield test_client
    await orchestrator.aclose()


async def json_error_of(response: Any) -> dict[str, Any]:
    """The body, asserting the promise: JSON with an `error` sentence."""
    assert response.content_type == "application/json", (response.status, await response.text())
    body = await response.json()
    assert isinstance(body["error"], str) and body["error"]
    return body


async def test_malformed_requests_get_json_errors(corpus_settings) -> None:
    orchestrator = await build_orchestrator(corpus_settings)
    cases: list[tuple[str, bytes, str, int]] = [
        ("unknown charset", b'{"message": "hi"}', "application/json; charset=x-klingon", 415),
        ("bytes codec as charset", b'{"message": "hi"}', "application/json; charset=base64", 415),
        ("deep nesting", b"[" * 100_000 + b"]" * 100_000, "application/json", 400),
        ("5,000 digits", b'{"message": "hi", "n": ' + b"9" * 5000 + b"}", "application/json", 400),
        ("not UTF-8", b'{"message": "\xff\xfe"}', "application/json", 400),
        ("oversized", b'{"message": "' + b"x" * (2 * 1024**2) + b'"}', "application/json", 413),
        ("text/plain", b'{"message": "hi"}', "text/plain", 415),
        ("form", b"message=hi", "application/x-www-form-urlencoded", 415),
        ("session id with a newline", b'{"message": "hi", "session_id": "abc\\n"}', "application/json", 422),
        ("message id with a newline", b'{"message": "hi", "message_id": "m-1\\n"}', "application/json", 422),
    ]
    try:
        async with TestClient(TestServer(create_app(orchestrator))) as test_client:
            for name, body, content_type, status in cases:
                response = await test_client.post("/chat", data=body, headers={"Content-Type": content_type})
                assert response.status == status, name
                await json_error_of(response)
            handoff = await test_client.post("/handoff", data=b'{"session_id": "x"}',
                                             headers={"Content-Type": "text/plain"})
            assert handoff.status == 415
            await json_error_of(handoff)
            missing = await test_client.get("/no/such/page", headers={"Accept": "text/plain"})
            assert missing.status == 404 and "nothing at this address" in (await json_error_of(missing))["error"]
            static = await test_client.get("/static/nope.js")
            assert static.status == 404
            await json_error_of(static)
            wrong_method = await test_client.put("/health")
            assert wrong_method.status == 405 and "GET" in wrong_method.headers["Allow"]
            await json_error_of(wrong_method)
            fine = await test_client.post("/chat", json={"message": QUESTION, "session_id": "abc"})
            assert fine.status == 200 and "event: complete" in await fine.text()
    finally:
        await orchestrator.aclose()


async def test_a_lone_surrogate_from_the_model_is_replaced_and_the_stream_ends(corpus_settings) -> None:
    def responder(body: dict[str, Any]) -> Reply:
        if requested_schema(body) is not None:  # the router's structured call, if any
            return default_responder(body)
        return Reply(text="The Enterprise plan \ud800 is priced per seat \ud83d\ude00.")

    async with FakeOpenAI() as fake:
        fake.responder = responder
        settings = make_settings(corpus_settings.data_dir, llm_provider="openai", openai_base_url=fake.base_url,
                                 openai_api_key="sk-test")
        orchestrator = await build_orchestrator(settings)
        try:
            async with TestClient(TestServer(create_app(orchestrator))) as test_client:
                response = await test_client.post("/chat", json={"message": QUESTION})
                raw = await response.read()
        finally:
            await orchestrator.aclose()
    text = raw.decode("utf-8")  # strict: raises on anything that is not UTF-8
    frames = [f for f in text.strip().split("\n\n") if f.startswith("event: ")]
    assert frames[-1].startswith("event: complete"), text[-300:]
    tokens = "".join(json.loads(f.split("data: ", 1)[1])["text"] for f in frames if f.startswith("event: token"))
    assert "\ufffd" in tokens and "\U0001f600" in tokens  # the lone one replaced, the pair joined


async def test_cors_headers_are_on_the_sse_response_for_configured_origins_only(client) -> None:
    allowed = await client.post("/chat", json={"message": QUESTION}, headers={"Origin": "http://localhost"})
    assert allowed.status == 200 and allowed.headers["Content-Type"].startswith("text/event-stream")
    assert allowed.headers.get("Access-Control-Allow-Origin") == "http://localhost"
    assert "Origin" in allowed.headers.get("Vary", "")
    assert "event: complete" in await allowed.text()
    denied = await client.post("/chat", json={"message": QUESTION}, headers={"Origin": "https://evil.example"})
    assert denied.status == 200 and "Access-Control-Allow-Origin" not in denied.headers
    await denied.text()
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    ok = await client.options("/chat", headers={"Origin": "http://127.0.0.1", **preflight})
    assert ok.status == 204 and ok.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1"
    assert "POST" in ok.headers["Access-Control-Allow-Methods"]
    assert "content-type" in ok.headers["Access-Control-Allow-Headers"].lower()
    evil = await client.options("/chat", headers={"Origin": "https://evil.example", **preflight})
    assert "Access-Control-Allow-Origin" not in evil.headers and "Access-Control-Allow-Methods" not in evil.headers


async def test_request_rate_per_client_is_429_with_retry_after(client) -> None:
    # The fixture allows 3 a minute; refused bodies count too (the check comes before the body is read).
    for _ in range(3):
        assert (await client.post("/chat", json={"message": ""})).status == 422
    over = await client.post("/chat", json={"message": QUESTION}, headers={"Origin": "http://localhost"})
    assert over.status == 429 and 1 <= int(over.headers["Retry-After"]) <= 60
    assert "Too many requests" in (await json_error_of(over))["error"]
    assert over.headers["Access-Control-Allow-Origin"] == "http://localhost"  # a page can read why, and when
    assert "Retry-After" in over.headers["Access-Control-Expose-Headers"]


def test_an_unknown_api_key_does_not_make_a_new_client() -> None:
    def request(**headers: str) -> Any:
        return make_mocked_request("POST", "/chat", headers=headers)

    keys = {"k-team-1"}
    assert client_id(request(Authorization="Bearer k-team-1"), keys) == "key:k-team-1"
    assert client_id(request(**{"X-API-Key": "k-team-1"}), keys) == "key:k-team-1"
    assert client_id(request(Authorization="Bearer made-up"), keys).startswith("ip:")
    assert client_id(request(Authorization="Bearer k-team-1"), ()).startswith("ip:")


async def _post_from(address: str, url: str, body: dict[str, Any]) -> tuple[int, dict[str, str], str]:
    async with ClientSession(connector=TCPConnector(local_addr=(address, 0))) as session, \
            session.post(url, json=body) as response:
        return response.status, dict(response.headers), await response.text()


async def test_stream_caps_answer_queue_and_heartbeats_with_a_slow_model(corpus_settings) -> None:
    def responder(body: dict[str, Any]) -> Reply:
        if requested_schema(body) is not None:
            return default_responder(body)
        return Reply(text="Enterprise is priced per seat.")

    async with FakeOpenAI(ttft_s=0.5, tokens_per_s=5) as fake:  # 0.5 s of silence, then 0.2 s between tokens
        fake.responder = responder
        settings = make_settings(
            corpus_settings.data_dir, llm_provider="openai", openai_base_url=fake.base_url, openai_api_key="sk-test",
            web_heartbeat_s=0.1, web_max_streams_per_client=1, web_max_answers=1, web_answer_queue=1,
            web_answer_wait_s=0.3)
        orchestrator = await build_orchestrator(settings)
        server = TestServer(create_app(orchestrator))
        await server.start_server()
        url = str(server.make_url("/chat"))
        try:
            async with ClientSession() as session, session.post(url, json={"message": QUESTION}) as slow:
                assert slow.status == 200
                first = await slow.content.readline()
                assert first.startswith(b"event: start")  # the stream holds its client's and the server's slot
                same_client = await _post_from("127.0.0.1", url, {"message": QUESTION})
                assert same_client[0] == 429 and same_client[1]["Retry-After"] == "2"
                assert "at most 1 per client" in json.loads(same_client[2])["error"]
                # Two other clients: one waits in the queue for 0.3 s, the other finds it full; both 503.
                others = await asyncio.gather(_post_from("127.0.0.2", url, {"message": QUESTION}),
                                              _post_from("127.0.0.3", url, {"message": QUESTION}))
                assert [status for status, _, _ in others] == [503, 503]
                assert all(int(headers["Retry-After"]) >= 1 and "busy" in json.loads(text)["error"]
                           for _, headers, text in others)
                rest = (first + await slow.content.read()).decode()
            fake.ttft_s, fake.tokens_per_s = 0.0, None
            status, _, again = await _post_from("127.0.0.2", url, {"message": QUESTION})
        finally:
            await server.close()
            await orchestrator.aclose()
    frames = rest.strip().split("\n\n")
    tokens = [i for i, f in enumerate(frames) if f.startswith("event: token")]
    assert frames[-1].startswith("event: complete") and len(tokens) >= 2, rest
    before_first = frames[:tokens[0]].count(": keep-alive")
    between = frames[tokens[0]:tokens[-1]].count(": keep-alive")
    assert before_first >= 4 and between >= 2, rest  # 0.5 s and 0.2 s gaps, a heartbeat every 0.1 s
    assert status == 200 and "event: complete" in again and ": keep-alive" not in again  # slots freed


async def test_a_failure_after_the_stream_started_ends_with_an_error_frame(client, monkeypatch) -> None:
    from bots.web.server import ORCHESTRATOR
    from core.events import Start, Token

    async def breaks(*args: Any, **kwargs: Any) -> Any:
        yield Start("web:x")
        yield Token("Half an ans")
        raise RuntimeError("a bug below the web layer")

    monkeypatch.setattr(client.server.app[ORCHESTRATOR], "respond", breaks)
    response = await client.post("/chat", json={"message": QUESTION})
    text = await response.text()
    assert response.status == 200 and text.startswith("event: start") and "Half an ans" in text, text
    assert text.strip().split("\n\n")[-1].startswith("event: error"), text
    assert "went wrong" in text and "Traceback" not in text


async def test_the_heartbeat_writes_only_into_silence_and_stops_with_the_stream() -> None:
    from bots.web.heartbeat import Heartbeat

    written: list[bytes] = []

    async def write(frame: bytes) -> None:
        written.append(frame)

    async with Heartbeat(write, 0.05, b"beat") as beat:
        for _ in range(10):  # a frame every 20 ms: never 50 ms of silence
            await asyncio.sleep(0.02)
            written.append(b"token")
            beat.wrote()
        assert b"beat" not in written
        await asyncio.sleep(0.13)  # silent: two or three heartbeats
        beats = written.count(b"beat")
        assert 2 <= beats <= 3, written
    await asyncio.sleep(0.12)
    assert written.count(b"beat") == beats  # closed: no more

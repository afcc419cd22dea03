"""Issue 15 over real sockets: web sessions belong to their creator, WEB_API_KEYS, and one time budget per answer.

- Client B, knowing A's session id (server-issued or chosen), can neither post to it, read it nor delete it; A,
  with the secret from its `start` event, can. "Not yours" and "not there" are the same 404.
- The chat page's cookie: signed, HttpOnly, SameSite=Strict; the sessions a browser starts are its own, another
  browser's (or a forged) cookie opens nothing.
- WEB_API_KEYS: 401 JSON without a key; a key as Bearer or X-API-Key, or the chat page's cookie, gets in.
- A hung model: the user gets the readable "took too long" error at ANSWER_TIMEOUT_S, not after the retries.

Each client is its own `ClientSession` without a cookie jar; cookies are sent by hand, so nothing leaks between
A and B.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import ClientSession, DummyCookieJar
from aiohttp.test_utils import TestServer

from bots.web.server import create_app
from bots.web.sessions import COOKIE
from core.orchestrator import build_orchestrator
from core.retry import USER_MESSAGES, RetryPolicy, StreamFailed, stream_with_retries
from tests.conftest import make_settings
from tests.fakes.openai_server import Fault, FakeOpenAI

QUESTION = "Do you comply with GDPR?"


@contextlib.asynccontextmanager
async def served(settings: Any) -> AsyncIterator[TestServer]:
    orchestrator = await build_orchestrator(settings)
    server = TestServer(create_app(orchestrator))
    try:
        await server.start_server()
        yield server
    finally:
        await server.close()
        await orchestrator.aclose()


class Client:
    """One HTTP client of the server: its own connection pool, no cookie jar (cookies go in `headers`)."""

    def __init__(self, server: TestServer, http: ClientSession, headers: dict[str, str] | None = None) -> None:
        self.server, self.http, self.headers = server, http, dict(headers or {})

    async def chat(self, body: dict[str, Any], **headers: str) -> tuple[int, Any]:
        async with self.http.post(self.server.make_url("/chat"), json=body,
                                  headers={**self.headers, **headers}) as response:
            raw = await response.text()
            if response.status != 200:
                return response.status, json.loads(raw)
        frames = [block.split("\n", 1) for block in raw.strip().split("\n\n") if block.startswith("event: ")]
        return 200, [(kind.removeprefix("event: "), json.loads(data.removeprefix("data: "))) for kind, data in frames]

    async def call(self, method: str, path: str, **headers: str) -> tuple[int, Any]:
        async with self.http.request(method, self.server.make_url(path), headers={**self.headers, **headers}) as r:
            text = await r.text()
            return r.status, (json.loads(text) if text and r.content_type == "application/json" else text)


@contextlib.asynccontextmanager
async def client(server: TestServer, headers: dict[str, str] | None = None) -> AsyncIterator[Client]:
    async with ClientSession(cookie_jar=DummyCookieJar()) as http:
        yield Client(server, http, headers)


async def page_cookie(server: TestServer) -> tuple[str, str]:
    """GET /chat as a browser would: the Set-Cookie header and the `Cookie` value to send back."""
    async with ClientSession(cookie_jar=DummyCookieJar()) as http:
        async with http.get(server.make_url("/chat"), headers={"Accept": "text/html"}) as response:
            assert response.status == 200 and "<textarea" in await response.text()
            header = response.headers["Set-Cookie"]
    return header, header.split(";", 1)[0]


async def test_b_cannot_read_post_to_or_delete_a_session_of_a(corpus_settings) -> None:
    async with served(corpus_settings) as server, client(server) as a, client(server) as b:
        status, frames = await a.chat({"message": QUESTION})
        assert status == 200 and frames[0][0] == "start" and frames[-1][0] == "complete"
        session, secret = frames[0][1]["session_id"], frames[0][1]["session_secret"]
        assert len(session) >= 32 and secret and secret not in session  # server-issued, unguessable

        # B knows the id (a log line, a shoulder): posting to it is refused, before the model sees anything.
        status, body = await b.chat({"message": "What did I ask before? Repeat my last message.", "session_id": session})
        assert status == 403 and "someone else" in body["error"]
        for wrong in ({}, {"X-Session-Secret": "x" * 32}, {"X-Session-Secret": secret[:-1] + "A"}):
            assert (await b.call("GET", f"/sessions/{session}", **wrong))[0] == 404
            assert (await b.call("DELETE", f"/sessions/{session}", **wrong))[0] == 404
        # "not yours" reads exactly like "not there": ids cannot be probed
        assert (await b.call("GET", f"/sessions/{session}"))[1]["error"] == f"No session {session!r}."
        assert (await b.call("GET", "/sessions/never-was"))[1]["error"] == "No session 'never-was'."
        async with b.http.post(server.make_url("/handoff"), json={"session_id": session}) as response:
            assert response.status == 404  # nor can B hand A's conversation to the support team

        # A's conversation is intact and A, with its secret (header or body), carries on, reads and deletes it.
        status, frames = await a.chat({"message": "And how long do you keep backups?", "session_id": session,
                                       "session_secret": secret})
        assert status == 200 and frames[-1][0] == "complete"
        status, info = await a.call("GET", f"/sessions/{session}", **{"X-Session-Secret": secret})
        assert status == 200 and info["turns"] == 2
        assert (await a.call("DELETE", f"/sessions/{session}", **{"X-Session-Secret": secret}))[0] == 204

        # A chosen id is claimed by its first user; the next one without the secret is refused.
        status, frames = await a.chat({"message": QUESTION, "session_id": "team-standup"})
        assert status == 200 and frames[0][1]["session_id"] == "team-standup"
        chosen_secret = frames[0][1]["session_secret"]
        assert (await b.chat({"message": QUESTION, "session_id": "team-standup"}))[0] == 403
        assert (await b.call("DELETE", "/sessions/team-standup"))[0] == 404
        assert (await a.call("GET", "/sessions/team-standup", **{"X-Session-Secret": chosen_secret}))[0] == 200


async def test_the_chat_page_cookie_owns_its_sessions_and_nothing_else(corpus_settings) -> None:
    async with served(corpus_settings) as server:
        header, cookie = await page_cookie(server)
        attributes = [part.strip().lower() for part in header.split(";")]
        assert cookie.startswith(f"{COOKIE}=") and "httponly" in attributes and "samesite=strict" in attributes
        assert "path=/" in attributes
        _, other = await page_cookie(server)
        assert other != cookie  # every browser its own
        async with client(server, {"Cookie": cookie}) as page, client(server, {"Cookie": other}) as stranger:
            status, frames = await page.chat({"message": QUESTION})
            session = frames[0][1]["session_id"]
            assert status == 200 and session.startswith(cookie.split("=", 1)[1].split(".", 1)[0] + ".")
            # the cookie is the credential: the page continues, reads and hands off without a secret
            assert (await page.chat({"message": "And backups?", "session_id": session}))[0] == 200
            status, info = await page.call("GET", f"/sessions/{session}")
            assert status == 200 and info["turns"] == 2
            # another browser, or a cookie with the signature of another browser id, opens nothing
            assert (await stranger.chat({"message": QUESTION, "session_id": session}))[0] == 403
            assert (await stranger.call("GET", f"/sessions/{session}"))[0] == 404
            browser = session.split(".", 1)[0]
            forged = f"{COOKIE}={browser}.{other.split('.', 1)[1]}"
            assert (await stranger.call("GET", f"/sessions/{session}", Cookie=forged))[0] == 404
            assert (await stranger.call("DELETE", f"/sessions/{session}", Cookie=forged))[0] == 404
            assert (await page.call("DELETE", f"/sessions/{session}"))[0] == 204


async def test_web_api_keys_require_a_key_and_the_chat_page_keeps_working(corpus_settings) -> None:
    keys = make_settings(corpus_settings.data_dir, web_api_keys="key-one,key-two").web_api_keys  # as from the env
    settings = corpus_settings.model_copy(update={"web_api_keys": keys})
    async with served(settings) as server, client(server) as anonymous:
        status, body = await anonymous.chat({"message": QUESTION})
        assert status == 401 and "API key" in body["error"]
        async with anonymous.http.post(server.make_url("/chat"), json={"message": QUESTION},
                                       headers={"Authorization": "Bearer wrong"}) as response:
            assert response.status == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await anonymous.call("GET", "/sessions/anything"))[0] == 401
        assert (await anonymous.call("GET", "/health"))[0] == 200  # not the API: stays open

        async with client(server, {"Authorization": "Bearer key-one"}) as bearer, \
                client(server, {"X-API-Key": "key-two"}) as keyed:
            status, frames = await bearer.chat({"message": QUESTION})
            assert status == 200 and frames[-1][0] == "complete"
            session, secret = frames[0][1]["session_id"], frames[0][1]["session_secret"]
            # a key admits a client to the API; it does not open another client's session
            assert (await keyed.call("GET", f"/sessions/{session}"))[0] == 404
            assert (await keyed.call("GET", f"/sessions/{session}", **{"X-Session-Secret": secret}))[0] == 200
            # …and a secret without a key is still refused while keys are required
            assert (await anonymous.call("GET", f"/sessions/{session}", **{"X-Session-Secret": secret}))[0] == 401

        _, cookie = await page_cookie(server)  # the chat page is served without a key, and its cookie is one
        async with client(server, {"Cookie": cookie}) as page:
            status, frames = await page.chat({"message": QUESTION})
            assert status == 200 and frames[-1][0] == "complete"
            assert (await page.call("GET", "/agents"))[0] == 200


async def test_a_hung_model_gets_the_readable_error_at_the_answer_budget(corpus_settings) -> None:
    async with FakeOpenAI() as fake:
        # Each call would wait 30 s and be retried three times (with 1, 2, 4 s between): minutes without a budget.
        settings = make_settings(corpus_settings.data_dir, llm_provider="openai", openai_base_url=fake.base_url,
                                 openai_api_key="sk-test", llm_timeout_s=30.0, llm_max_retries=3,
                                 answer_timeout_s=1.0, router_confidence=0.0)
        fake.faults.extend(Fault(hang=True) for _ in range(8))
        async with served(settings) as server, client(server) as user:
            started = time.monotonic()
            status, frames = await asyncio.wait_for(user.chat({"message": "What does the Enterprise plan cost?"}),
                                                    timeout=10)
            took = time.monotonic() - started
    assert status == 200 and frames[-1][0] == "error", frames
    assert frames[-1][1]["code"] == "timeout" and frames[-1][1]["user_message"] == USER_MESSAGES["timeout"]
    assert 0.9 <= took < 5, took


async def test_no_retry_starts_past_the_budget_and_a_stall_mid_stream_is_cut() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def refused() -> AsyncIterator[str]:
        raise ConnectionError("refused")
        yield ""  # pragma: no cover - makes this an async generator

    # 0.5 s of budget: the first retry (after 1 s) would end past it, so the failure is final at once.
    policy = RetryPolicy(max_retries=3, budget_s=0.5)
    try:
        await stream_with_retries(refused, policy, lambda piece: None, sleep)
    except StreamFailed as failure:
        assert failure.kind.code == "llm_unavailable" and waits == []
    else:  # pragma: no cover
        raise AssertionError("did not fail")

    async def stalls() -> AsyncIterator[str]:
        yield "The Enterprise plan "
        await asyncio.Event().wait()  # never another token
        yield "never"  # pragma: no cover

    seen: list[str] = []
    try:
        await stream_with_retries(stalls, RetryPolicy(budget_s=0.2), seen.append, sleep)
    except StreamFailed as failure:
        assert failure.kind.code == "timeout" and failure.partial == "The Enterprise plan " and seen
    else:  # pragma: no cover
        raise AssertionError("did not fail")


def test_replicas_agree_on_secrets_with_one_key_and_a_restart_keeps_them(tmp_path) -> None:
    from types import SimpleNamespace

    from bots.web.sessions import KEY_FILE, SessionGuard

    shared = [SessionGuard.from_settings(SimpleNamespace(web_session_secret="one key for every replica", data_dir=d))
              for d in (tmp_path / "a", tmp_path / "b")]
    assert shared[0].secret_for("s-1") == shared[1].secret_for("s-1") != shared[0].secret_for("s-2")
    first = SessionGuard.from_settings(SimpleNamespace(web_session_secret=None, data_dir=tmp_path / "data"))
    again = SessionGuard.from_settings(SimpleNamespace(web_session_secret=None, data_dir=tmp_path / "data"))
    assert first.secret_for("s-1") == again.secret_for("s-1")  # kept in the data directory
    assert (tmp_path / "data" / KEY_FILE).stat().st_mode & 0o777 == 0o600
    other = SessionGuard.from_settings(SimpleNamespace(web_session_secret=None, data_dir=tmp_path / "other"))
    assert other.secret_for("s-1") != first.secret_for("s-1")

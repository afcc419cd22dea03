"""The support loop on the web, end to end: the real app (`create_app` over a real offline orchestrator) on a
loopback server, and a loopback webhook receiver that checks every request's HMAC-SHA256 signature the way an
integrator would (computed here, not with our own helper) and answers 500 twice before 200.

- an unanswerable question streams the honest answer, `complete` says `declined` with the confidence;
- "Talk to a person" (POST /handoff) delivers the signed ticket after two retries with backoff (1 s, 2 s, the
  injected sleep records them: no test waits them out), the same delivery id on every try, and tells the user
  what happens next; a receiver that never recovers ends in a readable sentence, not an error page;
- a 429's Retry-After is honoured; asking for a person in words does the same inside the stream;
- /metrics counts the handoff and the unanswered question.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from bots.metrics import REGISTRY
from bots.support.desk import ASKED_TICKET, UNREACHABLE, desk_for
from bots.web.server import ORCHESTRATOR, SESSIONS, create_app
from core.orchestrator import build_orchestrator
from tests.test_core import Sleeps

SECRET = "whsec-test-0123"
UNANSWERABLE = "What's the capital of Australia?"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Receiver:
    """A ticketing tool's webhook endpoint: verifies, then answers from `script` (status, headers) in order."""

    def __init__(self, script: list[tuple[int, dict[str, str]]]) -> None:
        self.script = list(script)
        self.received: list[dict[str, Any]] = []
        self.bad_signatures = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        timestamp = request.headers["X-Switchboard-Timestamp"]
        expected = "sha256=" + hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers["X-Switchboard-Signature"]) or \
                abs(time.time() - int(timestamp)) > 300:
            self.bad_signatures += 1
            return web.Response(status=401)
        self.received.append({"delivery": request.headers["X-Switchboard-Delivery"], "body": json.loads(body)})
        status, headers = self.script.pop(0) if self.script else (200, {})
        return web.Response(status=status, headers=headers)


@pytest.fixture
async def web_app(corpus_settings):
    """(client, receiver, sleeps) factory: the app with HANDOFF_WEBHOOK_URL pointing at a receiver."""
    made: list[Any] = []

    async def make(script: list[tuple[int, dict[str, str]]], attempts: int = 4):
        receiver = Receiver(script)
        hook = web.Application()
        hook.router.add_post("/hook", receiver.handle)
        hook_server = TestServer(hook)
        await hook_server.start_server()
        settings = corpus_settings.model_copy(update={
            "handoff_webhook_url": str(hook_server.make_url("/hook")), "handoff_webhook_attempts": attempts,
            "handoff_webhook_secret": SecretStr(SECRET)})
        orchestrator = await build_orchestrator(settings)
        sleeps = Sleeps()
        desk_for(orchestrator).sleep = sleeps
        client = TestClient(TestServer(create_app(orchestrator)))
        await client.start_server()
        made.append((client, hook_server, orchestrator))
        return client, receiver, sleeps

    yield make
    for client, hook_server, orchestrator in made:
        await client.close()
        await hook_server.close()
        await orchestrator.aclose()


def owner(client: TestClient, session_id: str) -> dict[str, str]:
    """The session's credential (issue 15: a web session belongs to its creator)."""
    return {"X-Session-Secret": client.app[SESSIONS].secret_for(session_id)}


async def chat(client: TestClient, message: str, session_id: str) -> list[tuple[str, dict[str, Any]]]:
    response = await client.post("/chat", json={"message": message, "session_id": session_id},
                                 headers=owner(client, session_id))
    assert response.status == 200
    frames = []
    for block in (await response.text()).strip().split("\n\n"):
        kind, data = block.split("\n", 1)
        frames.append((kind.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return frames


async def test_the_web_handoff_reaches_the_webhook_after_two_500s(web_app) -> None:
    client, receiver, sleeps = await web_app([(500, {}), (500, {}), (200, {})])
    unanswered = sum(metric("switchboard_unanswered_total", platform="web", agent=a)
                     for a in ("billing", "technical", "policy"))
    frames = await chat(client, UNANSWERABLE, "s-web-1")
    kind, complete = frames[-1]
    assert kind == "complete" and complete["declined"] and complete["confidence"] < 0.31
    assert "I don't know the answer" in "".join(d["text"] for k, d in frames if k == "token")
    await desk_for(client.app[ORCHESTRATOR]).flush()
    assert sum(metric("switchboard_unanswered_total", platform="web", agent=a)
               for a in ("billing", "technical", "policy")) == unanswered + 1

    response = await client.post("/handoff", json={"session_id": "s-web-1"}, headers=owner(client, "s-web-1"))
    data = await response.json()
    assert response.status == 200 and data["message"] == ASKED_TICKET and data["status"] == "requested"
    assert receiver.bad_signatures == 0 and len(receiver.received) == 3
    assert len({r["delivery"] for r in receiver.received}) == 1  # one delivery id across the retries
    assert sleeps.waits == [1.0, 2.0]
    ticket = receiver.received[-1]["body"]
    assert ticket["event"] == "handoff.requested" and ticket["session_key"] == "web:s-web-1"
    assert ticket["questions"] == [UNANSWERABLE] and ticket["declined"] and "I don't know" in ticket["answer"]
    assert ticket["agent"] and ticket["confidence"] == complete["confidence"] and ticket["trigger"] == "button"
    metrics_text = await (await client.get("/metrics")).text()
    assert 'switchboard_handoffs_total{agent="' in metrics_text and 'platform="web"' in metrics_text


async def test_a_webhook_that_never_recovers_ends_in_a_readable_sentence(web_app) -> None:
    client, receiver, sleeps = await web_app([(503, {})] * 3, attempts=3)
    await chat(client, UNANSWERABLE, "s-web-2")
    data = await (await client.post("/handoff", json={"session_id": "s-web-2"}, headers=owner(client, "s-web-2"))).json()
    email = client.app[ORCHESTRATOR].settings.support_email
    assert data["message"] == UNREACHABLE.format(email=email) and data["status"] == "failed"
    assert len(receiver.received) == 3 and sleeps.waits == [1.0, 2.0]


async def test_a_429_is_retried_after_its_retry_after(web_app) -> None:
    client, receiver, sleeps = await web_app([(429, {"Retry-After": "7"}), (200, {})])
    await chat(client, "What does the Enterprise plan cost?", "s-web-3")
    data = await (await client.post("/handoff", json={"session_id": "s-web-3"}, headers=owner(client, "s-web-3"))).json()
    assert data["message"] == ASKED_TICKET and sleeps.waits == [7.0] and len(receiver.received) == 2


async def test_asking_in_words_on_the_web_hands_off_in_the_stream(web_app) -> None:
    client, receiver, _ = await web_app([])
    await chat(client, "What does the Enterprise plan cost?", "s-web-4")
    frames = await chat(client, "can I talk to a human?", "s-web-4")
    kinds = [k for k, _ in frames]
    assert "handoff" in kinds and "agent" not in kinds and kinds[-1] == "complete"
    assert "".join(d["text"] for k, d in frames if k == "token") == ASKED_TICKET
    [delivery] = receiver.received
    assert delivery["body"]["trigger"] == "words" and delivery["body"]["agent"] == "billing"
    assert delivery["body"]["questions"] == ["What does the Enterprise plan cost?"]


async def test_the_chat_page_offers_a_person_and_an_unknown_session_is_404(web_app) -> None:
    client, _, _ = await web_app([])
    page = await (await client.get("/chat")).text()
    assert "Talk to a person" in page and 'fetch("/handoff"' in page
    assert (await client.post("/handoff", json={"session_id": "never-asked"})).status == 404
    assert (await client.post("/handoff", json={})).status == 422

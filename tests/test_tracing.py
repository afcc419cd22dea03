"""Traces of a turn (core/tracing.py), the turn records a reply leaves (core/turn_records.py) and JSON log lines
(core/logging_setup.py).

Spans are checked with the SDK's in-memory exporter on real turns (the chat pipeline over a real orchestrator,
the web server's SSE endpoint against the fake OpenAI server), and once over OTLP/HTTP to a loopback receiver.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bots.pipeline import AnswerPipeline, Inbound, PlatformTexts
from bots.surface import ReplyView, render_plain
from bots.web.server import create_app
from core import tracing
from core.logging_setup import JsonFormatter
from core.orchestrator import build_orchestrator
from core.turn_records import Query, turn_store_of
from tests.conftest import make_settings
from tests.fakes.openai_server import FakeOpenAI

SESSION = "test:team:channel:1700000000.000100"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span of the test, kept in memory (the provider is this module's, not the process-wide one)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    previous = tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.install(previous)
        provider.shutdown()


class ListSurface:
    """A chat place in memory: posts and edits land in `messages` at once."""

    max_chars = 4000

    def __init__(self) -> None:
        self.messages: list[str] = []

    def render(self, view: ReplyView) -> str:
        return render_plain(view)

    def budget_for(self, write: str) -> None:
        return None

    async def post(self, text: str) -> int:
        self.messages.append(text)
        return len(self.messages) - 1

    async def edit(self, handle: int, text: str) -> None:
        self.messages[handle] = text


def by_name(exporter: InMemorySpanExporter) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for span in exporter.get_finished_spans():
        found.setdefault(span.name, []).append(span)
    return found


async def test_a_chat_turn_is_one_trace_from_receive_to_platform_writes(spans, corpus_settings) -> None:
    core = await build_orchestrator(corpus_settings)
    try:
        pipeline = AnswerPipeline(core, "test", PlatformTexts(usage="help"), edit_interval_s=0.0)
        surface = ListSurface()
        outcome = await pipeline.answer(Inbound("test", SESSION, "What does the Enterprise plan cost?", "U1"),
                                        surface)
        assert outcome is not None and outcome.status == "done" and outcome.delivered
        store = turn_store_of(core)
        assert store is not None
        await store.drain()
        [record] = await store.turns(Query(session_key=SESSION))
    finally:
        await core.aclose()

    named = by_name(spans)
    [turn] = named["switchboard.turn"]
    [route] = named["switchboard.route"]
    [retrieve] = named["switchboard.retrieve"]
    writes = named["switchboard.write"]
    # One trace; route, retrieve and every platform write are children of the turn span.
    assert turn.parent is None
    for child in (route, retrieve, *writes):
        assert child.parent is not None and child.parent.span_id == turn.context.span_id
        assert child.context.trace_id == turn.context.trace_id
    assert {w.attributes["switchboard.write"] for w in writes} >= {"post"} and len(writes) >= 2
    # The session key is hashed; agent, scores and timings are attributes.
    attrs = dict(turn.attributes)
    assert attrs["switchboard.session"] == tracing.hash_key(SESSION) and len(attrs["switchboard.session"]) == 16
    assert SESSION not in json.dumps({s.name: dict(s.attributes) for s in spans.get_finished_spans()})
    assert attrs["switchboard.platform"] == "test" and attrs["switchboard.agent"] == "billing"
    assert attrs["switchboard.status"] == "done" and attrs["switchboard.total_ms"] > 0
    assert len(attrs["switchboard.turn_id"]) == 32
    assert route.attributes["switchboard.agent"] == "billing"
    assert retrieve.attributes["switchboard.passages"] > 0 and retrieve.attributes["switchboard.best_score"] > 0
    # The same turn was recorded for the dashboard.
    assert record.platform == "test" and record.agent == "billing" and record.status == "done"
    assert record.question == "What does the Enterprise plan cost?" and "Enterprise" in record.answer
    assert record.first_token_ms is not None and record.total_ms and record.total_ms >= record.first_token_ms
    assert record.confidence is not None and not record.declined and not record.handed_off


async def test_a_web_turn_traces_route_retrieve_and_the_model_call(spans, corpus_settings) -> None:
    async with FakeOpenAI() as fake:
        settings = make_settings(corpus_settings.data_dir, llm_provider="openai", openai_base_url=fake.base_url,
                                 openai_api_key="sk-test")
        core = await build_orchestrator(settings)
        server = TestServer(create_app(core))
        try:
            await server.start_server()
            async with ClientSession() as http, http.post(server.make_url("/chat"), json={
                    "message": "What does the Enterprise plan cost?", "session_id": "trace-1"}) as response:
                assert response.status == 200 and "event: complete" in await response.text()
            store = turn_store_of(core)
            assert store is not None
            await store.drain()
            [record] = await store.turns(Query(session_key="web:trace-1"))
        finally:
            await server.close()
            await core.aclose()
    named = by_name(spans)
    [turn] = named["switchboard.turn"]
    [model] = named["switchboard.model"]
    assert model.parent is not None and model.parent.span_id == turn.context.span_id
    assert model.attributes["switchboard.agent"] == "billing"
    assert named["switchboard.route"][0].parent.span_id == turn.context.span_id
    assert turn.attributes["switchboard.platform"] == "web"
    assert turn.attributes["switchboard.session"] == tracing.hash_key("web:trace-1")
    assert turn.attributes["switchboard.first_token_ms"] > 0
    assert record.platform == "web" and record.agent == "billing" and record.first_token_ms is not None


def test_without_an_endpoint_nothing_is_set_up_and_spans_cost_nothing(tmp_path) -> None:
    assert tracing.setup_tracing(make_settings(tmp_path)) is None
    with tracing.span("switchboard.route", agent="billing") as current:
        assert not current.is_recording()  # the API's no-op span: nothing is kept or sent
    assert tracing.traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"


async def test_spans_are_exported_over_otlp_http(tmp_path) -> None:
    posts: list[tuple[str, int]] = []

    async def receive(request: web.Request) -> web.Response:
        posts.append((request.content_type, len(await request.read())))
        return web.Response(status=200, content_type="application/x-protobuf", body=b"")

    receiver = web.Application()
    receiver.router.add_post("/v1/traces", receive)
    server = TestServer(receiver)
    await server.start_server()
    previous = tracing.install(None)
    provider = None
    try:
        settings = make_settings(tmp_path, otel_exporter_otlp_endpoint=str(server.make_url("/")))
        provider = tracing.setup_tracing(settings)
        assert provider is not None
        turn = tracing.begin_turn("web", "web:otlp")
        with tracing.span("switchboard.route", agent="billing"):
            pass
        turn.end(status="done")
        # The batch exporter posts from its own thread: flush it there, without blocking the loop serving it.
        assert await asyncio.to_thread(provider.force_flush, 10_000)
    finally:
        tracing.install(previous)
        if provider is not None:
            await asyncio.to_thread(provider.shutdown)
        await server.close()
    assert posts and all(kind == "application/x-protobuf" and size > 0 for kind, size in posts)


def test_json_log_lines_carry_the_session_key_turn_id_and_trace_id(spans) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("switchboard.test.json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        logger.info("before the turn")
        turn = tracing.begin_turn("slack", SESSION)
        logger.info("answering %s", "now")
        try:
            raise ValueError("boom with " + "xox" + "b-0000000000-notarealtoken")  # token-shaped, assembled
        except ValueError:
            logger.exception("it failed")
        turn.end()
        logger.info("after the turn")
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["before the turn", "answering now", "it failed", "after the turn"]
    assert "session_key" not in lines[0] and "trace_id" not in lines[0] and "turn_id" not in lines[-1]
    during = lines[1]
    assert during["session_key"] == SESSION and during["turn_id"] == turn.turn_id and during["level"] == "INFO"
    assert during["trace_id"] == turn.trace_id and len(during["trace_id"]) == 32
    assert "ValueError" in lines[2]["exception"] and "xoxb-" not in lines[2]["exception"]


def test_log_format_json_switches_the_root_handler_and_text_stays_the_default(tmp_path) -> None:
    from core.logging_setup import RedactSecrets, use_log_format

    assert make_settings(tmp_path).log_format == "text"
    assert make_settings(tmp_path, log_format="json").log_format == "json"
    root = logging.getLogger()
    kept = list(root.handlers)
    try:
        use_log_format("text")
        assert root.handlers == kept  # the readable format is left alone
        use_log_format("json")
        [handler] = root.handlers
        assert isinstance(handler.formatter, JsonFormatter)
        assert any(isinstance(f, RedactSecrets) for f in handler.filters)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in kept:
            root.addHandler(handler)

"""`core.answer_stream`: the wire reader sends what `ChatOpenAI` would send and yields what langchain would yield.

Both paths run against the loopback OpenAI fake with the real SDK clients, so a drift between the payload the
reader builds and the one langchain-openai builds (model, temperature, stream options, a workspace's model) or
between the texts they read shows up here.
"""

from __future__ import annotations

import httpx2
import openai
import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

from core.answer_stream import _langchain_pieces, _wire_target, answer_pieces
from core.llm import build_chat_model, close_chat_model
from core.retry import classify
from tests.fakes.openai_server import FakeOpenAI, Fault, Reply
from tests.conftest import make_settings

MESSAGES = [SystemMessage("You answer billing questions."), HumanMessage("How do refunds work?")]
ANSWER = "Refunds go back to the card you paid with, within ten working days."


async def _collect(pieces) -> list[str]:
    return [piece async for piece in pieces]


def _model(fake: FakeOpenAI, tmp_path) -> ChatOpenAI:
    settings = make_settings(tmp_path, llm_provider="openai", openai_base_url=fake.base_url,
                             openai_api_key="sk-test", llm_model="gpt-4o-mini")
    model = build_chat_model(settings)
    assert isinstance(model, ChatOpenAI)
    return model


async def test_the_wire_reader_sends_langchains_request_and_reads_the_same_text(tmp_path) -> None:
    async with FakeOpenAI() as fake:
        fake.responder = lambda body: Reply(text=ANSWER, chunk_size=2)
        model = _model(fake, tmp_path)
        try:
            wire_usage: list[int] = []
            wire = await _collect(answer_pieces(model, MESSAGES, wire_usage.append))
            chain_usage: list[int] = []
            chain = await _collect(_langchain_pieces(model, MESSAGES, chain_usage.append))
        finally:
            await close_chat_model(model)
        assert "".join(wire) == "".join(chain) == ANSWER
        assert len(wire) > 1  # streamed in pieces, not read whole
        assert wire_usage == chain_usage and wire_usage[-1] > 0
        first, second = fake.chat_requests
        assert first.streamed and second.streamed
        assert first.body == second.body
        assert first.body["stream_options"] == {"include_usage": True} and first.body["model"] == "gpt-4o-mini"


async def test_a_workspace_model_bound_to_the_client_is_the_model_asked(tmp_path) -> None:
    async with FakeOpenAI() as fake:
        model = _model(fake, tmp_path)
        try:
            text = "".join(await _collect(answer_pieces(model.bind(model="test-model"), MESSAGES)))
        finally:
            await close_chat_model(model)
        assert text and fake.chat_requests[-1].body["model"] == "test-model"


def test_other_models_and_other_bindings_stream_through_langchain(tmp_path) -> None:
    model = ChatOpenAI(model="gpt-4o-mini", api_key="sk-test", base_url="http://127.0.0.1:9/v1")

    class Subclass(ChatOpenAI):
        pass

    assert _wire_target(model) is not None
    assert _wire_target(model.bind(model="other")) is not None
    assert _wire_target(model.bind(tools=[], tool_choice="auto")) is None  # more than a model: langchain's job
    assert _wire_target(Subclass(model="m", api_key="sk-test", base_url="http://127.0.0.1:9/v1")) is None


async def test_a_structured_response_format_falls_back_to_langchain(tmp_path) -> None:
    async with FakeOpenAI() as fake:
        model = _model(fake, tmp_path)
        try:
            # `response_format` is not a bare model binding: the reader hands the whole request to langchain
            bound = model.bind(response_format={"type": "json_object"})
            assert _wire_target(bound) is None
            pieces = await _collect(answer_pieces(bound, MESSAGES))
        finally:
            await close_chat_model(model)
        assert pieces and fake.chat_requests[-1].body["response_format"] == {"type": "json_object"}


async def test_an_error_sent_inside_the_stream_raises_after_the_text_before_it(tmp_path) -> None:
    async with FakeOpenAI() as fake:
        fake.responder = lambda body: Reply(text=ANSWER)
        fake.faults.append(Fault(drop_after_tokens=3, drop_with_error=True))
        model = _model(fake, tmp_path)
        received: list[str] = []
        try:
            with pytest.raises(openai.APIError) as failure:
                async for piece in answer_pieces(model, MESSAGES):
                    received.append(piece)
        finally:
            await close_chat_model(model)
        assert len(received) == 3 and ANSWER.startswith("".join(received))
        assert classify(failure.value).code == "llm_unavailable"  # the model's server failed, not our code


async def test_a_cut_connection_mid_answer_is_a_transport_failure_not_a_bug(tmp_path) -> None:
    async with FakeOpenAI() as fake:
        fake.responder = lambda body: Reply(text=ANSWER)
        fake.faults.append(Fault(drop_after_tokens=2))
        model = _model(fake, tmp_path)
        received: list[str] = []
        try:
            with pytest.raises((openai.APIError, httpx2.TransportError)) as failure:
                async for piece in answer_pieces(model, MESSAGES):
                    received.append(piece)
        finally:
            await close_chat_model(model)
        assert len(received) == 2
        kind = classify(failure.value)
        assert kind.code in {"llm_unavailable", "timeout"} and kind.retryable


async def test_closing_the_model_closes_its_http_client(tmp_path) -> None:
    async with FakeOpenAI() as fake:
        model = _model(fake, tmp_path)
        await _collect(answer_pieces(model, MESSAGES))
        await close_chat_model(model)
        assert model.http_async_client.is_closed
        with pytest.raises((RuntimeError, httpx2.HTTPError, openai.APIError)):
            await _collect(answer_pieces(model, MESSAGES))


def test_a_refused_connection_is_an_unavailable_model_not_a_slow_one() -> None:
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    try:
        try:
            raise ConnectionRefusedError(111, "Connect call failed")
        except ConnectionRefusedError as refused:
            raise httpx2.ConnectTimeout("Cannot connect to host") from refused
    except httpx2.ConnectTimeout as mapped:
        error = openai.APITimeoutError(request)
        error.__cause__ = mapped
    assert classify(error).code == "llm_unavailable"
    assert classify(openai.APITimeoutError(request)).code == "timeout"


async def test_extra_body_and_the_key_reach_the_server_as_langchain_sends_them(tmp_path) -> None:
    async with FakeOpenAI() as fake:
        model = _model(fake, tmp_path)
        model.extra_body = {"ttl": 300}  # e.g. LM Studio's model time-to-live
        try:
            await _collect(answer_pieces(model, MESSAGES))
            await _collect(_langchain_pieces(model, MESSAGES, None))
        finally:
            await close_chat_model(model)
        wire, chain = fake.chat_requests
        assert wire.body == chain.body and wire.body["ttl"] == 300
        assert wire.headers.get("Authorization") == chain.headers.get("Authorization") is not None


# --- the wire (`core.openai_wire`) against the SDK's own path ---------------------------------------------------
async def _failure(pieces) -> BaseException:
    with pytest.raises(Exception) as failure:
        await _collect(pieces)
    return failure.value


@pytest.mark.parametrize(("status", "retry_after"), [(429, 2.0), (500, None), (401, None), (400, None)])
async def test_an_error_status_raises_what_the_sdk_raises(tmp_path, status, retry_after) -> None:
    from core.answer_stream import _sdk_pieces

    async with FakeOpenAI() as fake:
        model = _model(fake, tmp_path)
        try:
            fake.faults.append(Fault(status=status, retry_after=retry_after))
            ours = await _failure(answer_pieces(model, MESSAGES))
            fake.faults.append(Fault(status=status, retry_after=retry_after))
            body = model._get_request_payload(list(MESSAGES), stream=True)
            sdks = await _failure(_sdk_pieces(model, body, None))
        finally:
            await close_chat_model(model)
        assert type(ours) is type(sdks) and isinstance(ours, openai.APIStatusError)
        assert ours.status_code == sdks.status_code == status
        assert str(ours) == str(sdks) and ours.body == sdks.body
        assert classify(ours) == classify(sdks)
        if retry_after is not None:
            assert classify(ours).retry_after == retry_after


async def test_a_refused_connection_through_the_wire_is_an_unavailable_model(tmp_path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = make_settings(tmp_path, llm_provider="openai", openai_base_url=f"http://127.0.0.1:{port}/v1",
                             openai_api_key="sk-test")
    model = build_chat_model(settings)
    try:
        failure = await _failure(answer_pieces(model, MESSAGES))
    finally:
        await close_chat_model(model)
    assert isinstance(failure, openai.APIConnectionError)
    assert classify(failure).code == "llm_unavailable" and classify(failure).retryable


async def test_the_wire_sends_the_sdk_clients_headers_and_key(tmp_path) -> None:
    async with FakeOpenAI() as fake:
        model = _model(fake, tmp_path)
        try:
            await _collect(answer_pieces(model, MESSAGES))
        finally:
            await close_chat_model(model)
        headers = {k.lower(): v for k, v in fake.chat_requests[-1].headers.items()}
        assert headers["authorization"] == "<redacted>"  # present (the fake hides its value)
        assert headers["user-agent"].startswith("AsyncOpenAI/Python")
        assert headers["content-type"] == "application/json" and headers["accept"] == "text/event-stream"


async def test_a_client_with_a_default_query_keeps_the_sdks_path(tmp_path) -> None:
    from core.openai_wire import wire_for

    async with FakeOpenAI() as fake:
        model = ChatOpenAI(model="gpt-4o-mini", api_key="sk-test", base_url=fake.base_url, max_retries=0,
                           default_query={"api-version": "2024-10-21"})
        assert wire_for(model.root_async_client) is None
        text = "".join(await _collect(answer_pieces(model, MESSAGES)))
        assert text and fake.chat_requests[-1].body["model"] == "gpt-4o-mini"


def test_the_wire_takes_the_environments_proxy_unless_no_proxy_covers_the_host(monkeypatch) -> None:
    from core.openai_wire import OpenAIWire

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    remote = OpenAIWire(openai.AsyncOpenAI(api_key="sk-test", base_url="https://api.example.com/v1"))
    assert remote._proxy == "http://proxy.internal:3128"
    monkeypatch.setenv("NO_PROXY", "api.example.com")
    assert OpenAIWire(openai.AsyncOpenAI(api_key="sk-test", base_url="https://api.example.com/v1"))._proxy is None


async def test_the_wire_reads_lines_cut_anywhere_between_reads(tmp_path) -> None:
    """The wire splits what arrives into lines itself: a line, a CRLF or a multi-byte character cut between two
    TCP reads is joined before it is parsed."""
    import asyncio
    import json

    from aiohttp import web
    from aiohttp.test_utils import TestServer

    events = [{"choices": [{"index": 0, "delta": {"content": text}}]} for text in ("Grüße ", "aus ", "Köln — ", "€5")]
    body = "".join(f"data: {json.dumps(event, ensure_ascii=False)}\r\n\r\n" for event in events)
    body += ": keep-alive\n\ndata: [DONE]\n\n"
    raw = body.encode()
    cuts = [7, 8, raw.index("ü".encode()) + 1, raw.index(b"\r\n") + 1, raw.index("€".encode()) + 2, len(raw) - 3]

    async def chat(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        start = 0
        for cut in sorted(set(cuts)) + [len(raw)]:
            await response.write(raw[start:cut])
            await asyncio.sleep(0.02)  # separate TCP reads on the other side
            start = cut
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    async with TestServer(app, host="127.0.0.1") as server:
        settings = make_settings(tmp_path, llm_provider="openai", openai_base_url=str(server.make_url("/v1")),
                                 openai_api_key="sk-test", llm_model="gpt-4o-mini")
        model = build_chat_model(settings)
        try:
            pieces = await _collect(answer_pieces(model, MESSAGES))
        finally:
            await close_chat_model(model)
    assert pieces == ["Grüße ", "aus ", "Köln — ", "€5"]

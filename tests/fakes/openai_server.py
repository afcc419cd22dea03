"""A loopback fake of the OpenAI-compatible API, speaking the real wire protocol.

The real `ChatOpenAI` (and the `openai` client under it) is pointed at `fake.base_url`; nothing is mocked
inside the process. It serves:
- `POST /v1/chat/completions`, streamed (`chat.completion.chunk` SSE, a usage chunk when asked, `[DONE]`) or
  not, answering with text or, when the request offers tools, with a tool call whose arguments arrive in
  several deltas;
- `POST /v1/embeddings` (deterministic unit vectors) and `GET /v1/models`.

Scripting:
- `fake.responder = callable(request_json) -> Reply` decides what a request is answered with (the default
  quotes the question, and fills a routing tool call by keywords);
- `fake.faults.append(Fault(...))` queues one failure per request before answering normally: an HTTP status
  (429 with `Retry-After`, 500, 503), `hang=True` (never answers: the client times out) or
  `drop_after_tokens=N` (streams N chunks then cuts the connection);
- `fake.ttft_s` and `fake.tokens_per_s` pace streamed answers; `fake.requests` records every request.

Use `async with FakeOpenAI() as fake:` in async tests, or `fake.start_in_thread()` / `fake.stop_thread()` when
the code under test runs its own event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web
from aiohttp.client_exceptions import ClientConnectionResetError


@dataclass
class Reply:
    text: str = ""
    tool_arguments: dict[str, Any] | None = None  # answer with a call of the request's first tool
    ttft_s: float | None = None
    tokens_per_s: float | None = None


@dataclass
class Fault:
    status: int | None = None
    retry_after: float | None = None
    hang: bool = False
    drop_after_tokens: int | None = None


@dataclass
class RecordedRequest:
    path: str
    body: dict[str, Any]
    at: float
    streamed: bool


def last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
            return str(content or "")
    return ""


ROUTING_KEYWORDS = {
    "billing": ("price", "cost", "invoice", "refund", "plan", "pay", "charge", "vat", "trial", "seat"),
    "technical": ("api", "error", "timeout", "webhook", "sdk", "sso", "key", "429", "401", "export"),
    "policy": ("gdpr", "privacy", "retention", "sla", "security", "dpa", "encrypt", "delete", "cookie"),
}


def default_responder(body: dict[str, Any]) -> Reply:
    question = last_user_text(body)
    if "Question:" in question:
        question = question.rsplit("Question:", 1)[1]
    question = question.strip()
    if body.get("tools"):
        lowered = question.lower()
        tool = body["tools"][0]["function"]
        enum = tool.get("parameters", {}).get("properties", {}).get("agent", {}).get("enum") or ["billing"]
        choice = next((a for a in enum if any(k in lowered for k in ROUTING_KEYWORDS.get(a, ()))), enum[0])
        return Reply(tool_arguments={"agent": choice, "reason": "keyword match"})
    words = " ".join(question.split()[:6])
    return Reply(
        text=(
            f"Here is what I found about “{words}”. The knowledge base covers this topic in detail. "
            "Follow the steps in the article and contact support if anything is unclear. (Source: test)"
        )
    )


def _pieces(text: str) -> list[str]:
    """Word-sized pieces keeping whitespace, like a model's tokens."""
    return re.findall(r"\S+\s*|\s+", text) or [text]


class FakeOpenAI:
    def __init__(self, *, ttft_s: float = 0.0, tokens_per_s: float | None = None, embedding_dim: int = 64) -> None:
        self.ttft_s = ttft_s
        self.tokens_per_s = tokens_per_s
        self.embedding_dim = embedding_dim
        self.responder: Callable[[dict[str, Any]], Reply] = default_responder
        self.faults: deque[Fault] = deque()
        self.requests: list[RecordedRequest] = []
        self.models = ["gpt-4o-mini", "test-model"]
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeOpenAI:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self) -> FakeOpenAI:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-openai", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop_thread(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(10)
        self._loop = None

    def reset(self) -> None:
        self.requests.clear()
        self.faults.clear()
        self.responder = default_responder

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    # --- handlers --------------------------------------------------------------------------------------------
    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]})

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(RecordedRequest(request.path, body, time.monotonic(), False))
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = []
        for index, text in enumerate(inputs):
            seed = int.from_bytes(hashlib.sha256(str(text).encode()).digest()[:8], "little")
            vector = np.random.default_rng(seed).standard_normal(self.embedding_dim).astype(np.float32)
            vector /= np.linalg.norm(vector)
            data.append({"object": "embedding", "index": index, "embedding": vector.tolist()})
        return web.json_response({"object": "list", "data": data, "model": body.get("model", ""),
                                  "usage": {"prompt_tokens": 1, "total_tokens": 1}})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        streamed = bool(body.get("stream"))
        self.requests.append(RecordedRequest(request.path, body, time.monotonic(), streamed))
        fault = self.faults.popleft() if self.faults else None
        if fault and fault.hang:
            await asyncio.sleep(3600)
        if fault and fault.status:
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            kind = "rate_limit_exceeded" if fault.status == 429 else "server_error"
            return web.json_response(
                {"error": {"message": f"fake {fault.status}", "type": kind, "param": None, "code": kind}},
                status=fault.status, headers=headers,
            )
        reply = self.responder(body)
        ttft = reply.ttft_s if reply.ttft_s is not None else self.ttft_s
        rate = reply.tokens_per_s if reply.tokens_per_s is not None else self.tokens_per_s
        if not streamed:
            await asyncio.sleep(ttft)
            return web.json_response(self._completion(body, reply))
        try:
            return await self._stream(request, body, reply, ttft, rate, fault)
        except (ConnectionResetError, ClientConnectionResetError):
            return web.Response(status=499)  # the client went away mid-stream, as clients do

    def _completion(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        finish = "stop"
        if reply.tool_arguments is not None and body.get("tools"):
            name = body["tools"][0]["function"]["name"]
            message = {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_fake", "type": "function",
                "function": {"name": name, "arguments": json.dumps(reply.tool_arguments)}}]}
            finish = "tool_calls"
        return {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": {"prompt_tokens": 10, "completion_tokens": len(_pieces(reply.text)), "total_tokens": 10},
        }

    async def _stream(self, request: web.Request, body: dict[str, Any], reply: Reply, ttft: float,
                      rate: float | None, fault: Fault | None) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body.get("model", "")}

        async def send(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await asyncio.sleep(ttft)
        if reply.tool_arguments is not None and body.get("tools"):
            name = body["tools"][0]["function"]["name"]
            arguments = json.dumps(reply.tool_arguments)
            await send({"role": "assistant", "content": None, "tool_calls": [{
                "index": 0, "id": "call_fake", "type": "function", "function": {"name": name, "arguments": ""}}]})
            for start in range(0, len(arguments), 8):
                await send({"tool_calls": [{"index": 0, "function": {"arguments": arguments[start:start + 8]}}]})
            await send({}, "tool_calls")
            pieces: list[str] = []
        else:
            pieces = _pieces(reply.text)
            await send({"role": "assistant", "content": ""})
            for number, piece in enumerate(pieces):
                if fault and fault.drop_after_tokens is not None and number >= fault.drop_after_tokens:
                    # Cut the connection mid-stream, as a crashed upstream or proxy would.
                    assert request.transport is not None
                    request.transport.close()
                    return response
                await send({"content": piece})
                if rate:
                    await asyncio.sleep(1.0 / rate)
            await send({}, "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 10, "completion_tokens": len(pieces), "total_tokens": 10 + len(pieces)}
            await response.write(f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

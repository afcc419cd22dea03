"""A loopback fake of the OpenAI-compatible API that speaks the real wire protocol.

Nothing is mocked inside the process: the real `ChatOpenAI` / `OpenAIEmbeddings` / `openai` client is pointed at
`fake.base_url` (`http://127.0.0.1:<ephemeral port>/v1`) and talks HTTP to an aiohttp server. That way a test
exercises the same request building, SSE parsing, tool-call accumulation and error mapping as production.

Endpoints
- `POST /v1/chat/completions`: a `chat.completion`, or with `stream: true` a `text/event-stream` of
  `chat.completion.chunk` objects (`data: {...}` lines), a usage chunk when `stream_options.include_usage`, then
  `data: [DONE]`. Tool calls stream as deltas (the function name first, the arguments split across chunks);
  a `response_format` of type `json_schema`/`json_object` is answered with JSON content. `n`, `stop`,
  `max_tokens`/`max_completion_tokens` and `tool_choice` are honoured.
- `POST /v1/embeddings`: deterministic unit vectors from a hash of each input (`embedding_dim`, default 64, or
  the request's `dimensions`), as floats or as base64 float32 (the `openai` client asks for base64 by default).
- `GET /v1/models`: `fake.models`.

Use from a test
    async with FakeOpenAI() as fake:                      # or: fake = await FakeOpenAI().start(); await fake.stop()
        llm = ChatOpenAI(model="gpt-4o-mini", api_key="test-key", base_url=fake.base_url, max_retries=0)
        fake.responder = lambda body: Reply(text="Hello there.")   # what every request is answered with
        fake.faults.append(Fault(status=429, retry_after=2))       # the next chat request fails, then normal
        ...
        assert fake.chat_requests[-1].body["stream"] is True

    fake = FakeOpenAI().start_in_thread()   # for synchronous code or code running its own event loop
    try: ...
    finally: fake.stop_thread()

    The `fake_openai` (async) and `fake_openai_thread` (sync) fixtures below wrap both; import them into a test
    module (or a conftest) to use them.

Scripting
- `fake.responder(request_json) -> Reply` (or a list of Replies, one per choice when `n` > 1). The default,
  `default_responder`, quotes the start of the last user message in a few sentences, and fills the requested
  schema for structured output / tool calls, choosing enum values (e.g. a routing `agent`) by keywords.
- `Reply(text=...)` plain text; `Reply(json={...})` a structured answer, delivered the way the request asked
  (a call of the forced or first tool when tools are offered, else JSON content); `Reply(tool_call=ToolCall(
  name, arguments))` an explicit tool call. Per reply: `ttft_s`, `tokens_per_s` (chunk pacing), `chunk_size`
  (words per chunk).
- `fake.faults`: a queue of `Fault`s, one consumed per request to its endpoint (chat by default) before the
  responder runs: `status=429` (+ `retry_after`), `500`, `503`..., `hang=True` (never answers: the client times
  out), `drop_after_tokens=N` (stream N chunks, then cut the connection, or with `drop_with_error=True` send
  OpenAI's mid-stream error event), slow variants (`delay_s` before acting, `ttft_s`/`tokens_per_s` overrides).
- `fake.requests` records every request (`RecordedRequest`: method, path, headers with the Authorization value
  redacted, JSON body, monotonic time, streamed; for a streamed chat completion also when its first and last
  token-carrying chunks and its `[DONE]` were written, `first_token_at` / `last_token_at` / `finished_at`);
  `fake.reset()` clears requests, faults, responder and knobs.
- Global pacing knobs for benchmarks: `fake.ttft_s`, `fake.tokens_per_s` (None = as fast as possible).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pytest
from aiohttp import web
from aiohttp.client_exceptions import ClientConnectionResetError

Json = dict[str, Any]

# --------------------------------------------------------------------------------------------------------------
# Scripting types
# --------------------------------------------------------------------------------------------------------------


@dataclass
class ToolCall:
    """An explicit tool call; `name=None` means the tool the request forces, or its first tool."""

    arguments: Json
    name: str | None = None


@dataclass
class Reply:
    """What one choice of a chat completion says, and how fast it says it.

    Exactly one of `text`, `json`, `tool_call` is normally set. `tool_arguments` is the older spelling of
    `json` (kept for existing tests).
    """

    text: str = ""
    json: Json | None = None
    tool_call: ToolCall | None = None
    ttft_s: float | None = None  # None: the server's `ttft_s`
    tokens_per_s: float | None = None  # None: the server's `tokens_per_s`
    chunk_size: int = 1  # words (or argument pieces) per streamed chunk
    tool_arguments: Json | None = None

    def __post_init__(self) -> None:
        if self.json is None and self.tool_arguments is not None:
            self.json = self.tool_arguments
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")


Endpoint = Literal["chat", "embeddings", "models"]


@dataclass
class Fault:
    """One scripted failure, consumed by the next request to `endpoint`.

    - `status`: answer with this HTTP status and OpenAI's error JSON (`retry_after` adds a Retry-After header);
    - `hang`: accept the request and never answer (until the fake stops), so the client times out;
    - `drop_after_tokens`: stream that many chunks, then cut the connection (or, with `drop_with_error`, send
      the error event OpenAI sends mid-stream); for a non-streamed request the connection is cut at once;
    - slow: `delay_s` waits before doing any of the above (or before answering normally), and `ttft_s` /
      `tokens_per_s` override the pacing of this one answer.
    """

    status: int | None = None
    retry_after: float | None = None
    message: str | None = None
    hang: bool = False
    drop_after_tokens: int | None = None
    drop_with_error: bool = False
    delay_s: float = 0.0
    ttft_s: float | None = None
    tokens_per_s: float | None = None
    endpoint: Endpoint = "chat"


@dataclass
class RecordedRequest:
    path: str
    body: Json
    at: float  # time.monotonic() when the request arrived
    streamed: bool
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)  # Authorization's value redacted
    # A streamed chat completion only (time.monotonic(), set as the chunks are written; None until then): the
    # first and the last chunk carrying a token (content or tool-call arguments), and the `[DONE]` line.
    first_token_at: float | None = None
    last_token_at: float | None = None
    finished_at: float | None = None


Responder = Callable[[Json], "Reply | list[Reply]"]

# --------------------------------------------------------------------------------------------------------------
# The default responder
# --------------------------------------------------------------------------------------------------------------

# Word stems per routing label: a word of the question starting with a stem votes for the label.
ROUTING_KEYWORDS: dict[str, tuple[str, ...]] = {
    "billing": ("price", "pricing", "cost", "invoice", "refund", "plan", "pay", "charge", "vat", "trial", "seat",
                "bill", "subscription", "discount", "upgrad", "downgrad", "cancel", "receipt"),
    "technical": ("api", "error", "timeout", "timing", "webhook", "sdk", "sso", "key", "429", "401", "export",
                  "integrat", "bug", "crash", "login", "dashboard", "rate", "token"),
    "policy": ("gdpr", "privacy", "retention", "sla", "security", "dpa", "encrypt", "delete", "cookie",
               "complian", "legal", "subprocessor", "residency", "policy", "terms"),
}


def last_user_text(body: Json) -> str:
    """The text of the last user message (content parts joined)."""
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
            return str(content or "")
    return ""


def question_of(body: Json) -> str:
    """The user's question: the core puts retrieved passages first and the question after `Question:`."""
    text = last_user_text(body)
    if "Question:" in text:
        text = text.rsplit("Question:", 1)[1]
    return text.strip()


def choose_by_keywords(options: list[Any], text: str) -> Any:
    """The option whose keywords (and own name) the text mentions most; ties and no match: the first option."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    best, best_hits = options[0], 0
    for option in options:
        stems = (*ROUTING_KEYWORDS.get(str(option).lower(), ()), str(option).lower())
        hits = sum(1 for word in words if word.startswith(stems))
        if hits > best_hits:
            best, best_hits = option, hits
    return best


def fill_schema(schema: Json, text: str, defs: Json | None = None, name: str = "") -> Any:
    """A value matching a JSON schema; enums are chosen by keywords in `text`, strings say why."""
    defs = defs if defs is not None else schema.get("$defs", schema.get("definitions", {}))
    if "$ref" in schema:
        return fill_schema(defs.get(schema["$ref"].rsplit("/", 1)[-1], {}), text, defs, name)
    for combinator in ("anyOf", "oneOf", "allOf"):
        if schema.get(combinator):
            options = [s for s in schema[combinator] if s.get("type") != "null"] or schema[combinator]
            return fill_schema(options[0], text, defs, name)
    if "enum" in schema:
        return choose_by_keywords(list(schema["enum"]), text)
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object":
        return {key: fill_schema(sub, text, defs, key) for key, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [fill_schema(schema.get("items", {}), text, defs, name)] if schema.get("minItems") else []
    return {"integer": 0, "number": 0.0, "boolean": False, "null": None}.get(kind, f"fake {name or 'value'}")


def requested_schema(body: Json) -> Json | None:
    """The JSON schema a structured-output request wants filled: the called tool's parameters, or the
    `response_format` schema; None for a plain chat request."""
    tool = _chosen_tool(body)
    if tool is not None:
        return tool.get("parameters") or {"type": "object", "properties": {}}
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        return response_format.get("json_schema", {}).get("schema") or {"type": "object", "properties": {}}
    if response_format.get("type") == "json_object":
        return {"type": "object", "properties": {}}
    return None


def default_responder(body: Json) -> Reply:
    """A deterministic answer: the schema filled by keywords, or a few sentences quoting the question."""
    question = question_of(body)
    schema = requested_schema(body)
    if schema is not None:
        return Reply(json=fill_schema(schema, question))
    words = " ".join(question.split()[:6])
    return Reply(
        text=(
            f"Here is what I found about “{words}”. The knowledge base covers this topic in detail. "
            "Follow the steps in the article and contact support if anything is unclear. (Source: test)"
        )
    )


# --------------------------------------------------------------------------------------------------------------
# Shaping a reply into OpenAI's wire format (pure functions)
# --------------------------------------------------------------------------------------------------------------


def _chosen_tool(body: Json) -> Json | None:
    """The function the model will call: the one `tool_choice` names, else the first tool (None: no tools or
    `tool_choice: "none"`)."""
    tools = [t.get("function", {}) for t in body.get("tools") or [] if t.get("type", "function") == "function"]
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return next((t for t in tools if t.get("name") == name), tools[0])
    return tools[0]


def words_of(text: str) -> list[str]:
    """Word-sized pieces keeping their trailing whitespace, like a model's tokens; they join back to `text`."""
    return re.findall(r"\s*\S+\s*", text) if text.strip() else ([text] if text else [])


def _chunks(pieces: list[str], size: int) -> list[str]:
    return ["".join(pieces[i:i + size]) for i in range(0, len(pieces), size)]


@dataclass
class _Choice:
    """One choice, ready to send: content pieces or a tool call's argument pieces, and its finish reason."""

    content: list[str] | None
    tool_name: str | None
    arguments: list[str]
    finish_reason: str
    completion_tokens: int
    call_id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")


def shape_choice(body: Json, reply: Reply) -> _Choice:
    """Decide how a Reply goes on the wire for this request (text, JSON content or a tool call)."""
    tool = _chosen_tool(body)
    call: ToolCall | None = reply.tool_call
    if call is None and reply.json is not None and tool is not None:
        call = ToolCall(reply.json)
    if call is not None:
        name = call.name or (tool or {}).get("name") or "tool"
        arguments = json.dumps(call.arguments)
        pieces = [arguments[i:i + 8 * reply.chunk_size] for i in range(0, len(arguments), 8 * reply.chunk_size)]
        # OpenAI ends a call forced by `tool_choice: {function}` with "stop", a call the model chose with
        # "tool_calls".
        finish = "stop" if isinstance(body.get("tool_choice"), dict) else "tool_calls"
        return _Choice(None, name, pieces, finish, len(words_of(arguments.replace(",", ", "))))
    text = json.dumps(reply.json) if reply.json is not None else reply.text
    finish = "stop"
    stops = body.get("stop") or []
    for stop in [stops] if isinstance(stops, str) else stops:
        if stop and stop in text:
            text = text[:text.index(stop)]
    words = words_of(text)
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit is not None and len(words) > limit:
        words, finish = words[:limit], "length"
    return _Choice(_chunks(words, reply.chunk_size), None, [], finish, len(words))


def _usage(body: Json, completion_tokens: int) -> Json:
    prompt = sum(len(str(m.get("content") or "").split()) for m in body.get("messages", [])) + 3
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }


def _message(choice: _Choice) -> Json:
    message: Json = {"role": "assistant", "content": None, "refusal": None, "annotations": []}
    if choice.tool_name is not None:
        message["tool_calls"] = [{"id": choice.call_id, "type": "function",
                                  "function": {"name": choice.tool_name, "arguments": "".join(choice.arguments)}}]
    else:
        message["content"] = "".join(choice.content or [])
    return message


def completion_json(body: Json, choices: list[_Choice], completion_id: str) -> Json:
    """A whole `chat.completion` object."""
    return {
        "id": completion_id, "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model", ""), "system_fingerprint": "fp_fake", "service_tier": "default",
        "choices": [{"index": i, "message": _message(c), "finish_reason": c.finish_reason, "logprobs": None}
                    for i, c in enumerate(choices)],
        "usage": _usage(body, sum(c.completion_tokens for c in choices)),
    }


def chunk_deltas(choice: _Choice) -> Iterator[tuple[Json, bool]]:
    """The deltas of one streamed choice, in order, each with whether it carries a token (counts for pacing and
    `drop_after_tokens`). The final finish-reason chunk is not included."""
    if choice.tool_name is not None:
        yield {"role": "assistant", "content": None, "refusal": None, "tool_calls": [{
            "index": 0, "id": choice.call_id, "type": "function",
            "function": {"name": choice.tool_name, "arguments": ""}}]}, False
        for piece in choice.arguments:
            yield {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}, True
    else:
        yield {"role": "assistant", "content": "", "refusal": None}, False
        for piece in choice.content or []:
            yield {"content": piece}, True


def error_json(status: int, message: str | None = None) -> Json:
    """OpenAI's error body for a status."""
    kinds = {
        400: ("invalid_request_error", None, "Invalid request."),
        401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
        404: ("invalid_request_error", "model_not_found", "The model does not exist."),
        429: ("rate_limit_exceeded", "rate_limit_exceeded", "Rate limit reached for requests. Please try again."),
        503: ("server_error", None, "The server is overloaded or not ready yet."),
    }
    kind, code, default = kinds.get(status, ("server_error", None, "The server had an error while processing "
                                                                   "your request. Sorry about that!"))
    return {"error": {"message": message or default, "type": kind, "param": None, "code": code}}


def embedding_vector(text: str, dim: int) -> np.ndarray:
    """A deterministic unit vector for a text: the same text always gives the same vector."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


class _Stopping(Exception):
    """The fake is shutting down while a handler waits."""


def _quiet_on_disconnect(
    handler: Callable[[FakeOpenAI, web.Request], Awaitable[web.StreamResponse]],
) -> Callable[[FakeOpenAI, web.Request], Awaitable[web.StreamResponse]]:
    """Turn a shutdown, or a client that went away, into a quiet end of the handler (clients do that)."""

    async def wrapper(self: FakeOpenAI, request: web.Request) -> web.StreamResponse:
        try:
            return await handler(self, request)
        except _Stopping:
            return _cut(request)
        except (ConnectionResetError, ClientConnectionResetError):
            return web.Response(status=499)

    return wrapper


def _cut(request: web.Request) -> web.StreamResponse:
    """Close the connection abruptly, as a crashed upstream or proxy would."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=499)


# --------------------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------------------


class FakeOpenAI:
    """The loopback server; see the module docstring for scripting."""

    def __init__(self, *, ttft_s: float = 0.0, tokens_per_s: float | None = None, embedding_dim: int = 64) -> None:
        self._initial_pacing = (ttft_s, tokens_per_s)
        self.ttft_s = ttft_s
        self.tokens_per_s = tokens_per_s
        self.embedding_dim = embedding_dim
        self.responder: Responder = default_responder
        self.faults: deque[Fault] = deque()
        self.requests: list[RecordedRequest] = []
        self.models = ["gpt-4o-mini", "test-model"]
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if not self.port:
            raise RuntimeError("FakeOpenAI is not started: use `async with FakeOpenAI()` or start_in_thread()")
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        self._stopping = asyncio.Event()
        # Handlers left waiting (hang, slow streams) are woken by `_stopping`; the short timeout is a backstop.
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.port = 0

    async def __aenter__(self) -> FakeOpenAI:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self) -> FakeOpenAI:
        """Serve from a daemon thread with its own event loop (for sync code or code owning another loop)."""
        started: list[BaseException | None] = []
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.start())
                started.append(None)
            except BaseException as error:  # report start failures to the caller's thread
                started.append(error)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-openai", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("FakeOpenAI did not start within 10 s")
        if started[0] is not None:
            raise started[0]
        return self

    def stop_thread(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        asyncio.run_coroutine_threadsafe(self.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def reset(self) -> None:
        """Forget requests and faults, restore the default responder and the constructor's pacing."""
        self.requests.clear()
        self.faults.clear()
        self.responder = default_responder
        self.ttft_s, self.tokens_per_s = self._initial_pacing

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def embedding_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/embeddings")]

    # --- plumbing --------------------------------------------------------------------------------------------
    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake (raising `_Stopping`) as soon as the fake is stopped."""
        if seconds <= 0:
            return
        assert self._stopping is not None
        if seconds == float("inf"):
            await self._stopping.wait()
            raise _Stopping
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return
        raise _Stopping

    async def _record(self, request: web.Request, endpoint: Endpoint) -> tuple[Json, Fault | None]:
        body, fault, _ = await self._record_request(request, endpoint)
        return body, fault

    async def _record_request(self, request: web.Request,
                              endpoint: Endpoint) -> tuple[Json, Fault | None, RecordedRequest]:
        body: Json = {}
        if request.method == "POST":
            try:
                body = await request.json()
            except ValueError:
                body = {"_invalid_json": await request.text()}
        headers = {k: ("<redacted>" if k.lower() == "authorization" else v) for k, v in request.headers.items()}
        record = RecordedRequest(request.path, body, time.monotonic(), bool(body.get("stream")), request.method,
                                 headers)
        self.requests.append(record)
        fault = next((f for f in self.faults if f.endpoint == endpoint), None)
        if fault is not None:
            self.faults.remove(fault)
        return body, fault, record

    async def _apply_fault(
        self, request: web.Request, fault: Fault | None, streamed: bool = False
    ) -> web.StreamResponse | None:
        """Act out the fault's failure part; a response to return instead of the normal answer, or None."""
        if fault is None:
            return None
        await self._pause(fault.delay_s)
        if fault.hang:
            await self._pause(float("inf"))
        if fault.status:
            headers = {"x-request-id": f"req_{uuid.uuid4().hex}"}
            if fault.retry_after is not None:
                headers["Retry-After"] = f"{fault.retry_after:g}"
            return web.json_response(error_json(fault.status, fault.message), status=fault.status, headers=headers)
        if fault.drop_after_tokens is not None and not streamed:
            return _cut(request)
        return None

    # --- handlers --------------------------------------------------------------------------------------------
    @_quiet_on_disconnect
    async def _models(self, request: web.Request) -> web.StreamResponse:
        _, fault = await self._record(request, "models")
        failed = await self._apply_fault(request, fault)
        if failed is not None:
            return failed
        return web.json_response({"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]})

    @_quiet_on_disconnect
    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body, fault = await self._record(request, "embeddings")
        failed = await self._apply_fault(request, fault)
        if failed is not None:
            return failed
        if "input" not in body or "model" not in body:
            return web.json_response(error_json(400, "'input' and 'model' are required."), status=400)
        raw = body["input"]
        # str, list[str], list[int] (one tokenised input) or list[list[int]]
        inputs = [raw] if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int)) \
            else list(raw)
        dim = int(body.get("dimensions") or self.embedding_dim)
        data = []
        for index, item in enumerate(inputs):
            vector = embedding_vector(item if isinstance(item, str) else json.dumps(item), dim)
            encoded: Any = (base64.b64encode(vector.astype("<f4").tobytes()).decode()
                            if body.get("encoding_format") == "base64" else vector.tolist())
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(len(str(item).split()) for item in inputs)
        return web.json_response({"object": "list", "data": data, "model": body["model"],
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    @_quiet_on_disconnect
    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body, fault, record = await self._record_request(request, "chat")
        streamed = bool(body.get("stream"))
        failed = await self._apply_fault(request, fault, streamed)
        if failed is not None:
            return failed
        invalid = self._invalid_chat(body)
        if invalid:
            return web.json_response(error_json(400, invalid), status=400)
        replies = self.responder(body)
        replies = replies if isinstance(replies, list) else [replies] * int(body.get("n") or 1)
        choices = [shape_choice(body, reply) for reply in replies]
        first = replies[0]
        ttft = next(v for v in (fault and fault.ttft_s, first.ttft_s, self.ttft_s, 0.0) if v is not None)
        rate = next((v for v in (fault and fault.tokens_per_s, first.tokens_per_s, self.tokens_per_s)
                     if v is not None), None)
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        if not streamed:
            longest = max(sum(len(words_of(p)) for p in c.content or c.arguments) for c in choices)
            await self._pause(ttft + (max(longest - 1, 0) / rate if rate else 0.0))
            return web.json_response(completion_json(body, choices, completion_id),
                                     headers={"x-request-id": f"req_{uuid.uuid4().hex}"})
        drop = fault.drop_after_tokens if fault else None
        return await self._stream(request, body, choices, completion_id, ttft, rate, drop,
                                  bool(fault and fault.drop_with_error), record)

    @staticmethod
    def _invalid_chat(body: Json) -> str | None:
        """The 400 message OpenAI gives for a malformed request, or None."""
        if "_invalid_json" in body:
            return "We could not parse the JSON body of your request."
        if not body.get("model"):
            return "you must provide a model parameter"
        if not body.get("messages"):
            return "'messages' is a required property"
        if body.get("stream_options") is not None and not body.get("stream"):
            return "The 'stream_options' parameter is only allowed when 'stream' is enabled."
        return None

    async def _stream(self, request: web.Request, body: Json, choices: list[_Choice], completion_id: str,
                      ttft: float, rate: float | None, drop_after: int | None,
                      drop_with_error: bool, record: RecordedRequest | None = None) -> web.StreamResponse:
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
            "x-request-id": f"req_{uuid.uuid4().hex}"})
        await response.prepare(request)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base: Json = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()),
                      "model": body.get("model", ""), "system_fingerprint": "fp_fake", "service_tier": "default"}
        if include_usage:
            base["usage"] = None  # OpenAI sends `"usage": null` on every chunk but the last when usage is asked

        async def send(payload: Json) -> None:
            await response.write(f"data: {json.dumps(payload)}\n\n".encode())

        def chunk(index: int, delta: Json, finish: str | None = None) -> Json:
            return {**base, "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}]}

        # Choices are interleaved step by step (index order kept, as the client's accumulator expects).
        streams = [list(chunk_deltas(c)) for c in choices]
        started = time.monotonic() + ttft
        words_sent = 0.0
        tokens_sent = 0
        await self._pause(ttft)
        for step in range(max(len(s) for s in streams)):
            for index, deltas in enumerate(streams):
                if step >= len(deltas):
                    continue
                delta, is_token = deltas[step]
                if is_token:
                    if drop_after is not None and tokens_sent >= drop_after:
                        if not drop_with_error:
                            return _cut(request)
                        await send(error_json(500, "The server had an error while streaming the response."))
                        await response.write_eof()
                        return response
                    if rate and tokens_sent:
                        await self._pause(started + words_sent / rate - time.monotonic())
                    words_sent += max(len(words_of(str(delta.get("content") or ""))), 1)
                    tokens_sent += 1
                await send(chunk(index, delta))
                if is_token and record is not None:
                    record.last_token_at = time.monotonic()
                    if record.first_token_at is None:
                        record.first_token_at = record.last_token_at
        for index, choice in enumerate(choices):
            await send(chunk(index, {}, choice.finish_reason))
        if include_usage:
            usage = _usage(body, sum(c.completion_tokens for c in choices))
            await send({**base, "choices": [], "usage": usage})
        await response.write(b"data: [DONE]\n\n")
        if record is not None:
            record.finished_at = time.monotonic()
        await response.write_eof()
        return response


# --------------------------------------------------------------------------------------------------------------
# Fixtures (import into a test module or conftest to use)
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    """A started fake on the test's event loop."""
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def fake_openai_thread() -> Iterator[FakeOpenAI]:
    """A started fake serving from its own thread and loop, for synchronous tests."""
    fake = FakeOpenAI().start_in_thread()
    try:
        yield fake
    finally:
        fake.stop_thread()

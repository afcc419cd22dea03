"""A chat model's answer as text pieces, with as little work per streamed token as the wire allows.

Why not `BaseChatModel.astream` for the OpenAI-compatible model: for every streamed chunk the openai SDK builds
its pydantic models (a runtime `Protocol` isinstance per field), langchain-openai dumps them back to a dict,
builds an `AIMessageChunk` and a `ChatGenerationChunk`, and waits for the next one through `asyncio.wait_for` (a
task per chunk). Together that was about 0.15 ms of CPU per token, the largest single cost of a 200-question
burst (issue 12's profile). An answer needs only each delta's text and, at the end, the usage.

So for `ChatOpenAI` the request is the one `ChatOpenAI` itself would send (its `_get_request_payload`: model,
temperature, model kwargs, `extra_body`, the workspace's `bind(model=...)`, messages converted the same way),
sent as is over aiohttp with its client's URL, headers and timeouts (`core.openai_wire`, raising the SDK's error
types, which `core.retry` classifies), and the response is read as the Server-Sent Events it is: one
`json.loads` per chunk. A client the wire does not reach as the SDK would (Azure, a token provider) sends the
same request through the SDK's `post` instead, its call for requests it has no method for. Stalls
between chunks are bounded by the client's read timeout and by the turn's budget, one timer around the whole
attempt (`core.retry.stream_with_retries`), not one per chunk.

Any other chat model, or a `ChatOpenAI` configured for what this reader does not speak (the Responses API, a
structured `response_format`), streams through langchain as before. `tests/test_answer_stream.py` checks that
both paths send the same request and yield the same text.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from langchain_core.messages import BaseMessage

from core.openai_wire import sdk_request, wire_for

UsageSink = Callable[[int], None]  # receives the answer's output tokens, when the server reports them
_REQUEST_OPTIONS = frozenset({"extra_headers", "extra_query", "timeout"})  # not body fields
_ONLY_BINDABLE = frozenset({"model"})  # what a binding may set for the wire reader (`core.workspaces`)


def answer_pieces(llm: Any, messages: Sequence[BaseMessage], on_usage: UsageSink | None = None
                  ) -> AsyncIterator[str]:
    """The answer's non-empty text pieces, as the model streams them; `on_usage` gets the output tokens."""
    target = _wire_target(llm)
    if target is None:
        return _langchain_pieces(llm, messages, on_usage)
    model, bound = target
    return _wire_pieces(model, bound, messages, on_usage)


def _wire_target(llm: Any) -> tuple[Any, dict[str, Any]] | None:
    """(the `ChatOpenAI`, the keyword arguments bound to it) when the wire reader can stream for it, else None."""
    from langchain_core.runnables import RunnableBinding
    from langchain_openai import ChatOpenAI

    bound: dict[str, Any] = {}
    if isinstance(llm, RunnableBinding):
        bound, llm = dict(llm.kwargs), llm.bound
        if set(bound) - _ONLY_BINDABLE:
            return None
    if type(llm) is not ChatOpenAI or not hasattr(llm, "_get_request_payload"):  # subclasses build other requests
        return None
    return llm, bound


async def _wire_pieces(llm: Any, bound: dict[str, Any], messages: Sequence[BaseMessage],
                       on_usage: UsageSink | None) -> AsyncIterator[str]:
    asked: dict[str, Any] = {"stream": True, **bound}  # what `ChatOpenAI.astream` would pass for this turn
    if llm._should_stream_usage(None, **asked):
        asked["stream_options"] = {"include_usage": True}
    body = llm._get_request_payload(list(messages), **asked)
    # What this reader does not speak (structured output, the Responses API, options `create` would take out of
    # the body) goes to langchain, with the same bindings.
    if "response_format" in body or llm._use_responses_api(body) or "messages" not in body or \
            set(body) & _REQUEST_OPTIONS:
        async for piece in _langchain_pieces(llm.bind(**bound) if bound else llm, messages, on_usage):
            yield piece
        return
    wire = wire_for(llm.root_async_client)
    if wire is None:  # a client the wire does not reach as the SDK would (Azure, a token provider)
        async for piece in _sdk_pieces(llm, body, on_usage):
            yield piece
        return
    body.update(body.pop("extra_body", None) or {})  # what the SDK does with `extra_body`: merged into the JSON
    async with wire.stream(body) as lines:
        async for piece in _read_chunks(lines, wire.url, on_usage):
            yield piece


async def _read_chunks(lines: AsyncIterator[str], url: str, on_usage: UsageSink | None) -> AsyncIterator[str]:
    """The text pieces of a chat completion's Server-Sent Events: one `json.loads` per chunk."""
    import openai

    async for line in lines:
        if not line.startswith("data:"):
            continue  # blank separators, comments (": keep-alive"), `event:` lines
        data = line[5:].strip()
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        if chunk.get("error"):  # an error sent inside the stream, as the SDK's own reader raises it
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise openai.APIError(message or "the model's stream reported an error", sdk_request(url), body=error)
        usage = chunk.get("usage")
        if usage and on_usage is not None and usage.get("completion_tokens") is not None:
            on_usage(int(usage["completion_tokens"]))
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            text = (choice.get("delta") or {}).get("content")
            if isinstance(text, str) and text:
                yield text


async def _sdk_pieces(llm: Any, body: dict[str, Any], on_usage: UsageSink | None) -> AsyncIterator[str]:
    """The same request through the SDK client's own `post` (its auth hooks and transport)."""
    extra_body = body.pop("extra_body", None)
    options: dict[str, Any] = {"security": {"bearer_auth": True}}  # what `create` asks of its client
    if extra_body:
        options["extra_json"] = extra_body
    # The SDK's documented way to send a request as is ("undocumented requests": `client.post(..., cast_to=
    # httpx.Response)`), so the body is not walked by its type-driven transform (~1 ms per question), and
    # streamed: the response comes back unread, errors (4xx, 5xx) are raised as `create` raises them.
    response = await llm.root_async_client.post("/chat/completions", cast_to=_raw_response_type(), body=body,
                                                 options=options, stream=True)
    try:
        async for piece in _read_chunks(response.aiter_lines(), str(response.request.url), on_usage):
            yield piece
    finally:
        await response.aclose()


def _raw_response_type() -> type:
    """The HTTP response class of the openai SDK's transport (httpx2 in openai 2.x, httpx before)."""
    try:
        import httpx2

        return httpx2.Response
    except ImportError:  # pragma: no cover - an SDK still on httpx
        import httpx

        return httpx.Response


async def _langchain_pieces(llm: Any, messages: Sequence[BaseMessage], on_usage: UsageSink | None
                            ) -> AsyncIterator[str]:
    async for chunk in llm.astream(list(messages)):
        usage = getattr(chunk, "usage_metadata", None)
        if usage and on_usage is not None and usage.get("output_tokens") is not None:
            on_usage(int(usage["output_tokens"]))
        if isinstance(chunk.content, str) and chunk.content:
            yield chunk.content

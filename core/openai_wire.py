"""A streamed chat completion straight over aiohttp, for the answer's tokens (`core.answer_stream`).

Why not the openai SDK's `post`: each request goes through its request building (options, an idempotency key from
`uuid4`, header merging), its auth hook, httpx2's client and the SDK's httpx2→aiohttp transport; each streamed
line then climbs httpx2's byte, text and line decoders, four generators deep, before the reader sees it. In a
200-question burst that was about a tenth of the event loop's CPU (issue 12). Here the request is one aiohttp
`post` with the headers and timeouts the SDK client was built with, and lines come from aiohttp's own reader.

Failures keep the SDK's types, so `core.retry` classifies them as it always has: an HTTP error status raises the
`openai.APIStatusError` subclass the SDK raises for it (its body and headers kept, `Retry-After` included), a
connection that fails `openai.APIConnectionError`, a timeout `openai.APITimeoutError`.

Only a plain `openai.AsyncOpenAI` with a fixed API key and no default query is streamed this way
(`wire_for`); Azure, token providers and custom query parameters keep the SDK's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai

_BY_STATUS: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError, 401: openai.AuthenticationError, 403: openai.PermissionDeniedError,
    404: openai.NotFoundError, 409: openai.ConflictError, 422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
}
KEEPALIVE_S = 15.0  # as the SDK's aiohttp client: a burst's connections are reused, idle ones go


class OpenAIWire:
    """One OpenAI-compatible server as the SDK client `client` reaches it: its URL, headers and timeouts, and
    an aiohttp session of our own (opened on first use, on the event loop that uses it)."""

    def __init__(self, client: openai.AsyncOpenAI) -> None:
        self.url = str(client.base_url).rstrip("/") + "/chat/completions"
        headers = {name: value for name, value in client.default_headers.items() if isinstance(value, str)}
        headers.update({name: value for name, value in client.auth_headers.items() if isinstance(value, str)})
        headers["Accept"] = "text/event-stream"
        self._headers = headers
        self._timeout = _client_timeout(client.timeout)
        self._proxy = _env_proxy(self.url)
        self._session: aiohttp.ClientSession | None = None
        self.closed = False

    def _opened(self) -> aiohttp.ClientSession:
        if self.closed:
            raise RuntimeError("the chat model's HTTP client is closed")
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session._loop is not loop:  # noqa: SLF001
            connector = aiohttp.TCPConnector(limit=1000, keepalive_timeout=KEEPALIVE_S)
            # trust_env off: with it, aiohttp looks the host up in ~/.netrc in a worker thread on every request.
            # The environment's proxy, which it would also read, is resolved once instead (`_env_proxy`).
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    @contextlib.asynccontextmanager
    async def stream(self, body: dict[str, Any]) -> AsyncIterator[AsyncIterator[str]]:
        """POST `body` and give its response's lines as they arrive; errors are raised as the SDK's."""
        session = self._opened()
        try:
            async with session.post(self.url, data=json.dumps(body), headers=self._headers,
                                    proxy=self._proxy) as response:
                if response.status >= 400:
                    raise _status_error(response.status, response.headers, await response.read(), self.url)
                yield _lines(response)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _transport_error(exc, self.url) from exc

    async def aclose(self) -> None:
        self.closed = True
        if self._session is not None and not self._session.closed:
            await self._session.close()


async def _lines(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """The response's non-blank lines as text, without their line ends. A connection cut or stalled mid-answer
    raises here, inside `stream`'s block, which maps it like any other transport error.

    Read as whatever arrived (`iter_any`) and split here, not line by line (`readline`): a model's chunk is a
    `data:` line and a blank one, so that was two reads and two hand-overs per token where one does. A line (or a
    character) cut between two reads waits, as bytes, for the rest."""
    rest = b""
    async for data in response.content.iter_any():
        *lines, rest = (rest + data).split(b"\n") if rest else data.split(b"\n")
        for line in lines:
            if line.strip():
                yield line.decode()
    if rest.strip():
        yield rest.decode()


_wires: weakref.WeakKeyDictionary[Any, OpenAIWire] = weakref.WeakKeyDictionary()


def wire_for(client: Any) -> OpenAIWire | None:
    """The wire for the SDK client `client`, or None when it needs the SDK's own path (see the module)."""
    if type(client) is not openai.AsyncOpenAI or not isinstance(client.api_key, str):
        return None
    if client.default_query:  # e.g. Azure's api-version
        return None
    wire = _wires.get(client)
    if wire is None:
        wire = _wires[client] = OpenAIWire(client)
    return wire


async def close_wire(client: Any) -> None:
    """Close the wire of `client`; later streams through it raise instead of reopening it."""
    wire = wire_for(client)
    if wire is not None:
        await wire.aclose()


def _env_proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (HTTPS_PROXY / HTTP_PROXY, unless NO_PROXY covers its host), as
    the SDK's own clients honour it; None for a direct connection."""
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    parts = urlsplit(url)
    if not parts.hostname or proxy_bypass(parts.hostname):
        return None
    return getproxies().get(parts.scheme)


def _client_timeout(timeout: Any) -> aiohttp.ClientTimeout:
    """The SDK client's timeout (seconds, or an httpx-style Timeout) as aiohttp's: connecting, and each read."""
    if isinstance(timeout, (int, float)):
        return aiohttp.ClientTimeout(total=None, sock_connect=float(timeout), sock_read=float(timeout))
    connect, read = getattr(timeout, "connect", None), getattr(timeout, "read", None)
    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)


def sdk_request(url: str) -> Any:
    """The request as the SDK's errors carry it (an httpx2 request)."""
    import httpx2

    return httpx2.Request("POST", url)


def _status_error(status: int, headers: Any, raw: bytes, url: str) -> openai.APIStatusError:
    """The SDK's error for an HTTP error status: its class, message, body and response (headers kept)."""
    import httpx2

    text = raw.decode("utf-8", "replace").strip()
    body: Any = text
    message = f"Error code: {status}"
    try:
        body = json.loads(text)
    except ValueError:
        pass
    else:
        error = body.get("error", body) if isinstance(body, dict) else None
        detail = error.get("message") if isinstance(error, dict) else None
        if isinstance(detail, str) and detail:
            message += f" - {detail}"
    response = httpx2.Response(status, headers=list(headers.items()), content=raw, request=sdk_request(url))
    kind = _BY_STATUS.get(status) or (openai.InternalServerError if status >= 500 else openai.APIStatusError)
    data = body.get("error", body) if isinstance(body, dict) else body  # what the SDK keeps as the error's body
    return kind(message, response=response, body=data)


def _transport_error(exc: BaseException, url: str) -> openai.APIError:
    if isinstance(exc, asyncio.TimeoutError) and not isinstance(exc, aiohttp.ClientConnectorError):
        return openai.APITimeoutError(sdk_request(url))
    return openai.APIConnectionError(message=f"Connection error: {exc}", request=sdk_request(url))

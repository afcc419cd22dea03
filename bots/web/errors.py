"""The API's one promise for bad requests: a JSON error with the documented status, never aiohttp's text page or
a traceback.

`json_errors` is the outermost middleware: aiohttp's own `HTTPException`s (404 for an unknown path, 405 with its
`Allow` header, the 413 raised while reading a body over `client_max_size`) are re-rendered as JSON with their
status and headers kept, and anything unexpected becomes a logged 500 JSON. `read_json_object` reads a POST body
the strict way every JSON endpoint shares: `application/json` only (a text/plain POST is what any web page can send
without a CORS preflight), a known charset, bounded nesting and numbers (Python raises RecursionError and
ValueError for those, which used to escape as 500 text/plain).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

# Headers of an aiohttp HTTPException worth keeping on the JSON rendering of it.
KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")
# One sentence per status aiohttp raises by itself, for a person reading the error.
SENTENCES = {
    400: "The request could not be read.",
    404: "There is nothing at this address.",
    405: "This address does not take that method.",
    413: "The request body is too large.",
    415: "The request body has a type this address does not take.",
}


def json_error(status: int, message: str, detail: str = "", headers: dict[str, str] | None = None
               ) -> web.Response:
    """The API's error body: `{"error": sentence, "detail": what to do}`."""
    return web.json_response({"error": message, "detail": detail}, status=status, headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """aiohttp's text errors and unexpected exceptions as JSON (a prepared SSE stream is left alone: it ends
    with its own `error` event)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        headers = {name: exc.headers[name] for name in KEPT_HEADERS if name in exc.headers}
        sentence = SENTENCES.get(exc.status, exc.reason)
        detail = exc.text if exc.text and exc.text != f"{exc.status}: {exc.reason}" else ""
        return json_error(exc.status, sentence, detail, headers)
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return json_error(500, "Something went wrong on our side.", "Please try again in a moment.")


class BodyError(Exception):
    """A request body refused, with the JSON response that says why."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.text)
        self.response = response


async def read_json_object(request: web.Request, example: str) -> dict[str, Any]:
    """The body as a JSON object, or `BodyError` carrying a 400/413/415 JSON response.

    `example` is the body to show in the sentence ('{"message": "your question"}').
    """
    if request.content_type != "application/json":
        raise BodyError(json_error(415, "Send the body as JSON (Content-Type: application/json).",
                                   f"Send {example} with Content-Type: application/json."))
    charset = request.charset or "utf-8"
    raw = await request.read()  # over client_max_size: aiohttp's 413, rendered as JSON by `json_errors`
    try:
        text = raw.decode(charset)
    except LookupError:  # unknown, or not a text encoding ("base64")
        raise BodyError(json_error(415, f"Unknown charset {charset[:40]!r}.", "Send the body as UTF-8.")) from None
    except UnicodeDecodeError:
        raise BodyError(json_error(400, f"The request body is not valid {charset[:40]}.", f"Send {example}.")
                        ) from None
    try:
        body = json.loads(text)
    except ValueError:  # JSONDecodeError, and ints over sys.get_int_max_str_digits (a 5,000-digit number)
        raise BodyError(json_error(400, "The request body is not valid JSON.", f"Send {example}.")) from None
    except RecursionError:
        raise BodyError(json_error(400, "The request body is nested too deeply.", f"Send {example}.")) from None
    if not isinstance(body, dict):
        raise BodyError(json_error(400, "The request body must be a JSON object.", f"Send {example}."))
    return body

"""CORS for the configured origins (WEB_CORS_ORIGINS) and for nothing else, on every response including the SSE
stream.

The headers are added in `on_response_prepare`, the moment aiohttp is about to send a response's headers: a
middleware that adds them after the handler returns is too late for a `StreamResponse` the handler has already
prepared, which is why the SSE answer used to carry no `Access-Control-Allow-Origin` and an embedded chat on an
allowed origin could not read it. A preflight (OPTIONS with `Access-Control-Request-Method`) is answered 204 by the
middleware before routing; for an origin not on the list it carries no CORS headers, so the browser refuses.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

ALLOW_METHODS = "GET, POST, DELETE, OPTIONS"
ALLOW_HEADERS = "Content-Type, Authorization, X-API-Key, X-Session-Secret"  # the last: bots/web/sessions.py
EXPOSE_HEADERS = "Retry-After"  # so a page can honour a 429's wait
MAX_AGE_S = "600"


class Cors:
    """The origin check and the headers; `install(app)` wires both halves."""

    def __init__(self, origins: list[str]) -> None:
        self.origins = frozenset(origins)

    def allows(self, origin: str | None) -> bool:
        return bool(origin) and (origin in self.origins or "*" in self.origins)

    def install(self, app: web.Application) -> None:
        app.middlewares.append(self.preflight)
        app.on_response_prepare.append(self.add_headers)

    @web.middleware
    async def preflight(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method == "OPTIONS" and request.headers.get("Origin"):
            return web.Response(status=204)
        return await handler(request)

    async def add_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        vary = response.headers.get("Vary", "")
        if self.origins and "origin" not in vary.lower():  # caches must not give one origin's answer to another
            response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
        if not self.allows(origin):
            return
        assert origin is not None
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
            response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
            response.headers["Access-Control-Max-Age"] = MAX_AGE_S

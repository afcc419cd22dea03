"""The loopback HTTP server the source fakes share: a thread serving 127.0.0.1, a log of every request, and
forced answers (429 with Retry-After, 5xx, 401) for the next requests matching a path.

    with FakeWebsite() as site:            # any subclass; `route(request)` answers
        site.throttle("/docs/a", retry_after=1)   # the next request there answers 429, Retry-After: 1
        site.fail("/docs/b", status=500, times=3)
        ...
        site.hits_to("/docs/a")            # [Hit(...), ...] with `at` (monotonic) and the status answered

The clients under test are synchronous (requests, httpx), so the server runs on its own thread.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body or b"{}")


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, data: Any, status: int = 200, **headers: str) -> Reply:
        return cls(status, json.dumps(data).encode(), {"Content-Type": "application/json", **headers})

    @classmethod
    def text(cls, text: str, content_type: str = "text/plain", status: int = 200, **headers: str) -> Reply:
        return cls(status, text.encode(), {"Content-Type": f"{content_type}; charset=utf-8", **headers})


@dataclass
class Hit:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    at: float
    status: int = 0


@dataclass
class _Forced:
    fragment: str
    reply: Reply
    times: int


class FakeServer:
    """Subclasses implement `route(request) -> Reply`; everything else (threading, logging, forced answers) is
    here. `rate_limited_reply` and `error_reply` shape forced answers as the real API would."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self._forced: list[_Forced] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- answers ---------------------------------------------------------------------------------------------
    def route(self, request: Request) -> Reply:  # pragma: no cover - subclasses answer
        raise NotImplementedError

    def rate_limited_reply(self, retry_after: float) -> Reply:
        return Reply.json({"error": "rate limited"}, 429, **{"Retry-After": f"{retry_after:g}"})

    def error_reply(self, status: int) -> Reply:
        return Reply.json({"error": f"HTTP {status}"}, status)

    def throttle(self, fragment: str, retry_after: float = 1, times: int = 1) -> None:
        """The next `times` requests whose path contains `fragment` answer 429 with Retry-After."""
        with self._lock:
            self._forced.append(_Forced(fragment, self.rate_limited_reply(retry_after), times))

    def fail(self, fragment: str, status: int = 500, times: int = 1) -> None:
        with self._lock:
            self._forced.append(_Forced(fragment, self.error_reply(status), times))

    def _answer(self, request: Request) -> Reply:
        with self._lock:
            for forced in self._forced:
                if forced.times > 0 and forced.fragment in request.path:
                    forced.times -= 1
                    return forced.reply
        return self.route(request)

    # --- the log ---------------------------------------------------------------------------------------------
    def hits_to(self, fragment: str) -> list[Hit]:
        with self._lock:
            return [h for h in self.hits if fragment in h.path]

    def reset_hits(self) -> None:
        with self._lock:
            self.hits.clear()

    # --- the server ------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "start the fake first"
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> FakeServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(self.command, parts.path,
                                  {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()},
                                  {k.lower(): v for k, v in self.headers.items()},
                                  self.rfile.read(length) if length else b"")
                hit = Hit(request.method, request.path, request.query, request.headers, time.monotonic())
                try:
                    reply = fake._answer(request)
                except Exception as exc:  # noqa: BLE001 - a bug in a fake shows as a 500 with its text
                    reply = Reply.text(f"fake error: {type(exc).__name__}: {exc}", status=500)
                hit.status = reply.status
                with fake._lock:
                    fake.hits.append(hit)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if self.command != "HEAD" and reply.status not in (204, 304):
                    self.wfile.write(reply.body)

            do_GET = do_POST = do_HEAD = do_PATCH = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""Web sessions that belong to their creator, and the API key check (issue 15, items 2 and 3).

Why: a client-chosen session id used to be the only credential, so client B posting to A's id read A's
conversation through the model and could delete it. Now every session has a *secret* the server derives from its
id with a server key (HMAC-SHA256), so nothing is stored and every replica with the same key agrees:

- POST /chat without `session_id` gets a new server-issued id; its secret comes back in the `start` event
  (`session_secret`). Posting to that session again, GET/DELETE /sessions/{id} and POST /handoff need the secret
  (header `X-Session-Secret`, or `session_secret` in a JSON body), or the browser cookie below.
- The chat page gets a signed, HttpOnly, SameSite=Strict cookie naming a random *browser id* when it is served;
  sessions it starts are named `<browser id>.<random>`, so the cookie proves ownership without the page ever
  holding a secret that script could read.
- A client may still name a *new* conversation itself (older clients do): the first POST claims the id and gets
  its secret; an id that already has a conversation answers 403 without its credential, and GET/DELETE answer
  the same 404 for "not yours" as for "not there", so ids cannot be probed.
- `WEB_API_KEYS`: when set, POST /chat, POST /handoff and /sessions need one of the keys (`Authorization:
  Bearer <key>` or `X-API-Key`), or the chat page's cookie (anything else gets 401 JSON). A key admits a client
  to the API; it does not open other clients' sessions.

The server key is `WEB_SESSION_SECRET` (set the same value on every replica), else a random key kept in
`<data dir>/web-session.key` (so a restart keeps sessions usable), else, on a read-only data directory, a random
key for this process only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

COOKIE = "switchboard_browser"
SECRET_HEADER = "X-Session-Secret"
KEY_FILE = "web-session.key"
COOKIE_MAX_AGE_S = 30 * 24 * 3600
_SESSION = b"session\x00"
_BROWSER = b"browser\x00"


def _mac(key: bytes, purpose: bytes, value: str, length: int) -> str:
    digest = hmac.new(key, purpose + value.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:length]


class SessionGuard:
    """Issues session ids and secrets, the browser cookie, and checks a request's credential for a session."""

    def __init__(self, key: bytes, api_keys: Iterable[str] = ()) -> None:
        if len(key) < 16:
            raise ValueError("the web session key must be at least 16 bytes")
        self._key = key
        self.api_keys = frozenset(k for k in api_keys if k)

    @classmethod
    def from_settings(cls, settings: Any) -> SessionGuard:
        """The guard for these settings (duck-typed: `web_session_secret`, `web_api_keys`, `data_dir`)."""
        configured = getattr(settings, "web_session_secret", None)
        if configured is not None:
            secret = _secret_value(configured)
            if len(secret) < 16:
                log.warning("WEB_SESSION_SECRET is shorter than 16 characters: session secrets signed with it are "
                            "easier to forge. Use a long random value (openssl rand -hex 32).")
            key = hashlib.sha256(b"switchboard web sessions\x00" + secret.encode()).digest()  # any length works
        else:
            key = _stored_key(Path(getattr(settings, "data_dir", ".")))
            if getattr(settings, "redis_url", None) is not None:
                log.warning("REDIS_URL is set but WEB_SESSION_SECRET is not: each replica signs web sessions with "
                            "its own key, so a conversation continued on another replica is refused (403). Set "
                            "WEB_SESSION_SECRET to the same value on every replica.")
        keys = [_secret_value(k) for k in (getattr(settings, "web_api_keys", None) or ())]
        return cls(key, keys)

    # --- sessions -----------------------------------------------------------------------------------------------
    def secret_for(self, session_id: str) -> str:
        """The session's secret: whoever holds it may use the session."""
        return _mac(self._key, _SESSION, session_id, 32)

    def new_session_id(self, browser: str | None = None) -> str:
        """A fresh, unguessable id; a chat page's sessions carry its browser id so its cookie owns them."""
        return f"{browser}.{uuid.uuid4().hex}" if browser else uuid.uuid4().hex

    def owns(self, request: web.Request, session_id: str, body: Mapping[str, Any] | None = None) -> bool:
        """Whether the request carries this session's credential: its secret, or the cookie of the browser that
        started it."""
        presented = request.headers.get(SECRET_HEADER)
        if presented is None and body is not None and isinstance(body.get("session_secret"), str):
            presented = body["session_secret"]
        if presented is not None and hmac.compare_digest(presented.encode(), self.secret_for(session_id).encode()):
            return True
        browser = self.browser_of(request)
        return browser is not None and session_id.startswith(browser + ".")

    # --- the chat page's cookie ---------------------------------------------------------------------------------
    def browser_of(self, request: web.Request) -> str | None:
        """The browser id of a validly signed cookie, else None (a forged or stale cookie is ignored)."""
        value = request.cookies.get(COOKIE, "")
        browser, _, signature = value.partition(".")
        if not browser or not signature:
            return None
        expected = _mac(self._key, _BROWSER, browser, 32)
        return browser if hmac.compare_digest(signature.encode(), expected.encode()) else None

    def issue_cookie(self, request: web.Request, response: web.StreamResponse) -> None:
        """Give the page a signed browser cookie unless it has a valid one: HttpOnly (script cannot read it),
        SameSite=Strict (no other site's page can send it), Secure when served over HTTPS."""
        if self.browser_of(request) is not None:
            return
        browser = secrets.token_hex(12)
        response.set_cookie(COOKIE, f"{browser}.{_mac(self._key, _BROWSER, browser, 32)}", path="/",
                            max_age=COOKIE_MAX_AGE_S, httponly=True, samesite="Strict", secure=request.secure)

    # --- API keys -----------------------------------------------------------------------------------------------
    def api_allowed(self, request: web.Request) -> bool:
        """True without WEB_API_KEYS; with it, a known key or the chat page's cookie."""
        if not self.api_keys:
            return True
        auth = request.headers.get("Authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("X-API-Key", "")
        if key and any(hmac.compare_digest(key.encode(), known.encode()) for known in self.api_keys):
            return True
        return self.browser_of(request) is not None


def _secret_value(value: Any) -> str:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)


def _stored_key(data_dir: Path) -> bytes:
    """The key kept in the data directory (created once, owner-only), or a per-process one if it cannot be."""
    path = data_dir / KEY_FILE
    try:
        existing = path.read_bytes().strip()
        if len(existing) >= 32:
            return existing
    except OSError:
        pass
    key = secrets.token_hex(32).encode()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
        return key
    except FileExistsError:  # another process (a `--workers` sibling) creates it at this moment: use theirs
        for _ in range(50):
            existing = path.read_bytes().strip()
            if len(existing) >= 32:
                return existing
            time.sleep(0.01)
        return existing
    except OSError:
        log.warning("Cannot keep the web session key in %s; web sessions last until this process stops "
                    "(set WEB_SESSION_SECRET to keep them, and the same value on every replica).", data_dir)
        return key


def start_frame(session_id: str, secret: str) -> bytes:
    """The SSE `start` frame: the session's id and the secret that continues it (`session_secret`)."""
    payload = json.dumps({"session_id": session_id, "session_secret": secret}, separators=(",", ":"))
    return f"event: start\ndata: {payload}\n\n".encode()

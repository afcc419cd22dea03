"""A loopback fake of Slack — Web API, Socket Mode and Events API signing — speaking the real wire protocol.

The real `slack_sdk` / `slack_bolt` code is pointed at it; nothing inside the process is mocked:

    async with FakeSlack() as slack:
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
        app = AsyncApp(client=client)                     # bolt calls auth.test on the first event
        handler = AsyncSocketModeHandler(app, slack.app_token, ping_interval=1)
        await handler.connect_async()                     # apps.connections.open, then the websocket + hello
        await slack.wait_for_connection()
        event = slack.app_mention("how much is the pro plan?")   # also stores the user's message
        await slack.send_event(event)                     # events_api envelope; returns when the app acks
        reply = await slack.wait_for(lambda: slack.bot_messages(CHANNEL, thread_ts=event["ts"]))
        await handler.close_async()

Web API (`POST|GET /api/<method>`, JSON or form bodies, query params, `Authorization: Bearer <token>`):
`auth.test`, `chat.postMessage`, `chat.update`, `chat.postEphemeral`, `chat.delete`, `chat.getPermalink`,
`conversations.replies`, `conversations.history`, `conversations.members` (a channel's `members`, paginated by
`limit`/`cursor`), `users.info`, `reactions.add`, `assistant.threads.setStatus`, `chat.startStream`,
`chat.appendStream`, `chat.stopStream` (refused with `streaming_error` when `streaming_enabled=False`),
`assistant.threads.setSuggestedPrompts` (1-4 prompts, `slack.suggested_prompts`), `assistant.threads.setTitle`
(`slack.titles`), `views.publish` (`slack.home_views[user]`), `views.open` (needs a `trigger_id` the fake handed
out in an interaction, used once; `slack.opened_views`), `conversations.open` (a user's DM) and
`apps.connections.open` (app token only). Messages keep `metadata` (posted or updated) and return it. Any other method answers `unknown_method`. Errors answer HTTP 200
with `{"ok": false, "error": ...}` as Slack does, except `ratelimited`, which is HTTP 429 with `Retry-After`.
Every call is recorded in `slack.calls` (method, params, clock time, HTTP status, error).

Rate limits are token buckets (`RateLimit(per_minute, burst, scope)`), per workspace or per channel:
`chat.update` 50/min with a burst of 10 per workspace, `chat.postMessage` 60/min (one a second) with a burst
of 3 per channel. Tighten them with `slack.set_limit("chat.update", per_minute=6, burst=1)`, remove one with
`slack.set_limit(method, None)`; `slack.fail_next(method, error=..., status=...)` forces the next answer.
The clock is injectable (`FakeSlack(clock=...)`) so pacing tests need not sleep.

Socket Mode: `send_event`, `send_slash_command` and `send_block_action` wrap a payload in its envelope, send
it on the newest connection (`spread_events=True`: round-robin over the open ones; `connection=k`: the k-th
open one) and wait for the ack (`AckTimeout` otherwise); acks are in `slack.acks`, response_url POSTs in
`slack.responses`. `slack.connections` records each connection's client address (which process holds it) and
when it opened and closed; `open_connections()` lists the open ones in the order `connection=k` counts.
`send_event(event, retry_num=1, retry_reason="timeout")` redelivers the same event_id. `request_reconnect()`
sends Slack's `disconnect` message; the SDK reconnects on its own.

The assistant view, App Home and modals: `assistant_thread_started(context_channel=)` posts the thread's root in
the DM (subtype `assistant_app_thread`) and returns the event; `assistant_thread_context_changed`,
`app_home_opened`; a user's message in the assistant thread is `dm_message(text, thread_ts=root)`.
`send_message_shortcut(callback_id, channel=, message_ts=)` (`message_action`) and `send_view_submission(view,
values)` deliver those interactions.

Files (issue 17): `add_file(name, content)` returns Slack's file object, to pass as `files=` to `app_mention` or
`dm_message` (subtype `file_share`); `files.info` answers it; `url_private_download` serves the bytes only with
`Authorization: Bearer <bot token>` (or a working installed token of the file's workspace; 403 otherwise), 404 for a file not stored, and records each request in
`slack.downloads` (status, bytes written before the client stopped).

"Add to Slack" (issue 18): `GET /oauth/v2/authorize?client_id=…&state=…&redirect_uri=…[&team=T…]` approves at
once and redirects with a `code`; `oauth.v2.access` (client id and secret as HTTP Basic or form fields) exchanges
it for a workspace's own bot token (`xoxb-…`, or with `slack.token_rotation = True` an expiring `xoxe.xoxb-…`
plus a refresh token, `expires_in=slack.token_lifetime_s`) and, with `grant_type=refresh_token`, a refresh token
(good once) for a new pair. Every Web API method accepts the tokens installs were given (`slack.tokens_of(team)`)
and `auth.test` answers with that token's workspace; an expired one gets `token_expired`, a revoked one
`token_revoked`. Two workspaces exist (TEAM_ID, OTHER_TEAM_ID with OTHER_TEAM_CHANNEL); an event for the second
sets `event["team"] = OTHER_TEAM_ID`. `app_uninstalled(team)` / `tokens_revoked(team)` revoke its tokens and
return the event Slack then sends.

Events API over HTTP: `sign_request(body, secret, timestamp)` makes the `X-Slack-Signature` headers and
`deliver_http(url, event, secret)` POSTs a signed event callback to a bot's `/slack/events`.

Assertions: `thread_messages`, `bot_messages`, `final_text`, `updates_for`, `calls_to`, `pings(message)` (what
a message notifies, parsed from its text and blocks as Slack does: `<@U…>`, `<!subteam^S…>`, `<!here>`…; an
escaped `&lt;!here&gt;` is text), and
`await slack.wait_for(predicate, timeout)`, which wakes on every change instead of sleeping.

When the code under test runs its own loop (benchmarks), use `slack.start_in_thread()` / `slack.stop_thread()`
and `slack.run(coro)` to call the async helpers on the fake's loop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import math
import mimetypes
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import aiohttp
from aiohttp import WSMsgType, web

T = TypeVar("T")

# --- the fake workspace's identities -------------------------------------------------------------------------
TEAM_ID = "T0TEAM0001"
TEAM_DOMAIN = "switchboard-test"
APP_ID = "A0APP00001"
BOT_ID = "B0BOT00001"
BOT_USER_ID = "U0BOT00001"
BOT_NAME = "switchboard"
USER_ID = "U0USER0001"
OTHER_USER_ID = "U0USER0002"
OTHER_BOT_ID = "B0OTHER001"
CHANNEL = "C0GENERAL1"
OTHER_CHANNEL = "C0RANDOM01"
DM_CHANNEL = "D0DM000001"
VERIFICATION_TOKEN = "fake-verification-token"
# "Add to Slack" (issue 18): the app's OAuth credentials, and a second workspace to install it in
CLIENT_ID = "1111111111.2222222222"
CLIENT_SECRET = "fake-client-secret"
OTHER_TEAM_ID = "T0TEAM0002"
OTHER_TEAM_CHANNEL = "C0TEAM2GEN"

MAX_TEXT_CHARS = 4000
MAX_SECTION_TEXT_CHARS = 3000
MAX_HEADER_TEXT_CHARS = 150
MAX_BLOCKS = 50
MAX_MARKDOWN_CHUNK_CHARS = 12000
STREAM_METHODS = ("chat.startStream", "chat.appendStream", "chat.stopStream")


class AckTimeout(TimeoutError):
    """The app did not ack an envelope in time (real Slack would redeliver it)."""


# --- request signing (Events API over HTTP) ------------------------------------------------------------------
def sign_request(body: bytes, signing_secret: str, timestamp: int | None = None) -> dict[str, str]:
    """Headers Slack adds to an HTTP request: v0 HMAC-SHA256 over `v0:{timestamp}:{body}`."""
    ts = str(int(time.time()) if timestamp is None else int(timestamp))
    base = b"v0:" + ts.encode() + b":" + body
    digest = hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


# --- rate limits ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RateLimit:
    """A token bucket: `burst` calls at once, refilled at `per_minute` calls a minute."""

    per_minute: float
    burst: int = 1
    scope: Literal["workspace", "channel"] = "workspace"


DEFAULT_LIMITS: dict[str, RateLimit] = {
    # Tier 3: "50+ per minute"; Slack publishes no burst size, 10 is a guess that tolerates a short flurry.
    "chat.update": RateLimit(per_minute=50, burst=10, scope="workspace"),
    # Special: about one message a second per channel, short bursts allowed.
    "chat.postMessage": RateLimit(per_minute=60, burst=3, scope="channel"),
}


class TokenBucket:
    def __init__(self, limit: RateLimit, now: float) -> None:
        self.limit = limit
        self.tokens = float(limit.burst)
        self.updated = now

    def take(self, now: float) -> float:
        """Spend a token and return 0, or return the seconds until one is available (spending nothing)."""
        rate = self.limit.per_minute / 60.0
        self.tokens = min(float(self.limit.burst), self.tokens + max(0.0, now - self.updated) * rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / rate if rate > 0 else math.inf


# --- records --------------------------------------------------------------------------------------------------
@dataclass
class ApiCall:
    method: str
    params: dict[str, Any]
    at: float
    token: str | None
    status: int = 200
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Version:
    """One state of a message: the post, each edit, each streamed append."""

    text: str
    blocks: list[dict[str, Any]] | None
    at: float
    method: str


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    user: str
    blocks: list[dict[str, Any]] | None = None
    thread_ts: str | None = None
    bot_id: str | None = None
    versions: list[Version] = field(default_factory=list)
    reactions: dict[str, list[str]] = field(default_factory=dict)
    deleted: bool = False
    edited_ts: str | None = None
    streaming: bool = False
    stream_started_at: float | None = None
    stream_chunks: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] | None = None  # message metadata (`metadata` on chat.postMessage / chat.update)
    subtype: str | None = None  # e.g. "assistant_app_thread", the root of an assistant thread

    @property
    def is_bot(self) -> bool:
        return self.bot_id is not None

    @property
    def edits(self) -> list[Version]:
        """Every version after the first post."""
        return self.versions[1:]


@dataclass
class Ephemeral:
    channel: str
    user: str
    text: str
    blocks: list[dict[str, Any]] | None
    thread_ts: str | None
    message_ts: str


@dataclass
class Ack:
    envelope_id: str
    payload: dict[str, Any] | None
    at: float


@dataclass
class Envelope:
    envelope_id: str
    type: str
    payload: dict[str, Any]
    retry_attempt: int | None = None
    retry_reason: str | None = None


@dataclass
class Connection:
    """One Socket Mode websocket as the fake saw it: the client's address (`peer`, which tells which process
    holds it) and when it opened and closed (clock time; `closed_at` None while open)."""

    peer: tuple[str, int] | None
    opened_at: float
    closed_at: float | None = None

    @property
    def open(self) -> bool:
        return self.closed_at is None


@dataclass
class ResponseUrlPost:
    response_id: str
    body: dict[str, Any]
    at: float


@dataclass
class Channel:
    id: str
    name: str
    is_im: bool = False
    im_user: str | None = None
    members: list[str] = field(default_factory=list)  # conversations.members


@dataclass
class User:
    id: str
    name: str
    real_name: str
    is_bot: bool = False
    tz: str = "Europe/London"
    tz_offset: int = 0


@dataclass
class _Fault:
    error: str
    status: int
    retry_after: int | None


class _Fail(Exception):
    """Raised inside a method handler: becomes `{"ok": false, "error": ...}`."""

    def __init__(self, error: str, status: int = 200, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.headers = headers or {}
        self.extra = extra


def _random_id(prefix: str, length: int = 10) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


@dataclass
class FileDownload:
    """One request to a file's `url_private_download`: which file, the Authorization sent, the status answered
    and how many bytes were written before the client stopped reading or the body ended."""

    file_id: str
    authorization: str
    status: int = 200
    sent: int = 0
    finished: bool = False  # the handler returned (the body ended, or the client went away)


@dataclass
class Workspace:
    """A workspace the app can be installed in ("Add to Slack")."""

    id: str
    name: str
    domain: str


@dataclass
class InstalledToken:
    """A bot token an install was given: its workspace, and when it expires (`slack.clock` time; None: never)."""

    team_id: str
    expires_at: float | None = None


# --- the fake --------------------------------------------------------------------------------------------------
class FakeSlack:
    def __init__(
        self,
        *,
        bot_token: str = "xoxb-fake-bot-token",
        app_token: str = "xapp-1-fake-app-token",
        limits: Mapping[str, RateLimit | None] | None = None,
        min_retry_after_s: int = 1,
        max_text_chars: int = MAX_TEXT_CHARS,
        max_section_text_chars: int = MAX_SECTION_TEXT_CHARS,
        streaming_enabled: bool = True,
        streaming_error: str = "missing_scope",
        stream_max_age_s: float = 300.0,
        ack_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not bot_token.startswith("xoxb-") or not app_token.startswith("xapp-"):
            raise ValueError("bot_token must start with xoxb- and app_token with xapp-")
        self.bot_token = bot_token
        self.app_token = app_token
        self.min_retry_after_s = min_retry_after_s
        self.max_text_chars = max_text_chars
        self.max_section_text_chars = max_section_text_chars
        self.streaming_enabled = streaming_enabled
        self.streaming_error = streaming_error
        self.stream_max_age_s = stream_max_age_s
        self.ack_timeout_s = ack_timeout_s
        self.clock = clock

        self.limits: dict[str, RateLimit] = dict(DEFAULT_LIMITS)
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        for method, limit in (limits or {}).items():
            self.set_limit(method, limit)
        self._faults: dict[str, list[_Fault]] = {}

        self.channels: dict[str, Channel] = {}
        self.users: dict[str, User] = {}
        self.messages: dict[str, dict[str, Message]] = {}  # channel -> ts -> message
        self.calls: list[ApiCall] = []
        self.rate_limited_count = 0
        self.ephemerals: list[Ephemeral] = []
        self.statuses: list[dict[str, Any]] = []
        self.envelopes: list[Envelope] = []
        self.acks: dict[str, Ack] = {}
        self.responses: list[ResponseUrlPost] = []
        # Scopes the app was not granted: a method needing one answers `missing_scope` with `needed`/`provided`,
        # as Slack does (conversations.replies needs the *:history scope of the conversation's kind).
        self.missing_scopes: set[str] = set()
        self.connections_opened = 0
        self.spread_events = False  # True: events go round-robin over the open connections, as Slack does
        self._next_socket = -1
        self.delivered_on: list[int] = []  # per envelope, which open connection carried it
        self._ts_counter = 0
        self._tickets: set[str] = set()
        self._sockets: list[web.WebSocketResponse] = []
        self.connections: list[Connection] = []  # every Socket Mode connection ever opened, oldest first
        self._connection_of: dict[int, Connection] = {}  # id(ws) -> its record
        self._ack_waiters: dict[str, asyncio.Future[Ack]] = {}
        self._event_ids: dict[str, str] = {}
        # "Add to Slack" (issue 18): workspaces, OAuth codes, and the bot tokens installs were given
        self.client_id, self.client_secret = CLIENT_ID, CLIENT_SECRET
        self.token_rotation = False  # True: installs get expiring `xoxe.xoxb-` tokens and a refresh token
        self.token_lifetime_s = 43_200.0  # `expires_in` of a rotating token (Slack: 12 hours)
        self.workspaces: dict[str, Workspace] = {}
        self.oauth_codes: dict[str, tuple[str, str | None]] = {}  # code -> (team id, redirect_uri asked)
        self.installed_tokens: dict[str, InstalledToken] = {}  # bot token -> its workspace and expiry
        self.refresh_tokens: dict[str, str] = {}  # refresh token -> team id (each is good once)
        self.revoked_tokens: set[str] = set()
        self.add_workspace(TEAM_ID, "Switchboard Test", TEAM_DOMAIN)
        self.add_workspace(OTHER_TEAM_ID, "Second Workspace", "second-workspace")
        # files shared in messages (issue 17): `add_file()`, `files.info`, and the `url_private_download` endpoint
        self.files: dict[str, dict[str, Any]] = {}  # file id -> the file object Slack returns
        self.file_bytes: dict[str, bytes] = {}  # file id -> content (what a download returns)
        self.downloads: list[FileDownload] = []  # every download request, with what it was answered
        # the assistant view, App Home and modals (issue 20)
        self.suggested_prompts: list[dict[str, Any]] = []  # assistant.threads.setSuggestedPrompts params
        self.titles: list[dict[str, Any]] = []  # assistant.threads.setTitle params
        self.home_views: dict[str, dict[str, Any]] = {}  # user id -> the view views.publish last set
        self.opened_views: list[dict[str, Any]] = []  # views.open: each modal opened, with its id
        self._triggers: set[str] = set()  # trigger_ids handed to the app in interactions (views.open needs one)
        self._version = 0
        self._changed: asyncio.Event | None = None

        self.add_channel(CHANNEL, "general")
        self.add_channel(OTHER_CHANNEL, "random")
        self.add_channel(DM_CHANNEL, USER_ID, is_im=True, im_user=USER_ID)
        self.add_user(USER_ID, "alice", "Alice Example")
        self.add_user(OTHER_USER_ID, "bob", "Bob Example")
        self.add_user(BOT_USER_ID, BOT_NAME, "Switchboard", is_bot=True)

        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- lifecycle ------------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """What `AsyncWebClient(base_url=...)` takes (the trailing slash matters to urljoin)."""
        return f"{self.base_url}/api/"

    async def start(self) -> FakeSlack:
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/link/", self._socket)
        app.router.add_get("/oauth/v2/authorize", self._oauth_authorize)
        app.router.add_post("/response/{response_id}", self._response_url)
        app.router.add_get("/files-pri/{team_file}/download/{name}", self._download)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeSlack:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self) -> FakeSlack:
        """Serve from a daemon thread with its own loop, for code under test that owns the main loop."""
        ready = threading.Event()
        loop = asyncio.new_event_loop()

        def run() -> None:
            loop.run_until_complete(self.start())
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-slack", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake Slack did not start")
        return self

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run one of the async helpers on the fake's own loop from another thread."""
        assert self._loop is not None and self._thread is not None, "start_in_thread() first"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop_thread(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self.run(self.stop(), 10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._thread = None
        self._loop = None

    # --- configuration ----------------------------------------------------------------------------------------
    def set_limit(self, method: str, limit: RateLimit | None = None, *, per_minute: float | None = None,
                  burst: int | None = None, scope: Literal["workspace", "channel"] | None = None) -> None:
        """Replace a method's limit (None removes it); keyword form edits the current one. Buckets restart full."""
        if limit is None and (per_minute is not None or burst is not None or scope is not None):
            current = self.limits.get(method, RateLimit(per_minute=60))
            limit = RateLimit(per_minute=current.per_minute if per_minute is None else per_minute,
                              burst=current.burst if burst is None else burst,
                              scope=current.scope if scope is None else scope)
        if limit is None:
            self.limits.pop(method, None)
        else:
            self.limits[method] = limit
        self._buckets = {k: v for k, v in self._buckets.items() if k[0] != method}

    def fail_next(self, method: str, error: str = "ratelimited", *, status: int | None = None,
                  retry_after: int | None = None, times: int = 1) -> None:
        """Answer the next `times` calls of `method` with `error` (ratelimited → HTTP 429 + Retry-After)."""
        if status is None:
            status = 429 if error == "ratelimited" else 200
        if error == "ratelimited" and retry_after is None:
            retry_after = max(self.min_retry_after_s, 1)
        self._faults.setdefault(method, []).extend(_Fault(error, status, retry_after) for _ in range(times))

    def add_channel(self, channel_id: str, name: str, *, is_im: bool = False, im_user: str | None = None,
                    members: list[str] | None = None) -> Channel:
        channel = Channel(channel_id, name, is_im, im_user, list(members or []))
        self.channels[channel_id] = channel
        self.messages.setdefault(channel_id, {})
        return channel

    def add_user(self, user_id: str, name: str, real_name: str = "", *, is_bot: bool = False) -> User:
        user = User(user_id, name, real_name or name, is_bot)
        self.users[user_id] = user
        return user

    def reset(self) -> None:
        """Forget calls, messages and socket traffic; keep channels, users and limits."""
        self.calls.clear()
        self.rate_limited_count = 0
        self.ephemerals.clear()
        self.statuses.clear()
        self.envelopes.clear()
        self.acks.clear()
        self.responses.clear()
        self._buckets.clear()
        self._faults.clear()
        for store in self.messages.values():
            store.clear()
        self._notify()

    # --- change notification and waiting ----------------------------------------------------------------------
    def _notify(self) -> None:
        self._version += 1
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0, what: str = "") -> T:
        """Return the predicate's first truthy value, re-checking on every change to the fake."""
        deadline = time.monotonic() + timeout
        same_loop = self._loop is asyncio.get_running_loop()
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout}s {what}".strip())
            if same_loop and self._changed is not None:
                try:
                    await asyncio.wait_for(self._changed.wait(), min(remaining, 0.05))
                except asyncio.TimeoutError:
                    pass  # the predicate may depend on something outside the fake too: re-check
            else:
                await asyncio.sleep(min(remaining, 0.01))

    async def wait_for_connection(self, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until at least `count` Socket Mode websockets are open."""
        await self.wait_for(lambda: len(self._open_sockets()) >= count, timeout, "(socket mode connection)")

    # --- message store ----------------------------------------------------------------------------------------
    def next_ts(self) -> str:
        """Message timestamps as Slack writes them, unique and increasing: 1700000000.000100, ...000200, ..."""
        self._ts_counter += 1
        micros = 1_700_000_000 * 1_000_000 + self._ts_counter * 100
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _store(self, message: Message, method: str) -> Message:
        message.versions.append(Version(message.text, message.blocks, self.clock(), method))
        self.messages.setdefault(message.channel, {})[message.ts] = message
        return message

    def message(self, channel: str, ts: str) -> Message | None:
        found = self.messages.get(channel, {}).get(ts)
        return None if found is None or found.deleted else found

    def thread_messages(self, channel: str, thread_ts: str) -> list[Message]:
        """The thread's parent and replies, oldest first (deleted ones left out)."""
        found = [m for m in self.messages.get(channel, {}).values()
                 if not m.deleted and (m.ts == thread_ts or m.thread_ts == thread_ts)]
        return sorted(found, key=lambda m: float(m.ts))

    def bot_messages(self, channel: str, thread_ts: str | None = None) -> list[Message]:
        """Messages the bot posted in a channel (or in one thread of it), oldest first."""
        if thread_ts is None:
            found = [m for m in self.messages.get(channel, {}).values() if not m.deleted]
            found.sort(key=lambda m: float(m.ts))
        else:
            found = self.thread_messages(channel, thread_ts)
        return [m for m in found if m.bot_id == BOT_ID]

    def final_text(self, channel: str, ts: str) -> str:
        message = self.message(channel, ts)
        if message is None:
            raise KeyError(f"no message {ts} in {channel}")
        return message.text

    def updates_for(self, channel: str, ts: str) -> list[Version]:
        """Each change applied after the post (chat.update, chat.appendStream, chat.stopStream), in order."""
        message = self.messages.get(channel, {}).get(ts)
        return [] if message is None else message.edits

    @staticmethod
    def pings(message: Message) -> list[str]:
        """Who a message notifies, as Slack parses mrkdwn: `<@U…>` users, `<!subteam^S…>` groups and
        `<!here>`/`<!channel>`/`<!everyone>`, in its text and in its blocks' texts (escaped ones are text)."""
        texts = [message.text]

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                if node.get("type") in ("mrkdwn", "plain_text") and isinstance(node.get("text"), str):
                    texts.append(node["text"])
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(message.blocks or [])
        found: list[str] = []
        for text in texts:
            for match in re.finditer(r"<(@U[A-Z0-9]+|!subteam\^S[A-Z0-9]+|!here|!channel|!everyone)(?:\|[^>]*)?>", text):
                if match.group(1) not in found:
                    found.append(match.group(1))
        return found

    def calls_to(self, method: str, *, ok: bool | None = None) -> list[ApiCall]:
        return [c for c in self.calls if c.method == method and (ok is None or c.ok == ok)]

    def _render(self, message: Message) -> dict[str, Any]:
        """A message as the Web API returns it."""
        out: dict[str, Any] = {"type": "message", "ts": message.ts, "text": message.text, "user": message.user,
                               "team": TEAM_ID}
        if message.bot_id:
            out.update(bot_id=message.bot_id, app_id=APP_ID if message.bot_id == BOT_ID else None)
        if message.blocks is not None:
            out["blocks"] = message.blocks
        if message.subtype:
            out["subtype"] = message.subtype
        if message.metadata is not None:
            out["metadata"] = message.metadata
        if message.thread_ts:
            out["thread_ts"] = message.thread_ts
            if message.thread_ts != message.ts:
                parent = self.messages.get(message.channel, {}).get(message.thread_ts)
                if parent is not None:
                    out["parent_user_id"] = parent.user
        replies = [m for m in self.messages.get(message.channel, {}).values()
                   if m.thread_ts == message.ts and m.ts != message.ts and not m.deleted]
        if replies:
            out.update(thread_ts=message.ts, reply_count=len(replies),
                       reply_users=sorted({m.user for m in replies}),
                       latest_reply=max(replies, key=lambda m: float(m.ts)).ts)
        if message.edited_ts:
            out["edited"] = {"user": message.user, "ts": message.edited_ts}
        if message.reactions:
            out["reactions"] = [{"name": n, "users": u, "count": len(u)} for n, u in message.reactions.items()]
        return {k: v for k, v in out.items() if v is not None}

    # --- Web API transport ------------------------------------------------------------------------------------
    async def _read_params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                body = await request.json()
                if isinstance(body, dict):
                    params.update(body)
            elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
                form = await request.post()
                params.update({k: v for k, v in form.items() if isinstance(v, str)})
        return params

    def _token_of(self, request: web.Request, params: dict[str, Any]) -> str | None:
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("basic "):  # oauth.v2.access: the app's client id and secret
            return "basic:" + header[6:].strip()
        if header.lower().startswith("bearer "):
            return header[7:].strip()
        token = params.pop("token", None)
        return str(token) if token else None

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._read_params(request)
        token = self._token_of(request, params)
        call = ApiCall(method, params, self.clock(), token)
        self.calls.append(call)
        headers: dict[str, str] = {}
        try:
            body = self._dispatch(method, params, token)
        except _Fail as fail:
            call.status, call.error = fail.status, fail.error
            if fail.error == "ratelimited":
                self.rate_limited_count += 1
            body = {"ok": False, "error": fail.error, **fail.extra}
            headers = fail.headers
        self._notify()
        return web.json_response(body, status=call.status, headers=headers)

    def _dispatch(self, method: str, params: dict[str, Any], token: str | None) -> dict[str, Any]:
        if method == "oauth.v2.access":  # authenticated by the client id and secret, not a token
            return {"ok": True, **self._oauth_v2_access(params, token)}
        handler: Callable[[dict[str, Any]], dict[str, Any]] | None = getattr(
            self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            raise _Fail("unknown_method", req_method=method)
        if token is None:
            raise _Fail("not_authed")
        self._caller_team = TEAM_ID
        if method == "apps.connections.open":
            if token != self.app_token:
                raise _Fail("invalid_auth" if not token.startswith("xoxb-") else "not_allowed_token_type")
        elif token == self.app_token:
            raise _Fail("not_allowed_token_type")
        elif token != self.bot_token:
            self._caller_team = self._installed_team(token)  # invalid_auth / token_expired / token_revoked
        self._apply_faults(method)
        self._apply_rate_limit(method, params)
        if method in STREAM_METHODS and not self.streaming_enabled:
            extra = {"needed": "assistant:write", "provided": "chat:write,app_mentions:read"} \
                if self.streaming_error == "missing_scope" else {}
            raise _Fail(self.streaming_error, **extra)
        return {"ok": True, **handler(params)}

    def _apply_faults(self, method: str) -> None:
        queue = self._faults.get(method)
        if queue:
            fault = queue.pop(0)
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            raise _Fail(fault.error, fault.status, headers)

    def _apply_rate_limit(self, method: str, params: dict[str, Any]) -> None:
        limit = self.limits.get(method)
        if limit is None:
            return
        key = (method, str(params.get("channel", "")) if limit.scope == "channel" else "")
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(limit, now)
        wait = bucket.take(now)
        if wait > 0:
            retry_after = max(self.min_retry_after_s, math.ceil(wait))
            raise _Fail("ratelimited", 429, {"Retry-After": str(retry_after)})

    # --- validation shared by the chat methods ----------------------------------------------------------------
    def _channel(self, params: dict[str, Any], key: str = "channel") -> Channel:
        channel = self.channels.get(str(params.get(key) or ""))
        if channel is None:
            raise _Fail("channel_not_found")
        return channel

    @staticmethod
    def _json_param(params: dict[str, Any], key: str, error: str) -> Any:
        value = params.get(key)
        if isinstance(value, str):
            try:
                return json.loads(value) if value else None
            except json.JSONDecodeError:
                raise _Fail(error) from None
        return value

    def _blocks(self, params: dict[str, Any]) -> list[dict[str, Any]] | None:
        blocks = self._json_param(params, "blocks", "invalid_blocks_format")
        if blocks is None:
            return None
        if not isinstance(blocks, list):
            raise _Fail("invalid_blocks_format")
        errors: list[str] = []
        if len(blocks) > MAX_BLOCKS:
            errors.append(f"no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]")
        for index, block in enumerate(blocks):
            if not isinstance(block, dict) or "type" not in block:
                errors.append(f"missing required field: type [json-pointer:/blocks/{index}]")
                continue
            text = block.get("text")
            text = text.get("text", "") if isinstance(text, dict) else ""
            if block["type"] == "section" and len(text) > self.max_section_text_chars:
                errors.append(f"must be less than {self.max_section_text_chars + 1} characters "
                              f"[json-pointer:/blocks/{index}/text/text]")
            if block["type"] == "header" and len(text) > MAX_HEADER_TEXT_CHARS:
                errors.append(f"must be less than {MAX_HEADER_TEXT_CHARS + 1} characters "
                              f"[json-pointer:/blocks/{index}/text/text]")
        if errors:
            raise _Fail("invalid_blocks", errors=errors, response_metadata={"messages": errors})
        return blocks

    def _content(self, params: dict[str, Any]) -> tuple[str, list[dict[str, Any]] | None]:
        """The text and blocks of a post or an update, with Slack's emptiness and length checks."""
        text = str(params.get("text") or "")
        markdown = str(params.get("markdown_text") or "")
        if markdown and (text or params.get("blocks")):
            raise _Fail("markdown_text_conflict")
        blocks = self._blocks(params)
        attachments = self._json_param(params, "attachments", "invalid_attachments")
        if not text and not markdown and not blocks and not attachments:
            raise _Fail("no_text")
        if len(text) > self.max_text_chars or len(markdown) > MAX_MARKDOWN_CHUNK_CHARS:
            raise _Fail("msg_too_long")
        return text or markdown, blocks

    def _metadata(self, params: dict[str, Any]) -> dict[str, Any] | None:
        """Message metadata: `{"event_type": ..., "event_payload": {...}}` (both required, as Slack checks)."""
        metadata = self._json_param(params, "metadata", "invalid_metadata_format")
        if metadata is None:
            return None
        if not isinstance(metadata, dict) or not metadata.get("event_type") or \
                not isinstance(metadata.get("event_payload"), dict):
            raise _Fail("invalid_metadata_format")
        return metadata

    def _own_message(self, channel: Channel, ts: str, cannot: str) -> Message:
        message = self.message(channel.id, ts)
        if message is None:
            raise _Fail("message_not_found")
        if message.bot_id != BOT_ID:
            raise _Fail(cannot)
        return message

    # --- Web API methods (one `_m_<method>` each; adding a method is adding a handler) -------------------------
    def _m_auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        team = self.workspaces[getattr(self, "_caller_team", TEAM_ID)]  # the workspace of the calling token
        return {"url": f"https://{team.domain}.slack.com/", "team": team.name, "user": BOT_NAME,
                "team_id": team.id, "user_id": BOT_USER_ID, "bot_id": BOT_ID, "is_enterprise_install": False}

    def _m_apps_connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        ticket = str(uuid.uuid4())
        self._tickets.add(ticket)
        return {"url": f"ws://127.0.0.1:{self.port}/link/?ticket={ticket}&app_id={APP_ID}"}

    def _m_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        text, blocks = self._content(params)
        thread_ts = str(params["thread_ts"]) if params.get("thread_ts") else None
        message = self._store(Message(channel.id, self.next_ts(), text, BOT_USER_ID, blocks, thread_ts, BOT_ID),
                              "chat.postMessage")
        message.metadata = self._metadata(params)
        return {"channel": channel.id, "ts": message.ts, "message": self._render(message)}

    def _m_chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        message = self._own_message(channel, str(params.get("ts") or ""), "cant_update_message")
        text, blocks = self._content(params)
        message.text = text
        if "blocks" in params:
            message.blocks = blocks
        if "metadata" in params:
            message.metadata = self._metadata(params)
        message.edited_ts = self.next_ts()
        message.versions.append(Version(message.text, message.blocks, self.clock(), "chat.update"))
        return {"channel": channel.id, "ts": message.ts, "text": message.text, "message": self._render(message)}

    def _m_chat_delete(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        message = self._own_message(channel, str(params.get("ts") or ""), "cant_delete_message")
        message.deleted = True
        return {"channel": channel.id, "ts": message.ts}

    def _m_chat_postEphemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        user = str(params.get("user") or "")
        if user not in self.users:
            raise _Fail("user_not_found")
        text, blocks = self._content(params)
        ephemeral = Ephemeral(channel.id, user, text, blocks, params.get("thread_ts"), self.next_ts())
        self.ephemerals.append(ephemeral)
        return {"message_ts": ephemeral.message_ts}

    def _require_scope(self, scope: str) -> None:
        if scope in self.missing_scopes:
            raise _Fail("missing_scope", needed=scope, provided="app_mentions:read,chat:write,commands")

    @staticmethod
    def history_scope(channel: Channel) -> str:
        """The scope reading this conversation's messages needs: im:, groups: (private) or channels:history."""
        if channel.is_im or channel.id.startswith("D"):
            return "im:history"
        return "groups:history" if channel.id.startswith("G") else "channels:history"

    def _m_conversations_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        """A thread, parent first then replies oldest first; `oldest`/`latest` bound the replies (`inclusive`
        keeps the bounds themselves), pages of `limit` (at most 1000) chained by an opaque `next_cursor`."""
        channel = self._channel(params)
        self._require_scope(self.history_scope(channel))
        ts = str(params.get("ts") or "")
        if self.message(channel.id, ts) is None:
            raise _Fail("thread_not_found")
        found = self.thread_messages(channel.id, ts)
        oldest, latest = float(params.get("oldest") or 0), float(params.get("latest") or math.inf)
        inclusive = str(params.get("inclusive", "")).lower() in ("1", "true")

        def within(m: Message) -> bool:
            t = float(m.ts)
            return oldest <= t <= latest if inclusive else (oldest < t or not oldest) and t < latest

        found = [m for m in found if m.ts == ts or within(m)]
        limit = max(1, min(int(params.get("limit") or 1000), 1000))
        cursor = str(params.get("cursor") or "")
        start = 0
        if cursor:
            try:
                start = int(base64.b64decode(cursor).decode().removeprefix("next_ts:"))
            except ValueError:
                raise _Fail("invalid_cursor") from None
        page = found[start:start + limit]
        more = start + limit < len(found)
        next_cursor = base64.b64encode(f"next_ts:{start + limit}".encode()).decode() if more else ""
        return {"messages": [self._render(m) for m in page], "has_more": more,
                "response_metadata": {"next_cursor": next_cursor}}

    def _m_conversations_history(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        top = [m for m in self.messages[channel.id].values()
               if not m.deleted and (m.thread_ts is None or m.thread_ts == m.ts)]
        top.sort(key=lambda m: float(m.ts), reverse=True)
        limit = int(params.get("limit") or 100)
        return {"messages": [self._render(m) for m in top[:limit]], "has_more": len(top) > limit,
                "pin_count": 0, "response_metadata": {"next_cursor": ""}}

    def _m_chat_getPermalink(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        message = self.message(channel.id, str(params.get("message_ts") or ""))
        if message is None:
            raise _Fail("message_not_found")
        link = f"https://{TEAM_DOMAIN}.slack.com/archives/{channel.id}/p{message.ts.replace('.', '')}"
        if message.thread_ts and message.thread_ts != message.ts:
            link += f"?thread_ts={message.thread_ts}&cid={channel.id}"
        return {"channel": channel.id, "permalink": link}

    def _m_conversations_members(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        limit = max(1, min(int(params.get("limit") or 100), 1000))
        start = int(params.get("cursor") or 0)
        page = channel.members[start:start + limit]
        more = start + limit < len(channel.members)
        return {"members": page, "response_metadata": {"next_cursor": str(start + limit) if more else ""}}

    def _m_users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(params.get("user") or ""))
        if user is None:
            raise _Fail("user_not_found")
        return {"user": {"id": user.id, "team_id": TEAM_ID, "name": user.name, "real_name": user.real_name,
                         "deleted": False, "is_bot": user.is_bot, "is_app_user": False, "tz": user.tz,
                         "tz_offset": user.tz_offset,
                         "profile": {"real_name": user.real_name, "display_name": user.name,
                                     "bot_id": BOT_ID if user.id == BOT_USER_ID else None}}}

    def _m_reactions_add(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        message = self.message(channel.id, str(params.get("timestamp") or ""))
        if message is None:
            raise _Fail("message_not_found")
        name = str(params.get("name") or "").strip(":")
        if not name:
            raise _Fail("invalid_name")
        users = message.reactions.setdefault(name, [])
        if BOT_USER_ID in users:
            raise _Fail("already_reacted")
        users.append(BOT_USER_ID)
        return {}

    def _m_files_info(self, params: dict[str, Any]) -> dict[str, Any]:
        file = self.files.get(str(params.get("file") or ""))
        if file is None:
            raise _Fail("file_not_found")
        return {"file": file, "comments": [], "response_metadata": {"next_cursor": ""}}

    # --- files (issue 17) --------------------------------------------------------------------------------------
    def add_file(self, name: str, content: bytes, *, mimetype: str | None = None, size: int | None = None,
                 file_access: str | None = None, stored: bool = True) -> dict[str, Any]:
        """A file a user uploads, as Slack's file object (`url_private_download` on this fake). `size` overrides
        the declared size (a 50 MB file without 50 MB in memory); `file_access="check_file_info"` makes the
        event carry only the id, as Slack does for some files; `stored=False`: the download answers 404."""
        file_id = _random_id("F")
        mimetype = mimetype or mimetypes.guess_type(name)[0] or "application/octet-stream"
        url = f"{self.base_url}/files-pri/{TEAM_ID}-{file_id}/download/{name}"
        file: dict[str, Any] = {
            "id": file_id, "created": int(time.time()), "timestamp": int(time.time()), "name": name, "title": name,
            "mimetype": mimetype, "filetype": name.rsplit(".", 1)[-1] if "." in name else "binary",
            "pretty_type": mimetype, "user": USER_ID, "user_team": TEAM_ID, "editable": False,
            "size": len(content) if size is None else size, "mode": "hosted", "is_external": False,
            "external_type": "", "is_public": True, "public_url_shared": False, "display_as_bot": False,
            "username": "", "url_private": url.replace("/download/", "/"), "url_private_download": url,
            "permalink": f"https://{TEAM_DOMAIN}.slack.com/files/{USER_ID}/{file_id}/{name}"}
        self.files[file_id] = file
        if stored:
            self.file_bytes[file_id] = content
        return {"id": file_id, "mode": "hosted", "file_access": file_access} if file_access else file

    async def _download(self, request: web.Request) -> web.StreamResponse:
        """`url_private_download`: only with `Authorization: Bearer <bot token>`; 404 for a file that is gone.
        The body streams in chunks, so a client that stops reading is seen to have stopped (`FileDownload.sent`)."""
        file_id = request.match_info["team_file"].split("-", 1)[-1]
        record = FileDownload(file_id, request.headers.get("Authorization", ""))
        self.downloads.append(record)
        self._notify()
        if record.authorization != f"Bearer {self.bot_token}" and not self._installed_in(
                record.authorization, (self.files.get(file_id) or {}).get("user_team", TEAM_ID)):
            record.status = 403
            return web.Response(status=403, text="Forbidden")
        content = self.file_bytes.get(file_id)
        if content is None:
            record.status = 404
            return web.Response(status=404, text="Not Found")
        file = self.files[file_id]
        response = web.StreamResponse(status=200, headers={"Content-Type": file["mimetype"]})
        await response.prepare(request)
        try:
            for start in range(0, len(content), 64 * 1024):
                await response.write(content[start:start + 64 * 1024])
                record.sent = start + len(content[start:start + 64 * 1024])
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            record.finished = True
            self._notify()
        return response

    def _m_assistant_threads_setStatus(self, params: dict[str, Any]) -> dict[str, Any]:
        self._channel(params, "channel_id")
        if not params.get("thread_ts"):
            raise _Fail("invalid_arguments")
        self.statuses.append(dict(params))
        return {}

    def _assistant_thread(self, params: dict[str, Any]) -> Channel:
        channel = self._channel(params, "channel_id")
        if not params.get("thread_ts"):
            raise _Fail("invalid_arguments")
        return channel

    def _m_assistant_threads_setSuggestedPrompts(self, params: dict[str, Any]) -> dict[str, Any]:
        self._assistant_thread(params)
        prompts = self._json_param(params, "prompts", "invalid_arguments")
        if not isinstance(prompts, list) or not 1 <= len(prompts) <= 4 or not all(
                isinstance(p, dict) and p.get("title") and p.get("message") for p in prompts):
            raise _Fail("invalid_arguments")  # Slack: 1 to 4 prompts, each a title and a message
        self.suggested_prompts.append({**params, "prompts": prompts})
        return {}

    def _m_assistant_threads_setTitle(self, params: dict[str, Any]) -> dict[str, Any]:
        self._assistant_thread(params)
        if not str(params.get("title") or "").strip():
            raise _Fail("invalid_arguments")
        self.titles.append(dict(params))
        return {}

    def _view(self, params: dict[str, Any], kind: str) -> dict[str, Any]:
        view = self._json_param(params, "view", "invalid_arguments")
        if not isinstance(view, dict) or view.get("type") != kind:
            raise _Fail("invalid_arguments")
        blocks = view.get("blocks")
        if not isinstance(blocks, list) or len(blocks) > (100 if kind == "home" else 100):
            raise _Fail("invalid_arguments")
        self._blocks({"blocks": blocks})
        if kind == "modal" and not isinstance(view.get("title"), dict):
            raise _Fail("invalid_arguments")
        return {**view, "id": _random_id("V"), "team_id": TEAM_ID, "app_id": APP_ID, "bot_id": BOT_ID}

    def _m_views_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        user = str(params.get("user_id") or "")
        if user not in self.users:
            raise _Fail("user_not_found")
        view = self._view(params, "home")
        self.home_views[user] = view
        return {"view": view}

    def _m_views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        trigger = str(params.get("trigger_id") or "")
        if trigger not in self._triggers:
            raise _Fail("invalid_trigger_id")
        self._triggers.discard(trigger)  # a trigger opens one view, as on Slack (and expires in 3 s)
        view = self._view(params, "modal")
        self.opened_views.append(view)
        return {"view": view}

    def _m_conversations_open(self, params: dict[str, Any]) -> dict[str, Any]:
        users = [u for u in str(params.get("users") or "").split(",") if u]
        if len(users) != 1 or users[0] not in self.users:
            raise _Fail("user_not_found")
        found = next((c for c in self.channels.values() if c.is_im and c.im_user == users[0]), None)
        if found is None:
            found = self.add_channel("D" + users[0][1:], users[0], is_im=True, im_user=users[0])
        return {"channel": {"id": found.id, "is_im": True, "user": users[0]}}

    # native streaming: startStream opens a message in a thread, appendStream adds markdown, stopStream ends it
    def _stream_text(self, params: dict[str, Any], message: Message | None = None) -> str:
        pieces = [str(params.get("markdown_text") or "")]
        chunks = self._json_param(params, "chunks", "invalid_chunks") or []
        if not isinstance(chunks, list):
            raise _Fail("invalid_chunks")
        for chunk in chunks:
            if not isinstance(chunk, dict) or "type" not in chunk:
                raise _Fail("invalid_chunks")
            if message is not None:
                message.stream_chunks.append(chunk)
            if chunk["type"] == "markdown_text":
                pieces.append(str(chunk.get("text") or ""))
        if any(len(p) > MAX_MARKDOWN_CHUNK_CHARS for p in pieces):
            raise _Fail("msg_too_long")
        return "".join(pieces)

    def _streaming_message(self, params: dict[str, Any]) -> Message:
        channel = self._channel(params)
        message = self._own_message(channel, str(params.get("ts") or ""), "cant_update_message")
        expired = message.stream_started_at is not None and \
            self.clock() - message.stream_started_at > self.stream_max_age_s
        if not message.streaming or expired:
            message.streaming = False
            raise _Fail("message_not_in_streaming_state")
        return message

    def _m_chat_startStream(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        if not params.get("thread_ts"):
            raise _Fail("invalid_arguments")
        if not channel.is_im:
            for key in ("recipient_team_id", "recipient_user_id"):
                if not params.get(key):
                    raise _Fail(f"missing_{key}")
        message = Message(channel.id, self.next_ts(), "", BOT_USER_ID, None, str(params["thread_ts"]), BOT_ID,
                          streaming=True, stream_started_at=self.clock())
        message.text = self._stream_text(params, message)
        self._store(message, "chat.startStream")
        return {"channel": channel.id, "ts": message.ts}

    def _m_chat_appendStream(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._streaming_message(params)
        added = self._stream_text(params, message)
        if not added and not params.get("chunks"):
            raise _Fail("no_text")
        message.text += added
        message.versions.append(Version(message.text, message.blocks, self.clock(), "chat.appendStream"))
        return {"channel": message.channel, "ts": message.ts}

    def _m_chat_stopStream(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._streaming_message(params)
        message.text += self._stream_text(params, message)
        blocks = self._blocks(params)
        if blocks is not None:
            message.blocks = blocks
        message.streaming = False
        message.versions.append(Version(message.text, message.blocks, self.clock(), "chat.stopStream"))
        return {"channel": message.channel, "ts": message.ts, "message": self._render(message)}

    # --- response_url --------------------------------------------------------------------------------------------
    def response_url(self) -> str:
        return f"{self.base_url}/response/{uuid.uuid4().hex}"

    async def _response_url(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = dict(await request.post())
        self.responses.append(ResponseUrlPost(request.match_info["response_id"], body, self.clock()))
        self._notify()
        return web.json_response({"ok": True})

    # --- Socket Mode ---------------------------------------------------------------------------------------------
    def _open_sockets(self) -> list[web.WebSocketResponse]:
        return [ws for ws in self._sockets if not ws.closed]

    def open_connections(self) -> list[Connection]:
        """The open Socket Mode connections, in the order `send_event(..., connection=k)` numbers them."""
        return [self._connection_of[id(ws)] for ws in self._open_sockets() if id(ws) in self._connection_of]

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return web.Response(status=401, text="invalid ticket")
        self._tickets.discard(ticket)  # tickets are single-use, as Slack's are
        ws = web.WebSocketResponse(autoping=True)  # autoping answers the SDK's "sdk-ping-pong:<t>" pings
        await ws.prepare(request)
        self._sockets.append(ws)
        self.connections_opened += 1
        peername = request.transport.get_extra_info("peername") if request.transport is not None else None
        record = Connection(tuple(peername[:2]) if peername else None, self.clock())
        self.connections.append(record)
        self._connection_of[id(ws)] = record
        await ws.send_json({"type": "hello", "num_connections": len(self._open_sockets()),
                            "debug_info": {"host": "applink-fake", "build_number": 1,
                                           "approximate_connection_time": 18060},
                            "connection_info": {"app_id": APP_ID}})
        self._notify()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_socket_text(msg.data)
        finally:
            if ws in self._sockets:
                self._sockets.remove(ws)
            record.closed_at = self.clock()
            self._connection_of.pop(id(ws), None)
            self._notify()
        return ws

    def _on_socket_text(self, data: str) -> None:
        try:
            message = json.loads(data)
        except json.JSONDecodeError:
            return
        envelope_id = message.get("envelope_id") if isinstance(message, dict) else None
        if not envelope_id:
            return
        ack = Ack(envelope_id, message.get("payload"), self.clock())
        self.acks[envelope_id] = ack
        waiter = self._ack_waiters.pop(envelope_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(ack)
        self._notify()

    async def send_envelope(self, type_: str, payload: dict[str, Any], *, accepts_response_payload: bool = False,
                            retry_attempt: int | None = None, retry_reason: str | None = None,
                            timeout: float | None = None, connection: int | None = None) -> Ack:
        """Send one envelope and wait for its ack: on connection number `connection` (in the order they opened,
        among those open) when given; otherwise round-robin over the open connections when `spread_events` is
        set (as Slack spreads an app's events over its up to 10 connections), else on the newest."""
        timeout = self.ack_timeout_s if timeout is None else timeout
        await self.wait_for_connection(1, timeout)
        sockets = self._open_sockets()
        if connection is not None:
            ws = sockets[connection % len(sockets)]
        elif self.spread_events:
            self._next_socket = (self._next_socket + 1) % len(sockets)
            ws = sockets[self._next_socket]
        else:
            ws = sockets[-1]
        self.delivered_on.append(sockets.index(ws))
        envelope_id = str(uuid.uuid4())
        frame: dict[str, Any] = {"envelope_id": envelope_id, "payload": payload, "type": type_,
                                 "accepts_response_payload": accepts_response_payload}
        if retry_attempt is not None:
            frame.update(retry_attempt=retry_attempt, retry_reason=retry_reason or "")
        self.envelopes.append(Envelope(envelope_id, type_, payload, retry_attempt, retry_reason))
        waiter: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._ack_waiters[envelope_id] = waiter
        await ws.send_json(frame)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            raise AckTimeout(f"no ack for {type_} envelope {envelope_id} within {timeout}s") from None
        finally:
            self._ack_waiters.pop(envelope_id, None)

    def event_callback(self, event: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
        """The Events API body Slack sends for an event (the same over Socket Mode and HTTP), for the workspace
        the event names (`team`, TEAM_ID when absent)."""
        team = event.get("team") or TEAM_ID
        return {"token": VERIFICATION_TOKEN, "team_id": team, "context_team_id": team,
                "api_app_id": APP_ID, "event": event, "type": "event_callback",
                "event_id": event_id or self._event_id_for(event, 0), "event_time": int(float(event["event_ts"])),
                "authorizations": [{"enterprise_id": None, "team_id": team, "user_id": BOT_USER_ID,
                                    "is_bot": True, "is_enterprise_install": False}],
                "is_ext_shared_channel": False}

    def _event_id_for(self, event: dict[str, Any], retry_num: int) -> str:
        """A fresh event_id for a first delivery; the first delivery's id again for a retry."""
        key = json.dumps(event, sort_keys=True)
        if retry_num > 0 and key in self._event_ids:
            return self._event_ids[key]
        self._event_ids[key] = _random_id("Ev")
        return self._event_ids[key]

    async def send_event(self, event: dict[str, Any], retry_num: int = 0, retry_reason: str | None = None, *,
                         event_id: str | None = None, timeout: float | None = None,
                         connection: int | None = None) -> str:
        """Deliver an event as an `events_api` envelope and wait for the ack; returns the envelope_id.

        With `retry_num > 0` the same event is a redelivery: same event_id, `retry_attempt`/`retry_reason` set.
        """
        event_id = event_id or self._event_id_for(event, retry_num)
        ack = await self.send_envelope("events_api", self.event_callback(event, event_id=event_id),
                                       retry_attempt=retry_num, retry_reason=retry_reason, timeout=timeout,
                                       connection=connection)
        return ack.envelope_id

    async def send_slash_command(self, text: str, *, command: str = "/ask", channel: str = CHANNEL,
                                 user: str = USER_ID, timeout: float | None = None) -> str:
        """Deliver a slash command; the ack's payload (if the app answered in it) is `slack.acks[id].payload`."""
        payload = {"token": VERIFICATION_TOKEN, "team_id": TEAM_ID, "team_domain": TEAM_DOMAIN,
                   "channel_id": channel, "channel_name": self.channels[channel].name if channel in self.channels
                   else "unknown", "user_id": user, "user_name": self.users[user].name if user in self.users
                   else user, "command": command, "text": text, "api_app_id": APP_ID,
                   "is_enterprise_install": "false", "response_url": self.response_url(),
                   "trigger_id": f"{secrets.randbelow(10**10)}.{secrets.randbelow(10**10)}.{secrets.token_hex(16)}"}
        ack = await self.send_envelope("slash_commands", payload, accepts_response_payload=True, timeout=timeout)
        return ack.envelope_id

    async def send_block_action(self, action_id: str, value: str, *, channel: str = CHANNEL, message_ts: str,
                                user: str = USER_ID, block_id: str = "actions",
                                timeout: float | None = None) -> str:
        """Deliver a button click (`block_actions`) on a message the fake holds."""
        message = self.message(channel, message_ts)
        rendered = self._render(message) if message is not None else {"type": "message", "ts": message_ts}
        container: dict[str, Any] = {"type": "message", "message_ts": message_ts, "channel_id": channel,
                                     "is_ephemeral": False}
        if message is not None and message.thread_ts:
            container["thread_ts"] = message.thread_ts
        user_name = self.users[user].name if user in self.users else user
        payload = {"type": "block_actions", "user": {"id": user, "username": user_name, "name": user_name,
                                                     "team_id": TEAM_ID},
                   "api_app_id": APP_ID, "token": VERIFICATION_TOKEN, "container": container,
                   "trigger_id": f"{secrets.randbelow(10**10)}.{secrets.token_hex(16)}",
                   "team": {"id": TEAM_ID, "domain": TEAM_DOMAIN}, "enterprise": None,
                   "is_enterprise_install": False, "channel": {"id": channel, "name": self.channels[channel].name
                                                               if channel in self.channels else "unknown"},
                   "message": rendered, "state": {"values": {}}, "response_url": self.response_url(),
                   "actions": [{"action_id": action_id, "block_id": block_id, "value": value, "type": "button",
                                "text": {"type": "plain_text", "text": value}, "action_ts": self.next_ts()}]}
        self._triggers.add(payload["trigger_id"])
        ack = await self.send_envelope("interactive", payload, timeout=timeout)
        return ack.envelope_id

    async def send_message_shortcut(self, callback_id: str, *, channel: str, message_ts: str, user: str = USER_ID,
                                    timeout: float | None = None) -> str:
        """A user picks the message shortcut `callback_id` on a message (`message_action` over Socket Mode)."""
        message = self.message(channel, message_ts)
        if message is None:
            raise KeyError(f"no message {message_ts} in {channel}")
        trigger = f"{secrets.randbelow(10**10)}.{secrets.token_hex(16)}"
        self._triggers.add(trigger)
        user_name = self.users[user].name if user in self.users else user
        payload = {"type": "message_action", "token": VERIFICATION_TOKEN, "action_ts": self.next_ts(),
                   "team": {"id": TEAM_ID, "domain": TEAM_DOMAIN}, "user": {"id": user, "name": user_name,
                                                                           "team_id": TEAM_ID},
                   "channel": {"id": channel, "name": self.channels[channel].name}, "is_enterprise_install": False,
                   "enterprise": None, "callback_id": callback_id, "trigger_id": trigger,
                   "message_ts": message_ts, "message": self._render(message),
                   "response_url": self.response_url()}
        ack = await self.send_envelope("interactive", payload, timeout=timeout)
        return ack.envelope_id

    async def send_view_submission(self, view: dict[str, Any], values: dict[str, dict[str, dict[str, Any]]], *,
                                   user: str = USER_ID, timeout: float | None = None) -> Ack:
        """A user submits a modal the app opened (`view` as views.open returned it); `values` is
        `{block_id: {action_id: {"type": "plain_text_input", "value": ...}}}`. Returns the ack (its payload holds
        `response_action`/`errors` when the app answered in it)."""
        user_name = self.users[user].name if user in self.users else user
        state = {"values": values}
        payload = {"type": "view_submission", "team": {"id": TEAM_ID, "domain": TEAM_DOMAIN},
                   "user": {"id": user, "username": user_name, "name": user_name, "team_id": TEAM_ID},
                   "api_app_id": APP_ID, "token": VERIFICATION_TOKEN,
                   "trigger_id": f"{secrets.randbelow(10**10)}.{secrets.token_hex(16)}",
                   "view": {**view, "state": state}, "response_urls": [], "is_enterprise_install": False,
                   "enterprise": None}
        return await self.send_envelope("interactive", payload, accepts_response_payload=True, timeout=timeout)

    async def request_reconnect(self, reason: str = "refresh_requested") -> None:
        """Send Slack's `disconnect` message on every connection; the SDK opens a new one by itself."""
        for ws in self._open_sockets():
            await ws.send_json({"type": "disconnect", "reason": reason,
                                "debug_info": {"host": "applink-fake"}})

    async def drop_connections(self) -> None:
        """Close every websocket from the server side, as a Slack restart would."""
        for ws in self._open_sockets():
            await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY)

    # --- Events API over HTTP -------------------------------------------------------------------------------------
    async def deliver_http(self, url: str, event: dict[str, Any], signing_secret: str, *, retry_num: int = 0,
                           retry_reason: str | None = None, timestamp: int | None = None) -> tuple[int, str]:
        """POST a signed event callback to a bot's Events API endpoint, as Slack does; returns (status, body)."""
        body = json.dumps(self.event_callback(event, event_id=self._event_id_for(event, retry_num))).encode()
        headers = {"Content-Type": "application/json", **sign_request(body, signing_secret, timestamp)}
        if retry_num > 0:
            headers.update({"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": retry_reason or ""})
        async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as resp:
            return resp.status, await resp.text()

    # --- "Add to Slack" (issue 18): OAuth v2, token rotation, uninstall -----------------------------------------
    def add_workspace(self, team_id: str, name: str, domain: str) -> Workspace:
        """A workspace the app can be installed in; its channels are added with `add_channel` as usual."""
        self.workspaces[team_id] = Workspace(team_id, name, domain)
        if team_id == OTHER_TEAM_ID:
            self.add_channel(OTHER_TEAM_CHANNEL, "general")
        return self.workspaces[team_id]

    def tokens_of(self, team_id: str) -> list[str]:
        """The bot tokens installs in `team_id` were given that still work."""
        return [t for t, info in self.installed_tokens.items() if info.team_id == team_id]

    async def _oauth_authorize(self, request: web.Request) -> web.Response:
        """`https://slack.com/oauth/v2/authorize`: the installer approves at once (the consent page is skipped);
        `team` picks the workspace, as on Slack. Redirects to the app's redirect URL with `code` and `state`."""
        query = request.query
        if query.get("client_id") != self.client_id:
            return web.Response(status=400, text="invalid_client_id")
        team = query.get("team") or TEAM_ID
        if team not in self.workspaces:
            return web.Response(status=400, text="invalid_team")
        redirect_uri = query.get("redirect_uri")
        if not redirect_uri:
            return web.Response(status=400, text="bad_redirect_uri")
        code = f"{secrets.randbelow(10**12)}.{secrets.token_hex(16)}"
        self.oauth_codes[code] = (team, redirect_uri)
        separator = "&" if "?" in redirect_uri else "?"
        location = f"{redirect_uri}{separator}code={code}&state={query.get('state', '')}"
        raise web.HTTPFound(location)

    def _client_credentials(self, params: dict[str, Any], token: str | None) -> tuple[str, str]:
        if token and token.startswith("basic:"):
            import base64

            client_id, _, secret = base64.b64decode(token[6:]).decode().partition(":")
            return client_id, secret
        return str(params.get("client_id") or ""), str(params.get("client_secret") or "")

    def _oauth_v2_access(self, params: dict[str, Any], token: str | None) -> dict[str, Any]:
        """Exchanges a code for a bot token (`code`, `redirect_uri`), or a refresh token for a new one
        (`grant_type=refresh_token`), with the shapes and errors Slack documents."""
        client_id, secret = self._client_credentials(params, token)
        if client_id != self.client_id:
            raise _Fail("invalid_client_id")
        if secret != self.client_secret:
            raise _Fail("bad_client_secret")
        if params.get("grant_type") == "refresh_token":
            team_id = self.refresh_tokens.pop(str(params.get("refresh_token") or ""), None)
            if team_id is None:
                raise _Fail("invalid_refresh_token")
            return self._grant(team_id, rotating=True)
        entry = self.oauth_codes.pop(str(params.get("code") or ""), None)
        if entry is None:
            raise _Fail("invalid_code")
        team_id, asked_redirect = entry
        if asked_redirect and params.get("redirect_uri") not in (None, "", asked_redirect):
            raise _Fail("bad_redirect_uri")
        return self._grant(team_id, rotating=self.token_rotation)

    def _grant(self, team_id: str, *, rotating: bool) -> dict[str, Any]:
        team = self.workspaces[team_id]
        token = (f"xoxe.xoxb-1-{secrets.token_hex(12)}" if rotating
                 else f"xoxb-{team_id.lower()}-{secrets.token_hex(12)}")
        expires_at = self.clock() + self.token_lifetime_s if rotating else None
        self.installed_tokens[token] = InstalledToken(team_id, expires_at)
        body: dict[str, Any] = {
            "access_token": token, "token_type": "bot", "scope": "app_mentions:read,chat:write,commands",
            "bot_user_id": BOT_USER_ID, "app_id": APP_ID, "team": {"name": team.name, "id": team.id},
            "enterprise": None, "authed_user": {"id": USER_ID}, "is_enterprise_install": False}
        if rotating:
            refresh = f"xoxe-1-{secrets.token_hex(16)}"
            self.refresh_tokens[refresh] = team_id
            body.update(refresh_token=refresh, expires_in=int(self.token_lifetime_s))
        return body

    def _installed_team(self, token: str) -> str:
        """The workspace of a token an install was given; Slack's errors for a revoked or expired one."""
        if token in self.revoked_tokens:
            raise _Fail("token_revoked")
        info = self.installed_tokens.get(token)
        if info is None:
            raise _Fail("invalid_auth")
        if info.expires_at is not None and self.clock() >= info.expires_at:
            raise _Fail("token_expired")
        return info.team_id

    def _installed_in(self, authorization: str, team_id: str) -> bool:
        """Whether `Bearer <token>` is a working token an install in `team_id` was given (files are only
        downloadable with a token of the workspace they were shared in)."""
        token = authorization[7:].strip() if authorization.lower().startswith("bearer ") else ""
        try:
            return bool(token) and self._installed_team(token) == team_id
        except _Fail:
            return False

    def _revoke(self, team_id: str) -> None:
        for token in self.tokens_of(team_id):
            del self.installed_tokens[token]
            self.revoked_tokens.add(token)
        for refresh in [r for r, team in self.refresh_tokens.items() if team == team_id]:
            del self.refresh_tokens[refresh]

    def app_uninstalled(self, team_id: str) -> dict[str, Any]:
        """Uninstalls the app from a workspace (its tokens stop working) and returns the `app_uninstalled` event
        Slack then sends (deliver it with `send_event` / `deliver_http`)."""
        self._revoke(team_id)
        return {"type": "app_uninstalled", "team": team_id, "event_ts": self.next_ts()}

    def tokens_revoked(self, team_id: str) -> dict[str, Any]:
        """Revokes a workspace's bot token and returns the `tokens_revoked` event."""
        self._revoke(team_id)
        return {"type": "tokens_revoked", "team": team_id, "tokens": {"oauth": [], "bot": [BOT_USER_ID]},
                "event_ts": self.next_ts()}

    # --- payload builders: realistic inner events (the user's message is stored as Slack would) ---------------
    def _user_post(self, channel: str, text: str, user: str, thread_ts: str | None, bot_id: str | None = None
                   ) -> Message:
        if channel not in self.channels:
            self.add_channel(channel, channel.lower(), is_im=channel.startswith("D"))
        return self._store(Message(channel, self.next_ts(), text, user, None, thread_ts, bot_id), "event")

    def _message_event(self, message: Message, type_: str = "message", **extra: Any) -> dict[str, Any]:
        event: dict[str, Any] = {"type": type_, "user": message.user, "text": message.text, "ts": message.ts,
                                 "team": TEAM_ID, "channel": message.channel, "event_ts": message.ts}
        if not message.bot_id:
            event["client_msg_id"] = str(uuid.uuid4())
        if message.thread_ts:
            event["thread_ts"] = message.thread_ts
            parent = self.messages[message.channel].get(message.thread_ts)
            if parent is not None and parent.ts != message.ts:
                event["parent_user_id"] = parent.user
        event.update(extra)
        return event

    def app_mention(self, question: str, *, channel: str = CHANNEL, user: str = USER_ID,
                    thread_ts: str | None = None, files: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """`@bot question` in a channel, top level or (with thread_ts) inside a thread; `files` (from
        `add_file`) shared with it, as Slack puts them in the event."""
        message = self._user_post(channel, f"<@{BOT_USER_ID}> {question}", user, thread_ts)
        return self._message_event(message, "app_mention", **({"files": files, "upload": False} if files else {}))

    def thread_message(self, text: str, *, thread_ts: str, channel: str = CHANNEL, user: str = USER_ID
                       ) -> dict[str, Any]:
        """A plain reply in a thread (no mention)."""
        message = self._user_post(channel, text, user, thread_ts)
        return self._message_event(message, channel_type="channel")

    def channel_message(self, text: str, *, channel: str = CHANNEL, user: str = USER_ID) -> dict[str, Any]:
        message = self._user_post(channel, text, user, None)
        return self._message_event(message, channel_type="channel")

    def dm_message(self, text: str, *, channel: str = DM_CHANNEL, user: str = USER_ID,
                   thread_ts: str | None = None, files: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """A direct message to the bot (`channel_type: im`); with `files`, subtype `file_share` as on Slack."""
        message = self._user_post(channel, text, user, thread_ts)
        shared = {"files": files, "upload": False, "subtype": "file_share"} if files else {}
        return self._message_event(message, channel_type="im", **shared)

    def bot_message(self, text: str, *, channel: str = CHANNEL, bot_id: str = OTHER_BOT_ID,
                    thread_ts: str | None = None, user: str | None = None) -> dict[str, Any]:
        """A message from a bot: carries `bot_id` (another bot's by default; pass BOT_ID for the app's own)."""
        author = user or (BOT_USER_ID if bot_id == BOT_ID else "U0OTHERBOT")
        message = self._user_post(channel, text, author, thread_ts, bot_id=bot_id)
        extra: dict[str, Any] = {"bot_id": bot_id, "app_id": APP_ID if bot_id == BOT_ID else "A0OTHER001",
                                 "channel_type": "im" if self.channels[channel].is_im else "channel",
                                 "bot_profile": {"id": bot_id, "app_id": APP_ID if bot_id == BOT_ID
                                                 else "A0OTHER001", "name": "other-bot", "team_id": TEAM_ID}}
        return self._message_event(message, **extra)

    def assistant_thread_started(self, *, user: str = USER_ID, context_channel: str | None = CHANNEL,
                                 channel: str = DM_CHANNEL) -> dict[str, Any]:
        """The user opens a new thread in the app's assistant view (while reading `context_channel`): Slack posts
        the thread's root (subtype `assistant_app_thread`, by the app) in the DM and sends this event."""
        root = self._store(Message(channel, self.next_ts(), "New Assistant Thread", BOT_USER_ID, None, None, BOT_ID,
                                   subtype="assistant_app_thread"), "event")
        root.thread_ts = root.ts
        return {"type": "assistant_thread_started", "event_ts": self.next_ts(), "assistant_thread": {
            "user_id": user, "channel_id": channel, "thread_ts": root.ts,
            "context": {"channel_id": context_channel, "team_id": TEAM_ID, "enterprise_id": None}
            if context_channel else {}}}

    def assistant_thread_context_changed(self, thread_ts: str, *, context_channel: str, user: str = USER_ID,
                                         channel: str = DM_CHANNEL) -> dict[str, Any]:
        """The user switched to another channel with the assistant thread open."""
        return {"type": "assistant_thread_context_changed", "event_ts": self.next_ts(), "assistant_thread": {
            "user_id": user, "channel_id": channel, "thread_ts": thread_ts,
            "context": {"channel_id": context_channel, "team_id": TEAM_ID, "enterprise_id": None}}}

    def app_home_opened(self, *, user: str = USER_ID, tab: str = "home") -> dict[str, Any]:
        """The user opens the app's Home tab."""
        ts = self.next_ts()
        return {"type": "app_home_opened", "user": user, "channel": DM_CHANNEL, "tab": tab, "event_ts": ts,
                "view": self.home_views.get(user)}

    def message_changed(self, channel: str, ts: str, new_text: str) -> dict[str, Any]:
        """A user edited a message: applies the edit and returns the `message_changed` event."""
        message = self.messages.get(channel, {}).get(ts)
        if message is None:
            raise KeyError(f"no message {ts} in {channel}")
        previous = self._render(message)
        message.text = new_text
        message.edited_ts = self.next_ts()
        message.versions.append(Version(new_text, message.blocks, self.clock(), "edit"))
        event_ts = self.next_ts()
        return {"type": "message", "subtype": "message_changed", "hidden": True, "channel": channel,
                "ts": event_ts, "event_ts": event_ts,
                "channel_type": "im" if self.channels[channel].is_im else "channel",
                "message": self._render(message), "previous_message": previous}


__all__ = [
    "APP_ID", "BOT_ID", "BOT_NAME", "BOT_USER_ID", "CHANNEL", "DM_CHANNEL", "OTHER_BOT_ID", "OTHER_CHANNEL",
    "OTHER_USER_ID", "TEAM_DOMAIN", "TEAM_ID", "USER_ID", "Ack", "AckTimeout", "ApiCall", "Connection", "Envelope",
    "FakeSlack",
    "Message", "RateLimit", "ResponseUrlPost", "TokenBucket", "Version", "sign_request",
]

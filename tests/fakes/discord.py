"""A loopback fake of Discord (REST + gateway) that the REAL discord.py 2.x client talks to.

Nothing inside discord.py is mocked: the fake serves Discord's wire protocol on 127.0.0.1 and only two
values are pointed at it, `discord.http.Route.BASE` and `discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`
(patched on enter, restored on exit). It was written against discord.py 2.7.1's http.py, gateway.py, state.py,
client.py, interactions.py and webhook/async_.py.

Usage::

    async with FakeDiscord() as fake:                    # patches discord.py while open
        client = discord.Client(intents=intents, guild_ready_timeout=0.05)
        async with connected_client(client, fake):     # login + connect task + wait for on_ready
            msg = await fake.user_message(fake.channel_id("general"), "how much is the pro plan?")
            await fake.wait_for(lambda: fake.messages_in(msg["channel_id"], from_bot=True))

`guild_ready_timeout` matters: discord.py fires `on_ready` only after that many seconds without a further
GUILD_CREATE (2 s by default). The pytest fixture `fake_discord` yields an entered fake. For benchmarks, where the
code under test owns its loop, `fake.start_in_thread()` / `fake.stop_thread()` run the server in its own thread
and loop; `fake.run(coro)` runs one of the async helpers there.

What it serves:
- REST (`/api/v{n}/...`, JSON with Content-Type exactly `application/json`, `Authorization: Bot <token>`
  checked, 401 otherwise): users/@me, gateway(/bot), oauth2/applications/@me, application commands (global and
  guild, GET/PUT bulk overwrite, POST upsert), guilds, channels, messages (create/edit/get/delete), typing,
  threads (from a message: thread id = message id, as on Discord; without a message), DMs (POST users/@me/
  channels), interaction callbacks (types 4, 5, 6, 7) and interaction webhooks (@original and follow-ups).
- Message components (buttons in action rows) in every message create/edit body, interaction callback and
  webhook: validated as Discord does (at most 5 rows of 5, a non-link button's `custom_id` 1-100 characters and
  unique in the message, a label of at most 80; 50035 otherwise), stored with the numeric `id`s Discord assigns,
  and returned in the `components` field of the message (REST responses and gateway events). A message whose
  body omits `components` keeps the ones it has, as on Discord.
- Errors in Discord's JSON shape: 50035 (content over 2,000 characters, invalid command), 50006 (empty
  message), 50013 (thread creation in a channel switched by `fake.deny_thread_creation(channel_id)`), 10003,
  10008, 10062, 10015, 40060, 160004.
- History: `GET /channels/{id}/messages` (`before`/`after`/`around`, `limit` 1-100, default 50; newest first) and
  `GET /channels/{id}/messages/{id}`. In a channel switched by `fake.deny_history(channel_id)` (no Read Message
  History) the list is empty and a single message is 403 50001, as on Discord. A reply's `referenced_message`
  carries the replied message without its own `referenced_message` (one level, as Discord sends it).
- Rate limit: `rate_limit` message creates/edits per `rate_window_s` per channel (default 5 per 5 s), shared by
  every message in the channel, interaction webhook messages included. Mode "bucket" (a fixed window opened by
  the first write, like Discord's buckets) or "sliding". Every response of those routes, 429 or not, carries
  `X-RateLimit-*` headers describing the route's own bucket (POST and PATCH are separate buckets, as discord.py
  expects), while the budget enforced is the channel's shared one. So a mix of creates and edits gets real 429s:
  `{"message": "You are being rate limited.", "retry_after": s, "global": false}` with `Via`, `Retry-After`,
  `X-RateLimit-Scope: user`. discord.py sleeps `retry_after` and retries. `fake.inject_429()` forces one.
- Forums: `fake.add_forum(name, tags=...)` (type 15 with `available_tags`), `await fake.forum_post(forum_id, title,
  content)` (THREAD_CREATE for the post, then MESSAGE_CREATE for its first message, id = thread id),
  `fake.delete_post(thread_id)` (THREAD_DELETE), PATCH /channels/{thread} for `applied_tags`, `archived`, `locked`
  (403 50013 after `fake.deny_manage_threads(forum_id)`), `fake.forum_tag(forum_id, name)`.
  `fake.member_permissions[user_id]` sets the permissions a user's interactions carry (default: all).
- Gateway: HELLO, heartbeat ACK, IDENTIFY -> READY + GUILD_CREATE per guild, RESUME -> replay + RESUMED (or
  INVALID_SESSION), REQUEST_GUILD_MEMBERS -> one chunk. Sharding as on Discord: GET /gateway/bot recommends
  `FakeDiscord(shards=N)`; IDENTIFY's `shard: [id, count]` is honoured (close 4010 when invalid), READY and the
  GUILD_CREATEs list only that shard's guilds, and each event goes to the sessions on the shard of its guild,
  `(guild_id >> 22) % count` (events without a guild, DMs, to shard 0). `fake.add_guild(name, shard=k)` makes a
  guild on shard k; `fake.identified_shards` lists the shards connected now. Close 4004 for a bad token, 4014
  when privileged intents are asked for but `privileged_intents_enabled=False`. Transport compression is honoured: `zlib-stream` and
  `zstd-stream` (discord.py asks for the latter when `zstandard` is installed); otherwise plain text frames,
  which discord.py also reads (`fake.gateway_compressions` records what each connection used). Intents filter
  dispatches (GUILD_MESSAGES, DIRECT_MESSAGES) and, without MESSAGE_CONTENT, guild messages that do not mention
  the bot arrive with empty content, as on Discord. The bot receives its own MESSAGE_CREATE / MESSAGE_UPDATE, as
  on Discord, so a bot must ignore its own messages.

Attachments (issue 17): `user_message(..., files=[(filename, bytes), (filename, bytes, declared_size, stored)])`
puts them on the message with signed CDN URLs that the fake serves without auth (404 when unsigned or not stored);
`fake.cdn_gets` records each download and how many bytes were written.

Acting as users: `await fake.user_message(channel_id, content, author=, mentions_bot=, message_reference=)`,
`fake.dm_channel(user)`, `await fake.slash_command(name, options, channel_id=, guild_id=, user=)`,
`await fake.click_button(message, custom_id, user=)` (INTERACTION_CREATE type 3, MESSAGE_COMPONENT),
`fake.add_user(name)`, `fake.add_guild(name, channels=)`, `fake.add_role(name)` and `fake.give_role(user, role_id)`
(before the client connects, so its GUILD_CREATE carries them), `await fake.drop_connections()` (the client
RESUMEs). A bot message's `mention_roles` and `mention_everyone` follow its `allowed_mentions` as on Discord
(`<@&id>` pings a role only when `parse` has "roles" or `roles` lists it; `@everyone`/`@here` only with
"everyone"), as `mentions` already does for users.
Assertion helpers: `messages_in(channel_id, from_bot=)`, `message(id)`, `edits_of(message_id)`,
`original_response(interaction)`, `buttons_of(message)`, `replies_to(interaction)`, `await wait_for(predicate,
timeout)`, `threads`, `typing_calls`,
`interaction_responses`, `command_syncs`, `commands(guild_id)`, `requests` (each REST request: method, path,
body, status, the fake's clock when handled, and the JSON answered), `rate_limited_count`,
`gateway_connections`, `unhandled` (requests no route matched: a sign the fake lacks an endpoint).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import math
import mimetypes
import re
import secrets
import threading
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, TypeVar

import pytest
from aiohttp import WSMsgType, web

T = TypeVar("T")
Json = dict[str, Any]
Handler = Callable[[web.Request, Any], Awaitable[web.Response]]  # (request, parsed JSON body or None)

DISCORD_EPOCH_MS = 1420070400000
MAX_CONTENT = 2000

# Gateway opcodes (https://discord.com/developers/docs/topics/opcodes-and-status-codes), named as discord.py does.
OP_DISPATCH, OP_HEARTBEAT, OP_IDENTIFY, OP_PRESENCE, OP_VOICE_STATE = 0, 1, 2, 3, 4
OP_RESUME, OP_RECONNECT, OP_REQUEST_MEMBERS, OP_INVALIDATE_SESSION, OP_HELLO, OP_HEARTBEAT_ACK = 6, 7, 8, 9, 10, 11

INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT

CHANNEL_TEXT, CHANNEL_DM, CHANNEL_PUBLIC_THREAD, CHANNEL_PRIVATE_THREAD = 0, 1, 11, 12
CHANNEL_FORUM = 15
MESSAGE_DEFAULT, MESSAGE_REPLY, MESSAGE_CHAT_INPUT = 0, 19, 20
INTERACTION_COMMAND, INTERACTION_COMPONENT = 2, 3
COMPONENT_ACTION_ROW, COMPONENT_BUTTON = 1, 2
BUTTON_LINK, BUTTON_PREMIUM = 5, 6
MAX_ROWS, MAX_ROW_ITEMS, MAX_CUSTOM_ID, MAX_BUTTON_LABEL = 5, 5, 100, 80
FLAG_HAS_THREAD, FLAG_EPHEMERAL, FLAG_LOADING = 1 << 5, 1 << 6, 1 << 7
ALL_PERMISSIONS = str((1 << 41) - 1)

MENTION_RE = re.compile(r"<@!?(\d+)>")


# --------------------------------------------------------------------------------------------------------------
# Small pure pieces: snowflakes, timestamps, error bodies, the rate limiter.
# --------------------------------------------------------------------------------------------------------------


class Snowflakes:
    """Monotonic Discord snowflakes with a real timestamp part, so discord.py's `created_at` is sensible."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        candidate = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last = max(candidate, self._last + 1)
        return self._last

    def next_on_shard(self, shard_id: int, shard_count: int) -> int:
        """The next snowflake whose guild would live on `shard_id` of `shard_count`: `(id >> 22) % count`, as
        Discord routes a guild. The timestamp part moves forward (at most `count - 1` ms) until it fits."""
        candidate = self.next()
        step = (shard_id - (candidate >> 22)) % shard_count
        if step:
            candidate = ((candidate >> 22) + step) << 22
            self._last = candidate
        return candidate


def shard_of(guild_id: int | None, shard_count: int) -> int:
    """The shard a guild's events go to (Discord's formula); DMs (no guild) go to shard 0."""
    return 0 if guild_id is None else (int(guild_id) >> 22) % shard_count


def iso_now() -> str:
    return datetime.now(timezone.utc).isoformat()


def discord_error(code: int, message: str, errors: Json | None = None) -> Json:
    body: Json = {"message": message, "code": code}
    if errors:
        body["errors"] = errors
    return body


def invalid_form_body(field_name: str, error_code: str, message: str) -> Json:
    return discord_error(50035, "Invalid Form Body",
                         {field_name: {"_errors": [{"code": error_code, "message": message}]}})


@dataclass
class RateDecision:
    """The limiter's answer for one write: whether it passes, and the header values for the route's bucket."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float = 0.0


class ChannelRateLimiter:
    """Per-channel write budget shared by all message routes; headers are reported per route.

    Pure logic with an injected clock, so it can be unit-tested without sleeping. `bucket` opens a fixed window at
    the first write and refills it whole when it ends (Discord's model); `sliding` counts the writes of the last
    `window_s` seconds.
    """

    def __init__(self, limit: int = 5, window_s: float = 5.0, mode: Literal["bucket", "sliding"] = "bucket",
                 clock: Callable[[], float] = time.monotonic) -> None:
        if mode not in ("bucket", "sliding"):
            raise ValueError(f"unknown rate limit mode {mode!r}")
        self.limit, self.window_s, self.mode, self.clock = limit, window_s, mode, clock
        self._ops: dict[int, deque[tuple[float, str]]] = {}
        self._window_start: dict[int, float] = {}

    def acquire(self, channel_id: int, route: str) -> RateDecision:
        now = self.clock()
        ops = self._current_ops(channel_id, now)
        if len(ops) >= self.limit:
            retry_after = max(0.001, self._free_at(channel_id, ops) - now)
            return RateDecision(False, self.limit, self._route_remaining(ops, route), retry_after, retry_after)
        if not ops and self.mode == "bucket":
            self._window_start[channel_id] = now
        ops.append((now, route))
        return RateDecision(True, self.limit, self._route_remaining(ops, route),
                            self._route_reset_after(channel_id, ops, route, now))

    def _current_ops(self, channel_id: int, now: float) -> deque[tuple[float, str]]:
        ops = self._ops.setdefault(channel_id, deque())
        if self.mode == "bucket":
            start = self._window_start.get(channel_id)
            if start is not None and now >= start + self.window_s:
                ops.clear()
                self._window_start.pop(channel_id, None)
        else:
            while ops and ops[0][0] <= now - self.window_s:
                ops.popleft()
        return ops

    def _free_at(self, channel_id: int, ops: deque[tuple[float, str]]) -> float:
        if self.mode == "bucket":
            return self._window_start[channel_id] + self.window_s
        return ops[0][0] + self.window_s

    def _route_remaining(self, ops: deque[tuple[float, str]], route: str) -> int:
        return max(0, self.limit - sum(1 for _, r in ops if r == route))

    def _route_reset_after(self, channel_id: int, ops: deque[tuple[float, str]], route: str, now: float) -> float:
        if self.mode == "bucket":
            return max(0.001, self._window_start[channel_id] + self.window_s - now)
        first = next(t for t, r in ops if r == route)
        return max(0.001, first + self.window_s - now)


# --------------------------------------------------------------------------------------------------------------
# Records kept for assertions.
# --------------------------------------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    method: str
    path: str
    body: Any
    status: int
    at: float  # the fake's clock once the request was handled (after any gateway dispatch it caused)
    response: Any = None  # the JSON answered (e.g. the message as created or edited); None without a JSON body


@dataclass
class CdnGet:
    """One download from the fake CDN: the attachment, the status answered, the bytes written before the reader
    stopped or the body ended."""

    attachment_id: int
    status: int = 200
    sent: int = 0


@dataclass
class TypingCall:
    channel_id: int
    at: float


@dataclass
class InteractionResponse:
    interaction_id: int
    token: str
    type: int
    data: Json | None
    at: float


@dataclass
class CommandSync:
    guild_id: int | None  # None for global commands
    commands: list[Json]
    at: float


@dataclass
class Injected429:
    retry_after: float
    is_global: bool


@dataclass
class _Interaction:
    payload: Json
    channel_id: int
    response_type: int | None = None
    original_id: int | None = None


@dataclass
class _Session:
    """One identified gateway session; survives a dropped socket so RESUME can replay what was missed."""

    session_id: str
    intents: int
    shard: tuple[int, int] = (0, 1)  # (shard id, shard count) from IDENTIFY
    seq: int = 0
    backlog: deque[Json] = field(default_factory=lambda: deque(maxlen=1000))
    conn: _Connection | None = None


class _Connection:
    """One websocket; serialises sends and applies the transport compression the client asked for.

    `zlib-stream`: one zlib stream per connection, every message ending in Z_SYNC_FLUSH. `zstd-stream` (what
    discord.py asks for when `zstandard` is installed): one zstd stream, each message flushed as a block. Anything
    else, or zstd without the module: plain text frames, which discord.py reads as well.
    """

    def __init__(self, ws: web.WebSocketResponse, compression: str | None) -> None:
        self.ws = ws
        self._lock = asyncio.Lock()
        self.session: _Session | None = None
        self.closed_by_server = False
        self.compression: str | None = None
        self._compress: Callable[[bytes], bytes] | None = None
        if compression == "zlib-stream":
            zobj = zlib.compressobj()
            self._compress = lambda data: zobj.compress(data) + zobj.flush(zlib.Z_SYNC_FLUSH)
            self.compression = compression
        elif compression == "zstd-stream":
            try:
                import zstandard
            except ImportError:
                return
            cobj = zstandard.ZstdCompressor().compressobj()
            self._compress = lambda data: cobj.compress(data) + cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
            self.compression = compression

    async def send(self, payload: Json) -> None:
        text = json.dumps(payload, separators=(",", ":"))
        async with self._lock:
            if self.ws.closed:
                return
            if self._compress is None:
                await self.ws.send_str(text)
            else:
                await self.ws.send_bytes(self._compress(text.encode()))


# --------------------------------------------------------------------------------------------------------------
# The fake.
# --------------------------------------------------------------------------------------------------------------


class FakeDiscord:
    """Discord on loopback: state, REST handlers, gateway, dispatch and assertion helpers. See module docstring."""

    def __init__(
        self,
        *,
        token: str = "fake-bot-token",
        bot_name: str = "switchboard",
        privileged_intents_enabled: bool = True,
        rate_limit: int = 5,
        rate_window_s: float = 5.0,
        rate_mode: Literal["bucket", "sliding"] = "bucket",
        webhooks_share_channel_limit: bool = True,
        heartbeat_interval_ms: int = 41250,
        clock: Callable[[], float] = time.monotonic,
        default_guild: bool = True,
        patch: bool = True,
        shards: int = 1,
    ) -> None:
        self.token = token
        self.shard_count = shards  # what GET /gateway/bot recommends; each session uses the count it IDENTIFYs with
        self.privileged_intents_enabled = privileged_intents_enabled
        self.webhooks_share_channel_limit = webhooks_share_channel_limit
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.clock = clock
        self.limiter = ChannelRateLimiter(rate_limit, rate_window_s, rate_mode, clock)
        self._patch_on_enter = patch
        self._ids = Snowflakes()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._waiters_lock = threading.Lock()

        self.bot_user: Json = self._user_payload(self._ids.next(), bot_name, bot=True)
        self.app_id: int = int(self.bot_user["id"])
        self.users: dict[int, Json] = {self.app_id: self.bot_user}
        self.guilds: dict[int, Json] = {}
        self.channels: dict[int, Json] = {}
        self.members: dict[int, dict[int, Json]] = {}  # guild_id -> user_id -> member
        self.default_user: Json = self.add_user("alice")

        self.messages: dict[int, Json] = {}
        self._channel_messages: dict[int, list[int]] = {}
        self._edits: dict[int, list[Json]] = {}
        self._dm_by_user: dict[int, int] = {}
        self._thread_denied: set[int] = set()
        self._history_denied: set[int] = set()  # channels where the bot lacks READ_MESSAGE_HISTORY
        self._manage_denied: set[int] = set()  # forums where the bot lacks Manage Threads (tags, archiving)
        self.member_permissions: dict[int, str] = {}  # user id -> permissions sent with their interactions
        self._commands: dict[int | None, list[Json]] = {}
        self._interactions: dict[int, _Interaction] = {}
        self._interactions_by_token: dict[str, _Interaction] = {}
        self._sessions: dict[str, _Session] = {}
        self._connections: set[_Connection] = set()
        self._injected: deque[Injected429] = deque()

        self.rate_limited_count = 0
        self.requests: list[RecordedRequest] = []
        self.typing_calls: list[TypingCall] = []
        self.interaction_responses: list[InteractionResponse] = []
        self.command_syncs: list[CommandSync] = []
        self.gateway_compressions: list[str | None] = []  # per gateway connection: what it was sent with
        self.unhandled: list[str] = []  # "METHOD /path" of requests no route matched: a hint the fake lacks one
        # user attachments on the CDN (issue 17): attachment id -> (signature, bytes); each download in cdn_gets
        self.cdn: dict[int, tuple[str, bytes]] = {}
        self.cdn_gets: list[CdnGet] = []

        self.guild_id: int | None = None
        if default_guild:
            self.guild_id = int(self.add_guild("Switchboard Test", channels=("general", "support"),
                                               shard=0 if shards > 1 else None)["id"])  # sharded: on shard 0

        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._patch_stack: contextlib.ExitStack | None = None
        self.port: int = 0

    # ---- world building ---------------------------------------------------------------------------------------

    @staticmethod
    def _user_payload(user_id: int, username: str, *, bot: bool = False) -> Json:
        return {"id": str(user_id), "username": username, "discriminator": "0" if not bot else "0000",
                "global_name": None if bot else username.title(), "avatar": None, "bot": bot, "system": False,
                "public_flags": 0, "flags": 0, "verified": True, "mfa_enabled": False}

    def add_user(self, username: str, *, bot: bool = False) -> Json:
        """Create a user (a member of every guild added afterwards, and of existing ones)."""
        user = self._user_payload(self._ids.next(), username, bot=bot)
        self.users[int(user["id"])] = user
        for guild_id in self.members:
            self.members[guild_id][int(user["id"])] = self._member_payload(user)
        return user

    @staticmethod
    def _member_payload(user: Json) -> Json:
        return {"user": user, "roles": [], "nick": None, "avatar": None, "joined_at": iso_now(), "deaf": False,
                "mute": False, "flags": 0, "pending": False, "premium_since": None,
                "communication_disabled_until": None}

    def add_guild(self, name: str, *, channels: tuple[str, ...] = ("general",),
                  shard: int | tuple[int, int] | None = None) -> Json:
        """Add a guild with text channels; the bot and every known user are members. `shard` picks its id so
        that it lives on that shard (of `fake.shard_count`, or of the count given as `(shard_id, count)`)."""
        if shard is None:
            guild_id = self._ids.next()
        else:
            shard_id, count = (shard, self.shard_count) if isinstance(shard, int) else shard
            guild_id = self._ids.next_on_shard(shard_id, count)
        guild: Json = {
            "id": str(guild_id), "name": name, "icon": None, "splash": None, "discovery_splash": None,
            "banner": None, "description": None, "owner_id": self.default_user["id"], "afk_channel_id": None,
            "afk_timeout": 300, "verification_level": 0, "default_message_notifications": 0,
            "explicit_content_filter": 0, "mfa_level": 0, "nsfw_level": 0, "premium_tier": 0,
            "premium_subscription_count": 0, "preferred_locale": "en-US", "features": [], "emojis": [],
            "stickers": [], "system_channel_id": None, "system_channel_flags": 0, "rules_channel_id": None,
            "public_updates_channel_id": None, "vanity_url_code": None, "application_id": None,
            "max_members": 500000, "roles": [{
                "id": str(guild_id), "name": "@everyone", "permissions": ALL_PERMISSIONS, "position": 0,
                "color": 0, "hoist": False, "managed": False, "mentionable": False, "icon": None,
                "unicode_emoji": None, "flags": 0}],
        }
        self.guilds[guild_id] = guild
        self.members[guild_id] = {uid: self._member_payload(u) for uid, u in self.users.items()}
        for position, channel_name in enumerate(channels):
            self.add_channel(guild_id, channel_name, position=position)
        return guild

    def add_channel(self, guild_id: int, name: str, *, position: int = 0) -> Json:
        channel_id = self._ids.next()
        channel = {"id": str(channel_id), "type": CHANNEL_TEXT, "guild_id": str(guild_id), "name": name,
                   "position": position, "permission_overwrites": [], "nsfw": False, "parent_id": None,
                   "topic": None, "last_message_id": None, "rate_limit_per_user": 0, "flags": 0,
                   "default_auto_archive_duration": 1440}
        self.channels[channel_id] = channel
        return channel

    def add_forum(self, name: str, *, tags: tuple[str, ...] = (), guild_id: int | None = None) -> Json:
        """A forum channel (type 15) whose `available_tags` are `tags` (before the client connects, so its
        GUILD_CREATE carries it). Posts are threads in it: `forum_post`."""
        gid = guild_id or self.guild_id
        channel = self.add_channel(gid, name)
        channel.update(type=CHANNEL_FORUM, default_forum_layout=0, default_sort_order=None,
                       default_reaction_emoji=None, default_thread_rate_limit_per_user=0,
                       available_tags=[{"id": str(self._ids.next()), "name": tag, "moderated": False,
                                        "emoji_id": None, "emoji_name": None} for tag in tags])
        return channel

    def forum_tag(self, forum_id: int, name: str) -> int:
        """The id of the forum's tag called `name`."""
        return next(int(t["id"]) for t in self.channels[int(forum_id)]["available_tags"] if t["name"] == name)

    def deny_manage_threads(self, channel_id: int, denied: bool = True) -> None:
        """Switch 'missing permissions' (403, code 50013) on or off for the bot editing the posts (threads) of a
        forum: applying tags, archiving, locking, as without Manage Threads."""
        (self._manage_denied.add if denied else self._manage_denied.discard)(int(channel_id))

    async def forum_post(self, forum_id: int, title: str, content: str, *, author: Json | int | None = None,
                         tags: tuple[int, ...] = ()) -> tuple[Json, Json]:
        """A user opens a post in a forum, as Discord delivers it: THREAD_CREATE (the post, owned by the author,
        `newly_created`), then MESSAGE_CREATE for its first message, whose id is the thread's. Returns (thread,
        message)."""
        forum = self.channels[int(forum_id)]
        user = self.users[self._user_id(author)]
        thread = self._new_thread(forum, {"name": title}, CHANNEL_PUBLIC_THREAD)
        thread.update(owner_id=user["id"], applied_tags=[str(t) for t in tags])
        thread.pop("member", None)  # the bot is not a member of a post it did not open
        await self.dispatch("THREAD_CREATE", dict(thread, newly_created=True), intent=INTENT_GUILDS)
        message = self._new_message(thread, user, content, mention_ids=self._mentioned_ids(content, None),
                                    message_id=int(thread["id"]))
        await self._dispatch_message("MESSAGE_CREATE", message)
        return thread, message

    async def user_thread(self, channel_id: int, name: str, *, author: Json | int | None = None) -> Json:
        """A user opens a public thread in a text channel (the bot neither owns nor has joined it): THREAD_CREATE
        as Discord delivers it. Returns the thread; post in it with `user_message(thread id, ...)`."""
        user = self.users[self._user_id(author)]
        thread = self._new_thread(self.channels[int(channel_id)], {"name": name}, CHANNEL_PUBLIC_THREAD)
        thread["owner_id"] = user["id"]
        thread.pop("member", None)
        await self.dispatch("THREAD_CREATE", dict(thread, newly_created=True), intent=INTENT_GUILDS)
        return thread

    async def delete_post(self, thread_id: int) -> None:
        """The post's author (or a moderator) deletes a forum post: the thread and its messages are gone (REST
        answers 10003 Unknown Channel from now on) and THREAD_DELETE is dispatched."""
        thread = self.channels.pop(int(thread_id))
        for message_id in self._channel_messages.pop(int(thread_id), []):
            self.messages.pop(message_id, None)
        await self.dispatch("THREAD_DELETE", {k: thread[k] for k in ("id", "guild_id", "parent_id", "type")},
                            intent=INTENT_GUILDS)
        self._changed()

    def add_role(self, name: str, guild_id: int | None = None) -> Json:
        """A role in the guild (the default one unless told)."""
        guild = self.guilds[guild_id or self.guild_id]
        role = {"id": str(self._ids.next()), "name": name, "permissions": "0", "position": len(guild["roles"]),
                "color": 0, "hoist": False, "managed": False, "mentionable": True, "icon": None,
                "unicode_emoji": None, "flags": 0}
        guild["roles"].append(role)
        return role

    def give_role(self, user: Json | int, role_id: int | str, guild_id: int | None = None) -> None:
        member = self.members[guild_id or self.guild_id][self._user_id(user)]
        member["roles"] = [*member["roles"], str(role_id)]

    def channel_id(self, name: str, guild_id: int | None = None) -> int:
        """The id of the guild text channel called `name` (in the default guild unless told)."""
        gid = guild_id or self.guild_id
        for cid, ch in self.channels.items():
            if ch["type"] == CHANNEL_TEXT and ch.get("name") == name and int(ch["guild_id"]) == gid:
                return cid
        raise KeyError(f"no channel {name!r} in guild {gid}")

    def dm_channel(self, user: Json | int | None = None) -> Json:
        """The DM channel between the bot and `user` (created on first use, like POST /users/@me/channels)."""
        user_id = self._user_id(user)
        if user_id not in self._dm_by_user:
            channel_id = self._ids.next()
            self.channels[channel_id] = {"id": str(channel_id), "type": CHANNEL_DM, "last_message_id": None,
                                         "recipients": [self.users[user_id]], "flags": 0}
            self._dm_by_user[user_id] = channel_id
        return self.channels[self._dm_by_user[user_id]]

    def deny_thread_creation(self, channel_id: int, denied: bool = True) -> None:
        """Switch 'missing permissions' (403, code 50013) on or off for creating threads in a channel."""
        (self._thread_denied.add if denied else self._thread_denied.discard)(channel_id)

    def inject_429(self, *, retry_after: float = 0.2, is_global: bool = False, count: int = 1) -> None:
        """Answer the next `count` rate-limited writes with a 429 regardless of the budget."""
        self._injected.extend(Injected429(retry_after, is_global) for _ in range(count))

    async def drop_connections(self, code: int = 4000) -> None:
        """Close every gateway socket with `code` (4000: the client reconnects and RESUMEs)."""
        for conn in list(self._connections):
            conn.closed_by_server = True
            await conn.ws.close(code=code, message=b"dropped by fake Discord")

    def _user_id(self, user: Json | int | None) -> int:
        if user is None:
            return int(self.default_user["id"])
        return int(user["id"]) if isinstance(user, dict) else int(user)

    # ---- assertion helpers --------------------------------------------------------------------------------------

    def messages_in(self, channel_id: int, *, from_bot: bool | None = None) -> list[Json]:
        """Current state of the channel's messages, oldest first; `from_bot` filters on the author being the bot."""
        found = [self.messages[mid] for mid in self._channel_messages.get(int(channel_id), []) if mid in self.messages]
        if from_bot is not None:
            found = [m for m in found if (m["author"]["id"] == self.bot_user["id"]) == from_bot]
        return found

    def message(self, message_id: int) -> Json:
        return self.messages[int(message_id)]

    def edits_of(self, message_id: int) -> list[Json]:
        """Snapshots of the message after each successful edit, oldest first (the creation is not an edit)."""
        return list(self._edits.get(int(message_id), []))

    @property
    def gateway_connections(self) -> int:
        """Open gateway websockets right now (0 once every client has closed)."""
        return len(self._connections)

    @property
    def identified_shards(self) -> list[tuple[int, int]]:
        """`(shard id, shard count)` of every identified session with an open socket right now, sorted (one
        entry per session, so a shard identified twice shows twice)."""
        return sorted(conn.session.shard for conn in self._connections
                      if conn.session is not None and conn.session.conn is conn and not conn.ws.closed)

    def shard_of(self, guild_id: int | None, shard_count: int | None = None) -> int:
        """The shard that receives a guild's events (DMs: 0), of `shard_count` (default `fake.shard_count`)."""
        return shard_of(guild_id, shard_count or self.shard_count)

    @property
    def threads(self) -> list[Json]:
        return [ch for ch in self.channels.values() if ch["type"] in (CHANNEL_PUBLIC_THREAD, CHANNEL_PRIVATE_THREAD)]

    def commands(self, guild_id: int | None = None) -> list[Json]:
        return list(self._commands.get(guild_id, []))

    @staticmethod
    def buttons_of(message: Json) -> list[Json]:
        """The buttons a message carries, in order, across its action rows."""
        return [child for row in message.get("components") or [] if row.get("type") == COMPONENT_ACTION_ROW
                for child in row.get("components") or [] if child.get("type") == COMPONENT_BUTTON]

    def replies_to(self, interaction: Json | str) -> list[InteractionResponse]:
        """The callbacks the bot sent for one interaction (type 4 with `data.flags & 64` is an ephemeral reply)."""
        token = interaction if isinstance(interaction, str) else interaction["token"]
        return [r for r in self.interaction_responses if r.token == token]

    def original_response(self, interaction: Json | str) -> Json | None:
        """The message an interaction's response created (None before it was acknowledged with a message)."""
        token = interaction if isinstance(interaction, str) else interaction["token"]
        record = self._interactions_by_token.get(token)
        if record is None or record.original_id is None:
            return None
        return self.messages.get(record.original_id)

    async def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0) -> T:
        """Wait until `predicate()` is truthy (re-checked on every state change) and return its value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            future: asyncio.Future[None] = loop.create_future()
            with self._waiters_lock:
                self._waiters.append((loop, future))
            try:
                result = predicate()
                if result:
                    return result
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError(f"fake Discord: condition not met within {timeout}s")
                # The poll bound covers state the fake cannot see change (e.g. a predicate reading the client).
                await asyncio.wait([future], timeout=min(remaining, 0.05))
            finally:
                with self._waiters_lock:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove((loop, future))

    def _changed(self) -> None:
        with self._waiters_lock:
            waiters = list(self._waiters)
        for loop, future in waiters:
            loop.call_soon_threadsafe(lambda f=future: f.done() or f.set_result(None))

    # ---- lifecycle --------------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        self._add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._loop = asyncio.get_running_loop()

    async def stop(self) -> None:
        for conn in list(self._connections):
            conn.closed_by_server = True
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001, message=b"fake Discord shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        if self._patch_on_enter:
            self._patch_stack = contextlib.ExitStack()
            self._patch_stack.enter_context(patched_discord(self))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._patch_stack is not None:
            self._patch_stack.close()
            self._patch_stack = None
        await self.stop()

    def start_in_thread(self) -> FakeDiscord:
        """Serve from a background thread with its own loop (benchmarks); also patches discord.py."""
        started = threading.Event()
        loop = asyncio.new_event_loop()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start())
            started.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=serve, name="fake-discord", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("fake Discord did not start")
        if self._patch_on_enter:
            self._patch_stack = contextlib.ExitStack()
            self._patch_stack.enter_context(patched_discord(self))
        return self

    def stop_thread(self) -> None:
        if self._patch_stack is not None:
            self._patch_stack.close()
            self._patch_stack = None
        if self._thread is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    def run(self, coro: Awaitable[T], timeout: float = 10.0) -> T:
        """Run one of the async helpers on the fake's own loop from another thread (thread mode)."""
        assert self._loop is not None, "fake Discord is not running"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)  # type: ignore[arg-type]

    # ---- dispatch helpers (what users do) --------------------------------------------------------------------------

    async def user_message(
        self,
        channel_id: int,
        content: str,
        *,
        author: Json | int | None = None,
        mentions_bot: bool | None = None,
        message_reference: int | Json | None = None,
        reply_ping: bool = True,
        files: list[tuple[Any, ...]] | None = None,
    ) -> Json:
        """A user posts in a channel, thread or DM: stored, then MESSAGE_CREATE dispatched. Returns the message.

        `mentions_bot` (default: yes in guild channels, no in DMs) prefixes `<@BOTID> ` and puts the bot in
        `mentions`. `message_reference` (a message id or dict) makes it a reply; replying to the bot's message
        mentions the bot unless `reply_ping=False`, as Discord's client does.
        """
        channel = self.channels[int(channel_id)]
        is_dm = channel["type"] == CHANNEL_DM
        if author is None and is_dm:
            author = channel["recipients"][0]
        user = self.users[self._user_id(author)]
        if mentions_bot is None:
            mentions_bot = not is_dm
        bot_mention = f"<@{self.app_id}>"
        if mentions_bot and bot_mention not in content:
            content = f"{bot_mention} {content}"
        reference, referenced = self._resolve_reference(channel, message_reference)
        mention_ids = self._mentioned_ids(content, None)
        if referenced is not None and reply_ping and int(referenced["author"]["id"]) not in mention_ids:
            mention_ids.append(int(referenced["author"]["id"]))
        message = self._new_message(channel, user, content, mention_ids=mention_ids, reference=reference,
                                    referenced=referenced)
        if files:
            message["attachments"] = [self._cdn_attachment(channel, *file) for file in files]
        await self._dispatch_message("MESSAGE_CREATE", message)
        return message

    def _cdn_attachment(self, channel: Json, filename: str, content: bytes, size: int | None = None,
                        stored: bool = True) -> Json:
        """A user's attachment as Discord sends it: a signed CDN URL (`ex`, `is`, `hm`; the fake serves it at
        /attachments/{channel}/{id}/{filename} without auth, 404 once unsigned or gone). `size` overrides the
        declared size; `stored=False` makes the download 404."""
        attachment_id = self._ids.next()
        signature = secrets.token_hex(16)
        url = (f"{self.base_url}/attachments/{channel['id']}/{attachment_id}/{filename}"
               f"?ex={int(time.time()) + 86400:x}&is={int(time.time()):x}&hm={signature}&")
        if stored:
            self.cdn[attachment_id] = (signature, content)
        content_type = mimetypes.guess_type(filename)[0]
        attachment: Json = {"id": str(attachment_id), "filename": filename,
                            "size": len(content) if size is None else size, "url": url, "proxy_url": url}
        if content_type:
            attachment["content_type"] = content_type
        return attachment

    async def _cdn_get(self, request: web.Request) -> web.StreamResponse:
        """A CDN download: no Authorization (the URL is signed); the body streams so a reader that stops early is
        seen (`CdnGet.sent`)."""
        record = CdnGet(int(request.match_info["attachment_id"]))
        self.cdn_gets.append(record)
        stored = self.cdn.get(record.attachment_id)
        if stored is None or request.query.get("hm") != stored[0]:
            record.status = 404
            self._changed()
            return web.Response(status=404, text="This content is no longer available.")
        content = stored[1]
        response = web.StreamResponse(headers={"Content-Type": mimetypes.guess_type(
            request.match_info["filename"])[0] or "application/octet-stream"})
        response.content_length = len(content)
        await response.prepare(request)
        try:
            for start in range(0, len(content), 64 * 1024):
                piece = content[start:start + 64 * 1024]
                await response.write(piece)
                record.sent = start + len(piece)
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
        self._changed()
        return response

    async def slash_command(
        self,
        name: str,
        options: dict[str, Any] | list[Json] | None = None,
        *,
        channel_id: int | None = None,
        guild_id: int | None = None,
        user: Json | int | None = None,
    ) -> Json:
        """A user runs `/name`: INTERACTION_CREATE (type 2) dispatched; returns the interaction payload."""
        channel = self.channels[int(channel_id)] if channel_id else self.channels[self.channel_id("general")]
        in_guild = channel["type"] != CHANNEL_DM
        gid = (guild_id or int(channel["guild_id"])) if in_guild else None
        user_payload = self.users[self._user_id(user if user is not None or in_guild
                                                else channel["recipients"][0])]
        command = next((c for c in self._commands.get(gid, []) if c["name"] == name), None)
        command = command or next((c for c in self._commands.get(None, []) if c["name"] == name), None)
        data: Json = {"id": command["id"] if command else str(self._ids.next()), "name": name, "type": 1,
                      "options": self._options_payload(options)}
        if command and command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        return await self._interact(INTERACTION_COMMAND, data, channel, gid, user_payload)

    async def click_button(self, message: Json | int, custom_id: str, *, user: Json | int | None = None) -> Json:
        """A user clicks the button `custom_id` on a message: INTERACTION_CREATE (type 3, MESSAGE_COMPONENT) with
        `data: {custom_id, component_type: 2}` and the message as it is now. Returns the interaction payload; the
        bot answers through the usual callback (`interaction_responses`, `replies_to`).

        Like Discord's client, it only clicks what is there: a button the message does not carry (or a link
        button) raises LookupError.
        """
        current = self.messages[int(message["id"]) if isinstance(message, dict) else int(message)]
        if custom_id not in (b.get("custom_id") for b in self.buttons_of(current)):
            raise LookupError(f"message {current['id']} has no button {custom_id!r}")
        channel = self.channels[int(current["channel_id"])]
        in_guild = channel["type"] != CHANNEL_DM
        gid = int(channel["guild_id"]) if in_guild else None
        user_payload = self.users[self._user_id(user if user is not None or in_guild
                                                else channel["recipients"][0])]
        data: Json = {"custom_id": custom_id, "component_type": COMPONENT_BUTTON}
        return await self._interact(INTERACTION_COMPONENT, data, channel, gid, user_payload,
                                    message=copy.deepcopy(current))

    async def _interact(self, kind: int, data: Json, channel: Json, gid: int | None, user_payload: Json,
                        **extra: Any) -> Json:
        """Build an interaction payload as Discord sends it, remember it for its callback and webhooks, dispatch."""
        interaction_id = self._ids.next()
        payload: Json = {
            "id": str(interaction_id), "application_id": str(self.app_id), "type": kind, "data": data,
            "token": "aW50ZXJhY3Rpb24" + secrets.token_urlsafe(48), "version": 1,
            "channel_id": channel["id"], "channel": channel, "locale": "en-US", "app_permissions": ALL_PERMISSIONS,
            "entitlements": [], "attachment_size_limit": 10 * 1024 * 1024, **extra,
        }
        if gid is not None:
            member = dict(self.members[gid][int(user_payload["id"])],
                          permissions=self.member_permissions.get(int(user_payload["id"]), ALL_PERMISSIONS))
            payload.update(guild_id=str(gid), guild={"id": str(gid), "locale": "en-US", "features": []},
                           guild_locale="en-US", member=member, context=0,
                           authorizing_integration_owners={"0": str(gid)})
        else:
            payload.update(user=user_payload, context=1, authorizing_integration_owners={"1": user_payload["id"]})
        record = _Interaction(payload=payload, channel_id=int(channel["id"]))
        self._interactions[interaction_id] = record
        self._interactions_by_token[payload["token"]] = record
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    @staticmethod
    def _options_payload(options: dict[str, Any] | list[Json] | None) -> list[Json]:
        if options is None:
            return []
        if isinstance(options, list):
            return options
        kinds = {bool: 5, int: 4, float: 10, str: 3}
        return [{"name": k, "type": kinds.get(type(v), 3), "value": v} for k, v in options.items()]

    # ---- gateway ----------------------------------------------------------------------------------------------

    async def dispatch(self, event: str, data: Json, *, guild_id: int | None = None,
                       intent: int | None = None) -> None:
        """Send an event (op 0) to every identified session whose intents allow it and whose shard the event's
        guild lives on (`guild_id`, else the payload's `guild_id`; no guild means shard 0, as DMs on Discord);
        seq increases per session."""
        gid = guild_id if guild_id is not None else data.get("guild_id")
        for session in list(self._sessions.values()):
            if intent is not None and not session.intents & intent:
                continue
            if shard_of(int(gid) if gid else None, session.shard[1]) != session.shard[0]:
                continue
            payload_data = self._for_session(event, data, session)
            session.seq += 1
            frame = {"op": OP_DISPATCH, "t": event, "s": session.seq, "d": payload_data}
            session.backlog.append(frame)
            if session.conn is not None:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await session.conn.send(frame)

    def _for_session(self, event: str, data: Json, session: _Session) -> Json:
        """Apply what the session's intents hide: message content without MESSAGE_CONTENT (Discord's rule)."""
        if event not in ("MESSAGE_CREATE", "MESSAGE_UPDATE") or session.intents & INTENT_MESSAGE_CONTENT:
            return data
        if "guild_id" not in data or data["author"]["id"] == self.bot_user["id"]:
            return data
        if any(m["id"] == self.bot_user["id"] for m in data.get("mentions", [])):
            return data
        return dict(data, content="", embeds=[], attachments=[], components=[])

    async def _dispatch_message(self, event: str, message: Json) -> None:
        intent = INTENT_GUILD_MESSAGES if "guild_id" in message else INTENT_DIRECT_MESSAGES
        await self.dispatch(event, message, intent=intent)

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        conn = _Connection(ws, request.query.get("compress"))
        self._connections.add(conn)
        self.gateway_compressions.append(conn.compression)
        try:
            await conn.send({"op": OP_HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}})
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                await self._gateway_op(conn, frame.get("op"), frame.get("d"))
        finally:
            self._connections.discard(conn)
            session = conn.session
            if session is not None and session.conn is conn:
                session.conn = None
                # A clean close by the client ends the session, as on Discord. (A close the fake started reads as
                # 1000 here too, aiohttp reporting the client's reply, hence the flag.)
                if not conn.closed_by_server and ws.close_code in (1000, 1001):
                    self._sessions.pop(session.session_id, None)
        return ws

    async def _gateway_op(self, conn: _Connection, op: int | None, data: Any) -> None:
        if op == OP_HEARTBEAT:
            await conn.send({"op": OP_HEARTBEAT_ACK})
        elif op == OP_IDENTIFY:
            await self._identify(conn, data)
        elif op == OP_RESUME:
            await self._resume(conn, data)
        elif op == OP_REQUEST_MEMBERS:
            await self._members_chunk(conn, data)
        elif op in (OP_PRESENCE, OP_VOICE_STATE):
            pass
        else:
            await conn.ws.close(code=4001, message=b"Unknown opcode.")

    async def _identify(self, conn: _Connection, data: Json) -> None:
        if data.get("token") != self.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        intents = int(data.get("intents", 0))
        if intents & PRIVILEGED_INTENTS and not self.privileged_intents_enabled:
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        shard = data.get("shard") or [0, 1]
        try:
            shard_id, shard_count = int(shard[0]), int(shard[1])
            valid = 0 <= shard_id < shard_count
        except (TypeError, ValueError, IndexError):
            valid = False
        if not valid:
            await conn.ws.close(code=4010, message=b"Invalid shard.")
            return
        session = _Session(session_id=secrets.token_hex(16), intents=intents, shard=(shard_id, shard_count),
                           conn=conn)
        conn.session = session
        guilds = [g for g in self.guilds.values() if shard_of(int(g["id"]), shard_count) == shard_id]
        ready = {
            "v": 10, "user": self.bot_user, "session_id": session.session_id, "session_type": "normal",
            "resume_gateway_url": self.gateway_url, "shard": [shard_id, shard_count],
            "guilds": [{"id": g["id"], "unavailable": True} for g in guilds],
            "application": {"id": str(self.app_id), "flags": self._application_flags()},
            "private_channels": [], "relationships": [], "presences": [], "guild_join_requests": [],
            "geo_ordered_rtc_regions": [], "user_settings": {},
        }
        self._sessions[session.session_id] = session
        # READY and the GUILD_CREATEs (this shard's guilds) go to this session only; the session is registered
        # first so events dispatched meanwhile are sequenced after them rather than lost.
        for event, payload in [("READY", ready)] + [("GUILD_CREATE", self._guild_create(g, intents))
                                                   for g in guilds]:
            session.seq += 1
            frame = {"op": OP_DISPATCH, "t": event, "s": session.seq, "d": payload}
            session.backlog.append(frame)
            await conn.send(frame)

    async def _resume(self, conn: _Connection, data: Json) -> None:
        session = self._sessions.get(data.get("session_id", ""))
        if session is None or data.get("token") != self.token:
            await conn.send({"op": OP_INVALIDATE_SESSION, "d": False})
            return
        session.conn, conn.session = conn, session
        for frame in list(session.backlog):
            if frame["s"] > int(data.get("seq") or 0):
                await conn.send(frame)
        session.seq += 1
        await conn.send({"op": OP_DISPATCH, "t": "RESUMED", "s": session.seq, "d": {}})

    async def _members_chunk(self, conn: _Connection, data: Json) -> None:
        if conn.session is None:
            return
        guild_id = int(data["guild_id"])
        conn.session.seq += 1
        await conn.send({"op": OP_DISPATCH, "t": "GUILD_MEMBERS_CHUNK", "s": conn.session.seq, "d": {
            "guild_id": str(guild_id), "members": list(self.members[guild_id].values()), "chunk_index": 0,
            "chunk_count": 1, "nonce": data.get("nonce"), "not_found": [], "presences": []}})

    def _application_flags(self) -> int:
        # GATEWAY_PRESENCE_LIMITED | GATEWAY_GUILD_MEMBERS_LIMITED | GATEWAY_MESSAGE_CONTENT_LIMITED
        return (1 << 13) | (1 << 15) | (1 << 19) if self.privileged_intents_enabled else 0

    def _guild_create(self, guild: Json, intents: int) -> Json:
        guild_id = int(guild["id"])
        members = self.members[guild_id]
        shown = list(members.values()) if intents & INTENT_GUILD_MEMBERS else [members[self.app_id]]
        return dict(
            guild, unavailable=False, large=False, member_count=len(members), members=shown,
            joined_at=members[self.app_id]["joined_at"],
            channels=[c for c in self.channels.values()
                      if c["type"] in (CHANNEL_TEXT, CHANNEL_FORUM) and c.get("guild_id") == guild["id"]],
            threads=[t for t in self.threads if t.get("guild_id") == guild["id"]],
            presences=[], voice_states=[], stage_instances=[], guild_scheduled_events=[], soundboard_sounds=[],
        )

    # ---- REST plumbing ------------------------------------------------------------------------------------------

    def _add_routes(self, app: web.Application) -> None:
        api = "/api/v{version:\\d+}"
        table: list[tuple[str, str, Handler]] = [
            ("GET", "/users/@me", self._get_me),
            ("POST", "/users/@me/channels", self._open_dm),
            ("GET", "/users/{user_id}", self._get_user),
            ("GET", "/gateway", self._get_gateway),
            ("GET", "/gateway/bot", self._get_gateway_bot),
            ("GET", "/oauth2/applications/@me", self._get_application),
            ("GET", "/applications/@me", self._get_application),
            ("GET", "/applications/{app_id}/commands", self._get_commands),
            ("PUT", "/applications/{app_id}/commands", self._put_commands),
            ("POST", "/applications/{app_id}/commands", self._post_command),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands", self._get_commands),
            ("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self._put_commands),
            ("POST", "/applications/{app_id}/guilds/{guild_id}/commands", self._post_command),
            ("GET", "/guilds/{guild_id}", self._get_guild),
            ("GET", "/guilds/{guild_id}/channels", self._get_guild_channels),
            ("GET", "/channels/{channel_id}", self._get_channel),
            ("PATCH", "/channels/{channel_id}", self._edit_channel),
            ("POST", "/channels/{channel_id}/messages", self._create_message),
            ("GET", "/channels/{channel_id}/messages", self._get_messages),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self._get_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._edit_message),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self._delete_message),
            ("POST", "/channels/{channel_id}/typing", self._typing),
            ("POST", "/channels/{channel_id}/messages/{message_id}/threads", self._thread_from_message),
            ("POST", "/channels/{channel_id}/threads", self._thread_without_message),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self._interaction_callback),
            ("POST", "/webhooks/{app_id}/{token}", self._webhook_execute),
            ("GET", "/webhooks/{app_id}/{token}/messages/{message_id}", self._webhook_get),
            ("PATCH", "/webhooks/{app_id}/{token}/messages/{message_id}", self._webhook_edit),
            ("DELETE", "/webhooks/{app_id}/{token}/messages/{message_id}", self._webhook_delete),
        ]
        for method, path, handler in table:
            app.router.add_route(method, api + path, self._wrap(handler))
        app.router.add_get("/", self._gateway)
        app.router.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self._cdn_get)
        app.router.add_route("*", "/{tail:.*}", self._wrap(self._not_found))

    def _wrap(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        authless = handler in (self._interaction_callback, self._webhook_execute, self._webhook_get,
                               self._webhook_edit, self._webhook_delete, self._not_found)

        async def wrapped(request: web.Request) -> web.Response:
            body = await _read_body(request)
            if not authless and request.headers.get("Authorization") != f"Bot {self.token}":
                response = _json(401, discord_error(0, "401: Unauthorized"))
            else:
                response = await handler(request, body)
            self.requests.append(RecordedRequest(request.method, request.path, body, response.status, self.clock(),
                                                 _response_json(response)))
            self._changed()
            return response

        return wrapped

    async def _not_found(self, request: web.Request, body: Any) -> web.Response:
        self.unhandled.append(f"{request.method} {request.path}")
        return _json(404, discord_error(0, "404: Not Found"))

    def _channel_or_404(self, request: web.Request) -> Json | web.Response:
        channel = self.channels.get(int(request.match_info["channel_id"]))
        return channel if channel is not None else _json(404, discord_error(10003, "Unknown Channel"))

    def _rate_check(self, channel_id: int, route: str) -> tuple[web.Response | None, dict[str, str]]:
        """Charge one write to the channel; a 429 response when over budget, else the headers to send."""
        bucket = hashlib.md5(route.encode()).hexdigest()
        if self._injected:
            injected = self._injected.popleft()
            return self._too_many(injected.retry_after, bucket, injected.is_global), {}
        decision = self.limiter.acquire(channel_id, route)
        if not decision.allowed:
            return self._too_many(decision.retry_after, bucket, False, decision), {}
        return None, _rate_headers(decision.limit, decision.remaining, decision.reset_after, bucket)

    def _too_many(self, retry_after: float, bucket: str, is_global: bool,
                  decision: RateDecision | None = None) -> web.Response:
        self.rate_limited_count += 1
        retry_after = round(retry_after, 3)
        headers = _rate_headers(decision.limit if decision else self.limiter.limit,
                                decision.remaining if decision else 0, retry_after, bucket)
        headers.update({"Via": "1.1 google", "Retry-After": str(math.ceil(retry_after)),
                        "X-RateLimit-Scope": "user"})
        if is_global:
            headers["X-RateLimit-Global"] = "true"
        body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": is_global}
        return _json(429, body, headers)

    # ---- REST: identity, gateway, application, commands -----------------------------------------------------------

    async def _get_me(self, request: web.Request, body: Any) -> web.Response:
        return _json(200, self.bot_user)

    async def _get_user(self, request: web.Request, body: Any) -> web.Response:
        user = self.users.get(int(request.match_info["user_id"]))
        return _json(200, user) if user else _json(404, discord_error(10013, "Unknown User"))

    async def _get_gateway(self, request: web.Request, body: Any) -> web.Response:
        return _json(200, {"url": self.gateway_url.rstrip("/")})

    async def _get_gateway_bot(self, request: web.Request, body: Any) -> web.Response:
        return _json(200, {"url": self.gateway_url.rstrip("/"), "shards": self.shard_count,
                           "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 86_400_000,
                                                   "max_concurrency": 1}})

    async def _get_application(self, request: web.Request, body: Any) -> web.Response:
        return _json(200, {
            "id": str(self.app_id), "name": self.bot_user["username"], "icon": None, "description": "",
            "summary": "", "bot_public": True, "bot_require_code_grant": False, "owner": self.default_user,
            "team": None, "verify_key": "0" * 64, "flags": self._application_flags(), "bot": self.bot_user,
            "interactions_endpoint_url": None, "redirect_uris": [], "tags": [], "approximate_guild_count":
            len(self.guilds), "integration_types_config": {"0": {}},
        })

    def _command_scope(self, request: web.Request) -> int | None:
        guild = request.match_info.get("guild_id")
        return int(guild) if guild else None

    async def _get_commands(self, request: web.Request, body: Any) -> web.Response:
        return _json(200, self._commands.get(self._command_scope(request), []))

    async def _put_commands(self, request: web.Request, body: Any) -> web.Response:
        scope = self._command_scope(request)
        body = body or []
        error = next((e for e in map(_command_error, body) if e), None)
        if error:
            return _json(400, error)
        existing = {c["name"]: c for c in self._commands.get(scope, [])}
        stored = [self._stored_command(cmd, scope, existing.get(cmd["name"])) for cmd in body]
        self._commands[scope] = stored
        self.command_syncs.append(CommandSync(scope, copy.deepcopy(body), self.clock()))
        return _json(200, stored)

    async def _post_command(self, request: web.Request, body: Any) -> web.Response:
        scope = self._command_scope(request)
        body = body or {}
        error = _command_error(body)
        if error:
            return _json(400, error)
        current = [c for c in self._commands.get(scope, []) if c["name"] != body["name"]]
        old = next((c for c in self._commands.get(scope, []) if c["name"] == body["name"]), None)
        stored = self._stored_command(body, scope, old)
        self._commands[scope] = current + [stored]
        return _json(201 if old is None else 200, stored)

    def _stored_command(self, cmd: Json, scope: int | None, old: Json | None) -> Json:
        stored = {"type": 1, "description": "", "options": [], "default_member_permissions": None,
                  "dm_permission": True, "nsfw": False, "contexts": None, "integration_types": [0], **cmd}
        stored.update(id=old["id"] if old else str(self._ids.next()), application_id=str(self.app_id),
                      version=str(self._ids.next()))
        if scope is not None:
            stored["guild_id"] = str(scope)
        return stored

    # ---- REST: guilds and channels ------------------------------------------------------------------------------

    async def _get_guild(self, request: web.Request, body: Any) -> web.Response:
        guild = self.guilds.get(int(request.match_info["guild_id"]))
        if guild is None:
            return _json(404, discord_error(10004, "Unknown Guild"))
        count = len(self.members[int(guild["id"])])
        return _json(200, dict(guild, approximate_member_count=count, approximate_presence_count=count))

    async def _get_guild_channels(self, request: web.Request, body: Any) -> web.Response:
        gid = request.match_info["guild_id"]
        return _json(200, [c for c in self.channels.values() if c.get("guild_id") == gid and c["type"] == 0])

    async def _get_channel(self, request: web.Request, body: Any) -> web.Response:
        channel = self._channel_or_404(request)
        return channel if isinstance(channel, web.Response) else _json(200, channel)

    async def _edit_channel(self, request: web.Request, body: Any) -> web.Response:
        """PATCH a thread: `name`, `applied_tags` (ids of the parent forum's tags, at most 5), `archived`,
        `locked`, `auto_archive_duration`. In a forum switched by `deny_manage_threads` the bot gets 403 50013 for
        the moderation fields. THREAD_UPDATE is dispatched."""
        channel = self._channel_or_404(request)
        if isinstance(channel, web.Response):
            return channel
        body = body or {}
        if channel["type"] not in (CHANNEL_PUBLIC_THREAD, CHANNEL_PRIVATE_THREAD):
            return _json(400, discord_error(50024, "Cannot execute action on this channel type"))
        parent = self.channels.get(int(channel["parent_id"])) or {}
        moderating = {"applied_tags", "archived", "locked"} & set(body)
        if moderating and int(channel["parent_id"]) in self._manage_denied:
            return _json(403, discord_error(50013, "Missing Permissions"))
        if "applied_tags" in body:
            known = {t["id"] for t in parent.get("available_tags", [])}
            tags = [str(t) for t in body["applied_tags"] or []]
            if len(tags) > 5 or any(t not in known for t in tags):
                return _json(400, invalid_form_body("applied_tags", "BASE_TYPE_CHOICES", "Value is not a valid tag."))
            channel["applied_tags"] = tags
        metadata = channel["thread_metadata"]
        for key in ("archived", "locked", "auto_archive_duration"):
            if key in body and body[key] is not None:
                metadata[key] = body[key]
        if "archived" in body:
            metadata["archive_timestamp"] = iso_now()
        if body.get("name"):
            channel["name"] = body["name"]
        await self.dispatch("THREAD_UPDATE", channel, intent=INTENT_GUILDS)
        return _json(200, channel)

    async def _open_dm(self, request: web.Request, body: Any) -> web.Response:
        recipient = int((body or {}).get("recipient_id", 0))
        if recipient not in self.users:
            return _json(400, invalid_form_body("recipient_id", "NUMBER_TYPE_COERCE", "Value is not a user."))
        return _json(200, self.dm_channel(recipient))

    async def _typing(self, request: web.Request, body: Any) -> web.Response:
        channel = self._channel_or_404(request)
        if isinstance(channel, web.Response):
            return channel
        self.typing_calls.append(TypingCall(int(channel["id"]), self.clock()))
        return web.Response(status=204)

    # ---- REST: messages -------------------------------------------------------------------------------------------

    async def _create_message(self, request: web.Request, body: Any) -> web.Response:
        channel = self._channel_or_404(request)
        if isinstance(channel, web.Response):
            return channel
        limited, headers = self._rate_check(int(channel["id"]), "POST /channels/{channel_id}/messages")
        if limited:
            return limited
        body = body or {}
        error = _content_error(body)
        if error:
            return _json(400, error, headers)
        try:
            reference, referenced = self._resolve_reference(channel, body.get("message_reference"))
        except LookupError:
            return _json(400, invalid_form_body("message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                                                "Unknown message"), headers)
        mentions = self._mentioned_ids(body.get("content") or "", body.get("allowed_mentions"))
        allowed = body.get("allowed_mentions")
        if referenced is not None and (allowed is None or allowed.get("replied_user", False)):
            mentions.append(int(referenced["author"]["id"]))
        message = self._new_message(channel, self.bot_user, body.get("content") or "", mention_ids=mentions,
                                    pings=self._pinged(body.get("content") or "", allowed),
                                    reference=reference, referenced=referenced, embeds=body.get("embeds"),
                                    flags=int(body.get("flags") or 0), attachments=body.get("attachments"),
                                    components=body.get("components"))
        await self._dispatch_message("MESSAGE_CREATE", message)
        return _json(200, message, headers)

    async def _get_message(self, request: web.Request, body: Any) -> web.Response:
        message = self.messages.get(int(request.match_info["message_id"]))
        if message is None or message["channel_id"] != request.match_info["channel_id"]:
            return _json(404, discord_error(10008, "Unknown Message"))
        if self._history_blocked(int(request.match_info["channel_id"])):
            return _json(403, discord_error(50001, "Missing Access"))
        return _json(200, message)

    def _history_blocked(self, channel_id: int) -> bool:
        parent = (self.channels.get(channel_id) or {}).get("parent_id")
        return channel_id in self._history_denied or (parent is not None and int(parent) in self._history_denied)

    async def _get_messages(self, request: web.Request, body: Any) -> web.Response:
        """A channel's messages, newest first: `before`, `after` or `around` a message id, `limit` 1-100."""
        channel = self._channel_or_404(request)
        if isinstance(channel, web.Response):
            return channel
        try:
            limit = int(request.query.get("limit", 50))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            return _json(400, invalid_form_body("limit", "NUMBER_TYPE_MAX", "int value should be <= 100."))
        if self._history_blocked(int(channel["id"])):
            return _json(200, [])  # without Read Message History Discord returns no messages, not an error
        ids = [mid for mid in self._channel_messages.get(int(channel["id"]), []) if mid in self.messages]
        if "before" in request.query:
            ids = [mid for mid in ids if mid < int(request.query["before"])][-limit:]
        elif "after" in request.query:
            ids = [mid for mid in ids if mid > int(request.query["after"])][:limit]
        elif "around" in request.query:
            around = int(request.query["around"])
            older = [mid for mid in ids if mid < around][-(limit // 2):] if limit > 1 else []
            ids = older + [mid for mid in ids if mid >= around][: limit - len(older)]
        else:
            ids = ids[-limit:]
        return _json(200, [self.messages[mid] for mid in reversed(ids)])

    def deny_history(self, channel_id: int, denied: bool = True) -> None:
        """Switch the bot's Read Message History off (or on) in a channel and its threads."""
        (self._history_denied.add if denied else self._history_denied.discard)(int(channel_id))

    async def _edit_message(self, request: web.Request, body: Any) -> web.Response:
        channel = self._channel_or_404(request)
        if isinstance(channel, web.Response):
            return channel
        limited, headers = self._rate_check(int(channel["id"]),
                                            "PATCH /channels/{channel_id}/messages/{message_id}")
        if limited:
            return limited
        message = self.messages.get(int(request.match_info["message_id"]))
        if message is None or message["channel_id"] != channel["id"]:
            return _json(404, discord_error(10008, "Unknown Message"), headers)
        if message["author"]["id"] != self.bot_user["id"]:
            return _json(403, discord_error(50005, "Cannot edit a message authored by another user"), headers)
        response = await self._apply_edit(message, body or {})
        if isinstance(response, dict):
            return _json(200, response, headers)
        return _json(400, response.error, headers)

    async def _delete_message(self, request: web.Request, body: Any) -> web.Response:
        message = self.messages.pop(int(request.match_info["message_id"]), None)
        if message is None:
            return _json(404, discord_error(10008, "Unknown Message"))
        await self._dispatch_message("MESSAGE_DELETE", {k: message[k] for k in ("id", "channel_id", "guild_id")
                                                         if k in message})
        return web.Response(status=204)

    async def _apply_edit(self, message: Json, body: Json) -> Json | _EditRejected:
        merged = {k: body[k] if k in body else message[k]
                  for k in ("content", "embeds", "attachments", "components")}
        content, embeds = merged["content"], merged["embeds"]
        error = _content_error(merged)
        if error:
            return _EditRejected(error)
        message["content"] = content or ""
        message["embeds"] = embeds or []
        if "components" in body:  # omitted: the message keeps its components, as on Discord
            message["components"] = _stored_components(body["components"])
        if "content" in body:
            message["mentions"] = [self.users[i] for i in
                                   self._mentioned_ids(message["content"], body.get("allowed_mentions"))]
            message["mention_roles"], message["mention_everyone"] = self._pinged(message["content"],
                                                                                 body.get("allowed_mentions"))
        if "flags" in body and body["flags"] is not None:
            message["flags"] = int(body["flags"])
        message["flags"] &= ~FLAG_LOADING
        message["edited_timestamp"] = iso_now()
        self._edits.setdefault(int(message["id"]), []).append(copy.deepcopy(message))
        if not message["flags"] & FLAG_EPHEMERAL:
            await self._dispatch_message("MESSAGE_UPDATE", message)
        return message

    def _attachment(self, uploaded: Json) -> Json:
        attachment_id = self._ids.next()
        url = f"{self.base_url}/attachments/{attachment_id}/{uploaded['filename']}"
        return {"id": str(attachment_id), "filename": uploaded["filename"], "size": uploaded["size"], "url": url,
                "proxy_url": url, "content_type": uploaded.get("content_type")}

    def _resolve_reference(self, channel: Json, ref: int | Json | None) -> tuple[Json | None, Json | None]:
        """A message_reference and the referenced message; LookupError when it must exist and does not."""
        if ref is None:
            return None, None
        ref = {"message_id": str(ref)} if not isinstance(ref, dict) else ref
        referenced = self.messages.get(int(ref["message_id"]))
        if referenced is None:
            if ref.get("fail_if_not_exists", True):
                raise LookupError(ref["message_id"])
            return None, None
        reference = {"type": 0, "message_id": referenced["id"], "channel_id": referenced["channel_id"]}
        if "guild_id" in referenced:
            reference["guild_id"] = referenced["guild_id"]
        return reference, referenced

    @staticmethod
    def _pinged(content: str, allowed: Json | None) -> tuple[list[str], bool]:
        """(role ids pinged, whether @everyone/@here pings) for a message sent with `allowed` mentions."""
        roles = list(dict.fromkeys(re.findall(r"<@&(\d+)>", content)))
        everyone = bool(re.search(r"@(everyone|here)\b", content))
        if allowed is None:
            return roles, everyone
        parse = allowed.get("parse") or []
        if "roles" not in parse:
            permitted = {str(x) for x in allowed.get("roles") or []}
            roles = [r for r in roles if r in permitted]
        return roles, everyone and "everyone" in parse

    def _mentioned_ids(self, content: str, allowed: Json | None) -> list[int]:
        ids = [int(x) for x in dict.fromkeys(MENTION_RE.findall(content)) if int(x) in self.users]
        if allowed is None or "users" in (allowed.get("parse") or []):
            return ids
        permitted = {int(x) for x in allowed.get("users") or []}
        return [i for i in ids if i in permitted]

    def _new_message(self, channel: Json, author: Json, content: str, *, mention_ids: list[int],
                     pings: tuple[list[str], bool] | None = None,
                     reference: Json | None = None, referenced: Json | None = None,
                     embeds: list[Json] | None = None, flags: int = 0, message_type: int | None = None,
                     attachments: list[Json] | None = None, components: list[Json] | None = None,
                     extra: Json | None = None, message_id: int | None = None) -> Json:
        """Build a message as Discord returns it, store it, and bump the channel's (thread's) counters."""
        message_id = message_id or self._ids.next()
        message: Json = {
            "id": str(message_id), "channel_id": channel["id"], "author": author, "content": content,
            "timestamp": iso_now(), "edited_timestamp": None, "tts": False,
            "mentions": [self.users[i] for i in dict.fromkeys(mention_ids)],
            "mention_roles": (pings or ([], False))[0], "mention_everyone": (pings or ([], False))[1],
            "attachments": [self._attachment(a) for a in attachments or [] if "size" in a],
            "embeds": embeds or [], "reactions": [], "pinned": False, "components": _stored_components(components),
            "type": message_type if message_type is not None else (MESSAGE_REPLY if reference else MESSAGE_DEFAULT),
            "flags": flags,
        }
        if "guild_id" in channel:
            message["guild_id"] = channel["guild_id"]
            member = self.members[int(channel["guild_id"])].get(int(author["id"]))
            if member is not None and "webhook_id" not in (extra or {}):
                message["member"] = {k: v for k, v in member.items() if k != "user"}
        if reference is not None:
            message["message_reference"] = reference
            message["referenced_message"] = (None if referenced is None else
                                             {k: v for k, v in referenced.items() if k != "referenced_message"})
        message.update(extra or {})
        self.messages[message_id] = message
        self._channel_messages.setdefault(int(channel["id"]), []).append(message_id)
        channel["last_message_id"] = str(message_id)
        if channel["type"] in (CHANNEL_PUBLIC_THREAD, CHANNEL_PRIVATE_THREAD):
            channel["message_count"] += 1
            channel["total_message_sent"] += 1
        self._changed()
        return message

    # ---- REST: threads ----------------------------------------------------------------------------------------------

    async def _thread_from_message(self, request: web.Request, body: Any) -> web.Response:
        channel = self._channel_or_404(request)
        if isinstance(channel, web.Response):
            return channel
        message = self.messages.get(int(request.match_info["message_id"]))
        if message is None or message["channel_id"] != channel["id"]:
            return _json(404, discord_error(10008, "Unknown Message"))
        if channel["type"] != CHANNEL_TEXT:
            return _json(400, discord_error(50024, "Cannot execute action on this channel type"))
        if int(channel["id"]) in self._thread_denied:
            return _json(403, discord_error(50013, "Missing Permissions"))
        if "thread" in message:
            return _json(400, discord_error(160004, "A thread has already been created for this message"))
        body = body or {}
        thread = self._new_thread(channel, body, CHANNEL_PUBLIC_THREAD, thread_id=int(message["id"]))
        message["thread"] = thread
        message["flags"] |= FLAG_HAS_THREAD
        await self.dispatch("THREAD_CREATE", dict(thread, newly_created=True), intent=INTENT_GUILDS)
        return _json(201, thread)

    async def _thread_without_message(self, request: web.Request, body: Any) -> web.Response:
        channel = self._channel_or_404(request)
        if isinstance(channel, web.Response):
            return channel
        if channel["type"] != CHANNEL_TEXT:
            return _json(400, discord_error(50024, "Cannot execute action on this channel type"))
        if int(channel["id"]) in self._thread_denied:
            return _json(403, discord_error(50013, "Missing Permissions"))
        body = body or {}
        thread = self._new_thread(channel, body, int(body.get("type") or CHANNEL_PRIVATE_THREAD))
        await self.dispatch("THREAD_CREATE", dict(thread, newly_created=True), intent=INTENT_GUILDS)
        return _json(201, thread)

    def _new_thread(self, parent: Json, body: Json, kind: int, thread_id: int | None = None) -> Json:
        thread_id = thread_id or self._ids.next()
        now = iso_now()
        thread = {
            "id": str(thread_id), "type": kind, "guild_id": parent["guild_id"], "parent_id": parent["id"],
            "owner_id": self.bot_user["id"], "name": body.get("name") or "thread", "last_message_id": None,
            "rate_limit_per_user": body.get("rate_limit_per_user") or 0, "message_count": 0,
            "member_count": 1, "total_message_sent": 0, "flags": 0,
            "thread_metadata": {"archived": False, "auto_archive_duration": body.get("auto_archive_duration")
                                or 1440, "archive_timestamp": now, "locked": False,
                                "invitable": body.get("invitable", True), "create_timestamp": now},
            "member": {"id": str(thread_id), "user_id": self.bot_user["id"], "join_timestamp": now, "flags": 1},
        }
        self.channels[thread_id] = thread
        self._changed()
        return thread

    # ---- REST: interactions and their webhooks ---------------------------------------------------------------------

    async def _interaction_callback(self, request: web.Request, body: Any) -> web.Response:
        record = self._interactions.get(int(request.match_info["interaction_id"]))
        if record is None or record.payload["token"] != request.match_info["token"]:
            return _json(404, discord_error(10062, "Unknown interaction"))
        if record.response_type is not None:
            return _json(400, discord_error(40060, "Interaction has already been acknowledged."))
        body = body or {}
        kind, data = int(body.get("type", 0)), body.get("data")
        message: Json | None = None
        if kind == 4:
            error = _content_error(data or {})
            if error:
                return _json(400, error)
            message = await self._interaction_message(record, data or {})
        elif kind == 5:
            flags = FLAG_LOADING | (int((data or {}).get("flags") or 0) & FLAG_EPHEMERAL)
            message = await self._interaction_message(record, {"content": "", "flags": flags})
        elif kind not in (1, 6, 7, 8, 9, 12):
            return _json(400, invalid_form_body("type", "BASE_TYPE_CHOICES", "Value must be one of ..."))
        record.response_type = kind
        if message is not None:
            record.original_id = int(message["id"])
        self.interaction_responses.append(InteractionResponse(int(record.payload["id"]), record.payload["token"],
                                                              kind, data, self.clock()))
        self._changed()
        if request.query.get("with_response") not in ("1", "true", "True"):
            return web.Response(status=204)
        interaction: Json = {"id": record.payload["id"], "type": record.payload["type"],
                             "response_message_loading": kind == 5,
                             "response_message_ephemeral": bool(message and message["flags"] & FLAG_EPHEMERAL)}
        resource: Json = {"type": kind}
        if message is not None:
            interaction["response_message_id"] = message["id"]
            resource["message"] = message
        return _json(200, {"interaction": interaction, "resource": resource})

    async def _interaction_message(self, record: _Interaction, data: Json) -> Json:
        payload = record.payload
        user = payload["member"]["user"] if "member" in payload else payload["user"]
        channel = self.channels[record.channel_id]
        content = data.get("content") or ""
        metadata: Json = {"id": payload["id"], "type": payload["type"], "user": user,
                          "authorizing_integration_owners": payload["authorizing_integration_owners"]}
        if payload["type"] == INTERACTION_COMMAND:
            metadata["name"] = payload["data"]["name"]
        elif "message" in payload:  # a component interaction: the message whose button was clicked
            metadata["interacted_message_id"] = payload["message"]["id"]
        extra = {"webhook_id": str(self.app_id), "application_id": str(self.app_id), "interaction_metadata": metadata}
        message = self._new_message(channel, self.bot_user, content,
                                    mention_ids=self._mentioned_ids(content, data.get("allowed_mentions")),
                                    embeds=data.get("embeds"), flags=int(data.get("flags") or 0),
                                    attachments=data.get("attachments"), components=data.get("components"),
                                    message_type=MESSAGE_CHAT_INPUT if payload["type"] == INTERACTION_COMMAND
                                    else MESSAGE_DEFAULT, extra=extra)
        if not message["flags"] & FLAG_EPHEMERAL:
            await self._dispatch_message("MESSAGE_CREATE", message)
        return message

    def _webhook_interaction(self, request: web.Request) -> _Interaction | web.Response:
        record = self._interactions_by_token.get(request.match_info["token"])
        if record is None or request.match_info["app_id"] != str(self.app_id) or record.response_type is None:
            return _json(404, discord_error(10015, "Unknown Webhook"))
        return record

    def _webhook_message(self, request: web.Request, record: _Interaction) -> Json | None:
        wanted = request.match_info["message_id"]
        message_id = record.original_id if wanted == "@original" else int(wanted)
        message = self.messages.get(message_id) if message_id is not None else None
        if message is None or message.get("interaction_metadata", {}).get("id") != record.payload["id"]:
            return None
        return message

    def _webhook_rate_check(self, record: _Interaction, route: str) -> tuple[web.Response | None, dict[str, str]]:
        if not self.webhooks_share_channel_limit:
            return None, {}
        return self._rate_check(record.channel_id, route)

    async def _webhook_execute(self, request: web.Request, body: Any) -> web.Response:
        record = self._webhook_interaction(request)
        if isinstance(record, web.Response):
            return record
        limited, headers = self._webhook_rate_check(record, "POST /webhooks/{webhook_id}/{webhook_token}")
        if limited:
            return limited
        body = body or {}
        error = _content_error(body)
        if error:
            return _json(400, error, headers)
        message = await self._interaction_message(record, body)
        if request.query.get("wait") in ("1", "true", "True"):
            return _json(200, message, headers)
        return web.Response(status=204, headers=headers)

    async def _webhook_get(self, request: web.Request, body: Any) -> web.Response:
        record = self._webhook_interaction(request)
        if isinstance(record, web.Response):
            return record
        message = self._webhook_message(request, record)
        return _json(200, message) if message else _json(404, discord_error(10008, "Unknown Message"))

    async def _webhook_edit(self, request: web.Request, body: Any) -> web.Response:
        record = self._webhook_interaction(request)
        if isinstance(record, web.Response):
            return record
        limited, headers = self._webhook_rate_check(
            record, "PATCH /webhooks/{webhook_id}/{webhook_token}/messages/{message_id}")
        if limited:
            return limited
        message = self._webhook_message(request, record)
        if message is None:
            return _json(404, discord_error(10008, "Unknown Message"), headers)
        response = await self._apply_edit(message, body or {})
        if isinstance(response, dict):
            return _json(200, response, headers)
        return _json(400, response.error, headers)

    async def _webhook_delete(self, request: web.Request, body: Any) -> web.Response:
        record = self._webhook_interaction(request)
        if isinstance(record, web.Response):
            return record
        message = self._webhook_message(request, record)
        if message is None:
            return _json(404, discord_error(10008, "Unknown Message"))
        self.messages.pop(int(message["id"]), None)
        return web.Response(status=204)


@dataclass
class _EditRejected:
    error: Json


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response whose Content-Type is exactly `application/json`: discord.py compares it verbatim."""
    all_headers = {"Content-Type": "application/json"}
    all_headers.update(headers or {})
    return web.Response(status=status, body=json.dumps(payload).encode(), headers=all_headers)


def _response_json(response: web.Response) -> Any:
    """The JSON a response carries (as recorded in `fake.requests`), or None."""
    if response.content_type != "application/json" or not isinstance(response.body, bytes):
        return None
    try:
        return json.loads(response.body)
    except ValueError:
        return None


async def _read_body(request: web.Request) -> Any:
    """The JSON body; for multipart (discord.py sends files that way) `payload_json` plus an attachments list."""
    if request.content_type == "multipart/form-data":
        form = await request.post()
        body: Json = json.loads(form.get("payload_json") or "{}")  # type: ignore[arg-type]
        files = [v for k, v in form.items() if k.startswith("files[") and isinstance(v, web.FileField)]
        if files:
            body["attachments"] = [{"id": str(i), "filename": f.filename, "size": len(f.file.read()),
                                    "content_type": f.content_type} for i, f in enumerate(files)]
        return body
    raw = await request.read()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _rate_headers(limit: int, remaining: int, reset_after: float, bucket: str) -> dict[str, str]:
    return {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}", "X-RateLimit-Bucket": bucket}


def _content_error(body: Json) -> Json | None:
    """Discord's validation of a message body: 50035 for length, 50006 for nothing to show."""
    content, embeds = body.get("content"), body.get("embeds")
    if content is not None and len(content) > MAX_CONTENT:
        return invalid_form_body("content", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length.")
    if embeds is not None and len(embeds) > 10:
        return invalid_form_body("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    error = _components_error(body.get("components"))
    if error:
        return error
    if not (content or "").strip() and not embeds and not body.get("attachments") and not body.get("components"):
        return discord_error(50006, "Cannot send an empty message")
    return None


def _components_error(components: Any) -> Json | None:
    """Discord's validation of message components (action rows of buttons): 50035 with the error at the path of
    the offending field, e.g. `components.0.components.1.custom_id`."""
    if components is None:
        return None

    def error(path: list[str], code: str, message: str) -> Json:
        errors: Json = {"_errors": [{"code": code, "message": message}]}
        for part in reversed(["components", *path]):
            errors = {part: errors}
        return discord_error(50035, "Invalid Form Body", errors)

    if not isinstance(components, list) or len(components) > MAX_ROWS:
        return error([], "BASE_TYPE_BAD_LENGTH", f"Must be between 0 and {MAX_ROWS} in length.")
    seen: set[str] = set()
    for r, row in enumerate(components):
        children = row.get("components") if isinstance(row, dict) else None
        if not isinstance(row, dict) or row.get("type") != COMPONENT_ACTION_ROW:
            return error([str(r), "type"], "UNION_TYPE_CHOICES", "Value of field \"type\" must be one of (1,).")
        if not isinstance(children, list) or not 1 <= len(children) <= MAX_ROW_ITEMS:
            return error([str(r), "components"], "BASE_TYPE_BAD_LENGTH",
                         f"Must be between 1 and {MAX_ROW_ITEMS} in length.")
        for c, child in enumerate(children):
            at = [str(r), "components", str(c)]
            if child.get("type") != COMPONENT_BUTTON:
                continue  # only buttons are checked in depth; other components pass as sent
            if len(child.get("label") or "") > MAX_BUTTON_LABEL:
                return error([*at, "label"], "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_BUTTON_LABEL} or fewer in length.")
            if child.get("style") in (BUTTON_LINK, BUTTON_PREMIUM):
                continue
            custom_id = child.get("custom_id")
            if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= MAX_CUSTOM_ID:
                return error([*at, "custom_id"], "BASE_TYPE_BAD_LENGTH",
                             f"Must be between 1 and {MAX_CUSTOM_ID} in length.")
            if custom_id in seen:
                return error([*at, "custom_id"], "COMPONENT_CUSTOM_ID_DUPLICATED",
                             "Component custom id cannot be duplicated")
            seen.add(custom_id)
    return None


def _stored_components(components: list[Json] | None) -> list[Json]:
    """Components as Discord stores and returns them: a copy, each with the numeric `id` Discord assigns (1, 2, …
    in document order) where the sender gave none."""
    stored = copy.deepcopy(components or [])
    next_id = 1

    def number(items: list[Json]) -> None:
        nonlocal next_id
        for item in items:
            if "id" not in item:
                item["id"] = next_id
            next_id = max(next_id, int(item["id"])) + 1
            number(item.get("components") or [])

    number(stored)
    return stored


COMMAND_NAME_RE = re.compile(r"^[-_\w]{1,32}$")


def _command_error(cmd: Json) -> Json | None:
    name = cmd.get("name") or ""
    if not COMMAND_NAME_RE.match(name) or name != name.lower():
        return invalid_form_body("name", "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
    if int(cmd.get("type", 1)) == 1 and not 1 <= len(cmd.get("description") or "") <= 100:
        return invalid_form_body("description", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
    return None


# --------------------------------------------------------------------------------------------------------------
# Pointing discord.py at the fake, and running a client against it.
# --------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def patched_discord(fake: FakeDiscord) -> Iterator[None]:
    """Point discord.py's REST base and default gateway at the fake; restore them on exit."""
    import discord.gateway
    import discord.http
    import yarl

    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = fake.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway


@contextlib.asynccontextmanager
async def connected_client(client: Any, fake: FakeDiscord, *, token: str | None = None,
                           timeout: float = 10.0) -> AsyncIterator[Any]:
    """Log `client` in, run `client.connect()` in a task, wait for on_ready; on exit close it and reap the task.

    Works for any discord.Client subclass (the bot's own included). If the connect task dies before ready (bad
    intents, ...) its exception is raised here.
    """
    await client.login(token or fake.token)
    # reconnect=True as client.start() does: only then does discord.py turn close code 4014 into
    # PrivilegedIntentsRequired (with reconnect=False it re-raises the bare ConnectionClosed first).
    task = asyncio.create_task(client.connect(), name="discord-connect")
    ready = asyncio.create_task(client.wait_until_ready())
    try:
        done, _ = await asyncio.wait({task, ready}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()  # raises the connect error
            raise RuntimeError("discord client stopped before it was ready")
        if ready not in done:
            raise TimeoutError(f"discord client not ready within {timeout}s")
        yield client
    finally:
        ready.cancel()
        await client.close()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, timeout=5)


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """An entered FakeDiscord (discord.py patched) for one test."""
    async with FakeDiscord() as fake:
        yield fake


__all__ = [
    "ChannelRateLimiter", "CommandSync", "FakeDiscord", "InteractionResponse", "RateDecision", "RecordedRequest",
    "TypingCall", "connected_client", "fake_discord", "patched_discord", "shard_of",
]

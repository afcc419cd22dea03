"""The Discord front-end: mentions, threads, DMs and slash commands, answered by streaming into messages.

One question reads as three steps (`should answer` -> `where and in which conversation` -> `stream`):
1. `_inbound(message)` decides whether a message is for the bot: never its own or another bot's; in a guild only
   inside the allow-lists; a mention in a channel, anything in a DM, anything in a thread it opened, and any
   reply to one of its messages.
2. A mention in a channel opens a thread on the user's message (named from the question) and the conversation
   is that thread; where threads are not allowed (50013) the bot replies to the message instead and the reply
   chain is the conversation. Session keys: `bots.discord.conversation`.
3. `_stream` drives `bots.streaming.StreamingReply` over a `bots.discord.surface` surface. Every reply posting
   to one channel (a thread is a channel) shares that channel's `EditBudget` (5 writes per 5 s by default), so
   concurrent replies stay under Discord's limit instead of collecting 429s.

Start-up fails with a sentence saying what to fix in the Developer Portal when the token is refused or the
Message Content intent is not enabled. `stop()` cancels replies in flight (each lands an "interrupted" note)
and waits for them before closing the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import discord
from discord import app_commands

from bots import metrics
from bots.discord import commands
from bots.discord.conversation import (
    USAGE,
    ConversationMap,
    ask_key,
    dm_key,
    is_allowed,
    reply_chain_key,
    strip_bot_mention,
    thread_key,
    thread_name,
)
from bots.discord.surface import NO_MENTIONS, ChannelSurface, DiscordSurface, InteractionSurface
from bots.pacing import ChannelBudgets, EditPacer
from bots.streaming import ReplyOutcome, StreamingReply
from core.events import Event
from core.settings import Settings

log = logging.getLogger(__name__)

PLATFORM = "discord"
THREAD_ARCHIVE_MINUTES = 1440
THREAD_TYPES = (discord.ChannelType.public_thread, discord.ChannelType.private_thread,
                discord.ChannelType.news_thread)
ANSWERED_TYPES = (discord.MessageType.default, discord.MessageType.reply)

BAD_TOKEN = ("Discord refused DISCORD_TOKEN. In the Developer Portal (https://discord.com/developers/applications) "
             "open your application → Bot → Reset Token, and put the new token in DISCORD_TOKEN in .env.")
MISSING_INTENT = ("Discord refused the connection because the Message Content intent is not enabled. In the "
                  "Developer Portal open your application → Bot → Privileged Gateway Intents, switch on "
                  "MESSAGE CONTENT INTENT, save, and start again.")
NOT_HERE = "I'm not enabled in this channel. Ask in one of the channels I've been set up for."
RESET_WHERE = "Use `/reset` inside a thread I'm answering in (or in our DMs) to start that conversation afresh."
RESET_DONE = "Done: I've forgotten this conversation. Ask me anything to start afresh."
RESTARTING = "I'm restarting right now. Please ask again in a minute."


def _startup_error(message: str) -> RuntimeError:
    """`bots.run.StartupError` (imported late: `switchboard run` prints its message and exits 2)."""
    from bots.run import StartupError

    return StartupError(message)


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message the bot will answer: how (`new` opens a thread) and in which conversation."""

    kind: Literal["new", "thread", "dm", "reply"]
    session_key: str | None  # None for `new`: the thread (or the reply chain) decides it


class SwitchboardClient(discord.Client):
    """discord.py's client with the intents, the no-ping default and the slash commands the bot needs."""

    def __init__(self, frontend: DiscordFrontend, **options: Any) -> None:
        intents = discord.Intents.default()
        intents.message_content = True  # privileged: switched on in the Developer Portal (see README)
        super().__init__(intents=intents, allowed_mentions=NO_MENTIONS, **options)
        self.frontend = frontend
        self.tree = app_commands.CommandTree(self)
        commands.register(self.tree, frontend)

    async def setup_hook(self) -> None:
        await self.frontend.sync_commands(self.tree)

    async def on_message(self, message: discord.Message) -> None:
        self.frontend.on_message(message)


class DiscordFrontend:
    """The `bots.frontend.Frontend` for Discord. `client_options` go to `discord.Client` (tests pass
    `guild_ready_timeout=0.05`)."""

    name = "discord"

    def __init__(self, settings: Settings, orchestrator: Any, *, ready_timeout_s: float = 60.0,
                 stop_timeout_s: float = 30.0, **client_options: Any) -> None:
        self.settings = settings
        self.orchestrator = orchestrator
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.client_options = client_options
        self.client: SwitchboardClient | None = None
        self.conversations = ConversationMap()
        self.budgets = ChannelBudgets(settings.discord_edits_per_window, settings.discord_edit_window_s)
        # One reply edits at most as often as the channel's whole budget allows on average (1/s by default).
        self.edit_interval_s = settings.discord_edit_window_s / max(1, settings.discord_edits_per_window)
        self.recent: deque[tuple[str, ReplyOutcome]] = deque(maxlen=200)  # (session key, outcome), newest last
        self.platform_429s = 0  # 429 responses seen, including those discord.py retried by itself
        self.commands_note = "slash commands not synced"
        self._inflight: set[asyncio.Task[None]] = set()
        self._connection: asyncio.Task[None] | None = None
        self._stopping = False

    # --- lifecycle ---------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Log in, connect, and return once Discord says the bot is ready; a clear StartupError otherwise."""
        token = self.settings.discord_token.get_secret_value() if self.settings.discord_token else ""
        if not token:
            raise _startup_error("DISCORD_TOKEN is not set. Copy the bot token from the Developer Portal → "
                                 "your application → Bot, into DISCORD_TOKEN in .env.")
        self._stopping = False
        self.client = client = SwitchboardClient(self, http_trace=self._count_429s(), **self.client_options)
        try:
            await client.login(token)
        except discord.LoginFailure as exc:
            await client.close()
            raise _startup_error(BAD_TOKEN) from exc
        except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            await client.close()
            raise _startup_error(f"Discord could not be reached ({exc}). Check the network, then start again.") \
                from exc
        self._connection = asyncio.create_task(client.connect(reconnect=True), name="discord-gateway")
        ready = asyncio.create_task(client.wait_until_ready())
        done, _ = await asyncio.wait({self._connection, ready}, timeout=self.ready_timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)
        if ready in done:
            log.info("discord: ready as %s in %d guild(s)", client.user, len(client.guilds))
            return
        ready.cancel()
        error = self._connect_failure(self._connection if self._connection in done else None)
        await self._close_client()
        raise error

    def _connect_failure(self, connection: asyncio.Task[None] | None) -> RuntimeError:
        if connection is None:
            return _startup_error(f"Discord did not confirm the connection within {self.ready_timeout_s:.0f}s. "
                                  "Check the network and https://discordstatus.com, then start again.")
        exc = None if connection.cancelled() else connection.exception()
        if isinstance(exc, discord.PrivilegedIntentsRequired):
            return _startup_error(MISSING_INTENT)
        if isinstance(exc, discord.LoginFailure) or (isinstance(exc, discord.ConnectionClosed) and exc.code == 4004):
            return _startup_error(BAD_TOKEN)
        return _startup_error(f"The Discord connection closed before it was ready ({exc!r}). See the log above.")

    async def stop(self) -> None:
        """Cancel replies in flight (each lands an "interrupted" note), wait for them, then disconnect."""
        self._stopping = True
        tasks = [task for task in self._inflight if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.stop_timeout_s)
            if pending:
                log.warning("discord: %d repl(ies) did not finish within %.0fs of shutdown", len(pending),
                            self.stop_timeout_s)
        await self._close_client()

    async def _close_client(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self._connection is not None:
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError, Exception):
                await asyncio.wait_for(self._connection, timeout=5)
            self._connection = None

    def describe(self) -> str:
        client = self.client
        if client is None or client.user is None:
            return "not connected"
        return (f"logged in as {client.user} in {len(client.guilds)} server(s); mention it, DM it or use /ask "
                f"({self.commands_note})")

    async def sync_commands(self, tree: app_commands.CommandTree) -> None:
        """Register /ask, /reset, /help: in DISCORD_GUILD_ID only when set (instant), else globally."""
        guild_id = self.settings.discord_guild_id
        try:
            if guild_id:
                guild = discord.Object(id=guild_id)
                tree.copy_global_to(guild=guild)
                synced = await tree.sync(guild=guild)
                where = f"to server {guild_id}"
            else:
                synced = await tree.sync()
                where = "globally"
        except discord.HTTPException as exc:
            self.commands_note = "slash commands NOT synced, see the log"
            log.warning("discord: syncing slash commands failed (%s). If DISCORD_GUILD_ID is right, re-invite the "
                        "bot with the applications.commands scope (README, 'Discord').", exc)
            return
        self.commands_note = f"{', '.join('/' + c.name for c in synced)} synced {where}"

    def _count_429s(self) -> aiohttp.TraceConfig:
        """Every 429 Discord answers, including the ones discord.py waits out and retries on its own."""
        trace = aiohttp.TraceConfig()

        async def on_request_end(session: Any, context: Any, params: aiohttp.TraceRequestEndParams) -> None:
            if params.response.status == 429:
                self.platform_429s += 1
                metrics.RATE_LIMITED.labels(PLATFORM).inc()

        trace.on_request_end.append(on_request_end)
        return trace

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    # --- messages ----------------------------------------------------------------------------------------------
    def on_message(self, message: discord.Message) -> None:
        if self._stopping:
            return
        inbound = self._inbound(message)
        if inbound is not None:
            self._spawn(self._answer_message(message, inbound))

    def _inbound(self, message: discord.Message) -> Inbound | None:
        me = self.client.user if self.client else None
        if me is None or message.author.id == me.id or message.author.bot:
            return None  # never itself, never another bot: no reply loops
        if message.type not in ANSWERED_TYPES:
            return None
        channel = message.channel
        if message.guild is None:
            return Inbound("dm", dm_key(channel.id))
        in_thread = getattr(channel, "type", None) in THREAD_TYPES
        if not is_allowed(self.settings.discord_allowed_guilds, self.settings.discord_allowed_channels,
                          guild_id=message.guild.id, channel_id=channel.id,
                          parent_id=getattr(channel, "parent_id", None) if in_thread else None):
            return None
        mentioned = any(user.id == me.id for user in message.mentions)
        continued = self._replied_conversation(message, me.id)
        if in_thread:
            opened_by_me = getattr(channel, "owner_id", None) == me.id
            if opened_by_me or mentioned or continued:
                return Inbound("thread", thread_key(channel.id))
            return None
        if continued:
            return Inbound("reply", continued)
        if mentioned:
            return Inbound("new", None)
        return None

    def _replied_conversation(self, message: discord.Message, my_id: int) -> str | None:
        """The conversation a reply continues, when it replies to one of the bot's messages."""
        reference = message.reference
        if reference is None or reference.message_id is None:
            return None
        known = self.conversations.get(reference.message_id)
        if known is not None:
            return known
        replied = reference.resolved
        if isinstance(replied, discord.Message) and replied.author.id == my_id and message.guild is not None:
            # Not remembered (a restart): the chain's root is the message the bot's message replied to.
            root = replied.reference.message_id if replied.reference and replied.reference.message_id else replied.id
            return reply_chain_key(message.guild.id, message.channel.id, root)
        return None

    def _question(self, message: discord.Message, my_id: int) -> str:
        text = strip_bot_mention(message.content, my_id)
        for user in message.mentions:  # other people's mentions read as names, not ids
            if user.id != my_id:
                text = re.sub(rf"<@!?{user.id}>", f"@{user.display_name}", text)
        return text

    async def _answer_message(self, message: discord.Message, inbound: Inbound) -> None:
        started = time.monotonic()
        assert self.client is not None and self.client.user is not None
        question = self._question(message, self.client.user.id)
        if not question:
            await self._usage_reply(message)
            return
        channel: Any = message.channel
        reply_to: discord.Message | None = message if inbound.kind == "reply" else None
        key = inbound.session_key
        if inbound.kind == "new":
            thread = await self._open_thread(message, question)
            if thread is not None:
                channel, key = thread, thread_key(thread.id)
            else:
                reply_to = message
                key = reply_chain_key(message.guild.id, channel.id, message.id)  # type: ignore[union-attr]
        assert key is not None
        self.conversations.remember([message.id], key)
        surface = ChannelSurface(channel, reply_to=reply_to, max_chars=self.settings.discord_max_chars)
        await self._stream(surface, channel.id, key, question, str(message.author.id), started)

    async def _open_thread(self, message: discord.Message, question: str) -> discord.Thread | None:
        """A thread on the user's message, or None where the bot may not (it then replies to the message)."""
        try:
            return await message.create_thread(name=thread_name(question),
                                               auto_archive_duration=THREAD_ARCHIVE_MINUTES)
        except discord.Forbidden:
            log.info("discord: no permission to create threads in channel %s; replying instead", message.channel.id)
        except discord.HTTPException as exc:
            log.warning("discord: creating a thread in channel %s failed (%s); replying instead",
                        message.channel.id, exc)
        return None

    async def _usage_reply(self, message: discord.Message) -> None:
        text = USAGE.format(bot=self.client.user.display_name if self.client and self.client.user else "Switchboard")
        with self.budgets.using(message.channel.id) as budget:
            async with budget.slot():
                try:
                    await message.reply(text, mention_author=False, allowed_mentions=NO_MENTIONS)
                except discord.HTTPException:
                    log.warning("discord: could not send the usage help in channel %s", message.channel.id,
                                exc_info=True)

    # --- streaming one answer -------------------------------------------------------------------------------------
    async def _stream(self, surface: DiscordSurface, channel_id: int, key: str, question: str, user: str,
                      started: float) -> None:
        with self.budgets.using(channel_id) as budget:
            reply = StreamingReply(surface, EditPacer(self.edit_interval_s), budget=budget)  # type: ignore[arg-type]
            try:
                await reply.run(self._events(key, question, user))
            finally:
                surface.close()
                outcome = reply.outcome
                self.conversations.remember([handle.id for handle in outcome.handles], key)
                self._record(key, outcome, started)

    async def _events(self, key: str, question: str, user: str) -> AsyncIterator[Event]:
        """The core's events; a core that raises (even when called) fails inside the stream, where the renderer
        turns it into a readable error. The core's stream is always closed, releasing its session lock."""
        stream = self.orchestrator.respond(key, question, user=user)
        async with contextlib.aclosing(stream):
            async for event in stream:
                yield event

    def _record(self, key: str, outcome: ReplyOutcome, started: float) -> None:
        self.recent.append((key, outcome))
        if outcome.first_token_at is not None:
            metrics.FIRST_TOKEN.labels(PLATFORM).observe(max(0.0, outcome.first_token_at - started))
        if outcome.status == "done":
            metrics.REPLIES.labels(PLATFORM, outcome.agent or "unknown").inc()
        else:
            metrics.ERRORS.labels(PLATFORM, outcome.error_code or outcome.status).inc()
        if not outcome.delivered:
            log.error("[%s] the final text of a Discord reply was not delivered", key)

    # --- slash commands (see bots.discord.commands) -------------------------------------------------------------------
    def _interaction_place(self, interaction: discord.Interaction) -> tuple[bool, bool]:
        """(allowed here, in a thread)."""
        channel = interaction.channel
        in_thread = getattr(channel, "type", None) in THREAD_TYPES
        allowed = is_allowed(self.settings.discord_allowed_guilds, self.settings.discord_allowed_channels,
                             guild_id=interaction.guild_id, channel_id=interaction.channel_id or 0,
                             parent_id=getattr(channel, "parent_id", None) if in_thread else None)
        return allowed, in_thread

    @staticmethod
    def _conversation_of(interaction: discord.Interaction, in_thread: bool) -> str | None:
        """The conversation a command runs in: its thread or DM; None in a plain channel."""
        channel_id = interaction.channel_id or 0
        if in_thread:
            return thread_key(channel_id)
        if interaction.guild_id is None:
            return dm_key(channel_id)
        return None

    async def ask(self, interaction: discord.Interaction, question: str) -> None:
        started = time.monotonic()
        allowed, in_thread = self._interaction_place(interaction)
        if self._stopping or not allowed:
            await interaction.response.send_message(RESTARTING if self._stopping else NOT_HERE, ephemeral=True)
            return
        question = question.strip()
        if not question:
            await self.help(interaction)
            return
        await interaction.response.defer(thinking=True)  # at once: Discord allows 3 s for the first answer
        channel_id = interaction.channel_id or 0
        key = self._conversation_of(interaction, in_thread)
        if key is None:  # a channel, outside any thread: this /ask starts a conversation of its own
            key = ask_key(interaction.guild_id or 0, channel_id, interaction.id)
        surface = InteractionSurface(interaction, max_chars=self.settings.discord_max_chars)
        self._spawn(self._stream(surface, channel_id, key, question, str(interaction.user.id), started))

    async def reset(self, interaction: discord.Interaction) -> None:
        allowed, in_thread = self._interaction_place(interaction)
        if not allowed:
            await interaction.response.send_message(NOT_HERE, ephemeral=True)
            return
        channel_id = interaction.channel_id or 0
        key = self._conversation_of(interaction, in_thread)
        if key is None:
            await interaction.response.send_message(RESET_WHERE, ephemeral=True)
            return
        await interaction.response.defer(thinking=True)  # a reply in flight holds the session until it ends
        await self.orchestrator.reset(key)
        with self.budgets.using(channel_id) as budget:
            async with budget.slot():
                await interaction.edit_original_response(content=RESET_DONE, allowed_mentions=NO_MENTIONS)

    async def help(self, interaction: discord.Interaction) -> None:
        name = self.client.user.display_name if self.client and self.client.user else "Switchboard"
        await interaction.response.send_message(USAGE.format(bot=name), ephemeral=True,
                                                allowed_mentions=NO_MENTIONS)

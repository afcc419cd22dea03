"""The Discord front-end: mentions, threads, DMs and slash commands, answered by streaming into messages.

One question reads as the pipeline's three steps (`bots.pipeline`):
1. `bots.discord.inbound.inbound_from_message` decides whether a message is for the bot and in which
   conversation (pure: tested on messages built from recorded payloads).
2. A mention in a channel opens a thread on the user's message (named from the question) and the conversation
   is that thread; where threads are not allowed (50013) the bot replies to the message instead and the reply
   chain is the conversation. Session keys: `bots.discord.conversation`.
3. `AnswerPipeline.answer` streams into a `bots.discord.surface` surface. Every reply writing to one channel (a
   thread is a channel) shares that channel's budget (5 writes per 5 s by default), so concurrent replies stay
   under Discord's limit instead of collecting 429s; a 429 that discord.py saw (and retried by itself) is fed
   to the channel's budget too.

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
from typing import Any

import aiohttp
import discord
from discord import app_commands

from bots import metrics
from bots.discord import commands, feedback
from bots.discord.conversation import (
    ConversationMap,
    ask_key,
    dm_key,
    is_allowed,
    thread_key,
    thread_name,
    usage_text,
)
from bots.discord.inbound import PLATFORM, THREAD_TYPES, Place, inbound_from_message, reply_chain_inbound
from bots.discord.surface import NO_MENTIONS, ChannelSurface, DiscordSurface, InteractionSurface
from bots.feedback import feedback_store
from bots.pacing import BudgetPool, retry_after_of
from bots.pipeline import AnswerPipeline, Inbound, PlatformTexts, intent_of
from bots.startup import StartupError
from coordination import connect as connect_coordination
from core.retry import USER_MESSAGES
from core.settings import Settings

log = logging.getLogger(__name__)

THREAD_ARCHIVE_MINUTES = 1440
CHANNEL_ROUTE = re.compile(r"/channels/(\d+)/")

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
    return StartupError(message)


class SwitchboardClient(discord.Client):
    """discord.py's client with the intents, the no-ping default and the slash commands the bot needs."""

    def __init__(self, frontend: DiscordFrontend, **options: Any) -> None:
        intents = discord.Intents.default()
        intents.message_content = True  # privileged: switched on in the Developer Portal (see README)
        super().__init__(intents=intents, allowed_mentions=NO_MENTIONS, **options)
        self.frontend = frontend
        self.tree = app_commands.CommandTree(self)
        commands.register(self.tree, frontend)
        # 👍/👎 under answers, also those sent before a restart; into feedback.jsonl, or Postgres with DATABASE_URL
        feedback.install(self, feedback_store(frontend.settings))

    async def setup_hook(self) -> None:
        await self.frontend.sync_commands(self.tree)

    async def on_message(self, message: discord.Message) -> None:
        self.frontend.on_message(message)


class DiscordFrontend:
    """The `bots.frontend.Frontend` for Discord. `client_options` go to `discord.Client` (tests pass
    `guild_ready_timeout=0.05`)."""

    name = "discord"

    client: SwitchboardClient | None = None

    def __init__(self, settings: Settings, orchestrator: Any, *, ready_timeout_s: float = 60.0,
                 stop_timeout_s: float = 30.0, coordination: Any | None = None, **client_options: Any) -> None:
        self.settings = settings
        self.orchestrator = orchestrator
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.client_options = client_options
        self.client: SwitchboardClient | None = None
        self.conversations = ConversationMap()
        # Shared with the other replicas when coordination is Redis-backed; in-process otherwise.
        self.coordination = coordination or connect_coordination(None)
        self.budgets = self.coordination.budget_pool("discord:writes", settings.discord_edits_per_window,
                                                     settings.discord_edit_window_s, local=BudgetPool)
        # One reply edits at most as often as the channel's whole budget allows on average (1/s by default).
        self.edit_interval_s = settings.discord_edit_window_s / max(1, settings.discord_edits_per_window)
        self.pipeline = AnswerPipeline(orchestrator, PLATFORM, self._texts(), edit_interval_s=self.edit_interval_s,
                                       replies=self.coordination.inflight)
        self.recent = self.pipeline.recent  # (session key, outcome), newest last
        self.platform_429s = 0  # 429 responses seen, including those discord.py retried by itself
        self.commands_note = "slash commands not synced"
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
            self.pipeline.texts = self._texts()  # the usage text names the bot as this server shows it
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
        """Stop taking questions, let replies in flight finish for up to DRAIN_TIMEOUT_S, cut the rest with an
        "interrupted" note, then disconnect."""
        self._stopping = True
        await self.pipeline.inflight.drain(self.stop_timeout_s, grace_s=self.settings.drain_timeout_s)
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
        """Every 429 Discord answers, including the ones discord.py waits out and retries on its own: counted,
        and fed to the channel's budget so the other replies there hold back as well."""
        trace = aiohttp.TraceConfig()

        async def on_request_end(session: Any, context: Any, params: aiohttp.TraceRequestEndParams) -> None:
            if params.response.status != 429:
                return
            self.platform_429s += 1
            metrics.RATE_LIMITED.labels(PLATFORM).inc()
            channel = CHANNEL_ROUTE.search(params.url.path + "/")
            if channel is not None:
                self.budgets.note_rate_limited(int(channel.group(1)), retry_after_of(params.response.headers))

        trace.on_request_end.append(on_request_end)
        return trace

    # --- messages ----------------------------------------------------------------------------------------------
    def on_message(self, message: discord.Message) -> None:
        me = self.client.user if self.client else None
        if self._stopping or me is None:
            return
        inbound = inbound_from_message(message, me_id=me.id, allowed_guilds=self.settings.discord_allowed_guilds,
                                       allowed_channels=self.settings.discord_allowed_channels,
                                       conversations=self.conversations)
        if inbound is not None:
            self.pipeline.inflight.spawn(self._answer_message(inbound))

    async def _answer_message(self, inbound: Inbound) -> None:
        started = time.monotonic()
        place: Place = inbound.place
        message: discord.Message = place.message
        channel: Any = message.channel
        if place.kind == "new" and intent_of(inbound.text) == "question":
            thread = await self._open_thread(message, inbound.text)
            if thread is not None:
                channel = thread
            else:
                inbound = reply_chain_inbound(inbound)
                place = inbound.place
        # A reply chain (or help for a bare mention) answers the message itself; a thread or a DM needs no reply.
        reply_to = message if place.kind in ("reply", "new") and channel is message.channel else None
        self.conversations.remember([message.id], inbound.session_key)
        with self.budgets.using(channel.id) as budget:
            surface = ChannelSurface(channel, reply_to=reply_to, max_chars=self.settings.discord_max_chars,
                                     session_key=inbound.session_key, budget=budget)
            await self._answer(inbound, surface, started)

    async def _answer(self, inbound: Inbound, surface: DiscordSurface, started: float) -> None:
        try:
            outcome = await self.pipeline.answer(inbound, surface, started=started)
        finally:
            surface.close()
        if outcome is not None:
            self.conversations.remember([handle.id for handle in outcome.handles], inbound.session_key)

    async def interrupt_orphan(self, info: dict[str, Any]) -> None:
        """A reply whose replica died mid-way (its lease expired): its message says so, never a cursor."""
        if self.client is None:
            return
        channel = self.client.get_partial_messageable(int(info["channel_id"]))
        await channel.get_partial_message(int(info["message_id"])).edit(
            content=f"⚠️ {USER_MESSAGES['interrupted']}", allowed_mentions=NO_MENTIONS)

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
        if intent_of(question) == "help":
            await self.help(interaction)
            return
        await interaction.response.defer(thinking=True)  # at once: Discord allows 3 s for the first answer
        channel_id = interaction.channel_id or 0
        key = self._conversation_of(interaction, in_thread)
        if key is None:  # a channel, outside any thread: this /ask starts a conversation of its own
            key = ask_key(interaction.guild_id or 0, channel_id, interaction.id)
        inbound = Inbound(PLATFORM, key, question, str(interaction.user.id), place=interaction)
        self.pipeline.inflight.spawn(self._answer_interaction(inbound, channel_id, started))

    async def _answer_interaction(self, inbound: Inbound, channel_id: int, started: float) -> None:
        with self.budgets.using(channel_id) as budget:
            surface = InteractionSurface(inbound.place, max_chars=self.settings.discord_max_chars,
                                         session_key=inbound.session_key, budget=budget)
            await self._answer(inbound, surface, started)

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
        inbound = Inbound(PLATFORM, key, "reset", str(interaction.user.id), place=interaction)
        with self.budgets.using(channel_id) as budget:
            await self.pipeline.answer(inbound, InteractionSurface(interaction, budget=budget))

    async def help(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(self._usage(), ephemeral=True, allowed_mentions=NO_MENTIONS)

    def _usage(self) -> str:
        name = self.client.user.display_name if self.client and self.client.user else "Switchboard"
        return usage_text(getattr(self.orchestrator, "agents", None), bot=name)

    def _texts(self) -> PlatformTexts:
        return PlatformTexts(usage=self._usage(), reset_done=RESET_DONE)

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

Sharding (`bots.discord.shards`): with DISCORD_SHARD_COUNT=1 and in-process coordination the bot is one
`discord.Client` on one connection, as always. With more shards, or with shared coordination (REDIS_URL), it runs
discord.py's `AutoShardedClient` for the shards this process holds under a lease (`shard_count=N`,
`shard_ids=[held]`). One client per process, whatever it holds: a shard gained later is added to the running
client (`launch_shard`, or `ShardInfo.connect()` for one it held before), a shard lost or handed over is
disconnected (`ShardInfo.disconnect()`), so the REST session, the caches, the slash-command tree and the
feedback buttons are shared, and replies in flight keep writing while their shard changes hands. A process
with no shard logs in (the token is checked) and connects nothing until it claims one. Messages and slash
commands are only answered on shards this process holds right now (`ShardKeeper.holds`), and each message or
interaction id only once across replicas (the "discord" delivery keys), so a socket that outlived its lease
answers nothing. IDENTIFYs are spaced by one shared budget (one per 5 s, Discord's `max_concurrency` 1) across
every process, instead of discord.py's per-client pause; slash commands are synced by the holder of shard 0.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Any

import discord

from bots.dedupe import FallbackDeliveryKeys
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
from bots.discord.history import called_in_context, calls_in
from core.thread_context import merged
from bots.discord.inbound import attached_files
from bots.attachments import max_bytes_of, prepare, with_files
from bots.discord.clients import ShardedSwitchboardClient, SwitchboardClient
from bots.discord.gateway import BAD_TOKEN, MISSING_INTENT, GatewayConnection
from bots.discord.handoff import register as register_staff
from bots.discord.forums import ForumDesk
from bots.discord.shards import ShardKeeper
from bots.discord.surface import NO_MENTIONS, ChannelSurface, DiscordSurface, InteractionSurface
from bots.pacing import BudgetPool
from bots.pipeline import AnswerPipeline, Inbound, PlatformTexts, intent_of
from bots.support.desk import desk_or_none
from coordination import connect as connect_coordination
from core.retry import USER_MESSAGES
from core.settings import Settings


log = logging.getLogger(__name__)
__all__ = ["BAD_TOKEN", "MISSING_INTENT", "NOT_HERE", "RESET_DONE", "RESET_WHERE", "DiscordFrontend"]

THREAD_ARCHIVE_MINUTES = 1440
NOT_HERE = "I'm not enabled in this channel. Ask in one of the channels I've been set up for."
RESET_WHERE = "Use `/reset` inside a thread I'm answering in (or in our DMs) to start that conversation afresh."
RESET_DONE = "Done: I've forgotten this conversation. Ask me anything to start afresh."
RESTARTING = "I'm restarting right now. Please ask again in a minute."
IDENTIFY_INTERVAL_S = 5.0  # Discord: one IDENTIFY per 5 s per max_concurrency bucket (1 for most bots)


class DiscordFrontend(GatewayConnection):
    """The `bots.frontend.Frontend` for Discord. `client_options` go to `discord.Client` (tests pass
    `guild_ready_timeout=0.05`). `shard_lease_s` (default DISCORD_SHARD_LEASE_S), `shard_round_s`,
    `shard_settle_s` and `identify_interval_s` tune sharding (tests shorten them; see `bots.discord.shards`)."""

    name = "discord"

    client: SwitchboardClient | ShardedSwitchboardClient | None = None

    def __init__(self, settings: Settings, orchestrator: Any, *, ready_timeout_s: float = 60.0,
                 stop_timeout_s: float = 30.0, coordination: Any | None = None,
                 shard_lease_s: float | None = None, shard_round_s: float | None = None,
                 shard_settle_s: float | None = None, identify_interval_s: float = IDENTIFY_INTERVAL_S,
                 **client_options: Any) -> None:
        self.settings = settings
        self.orchestrator = orchestrator
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.client_options = client_options
        self.client: SwitchboardClient | ShardedSwitchboardClient | None = None
        self.conversations = ConversationMap()
        # Shared with the other replicas when coordination is Redis-backed; in-process otherwise.
        self.coordination = coordination or connect_coordination(None)
        # Sharded whenever there is more than one shard or other processes may run the bot too (see the doc).
        self.shard_count = settings.discord_shard_count
        self.sharded = self.shard_count > 1 or bool(getattr(self.coordination, "shared", False))
        self.shards: ShardKeeper | None = None
        self.shards_ready: set[int] = set()  # shards whose READY (and guilds) arrived since they connected
        self._shard_lease_s = shard_lease_s or settings.discord_shard_lease_s
        self._shard_round_s, self._shard_settle_s = shard_round_s, shard_settle_s
        self._identify_interval_s = identify_interval_s
        self._identify_budget: Any = None
        self._launches: dict[int, asyncio.Task[None]] = {}
        self._chores: set[asyncio.Task[Any]] = set()
        self._commands_synced = False
        self._seen = FallbackDeliveryKeys(self.coordination.delivery_keys("discord")) if self.sharded else None
        self.budgets = self.coordination.budget_pool("discord:writes", settings.discord_edits_per_window,
                                                     settings.discord_edit_window_s, local=BudgetPool)
        # One reply edits at most as often as the channel's whole budget allows on average (1/s by default).
        self.edit_interval_s = settings.discord_edit_window_s / max(1, settings.discord_edits_per_window)
        # Handoffs, quiet threads and outcomes (`bots.support`); the staff place is DISCORD_HANDOFF_CHANNEL.
        self.support = desk_or_none(orchestrator)
        self.staff = register_staff(self.support, self)
        self.pipeline = AnswerPipeline(orchestrator, PLATFORM, self._texts(), edit_interval_s=self.edit_interval_s,
                                       replies=self.coordination.inflight, support=self.support)
        self.recent = self.pipeline.recent  # (session key, outcome), newest last
        self.forums = ForumDesk(self)  # posts in DISCORD_FORUM_CHANNELS, answered without a mention
        self.platform_429s = 0  # 429 responses seen, including those discord.py retried by itself
        self.commands_note = "slash commands not synced"
        self._connection: asyncio.Task[None] | None = None
        self._stopping = False
        self._started = False  # start() returned: a gateway that ends after this is reported by _gateway_ended

    async def start(self) -> None:
        await super().start()
        if self.client is not None:  # "Solved" under forum answers, also those sent before a restart
            self.forums.install(self.client)

    # --- messages ----------------------------------------------------------------------------------------------
    def on_message(self, message: discord.Message) -> None:
        me = self.client.user if self.client else None
        if self._stopping or me is None:
            return
        if not self._holds(message.guild.id if message.guild else getattr(message.channel, "guild_id", None)):
            return
        if self.forums.claims(message):  # a post in a listed forum: its own rules (bots.discord.forums)
            forum_inbound = self.forums.inbound(message, me_id=me.id)
            if forum_inbound is not None:
                self.pipeline.inflight.spawn(self.forums.answer(forum_inbound))
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
        if not await self._first_delivery("message", message.id):
            return
        channel: Any = message.channel
        called_in = calls_in(place.kind, message, self.client.user.id if self.client and self.client.user else 0)
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
            if called_in and intent_of(inbound.text) == "question":
                inbound = await self._with_context(inbound, message)
            inbound = await self._attached(inbound, message)  # last: any thread context is kept beside the files
            await self._answer(inbound, surface, started)

    async def _with_context(self, inbound: Inbound, message: discord.Message) -> Inbound:
        """Called into a reply chain or a thread it has no conversation for: what was said before goes with
        the question, as attributed context (`bots.discord.history`), remembered in the session from then on."""
        me = self.client.user.id if self.client and self.client.user else 0
        in_thread = getattr(message.channel, "type", None) in THREAD_TYPES
        try:
            if await self.orchestrator.session_info(inbound.session_key) is not None:
                return inbound
            earlier = await called_in_context(message, me, in_thread=in_thread,
                                              max_messages=self.settings.thread_context_messages,
                                              max_tokens=self.settings.thread_context_tokens)
        except Exception:  # noqa: BLE001 - the question is still answered, from its own text
            log.warning("discord: reading the conversation before %s failed", message.id, exc_info=True)
            return inbound
        return inbound if earlier is None else replace(inbound, extras=merged(inbound.extras, earlier))

    async def _attached(self, inbound: Inbound, message: discord.Message) -> Inbound:
        """The message's attachments, fetched from the CDN (`bots.attachments`: size cap, type sniffing, text
        budget); each one that cannot be used becomes a sentence in the reply."""
        files = attached_files(message)
        if not files:
            return inbound
        prepared = await prepare(files, max_bytes=max_bytes_of(self.settings),
                                 max_chars=self.settings.max_attachment_chars)
        return with_files(inbound, prepared)

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
        if not await self._mine(interaction):
            return
        allowed, in_thread = self._interaction_place(interaction)
        if self._stopping or not allowed:
            await interaction.response.send_message(RESTARTING if self._stopping else NOT_HERE, ephemeral=True)
            return
        question = question.strip()
        if intent_of(question) == "help":
            await self._send_help(interaction)
            return
        await interaction.response.defer(thinking=True)  # at once: Discord allows 3 s for the first answer
        channel_id = interaction.channel_id or 0
        key = self._conversation_of(interaction, in_thread)
        if key is None:  # a channel, outside any thread: this /ask starts a conversation of its own
            key = ask_key(interaction.guild_id or 0, channel_id, interaction.id)
        channel = getattr(interaction.channel, "parent_id", None) if in_thread else interaction.channel_id
        inbound = Inbound(PLATFORM, key, question, str(interaction.user.id), place=interaction,
                          channel=str(channel) if channel and interaction.guild_id else None)
        self.pipeline.inflight.spawn(self._answer_interaction(inbound, channel_id, started))

    async def _answer_interaction(self, inbound: Inbound, channel_id: int, started: float) -> None:
        with self.budgets.using(channel_id) as budget:
            surface = InteractionSurface(inbound.place, max_chars=self.settings.discord_max_chars,
                                         session_key=inbound.session_key, budget=budget)
            await self._answer(inbound, surface, started)

    async def reset(self, interaction: discord.Interaction) -> None:
        if not await self._mine(interaction):
            return
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

    async def _mine(self, interaction: discord.Interaction) -> bool:
        """Sharded: answer an interaction only on a shard held here, and only once across replicas."""
        return self._holds(interaction.guild_id) and await self._first_delivery("interaction", interaction.id)

    async def help(self, interaction: discord.Interaction) -> None:
        if await self._mine(interaction):
            await self._send_help(interaction)

    async def _send_help(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(self._usage(), ephemeral=True, allowed_mentions=NO_MENTIONS)

    def _usage(self) -> str:
        name = self.client.user.display_name if self.client and self.client.user else "Switchboard"
        return usage_text(getattr(self.orchestrator, "agents", None), bot=name)

    def _texts(self) -> PlatformTexts:
        return PlatformTexts(usage=self._usage(), reset_done=RESET_DONE)

"""Discord messages → `Inbound`: whether a message is for the bot, and in which conversation. Pure: it only
reads the message's attributes (no API calls), so it is tested on messages built from recorded payloads.

A message is for the bot when it is not the bot's own or another bot's, it is inside the allow-lists (DMs are
always allowed), and it is a mention in a channel, anything in a DM, anything in a thread the bot opened (or a
mention or reply in any thread), or a reply to one of the bot's messages. Session keys:
`bots.discord.conversation`. A mention in a channel is `new`: the bot opens a thread on it, and since a thread
opened from a message takes that message's id, its session key is known before the thread exists (where threads
are refused the adapter falls back to the reply chain's key).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import discord

from bots.discord.conversation import (
    ConversationMap,
    dm_key,
    is_allowed,
    reply_chain_key,
    strip_bot_mention,
    thread_key,
)
from bots.attachments import RemoteFile
from bots.pipeline import Inbound

PLATFORM = "discord"
THREAD_TYPES = (discord.ChannelType.public_thread, discord.ChannelType.private_thread,
                discord.ChannelType.news_thread)
ANSWERED_TYPES = (discord.MessageType.default, discord.MessageType.reply)

Kind = Literal["new", "thread", "dm", "reply"]


@dataclass(frozen=True, slots=True)
class Place:
    """Where a Discord answer goes: `new` opens a thread on `message`; `reply` answers as a reply to it; the
    others answer in the message's own channel (a thread or a DM)."""

    kind: Kind
    message: Any  # discord.Message


def inbound_from_message(message: discord.Message, *, me_id: int, allowed_guilds: Iterable[int] = (),
                         allowed_channels: Iterable[int] = (),
                         conversations: ConversationMap | None = None) -> Inbound | None:
    """The message as an inbound question, or None when it is not for the bot."""
    if message.author.id == me_id or message.author.bot:
        return None  # never itself, never another bot: no reply loops
    if message.type not in ANSWERED_TYPES:
        return None
    channel: Any = message.channel
    kind: Kind
    if message.guild is None:
        kind, key = "dm", dm_key(channel.id)
    else:
        in_thread = getattr(channel, "type", None) in THREAD_TYPES
        if not is_allowed(allowed_guilds, allowed_channels, guild_id=message.guild.id, channel_id=channel.id,
                          parent_id=getattr(channel, "parent_id", None) if in_thread else None):
            return None
        mentioned = any(user.id == me_id for user in message.mentions)
        continued = replied_conversation(message, me_id, conversations)
        if in_thread:
            if not (getattr(channel, "owner_id", None) == me_id or mentioned or continued):
                return None
            kind, key = "thread", thread_key(channel.id)
        elif continued:
            kind, key = "reply", continued
        elif mentioned:
            kind, key = "new", thread_key(message.id)
        else:
            return None
    return Inbound(platform=PLATFORM, session_key=key, text=question_of(message, me_id),
                   user=str(message.author.id), place=Place(kind, message), channel=channel_of(message))


def attached_files(message: discord.Message) -> tuple[RemoteFile, ...]:
    """The message's attachments as files to fetch from their (signed, auth-free) CDN URLs (`bots.attachments`)."""
    return tuple(RemoteFile(a.filename, a.url, a.size, a.content_type or "") for a in message.attachments)


def channel_of(message: discord.Message) -> str | None:
    """The guild channel a message counts as for per-channel settings (a thread counts as its parent); None in
    DMs."""
    if message.guild is None:
        return None
    channel: Any = message.channel
    if getattr(channel, "type", None) in THREAD_TYPES:
        return str(getattr(channel, "parent_id", None) or channel.id)
    return str(channel.id)


def reply_chain_inbound(inbound: Inbound) -> Inbound:
    """A `new` mention where threads are refused: the reply chain rooted at the message is the conversation."""
    message = inbound.place.message
    key = reply_chain_key(message.guild.id, message.channel.id, message.id)
    return Inbound(inbound.platform, key, inbound.text, inbound.user, Place("reply", message), inbound.addressed,
                   inbound.channel)


def replied_conversation(message: discord.Message, me_id: int, conversations: ConversationMap | None) -> str | None:
    """The conversation a reply continues, when it replies to one of the bot's messages."""
    reference = message.reference
    if reference is None or reference.message_id is None:
        return None
    known = conversations.get(reference.message_id) if conversations is not None else None
    if known is not None:
        return known
    replied = reference.resolved
    if isinstance(replied, discord.Message) and replied.author.id == me_id and message.guild is not None:
        # Not remembered (a restart): the chain's root is the message the bot's message replied to.
        root = replied.reference.message_id if replied.reference and replied.reference.message_id else replied.id
        return reply_chain_key(message.guild.id, message.channel.id, root)
    return None


def question_of(message: discord.Message, me_id: int) -> str:
    """The text without the bot's mention; other people's mentions read as names, not ids."""
    text = strip_bot_mention(message.content, me_id)
    for user in message.mentions:
        if user.id != me_id:
            text = re.sub(rf"<@!?{user.id}>", f"@{user.display_name}", text)
    return text

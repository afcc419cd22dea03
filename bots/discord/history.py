"""The Discord conversation the bot was called into, as the context a turn carries (`core.turn_input`).

Two shapes of "called in":
- a mention that replies to someone else's message: the reply chain above it (the referenced message, the one
  that one replies to, …), followed through `message_reference` (the first hop comes resolved with the event;
  the others are fetched, `GET /channels/{id}/messages/{id}`);
- a mention inside a thread the bot did not open and has no conversation for: the thread's earlier messages
  (`channel.history(before=mention)`, newest first from Discord, put back in order).
Either is bounded by a message count and token budget (`core.thread_context.bounded`), attributed to display
names, with the bot's own messages marked `from_bot`. Without the Read Message History permission Discord
refuses the fetch (403); the reply then says so once (`CANNOT_READ`) and answers the question alone.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import discord

from core.thread_context import bounded
from core.turn_input import PriorMessage, TurnInput

log = logging.getLogger(__name__)

CANNOT_READ = ("I couldn't read the earlier messages here: I'm missing the Read Message History permission in "
               "this channel. I'm answering from your message alone; a server admin can grant it.")
READ_TYPES = (discord.MessageType.default, discord.MessageType.reply)


def prior(message: discord.Message, me_id: int) -> PriorMessage | None:
    """One earlier message as context (None for system messages and empty ones)."""
    if message.type not in READ_TYPES:
        return None
    text = (message.clean_content or "").strip()  # mentions as @names: nothing the model echoes can ping
    if not text:
        return None
    own = message.author.id == me_id
    return PriorMessage(author="this assistant" if own else message.author.display_name, text=text, from_bot=own)


async def reply_chain(message: discord.Message, me_id: int, *, max_messages: int, max_tokens: int) -> TurnInput:
    """The messages the mention replies to, oldest first, newest kept within the budget."""
    chain: list[PriorMessage] = []
    reference = message.reference
    channel: Any = message.channel
    seen = 0
    while reference is not None and reference.message_id is not None and seen < max_messages:
        replied = reference.resolved if isinstance(reference.resolved, discord.Message) else None
        if replied is None:
            try:
                replied = await channel.fetch_message(reference.message_id)
            except discord.NotFound:
                break  # deleted: the chain ends there
            except discord.Forbidden:
                if not chain:
                    raise
                log.info("discord: reply chain in %s cut at %s (no history permission)", channel.id,
                         reference.message_id)
                kept = bounded(chain[::-1], max_messages=max_messages, max_tokens=max_tokens)
                return replace(kept, notes=(CANNOT_READ,))
        seen += 1
        found = prior(replied, me_id)
        if found is not None:
            chain.append(found)
        reference = replied.reference
    return bounded(chain[::-1], max_messages=max_messages, max_tokens=max_tokens)


async def thread_history(channel: Any, before: discord.Message, me_id: int, *, max_messages: int,
                         max_tokens: int) -> TurnInput:
    """A thread's messages before the mention, oldest first, newest kept within the budget."""
    found: list[PriorMessage] = []
    async for message in channel.history(limit=max_messages, before=before):  # newest first
        one = prior(message, me_id)
        if one is not None:
            found.append(one)
    return bounded(found[::-1], max_messages=max_messages, max_tokens=max_tokens)


async def called_in_context(message: discord.Message, me_id: int, *, in_thread: bool, max_messages: int,
                            max_tokens: int) -> TurnInput | None:
    """The context of a mention that called the bot into a conversation, or None when there is none to read;
    a refusal to read becomes the sentence the reply carries."""
    try:
        if in_thread:
            return await thread_history(message.channel, message, me_id, max_messages=max_messages,
                                        max_tokens=max_tokens)
        if message.reference is not None:
            return await reply_chain(message, me_id, max_messages=max_messages, max_tokens=max_tokens)
    except discord.Forbidden:
        return TurnInput(notes=(CANNOT_READ,))
    except discord.HTTPException as error:  # the question is still answered
        log.warning("discord: cannot read the conversation before %s: %s", message.id, error.status)
    return None


def calls_in(kind: str, message: discord.Message, me_id: int) -> bool:
    """Whether a mention calls the bot into a conversation others were having: a mention replying to someone
    else's message, or a mention in a thread the bot did not open (the adapter then checks it has no session)."""
    if kind == "new":
        return message.reference is not None and message.reference.message_id is not None
    if kind == "thread":
        channel: Any = message.channel
        return getattr(channel, "owner_id", None) != me_id and any(u.id == me_id for u in message.mentions)
    return False

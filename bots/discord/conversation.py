"""Which Discord conversation a message belongs to, and what it asks. Pure functions, no discord.py objects.

Session keys (the checkpointer's thread id, so one key is one remembered conversation):
- a thread (one the bot opened from a mention, or any thread it is asked in): `discord:thread:{thread_id}`;
  a thread opened from a message has the message's id, so the mention and its thread share one number;
- a direct-message channel: `discord:dm:{channel_id}` (the whole DM is one conversation, like a thread);
- a reply chain in a channel where the bot may not open threads: `discord:{guild_id}:{channel_id}:{root_id}`,
  the root being the user's message that started it;
- `/ask` in a channel (no thread): `discord:{guild_id}:{channel_id}:ask:{interaction_id}`.
A reply to any of the bot's messages continues the conversation that message belongs to (`ConversationMap`).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from knowledge.agents import AgentRegistry

THREAD_NAME_MAX = 100  # Discord's limit for a channel or thread name
_WHITESPACE = re.compile(r"\s+")


def usage_text(agents: AgentRegistry | None, bot: str) -> str:
    """The help message: what to ask (the agents' topics, from the agents file) and how; `bot` is the bot's
    display name. `agents` is the orchestrator's registry (`orchestrator.agents`); None says it generically."""
    what = f"a question about {agents.topics_sentence()}" if agents else "a support question"
    return (
        f"Ask me {what}: mention me with your question "
        f"(for example `@{bot} how do I rotate my API key?`) and I'll answer in a thread. "
        "Commands: `/ask` to ask anywhere, `/reset` inside a thread to start over, `/help` for this message."
    )


def thread_key(thread_id: int) -> str:
    return f"discord:thread:{thread_id}"


def dm_key(channel_id: int) -> str:
    return f"discord:dm:{channel_id}"


def reply_chain_key(guild_id: int, channel_id: int, root_message_id: int) -> str:
    return f"discord:{guild_id}:{channel_id}:{root_message_id}"


def ask_key(guild_id: int, channel_id: int, interaction_id: int) -> str:
    return f"discord:{guild_id}:{channel_id}:ask:{interaction_id}"


def strip_bot_mention(content: str, bot_id: int) -> str:
    """The question without the bot's own mention(s) (`<@id>` or the legacy `<@!id>`), whitespace tidied."""
    text = re.sub(rf"<@!?{bot_id}>", " ", content)
    lines = [" ".join(line.split()) for line in text.strip().splitlines()]
    return "\n".join(lines).strip()


def thread_name(question: str) -> str:
    """A thread name from the question: one line, at most 100 characters, never empty."""
    name = _WHITESPACE.sub(" ", question).strip() or "Question"
    if len(name) > THREAD_NAME_MAX:
        name = name[: THREAD_NAME_MAX - 1].rstrip() + "…"
    return name


def is_allowed(
    allowed_guilds: Iterable[int],
    allowed_channels: Iterable[int],
    *,
    guild_id: int | None,
    channel_id: int,
    parent_id: int | None = None,
) -> bool:
    """Whether the allow-lists let the bot answer here. Empty lists allow everything; a thread counts as its
    parent channel; DMs (no guild) are outside the guild and channel allow-lists and always allowed."""
    if guild_id is None:
        return True
    guilds, channels = set(allowed_guilds), set(allowed_channels)
    if guilds and guild_id not in guilds:
        return False
    return not channels or channel_id in channels or (parent_id is not None and parent_id in channels)


class ConversationMap:
    """Message id -> session key for the messages of recent conversations, so a reply continues its chain.

    Bounded (least recently used entries are forgotten); after a restart a reply to an old bot message falls
    back to the chain's root as Discord reports it (see `DiscordFrontend`).
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._keys: OrderedDict[int, str] = OrderedDict()

    def remember(self, message_ids: Iterable[int], session_key: str) -> None:
        for message_id in message_ids:
            self._keys[message_id] = session_key
            self._keys.move_to_end(message_id)
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)

    def get(self, message_id: int | None) -> str | None:
        if message_id is None:
            return None
        key = self._keys.get(message_id)
        if key is not None:
            self._keys.move_to_end(message_id)
        return key

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._keys

    def __len__(self) -> int:
        return len(self._keys)

"""Platform payloads → `Inbound`: the pure first step of every front-end, on recorded payloads.

Slack: Events API envelopes as Slack delivers them (`tests/data/slack_events.json`). Discord: MESSAGE_CREATE
payloads turned into real `discord.Message` objects by discord.py's own model code, over a minimal connection
state (no gateway, no HTTP).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import discord
import pytest
from discord.state import ConnectionState

from bots.discord.conversation import ConversationMap, dm_key, reply_chain_key, thread_key
from bots.discord.inbound import inbound_from_message, reply_chain_inbound
from bots.pipeline import intent_of
from bots.slack.inbound import Thread, inbound_from_ask, inbound_from_event

SLACK = json.loads((Path(__file__).parent / "data" / "slack_events.json").read_text())
BOT = "U0BOT"


@pytest.mark.parametrize("name, key, text, addressed", [
    ("mention_in_channel", "slack:T0TEAM:C0GENERAL:1764655200.000100", "How much is the Pro plan?", True),
    ("mention_in_thread", "slack:T0TEAM:C0GENERAL:1764655200.000100", "and for 50 seats ?", True),
    ("thread_reply_without_mention", "slack:T0TEAM:C0GENERAL:1764655200.000100", "thanks, and annual?", False),
    ("direct_message", "slack:T0TEAM:D0DM:1764655600.000500", "my card was declined", True),
    ("direct_message_in_thread", "slack:T0TEAM:D0DM:1764655600.000500", "still declined", True),
    ("file_share_in_dm", "slack:T0TEAM:D0DM:1764656100.001000", "here is the invoice", True),
])
def test_slack_events_for_the_bot_become_inbound_messages(name: str, key: str, text: str, addressed: bool) -> None:
    inbound = inbound_from_event(SLACK[name], BOT)
    assert inbound is not None
    assert (inbound.platform, inbound.session_key, inbound.text, inbound.user) == ("slack", key, text, "U0USER")
    assert inbound.addressed is addressed
    assert inbound.place == Thread(*key.split(":")[2:])


@pytest.mark.parametrize("name", ["channel_message_without_mention", "own_message", "other_bot", "edit"])
def test_slack_events_not_for_the_bot_are_dropped(name: str) -> None:
    assert inbound_from_event(SLACK[name], BOT) is None


def test_slack_ask_answers_in_the_thread_of_the_posted_question() -> None:
    command = {"team_id": "T0TEAM", "channel_id": "C0GENERAL", "user_id": "U0USER", "text": "  refund?  "}
    inbound = inbound_from_ask(command, "1764656200.001100")
    assert inbound.session_key == "slack:T0TEAM:C0GENERAL:1764656200.001100" and inbound.text == "refund?"


@pytest.mark.parametrize("text, intent", [
    ("", "help"), ("  help?", "help"), ("Help!", "help"), ("reset", "reset"), ("Start over.", "reset"),
    ("how do I reset my API key?", "question"), ("help me with invoices", "question"),
])
def test_intent_of_a_message(text: str, intent: str) -> None:
    assert intent_of(text) == intent


# --- Discord ------------------------------------------------------------------------------------------------

ME, USER, OTHER_BOT, GUILD, GENERAL, CLOSED, THREAD, FOREIGN_THREAD, DM = 9, 5, 7, 1, 10, 11, 20, 21, 30


def _user(user_id: int, bot: bool = False) -> dict[str, Any]:
    return {"id": str(user_id), "username": f"u{user_id}", "discriminator": "0", "avatar": None, "bot": bot,
            "global_name": "Ada" if user_id == 6 else None}


@pytest.fixture
async def state():
    http = discord.http.HTTPClient(__import__("asyncio").get_running_loop())
    state = ConnectionState(dispatch=lambda *a, **k: None, handlers={}, hooks={}, http=http,
                            intents=discord.Intents.default(), chunk_guilds_at_startup=False)
    guild = discord.Guild(state=state, data={
        "id": str(GUILD), "name": "support", "roles": [], "members": [], "emojis": [], "features": [],
        "stickers": [],
        "channels": [{"id": str(GENERAL), "type": 0, "name": "general", "position": 0},
                     {"id": str(CLOSED), "type": 0, "name": "closed", "position": 1}],
        "threads": [{"id": str(THREAD), "type": 11, "name": "How do I rotate", "parent_id": str(GENERAL),
                     "owner_id": str(ME), "message_count": 2, "member_count": 2, "thread_metadata": {"archived": False, "auto_archive_duration": 1440,
                                                              "archive_timestamp": "2026-01-01T00:00:00+00:00"}},
                    {"id": str(FOREIGN_THREAD), "type": 11, "name": "chat", "parent_id": str(GENERAL),
                     "owner_id": str(USER), "message_count": 9, "member_count": 3, "thread_metadata": {"archived": False, "auto_archive_duration": 1440,
                                                                "archive_timestamp": "2026-01-01T00:00:00+00:00"}}],
    })
    state._add_guild(guild)
    yield state
    await http.close()


def message(state: ConnectionState, channel_id: int, content: str, *, author: int = USER, bot: bool = False,
            mentions: tuple[int, ...] = (), message_id: int = 100, reference: dict | None = None,
            kind: int = 0) -> discord.Message:
    """A MESSAGE_CREATE payload as the gateway sends it, turned into discord.py's model."""
    payload: dict[str, Any] = {
        "id": str(message_id), "channel_id": str(channel_id), "author": _user(author, bot), "content": content,
        "timestamp": "2026-12-02T08:00:00+00:00", "edited_timestamp": None, "tts": False,
        "mention_everyone": False, "mentions": [_user(m, m == ME) for m in mentions], "mention_roles": [],
        "attachments": [], "embeds": [], "pinned": False, "type": kind,
    }
    if channel_id == DM:
        channel: Any = discord.DMChannel(me=state.user, state=state, data={"id": str(DM), "type": 1,  # type: ignore[arg-type]
                                                                           "recipients": [_user(author)]})
    else:
        payload["guild_id"] = str(GUILD)
        guild = state._get_guild(GUILD)
        channel = guild.get_channel_or_thread(channel_id)  # type: ignore[union-attr]
    if reference is not None:
        payload["message_reference"] = {"message_id": str(reference["id"]), "channel_id": str(channel_id)}
        payload["referenced_message"] = reference
    return discord.Message(state=state, channel=channel, data=payload)


def inbound(msg: discord.Message, **kwargs: Any):
    return inbound_from_message(msg, me_id=ME, **kwargs)


async def test_a_mention_in_a_channel_is_a_new_conversation_keyed_by_its_future_thread(state) -> None:
    got = inbound(message(state, GENERAL, f"<@{ME}>  how do I rotate a key?", mentions=(ME,)))
    assert got is not None and got.place.kind == "new" and got.session_key == thread_key(100)
    assert got.text == "how do I rotate a key?" and got.user == str(USER)
    chain = reply_chain_inbound(got)  # where threads are refused, the reply chain is the conversation
    assert chain.session_key == reply_chain_key(GUILD, GENERAL, 100) and chain.place.kind == "reply"


async def test_other_peoples_mentions_read_as_names(state) -> None:
    got = inbound(message(state, GENERAL, f"<@{ME}> ask <@{USER}> about it", mentions=(ME, USER)))
    assert got is not None and got.text == f"ask @u{USER} about it"


async def test_anything_in_the_bots_own_thread_or_a_dm_is_for_the_bot(state) -> None:
    in_thread = inbound(message(state, THREAD, "and the old key?"))
    assert in_thread is not None and in_thread.session_key == thread_key(THREAD) and in_thread.place.kind == "thread"
    in_dm = inbound(message(state, DM, "refund please"))
    assert in_dm is not None and in_dm.session_key == dm_key(DM) and in_dm.place.kind == "dm"


async def test_a_reply_to_the_bot_continues_the_conversation_of_the_replied_message(state) -> None:
    bot_answer = {"id": "200", "channel_id": str(GENERAL), "author": _user(ME, True), "content": "The answer",
                  "timestamp": "2026-12-02T08:00:00+00:00", "edited_timestamp": None, "tts": False,
                  "mention_everyone": False, "mentions": [], "mention_roles": [], "attachments": [],
                  "embeds": [], "pinned": False, "type": 19,
                  "message_reference": {"message_id": "150", "channel_id": str(GENERAL)}}
    reply = message(state, GENERAL, "and annual?", message_id=201, reference=bot_answer, kind=19)
    remembered = ConversationMap()
    remembered.remember([200], "discord:1:10:150")
    assert inbound(reply, conversations=remembered).session_key == "discord:1:10:150"  # type: ignore[union-attr]
    after_restart = inbound(reply)  # nothing remembered: the chain's root comes from the replied message
    assert after_restart is not None and after_restart.session_key == reply_chain_key(GUILD, GENERAL, 150)


async def test_messages_not_for_the_bot_are_dropped(state) -> None:
    assert inbound(message(state, GENERAL, "lunch?")) is None  # no mention
    assert inbound(message(state, FOREIGN_THREAD, "hi all")) is None  # someone else's thread, no mention
    assert inbound(message(state, THREAD, "done", author=ME, bot=True)) is None  # itself
    assert inbound(message(state, THREAD, f"<@{ME}> deploy", author=OTHER_BOT, bot=True, mentions=(ME,))) is None
    assert inbound(message(state, THREAD, "pinned a message", kind=6)) is None  # a system message
    mention = message(state, CLOSED, f"<@{ME}> hi", mentions=(ME,))
    assert inbound(mention, allowed_channels=[GENERAL]) is None  # outside the allow-list
    assert inbound(message(state, THREAD, "hi"), allowed_channels=[GENERAL]) is not None  # a thread counts as its parent

"""👍/👎 on Discord answers, end to end: the REAL discord.py client (the bot) against the loopback fake Discord
(`tests/fakes/discord.py`), the real offline orchestrator, and the real feedback file.

What must hold, and why it is tested this way:
- the buttons arrive in the same write as the final text (Discord allows 5 writes per 5 s per channel, so an
  extra edit for the buttons would slow every reply in that channel), and only under a successful answer;
- a click is recorded through `bots.feedback` (the same file and summary as Slack's) with the conversation's
  session key, and answered with an ephemeral thank-you that pings nobody;
- the buttons work after a restart: a NEW front-end, which never saw the message, still handles the click.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
import pytest

from bots.discord.bot import DiscordFrontend
from bots.discord.conversation import thread_key
from bots.discord.feedback import (
    MAX_CUSTOM_ID,
    TEMPLATE,
    THANKS,
    FeedbackButton,
    custom_id,
    feedback_view,
    install,
)
from bots.discord.handoff import AskForPersonButton
from bots.feedback import read_feedback, summarize
from core.orchestrator import build_orchestrator
from core.settings import Settings
from tests.conftest import make_settings
from tests.fakes.discord import FLAG_EPHEMERAL, FakeDiscord, Json, connected_client

QUESTION = "Do you comply with GDPR?"
NO_PINGS = {"parse": []}


# ---- harness ---------------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running_bot(fake: FakeDiscord, core: Any, settings: Settings) -> AsyncIterator[DiscordFrontend]:
    """The Discord front-end as `switchboard run` starts it, pointed at the fake; stopped on exit."""
    frontend = DiscordFrontend(make_settings(settings.data_dir, discord_token=fake.token,
                                             discord_guild_id=fake.guild_id,
                                             discord_edit_window_s=fake.limiter.window_s),
                               core, guild_ready_timeout=0.05, ready_timeout_s=10)
    await frontend.start()
    try:
        yield frontend
    finally:
        await frontend.stop()


@pytest.fixture
async def offline_core(corpus_settings: Settings) -> AsyncIterator[Any]:
    core = await build_orchestrator(corpus_settings)
    yield core
    await core.aclose()


async def answered_mention(fake: FakeDiscord, frontend: DiscordFrontend) -> tuple[str, Json]:
    """Ask in #general (the bot opens a thread) and wait for the answer; (session key, final message)."""
    asked = await fake.user_message(fake.channel_id("general"), QUESTION)
    await fake.wait_for(lambda: len(frontend.recent) >= 1, timeout=20)
    [(key, outcome)] = list(frontend.recent)
    assert outcome.status == "done" and outcome.delivered
    return key, fake.messages_in(int(asked["id"]), from_bot=True)[-1]


async def click(fake: FakeDiscord, message: Json, button: str, user: Json | None = None) -> Json:
    """A user clicks a button; returns the bot's one callback for that click (its data: content, flags...)."""
    interaction = await fake.click_button(message, button, user=user)
    [response] = await fake.wait_for(lambda: fake.replies_to(interaction), timeout=5)
    assert response.type == 4  # CHANNEL_MESSAGE_WITH_SOURCE: a reply, not a silent acknowledgement
    return response.data or {}


def component_writes(fake: FakeDiscord) -> list[Json]:
    """Every message create/edit body the bot sent that carried components."""
    return [r.body for r in fake.requests if r.method in ("POST", "PATCH") and isinstance(r.body, dict)
            and "/callback" not in r.path and r.body.get("components")]


# ---- the pure pieces --------------------------------------------------------------------------------------------


def test_custom_ids_carry_the_session_key_and_never_exceed_discords_100_characters() -> None:
    """The click must be answerable from the custom_id alone (no state survives a restart), so the key must
    round-trip through the template; a key too long for Discord is cut with a digest, keeping keys distinct."""
    key = "discord:123456789012345678:123456789012345679:ask:123456789012345680"  # the longest Discord key
    for vote in ("up", "down"):
        match = TEMPLATE.fullmatch(custom_id(vote, key))
        assert match is not None and match["vote"] == vote and match["key"] == key
    long_a, long_b = "k" * 150 + "a", "k" * 150 + "b"
    ids = {custom_id(vote, k) for vote in ("up", "down") for k in (long_a, long_b)}
    assert len(ids) == 4 and all(len(i) <= MAX_CUSTOM_ID and TEMPLATE.fullmatch(i) for i in ids)
    assert TEMPLATE.fullmatch(custom_id("up", long_a))["key"] == TEMPLATE.fullmatch(custom_id("down", long_a))["key"]


async def test_the_view_never_times_out_so_discordpy_keeps_the_buttons_registered() -> None:
    """A view with a timeout unregisters its dynamic items when it expires, silencing every button."""
    view = feedback_view("discord:thread:1")
    assert view.timeout is None and view.is_persistent()
    assert [type(item) for item in view.children] == [FeedbackButton, FeedbackButton, AskForPersonButton]


# ---- the fake speaks the component protocol -----------------------------------------------------------------------


async def test_fake_stores_components_and_delivers_a_click_to_the_real_client(tmp_path: Path) -> None:
    """The fake itself: a view sent by discord.py is stored in `components` (with Discord's numeric ids) and kept
    by a later edit that omits it; a click reaches the client as INTERACTION_CREATE type 3, and the ephemeral
    reply comes back through the callback endpoint."""
    async with FakeDiscord() as fake:
        intents = discord.Intents.default()
        intents.message_content = True
        client = discord.Client(intents=intents, guild_ready_timeout=0.05)
        install(client, tmp_path)
        async with connected_client(client, fake):
            channel = client.get_channel(fake.channel_id("general"))
            sent = await channel.send("an answer", view=feedback_view("discord:dm:5"))  # type: ignore[union-attr]
            await sent.edit(content="an answer, edited")
            stored = fake.message(sent.id)
            assert [b["custom_id"] for b in fake.buttons_of(stored)] == [custom_id("up", "discord:dm:5"),
                                                                        custom_id("down", "discord:dm:5"),
                                                                        "sb:ho:discord:dm:5"]
            assert all(isinstance(b["id"], int) for b in fake.buttons_of(stored))
            reply = await click(fake, stored, custom_id("down", "discord:dm:5"))
            with pytest.raises(LookupError):
                await fake.click_button(stored, "sb:fb:up:no-such-button")
    assert reply["flags"] & FLAG_EPHEMERAL and reply["content"] == THANKS["down"]
    assert [row["session_key"] for row in read_feedback(tmp_path)] == ["discord:dm:5"]


async def test_fake_refuses_a_custom_id_over_100_characters_like_discord() -> None:
    """Discord answers 50035 for a custom_id over 100 characters; the fake must too, or a too-long id would
    pass every test here and fail in production."""
    async with FakeDiscord() as fake:
        client = discord.Client(intents=discord.Intents.default(), guild_ready_timeout=0.05)
        async with connected_client(client, fake):
            view = discord.ui.View(timeout=None)
            view.add_item(discord.ui.Button(label="x", custom_id="x" * 101))
            channel = client.get_channel(fake.channel_id("general"))
            with pytest.raises(discord.HTTPException) as refused:
                await channel.send("hi", view=view)  # type: ignore[union-attr]
    assert refused.value.code == 50035 and "custom_id" in refused.value.text


# ---- the bot ----------------------------------------------------------------------------------------------------


async def test_the_final_message_carries_both_buttons_in_the_same_edit_as_the_final_text(corpus_settings,
                                                                                        offline_core) -> None:
    """The buttons carry the thread's session key and ride on the write that lands the final text: exactly one
    write had components, it is the last edit of the final message, and no earlier edit already showed the final
    text (which is what a separate write for the buttons would look like)."""
    async with FakeDiscord() as fake:
        async with running_bot(fake, offline_core, corpus_settings) as frontend:
            key, final = await answered_mention(fake, frontend)
    thread_id = int(final["channel_id"])
    assert key == thread_key(thread_id)
    assert [b["custom_id"] for b in fake.buttons_of(final)] == [f"sb:fb:up:{key}", f"sb:fb:down:{key}",
                                                                f"sb:ho:{key}"]
    assert [b.get("emoji", {}).get("name") for b in fake.buttons_of(final)] == ["👍", "👎", "🙋"]
    [write] = component_writes(fake)
    edits = fake.edits_of(int(final["id"]))
    assert write["content"] == final["content"] == edits[-1]["content"] and write["allowed_mentions"] == NO_PINGS
    assert edits[-1]["components"] and not any(e["components"] for e in edits[:-1])
    assert [e["content"] for e in edits].count(final["content"]) == 1


async def test_a_click_records_the_vote_for_the_conversation_and_thanks_only_the_clicker(corpus_settings,
                                                                                       offline_core) -> None:
    """Recorded with frontend "discord", the session key, the clicker and the message; answered ephemerally
    (flag 64) without pinging anyone; counted by the same summary `switchboard feedback` prints."""
    async with FakeDiscord() as fake:
        bob = fake.add_user("bob")
        async with running_bot(fake, offline_core, corpus_settings) as frontend:
            key, final = await answered_mention(fake, frontend)
            up = await click(fake, final, f"sb:fb:up:{key}")
            down = await click(fake, final, f"sb:fb:down:{key}", user=bob)
    assert up["content"] == THANKS["up"] and down["content"] == THANKS["down"]
    assert up["flags"] & FLAG_EPHEMERAL and down["flags"] & FLAG_EPHEMERAL
    assert up["allowed_mentions"] == NO_PINGS == down["allowed_mentions"]
    rows = read_feedback(corpus_settings.data_dir)
    assert [(r["frontend"], r["session_key"], r["vote"], r["user"], r["message"]) for r in rows] == [
        ("discord", key, "up", fake.default_user["id"], final["id"]),
        ("discord", key, "down", bob["id"], final["id"]),
    ]
    summary = summarize(rows)
    assert summary["by_frontend"] == {"discord": {"up": 1, "down": 1}}
    assert [r["session_key"] for r in summary["recent_down"]] == [key]


async def test_the_buttons_still_work_after_the_bot_restarts(corpus_settings, offline_core) -> None:
    """A new front-end (a new client with empty state) handles a click on a message the old one posted: the
    vote lives in the custom_id, and the button class is registered at start-up, not per message."""
    async with FakeDiscord() as fake:
        async with running_bot(fake, offline_core, corpus_settings) as frontend:
            key, final = await answered_mention(fake, frontend)
        await fake.wait_for(lambda: fake.gateway_connections == 0)  # the first client is gone
        async with running_bot(fake, offline_core, corpus_settings) as restarted:
            assert not restarted.recent  # it never answered, nor saw, that message
            reply = await click(fake, fake.message(int(final["id"])), f"sb:fb:down:{key}")
    assert reply["content"] == THANKS["down"] and reply["flags"] & FLAG_EPHEMERAL
    [row] = read_feedback(corpus_settings.data_dir)
    assert (row["frontend"], row["session_key"], row["vote"]) == ("discord", key, "down")


async def test_ask_puts_the_buttons_on_the_interaction_response(corpus_settings, offline_core) -> None:
    """`/ask` answers through the interaction's webhook; its final message gets the buttons too, keyed by the
    /ask conversation."""
    async with FakeDiscord() as fake:
        async with running_bot(fake, offline_core, corpus_settings) as frontend:
            interaction = await fake.slash_command("ask", {"question": "What does the Enterprise plan cost?"},
                                                   channel_id=fake.channel_id("general"))
            await fake.wait_for(lambda: len(frontend.recent) >= 1, timeout=20)
            [(key, outcome)] = list(frontend.recent)
            original = fake.original_response(interaction)
            assert original is not None and outcome.status == "done"
            reply = await click(fake, original, f"sb:fb:up:{key}")
    assert key.endswith(f":ask:{interaction['id']}")
    assert [b["custom_id"] for b in fake.buttons_of(original)] == [f"sb:fb:up:{key}", f"sb:fb:down:{key}",
                                                                   f"sb:ho:{key}"]
    assert reply["content"] == THANKS["up"]
    assert [r["session_key"] for r in read_feedback(corpus_settings.data_dir)] == [key]


class RaisingCore:
    """An orchestrator whose `respond` blows up: the answer ends in an error."""

    def respond(self, session_key: str, text: str, user: str | None = None) -> Any:
        raise RuntimeError("the database is on fire")


async def test_an_answer_that_ended_in_error_has_no_buttons(corpus_settings) -> None:
    """There is nothing to rate in an error line, so no write carries components."""
    async with FakeDiscord() as fake:
        async with running_bot(fake, RaisingCore(), corpus_settings) as frontend:
            await fake.user_message(fake.channel_id("general"), QUESTION)
            await fake.wait_for(lambda: len(frontend.recent) >= 1, timeout=20)
    [(_, outcome)] = list(frontend.recent)
    [thread] = fake.threads
    [message] = fake.messages_in(int(thread["id"]), from_bot=True)
    assert outcome.status == "error" and outcome.delivered and message["content"].startswith("⚠️")
    assert fake.buttons_of(message) == [] and component_writes(fake) == []

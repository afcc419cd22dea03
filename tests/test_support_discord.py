"""The support loop on Discord, end to end: the REAL discord.py client (the bot) against the loopback fake Discord,
the real offline orchestrator and the real support store.

- "Talk to a person" rides on the final message with 👍/👎;
- a click posts one staff message in DISCORD_HANDOFF_CHANNEL that pings only the staff role (the question's
  `@everyone`, a user and another role stay text: `mention_roles`, `mentions` and `mention_everyone` as Discord
  computes them from `allowed_mentions`), with the question, the answer, the agent, the confidence and the
  thread's jump URL; the thread is told a person was asked;
- the bot is silent in the handed-off thread; the staff buttons refuse a user without the staff role
  (ephemeral) and work after a restart of the bot; "Take it" names who took it and "Hand back" lets the bot
  answer again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from bots.discord.bot import DiscordFrontend
from bots.discord.handoff import NOT_STAFF
from bots.support.desk import ASKED_HERE, RETURNED_NOTICE, desk_for
from core.orchestrator import build_orchestrator
from tests.conftest import make_settings
from tests.fakes.discord import FLAG_EPHEMERAL, FakeDiscord, Json

UNANSWERABLE = "What's the capital of Australia?"


@contextlib.asynccontextmanager
async def running_bot(fake: FakeDiscord, settings: Any) -> AsyncIterator[DiscordFrontend]:
    """The Discord front-end on its own orchestrator (the same data directory each time), stopped on exit."""
    core = await build_orchestrator(settings)
    frontend = DiscordFrontend(settings, core, guild_ready_timeout=0.05, ready_timeout_s=10)
    await frontend.start()
    try:
        yield frontend
    finally:
        await frontend.stop()
        await core.aclose()


async def settled(frontend: DiscordFrontend) -> None:
    await asyncio.wait_for(frontend.pipeline.inflight.idle(), 30)
    await desk_for(frontend.orchestrator).flush()


async def notes(frontend: DiscordFrontend, key: str) -> list[str]:
    return [e.text for e in await desk_for(frontend.orchestrator).store.events(session_key=key) if e.kind == "note"]


async def eventually(read: Any, expected: Any, timeout: float = 10.0) -> None:
    """Read the store until it holds `expected`: a message the bot keeps quiet about leaves nothing on Discord
    to wait for."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (found := await read()) != expected:
        assert asyncio.get_running_loop().time() < deadline, found
        await asyncio.sleep(0.02)


async def callback_of(fake: FakeDiscord, interaction: Json) -> Any:
    [response] = await fake.wait_for(lambda: fake.replies_to(interaction), timeout=5)
    return response


async def test_a_discord_handoff_pings_only_the_staff_role_and_staff_alone_can_act(corpus_settings) -> None:
    async with FakeDiscord(rate_limit=50, rate_window_s=1.0) as fake:  # pacing is not what this test is about
        staff_channel = fake.add_channel(fake.guild_id, "staff")
        oncall = fake.add_role("on-call")
        other_role = fake.add_role("everyone-ish")
        bob = fake.add_user("bob")
        fake.give_role(bob, oncall["id"])
        settings = make_settings(corpus_settings.data_dir, discord_token=fake.token, discord_guild_id=fake.guild_id,
                                 discord_edit_window_s=fake.limiter.window_s, discord_edits_per_window=50,
                                 discord_handoff_channel=int(staff_channel["id"]),
                                 discord_handoff_role=int(oncall["id"]))
        async with running_bot(fake, settings) as frontend:
            question = f"@everyone <@{bob['id']}> <@&{other_role['id']}> {UNANSWERABLE}"
            asked = await fake.user_message(fake.channel_id("general"), question)
            await fake.wait_for(lambda: len(frontend.recent) >= 1, timeout=20)
            [(key, _)] = list(frontend.recent)
            final = fake.messages_in(int(asked["id"]), from_bot=True)[-1]
            assert "I don't know the answer" in final["content"]
            assert [b["custom_id"] for b in fake.buttons_of(final)][-1] == f"sb:ho:{key}"

            # The button: one staff message, pinging the on-call role only.
            clicked = await fake.click_button(final, f"sb:ho:{key}")
            assert (await callback_of(fake, clicked)).type == 6  # acknowledged silently; the thread is told
            thread_id = int(final["channel_id"])
            await fake.wait_for(lambda: fake.messages_in(thread_id, from_bot=True)[-1]["content"] == ASKED_HERE)
            [staff] = fake.messages_in(int(staff_channel["id"]), from_bot=True)
            assert staff["mention_roles"] == [oncall["id"]] and staff["mentions"] == []
            assert not staff["mention_everyone"]
            assert UNANSWERABLE in staff["content"] and "I don't know the answer" in staff["content"]
            assert "Confidence:" in staff["content"] and f"Alice ({fake.default_user['id']})" in staff["content"]
            assert f"https://discord.com/channels/{fake.guild_id}/{thread_id}" in staff["content"]
            assert [b["custom_id"] for b in fake.buttons_of(staff)] == [
                f"sb:hs:take:{key}", f"sb:hs:back:{key}", f"sb:hs:resolve:{key}"]

            # Quiet in the thread.
            before = len(fake.messages_in(thread_id, from_bot=True))
            await fake.user_message(thread_id, "hello? anyone there?", mentions_bot=False)
            await eventually(lambda: notes(frontend, key), ["hello? anyone there?"])
            await settled(frontend)

        # After a restart: still quiet; a user without the role is refused; bob takes it, then hands it back.
        async with running_bot(fake, settings) as frontend:
            await fake.user_message(thread_id, "still there?", mentions_bot=False)
            await eventually(lambda: notes(frontend, key), ["hello? anyone there?", "still there?"])
            refused = await fake.click_button(staff, f"sb:hs:take:{key}")  # alice has no staff role
            reply = await callback_of(fake, refused)
            assert reply.type == 4 and reply.data["content"] == NOT_STAFF and reply.data["flags"] & FLAG_EPHEMERAL
            taken = await fake.click_button(fake.message(int(staff["id"])), f"sb:hs:take:{key}", user=bob)
            await callback_of(fake, taken)
            await fake.wait_for(lambda: "Taken by Bob" in fake.message(int(staff["id"]))["content"])
            await fake.wait_for(lambda: "Bob" in fake.messages_in(thread_id, from_bot=True)[-1]["content"])
            assert not fake.message(int(staff["id"]))["mention_everyone"]
            await settled(frontend)
            assert len(fake.messages_in(thread_id, from_bot=True)) == before + 1  # the "picked this up" notice only

            back = await fake.click_button(fake.message(int(staff["id"])), f"sb:hs:back:{key}", user=bob)
            await callback_of(fake, back)
            await fake.wait_for(
                lambda: fake.messages_in(thread_id, from_bot=True)[-1]["content"] == RETURNED_NOTICE)
            assert fake.buttons_of(fake.message(int(staff["id"]))) == []
            count = len(frontend.recent)
            await fake.user_message(thread_id, "What does the Enterprise plan cost?", mentions_bot=False)
            await fake.wait_for(lambda: len(frontend.recent) > count, timeout=20)
            assert "$1,200" in fake.messages_in(thread_id, from_bot=True)[-1]["content"]

"""Discord forum channels end to end (issue 20): the REAL discord.py client against the loopback fake Discord
(forum channels with tags, THREAD_CREATE then the post's first message, PATCH of `applied_tags`/`archived`) and
the real offline core (or the fake OpenAI server where an answer must be slow).
"""

from __future__ import annotations

import logging

import pytest

from bots.discord.forums import ONLY_AUTHOR, SOLVED
from core.orchestrator import build_orchestrator
from tests.fakes.discord import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI
from tests.test_discord import llm_core, running_bot

TAGS = ("Answered", "Solved", "Needs a person")
QUESTION = "How much does the Pro plan cost per month?"
EPHEMERAL = 1 << 6


@pytest.fixture
async def offline_core(corpus_settings):
    core = await build_orchestrator(corpus_settings)
    yield core
    await core.aclose()


def tag_names(fake: FakeDiscord, thread_id: int) -> set[str]:
    forum = fake.channels[int(fake.channels[thread_id]["parent_id"])]
    names = {t["id"]: t["name"] for t in forum["available_tags"]}
    return {names[t] for t in fake.channels[thread_id].get("applied_tags", [])}


def solved_button(message: dict) -> str:
    [custom_id] = [b["custom_id"] for b in FakeDiscord.buttons_of(message) if b.get("custom_id", "").startswith(
        "sb:solved:")]
    return custom_id


async def test_a_new_post_in_a_listed_forum_is_answered_in_its_thread_and_tagged(corpus_settings, offline_core) -> None:
    async with FakeDiscord() as fake:
        help_forum = int(fake.add_forum("help", tags=TAGS)["id"])
        ideas = int(fake.add_forum("ideas", tags=TAGS)["id"])
        async with running_bot(fake, offline_core, corpus_settings, discord_forum_channels=[help_forum]) as bot:
            ignored, _ = await fake.forum_post(ideas, "Pricing question", QUESTION)
            post, first = await fake.forum_post(help_forum, QUESTION, "We are a team of five.")
            post_id = int(post["id"])
            assert int(first["id"]) == post_id  # a post's first message has the post's id, as on Discord
            await fake.wait_for(lambda: "Answered" in tag_names(fake, post_id), timeout=20)

            [answer] = fake.messages_in(post_id, from_bot=True)
            assert "Billing" in answer["content"] and "$" in answer["content"]
            assert solved_button(answer) == f"sb:solved:{post_id}"
            assert bot.recent[-1][0] == f"discord:thread:{post_id}"
            assert fake.messages_in(int(ignored["id"]), from_bot=True) == []  # a forum not listed: left alone

            # a follow-up in the post, without a mention, is answered as in any bot thread
            await fake.user_message(post_id, "And the Enterprise plan?", mentions_bot=False)
            await fake.wait_for(lambda: len(bot.recent) >= 2, timeout=20)
            assert len(fake.messages_in(post_id, from_bot=True)) == 2
            assert bot.recent[-1][0] == f"discord:thread:{post_id}"
            assert fake.unhandled == []


async def test_solved_by_the_author_tags_and_closes_the_post_and_is_refused_to_others(
        corpus_settings, offline_core) -> None:
    async with FakeDiscord() as fake:
        forum = int(fake.add_forum("help", tags=TAGS)["id"])
        bob = fake.add_user("bob")
        fake.member_permissions[int(bob["id"])] = "0"  # a member without Manage Threads
        async with running_bot(fake, offline_core, corpus_settings, discord_forum_channels="all"):
            post, _ = await fake.forum_post(forum, QUESTION, "")
            post_id = int(post["id"])
            await fake.wait_for(lambda: "Answered" in tag_names(fake, post_id), timeout=20)
            [answer] = fake.messages_in(post_id, from_bot=True)

            refused = await fake.click_button(answer, solved_button(answer), user=bob)
            [reply] = await fake.wait_for(lambda: fake.replies_to(refused), timeout=10)
            assert reply.data["content"] == ONLY_AUTHOR and reply.data["flags"] & EPHEMERAL
            assert not fake.channels[post_id]["thread_metadata"]["archived"]

            solved = await fake.click_button(answer, solved_button(answer))  # alice, the post's author
            await fake.wait_for(lambda: fake.channels[post_id]["thread_metadata"]["archived"], timeout=10)
            assert tag_names(fake, post_id) == {"Solved"}
            [said] = fake.replies_to(solved)
            assert said.data["content"] == SOLVED and not said.data.get("flags", 0) & EPHEMERAL


async def test_without_manage_threads_the_answer_lands_and_the_log_names_the_permission_once(
        corpus_settings, offline_core, caplog) -> None:
    async with FakeDiscord() as fake:
        forum = int(fake.add_forum("help", tags=TAGS)["id"])
        fake.deny_manage_threads(forum)
        async with running_bot(fake, offline_core, corpus_settings, discord_forum_channels=[forum]) as bot:
            with caplog.at_level(logging.WARNING, logger="bots.discord.forums"):
                for _ in range(2):
                    post, _ = await fake.forum_post(forum, QUESTION, "")
                    await fake.wait_for(lambda: len(fake.messages_in(int(post["id"]), from_bot=True)) == 1, 20)
                await bot.pipeline.inflight.idle()
            assert all(o.delivered for _, o in bot.recent)
            assert tag_names(fake, int(post["id"])) == set()
            warnings = [r.getMessage() for r in caplog.records if r.name == "bots.discord.forums"]
            assert len(warnings) == 1 and "Manage Threads" in warnings[0] and str(forum) in warnings[0]


async def test_a_post_deleted_before_its_answer_lands_ends_quietly(corpus_settings, caplog) -> None:
    async with FakeDiscord() as fake, FakeOpenAI(ttft_s=0.3) as llm:
        forum = int(fake.add_forum("help", tags=TAGS)["id"])
        core = await llm_core(corpus_settings, llm)
        try:
            async with running_bot(fake, core, corpus_settings, discord_forum_channels=[forum]) as bot:
                post, _ = await fake.forum_post(forum, QUESTION, "")
                await fake.delete_post(int(post["id"]))  # the author deletes it while the model is still silent
                await fake.wait_for(lambda: len(bot.recent) >= 1, timeout=20)
                await bot.pipeline.inflight.idle()
                assert not bot.recent[-1][1].delivered
                assert int(post["id"]) not in fake.channels  # nothing recreated it; nothing waits on it
        finally:
            await core.aclose()
    assert not [r for r in caplog.records if r.exc_info and r.name.startswith("bots.")]


async def test_a_post_handed_to_a_person_is_tagged_needs_a_person(corpus_settings, offline_core) -> None:
    async with FakeDiscord() as fake:
        forum = int(fake.add_forum("help", tags=TAGS)["id"])
        staff = int(fake.add_channel(fake.guild_id, "staff")["id"])
        async with running_bot(fake, offline_core, corpus_settings, discord_forum_channels=[forum],
                               discord_handoff_channel=staff) as bot:
            post, _ = await fake.forum_post(forum, "Refund", "Can I talk to a human please?")
            post_id = int(post["id"])
            await fake.wait_for(lambda: "Needs a person" in tag_names(fake, post_id), timeout=20)
            await bot.pipeline.inflight.idle()
            assert tag_names(fake, post_id) == {"Needs a person"}
            assert fake.messages_in(staff, from_bot=True)  # the staff were told


async def test_the_talk_to_a_person_button_in_a_post_tags_it_needs_a_person(corpus_settings, offline_core) -> None:
    """The button's handoff does not pass through the post's answer (where a handoff in words is tagged): the
    click itself swaps "Answered" for "Needs a person"."""
    async with FakeDiscord() as fake:
        forum = int(fake.add_forum("help", tags=TAGS)["id"])
        staff = int(fake.add_channel(fake.guild_id, "staff")["id"])
        async with running_bot(fake, offline_core, corpus_settings, discord_forum_channels=[forum],
                               discord_handoff_channel=staff):
            post, _ = await fake.forum_post(forum, QUESTION, "")
            post_id = int(post["id"])
            await fake.wait_for(lambda: "Answered" in tag_names(fake, post_id), timeout=20)
            [answer] = fake.messages_in(post_id, from_bot=True)
            await fake.click_button(answer, f"sb:ho:discord:thread:{post_id}")
            await fake.wait_for(lambda: "Needs a person" in tag_names(fake, post_id), timeout=10)
            assert tag_names(fake, post_id) == {"Needs a person"}
            assert fake.messages_in(staff, from_bot=True)  # the staff were told

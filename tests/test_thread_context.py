"""Called into a thread (issue 17, part 1): the earlier messages become attributed context, never turns.

Core tests drive `Orchestrator.respond(extras=...)` against the fake OpenAI server and read the recorded request;
the Slack tests drive real slack-bolt against the fake Slack (`conversations.replies` with real pages, scopes).
"""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import AIMessage

from bots.slack.app import session_key
from bots.slack.thread_history import HistoryUnavailable, thread_so_far
from core.orchestrator import build_orchestrator
from core.thread_context import bounded, context_messages, is_context
from core.turn_input import PriorMessage, TurnInput
from tests.conftest import make_settings
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack import BOT_ID, BOT_USER_ID, CHANNEL, OTHER_USER_ID, TEAM_ID, FakeSlack
from tests.test_slack import ANSWER, FAST_UPDATES, Bots, answer_with, final_reply

THREAD = TurnInput(earlier=(
    PriorMessage("Bob", "Our nightly CSV export to S3 fails with error EXP-4421 since Tuesday."),
    PriorMessage("this assistant", "I posted the export status page earlier.", from_bot=True),
    PriorMessage("Carol", "Same here, on the Business plan; we pay with 4242 4242 4242 4242."),
), earlier_dropped=7)


def answer_requests(fake: FakeOpenAI) -> list[dict]:
    """The chat requests that answered (not routing, not summaries)."""
    return [r.body for r in fake.chat_requests if not r.body.get("tools")
            and "running summary" not in json.dumps(r.body["messages"][0])]


@pytest.fixture
async def fake():
    async with FakeOpenAI() as server:
        server.responder = answer_with(ANSWER)
        yield server


async def collect(orchestrator, key: str, text: str, extras: TurnInput | None = None) -> list:
    return [event async for event in orchestrator.respond(key, text, extras=extras)]


# --- core ---------------------------------------------------------------------------------------------------
def test_context_messages_are_attributed_user_role_context_with_the_dropped_note() -> None:
    messages = context_messages(THREAD)
    assert all(is_context(m) and not isinstance(m, AIMessage) for m in messages)
    texts = [str(m.content) for m in messages]
    assert "7 earlier messages were left out" in texts[0]
    assert "Bob wrote: Our nightly CSV export" in texts[1]
    assert "You (this assistant) wrote earlier" in texts[2] and messages[2].additional_kwargs["from_bot"]
    assert context_messages(TurnInput()) == []


def test_bounded_keeps_the_newest_within_count_and_tokens() -> None:
    earlier = [PriorMessage(f"u{i}", f"message number {i} " + "word " * 40) for i in range(30)]
    by_count = bounded(earlier, max_messages=5, max_tokens=100_000)
    assert [p.author for p in by_count.earlier] == ["u25", "u26", "u27", "u28", "u29"]
    assert by_count.earlier_dropped == 25
    by_tokens = bounded(earlier, max_messages=100, max_tokens=200)
    assert 0 < len(by_tokens.earlier) < 5 and by_tokens.earlier[-1].author == "u29"
    assert by_tokens.earlier_dropped == 30 - len(by_tokens.earlier)


async def test_the_model_reads_the_thread_as_attributed_context_and_it_is_no_turn(corpus_settings, fake) -> None:
    settings = make_settings(corpus_settings.data_dir, llm_provider="openai", openai_base_url=fake.base_url,
                             openai_api_key="sk-test", llm_timeout_s=5)
    orchestrator = await build_orchestrator(settings)
    try:
        key = "slack:T1:C1:9.0"
        await collect(orchestrator, key, "Why does the export keep failing?", THREAD)
        [request] = answer_requests(fake)
        roles = [m["role"] for m in request["messages"]]
        assert roles.count("assistant") == 0  # not even the bot's own earlier message is put in its mouth
        user_texts = [m["content"] for m in request["messages"] if m["role"] == "user"]
        assert any("Bob wrote:" in t and "EXP-4421" in t for t in user_texts)
        assert any("7 earlier messages were left out" in t for t in user_texts)
        assert "Why does the export keep failing?" in user_texts[-1]  # the question stays the last turn
        assert "4242 4242" not in json.dumps(request) and "[card]" in json.dumps(request)  # REDACT applies

        info = await orchestrator.session_info(key)
        assert info is not None and info.turns == 1
        [turn] = await orchestrator.transcript(key)
        assert turn.question == "Why does the export keep failing?" and turn.answer

        await collect(orchestrator, key, "And is there a workaround?")  # the context is remembered
        follow_up = json.dumps(answer_requests(fake)[-1]["messages"])
        assert "EXP-4421" in follow_up and "Bob wrote:" in follow_up
        assert (await orchestrator.session_info(key)).turns == 2
    finally:
        await orchestrator.aclose()


# --- Slack ----------------------------------------------------------------------------------------------------
@pytest.fixture
async def slack():
    async with FakeSlack(limits={"chat.update": FAST_UPDATES}) as server:
        yield server


@pytest.fixture
async def bots():
    started = Bots()
    yield started
    for bot in started:
        await bot.frontend.stop()
        await bot.orchestrator.aclose()


def seed_thread(slack: FakeSlack) -> str:
    """A thread Bob started, a reply from Alice, an earlier message of the bot: returns the parent's ts."""
    parent = slack.channel_message("Our nightly CSV export to S3 fails with error EXP-4421 since Tuesday.",
                                   user=OTHER_USER_ID)
    slack.thread_message(f"<@{OTHER_USER_ID}> same for us, <!here> anyone?", thread_ts=parent["ts"])
    slack.bot_message("Export status: degraded.", bot_id=BOT_ID, thread_ts=parent["ts"])
    return parent["ts"]


async def test_a_mention_in_someone_elses_thread_reads_it_first_once(corpus_settings, slack, fake, bots) -> None:
    bot = await bots.start(corpus_settings, slack, llm=fake)
    thread_ts = seed_thread(slack)
    mention = slack.app_mention("our API calls keep timing out too, how do we fix that?", thread_ts=thread_ts)
    await slack.send_event(mention)
    await final_reply(slack, bot, CHANNEL, thread_ts, count=2)  # the seeded bot message, then the reply

    [request] = answer_requests(fake)
    user_texts = [m["content"] for m in request["messages"] if m["role"] == "user"]
    assert any("bob wrote: Our nightly CSV export" in t and "EXP-4421" in t for t in user_texts)
    assert any("alice wrote: @bob same for us, @here anyone?" in t for t in user_texts)  # markup made plain
    assert any("You (this assistant) wrote earlier: Export status" in t for t in user_texts)
    assert not any(m["role"] == "assistant" for m in request["messages"])
    assert sum("keep timing out too" in t for t in user_texts) == 1  # the mention is the question only
    [call] = slack.calls_to("conversations.replies")
    assert call.params["latest"] == mention["ts"]

    await slack.send_event(slack.thread_message("thanks, and tomorrow?", thread_ts=thread_ts))
    await final_reply(slack, bot, CHANNEL, thread_ts, count=3)
    assert len(slack.calls_to("conversations.replies")) == 1  # remembered in the session, not fetched again
    turns = await bot.orchestrator.transcript(session_key(TEAM_ID, CHANNEL, thread_ts))
    assert turns[0].question == "our API calls keep timing out too, how do we fix that?"  # context is no turn
    assert not any("wrote:" in t.question or t.question.startswith("Context:") for t in turns)


async def test_a_missing_history_scope_is_said_once_and_the_question_still_answered(
        corpus_settings, slack, bots) -> None:
    bot = await bots.start(corpus_settings, slack)
    slack.missing_scopes = {"channels:history"}
    thread_ts = seed_thread(slack)
    await slack.send_event(slack.app_mention("How do I fix API timeouts?", thread_ts=thread_ts))
    replies = await final_reply(slack, bot, CHANNEL, thread_ts, count=2)
    final = slack.final_text(CHANNEL, replies[-1].ts)
    assert "couldn't read the earlier messages" in final and "channels:history" in final
    assert "timeout" in final.lower()  # answered anyway

    await slack.send_event(slack.app_mention("And webhook retries?", thread_ts=thread_ts))
    replies = await final_reply(slack, bot, CHANNEL, thread_ts, count=3)
    assert "couldn't read" not in slack.final_text(CHANNEL, replies[-1].ts)  # said once
    assert len(slack.calls_to("conversations.replies")) == 1


async def test_thread_so_far_follows_cursors_and_keeps_the_newest(slack) -> None:
    from slack_sdk.web.async_client import AsyncWebClient

    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    parent = slack.channel_message("message 0")
    for number in range(1, 30):
        slack.thread_message(f"message {number}", thread_ts=parent["ts"])
    mention = slack.app_mention("help?", thread_ts=parent["ts"])
    slack.thread_message("after the mention", thread_ts=parent["ts"])

    got = await thread_so_far(client, CHANNEL, parent["ts"], before_ts=mention["ts"], bot_user_id=BOT_USER_ID,
                              max_messages=10, page_size=7)
    assert [p.text for p in got.earlier] == [f"message {n}" for n in range(20, 30)]
    assert got.earlier_dropped == 20 and got.earlier[0].author == "alice"
    calls = slack.calls_to("conversations.replies")
    assert len(calls) == 5 and all(c.ok for c in calls) and calls[1].params.get("cursor")

    slack.missing_scopes = {"channels:history"}
    with pytest.raises(HistoryUnavailable) as refused:
        await thread_so_far(client, CHANNEL, parent["ts"])
    assert refused.value.needed == "channels:history"


# --- Discord --------------------------------------------------------------------------------------------------
async def discord_chain(fake, *, deny: bool = False):
    """Alice reports a problem, Bob replies to her, Carol replies to Bob mentioning the bot."""
    general = fake.channel_id("general")
    if deny:
        fake.deny_history(general)
    bob, carol = fake.add_user("bob"), fake.add_user("carol")
    first = await fake.user_message(general, "Our nightly CSV export fails with error EXP-4421 since Tuesday.",
                                    mentions_bot=False)
    second = await fake.user_message(general, "Same here, on the Business plan.", author=bob, mentions_bot=False,
                                     message_reference=int(first["id"]))
    return first, await fake.user_message(general, "our API calls keep timing out too, how do we fix that?",
                                          author=carol, message_reference=int(second["id"]), reply_ping=False)


async def test_a_discord_mention_in_a_reply_chain_or_someone_elses_thread_reads_it_first(
        corpus_settings, fake) -> None:
    from tests.test_discord import fast_discord, llm_core, replies, running_bot

    core = await llm_core(corpus_settings, fake)
    try:
        async with fast_discord() as discord_fake, running_bot(discord_fake, core, corpus_settings) as frontend:
            first, asked = await discord_chain(discord_fake)  # 1. a mention replying in a chain
            [(chain_key, chain_outcome)] = await replies(discord_fake, frontend, 1)
            chain_request = answer_requests(fake)[-1]
            fetched = [r.path for r in discord_fake.requests if r.method == "GET" and "/messages/" in r.path]

            thread = await discord_fake.user_thread(discord_fake.channel_id("general"), "exports",
                                                    author=int(first["author"]["id"]))  # 2. someone else's thread
            thread_id = int(thread["id"])
            for number in range(6):
                await discord_fake.user_message(thread_id, f"export attempt {number} failed with EXP-44{number}",
                                                author=int(first["author"]["id"]), mentions_bot=False)
            await discord_fake.user_message(thread_id, "our API calls keep timing out too, how do we fix that?")
            (_, _), (thread_key_, thread_outcome) = await replies(discord_fake, frontend, 2)
            listed = [r for r in discord_fake.requests if r.method == "GET" and r.path.endswith(
                f"/channels/{thread_id}/messages")]
        chain_info = await core.session_info(chain_key)
    finally:
        await core.aclose()
    user_texts = [m["content"] for m in chain_request["messages"] if m["role"] == "user"]
    assert any("Alice wrote: Our nightly CSV export" in t and "EXP-4421" in t for t in user_texts)
    assert any("Bob wrote: Same here" in t for t in user_texts)
    assert user_texts.index(next(t for t in user_texts if "Alice wrote" in t)) < \
        user_texts.index(next(t for t in user_texts if "Bob wrote" in t))  # oldest first
    assert any(path.endswith(f"/messages/{first['id']}") for path in fetched)  # the second hop was fetched
    assert chain_info is not None and chain_info.turns == 1 and chain_outcome.status == "done"

    assert thread_key_ == f"discord:thread:{thread_id}" and thread_outcome.status == "done" and len(listed) == 1
    text = json.dumps(answer_requests(fake)[-1]["messages"])
    assert all(f"Alice wrote: export attempt {n} failed" in text for n in range(6))
    assert text.index("attempt 0") < text.index("attempt 5") < text.index("keep timing out too")


async def test_a_discord_chain_without_history_permission_is_answered_and_says_why(corpus_settings) -> None:
    from tests.test_discord import fast_discord, replies, running_bot

    core = await build_orchestrator(corpus_settings)
    try:
        async with fast_discord() as discord_fake, running_bot(discord_fake, core, corpus_settings) as frontend:
            _, asked = await discord_chain(discord_fake, deny=True)
            [(_, outcome)] = await replies(discord_fake, frontend, 1)
    finally:
        await core.aclose()
    assert "Read Message History" in outcome.answer and "timeout" in outcome.answer.lower()

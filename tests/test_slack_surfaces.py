"""Slack's native surfaces end to end (issue 20): the assistant view, the Home tab and its modal, and the message
shortcut, with the real slack-bolt / slack_sdk against the loopback fake Slack and the real (offline) core.
"""

from __future__ import annotations

import asyncio

import pytest

from bots.slack.assistant import PROMPTS_TITLE
from bots.slack.home import ASK_BUTTON, QUESTION_BLOCK, QUESTION_INPUT
from bots.slack.shortcut import CALLBACK_ID
from knowledge.agents import load_agents
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack import CHANNEL, DM_CHANNEL, OTHER_CHANNEL, TEAM_DOMAIN, USER_ID, FakeSlack
from tests.test_slack import ANSWER, FAST_UPDATES, Bots, answer_with

BILLING_Q = "How much does the Pro plan cost per month?"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
async def slack():
    async with FakeSlack(limits={"chat.update": FAST_UPDATES}) as fake:
        yield fake


@pytest.fixture
async def bots():
    started = Bots()
    yield started
    for bot in started:
        await bot.frontend.stop()
        await bot.orchestrator.aclose()


def replies(slack: FakeSlack, channel: str, thread_ts: str) -> list:
    """The bot's replies in a thread (an assistant thread's root, posted by Slack as the app, left out)."""
    return [m for m in slack.bot_messages(channel, thread_ts) if m.ts != thread_ts]


async def landed(slack: FakeSlack, bot, channel: str, thread_ts: str, count: int) -> list:
    """The bot's replies in a thread once `count` are there and every answer in flight has finished."""
    await slack.wait_for(lambda: len(replies(slack, channel, thread_ts)) >= count, timeout=30)
    await asyncio.wait_for(bot.frontend.idle(), 30)
    return replies(slack, channel, thread_ts)


async def open_assistant_thread(slack: FakeSlack, bot, context_channel: str = CHANNEL) -> str:
    """A new assistant thread (viewing `context_channel`) once the bot has greeted it; its thread_ts."""
    event = slack.assistant_thread_started(context_channel=context_channel)
    thread_ts = event["assistant_thread"]["thread_ts"]
    await slack.send_event(event)
    await slack.wait_for(lambda: any(p["thread_ts"] == thread_ts for p in slack.suggested_prompts), timeout=10)
    return thread_ts


async def test_a_new_assistant_thread_gets_a_greeting_and_one_prompt_per_agent(corpus_settings, slack, bots) -> None:
    bot = await bots.start(corpus_settings, slack)
    thread_ts = await open_assistant_thread(slack, bot)

    greeting = replies(slack, DM_CHANNEL, thread_ts)[0]
    assert "billing" in greeting.text.lower() and "pick a suggestion" in greeting.text
    # the channel being viewed travels with the thread (bolt's thread context, in the greeting's metadata)
    assert greeting.metadata["event_payload"]["channel_id"] == CHANNEL
    agents = load_agents()
    [prompts] = slack.suggested_prompts
    assert prompts["title"] == PROMPTS_TITLE
    assert prompts["prompts"] == [{"title": spec.label, "message": spec.examples[0]} for spec in agents.values()]


async def test_a_question_sets_the_title_names_the_agent_at_work_and_is_answered_in_the_thread(
        corpus_settings, slack, bots) -> None:
    bot = await bots.start(corpus_settings, slack)
    thread_ts = await open_assistant_thread(slack, bot)
    await slack.send_event(slack.dm_message(BILLING_Q, thread_ts=thread_ts))
    greeting, answer = await landed(slack, bot, DM_CHANNEL, thread_ts, 2)

    assert [t["title"] for t in slack.titles] == [BILLING_Q]
    statuses = [s["status"] for s in slack.statuses if s["thread_ts"] == thread_ts]
    assert "is checking the docs on billing…" in statuses and statuses[-1] == ""  # cleared once answered
    assert "Billing" in answer.text and "$" in answer.text
    key, outcome = bot.frontend.pipeline.recent[-1]
    assert key == f"slack:T0TEAM0001:{DM_CHANNEL}:{thread_ts}" and outcome.agent == "billing"

    # a follow-up continues the thread's conversation; the title stays the first question's
    await slack.send_event(slack.dm_message("And the Enterprise plan?", thread_ts=thread_ts))
    await landed(slack, bot, DM_CHANNEL, thread_ts, 3)
    assert len(slack.titles) == 1


async def test_the_channel_being_viewed_limits_the_agents(corpus_settings, slack, bots, tmp_path) -> None:
    channels = tmp_path / "channels.yml"
    channels.write_text(f"channels:\n  - platform: slack\n    channel: {OTHER_CHANNEL}\n    agents: [policy]\n")
    bot = await bots.start(corpus_settings, slack, channels_file=channels)
    thread_ts = await open_assistant_thread(slack, bot, context_channel=CHANNEL)
    # the user switches to #random (policy questions only) with the thread open, then asks about billing
    await slack.send_event(slack.assistant_thread_context_changed(thread_ts, context_channel=OTHER_CHANNEL))
    await slack.wait_for(lambda: replies(slack, DM_CHANNEL, thread_ts)[0].metadata["event_payload"].get(
        "channel_id") == OTHER_CHANNEL, timeout=10)
    await slack.send_event(slack.dm_message(BILLING_Q, thread_ts=thread_ts))
    await landed(slack, bot, DM_CHANNEL, thread_ts, 2)
    assert bot.frontend.pipeline.recent[-1][1].agent == "policy"


async def test_a_plain_dm_thread_is_still_answered_as_before(corpus_settings, slack, bots) -> None:
    bot = await bots.start(corpus_settings, slack)
    first = slack.dm_message(BILLING_Q)
    await slack.send_event(first)
    await landed(slack, bot, DM_CHANNEL, first["ts"], 1)
    await slack.send_event(slack.dm_message("And the Enterprise plan?", thread_ts=first["ts"]))
    await landed(slack, bot, DM_CHANNEL, first["ts"], 2)
    assert slack.titles == [] and slack.suggested_prompts == []


async def test_app_home_lists_the_agents_and_the_users_recent_conversations(corpus_settings, slack, bots) -> None:
    bot = await bots.start(corpus_settings, slack)
    mention = slack.app_mention(BILLING_Q)
    await slack.send_event(mention)
    await landed(slack, bot, CHANNEL, mention["ts"], 1)
    await bot.frontend.support.flush()  # the answered turn is in the support log

    await slack.send_event(slack.app_home_opened())
    view = await slack.wait_for(lambda: slack.home_views.get(USER_ID), timeout=10)
    texts = "\n".join(b["text"]["text"] for b in view["blocks"] if b.get("type") == "section")
    for spec in load_agents().values():
        assert f"*{spec.label}*" in texts
    assert "/ask" in texts and "Ask Switchboard about this" in texts
    link = f"https://{TEAM_DOMAIN}.slack.com/archives/{CHANNEL}/p{mention['ts'].replace('.', '')}"
    assert f"<{link}|{BILLING_Q}>" in texts
    buttons = [e for b in view["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert [b["action_id"] for b in buttons] == [ASK_BUTTON]


async def test_the_ask_button_opens_a_modal_whose_answer_arrives_in_a_dm_thread(corpus_settings, slack, bots) -> None:
    bot = await bots.start(corpus_settings, slack)
    await slack.send_block_action(ASK_BUTTON, "ask", channel=DM_CHANNEL, message_ts="0")
    modal = await slack.wait_for(lambda: slack.opened_views[-1] if slack.opened_views else None, timeout=10)

    empty = await slack.send_view_submission(modal, {QUESTION_BLOCK: {QUESTION_INPUT: {"value": " "}}})
    assert empty.payload["response_action"] == "errors"  # the modal stays open and says why
    await slack.send_view_submission(modal, {QUESTION_BLOCK: {QUESTION_INPUT: {"type": "plain_text_input",
                                                                               "value": BILLING_Q}}})
    asked = await slack.wait_for(lambda: [m for m in slack.bot_messages(DM_CHANNEL) if m.thread_ts is None],
                                 timeout=10)
    assert asked[0].text == f"You asked: {BILLING_Q}"
    [answer] = await landed(slack, bot, DM_CHANNEL, asked[0].ts, 1)
    assert "Billing" in answer.text and answer.thread_ts == asked[0].ts


async def test_the_message_shortcut_answers_in_that_messages_thread_about_its_text(corpus_settings, slack, bots) -> None:
    async with FakeOpenAI(tokens_per_s=500) as llm:
        llm.responder = answer_with(ANSWER)
        bot = await bots.start(corpus_settings, slack, llm=llm)
        text = "Our nightly import keeps timing out against your API, what should we change?"
        message = slack.channel_message(text)
        await slack.send_message_shortcut(CALLBACK_ID, channel=CHANNEL, message_ts=message["ts"])
        [answer] = await landed(slack, bot, CHANNEL, message["ts"], 1)

        assert answer.thread_ts == message["ts"] and "idempotency keys" in answer.text
        asked = [r.body for r in llm.chat_requests]
        assert any(text in str(body["messages"]) for body in asked)  # the message's text reached the model
        assert bot.frontend.pipeline.recent[-1][0] == f"slack:T0TEAM0001:{CHANNEL}:{message['ts']}"

"""The Slack front-end end to end: real slack-bolt and slack_sdk against the loopback fake Slack, real core.

Each test runs the whole path: a Socket Mode envelope (or a signed HTTP event) in, bolt's ack, the orchestrator
answering (offline, or from the fake OpenAI server), and the streaming renderer posting and editing messages
through the real `AsyncWebClient`; assertions read what the fake Slack holds, as a user would see it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re

import pytest
from aiohttp.test_utils import TestServer
from aiohttp import web
from pydantic import SecretStr

from bots.feedback import read_feedback
from bots.metrics import REGISTRY
from bots.slack.app import SlackFrontend, StartupError, session_key
from bots.slack.mrkdwn import to_mrkdwn
from bots.slack.surface import SlackLimits
from core.orchestrator import build_orchestrator
from core.retry import USER_MESSAGES, RetryPolicy
from tests.fakes.openai_server import FakeOpenAI, Fault, Reply, default_responder, requested_schema
from tests.fakes.slack import (BOT_ID, BOT_USER_ID, CHANNEL, DM_CHANNEL, OTHER_CHANNEL, TEAM_ID, USER_ID,
                               FakeSlack, RateLimit)

ANSWER = ("To fix API timeouts, raise the client timeout to 30 seconds and retry with exponential backoff. "
          "Use **idempotency keys** for POST requests so a retry never creates a duplicate. "
          "If timeouts persist, check the status page and contact support@lumenly.io with the request ID. "
          "Batch large imports instead of sending one huge request, since the API caps a body at 10 MB.")


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def answer_with(text: str):
    """A fake-LLM responder: routing calls get the default structured answer, answers get `text`."""
    def responder(body: dict) -> Reply:
        return default_responder(body) if requested_schema(body) or body.get("tools") else Reply(text=text)
    return responder


# Slack's real Tier-3 budget (50 updates a minute) would make every test wait; tests not about rate limits run
# against a faster fake workspace with a bot budget to match. The rate-limit tests use tight limits on purpose.
FAST_UPDATES = RateLimit(per_minute=1200, burst=20)


def fast_limits() -> SlackLimits:
    return SlackLimits(updates_per_window=20, window_s=1.0)


@pytest.fixture
async def slack():
    async with FakeSlack(limits={"chat.update": FAST_UPDATES}) as fake:
        yield fake


@pytest.fixture
async def llm():
    async with FakeOpenAI(tokens_per_s=200) as fake:
        fake.responder = answer_with(ANSWER)
        yield fake


class Bot:
    """A running Slack front-end and its orchestrator, for one test."""

    def __init__(self, frontend: SlackFrontend, orchestrator) -> None:
        self.frontend = frontend
        self.orchestrator = orchestrator


async def start_bot(settings, slack: FakeSlack, *, llm: FakeOpenAI | None = None, socket: bool = True,
                    retry_policy: RetryPolicy | None = None, limits: SlackLimits | None = None,
                    **overrides) -> Bot:
    updates = {"slack_bot_token": SecretStr(slack.bot_token), "slack_api_url": slack.api_url,
               "slack_edit_interval_s": 0.1, **overrides}
    if socket:
        updates["slack_app_token"] = SecretStr(slack.app_token)
    if llm is not None:
        updates.update(llm_provider="openai", openai_base_url=llm.base_url, openai_api_key=SecretStr("sk-test"))
    settings = settings.model_copy(update=updates)
    orchestrator = await build_orchestrator(settings, retry_policy=retry_policy)
    frontend = SlackFrontend(settings, orchestrator, limits=limits or fast_limits())
    await frontend.start()
    if socket:
        await slack.wait_for_connection()
    return Bot(frontend, orchestrator)


class Bots(list):
    """The bots a test started; each is stopped and its orchestrator closed when the test ends."""

    async def start(self, *args, **kwargs) -> Bot:
        bot = await start_bot(*args, **kwargs)
        self.append(bot)
        return bot


@pytest.fixture
async def bots():
    started = Bots()
    yield started
    for bot in started:
        await bot.frontend.stop()
        await bot.orchestrator.aclose()


@contextlib.asynccontextmanager
async def events_endpoint(bot: Bot):
    """The bot's HTTP Events API endpoint served on loopback; yields its URL."""
    app = web.Application()
    app.add_routes(bot.frontend.http_routes())
    server = TestServer(app)
    await server.start_server()
    try:
        yield str(server.make_url("/slack/events"))
    finally:
        await server.close()


async def final_reply(slack: FakeSlack, bot: Bot, channel: str, thread_ts: str, count: int = 1):
    """The bot's replies in a thread once every answer in flight has landed."""
    await slack.wait_for(lambda: len(slack.bot_messages(channel, thread_ts)) >= count, timeout=30)
    await asyncio.wait_for(bot.frontend.idle(), 30)
    return slack.bot_messages(channel, thread_ts)


async def test_a_mention_streams_a_threaded_reply_that_ends_as_the_full_tagged_answer(
        corpus_settings, slack, llm, bots) -> None:
    bot = await bots.start(corpus_settings, slack, llm=llm)
    replies_before = metric("switchboard_replies_total", frontend="slack", agent="technical")
    first_tokens_before = metric("switchboard_first_token_seconds_count", frontend="slack")
    event = slack.app_mention("My API integration keeps timing out. How do I fix this?")
    await slack.send_event(event)
    [reply] = await final_reply(slack, bot, CHANNEL, event["ts"])

    assert metric("switchboard_replies_total", frontend="slack", agent="technical") == replies_before + 1
    assert metric("switchboard_first_token_seconds_count", frontend="slack") == first_tokens_before + 1
    assert reply.thread_ts == event["ts"]  # in a thread under the question
    assert reply.versions[0].text == "_Thinking…_"  # the placeholder came first
    assert len(slack.updates_for(CHANNEL, reply.ts)) >= 3
    assert any("▌" in v.text for v in reply.versions)  # in-progress marker while streaming
    final = slack.final_text(CHANNEL, reply.ts)
    assert final.startswith("*Technical*\n")
    assert to_mrkdwn(ANSWER) in final and "▌" not in final and "Thinking" not in final
    blocks = {b["type"]: b for b in reply.blocks}
    assert "Technical" in blocks["context"]["elements"][0]["text"]
    assert "Sources:" in blocks["context"]["elements"][0]["text"]
    buttons = blocks["actions"]["elements"]
    assert [b["action_id"] for b in buttons] == ["feedback_up", "feedback_down", "handoff_request"]
    assert buttons[0]["value"] == session_key(TEAM_ID, CHANNEL, event["ts"])
    assert slack.rate_limited_count == 0


async def test_a_follow_up_in_the_thread_is_answered_without_a_mention_and_remembers(
        corpus_settings, slack, llm, bots) -> None:
    bot = await bots.start(corpus_settings, slack, llm=llm)
    first = slack.app_mention("My API integration keeps timing out. How do I fix this?")
    await slack.send_event(first)
    await final_reply(slack, bot, CHANNEL, first["ts"])

    follow_up = slack.thread_message("And what about webhooks retries?", thread_ts=first["ts"])
    await slack.send_event(follow_up)
    replies = await final_reply(slack, bot, CHANNEL, first["ts"], count=2)

    assert len(replies) == 2
    info = await bot.orchestrator.session_info(session_key(TEAM_ID, CHANNEL, first["ts"]))
    assert info is not None and info.turns == 2
    prompt = json.dumps(llm.chat_requests[-1].body["messages"])
    assert "keeps timing out" in prompt  # the first question is in the second turn's prompt


async def test_a_mention_makes_a_thread_the_bot_had_left_alone_its_own(corpus_settings, slack, bots) -> None:
    bot = await bots.start(corpus_settings, slack)
    top = slack.channel_message("how do refunds work here?")
    await slack.send_event(slack.thread_message("no idea", thread_ts=top["ts"]))  # looked up: not ours
    await slack.send_event(slack.app_mention("What is the refund policy?", thread_ts=top["ts"]))
    await final_reply(slack, bot, CHANNEL, top["ts"])
    await slack.send_event(slack.thread_message("and for annual plans?", thread_ts=top["ts"]))
    await final_reply(slack, bot, CHANNEL, top["ts"], count=2)  # the follow-up needs no mention now
    assert len(slack.bot_messages(CHANNEL, top["ts"])) == 2


async def test_a_thread_the_bot_never_answered_is_left_alone(corpus_settings, slack, bots) -> None:
    bot = await bots.start(corpus_settings, slack)
    top = slack.channel_message("team lunch at noon?")
    await slack.send_event(top)
    await slack.send_event(slack.thread_message("sure!", thread_ts=top["ts"]))
    await bot.frontend.idle()
    assert slack.bot_messages(CHANNEL) == []


async def test_ask_posts_the_question_visibly_and_answers_in_its_thread(corpus_settings, slack, bots) -> None:
    bot = await bots.start(corpus_settings, slack)
    envelope = await slack.send_slash_command("What does the Enterprise plan cost?")
    assert slack.acks[envelope].payload in (None, {})  # acknowledged at once, nothing ephemeral

    await slack.wait_for(lambda: slack.bot_messages(CHANNEL))
    question = slack.bot_messages(CHANNEL)[0]
    assert question.text == f"<@{USER_ID}> asked: What does the Enterprise plan cost?"
    replies = await final_reply(slack, bot, CHANNEL, question.ts, count=2)
    answer = replies[-1]
    assert answer.thread_ts == question.ts
    assert answer.text.startswith("*Billing*") and "Enterprise" in answer.text


@pytest.mark.parametrize("text", ["", "help"])
async def test_ask_alone_or_help_explains_usage_to_the_asker_only(corpus_settings, slack, bots, text) -> None:
    bot = await bots.start(corpus_settings, slack)
    envelope = await slack.send_slash_command(text)
    payload = slack.acks[envelope].payload
    assert payload["response_type"] == "ephemeral" and "/ask What does" in payload["text"]
    await bot.frontend.idle()
    assert slack.bot_messages(CHANNEL) == []


async def test_a_direct_message_starts_its_own_thread_and_replies_continue_it(corpus_settings, slack, bots) -> None:
    bot = await bots.start(corpus_settings, slack)
    dm = slack.dm_message("Do you comply with GDPR?")
    await slack.send_event(dm)
    [reply] = await final_reply(slack, bot, DM_CHANNEL, dm["ts"])
    assert reply.thread_ts == dm["ts"] and reply.text.startswith("*Policy*")

    await slack.send_event(slack.dm_message("Where is my data stored?", thread_ts=dm["ts"]))
    await final_reply(slack, bot, DM_CHANNEL, dm["ts"], count=2)
    info = await bot.orchestrator.session_info(session_key(TEAM_ID, DM_CHANNEL, dm["ts"]))
    assert info.turns == 2


async def test_a_redelivered_event_and_the_message_twin_of_a_mention_get_one_reply(
        corpus_settings, slack, bots) -> None:
    bot = await bots.start(corpus_settings, slack)
    first = slack.app_mention("What does the Enterprise plan cost?")
    await slack.send_event(first)
    await slack.send_event(first, retry_num=1, retry_reason="timeout")  # same event_id, redelivered
    await final_reply(slack, bot, CHANNEL, first["ts"])
    # A mention inside the thread arrives twice: as app_mention and as a plain message event.
    mention = slack.app_mention("and the Pro plan?", thread_ts=first["ts"])
    twin = {**mention, "type": "message", "channel_type": "channel"}
    await slack.send_event(twin)
    await slack.send_event(mention)
    await final_reply(slack, bot, CHANNEL, first["ts"], count=2)
    assert len(slack.bot_messages(CHANNEL, first["ts"])) == 2
    assert len(slack.calls_to("chat.postMessage")) == 2


async def test_bots_its_own_messages_and_edits_are_ignored(corpus_settings, slack, bots) -> None:
    bot = await bots.start(corpus_settings, slack)
    first = slack.app_mention("What does the Enterprise plan cost?")
    await slack.send_event(first)
    await final_reply(slack, bot, CHANNEL, first["ts"])
    posts = len(slack.calls_to("chat.postMessage"))

    await slack.send_event(slack.bot_message("How much is Pro?", thread_ts=first["ts"]))
    await slack.send_event(slack.bot_message("I am the bot", bot_id=BOT_ID, thread_ts=first["ts"]))
    await slack.send_event(slack.message_changed(CHANNEL, first["ts"], f"<@{BOT_USER_ID}> edited question"))
    await slack.send_event(slack.dm_message("hi", user=BOT_USER_ID))
    await bot.frontend.idle()
    assert len(slack.calls_to("chat.postMessage")) == posts


async def test_a_429_mid_stream_still_lands_the_final_text(corpus_settings, slack, llm, bots) -> None:
    bot = await bots.start(corpus_settings, slack, llm=llm)
    slack.min_retry_after_s = 1
    slack.fail_next("chat.update", "ratelimited", retry_after=1)
    event = slack.app_mention("My API integration keeps timing out. How do I fix this?")
    await slack.send_event(event)
    [reply] = await final_reply(slack, bot, CHANNEL, event["ts"])
    assert slack.rate_limited_count == 1
    assert bot.frontend.outcomes[-1].rate_limited == 1 and bot.frontend.outcomes[-1].delivered
    assert to_mrkdwn(ANSWER) in slack.final_text(CHANNEL, reply.ts)


async def test_concurrent_answers_share_the_workspace_update_budget_without_429s(corpus_settings, llm, bots) -> None:
    """Five threads at once against a workspace allowing 5 quick updates and then 2 a second: no 429 at all."""
    llm.tokens_per_s = 100
    async with FakeSlack(limits={"chat.update": RateLimit(per_minute=120, burst=5)}) as slack:
        bot = await bots.start(corpus_settings, slack, llm=llm, limits=SlackLimits(updates_per_window=5, window_s=2.5))
        events = [slack.app_mention("My API integration keeps timing out. How do I fix this?",
                                    channel=CHANNEL if i % 2 else OTHER_CHANNEL) for i in range(5)]
        await asyncio.gather(*(slack.send_event(e) for e in events))
        await slack.wait_for(lambda: all(slack.bot_messages(e["channel"], e["ts"]) for e in events), timeout=30)
        await asyncio.wait_for(bot.frontend.idle(), 60)
        assert slack.rate_limited_count == 0
        assert len(slack.calls_to("chat.update", ok=True)) >= 10
        for e in events:
            [reply] = slack.bot_messages(e["channel"], e["ts"])
            assert to_mrkdwn(ANSWER) in reply.text and "▌" not in reply.text
        await bot.frontend.stop()


async def test_a_long_answer_continues_in_new_messages_without_breaking_code(
        corpus_settings, slack, llm, bots) -> None:
    code = "```python\n" + "\n".join(f"client.request(timeout=30)  # attempt {i}" for i in range(120)) + "\n```"
    long_answer = ("Here is a retry loop. " * 40) + "\n\n" + code + "\n\n" + ("Retry with backoff. " * 60)
    llm.responder = answer_with(long_answer)
    llm.tokens_per_s = None
    bot = await bots.start(corpus_settings, slack, llm=llm)
    event = slack.app_mention("My API integration keeps timing out. How do I fix this?")
    await slack.send_event(event)
    await slack.wait_for(lambda: len(slack.bot_messages(CHANNEL, event["ts"])) >= 2, timeout=30)
    replies = await final_reply(slack, bot, CHANNEL, event["ts"], count=2)

    assert len(replies) >= 2
    texts = [slack.final_text(CHANNEL, r.ts) for r in replies]
    assert all(len(t) <= 3900 for t in texts)
    assert all(t.count("```") % 2 == 0 for t in texts)  # every part closes what it opens
    assert texts[0].startswith("*Technical*") and "_(continued below)_" in texts[0]
    joined = "".join(re.sub(r"```\n?", "", t) for t in texts)
    assert joined.count("client.request(timeout=30)") == 120
    assert not any(c.error for c in slack.calls if c.method in ("chat.update", "chat.postMessage"))


async def test_a_core_failure_ends_the_message_with_a_readable_error(corpus_settings, slack, llm, bots) -> None:
    llm.responder = answer_with(ANSWER)
    for _ in range(5):
        llm.faults.append(Fault(status=500))
    bot = await bots.start(corpus_settings, slack, llm=llm, retry_policy=RetryPolicy(max_retries=1, base_delay_s=0.01))
    event = slack.app_mention("My API integration keeps timing out. How do I fix this?")
    await slack.send_event(event)
    [reply] = await final_reply(slack, bot, CHANNEL, event["ts"])
    final = slack.final_text(CHANNEL, reply.ts)
    assert USER_MESSAGES["llm_unavailable"] in final and final.count("⚠️") == 1
    assert "Thinking" not in final and "▌" not in final and "Traceback" not in final


@pytest.mark.parametrize("text", ["   ", "help"])
async def test_a_bare_mention_or_help_explains_what_the_bot_does(corpus_settings, slack, bots, text) -> None:
    bot = await bots.start(corpus_settings, slack)
    event = slack.app_mention(text)
    await slack.send_event(event)
    [reply] = await final_reply(slack, bot, CHANNEL, event["ts"])
    assert "/ask What does the Enterprise plan cost?" in reply.text
    assert await bot.orchestrator.session_info(session_key(TEAM_ID, CHANNEL, event["ts"])) is None


async def test_a_huge_message_gets_a_clear_message_and_loses_nothing(corpus_settings, slack, bots) -> None:
    bot = await bots.start(corpus_settings, slack, max_message_chars=200)
    event = slack.app_mention("Why does my export fail? " + "details " * 60)
    await slack.send_event(event)
    [reply] = await final_reply(slack, bot, CHANNEL, event["ts"])
    assert "the limit is 200" in reply.text and "Please shorten it" in reply.text
    assert slack.message(CHANNEL, event["ts"]) is not None  # the user's message stays as it was


async def test_reset_starts_the_thread_over(corpus_settings, slack, bots) -> None:
    bot = await bots.start(corpus_settings, slack)
    first = slack.app_mention("What does the Enterprise plan cost?")
    await slack.send_event(first)
    await final_reply(slack, bot, CHANNEL, first["ts"])
    key = session_key(TEAM_ID, CHANNEL, first["ts"])
    assert await bot.orchestrator.session_info(key) is not None

    await slack.send_event(slack.app_mention("reset", thread_ts=first["ts"]))
    replies = await final_reply(slack, bot, CHANNEL, first["ts"], count=2)
    assert "Starting over" in replies[-1].text
    assert await bot.orchestrator.session_info(key) is None


async def test_the_model_cannot_ping_the_channel(corpus_settings, slack, llm, bots) -> None:
    llm.responder = answer_with("Hello <!channel> and <!here|here>, <@U0USER0002> and @everyone: timeouts are 30 s.")
    bot = await bots.start(corpus_settings, slack, llm=llm)
    event = slack.app_mention("My API integration keeps timing out. How do I fix this?")
    await slack.send_event(event)
    [reply] = await final_reply(slack, bot, CHANNEL, event["ts"])
    texts = [v.text for v in reply.versions] + [json.dumps(reply.blocks)]
    for text in texts:
        assert "<!channel>" not in text and "<!here" not in text and "<@U0USER0002>" not in text
        assert "@everyone" not in text
    assert "&lt;!channel&gt;" in reply.text  # shown, harmlessly, as text


async def test_feedback_clicks_are_recorded_with_the_session_key(corpus_settings, slack, bots) -> None:
    bot = await bots.start(corpus_settings, slack)
    event = slack.app_mention("What does the Enterprise plan cost?")
    await slack.send_event(event)
    [reply] = await final_reply(slack, bot, CHANNEL, event["ts"])
    key = session_key(TEAM_ID, CHANNEL, event["ts"])
    await slack.send_block_action("feedback_down", key, message_ts=reply.ts, block_id="feedback")
    await slack.wait_for(lambda: slack.responses)

    [row] = read_feedback(corpus_settings.data_dir)
    assert row["session_key"] == key and row["vote"] == "down" and row["user"] == USER_ID
    assert row["message"] == reply.ts and row["frontend"] == "slack"
    assert slack.responses[-1].body["response_type"] == "ephemeral"


async def test_native_streaming_shows_the_agent_status_and_streams_the_answer(
        corpus_settings, slack, llm, bots) -> None:
    bot = await bots.start(corpus_settings, slack, llm=llm, slack_streaming="native")
    event = slack.app_mention("My API integration keeps timing out. How do I fix this?")
    await slack.send_event(event)
    [reply] = await final_reply(slack, bot, CHANNEL, event["ts"])
    await slack.wait_for(lambda: slack.calls_to("chat.stopStream", ok=True))
    assert [s["status"] for s in slack.statuses][:2] == ["Thinking…", "Technical is looking into it…"]
    assert slack.calls_to("chat.startStream", ok=True) and slack.calls_to("chat.appendStream", ok=True)
    final = slack.final_text(CHANNEL, reply.ts)
    assert final.startswith("**Technical**") and ANSWER in final
    assert any(b["type"] == "actions" for b in reply.blocks)


async def test_native_streaming_falls_back_to_edits_when_the_workspace_refuses(corpus_settings, bots, llm) -> None:
    async with FakeSlack(streaming_enabled=False) as slack:
        bot = await bots.start(corpus_settings, slack, llm=llm, slack_streaming="native")
        event = slack.app_mention("My API integration keeps timing out. How do I fix this?")
        await slack.send_event(event)
        [reply] = await final_reply(slack, bot, CHANNEL, event["ts"])
        assert slack.calls_to("chat.startStream", ok=False)
        final = slack.final_text(CHANNEL, reply.ts)
        assert final.startswith("*Technical*") and to_mrkdwn(ANSWER) in final
        await bot.frontend.stop()


async def test_http_mode_verifies_signatures(corpus_settings, slack, bots) -> None:
    secret = "test-signing-secret"
    bot = await bots.start(corpus_settings, slack, socket=False, slack_signing_secret=SecretStr(secret))
    async with events_endpoint(bot) as url:
        event = slack.app_mention("What does the Enterprise plan cost?")
        status, _ = await slack.deliver_http(url, event, "wrong-secret")
        assert status == 401
        await bot.frontend.idle()
        assert slack.bot_messages(CHANNEL) == []

        status, _ = await slack.deliver_http(url, event, secret)
        assert status == 200
        [reply] = await final_reply(slack, bot, CHANNEL, event["ts"])
        assert reply.text.startswith("*Billing*")
        status, _ = await slack.deliver_http(url, event, secret, retry_num=1, retry_reason="http_timeout")
        assert status == 200
        await bot.frontend.idle()
        assert len(slack.bot_messages(CHANNEL, event["ts"])) == 1


async def test_http_mode_refuses_unsigned_and_malformed_requests_before_parsing(corpus_settings, slack, bots,
                                                                                 caplog) -> None:
    """401 JSON for anything Slack did not sign, including a non-numeric timestamp (which made bolt's own check
    raise: a 500 and a traceback per request, a way to flood the log); nothing reaches the pipeline."""
    import aiohttp

    secret = "test-signing-secret"
    bot = await bots.start(corpus_settings, slack, socket=False, slack_signing_secret=SecretStr(secret))
    body = json.dumps(slack.app_mention("What does the Enterprise plan cost?")).encode()
    cases = [
        {},  # no signature at all
        {"X-Slack-Request-Timestamp": "not-a-number", "X-Slack-Signature": "v0=abc"},
        {"X-Slack-Request-Timestamp": "1", "X-Slack-Signature": "v0=abc"},  # stale
    ]
    async with events_endpoint(bot) as url, aiohttp.ClientSession() as http:
        for headers in cases:
            async with http.post(url, data=body, headers={"Content-Type": "application/json", **headers}) as resp:
                assert resp.status == 401, headers
                assert "not signed by Slack" in (await resp.json())["error"]
        async with http.post(url, data=b"\xff\xfe", headers={"X-Slack-Request-Timestamp": "1",
                                                              "X-Slack-Signature": "v0=abc"}) as resp:
            assert resp.status == 401
    await bot.frontend.idle()
    assert slack.bot_messages(CHANNEL) == []
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.levelno >= 40]


async def test_a_refused_bot_token_stops_start_up_with_a_fix(corpus_settings, slack) -> None:
    settings = corpus_settings.model_copy(update={"slack_bot_token": SecretStr("xoxb-not-the-right-one"),
                                                  "slack_api_url": slack.api_url})
    orchestrator = await build_orchestrator(settings)
    try:
        with pytest.raises(StartupError, match="invalid_auth.*OAuth & Permissions"):
            await SlackFrontend(settings, orchestrator).start()
    finally:
        await orchestrator.aclose()


async def test_stop_marks_a_reply_in_flight_as_interrupted(corpus_settings, slack, llm, bots) -> None:
    llm.tokens_per_s = 10
    bot = await start_bot(corpus_settings, slack, llm=llm, drain_timeout_s=0)  # no grace: cut at once
    event = slack.app_mention("My API integration keeps timing out. How do I fix this?")
    await slack.send_event(event)
    await slack.wait_for(lambda: any("▌" in m.text for m in slack.bot_messages(CHANNEL, event["ts"])), timeout=30)
    await bot.frontend.stop()
    await bot.orchestrator.aclose()
    [reply] = slack.bot_messages(CHANNEL, event["ts"])
    assert USER_MESSAGES["interrupted"] in reply.text and "▌" not in reply.text


async def test_an_archived_channel_stops_the_reply_without_minutes_of_retries(corpus_settings, slack, llm, bots) -> None:
    bot = await bots.start(corpus_settings, slack, llm=llm)
    slack.fail_next("chat.update", "is_archived", times=100)
    event = slack.app_mention("My API integration keeps timing out. How do I fix this?")
    await slack.send_event(event)
    await slack.wait_for(lambda: slack.bot_messages(CHANNEL, event["ts"]))
    await asyncio.wait_for(bot.frontend.idle(), 5)  # no back-off: a second failed update ends it
    assert len(slack.calls_to("chat.update")) == 1
    assert bot.frontend.outcomes[-1].delivered is False


async def test_http_mode_serves_slash_commands_and_button_clicks_on_the_same_endpoint(
        corpus_settings, slack, bots) -> None:
    from urllib.parse import urlencode

    import aiohttp

    from tests.fakes.slack import sign_request

    secret = "test-signing-secret"
    bot = await bots.start(corpus_settings, slack, socket=False, slack_signing_secret=SecretStr(secret))
    async with events_endpoint(bot) as url, aiohttp.ClientSession() as session:

        async def post_form(fields: dict) -> tuple[int, str]:
            body = urlencode(fields).encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded", **sign_request(body, secret)}
            async with session.post(url, data=body, headers=headers) as response:
                return response.status, await response.text()

        command = {"command": "/ask", "text": "help", "user_id": USER_ID, "channel_id": CHANNEL,
                   "team_id": TEAM_ID, "response_url": slack.response_url(), "trigger_id": "1.2.3"}
        status, body = await post_form(command)
        assert status == 200 and json.loads(body)["response_type"] == "ephemeral" and "/ask" in body

        status, _ = await post_form({**command, "text": "What does the Enterprise plan cost?"})
        assert status == 200  # acknowledged at once; the answer follows in a thread
        await slack.wait_for(lambda: slack.bot_messages(CHANNEL))
        question = slack.bot_messages(CHANNEL)[0]
        [_, answer] = await final_reply(slack, bot, CHANNEL, question.ts, count=2)
        assert answer.text.startswith("*Billing*")

        click = {"type": "block_actions", "user": {"id": USER_ID}, "team": {"id": TEAM_ID},
                 "container": {"type": "message", "message_ts": answer.ts, "channel_id": CHANNEL},
                 "channel": {"id": CHANNEL}, "response_url": slack.response_url(), "trigger_id": "1.2.3",
                 "actions": [{"action_id": "feedback_up", "block_id": "feedback", "type": "button",
                              "value": session_key(TEAM_ID, CHANNEL, question.ts)}]}
        status, _ = await post_form({"payload": json.dumps(click)})
        assert status == 200
        await slack.wait_for(lambda: read_feedback(corpus_settings.data_dir))
        assert read_feedback(corpus_settings.data_dir)[0]["vote"] == "up"


async def test_answers_keep_coming_after_slack_asks_the_socket_to_reconnect(corpus_settings, slack, bots) -> None:
    bot = await bots.start(corpus_settings, slack)
    opened = slack.connections_opened
    await slack.request_reconnect()  # Slack's `disconnect` message: the SDK opens a new connection by itself
    await slack.wait_for(lambda: slack.connections_opened > opened, timeout=15)
    await slack.wait_for_connection()
    event = slack.app_mention("Do you comply with GDPR?")
    await slack.send_event(event, timeout=15)
    [reply] = await final_reply(slack, bot, CHANNEL, event["ts"])
    assert reply.text.startswith("*Policy*")


async def test_native_streaming_shows_text_during_a_pause_of_the_model(slack) -> None:
    from slack_sdk.web.async_client import AsyncWebClient

    from bots.slack.native import NativeStreamReply
    from bots.slack.surface import SlackThreadSurface
    from core.events import Agent, Complete, Start, Token

    question = slack.app_mention("timeouts?")
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    surface = SlackThreadSurface(client, CHANNEL, question["ts"], "k", edit_budget=fast_limits().updates)

    async def events():
        yield Start("k")
        yield Agent("technical", "Technical")
        yield Token("Hello ")
        yield Token("world, ")
        await asyncio.sleep(1.0)  # the model pauses
        yield Token("again.")
        yield Complete(agent="technical", duration_ms=1.0, text="Hello world, again.")

    outcome = await NativeStreamReply(client, surface, team=TEAM_ID, user=USER_ID, interval_s=0.1).run(events())
    [message] = slack.bot_messages(CHANNEL, question["ts"])
    during_pause = [v.text for v in message.versions if "world" in v.text and "again" not in v.text]
    assert during_pause, [v.text for v in message.versions]  # shown by the ticker while the model was silent
    assert message.text == "**Technical**\n\nHello world, again." and outcome.delivered


async def test_stop_lets_a_reply_in_flight_finish_within_the_drain_timeout(corpus_settings, slack, llm, bots) -> None:
    """A rolling deploy: the replica stops taking events, the answer it is writing still lands whole."""
    llm.tokens_per_s = 40
    bot = await start_bot(corpus_settings, slack, llm=llm, drain_timeout_s=30)
    event = slack.app_mention("My API integration keeps timing out. How do I fix this?")
    await slack.send_event(event)
    await slack.wait_for(lambda: any("▌" in m.text for m in slack.bot_messages(CHANNEL, event["ts"])), timeout=30)
    await bot.frontend.stop()
    await bot.orchestrator.aclose()
    [reply] = slack.bot_messages(CHANNEL, event["ts"])
    assert to_mrkdwn(ANSWER) in reply.text and "▌" not in reply.text
    assert USER_MESSAGES["interrupted"] not in reply.text

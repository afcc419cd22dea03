"""The Slack fake is faithful: the real slack_sdk clients and a real bolt app drive it over loopback."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack import (
    BOT_ID,
    BOT_USER_ID,
    CHANNEL,
    DM_CHANNEL,
    OTHER_CHANNEL,
    TEAM_ID,
    USER_ID,
    AckTimeout,
    FakeSlack,
    RateLimit,
    sign_request,
)

pytestmark = pytest.mark.timeout(30)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def slack():
    async with FakeSlack() as fake:
        yield fake


def client_for(slack: FakeSlack, **kwargs: Any) -> AsyncWebClient:
    return AsyncWebClient(token=slack.bot_token, base_url=slack.api_url, **kwargs)


async def api_error(awaitable) -> SlackApiError:
    with pytest.raises(SlackApiError) as caught:
        await awaitable
    return caught.value


# --- Web API ---------------------------------------------------------------------------------------------------
async def test_web_client_posts_replies_updates_and_reads_the_thread_back(slack: FakeSlack) -> None:
    client = client_for(slack)
    parent = await client.chat_postMessage(channel=CHANNEL, text="question?")
    reply = await client.chat_postMessage(channel=CHANNEL, text="thinking…", thread_ts=parent["ts"])
    updated = await client.chat_update(channel=CHANNEL, ts=reply["ts"], text="the answer")

    assert parent["ts"] == "1700000000.000100" and reply["ts"] > parent["ts"]
    assert updated["text"] == "the answer" and updated["message"]["edited"]["user"] == BOT_USER_ID
    replies = await client.conversations_replies(channel=CHANNEL, ts=parent["ts"])
    assert [m["text"] for m in replies["messages"]] == ["question?", "the answer"]
    assert replies["messages"][0]["reply_count"] == 1 and replies["messages"][1]["bot_id"] == BOT_ID
    assert slack.final_text(CHANNEL, reply["ts"]) == "the answer"
    assert [v.text for v in slack.updates_for(CHANNEL, reply["ts"])] == ["the answer"]
    assert [m.ts for m in slack.thread_messages(CHANNEL, parent["ts"])] == [parent["ts"], reply["ts"]]
    # chat.postMessage goes as JSON, conversations.replies as GET query params: both are read.
    assert slack.calls_to("chat.postMessage")[1].params["thread_ts"] == parent["ts"]
    assert slack.calls_to("conversations.replies")[0].params == {"channel": CHANNEL, "ts": parent["ts"]}


async def test_history_users_reactions_ephemeral_delete_and_status(slack: FakeSlack) -> None:
    client = client_for(slack)
    first = await client.chat_postMessage(channel=CHANNEL, text="one")
    await client.chat_postMessage(channel=CHANNEL, text="two")
    await client.chat_postMessage(channel=CHANNEL, text="in thread", thread_ts=first["ts"])
    history = await client.conversations_history(channel=CHANNEL)
    assert [m["text"] for m in history["messages"]] == ["two", "one"]

    user = await client.users_info(user=USER_ID)
    assert user["user"]["name"] == "alice" and user["user"]["is_bot"] is False
    await client.reactions_add(channel=CHANNEL, timestamp=first["ts"], name="eyes")
    assert (await api_error(client.reactions_add(channel=CHANNEL, timestamp=first["ts"], name="eyes")))\
        .response["error"] == "already_reacted"
    ephemeral = await client.chat_postEphemeral(channel=CHANNEL, user=USER_ID, text="only you")
    assert slack.ephemerals[0].text == "only you" and ephemeral["message_ts"]
    await client.assistant_threads_setStatus(channel_id=CHANNEL, thread_ts=first["ts"], status="is thinking…")
    assert slack.statuses[0]["status"] == "is thinking…"
    await client.chat_delete(channel=CHANNEL, ts=first["ts"])
    assert slack.message(CHANNEL, first["ts"]) is None
    assert (await api_error(client.chat_update(channel=CHANNEL, ts=first["ts"], text="x")))\
        .response["error"] == "message_not_found"


async def test_wrong_token_is_invalid_auth_and_app_token_is_refused_for_chat(slack: FakeSlack) -> None:
    wrong = AsyncWebClient(token="xoxb-not-the-right-one", base_url=slack.api_url)
    assert (await api_error(wrong.auth_test())).response["error"] == "invalid_auth"
    app_token_client = AsyncWebClient(token=slack.app_token, base_url=slack.api_url)
    assert (await api_error(app_token_client.chat_postMessage(channel=CHANNEL, text="x")))\
        .response["error"] == "not_allowed_token_type"
    bot = client_for(slack)
    assert (await api_error(bot.apps_connections_open(app_token="xapp-wrong")))\
        .response["error"] == "invalid_auth"
    opened = await bot.apps_connections_open(app_token=slack.app_token)
    assert opened["url"].startswith(f"ws://127.0.0.1:{slack.port}/link/?ticket=")
    auth = await bot.auth_test()
    assert (auth["user_id"], auth["bot_id"], auth["team_id"]) == (BOT_USER_ID, BOT_ID, TEAM_ID)


async def test_unknown_method_answers_unknown_method(slack: FakeSlack) -> None:
    error = await api_error(client_for(slack).api_call("chat.doesNotExist", json={"x": 1}))
    assert error.response["error"] == "unknown_method"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"channel": CHANNEL, "text": "x" * 4001}, "msg_too_long"),
        ({"channel": CHANNEL, "text": ""}, "no_text"),
        ({"channel": CHANNEL, "text": "hi", "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": "y" * 3001}}]}, "invalid_blocks"),
        ({"channel": "C0NOSUCHCH", "text": "hi"}, "channel_not_found"),
    ],
)
async def test_post_validation_errors_raise_slack_api_error(slack: FakeSlack, kwargs: dict, error: str) -> None:
    raised = await api_error(client_for(slack).chat_postMessage(**kwargs))
    assert raised.response["error"] == error
    assert slack.calls_to("chat.postMessage")[0].error == error


async def test_text_at_the_limit_is_accepted_and_the_limit_is_configurable() -> None:
    async with FakeSlack(max_text_chars=100) as slack:
        client = client_for(slack)
        await client.chat_postMessage(channel=CHANNEL, text="x" * 100)
        assert (await api_error(client.chat_postMessage(channel=CHANNEL, text="x" * 101)))\
            .response["error"] == "msg_too_long"


async def test_update_of_unknown_ts_and_of_a_users_message_are_refused(slack: FakeSlack) -> None:
    client = client_for(slack)
    assert (await api_error(client.chat_update(channel=CHANNEL, ts="1.000001", text="x")))\
        .response["error"] == "message_not_found"
    event = slack.app_mention("hello")  # stores the user's message, as Slack holds it
    assert (await api_error(client.chat_update(channel=CHANNEL, ts=event["ts"], text="x")))\
        .response["error"] == "cant_update_message"


# --- rate limits ------------------------------------------------------------------------------------------------
async def test_chat_update_over_budget_answers_429_with_retry_after_until_the_bucket_refills() -> None:
    clock = FakeClock()
    async with FakeSlack(clock=clock, limits={"chat.update": RateLimit(per_minute=6, burst=2)}) as slack:
        client = client_for(slack)
        ts = (await client.chat_postMessage(channel=CHANNEL, text="a"))["ts"]
        await client.chat_update(channel=CHANNEL, ts=ts, text="b")
        await client.chat_update(channel=CHANNEL, ts=ts, text="c")
        limited = await api_error(client.chat_update(channel=CHANNEL, ts=ts, text="d"))
        assert limited.response.status_code == 429 and limited.response["error"] == "ratelimited"
        assert limited.response.headers["Retry-After"] == "10"  # one token every 10 s
        assert slack.rate_limited_count == 1 and slack.final_text(CHANNEL, ts) == "c"
        clock.now += 10
        await client.chat_update(channel=CHANNEL, ts=ts, text="d")
        assert slack.final_text(CHANNEL, ts) == "d"


async def test_post_message_limit_is_per_channel_and_can_be_tightened_and_removed() -> None:
    clock = FakeClock()
    async with FakeSlack(clock=clock) as slack:
        slack.set_limit("chat.postMessage", per_minute=60, burst=1)
        client = client_for(slack)
        await client.chat_postMessage(channel=CHANNEL, text="1")
        await client.chat_postMessage(channel=OTHER_CHANNEL, text="other channel, own bucket")
        assert (await api_error(client.chat_postMessage(channel=CHANNEL, text="2"))).response.status_code == 429
        clock.now += 1
        await client.chat_postMessage(channel=CHANNEL, text="2")
        slack.set_limit("chat.postMessage", None)
        for n in range(5):
            await client.chat_postMessage(channel=CHANNEL, text=f"unlimited {n}")
        assert slack.rate_limited_count == 1


async def test_sdk_rate_limit_retry_handler_waits_retry_after_and_lands_the_update() -> None:
    async with FakeSlack(limits={"chat.update": RateLimit(per_minute=60, burst=1)}) as slack:
        client = client_for(slack, retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=2)])
        ts = (await client.chat_postMessage(channel=CHANNEL, text="a"))["ts"]
        await client.chat_update(channel=CHANNEL, ts=ts, text="b")
        started = time.monotonic()
        response = await client.chat_update(channel=CHANNEL, ts=ts, text="final")
        assert response["ok"] and slack.final_text(CHANNEL, ts) == "final"
        assert slack.rate_limited_count == 1 and time.monotonic() - started >= 1.0
        assert [c.status for c in slack.calls_to("chat.update")] == [200, 429, 200]


async def test_fail_next_forces_one_answer(slack: FakeSlack) -> None:
    client = client_for(slack)
    slack.fail_next("chat.postMessage", retry_after=3)
    limited = await api_error(client.chat_postMessage(channel=CHANNEL, text="x"))
    assert limited.response.status_code == 429 and limited.response.headers["Retry-After"] == "3"
    await client.chat_postMessage(channel=CHANNEL, text="x")


# --- native streaming -------------------------------------------------------------------------------------------
async def test_chat_stream_helper_starts_appends_and_stops_one_message(slack: FakeSlack) -> None:
    client = client_for(slack)
    parent = slack.dm_message("stream me something")
    streamer = await client.chat_stream(channel=DM_CHANNEL, thread_ts=parent["ts"], buffer_size=8)
    for piece in ["Hello ", "there, ", "this is ", "streamed."]:
        await streamer.append(markdown_text=piece)
    await streamer.stop()

    methods = [c.method for c in slack.calls]
    assert methods[0] == "chat.startStream" and methods[-1] == "chat.stopStream"
    assert "chat.appendStream" in methods
    assert slack.final_text(DM_CHANNEL, streamer.ts) == "Hello there, this is streamed."
    message = slack.message(DM_CHANNEL, streamer.ts)
    assert message is not None and not message.streaming and message.thread_ts == parent["ts"]
    late = await api_error(client.chat_appendStream(channel=DM_CHANNEL, ts=streamer.ts, markdown_text="more"))
    assert late.response["error"] == "message_not_in_streaming_state"


async def test_channel_stream_needs_recipient_and_expires_after_max_age() -> None:
    clock = FakeClock()
    async with FakeSlack(clock=clock, stream_max_age_s=300) as slack:
        client = client_for(slack)
        mention = slack.app_mention("q")
        missing = await api_error(client.chat_startStream(channel=CHANNEL, thread_ts=mention["ts"]))
        assert missing.response["error"] == "missing_recipient_team_id"
        started = await client.chat_startStream(channel=CHANNEL, thread_ts=mention["ts"], markdown_text="a",
                                                recipient_team_id=TEAM_ID, recipient_user_id=USER_ID)
        clock.now += 301
        expired = await api_error(client.chat_stopStream(channel=CHANNEL, ts=started["ts"]))
        assert expired.response["error"] == "message_not_in_streaming_state"


async def test_streaming_can_be_refused_like_a_workspace_without_the_feature() -> None:
    async with FakeSlack(streaming_enabled=False) as slack:
        streamer = await client_for(slack).chat_stream(channel=DM_CHANNEL, thread_ts="1700000000.000100")
        refused = await api_error(streamer.stop(markdown_text="hi"))
        assert refused.response["error"] == "missing_scope"


# --- Socket Mode with a real bolt app ---------------------------------------------------------------------------
async def connected_app(slack: FakeSlack, app: AsyncApp) -> AsyncSocketModeHandler:
    handler = AsyncSocketModeHandler(app, slack.app_token, ping_interval=1)
    await handler.connect_async()
    await slack.wait_for_connection()
    return handler


async def test_bolt_app_over_socket_mode_answers_a_mention_and_a_slash_command(slack: FakeSlack) -> None:
    app = AsyncApp(client=client_for(slack))

    @app.event("app_mention")
    async def on_mention(event: dict, say) -> None:
        await say(text=f"answer to: {event['text']}", thread_ts=event["ts"])

    @app.command("/ask")
    async def on_ask(ack, respond, command: dict) -> None:
        await ack(f"Looking into “{command['text']}”…")
        await respond(text="Here is the answer.", response_type="in_channel")

    hellos: list[dict] = []

    async def listen(_client, message: dict, _raw: str | None) -> None:
        if message.get("type") == "hello":
            hellos.append(message)

    handler = AsyncSocketModeHandler(app, slack.app_token, ping_interval=1)
    handler.client.message_listeners.append(listen)
    await handler.connect_async()
    try:
        await slack.wait_for(lambda: hellos, what="(hello)")
        # The SDK's first ping is answered with a pong carrying its payload: the liveness check passes.
        await slack.wait_for(lambda: handler.client.last_ping_pong_time is not None, what="(pong)")

        mention = slack.app_mention("what does pro cost?")
        await slack.send_event(mention)
        replies = await slack.wait_for(lambda: slack.bot_messages(CHANNEL, thread_ts=mention["ts"]))
        assert replies[0].text == f"answer to: <@{BOT_USER_ID}> what does pro cost?"
        assert slack.calls_to("auth.test"), "bolt authorizes with auth.test before the first listener"

        envelope_id = await slack.send_slash_command("how do refunds work?")
        assert slack.acks[envelope_id].payload == {"text": "Looking into “how do refunds work?”…"}
        posted = await slack.wait_for(lambda: slack.responses)
        assert posted[0].body["text"] == "Here is the answer."
        assert posted[0].body["response_type"] == "in_channel"
    finally:
        await handler.close_async()


async def test_redelivered_event_is_visible_to_the_app_as_a_retry(slack: FakeSlack) -> None:
    app = AsyncApp(client=client_for(slack))
    seen: list[tuple[str, list[str] | None, list[str] | None]] = []

    @app.event("app_mention")
    async def on_mention(body: dict, request) -> None:
        headers = request.headers
        seen.append((body["event_id"], headers.get("x-slack-retry-num"), headers.get("x-slack-retry-reason")))

    handler = await connected_app(slack, app)
    try:
        mention = slack.app_mention("hello")
        await slack.send_event(mention)
        await slack.send_event(mention, retry_num=1, retry_reason="timeout")
        await slack.wait_for(lambda: len(seen) == 2)
    finally:
        await handler.close_async()
    (first_id, first_num, _), (retry_id, retry_num, retry_reason) = seen
    assert first_id == retry_id and first_id.startswith("Ev")
    assert first_num == ["0"] and retry_num == ["1"] and retry_reason == ["timeout"]


async def test_dm_bot_and_own_messages_arrive_as_slack_sends_them(slack: FakeSlack) -> None:
    app = AsyncApp(client=client_for(slack))
    seen: list[dict] = []

    @app.event("message")
    async def on_message(event: dict) -> None:
        seen.append(event)

    handler = await connected_app(slack, app)
    try:
        dm = slack.dm_message("hi in private")
        await slack.send_event(dm)
        await slack.send_event(slack.bot_message("another bot talks"))
        await slack.send_event(slack.bot_message("our own echo", bot_id=BOT_ID))  # bolt drops its own
        parent = slack.app_mention("start")
        await slack.send_event(slack.thread_message("follow-up", thread_ts=parent["ts"]))
        await slack.send_event(slack.message_changed(CHANNEL, parent["ts"], f"<@{BOT_USER_ID}> edited"))
        await slack.wait_for(lambda: len(seen) == 4)
    finally:
        await handler.close_async()
    texts = [e.get("text") or e["message"]["text"] for e in seen]
    assert texts == ["hi in private", "another bot talks", "follow-up", f"<@{BOT_USER_ID}> edited"]
    assert seen[0]["channel_type"] == "im" and seen[1]["bot_id"] != BOT_ID
    assert seen[2]["thread_ts"] == parent["ts"] and seen[3]["subtype"] == "message_changed"


async def test_block_action_reaches_the_app_with_the_message_it_was_clicked_on(slack: FakeSlack) -> None:
    app = AsyncApp(client=client_for(slack))
    clicked: list[dict] = []

    @app.action("feedback_up")
    async def on_click(ack, body: dict) -> None:
        await ack()
        clicked.append(body)

    posted = await client_for(slack).chat_postMessage(channel=CHANNEL, text="answer", blocks=[
        {"type": "actions", "elements": [{"type": "button", "action_id": "feedback_up", "value": "up",
                                          "text": {"type": "plain_text", "text": "👍"}}]}])
    handler = await connected_app(slack, app)
    try:
        envelope_id = await slack.send_block_action("feedback_up", "up", message_ts=posted["ts"])
        await slack.wait_for(lambda: clicked)
    finally:
        await handler.close_async()
    assert envelope_id in slack.acks
    assert clicked[0]["actions"][0]["value"] == "up" and clicked[0]["message"]["ts"] == posted["ts"]
    assert clicked[0]["container"]["channel_id"] == CHANNEL


async def test_disconnect_message_makes_the_sdk_reconnect_and_events_still_flow(slack: FakeSlack) -> None:
    app = AsyncApp(client=client_for(slack))
    seen: list[str] = []

    @app.event("app_mention")
    async def on_mention(event: dict) -> None:
        seen.append(event["text"])

    handler = await connected_app(slack, app)
    try:
        await slack.request_reconnect()
        await slack.wait_for(lambda: slack.connections_opened == 2 and len(slack._open_sockets()) == 1)
        assert len(slack.calls_to("apps.connections.open")) == 2
        await slack.send_event(slack.app_mention("after reconnect"))
        await slack.wait_for(lambda: seen)
    finally:
        await handler.close_async()


async def test_server_side_close_makes_the_sdk_reconnect_with_a_fresh_url(slack: FakeSlack) -> None:
    handler = await connected_app(slack, AsyncApp(client=client_for(slack)))
    try:
        await slack.drop_connections()
        await slack.wait_for(lambda: slack.connections_opened == 2 and len(slack._open_sockets()) == 1)
        assert len(slack.calls_to("apps.connections.open")) == 2  # the old ticket is spent: a new URL is asked
    finally:
        await handler.close_async()


async def test_unacked_envelope_raises_ack_timeout(slack: FakeSlack) -> None:
    url = (await client_for(slack).apps_connections_open(app_token=slack.app_token))["url"]
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        hello = await ws.receive_json()
        assert hello["type"] == "hello" and hello["connection_info"]["app_id"]
        with pytest.raises(AckTimeout):
            await slack.send_event(slack.app_mention("nobody acks"), timeout=0.2)
        envelope = await ws.receive_json()
        assert envelope["type"] == "events_api" and envelope["payload"]["type"] == "event_callback"
        assert envelope["retry_attempt"] == 0 and envelope["payload"]["event"]["type"] == "app_mention"


async def test_a_socket_ticket_is_single_use(slack: FakeSlack) -> None:
    url = (await client_for(slack).apps_connections_open(app_token=slack.app_token))["url"]
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url):
            pass
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(url)


# --- Events API over HTTP ---------------------------------------------------------------------------------------
def test_sign_request_headers_verify_with_the_sdks_signature_verifier() -> None:
    body = json.dumps({"type": "event_callback", "event": {"type": "app_mention"}}).encode()
    headers = sign_request(body, "s3cret", timestamp=int(time.time()))
    assert SignatureVerifier("s3cret").is_valid_request(body, headers)
    assert not SignatureVerifier("other").is_valid_request(body, headers)
    assert not SignatureVerifier("s3cret").is_valid_request(body + b" ", headers)
    stale = sign_request(body, "s3cret", timestamp=int(time.time()) - 600)
    assert not SignatureVerifier("s3cret").is_valid_request(body, stale)


async def test_deliver_http_reaches_a_bolt_http_app_and_a_wrong_secret_is_refused(slack: FakeSlack) -> None:
    app = AsyncApp(client=client_for(slack), signing_secret="s3cret")
    seen: list[tuple[str, list[str] | None]] = []

    @app.event("app_mention")
    async def on_mention(event: dict, request) -> None:
        seen.append((event["text"], request.headers.get("x-slack-retry-num")))

    runner = web.AppRunner(app.web_app(path="/slack/events"), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/slack/events"  # type: ignore[union-attr]
    try:
        mention = slack.app_mention("over http")
        assert (await slack.deliver_http(url, mention, "s3cret"))[0] == 200
        assert (await slack.deliver_http(url, mention, "s3cret", retry_num=2, retry_reason="http_timeout"))[0] \
            == 200
        assert (await slack.deliver_http(url, mention, "wrong"))[0] == 401
        await slack.wait_for(lambda: len(seen) == 2)
    finally:
        await runner.cleanup()
    assert seen == [(f"<@{BOT_USER_ID}> over http", None), (f"<@{BOT_USER_ID}> over http", ["2"])]


# --- the background-thread mode and waiting ---------------------------------------------------------------------
def test_thread_mode_serves_a_sync_client_and_runs_helpers_on_its_loop() -> None:
    slack = FakeSlack().start_in_thread()
    try:
        client = WebClient(token=slack.bot_token, base_url=slack.api_url)
        ts = client.chat_postMessage(channel=CHANNEL, text="from another thread")["ts"]
        assert slack.final_text(CHANNEL, ts) == "from another thread"
        assert slack.run(slack.wait_for(lambda: slack.calls_to("chat.postMessage"), 1))
    finally:
        slack.stop_thread()


async def test_wait_for_times_out_with_a_readable_error(slack: FakeSlack) -> None:
    with pytest.raises(TimeoutError, match="nothing posted"):
        await slack.wait_for(lambda: slack.calls, timeout=0.05, what="(nothing posted)")


async def test_wait_for_wakes_on_a_change_without_polling_delay(slack: FakeSlack) -> None:
    client = client_for(slack)
    waiter = asyncio.create_task(slack.wait_for(lambda: slack.calls_to("chat.postMessage"), timeout=2))
    await asyncio.sleep(0)
    await client.chat_postMessage(channel=CHANNEL, text="x")
    assert len(await waiter) == 1

"""The Slack front-end: slack-bolt's `AsyncApp`, over Socket Mode or the HTTP Events API, on the shared core.

Who gets an answer, and where:
- `@Switchboard question` in a channel → in a thread under that message (or in the thread it was asked in).
- any later message in a thread the bot answers in → answered without a new mention.
- a DM → each top-level DM starts its own thread; replies inside it continue that conversation.
- `/ask question` → acknowledged at once, the question posted visibly, the answer streamed in its thread;
  `/ask` or `/ask help` → usage, only to the asker.
- `reset` addressed to the bot → the thread's conversation starts over; a bare mention or `help` → usage.
- 👍/👎 under an answer → recorded with the session key (`bots.feedback`).
One thread is one session (`slack:<team>:<channel>:<thread_ts>`), so memory follows the thread across restarts.

Reliability: bolt acks before any work (answers run in tasks this class tracks); a redelivered event or the
`message` twin of an `app_mention` is answered once (`RecentKeys`); the bot's own messages, other bots' and
edits/deletions are ignored; slack_sdk's rate-limit retry handler is on the main client, while streaming edits go
through a client without it so the renderer can merge text across a 429 (`bots.slack.surface`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from bots.dedupe import RecentKeys
from bots.feedback import record_feedback
from bots.metrics import ERRORS, FIRST_TOKEN, REPLIES
from bots.pacing import EditPacer
from bots.slack.mrkdwn import defuse_broadcasts, escape
from bots.slack.native import NativeStreamReply
from bots.slack.surface import FEEDBACK_DOWN, FEEDBACK_UP, SlackLimits, SlackThreadSurface
from bots.startup import StartupError
from bots.streaming import ReplyOutcome, StreamingReply
from core.settings import Settings

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
RESET_WORDS = {"reset", "start over", "new conversation", "forget"}
ANSWERED_SUBTYPES = {None, "file_share", "thread_broadcast"}  # other subtypes are edits, joins, bots…
USAGE = (
    "*Ask Switchboard a support question.*\n"
    "• `/ask What does the Enterprise plan cost?` posts your question here and answers in its thread.\n"
    "• Mention me (`@Switchboard …`) in a channel, or send me a direct message.\n"
    "• Reply in a thread I answered to ask a follow-up; say `reset` there to start over.\n"
    "I answer from the team's knowledge base: billing, technical and policy questions."
)


def asks_for_help(question: str) -> bool:
    """An empty question, or one that just says help: answered with USAGE, not sent to the core."""
    return question.strip().lower().strip(" ?!.") in ("", "help")


def session_key(team: str | None, channel: str, thread_ts: str) -> str:
    return f"slack:{team or '-'}:{channel}:{thread_ts}"


class SlackFrontend:
    """Slack, on the shared orchestrator. `start()` connects; `stop()` lands or marks replies in flight."""

    name = "slack"

    def __init__(self, settings: Settings, orchestrator: Any, *, limits: SlackLimits | None = None) -> None:
        self.settings = settings
        self.orchestrator = orchestrator
        token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else ""
        self._app_token = settings.slack_app_token.get_secret_value() if settings.slack_app_token else ""
        secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else ""
        self.client = AsyncWebClient(token=token, base_url=settings.slack_api_url)
        self.client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=2))
        # Streaming edits: no 429 retry here, the renderer waits Retry-After and sends the merged text instead.
        self.stream_client = AsyncWebClient(token=token, base_url=settings.slack_api_url)
        self.app = AsyncApp(client=self.client, signing_secret=secret, request_verification_enabled=bool(secret),
                            process_before_response=False)
        self.limits = limits or SlackLimits()
        self.bot_user_id: str | None = None
        self.bot_name: str | None = None
        self._handler: AsyncSocketModeHandler | None = None
        self._seen = RecentKeys()
        self._threads = RecentKeys(50_000)  # threads answered lately; older ones are found in the checkpoints
        self._not_ours = RecentKeys(50_000)  # threads looked up and found to be other people's conversations
        self._tasks: set[asyncio.Task[Any]] = set()
        self.outcomes: list[ReplyOutcome] = []  # recent reply outcomes (benchmarks and tests read them)
        self._register()

    # --- lifecycle ---------------------------------------------------------------------------------------------
    @property
    def socket_mode(self) -> bool:
        return bool(self._app_token)

    async def start(self) -> None:
        try:
            auth = await self.client.auth_test()
        except SlackApiError as error:
            raise StartupError(f"Slack refused SLACK_BOT_TOKEN ({error.response.get('error')}). Copy the Bot User "
                               "OAuth Token (xoxb-…) from your app's OAuth & Permissions page and reinstall the "
                               "app if you changed its scopes.") from None
        self.bot_user_id, self.bot_name = auth.get("user_id"), auth.get("user")
        if self.socket_mode:
            self._handler = AsyncSocketModeHandler(self.app, self._app_token)
            try:
                await self._handler.connect_async()
            except SlackApiError as error:
                raise StartupError(f"Slack refused SLACK_APP_TOKEN ({error.response.get('error')}). Create an "
                                   "app-level token with connections:write under Basic Information and enable "
                                   "Socket Mode.") from None

    def describe(self) -> str:
        who = f"@{self.bot_name}" if self.bot_name else "the bot"
        if self.socket_mode:
            return f"connected over Socket Mode as {who}"
        return f"HTTP events at {EVENTS_PATH} on the web server, as {who}"

    async def stop(self) -> None:
        if self._handler is not None:
            with contextlib.suppress(Exception):
                await self._handler.close_async()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def http_routes(self) -> list[web.RouteDef]:
        """The Events API endpoint, mounted on the shared aiohttp server (HTTP mode)."""
        return [web.post(EVENTS_PATH, self._http_events)]

    async def _http_events(self, request: web.Request) -> web.Response:
        bolt_response = await self.app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(bolt_response)

    async def idle(self) -> None:
        """Wait until every answer in flight has finished (tests and benchmarks)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- listeners ---------------------------------------------------------------------------------------------
    def _register(self) -> None:
        self.app.event("app_mention")(self._on_mention)
        self.app.event("message")(self._on_message)
        self.app.command("/ask")(self._on_ask)
        self.app.action(FEEDBACK_UP)(self._on_feedback)
        self.app.action(FEEDBACK_DOWN)(self._on_feedback)
        self.app.error(self._on_error)

    async def _on_error(self, error: Exception, body: dict[str, Any]) -> None:
        log.error("slack listener failed on %s", body.get("type"), exc_info=error)

    async def _on_mention(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        if not self._first_delivery(body, event):
            return
        thread_ts = event.get("thread_ts") or event["ts"]
        self._spawn(self._answer(body.get("team_id"), event["channel"], thread_ts, event.get("text", ""),
                                 event.get("user")))

    async def _on_message(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        if event.get("subtype") not in ANSWERED_SUBTYPES or event.get("bot_id"):
            return
        if event.get("user") in (None, self.bot_user_id):
            return
        team = body.get("team_id")
        if event.get("channel_type") == "im":
            thread_ts = event.get("thread_ts") or event["ts"]
        else:
            thread_ts = event.get("thread_ts")
            if not thread_ts or not await self._is_our_thread(session_key(team, event["channel"], thread_ts)):
                return  # not addressed to the bot; a mention arrives as app_mention
        if not self._first_delivery(body, event):
            return
        self._spawn(self._answer(team, event["channel"], thread_ts, event.get("text", ""), event.get("user")))

    async def _on_ask(self, ack: Any, command: dict[str, Any], respond: Any) -> None:
        question = (command.get("text") or "").strip()
        if asks_for_help(question):
            await ack(response_type="ephemeral", text=USAGE)
            return
        await ack()
        self._spawn(self._ask(command, question, respond))

    async def _ask(self, command: dict[str, Any], question: str, respond: Any) -> None:
        channel, user = command["channel_id"], command["user_id"]
        try:
            posted = await self.client.chat_postMessage(
                channel=channel, text=f"<@{user}> asked: {defuse_broadcasts(escape(question))}",
                unfurl_links=False, unfurl_media=False)
        except SlackApiError as error:
            log.warning("/ask: cannot post in %s: %s", channel, error.response.get("error"))
            await respond(response_type="ephemeral", text=(
                "I can't post in this conversation. Invite me with `/invite @Switchboard`, or ask me in a "
                "direct message."))
            return
        await self._answer(command.get("team_id"), channel, posted["ts"], question, user)

    async def _on_feedback(self, ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any) -> None:
        await ack()
        vote = "up" if action["action_id"] == FEEDBACK_UP else "down"
        user = (body.get("user") or {}).get("id")
        message_ts = (body.get("container") or {}).get("message_ts")
        await asyncio.to_thread(record_feedback, self.settings.data_dir, frontend="slack",
                                session_key=action.get("value", ""), vote=vote, user=user, message=message_ts)
        with contextlib.suppress(Exception):
            await respond(response_type="ephemeral", replace_original=False,
                          text="Thanks for the feedback!" if vote == "up"
                          else "Thanks for telling us. A teammate can follow up in this thread.")

    # --- answering -----------------------------------------------------------------------------------------
    def _first_delivery(self, body: dict[str, Any], event: dict[str, Any]) -> bool:
        return self._seen.first_time(body.get("event_id"), (event.get("channel"), event.get("ts")))

    async def _is_our_thread(self, key: str) -> bool:
        """Checked on every thread reply in every channel the bot is in, so the checkpoint store is read once
        per thread: a thread found not to be ours stays so until a mention makes the bot answer in it."""
        if key in self._threads:
            return True
        if key in self._not_ours:
            return False
        if await self.orchestrator.session_info(key) is not None:  # answered before a restart
            self._threads.add(key)
            return True
        self._not_ours.add(key)
        return False

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def question_of(self, text: str) -> str:
        """The message without the bot's mention (anywhere in it) and surrounding whitespace."""
        if self.bot_user_id:
            text = re.sub(rf"<@{re.escape(self.bot_user_id)}(\|[^>]*)?>", " ", text)
        return text.strip()

    async def _answer(self, team: str | None, channel: str, thread_ts: str, text: str, user: str | None) -> None:
        key = session_key(team, channel, thread_ts)
        self._threads.add(key)
        self._not_ours.discard(key)
        question = self.question_of(text)
        started = time.monotonic()
        try:
            if asks_for_help(question):  # a bare mention: say what it can do
                await self.client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=USAGE)
                return
            if question.lower().strip(" .!") in RESET_WORDS:
                await self.orchestrator.reset(key)
                await self.client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=(
                    "🔄 Starting over: I've forgotten this thread's conversation. Ask away."))
                return
            events = self.orchestrator.respond(key, question, user=f"slack:{user}")
            surface = SlackThreadSurface(self.stream_client, channel, thread_ts, key, limits=self.limits,
                                         max_chars=self.settings.slack_max_chars)
            if self.settings.slack_streaming == "native":
                outcome = await NativeStreamReply(self.stream_client, surface, team=team, user=user,
                                                  interval_s=self.settings.slack_edit_interval_s).run(events)
            else:
                outcome = await StreamingReply(surface, EditPacer(self.settings.slack_edit_interval_s)).run(events)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - Slack itself failed (the renderer already handled the core)
            log.exception("slack: answering in %s failed", key)
            with contextlib.suppress(Exception):
                await self.client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=(
                    "⚠️ Something went wrong while answering. Please try again."))
            return
        self._record(outcome, started)

    def _record(self, outcome: ReplyOutcome, started: float) -> None:
        self.outcomes = [*self.outcomes[-999:], outcome]
        if outcome.status == "done":
            REPLIES.labels(frontend="slack", agent=outcome.agent or "unknown").inc()
        else:
            ERRORS.labels(frontend="slack", code=outcome.error_code or "unknown").inc()
        if outcome.first_token_received_at is not None:  # the renderer's clock is time.monotonic
            FIRST_TOKEN.labels(frontend="slack").observe(max(0.0, outcome.first_token_received_at - started))

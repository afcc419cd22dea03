"""The Slack front-end: slack-bolt's `AsyncApp`, over Socket Mode or the HTTP Events API, on the shared core.

Who gets an answer, and where:
- `@Switchboard question` in a channel → in a thread under that message (or in the thread it was asked in).
- any later message in a thread the bot answers in → answered without a new mention.
- a DM → each top-level DM starts its own thread; replies inside it continue that conversation.
- `/ask question` → acknowledged at once, the question posted visibly, the answer streamed in its thread;
  `/ask` or `/ask help` → usage, only to the asker.
- `reset` addressed to the bot → the thread's conversation starts over; a bare mention or `help` → usage.
- 👍/👎 under an answer → recorded with the session key (`bots.feedback`).
- "Talk to a person" under an answer, or asking for one in words → a handoff (`bots.support.desk`): the staff
  message in SLACK_HANDOFF_CHANNEL with its buttons (`bots.slack.handoff`), and the bot quiet in the thread
  until staff hand it back or resolve it.
One thread is one session (`slack:<team>:<channel>:<thread_ts>`), so memory follows the thread across restarts.

Reliability: bolt acks before any work (answers run in tasks this class tracks); a redelivered event or the
`message` twin of an `app_mention` is answered once (`RecentKeys`); the bot's own messages, other bots' and
edits/deletions are ignored; slack_sdk's rate-limit retry handler is on the main client, while streaming edits go
through a client without it so the renderer can merge text across a 429 (`bots.slack.surface`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.signature import SignatureVerifier
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from bots.dedupe import FallbackDeliveryKeys, RecentKeys
from coordination import connect as connect_coordination
from bots.feedback import feedback_store
from bots.pipeline import AnswerPipeline, Inbound, PlatformTexts, intent_of
from bots.slack.inbound import Thread, delivery_keys, inbound_from_ask, inbound_from_event, session_key
from bots.slack.mrkdwn import defuse_broadcasts, escape
from bots.slack.handoff import HANDOFF_REQUEST, NOT_STAFF, STAFF_ACTIONS, SlackStaff
from bots.slack.native import NativeStreamReply
from bots.slack.surface import FEEDBACK_DOWN, FEEDBACK_UP, SlackLimits, SlackThreadSurface
from bots.startup import StartupError
from bots.support.desk import HandoffRequest, desk_or_none
from bots.surface import Surface, shows_in_progress
from core.retry import USER_MESSAGES
from core.settings import Settings

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
RESET_DONE = "🔄 Starting over: I've forgotten this thread's conversation. Ask away."


def usage_text(agents: Any | None) -> str:
    """The help message in mrkdwn: how to ask, and what about (the agents' topics, from the agents file)."""
    about = f"questions about {agents.topics_sentence('and')}" if agents else "support questions"
    return (
        "*Ask Switchboard a support question.*\n"
        "• `/ask What does the Enterprise plan cost?` posts your question here and answers in its thread.\n"
        "• Mention me (`@Switchboard …`) in a channel, or send me a direct message.\n"
        "• Reply in a thread I answered to ask a follow-up; say `reset` there to start over.\n"
        f"I answer {about} from the team's knowledge base."
    )


__all__ = ["SlackFrontend", "StartupError", "session_key", "usage_text"]


class SlackFrontend:
    """Slack, on the shared orchestrator. `start()` connects; `stop()` lands or marks replies in flight."""

    name = "slack"

    def __init__(self, settings: Settings, orchestrator: Any, *, limits: SlackLimits | None = None,
                 coordination: Any | None = None) -> None:
        self.settings = settings
        self.orchestrator = orchestrator
        token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else ""
        self._app_token = settings.slack_app_token.get_secret_value() if settings.slack_app_token else ""
        secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else ""
        self.client = AsyncWebClient(token=token, base_url=settings.slack_api_url)
        self.client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=2))
        # Streaming writes: no 429 retry here; the renderer feeds the 429 to the budget and sends merged text.
        self.stream_client = AsyncWebClient(token=token, base_url=settings.slack_api_url)
        # slack_sdk's verifier, checked on the HTTP endpoint before bolt sees the request (see `_http_events`).
        self._verifier = SignatureVerifier(secret) if secret else None
        self.app = AsyncApp(client=self.client, signing_secret=secret, request_verification_enabled=bool(secret),
                            process_before_response=False)
        # Shared with the other replicas when coordination is Redis-backed; in-process otherwise.
        self.coordination = coordination or connect_coordination(None)
        self.limits = limits or SlackLimits(coordination=self.coordination)
        self.usage = usage_text(getattr(orchestrator, "agents", None))
        self.support = desk_or_none(orchestrator)  # handoffs, quiet threads, outcomes (shared by the front-ends)
        self.staff = SlackStaff(self.client, settings)
        if self.support is not None:
            self.support.register(self.staff)
        self.pipeline = AnswerPipeline(orchestrator, "slack", PlatformTexts(self.usage, RESET_DONE),
                                       replies=self.coordination.inflight,
                                       edit_interval_s=settings.slack_edit_interval_s, support=self.support)
        self.bot_user_id: str | None = None
        self.bot_name: str | None = None
        self._handler: AsyncSocketModeHandler | None = None
        self._seen = FallbackDeliveryKeys(self.coordination.delivery_keys("slack"))
        self._threads = RecentKeys(50_000)  # threads answered lately; older ones are found in the checkpoints
        self._not_ours = RecentKeys(50_000)  # threads looked up and found to be other people's conversations
        self.feedback = feedback_store(settings)  # 👍/👎: feedback.jsonl, or Postgres when DATABASE_URL is set
        self._register()

    @property
    def outcomes(self) -> list[Any]:
        """Recent reply outcomes, oldest first (benchmarks and tests read them)."""
        return self.pipeline.outcomes

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
        await self.pipeline.inflight.drain(grace_s=self.settings.drain_timeout_s)  # no new events come in now

    def http_routes(self) -> list[web.RouteDef]:
        """The Events API endpoint, mounted on the shared aiohttp server (HTTP mode)."""
        return [web.post(EVENTS_PATH, self._http_events)]

    async def _http_events(self, request: web.Request) -> web.Response:
        if self._verifier is not None and not await self._signed(request):
            # Before bolt parses anything: an unsigned, stale or malformed request (a non-numeric timestamp made
            # bolt's own check raise, a 500 and a traceback per request) is a 401 and one log line.
            log.info("slack: refused an HTTP request that is not signed by Slack (%s)", request.remote)
            return web.json_response({"error": "The request is not signed by Slack."}, status=401)
        bolt_response = await self.app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(bolt_response)

    async def _signed(self, request: web.Request) -> bool:
        assert self._verifier is not None
        try:
            return self._verifier.is_valid_request(await request.read(), dict(request.headers))
        except (ValueError, TypeError, UnicodeDecodeError):  # a timestamp that is not a number, a body not UTF-8
            return False

    async def idle(self) -> None:
        """Wait until every answer in flight has finished (tests and benchmarks)."""
        await self.pipeline.inflight.idle()

    # --- listeners ---------------------------------------------------------------------------------------------
    def _register(self) -> None:
        self.app.event("app_mention")(self._on_event)
        self.app.event("message")(self._on_event)
        self.app.command("/ask")(self._on_ask)
        self.app.action(FEEDBACK_UP)(self._on_feedback)
        self.app.action(FEEDBACK_DOWN)(self._on_feedback)
        self.app.action(HANDOFF_REQUEST)(self._on_handoff_request)
        for action_id in STAFF_ACTIONS:
            self.app.action(action_id)(self._on_staff_action)
        self.app.error(self._on_error)

    async def _on_error(self, error: Exception, body: dict[str, Any]) -> None:
        log.error("slack listener failed on %s", body.get("type"), exc_info=error)

    async def _on_event(self, body: dict[str, Any]) -> None:
        inbound = inbound_from_event(body, self.bot_user_id)
        if inbound is None:
            return
        if not inbound.addressed and not await self._is_our_thread(inbound.session_key):
            return  # a reply in someone else's thread; a mention there arrives as app_mention
        if not await self._seen.first_time(*delivery_keys(body)):
            return  # Slack redelivered it, or it is the `message` twin of an `app_mention`
        self.pipeline.inflight.spawn(self._answer(inbound, body.get("team_id")))

    async def _on_ask(self, ack: Any, command: dict[str, Any], respond: Any) -> None:
        question = (command.get("text") or "").strip()
        if intent_of(question) == "help":
            await ack(response_type="ephemeral", text=self.usage)
            return
        await ack()
        self.pipeline.inflight.spawn(self._ask(command, question, respond))

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
        await self._answer(inbound_from_ask(command, posted["ts"]), command.get("team_id"))

    async def _on_feedback(self, ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any) -> None:
        await ack()
        vote = "up" if action["action_id"] == FEEDBACK_UP else "down"
        user = (body.get("user") or {}).get("id")
        message_ts = (body.get("container") or {}).get("message_ts")
        text = ("Thanks for the feedback!" if vote == "up"
                else "Thanks for telling us. A teammate can follow up in this thread.")
        try:
            await self.feedback.record(frontend="slack", session_key=action.get("value", ""), vote=vote, user=user,
                                       message=message_ts)
        except Exception as exc:  # noqa: BLE001 - the clicker reads a sentence; the log says why (no secrets)
            log.warning("slack: recording a %s vote failed: %s", vote, exc)
            text = "Sorry, your vote could not be saved. Please try again in a minute."
        with contextlib.suppress(Exception):
            await respond(response_type="ephemeral", replace_original=False, text=text)

    async def _on_handoff_request(self, ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        """"Talk to a person" under an answer: the handoff runs in a task (bolt's ack cannot wait for a webhook's
        retries); what happens next is posted in the thread."""
        await ack()
        container = body.get("container") or {}
        channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
        thread_ts = container.get("thread_ts") or container.get("message_ts")
        if self.support is None or not channel or not thread_ts:
            return
        request = HandoffRequest("slack", action.get("value", ""), (body.get("user") or {}).get("id"), channel,
                                 {"channel": channel, "thread_ts": thread_ts}, "button")
        self.pipeline.inflight.spawn(self._hand_off(request))

    async def _hand_off(self, request: HandoffRequest) -> None:
        assert self.support is not None
        text = await self.support.request(request)
        await self.staff.tell_thread(request.where, text)

    async def _on_staff_action(self, ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any) -> None:
        """Take it / Hand back / Resolved on a staff message: members of its channel only."""
        await ack()
        user = (body.get("user") or {}).get("id") or ""
        channel = (body.get("container") or {}).get("channel_id") or (body.get("channel") or {}).get("id") or ""
        if self.support is None or not await self.staff.is_staff(channel, user):
            with contextlib.suppress(Exception):
                await respond(response_type="ephemeral", replace_original=False, text=NOT_STAFF)
            return
        name = await self.staff.user_label(user)
        result = await self.support.act(STAFF_ACTIONS[action["action_id"]], action.get("value", ""), user, name)
        if result.record is None:  # already taken, resolved…: only the presser is told
            with contextlib.suppress(Exception):
                await respond(response_type="ephemeral", replace_original=False, text=result.message)

    # --- answering -----------------------------------------------------------------------------------------
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
        if not self.coordination.shared:  # another replica may start answering it at any moment
            self._not_ours.add(key)
        return False

    async def interrupt_orphan(self, info: dict[str, Any]) -> None:
        """A reply whose replica died mid-way (its lease expired): every message of it still unfinished (on
        "Thinking…" or a cursor) says the answer was interrupted. The registry names the newest message the
        dead replica had registered; a later one it posted just before dying is found in the thread."""
        targets = [info["ts"]]
        if info.get("thread_ts"):
            try:
                replies = await self.stream_client.conversations_replies(
                    channel=info["channel"], ts=info["thread_ts"], oldest=info["ts"], inclusive=True, limit=100)
                targets = [m["ts"] for m in replies.get("messages", []) if m.get("bot_id") and
                           float(m["ts"]) >= float(info["ts"]) and shows_in_progress(m.get("text", ""))]
            except SlackApiError as error:
                log.info("slack: cannot read thread %s (%s); marking the registered message only",
                         info["thread_ts"], error.response.get("error"))
        for ts in targets:
            await self.stream_client.chat_update(channel=info["channel"], ts=ts,
                                                 text=f"⚠️ {USER_MESSAGES['interrupted']}")

    async def _answer(self, inbound: Inbound, team: str | None) -> None:
        self._threads.add(inbound.session_key)
        self._not_ours.discard(inbound.session_key)
        where: Thread = inbound.place
        started = time.monotonic()
        with self.limits.posts.using(where.channel) as post_budget:
            surface = SlackThreadSurface(self.stream_client, where.channel, where.thread_ts, inbound.session_key,
                                         post_budget=post_budget, edit_budget=self.limits.updates,
                                         max_chars=self.settings.slack_max_chars)
            native = None
            if self.settings.slack_streaming == "native":
                def native(s: Surface) -> NativeStreamReply:
                    return NativeStreamReply(self.stream_client, surface, team=team, user=inbound.user,
                                             interval_s=self.settings.slack_edit_interval_s)
            await self.pipeline.answer(inbound, surface, started=started, reply=native)

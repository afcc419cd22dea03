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
One workspace with SLACK_BOT_TOKEN, or many with SLACK_CLIENT_ID/SLACK_CLIENT_SECRET ("Add to Slack",
`bots.slack.oauth`): each workspace is then answered with its own installed token, and its settings and quotas
(`core.workspaces`, `bots.admission`) apply in the shared pipeline.

Reliability: bolt acks before any work (answers run in tasks this class tracks); a redelivered event or the
`message` twin of an `app_mention` is answered once (`RecentKeys`); the bot's own messages, other bots' and
edits/deletions are ignored; slack_sdk's rate-limit retry handler is on the main client, while streaming edits go
through a client without it so the renderer can merge text across a 429 (`bots.slack.surface`).
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
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
from bots.slack.inbound import shared_files
from bots.attachments import RemoteFile, max_bytes_of, prepare, with_files
from bots.slack.mrkdwn import defuse_broadcasts, escape
from bots.slack.thread_history import HistoryUnavailable, called_into, thread_so_far
from core.thread_context import merged
from core.turn_input import TurnInput
from bots.slack.handoff import HANDOFF_REQUEST, NOT_STAFF, STAFF_ACTIONS, SlackStaff
from bots.slack.native import NativeStreamReply
from bots.slack.oauth import INSTALL_PATH, authorized_bot_user, build_oauth, oauth_app_options
from bots.slack.assistant import SlackAssistant
from bots.slack.home import SlackHome
from bots.slack.shortcut import SlackShortcut
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
        # "Add to Slack" (SLACK_CLIENT_ID + SLACK_CLIENT_SECRET): each workspace's own token from the installation
        # store (`bots.slack.oauth`); otherwise the single SLACK_BOT_TOKEN, as before.
        self.oauth = build_oauth(settings, self.client) if settings.slack_oauth_enabled else None
        self._team_clients: dict[str, tuple[AsyncWebClient, AsyncWebClient]] = {}  # bot token -> (client, stream)
        self.app = AsyncApp(client=self.client, signing_secret=secret, request_verification_enabled=bool(secret),
                            process_before_response=False, **oauth_app_options(self.oauth))
        if self.oauth is not None:
            self.app.enable_token_revocation_listeners()  # app_uninstalled / tokens_revoked delete the install
        # Shared with the other replicas when coordination is Redis-backed; in-process otherwise.
        self.coordination = coordination or connect_coordination(None)
        self.limits = limits or SlackLimits(coordination=self.coordination)
        self.usage = usage_text(getattr(orchestrator, "agents", None))
        self.support = desk_or_none(orchestrator)  # handoffs, quiet threads, outcomes (shared by the front-ends)
        self.staff = SlackStaff(self.client, settings, clients_for=self._client_for)  # per workspace with OAuth
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
        if self.oauth is not None:  # many workspaces, no single token to check: the installations must be readable
            await self.oauth.store.runner.setup()
        else:
            try:
                auth = await self.client.auth_test()
            except SlackApiError as error:
                raise StartupError(f"Slack refused SLACK_BOT_TOKEN ({error.response.get('error')}). Copy the Bot "
                                   "User OAuth Token (xoxb-…) from your app's OAuth & Permissions page and "
                                   "reinstall the app if you changed its scopes.") from None
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
        if self.oauth is not None:
            who = f"every workspace that installed it at {INSTALL_PATH}"
        if self.socket_mode:
            return f"connected over Socket Mode as {who}"
        return f"HTTP events at {EVENTS_PATH} on the web server, as {who}"

    async def stop(self) -> None:
        if self._handler is not None:
            with contextlib.suppress(Exception):
                await self._handler.close_async()
        await self.pipeline.inflight.drain(grace_s=self.settings.drain_timeout_s)  # no new events come in now
        if self.oauth is not None:
            await self.oauth.aclose()

    def http_routes(self) -> list[web.RouteDef]:
        """The Events API endpoint, mounted on the shared aiohttp server (HTTP mode), and with "Add to Slack" the
        install page and the OAuth redirect (in Socket Mode too)."""
        routes = [web.post(EVENTS_PATH, self._http_events)]
        if self.oauth is not None:
            routes.extend(self.oauth.routes(self.app))
        return routes

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
        # Native surfaces (issue 20): the assistant view, the Home tab and its modal, the message shortcut.
        self.assistant = SlackAssistant(self)
        self.app.assistant(self.assistant.middleware)
        self.home = SlackHome(self)
        self.shortcut = SlackShortcut(self)
        self.app.error(self._on_error)

    async def _on_error(self, error: Exception, body: dict[str, Any]) -> None:
        log.error("slack listener failed on %s", body.get("type"), exc_info=error)

    async def _on_event(self, body: dict[str, Any]) -> None:
        inbound = inbound_from_event(body, self.bot_user_id or authorized_bot_user(body))
        if inbound is None:
            return
        if not inbound.addressed and not await self._is_our_thread(inbound.session_key):
            return  # a reply in someone else's thread; a mention there arrives as app_mention
        if not await self._seen.first_time(*delivery_keys(body)):
            return  # Slack redelivered it, or it is the `message` twin of an `app_mention`
        called_in = called_into(body) if inbound.session_key not in self._threads else None
        self.pipeline.inflight.spawn(self._answer(inbound, body.get("team_id"), shared_files(body),
                                                  called_in=called_in))

    async def _on_ask(self, ack: Any, command: dict[str, Any], respond: Any) -> None:
        question = (command.get("text") or "").strip()
        if intent_of(question) == "help":
            await ack(response_type="ephemeral", text=self.usage)
            return
        await ack()
        self.pipeline.inflight.spawn(self._ask(command, question, respond))

    async def _ask(self, command: dict[str, Any], question: str, respond: Any) -> None:
        channel, user = command["channel_id"], command["user_id"]
        client, _ = await self._clients_for(command.get("team_id"))
        try:
            posted = await client.chat_postMessage(
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
        team = request.session_key.split(":")[1] if request.session_key.count(":") >= 3 else None
        await (await self.staff.for_workspace(team)).tell_thread(request.where, text)

    async def _on_staff_action(self, ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any) -> None:
        """Take it / Hand back / Resolved on a staff message: members of its channel only."""
        await ack()
        user = (body.get("user") or {}).get("id") or ""
        channel = (body.get("container") or {}).get("channel_id") or (body.get("channel") or {}).get("id") or ""
        staff = await self.staff.for_workspace((body.get("team") or {}).get("id"))  # the presser's workspace
        if self.support is None or not await staff.is_staff(channel, user):
            with contextlib.suppress(Exception):
                await respond(response_type="ephemeral", replace_original=False, text=NOT_STAFF)
            return
        name = await staff.user_label(user)
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
        key = str(info.get("session_key") or "").split(":")  # slack:<team>:<channel>:<thread_ts>
        _, stream_client = await self._clients_for(key[1] if len(key) > 2 else None)
        if info.get("thread_ts"):
            try:
                replies = await stream_client.conversations_replies(
                    channel=info["channel"], ts=info["thread_ts"], oldest=info["ts"], inclusive=True, limit=100)
                targets = [m["ts"] for m in replies.get("messages", []) if m.get("bot_id") and
                           float(m["ts"]) >= float(info["ts"]) and shows_in_progress(m.get("text", ""))]
            except SlackApiError as error:
                log.info("slack: cannot read thread %s (%s); marking the registered message only",
                         info["thread_ts"], error.response.get("error"))
        for ts in targets:
            await stream_client.chat_update(channel=info["channel"], ts=ts, text=f"⚠️ {USER_MESSAGES['interrupted']}")

    async def _clients_for(self, team: str | None) -> tuple[AsyncWebClient, AsyncWebClient]:
        """(client, streaming client) speaking for `team`: the single token's, or with "Add to Slack" that
        workspace's installed bot token (bolt has just authorized the event, refreshing a rotating token)."""
        if self.oauth is None or not team:
            return self.client, self.stream_client
        bot = await self.oauth.store.async_find_bot(enterprise_id=None, team_id=team)
        if bot is None:
            return self.client, self.stream_client  # not installed (any more): calls fail with Slack's own error
        clients = self._team_clients.get(bot.bot_token)
        if clients is None:
            client = AsyncWebClient(token=bot.bot_token, base_url=self.settings.slack_api_url)
            client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=2))
            clients = (client, AsyncWebClient(token=bot.bot_token, base_url=self.settings.slack_api_url))
            if len(self._team_clients) >= 1000:  # rotated tokens leave old entries behind
                self._team_clients.clear()
            self._team_clients[bot.bot_token] = clients
        return clients

    async def _client_for(self, team: str | None) -> AsyncWebClient:
        """The client speaking for `team` (its installed token with "Add to Slack"), for the handoff desk."""
        return (await self._clients_for(team))[0]

    async def _answer(self, inbound: Inbound, team: str | None, files: tuple[dict[str, Any], ...] = (), *,
                      called_in: str | None = None) -> Any:
        if called_in is not None:  # before the thread counts as ours: the checkpoints say whether it is
            inbound = await self._with_thread(inbound, team, called_in)
        self._threads.add(inbound.session_key)
        self._not_ours.discard(inbound.session_key)
        where: Thread = inbound.place
        started = time.monotonic()
        _, stream_client = await self._clients_for(team)  # the workspace's own token with "Add to Slack"
        with self.limits.posts.using(where.channel) as post_budget:
            surface = SlackThreadSurface(stream_client, where.channel, where.thread_ts, inbound.session_key,
                                         post_budget=post_budget, edit_budget=self.limits.updates,
                                         max_chars=self.settings.slack_max_chars)
            native = None
            if self.settings.slack_streaming == "native":
                def native(s: Surface) -> NativeStreamReply:
                    return NativeStreamReply(stream_client, surface, team=team, user=inbound.user,
                                             interval_s=self.settings.slack_edit_interval_s)
            inbound = await self._attached(inbound, files, team)  # last: thread context is kept beside the files
            return await self.pipeline.answer(inbound, surface, started=started, reply=native)

    async def _with_thread(self, inbound: Inbound, team: str | None, mention_ts: str) -> Inbound:
        """Called into a thread it has no conversation for: the thread so far goes with the question, as
        context (`bots.slack.thread_history`); once in the session it is never fetched again. A thread that
        cannot be read is answered anyway, the reply saying why once."""
        where: Thread = inbound.place
        try:
            if await self.orchestrator.session_info(inbound.session_key) is not None:
                return inbound
            client, _ = await self._clients_for(team)
            earlier = await thread_so_far(client, where.channel, where.thread_ts, before_ts=mention_ts,
                                          bot_user_id=self.bot_user_id,
                                          max_messages=self.settings.thread_context_messages,
                                          max_tokens=self.settings.thread_context_tokens)
        except HistoryUnavailable as unavailable:
            earlier = TurnInput(notes=(unavailable.sentence,))
        except Exception:  # noqa: BLE001 - the question is still answered, from its own text
            log.warning("slack: reading thread %s failed; answering without it", where.thread_ts, exc_info=True)
            return inbound
        return replace(inbound, extras=merged(inbound.extras, earlier))

    async def _attached(self, inbound: Inbound, files: tuple[dict[str, Any], ...], team: str | None = None
                        ) -> Inbound:
        """The files shared with the message, fetched from `url_private_download` with the bot token of the
        workspace they were shared in (its installed one with "Add to Slack") (`bots.attachments`: size cap,
        type sniffing, text budget); a file Slack only names is looked up with `files.info` first. Each file that
        cannot be used becomes a sentence in the reply."""
        if not files:
            return inbound
        remote: list[RemoteFile] = []
        unusable: list[str] = []
        client, _ = await self._clients_for(team)
        auth = {"Authorization": f"Bearer {client.token}"}
        for file in files:
            if file.get("file_access") == "check_file_info" or not file.get("url_private_download"):
                try:
                    file = (await client.files_info(file=file["id"]))["file"]
                except SlackApiError as error:
                    log.info("slack: files.info refused a shared file (%s)", error.response.get("error"))
                    unusable.append("I couldn't open one of the shared files (Slack would not give it to me).")
                    continue
            name = str(file.get("name") or file.get("title") or "file")
            url = file.get("url_private_download") or file.get("url_private")
            if file.get("mode") == "tombstone" or file.get("is_external") or not url:
                unusable.append(f"I couldn't download “{name}”: it is not stored in Slack (deleted or external).")
                continue
            remote.append(RemoteFile(name, str(url), file.get("size"), str(file.get("mimetype") or ""), auth))
        prepared = await prepare(remote, max_bytes=max_bytes_of(self.settings),
                                 max_chars=self.settings.max_attachment_chars)
        return with_files(inbound, replace(prepared, notes=(*unusable, *prepared.notes)))

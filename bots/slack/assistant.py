"""Slack's AI app view (the assistant container: a thread pane beside the channel the user reads), on bolt's
`AsyncAssistant` middleware.

- A new assistant thread gets a greeting and suggested prompts: one per agent, its first example question (Slack
  shows at most four), so the prompts follow the agents file like every help text.
- A question in the thread is answered there by the one answer pipeline (`AnswerPipeline.answer`) on the usual
  Slack surface (edits, or the native stream with SLACK_STREAMING=native). The first question of a thread sets
  its title; while the core works the status line names the agent at work ("is checking the docs on
  billing…"), cleared when the answer has landed.
- The channel the user is viewing is the assistant thread's context (bolt keeps it in the greeting's message
  metadata, so it survives restarts and is the same on every replica); it is the inbound's `channel`, so
  per-channel agent limits (`core.channels`) apply to the channel being read.
- Sessions stay thread keys: `slack:<team>:<dm channel>:<thread_ts>`.

Why a middleware and not the `message` listener: bolt routes every user message in a DM thread to the assistant
(it cannot tell an assistant thread from a DM thread the user started). A thread whose root is not the app's
(`parent_user_id` is not the bot) is a plain DM thread and goes to the front-end's usual path unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from slack_bolt.context.assistant.thread_context_store.async_store import AsyncAssistantThreadContextStore
from slack_bolt.middleware.assistant.async_assistant import AsyncAssistant

from bots.pacing import EditPacer
from bots.pipeline import Inbound, Reply, intent_of
from bots.slack.inbound import Thread, delivery_keys, inbound_from_event
from bots.slack.native import NativeStreamReply
from bots.slack.surface import SlackThreadSurface
from bots.streaming import StreamingReply
from bots.surface import ReplyOutcome, Surface
from core.events import Agent, Event

if TYPE_CHECKING:
    from bots.slack.app import SlackFrontend

log = logging.getLogger(__name__)

MAX_PROMPTS = 4  # Slack shows at most four suggested prompts
TITLE_CHARS = 80
PROMPTS_TITLE = "Try asking:"
CONTEXT_EVENT = "assistant_thread_context"
StatusSetter = Callable[[str], Awaitable[None]]


def greeting(agents: Any | None) -> str:
    """The first message of an assistant thread: what the bot answers, from the agents file."""
    about = f"questions about {agents.topics_sentence('and')}" if agents else "support questions"
    return (f"Hi! I answer {about} from the team's knowledge base. Ask me anything, or pick a suggestion below. "
            "I see the channel you have open, so questions about it get the right specialist.")


def suggested_prompts(agents: Any | None) -> list[dict[str, str]]:
    """One prompt per agent (its first example), at most Slack's four."""
    if not agents:
        return [{"title": "How do I ask?", "message": "help"}]
    return [{"title": spec.label, "message": spec.examples[0]} for spec in list(agents.values())[:MAX_PROMPTS]
            if spec.examples]


def status_line(agent: Agent, agents: Any | None) -> str:
    """What the status line says while an agent works (Slack puts the app's name before it)."""
    spec = agents.get(agent.name) if agents else None
    topic = spec.topic_phrase if spec is not None else agent.label.lower()
    return f"is checking the docs on {topic}…"


def title_of(question: str) -> str:
    """A thread title from its first question: one line, cut at a word near TITLE_CHARS."""
    line = " ".join(question.split())
    if len(line) <= TITLE_CHARS:
        return line
    return line[:TITLE_CHARS].rsplit(" ", 1)[0] + "…"


class StatusStreamingReply(StreamingReply):
    """The edit renderer, naming the agent at work in the assistant thread's status line as soon as it is routed.
    A `StreamingReply` still (the pipeline tracks its posts for replicas)."""

    def __init__(self, surface: Surface, pacer: EditPacer, *, set_status: StatusSetter, agents: Any | None,
                 **options: Any) -> None:
        super().__init__(surface, pacer, **options)
        self._set_status = set_status
        self._agents = agents

    async def run(self, events: AsyncIterator[Event]) -> ReplyOutcome:
        return await super().run(self._announce(events))

    async def _announce(self, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        async for event in events:
            if isinstance(event, Agent):
                await self._set_status(status_line(event, self._agents))
            yield event


class SlackAssistant:
    """The assistant view's listeners, on the front-end's pipeline, budgets and clients."""

    def __init__(self, frontend: SlackFrontend, *, store: AsyncAssistantThreadContextStore | None = None) -> None:
        self.frontend = frontend
        self.middleware = AsyncAssistant(thread_context_store=store)
        self.middleware.thread_started(self._started)
        self.middleware.user_message(self._user_message)

    @property
    def agents(self) -> Any | None:
        return getattr(self.frontend.orchestrator, "agents", None)

    async def _started(self, payload: dict[str, Any], say: Any, set_suggested_prompts: Any) -> None:
        """A new assistant thread: the greeting (carrying the viewed channel as metadata), then the prompts."""
        context = dict((payload.get("assistant_thread") or {}).get("context") or {})
        try:
            # With blocks: bolt's context store re-sends the greeting's blocks when the user switches channels
            # (`assistant_thread_context_changed`), and fails on a message without any.
            text = greeting(self.agents)
            await say(text=text, blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
                      metadata={"event_type": CONTEXT_EVENT, "event_payload": context})
            await set_suggested_prompts(prompts=suggested_prompts(self.agents), title=PROMPTS_TITLE)
        except Exception:  # noqa: BLE001 - a greeting that fails leaves the thread usable; the log says why
            log.warning("slack: greeting a new assistant thread failed", exc_info=True)

    async def _user_message(self, body: dict[str, Any], payload: dict[str, Any], get_thread_context: Any,
                            set_title: Any) -> None:
        frontend = self.frontend
        if payload.get("parent_user_id") != frontend.bot_user_id:
            await frontend._on_event(body)  # a DM thread the user started: the usual DM path
            return
        inbound = inbound_from_event(body, frontend.bot_user_id)
        if inbound is None or not await frontend._seen.first_time(*delivery_keys(body)):
            return
        viewing = None
        try:
            context = await get_thread_context()
            viewing = (context or {}).get("channel_id")
        except Exception:  # noqa: BLE001 - without the context the question is answered without channel limits
            log.info("slack: cannot read an assistant thread's context", exc_info=True)
        inbound = dataclasses.replace(inbound, channel=viewing)
        frontend.pipeline.inflight.spawn(self._answer(inbound, body.get("team_id"), set_title))

    async def _answer(self, inbound: Inbound, team: str | None, set_title: Any) -> None:
        frontend = self.frontend
        started = time.monotonic()
        where: Thread = inbound.place
        if intent_of(inbound.text) == "question" and await frontend.orchestrator.session_info(
                inbound.session_key) is None:
            with contextlib.suppress(Exception):  # decoration: the answer matters, not the title
                await set_title(title_of(inbound.text))
        frontend._threads.add(inbound.session_key)
        _, stream_client = await frontend._clients_for(team)  # the workspace's own token with "Add to Slack"

        async def set_status(status: str) -> None:
            try:
                await stream_client.assistant_threads_setStatus(
                    channel_id=where.channel, thread_ts=where.thread_ts, status=status)
            except Exception:  # noqa: BLE001 - the status line is decoration
                log.debug("assistant.threads.setStatus failed", exc_info=True)

        settings = frontend.settings
        with frontend.limits.posts.using(where.channel) as post_budget:
            surface = SlackThreadSurface(stream_client, where.channel, where.thread_ts, inbound.session_key,
                                         post_budget=post_budget, edit_budget=frontend.limits.updates,
                                         max_chars=settings.slack_max_chars)

            def renderer(s: Surface) -> Reply:
                if settings.slack_streaming == "native":  # it names the agent in the status line itself
                    return NativeStreamReply(stream_client, surface, team=team, user=inbound.user,
                                             interval_s=settings.slack_edit_interval_s)
                return StatusStreamingReply(s, EditPacer(settings.slack_edit_interval_s), set_status=set_status,
                                            agents=self.agents)

            await set_status("is thinking…")
            try:
                await frontend.pipeline.answer(inbound, surface, started=started, reply=renderer)
            finally:
                await set_status("")  # cleared: the answer (or its error) is in the thread

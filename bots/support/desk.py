"""The support desk: hands a conversation to a person, keeps the bot quiet while one handles it, carries out the
staff's buttons, and records every turn's outcome. Platform-neutral; each chat front-end registers a
`StaffPlace` (its staff channel, links and thread notices) and calls the desk.

A handoff, whatever asked for it (the "Talk to a person" button, or words the router recognised, which arrive
as a `core.events.Handoff` that `watch` turns into the reply):
1. the handoff is opened in the store (atomic: a second request while one is open is told a person is already
   asked, and posts nothing);
2. the ticket is built from the conversation (`Orchestrator.transcript`): who asked, the questions, what the bot
   answered, the agent, its sources and confidence, and a link to the thread (`StaffPlace.thread_link`);
3. it goes to the staff place of the platform (the channel's own from the channels file, else the workspace's or
   guild's from `switchboard workspaces set` (`core.workspaces`), else SLACK_HANDOFF_CHANNEL /
   DISCORD_HANDOFF_CHANNEL), pinging only the configured on-call group, and to
   HANDOFF_WEBHOOK_URL when set (signed, retried: `bots.support.webhook`);
4. the user is told what happens next, or, when nothing could be delivered, how to reach a person instead.
While a staff message with its buttons exists and the handoff is open, `quiet()` is true: front-ends then post
nothing in that thread and keep its messages as notes (the staff's answer, for `switchboard draft-article`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bots.support import metrics
from bots.support.store import (
    OPEN,
    HandoffRecord,
    SupportEvent,
    SupportStore,
    support_store,
)
from bots.support.webhook import Delivery, deliver
from core.events import Complete, Event, Handoff, Token
from core.transcript import last_answered, questions_of
from core.workspaces import workspaces_for

log = logging.getLogger(__name__)

ASKED_HERE = ("🙋 I've asked a person from the team to take over. They'll reply here in this thread as soon as "
              "someone is available; until then I'll stay quiet here.")
ASKED_TICKET = ("🙋 I've passed your question to the support team. A person will get back to you as soon as "
                "someone is available.")
ALREADY_ASKED = "A person from the team has already been asked to help with this conversation; they'll reply here."
UNREACHABLE = ("⚠️ I couldn't reach the support team just now. Please write to {email}, or try again in a few "
               "minutes.")
NOBODY = "I can't hand this conversation to a person from here. Please write to {email} and a person will help."
TAKEN_NOTICE = "👋 {name} from the team has picked this up and will reply here."
RETURNED_NOTICE = "The team has handed this conversation back to me. Ask away!"
RESOLVED_NOTICE = "✅ The team marked this as resolved. If you need anything else, just ask."

Action = str  # "take" | "back" | "resolve"
ACTIONS: dict[str, tuple[str, tuple[str, ...]]] = {  # action -> (new status, statuses it may leave)
    "take": ("taken", ("requested",)),
    "back": ("returned", OPEN),
    "resolve": ("resolved", OPEN),
}


@dataclass(frozen=True, slots=True)
class HandoffRequest:
    """Someone asked for a person in a conversation. `where` is the platform's address of the thread (what its
    `StaffPlace` needs for the link and notices); `channel` selects the per-channel handoff place."""

    platform: str
    session_key: str
    user: str | None
    channel: str | None = None
    where: Mapping[str, Any] = field(default_factory=dict)
    trigger: str = "button"  # button | words


@dataclass(frozen=True, slots=True)
class StaffResult:
    """What a staff button did: `record` after it (None: refused, `message` says why, for the presser only)."""

    record: HandoffRecord | None
    message: str


class StaffPlace(Protocol):
    """A platform's side of handoffs (the Slack and Discord front-ends implement it)."""

    platform: str
    default_channel: str | None  # SLACK_HANDOFF_CHANNEL / DISCORD_HANDOFF_CHANNEL
    default_mention: str | None  # the on-call group or role it may ping

    async def thread_link(self, where: Mapping[str, Any]) -> str: ...
    async def user_label(self, user: str | None) -> str: ...
    async def post_ticket(self, channel: str, mention: str | None, ticket: dict[str, Any]) -> dict[str, Any]: ...
    async def show_status(self, record: HandoffRecord, status_line: str) -> None: ...
    async def tell_thread(self, where: Mapping[str, Any], text: str) -> None: ...


class SupportDesk:
    """See the module docstring. One per orchestrator (`desk_for`), shared by its front-ends."""

    def __init__(self, orchestrator: Any, store: SupportStore, *, settings: Any | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.orchestrator = orchestrator
        self.settings = settings or orchestrator.settings
        self.store = store
        self.places: dict[str, StaffPlace] = {}
        self.sleep = sleep  # the webhook's backoff (tests inject one that does not wait)
        self._background: set[asyncio.Task[None]] = set()

    # --- front-ends ---------------------------------------------------------------------------------------------
    def register(self, place: StaffPlace) -> None:
        self.places[place.platform] = place

    async def quiet(self, session_key: str) -> bool:
        """Whether a person handles this conversation now, so the bot must not answer in it. A store that cannot
        be read answers False: the bot answering is better than a question silently dropped."""
        try:
            record = await self.store.get_handoff(session_key)
        except Exception:  # noqa: BLE001 - see the docstring
            log.exception("[%s] the handoff store could not be read; answering as usual", session_key)
            return False
        return record is not None and record.quiet

    async def note(self, platform: str, session_key: str, user: str | None, text: str) -> None:
        """A message posted in a handed-off thread (the user's, or the staff's answer), kept for the record."""
        await self._add(SupportEvent(platform, session_key, "note", text, user=user))

    async def watch(self, events: AsyncGenerator[Event, None], request: HandoffRequest, question: str
                    ) -> AsyncIterator[Event]:
        """The core's events as a front-end should render them: a `Handoff` becomes the handoff itself and the
        sentence saying what happens next; each finished turn is recorded (in the background, never delaying
        the reply)."""
        handed_off = False
        async with contextlib.aclosing(events):  # closing this closes the core's stream (its session lock)
            async for event in events:
                if isinstance(event, Handoff):
                    handed_off = True
                    yield event  # the web passes it on (an SSE `handoff` frame); renderers ignore it
                    yield Token(await self.request(HandoffRequest(request.platform, request.session_key,
                                                                  request.user, request.channel, request.where,
                                                                  "words")))
                    continue
                if isinstance(event, Complete) and not handed_off:
                    self._in_background(self._record_turn(request, question, event))
                yield event

    # --- handoffs -----------------------------------------------------------------------------------------------
    async def request(self, request: HandoffRequest) -> str:
        """Hand the conversation to a person; returns what to tell the user."""
        email = self.settings.support_email
        workspace_id = workspace_of_handoff(request.platform, request.session_key, request.where)
        place = await self._place(request.platform, workspace_id)
        rule = self.orchestrator.channels.rule_for(request.platform, request.channel)
        workspace = await self._workspace_handoff(request.platform, workspace_id)
        # Most specific first: the channel's own place (channels.yml) wins over its workspace's (`switchboard
        # workspaces set`), which wins over the environment's default; the same order for the ping.
        staff_channel = (rule.handoff_channel if rule and rule.handoff_channel else None) or workspace[0] or (
            place.default_channel if place else None)
        mention = (rule.handoff_mention if rule and rule.handoff_mention else None) or workspace[1] or (
            place.default_mention if place else None)
        webhook = self.settings.handoff_webhook_url
        if not (place and staff_channel) and not webhook:
            return NOBODY.format(email=email)
        ticket = await self._ticket(request, place)
        record = await self.store.open_handoff(request.session_key, request.platform, request.user, ticket)
        if record is None:
            return ALREADY_ASKED
        posted = False
        if place is not None and staff_channel:
            try:
                staff = await place.post_ticket(staff_channel, mention, ticket)
                await self.store.set_staff(request.session_key, {**staff, "thread": dict(request.where)})
                posted = True
            except Exception:  # noqa: BLE001 - the webhook may still reach someone
                log.exception("[%s] posting the handoff in %s %s failed", request.session_key, request.platform,
                              staff_channel)
                metrics.DELIVERY_FAILURES.labels("staff").inc()
        delivered = await self._send_webhook(request.session_key, ticket) if webhook else None
        if not posted and not (delivered and delivered.delivered):
            await self.store.transition(request.session_key, "failed", sources=("requested",))
            return UNREACHABLE.format(email=email)
        metrics.HANDOFFS.labels(request.platform, ticket.get("agent") or "none", request.trigger).inc()
        await self._add(SupportEvent(request.platform, request.session_key, "handoff",
                                     ticket["questions"][-1] if ticket["questions"] else "", ticket.get("agent"),
                                     request.user, ticket.get("confidence"),
                                     {"trigger": request.trigger, "link": ticket.get("link", "")}))
        return ASKED_HERE if posted else ASKED_TICKET

    async def _place(self, platform: str, workspace_id: str | None) -> StaffPlace | None:
        """The platform's staff place, speaking for `workspace_id` when it can ("Add to Slack": that workspace's
        own bot token, `SlackStaff.for_workspace`)."""
        place = self.places.get(platform)
        bind = getattr(place, "for_workspace", None)
        if bind is None or not workspace_id:
            return place
        try:
            return await bind(workspace_id)  # type: ignore[no-any-return]
        except Exception:  # noqa: BLE001 - the default client still tries (and the webhook may reach someone)
            log.warning("no %s client for workspace %s; using the default", platform, workspace_id, exc_info=True)
            return place

    async def _workspace_handoff(self, platform: str, workspace_id: str | None) -> tuple[str | None, str | None]:
        """(staff channel, ping) the workspace or guild was given with `switchboard workspaces set`; (None, None)
        when it set neither, or its settings cannot be read (the defaults then apply)."""
        workspaces = workspaces_for(self.orchestrator) if workspace_id else None
        if workspaces is None:
            return None, None
        try:
            found = await workspaces.get(platform, workspace_id)
        except Exception:  # noqa: BLE001 - a handoff must not fail because the settings table is unreadable
            log.warning("%s workspace %s: settings unreadable; default handoff place", platform, workspace_id,
                        exc_info=True)
            return None, None
        return (found.handoff_channel if "handoff_channel" in found.configured else None,
                found.handoff_mention if "handoff_mention" in found.configured else None)

    async def _ticket(self, request: HandoffRequest, place: StaffPlace | None) -> dict[str, Any]:
        """The handoff as staff and the webhook see it (also the webhook's JSON payload)."""
        turns = await self.orchestrator.transcript(request.session_key)
        answered = last_answered(turns)
        agents = self.orchestrator.agents
        link, name = "", request.user or ""
        if place is not None:
            try:
                link = await place.thread_link(request.where)
            except Exception:  # noqa: BLE001 - a ticket without a link still reaches a person
                log.warning("[%s] no link to the thread", request.session_key, exc_info=True)
            name = await place.user_label(request.user)
        agent = answered.agent if answered else None
        return {
            "event": "handoff.requested", "session_key": request.session_key, "platform": request.platform,
            "user": {"id": request.user, "name": name}, "questions": questions_of(turns)[-5:],
            "answer": answered.answer if answered else "", "agent": agent,
            "agent_label": agents[agent].label if agent in agents else "",
            "sources": [dict(s) for s in answered.sources] if answered else [],
            "confidence": answered.confidence if answered else None,
            "declined": answered.declined if answered else False,
            "link": link, "trigger": request.trigger, "requested_at": time.time(),
        }

    async def _send_webhook(self, session_key: str, ticket: dict[str, Any]) -> Delivery:
        secret = self.settings.handoff_webhook_secret
        result = await deliver(self.settings.handoff_webhook_url, ticket,
                               secret=secret.get_secret_value() if secret else "",
                               attempts=self.settings.handoff_webhook_attempts,
                               timeout_s=self.settings.handoff_webhook_timeout_s, sleep=self.sleep)
        if not result.delivered:
            metrics.DELIVERY_FAILURES.labels("webhook").inc()
            log.warning("[%s] the handoff webhook failed after %d attempt(s): %s", session_key, result.attempts,
                        result.problem)
        return result

    # --- staff ----------------------------------------------------------------------------------------------------
    async def act(self, action: Action, session_key: str, staff_user: str, staff_name: str) -> StaffResult:
        """A staff button: "take", "back" (hand back to the bot) or "resolve". Who may press is the platform's
        check (staff channel members, the staff role); this is what pressing does."""
        status, sources = ACTIONS[action]
        record = await self.store.transition(session_key, status, sources=sources,
                                             taken_by=staff_name if action == "take" else None)
        if record is None:
            current = await self.store.get_handoff(session_key)
            return StaffResult(None, _refusal(current))
        place = await self._place(record.platform, workspace_of_handoff(
            record.platform, session_key, record.staff.get("thread") or {}))
        agent = record.ticket.get("agent") or "none"
        if action == "take":
            line, notice = f"🙋 Taken by {staff_name}", TAKEN_NOTICE.format(name=staff_name)
        elif action == "back":
            line, notice = f"↩️ Handed back to the bot by {staff_name}", RETURNED_NOTICE
            metrics.RESOLUTIONS.labels(record.platform, agent, "handed_back").inc()
        else:
            line, notice = f"✅ Resolved by {staff_name}", RESOLVED_NOTICE
            metrics.RESOLUTIONS.labels(record.platform, agent, "resolved").inc()
        await self._add(SupportEvent(record.platform, session_key, record.status, user=staff_user,
                                     agent=record.ticket.get("agent"), detail={"by": staff_name}))
        if place is not None:
            for step in (place.show_status(record, line), place.tell_thread(record.staff.get("thread") or {},
                                                                             notice)):
                try:
                    await step
                except Exception:  # noqa: BLE001 - the state changed; a failed notice is logged
                    log.warning("[%s] a handoff notice failed", session_key, exc_info=True)
        return StaffResult(record, line)

    # --- the record of turns ------------------------------------------------------------------------------------------
    async def _record_turn(self, request: HandoffRequest, question: str, complete: Complete) -> None:
        kind = "declined" if complete.declined else "answered"
        if complete.declined:
            metrics.UNANSWERED.labels(request.platform, complete.agent or "none").inc()
        await self._add(SupportEvent(request.platform, request.session_key, kind, question, complete.agent or None,
                                     request.user, complete.confidence))

    async def _add(self, event: SupportEvent) -> None:
        try:
            await self.store.add_event(event)
        except Exception:  # noqa: BLE001 - the log is for reports; a reply never fails for it
            log.exception("[%s] recording a %s event failed", event.session_key, event.kind)

    def _in_background(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def flush(self) -> None:
        """Wait for the turns being recorded (tests, and shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def aclose(self) -> None:
        await self.flush()
        await self.store.aclose()


def workspace_of_handoff(platform: str, session_key: str, where: Mapping[str, Any]) -> str | None:
    """The Slack team (from the session key `slack:<team>:<channel>:<ts>`) or Discord guild (from the thread's
    address) a handoff comes from; None when there is none (a Discord DM, the web)."""
    if platform == "slack":
        parts = session_key.split(":")
        return parts[1] if len(parts) > 3 and parts[1] not in ("", "-") else None
    if platform == "discord":
        guild = (where or {}).get("guild_id")
        return str(guild) if guild else None
    return None


def _refusal(record: HandoffRecord | None) -> str:
    if record is None:
        return "This handoff no longer exists."
    if record.status == "taken":
        return f"Already taken by {record.taken_by}."
    return {"returned": "This conversation was already handed back to the bot.",
            "resolved": "This conversation is already resolved.",
            "failed": "This handoff could not be delivered; the user was told to write in."}.get(
        record.status, "Nothing to do: the handoff is not open.")


def desk_or_none(orchestrator: Any) -> SupportDesk | None:
    """`desk_for`, or None for an orchestrator that cannot hold one (a test double)."""
    return desk_for(orchestrator) if hasattr(orchestrator, "shared") else None


def desk_for(orchestrator: Any) -> SupportDesk:
    """The orchestrator's support desk, built on first use from its settings and closed with it: every front-end
    of a process shares one desk (and one store connection) without the composition root wiring it."""
    return orchestrator.shared("support_desk", lambda: SupportDesk(orchestrator, support_store(orchestrator.settings)))

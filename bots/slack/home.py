"""The app's Home tab (`app_home_opened` → `views.publish`) and its "Ask a question" modal.

The Home tab says what the bot answers (each agent with one line, from the agents file), how to ask (mention, DM,
`/ask`, the assistant view, the message shortcut), and lists the user's own recent conversations with links to
their threads. The conversations come from the support log (`bots.support`: every answered turn is recorded
there with its asker), so they are the same on every replica and after restarts; without a support desk the list
is simply left out.

"Ask a question" opens a modal (`views.open`, within the click's 3-second trigger); on submission the question is
posted in the user's DM with the bot and answered in that message's thread, like `/ask` (session key
`slack:<team>:<dm>:<ts>`), so the answer arrives as a DM the user can follow up in.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from bots.pipeline import Inbound
from bots.slack.inbound import PLATFORM, Thread, session_key
from bots.slack.mrkdwn import defuse_broadcasts, escape

if TYPE_CHECKING:
    from bots.slack.app import SlackFrontend

log = logging.getLogger(__name__)

ASK_BUTTON = "home_ask"
ASK_MODAL = "home_ask_modal"
QUESTION_BLOCK = "question"
QUESTION_INPUT = "text"
RECENT = 5  # conversations listed
RECENT_WINDOW_S = 30 * 86_400
LABEL_CHARS = 70
TOO_SHORT = "Please type a question."


def _one_line(text: str, limit: int = LABEL_CHARS) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 1].rstrip() + "…"


def agent_lines(agents: Any | None) -> list[str]:
    """One line per agent: its label, its topic and an example question."""
    if not agents:
        return ["Support questions, answered from the team's knowledge base."]
    lines = []
    for spec in agents.values():
        example = f" · e.g. _{escape(_one_line(spec.examples[0]))}_" if spec.examples else ""
        lines.append(f"• *{escape(spec.label)}*: questions about {escape(spec.topic_phrase)}{example}")
    return lines


HOW_TO_ASK = (
    "• Mention me in a channel (`@Switchboard …`): I answer in a thread.\n"
    "• Send me a direct message, or open me in Slack's assistant view (the ✨ button at the top).\n"
    "• `/ask your question` in any channel I am in.\n"
    "• On any message: ⋮ → *Ask Switchboard about this*, and I answer in its thread.\n"
    "• Reply in my thread to follow up; say `reset` there to start over."
)


def home_view(agents: Any | None, recent: list[tuple[str, str | None]]) -> dict[str, Any]:
    """The Home tab: what the bot answers, how to ask, the ask button, and `recent` as (question, link)."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Switchboard support"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "*What I answer*\n" + "\n".join(agent_lines(agents))}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "*How to ask*\n" + HOW_TO_ASK}},
        {"type": "actions", "block_id": "home_actions", "elements": [
            {"type": "button", "action_id": ASK_BUTTON, "style": "primary", "value": "ask",
             "text": {"type": "plain_text", "text": "Ask a question"}}]},
        {"type": "divider"},
    ]
    if recent:
        items = []
        for question, link in recent:
            label = defuse_broadcasts(escape(_one_line(question))).replace("|", "¦")
            items.append(f"• <{link}|{label}>" if link else f"• {label}")
        text = "*Your recent conversations*\n" + "\n".join(items)
    else:
        text = "*Your recent conversations*\nNone yet: ask me something and it will show here."
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    return {"type": "home", "blocks": blocks}


def ask_modal() -> dict[str, Any]:
    """The "Ask a question" modal: one multi-line input."""
    return {"type": "modal", "callback_id": ASK_MODAL,
            "title": {"type": "plain_text", "text": "Ask Switchboard"},
            "submit": {"type": "plain_text", "text": "Ask"},
            "close": {"type": "plain_text", "text": "Cancel"},
            "blocks": [{"type": "input", "block_id": QUESTION_BLOCK,
                        "label": {"type": "plain_text", "text": "Your question"},
                        "hint": {"type": "plain_text", "text": "The answer arrives in a direct message."},
                        "element": {"type": "plain_text_input", "action_id": QUESTION_INPUT, "multiline": True,
                                    "max_length": 3000}}]}


def submitted_question(view: dict[str, Any]) -> str:
    values = ((view.get("state") or {}).get("values") or {}).get(QUESTION_BLOCK) or {}
    return str((values.get(QUESTION_INPUT) or {}).get("value") or "").strip()


class SlackHome:
    """Registers the Home tab, the ask button and the modal on the front-end's bolt app."""

    def __init__(self, frontend: SlackFrontend) -> None:
        self.frontend = frontend
        app = frontend.app
        app.event("app_home_opened")(self._opened)
        app.action(ASK_BUTTON)(self._ask_clicked)
        app.view(ASK_MODAL)(self._submitted)

    async def _opened(self, event: dict[str, Any], client: Any) -> None:
        if event.get("tab", "home") != "home":
            return
        user = event.get("user")
        if not user:
            return
        view = home_view(getattr(self.frontend.orchestrator, "agents", None), await self.recent(user, client))
        try:
            await client.views_publish(user_id=user, view=view)
        except SlackApiError as error:
            log.warning("slack: publishing the Home tab failed: %s", error.response.get("error"))

    async def recent(self, user: str, client: Any) -> list[tuple[str, str | None]]:
        """The user's latest conversations (newest first) as (first question seen, link to the thread)."""
        support = self.frontend.support
        if support is None:
            return []
        try:
            events = await support.store.events(since=time.time() - RECENT_WINDOW_S)
        except Exception:  # noqa: BLE001 - the Home tab shows without the list
            log.warning("slack: reading recent conversations failed", exc_info=True)
            return []
        latest: dict[str, str] = {}
        for event in sorted(events, key=lambda e: e.at, reverse=True):
            if event.platform == PLATFORM and event.user == user and event.kind in ("answered", "declined"):
                latest.setdefault(event.session_key, event.text)
            if len(latest) >= RECENT:
                break
        return [(question, await self._link(client, key)) for key, question in latest.items()]

    @staticmethod
    async def _link(client: Any, key: str) -> str | None:
        parts = key.split(":")
        if len(parts) != 4:
            return None
        _, _, channel, thread_ts = parts
        try:
            found = await client.chat_getPermalink(channel=channel, message_ts=thread_ts)
            return str(found["permalink"])
        except SlackApiError:
            return None

    async def _ask_clicked(self, ack: Any, body: dict[str, Any], client: Any) -> None:
        await ack()
        try:
            await client.views_open(trigger_id=body["trigger_id"], view=ask_modal())
        except SlackApiError as error:
            log.warning("slack: opening the ask modal failed: %s", error.response.get("error"))

    async def _submitted(self, ack: Any, body: dict[str, Any], view: dict[str, Any], client: Any) -> None:
        question = submitted_question(view)
        if not question:
            await ack(response_action="errors", errors={QUESTION_BLOCK: TOO_SHORT})
            return
        await ack()  # the modal closes; the answer goes to the DM
        user = (body.get("user") or {}).get("id")
        team = (body.get("team") or {}).get("id") or (body.get("user") or {}).get("team_id")
        if user:
            self.frontend.pipeline.inflight.spawn(self._answer_in_dm(client, user, team, question))

    async def _answer_in_dm(self, client: Any, user: str, team: str | None, question: str) -> None:
        try:
            opened = await client.conversations_open(users=user)
            channel = opened["channel"]["id"]
            posted = await client.chat_postMessage(channel=channel, unfurl_links=False, unfurl_media=False,
                                                   text=f"You asked: {defuse_broadcasts(escape(question))}")
        except SlackApiError as error:
            log.warning("slack: cannot answer a Home question in a DM: %s", error.response.get("error"))
            return
        inbound = Inbound(platform=PLATFORM, session_key=session_key(team, channel, posted["ts"]), text=question,
                          user=user, place=Thread(channel, posted["ts"]), channel=channel)
        await self.frontend._answer(inbound, team)

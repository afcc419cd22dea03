"""Handoffs on Slack: the staff message in SLACK_HANDOFF_CHANNEL, its buttons, and the thread link and notices.

`ticket_blocks` (pure) lays the ticket out: who asked, the questions, what the bot answered (agent, confidence,
sources), a link to the thread, the status line, and the staff buttons "Take it", "Hand back to the bot" and
"Resolved" (their `value` is the session key, so a click after a restart needs nothing remembered). Everything
that came from a user or the model is escaped, so `<!channel>`, `<@U…>` or `@here` in a question ping nobody; the
one mention the message carries is the on-call user group (`<!subteam^S…>`, SLACK_HANDOFF_MENTION or the
channel's own from the channels file).

`SlackStaff` is the desk's `StaffPlace` for Slack: it posts and updates the staff message, builds the thread's
permalink (`chat.getPermalink`), names the user (`users.info`, never as a mention), and says in the user's
thread who took it. `is_staff` is the buttons' check: the presser must be a member of the channel the staff
message is in (`conversations.members`); anyone else gets an ephemeral refusal.

With "Add to Slack" there is no single token: `for_workspace(team)` is the same place speaking with that
workspace's installed bot token (the desk asks for it per handoff, the front-end per button press), so the
staff message, the permalink and the notices go out as the workspace's own bot.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.mrkdwn import defuse_broadcasts, escape
from bots.slack.surface import HANDOFF_REQUEST
from bots.support.store import HandoffRecord

log = logging.getLogger(__name__)
__all__ = ["HANDOFF_REQUEST", "NOT_STAFF", "STAFF_ACTIONS", "SlackStaff", "ticket_blocks"]

STAFF_TAKE, STAFF_BACK, STAFF_RESOLVE = "handoff_take", "handoff_back", "handoff_resolve"
STAFF_ACTIONS = {STAFF_TAKE: "take", STAFF_BACK: "back", STAFF_RESOLVE: "resolve"}
ANSWER_CHARS = 1500  # of the bot's answer in the staff message
NOT_STAFF = "Only members of the staff channel can change a handoff."
WAITING = "⏳ Waiting for someone to take it"


def plain(text: str) -> str:
    """User or model text, safe in mrkdwn: escaped (no `<…>` mention or link survives) and broadcasts defused."""
    return defuse_broadcasts(escape(text))


def ticket_blocks(ticket: Mapping[str, Any], *, mention: str | None, status: str, open_: bool = True
                  ) -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, blocks) of the staff message for `ticket` (see `bots.support.desk.SupportDesk._ticket`)."""
    ping = f"<!subteam^{mention}> " if mention else ""
    user = plain((ticket.get("user") or {}).get("name") or (ticket.get("user") or {}).get("id") or "someone")
    questions = [plain(q) for q in ticket.get("questions") or []] or ["(no question yet)"]
    confidence = ticket.get("confidence")
    facts = [f"*User:* {user}",
             f"*Agent:* {plain(ticket.get('agent_label') or ticket.get('agent') or '—')}",
             f"*Confidence:* {confidence:.2f}" if isinstance(confidence, (int, float)) else "*Confidence:* —",
             f"*Asked by:* {'the button' if ticket.get('trigger') == 'button' else 'their own words'}"]
    answer = ticket.get("answer") or ""
    if len(answer) > ANSWER_CHARS:
        answer = answer[:ANSWER_CHARS].rsplit(" ", 1)[0] + " …"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{ping}🙋 *{user} asked for a person*"}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": fact} for fact in facts]},
        {"type": "section", "text": {"type": "mrkdwn", "text": "*Question(s):*\n" + "\n".join(
            f"> {q}" for q in questions)[:2900]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": (
            "*What the bot answered" + (" (it declined: not in the knowledge base)" if ticket.get("declined") else "")
            + ":*\n" + (plain(answer) or "_nothing yet_"))[:2900]}},
    ]
    sources = ticket.get("sources") or []
    if sources:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": "Sources: " + ", ".join(
            plain(s.get("title") or s.get("source") or "") for s in sources)[:2900]}]})
    if ticket.get("link"):
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"<{ticket['link']}|Open the thread>"}})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": status}]})
    if open_:
        key = ticket["session_key"]
        blocks.append({"type": "actions", "block_id": "handoff", "elements": [
            _button(STAFF_TAKE, "🙋 Take it", key, style="primary"),
            _button(STAFF_BACK, "↩️ Hand back to the bot", key),
            _button(STAFF_RESOLVE, "✅ Resolved", key),
        ]})
    fallback = f"{ping}🙋 {user} asked for a person: {questions[-1]}"
    return fallback[:3000], blocks


def _button(action_id: str, label: str, value: str, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {"type": "button", "action_id": action_id, "value": value,
                              "text": {"type": "plain_text", "text": label, "emoji": True}}
    if style:
        button["style"] = style
    return button


class SlackStaff:
    """The support desk's `StaffPlace` on Slack (see the module docstring)."""

    platform = "slack"

    def __init__(self, client: AsyncWebClient, settings: Any, *,
                 clients_for: Callable[[str | None], Awaitable[AsyncWebClient]] | None = None) -> None:
        self.client = client
        self.settings = settings
        self.default_channel: str | None = settings.slack_handoff_channel
        self.default_mention: str | None = settings.slack_handoff_mention
        self._clients_for = clients_for  # team id -> that workspace's client ("Add to Slack"); None: one token

    async def for_workspace(self, team: str | None) -> SlackStaff:
        """This place speaking with `team`'s own bot token ("Add to Slack"); itself in single-token mode."""
        if self._clients_for is None or not team:
            return self
        client = await self._clients_for(team)
        if client is self.client:
            return self
        return SlackStaff(client, self.settings)

    async def thread_link(self, where: Mapping[str, Any]) -> str:
        response = await self.client.chat_getPermalink(channel=where["channel"], message_ts=where["thread_ts"])
        return str(response["permalink"])

    async def user_label(self, user: str | None) -> str:
        """"Alice Example (U123)": named, never mentioned (a mention would ping the user in the staff channel)."""
        if not user:
            return "someone"
        try:
            info = (await self.client.users_info(user=user))["user"]
        except SlackApiError:
            return user
        name = (info.get("profile") or {}).get("real_name") or info.get("real_name") or info.get("name") or ""
        return f"{name} ({user})" if name else user

    async def post_ticket(self, channel: str, mention: str | None, ticket: dict[str, Any]) -> dict[str, Any]:
        text, blocks = ticket_blocks(ticket, mention=mention, status=WAITING)
        response = await self.client.chat_postMessage(channel=channel, text=text, blocks=blocks,
                                                      unfurl_links=False, unfurl_media=False)
        return {"platform": "slack", "channel": channel, "ts": str(response["ts"]), "mention": mention}

    async def show_status(self, record: HandoffRecord, status_line: str) -> None:
        """The staff message, edited to its new status (buttons kept while the handoff is open)."""
        staff = record.staff
        text, blocks = ticket_blocks(record.ticket, mention=staff.get("mention"), status=status_line,
                                     open_=record.open)
        await self.client.chat_update(channel=staff["channel"], ts=staff["ts"], text=text, blocks=blocks)

    async def tell_thread(self, where: Mapping[str, Any], text: str) -> None:
        if where.get("channel") and where.get("thread_ts"):
            await self.client.chat_postMessage(channel=where["channel"], thread_ts=where["thread_ts"], text=text,
                                               unfurl_links=False, unfurl_media=False)

    async def is_staff(self, channel: str, user: str) -> bool:
        """Whether `user` is a member of `channel` (the staff channel the pressed message is in)."""
        cursor = None
        while True:
            try:
                page = await self.client.conversations_members(channel=channel, cursor=cursor, limit=500)
            except SlackApiError as error:
                log.warning("slack: cannot list the members of %s (%s)", channel, error.response.get("error"))
                return False
            if user in page.get("members", []):
                return True
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return False

"""The message shortcut "Ask Switchboard about this": on any message, the bot answers in that message's thread,
with the message as the question and the thread so far as its context.

The conversation is the thread's (`slack:<team>:<channel>:<thread_ts>`, the same key a mention there would
have), so a follow-up in the thread continues it. The earlier messages of the thread reach the core as a
`TurnInput` (`bots.slack.thread_history`, read as for a mention in the thread), never as the question. Where the bot is not in the
channel the user is told, only them, how to invite it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from bots.pipeline import Inbound
from bots.slack.inbound import PLATFORM, Thread, question_of, session_key

if TYPE_CHECKING:
    from bots.slack.app import SlackFrontend

log = logging.getLogger(__name__)

CALLBACK_ID = "ask_about_message"
NO_TEXT = "That message has no text I can read. Mention me with your question instead."
CANNOT_POST = ("I can't post in this conversation. Invite me with `/invite @Switchboard`, or ask me in a direct "
               "message.")


class SlackShortcut:
    """Registers the message shortcut on the front-end's bolt app."""

    def __init__(self, frontend: SlackFrontend) -> None:
        self.frontend = frontend
        frontend.app.shortcut(CALLBACK_ID)(self._on_shortcut)

    async def _on_shortcut(self, ack: Any, shortcut: dict[str, Any], respond: Any) -> None:
        await ack()
        message = shortcut.get("message") or {}
        text = question_of(message.get("text") or "", self.frontend.bot_user_id)
        if not text:
            await _tell(respond, NO_TEXT)
            return
        self.frontend.pipeline.inflight.spawn(self._answer(shortcut, message, text, respond))

    async def _answer(self, shortcut: dict[str, Any], message: dict[str, Any], text: str, respond: Any) -> None:
        frontend = self.frontend
        channel = (shortcut.get("channel") or {}).get("id") or ""
        message_ts = shortcut.get("message_ts") or message.get("ts") or ""
        thread_ts = message.get("thread_ts") or message_ts
        team = (shortcut.get("team") or {}).get("id")
        user = (shortcut.get("user") or {}).get("id")
        inbound = Inbound(platform=PLATFORM, session_key=session_key(team, channel, thread_ts), text=text,
                          user=user, place=Thread(channel, thread_ts), channel=channel)
        # called into the thread at this message: the thread before it goes along as context (issue 17's
        # `bots.slack.thread_history`), once, unless the bot already has this thread's conversation
        outcome = await frontend._answer(inbound, team, called_in=message_ts)
        if outcome is not None and not outcome.handles:  # nothing could be posted there (not in the channel)
            await _tell(respond, CANNOT_POST)


async def _tell(respond: Any, text: str) -> None:
    """An ephemeral note to the person who used the shortcut."""
    try:
        await respond(response_type="ephemeral", replace_original=False, text=text)
    except Exception:  # noqa: BLE001 - the response_url expired: nothing else can reach them
        log.info("slack: could not answer a shortcut", exc_info=True)

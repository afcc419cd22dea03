"""Slack payloads → `Inbound`: who asks what, in which thread. Pure functions of the payload, unit-tested on
recorded events.

Who gets an answer, and where:
- `app_mention` in a channel → in a thread under that message (or in the thread it was asked in);
- `message` in a DM → each top-level DM starts its own thread; replies inside it continue that conversation;
- `message` in a thread of a channel → only if the thread is one the bot answers in (`addressed=False`: the
  adapter checks); a mention there arrives as `app_mention` as well, and the duplicate is dropped;
- never the bot's own messages, other bots', edits, deletions or joins.
One thread is one session (`slack:<team>:<channel>:<thread_ts>`), so memory follows the thread.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from bots.pipeline import Inbound

PLATFORM = "slack"
ANSWERED_SUBTYPES = {None, "file_share", "thread_broadcast"}  # other subtypes are edits, joins, bots…


class Thread(NamedTuple):
    """Where a Slack answer goes: a channel and the ts of the thread's parent message."""

    channel: str
    thread_ts: str


def session_key(team: str | None, channel: str, thread_ts: str) -> str:
    return f"slack:{team or '-'}:{channel}:{thread_ts}"


def question_of(text: str, bot_user_id: str | None) -> str:
    """The message without the bot's mention (anywhere in it) and surrounding whitespace."""
    if bot_user_id:
        text = re.sub(rf"[ \t]*<@{re.escape(bot_user_id)}(\|[^>]*)?>[ \t]*", " ", text)
    return text.strip()


def inbound_from_event(body: dict[str, Any], bot_user_id: str | None) -> Inbound | None:
    """An Events API envelope (`app_mention` or `message`) as an inbound message, or None when not for the bot."""
    event = body.get("event") or {}
    kind = event.get("type")
    team = body.get("team_id") or event.get("team")
    channel = event.get("channel")
    if not channel or not event.get("ts"):
        return None
    if kind == "app_mention":
        if event.get("bot_id") or event.get("user") in (None, bot_user_id):
            return None
        thread_ts = event.get("thread_ts") or event["ts"]
        addressed = True
    elif kind == "message":
        if event.get("subtype") not in ANSWERED_SUBTYPES or event.get("bot_id"):
            return None
        if event.get("user") in (None, bot_user_id):
            return None
        if event.get("channel_type") == "im":
            thread_ts, addressed = event.get("thread_ts") or event["ts"], True
        elif event.get("thread_ts"):
            thread_ts, addressed = event["thread_ts"], False
        else:
            return None  # a channel message without a mention is not for the bot; a mention is app_mention
    else:
        return None
    return Inbound(platform=PLATFORM, session_key=session_key(team, channel, thread_ts),
                   text=question_of(event.get("text") or "", bot_user_id), user=event.get("user"),
                   place=Thread(channel, thread_ts), addressed=addressed, channel=channel)


def shared_files(body: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """The files shared with a message (Slack's file objects, or `{id, file_access: "check_file_info"}` stubs
    to look up with `files.info`), for `bots.attachments`."""
    files = (body.get("event") or {}).get("files") or ()
    return tuple(f for f in files if isinstance(f, dict) and f.get("id"))


def inbound_from_ask(command: dict[str, Any], posted_ts: str) -> Inbound:
    """`/ask question`, after the question was posted visibly at `posted_ts`: answered in that message's thread."""
    channel = command["channel_id"]
    return Inbound(platform=PLATFORM, session_key=session_key(command.get("team_id"), channel, posted_ts),
                   text=(command.get("text") or "").strip(), user=command.get("user_id"),
                   place=Thread(channel, posted_ts), channel=channel)


def delivery_keys(body: dict[str, Any]) -> tuple[Any, Any]:
    """What identifies one delivery: the event id, and the message itself (a mention in a thread arrives as
    both `app_mention` and `message`, with different event ids)."""
    event = body.get("event") or {}
    return body.get("event_id"), (event.get("channel"), event.get("ts"))

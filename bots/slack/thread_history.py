"""A Slack thread so far, as the context a turn carries (`core.turn_input.TurnInput`).

When someone mentions the bot in a thread people were already discussing, the bot reads the thread first
(`conversations.replies`, every page, oldest first as Slack returns them), keeps the newest messages within a
message count and token budget (`core.thread_context.bounded`), and attributes each to its author's name
(`users.info`, looked up once per author; the ID when that fails). The bot's own messages are marked
`from_bot`; the mention itself and anything after it are left out. Mentions inside the text become plain
`@name` so nothing the model echoes can ping anyone.

`thread_so_far()` is the one entry point (the mention handler and the message shortcut both use it). Reading a
thread needs the `*:history` scope of the conversation's kind; without it (or outside the channel) it raises
`HistoryUnavailable`, whose `sentence` the reply carries once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from core.thread_context import bounded
from core.turn_input import PriorMessage, TurnInput

log = logging.getLogger(__name__)

PAGE_SIZE = 200  # Slack's recommended maximum per page of conversations.replies
MAX_PAGES = 25  # 5,000 messages: more than any thread a person reads
SKIPPED_SUBTYPES = {"channel_join", "channel_leave", "message_deleted", "tombstone"}
_USER_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|([^>]*))?>")
_SPECIAL = re.compile(r"<!(here|channel|everyone)(?:\|[^>]*)?>")
_LINK = re.compile(r"<(https?://[^>|]+)(?:\|([^>]*))?>")

Names = Callable[[str], Awaitable[str]]


class HistoryUnavailable(Exception):
    """The thread could not be read: `error` is Slack's code, `needed` the missing scope if that was why."""

    def __init__(self, error: str, needed: str | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.needed = needed

    @property
    def sentence(self) -> str:
        """What the reply says, once, so a workspace admin knows what to fix."""
        if self.error == "missing_scope":
            scope = f"the `{self.needed}` permission" if self.needed else "permission to read message history"
            return (f"I couldn't read the earlier messages of this thread: this app lacks {scope}. "
                    "I'm answering from your message alone; a workspace admin can add it and reinstall the app.")
        return ("I couldn't read the earlier messages of this thread, so I'm answering from your message alone.")


async def thread_so_far(client: AsyncWebClient, channel: str, thread_ts: str, *, before_ts: str | None = None,
                        bot_user_id: str | None = None, bot_id: str | None = None, max_messages: int = 50,
                        max_tokens: int = 2_000, names: Names | None = None,
                        page_size: int = PAGE_SIZE) -> TurnInput:
    """The thread's messages before `before_ts` (the mention; None: all of them), newest kept within the budget,
    attributed and marked `from_bot` for this app's own. Raises `HistoryUnavailable`."""
    raw = await _replies(client, channel, thread_ts, before_ts, page_size)
    resolve = names or _name_cache(client)
    earlier: list[PriorMessage] = []
    for message in raw:
        text = (message.get("text") or "").strip()
        if not text or message.get("subtype") in SKIPPED_SUBTYPES:
            continue
        own = bool((bot_id and message.get("bot_id") == bot_id)
                   or (bot_user_id and message.get("user") == bot_user_id))
        if own:
            author = "this assistant"
        elif message.get("bot_id"):
            author = (message.get("bot_profile") or {}).get("name") or message.get("username") or "a bot"
        else:
            author = await resolve(message.get("user") or "someone")
        earlier.append(PriorMessage(author=author, text=await plain_text(text, resolve), from_bot=own))
    return bounded(earlier, max_messages=max_messages, max_tokens=max_tokens)


async def _replies(client: AsyncWebClient, channel: str, thread_ts: str, before_ts: str | None,
                   page_size: int) -> list[dict[str, Any]]:
    """Every message of the thread (parent first) older than `before_ts`, page by page."""
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        args: dict[str, Any] = {"channel": channel, "ts": thread_ts, "limit": page_size}
        if before_ts:
            args.update(latest=before_ts, inclusive=False)
        if cursor:
            args["cursor"] = cursor
        try:
            page = await client.conversations_replies(**args)
        except SlackApiError as error:
            code = str(error.response.get("error") or "unknown")
            log.info("slack: cannot read thread %s in %s: %s", thread_ts, channel, code)
            raise HistoryUnavailable(code, error.response.get("needed")) from None
        found += [m for m in page.get("messages") or [] if not before_ts or float(m["ts"]) < float(before_ts)]
        cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
        if not page.get("has_more") or not cursor:
            break
    return found


def _name_cache(client: AsyncWebClient) -> Names:
    """A `users.info` lookup remembered for one read of a thread (a few authors, each looked up once)."""
    cache: dict[str, str] = {}

    async def name_of(user: str) -> str:
        if user not in cache:
            cache[user] = user
            try:
                found = (await client.users_info(user=user)).get("user") or {}
                profile = found.get("profile") or {}
                cache[user] = (profile.get("display_name") or found.get("real_name") or found.get("name")
                               or user)
            except SlackApiError:
                pass  # no users:read, or a user from another workspace: the ID still tells people apart
        return cache[user]

    return name_of


async def plain_text(text: str, names: Names) -> str:
    """Slack markup made plain: `<@U1>` → `@Alice`, `<!here>` → `@here` (text, pings nobody), links unwrapped."""
    for match in list(_USER_MENTION.finditer(text)):
        label = match.group(2) or await names(match.group(1))
        text = text.replace(match.group(0), f"@{label}")
    text = _SPECIAL.sub(lambda m: f"@{m.group(1)}", text)
    return _LINK.sub(lambda m: m.group(2) or m.group(1), text)


def called_into(body: dict[str, Any]) -> str | None:
    """The mention's ts when it was made inside a thread someone else started (its earlier messages are worth
    reading), else None: a top-level mention starts its own thread, with nothing before it."""
    event = body.get("event") or {}
    if event.get("type") != "app_mention":
        return None
    thread_ts, ts = event.get("thread_ts"), event.get("ts")
    return ts if thread_ts and ts and thread_ts != ts else None

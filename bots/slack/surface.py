"""One streamed answer in one Slack thread: the `bots.surface.Surface` the shared renderer drives.

Slack's limits are declared here, because only the surface knows them (the renderer spends them):
- `chat.update` is Tier 3 (about 50 a minute per workspace); `SlackLimits.updates` is a budget every reply in
  the workspace shares, so twenty concurrent answers slow down instead of drawing 429s.
- `chat.postMessage` allows about one message a second per channel with short bursts; `SlackLimits.posts`
  keeps one budget per channel.
- A 429 that still happens becomes `RateLimited(Retry-After)` (`platform_error`), which the renderer feeds to
  the budget the call spent and then sends the merged text; `msg_too_long` becomes `MessageTooLong`.

The web client given here must not retry 429s itself (the renderer does it better: a retried edit would send
stale text); the app's main client, which bolt uses for everything else, keeps slack_sdk's retry handlers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.metrics import RATE_LIMITED
from bots.pacing import Budget, BudgetPool, EditBudget, retry_after_of
from bots.slack.mrkdwn import defuse_broadcasts, escape, to_mrkdwn
from bots.splitting import split_markdown
from core.events import SourceRef
from bots.surface import MessageTooLong, RateLimited, ReplyView, SurfaceGone, Write, render_plain, source_url

SECTION_CHARS = 3000  # Slack refuses a section block's text beyond this
# Errors after which no retry can succeed: the conversation or the message is gone, or the bot was removed.
GONE_ERRORS = frozenset({"channel_not_found", "not_in_channel", "is_archived", "message_not_found",
                         "cant_update_message", "account_inactive", "invalid_auth", "token_revoked",
                         "team_access_not_granted", "restricted_action"})
FEEDBACK_UP = "feedback_up"
FEEDBACK_DOWN = "feedback_down"
HANDOFF_REQUEST = "handoff_request"  # "Talk to a person" (`bots.slack.handoff`)


class SlackLimits:
    """The edit and post budgets shared by every reply of one app (one workspace)."""

    def __init__(self, updates_per_window: int = 10, window_s: float = 12.0, posts_per_channel: int = 3,
                 post_window_s: float = 3.0, *, coordination: Any | None = None) -> None:
        # 10 per 12 s is Tier 3's 50 a minute, never more than Slack's bucket lets through at once. With shared
        # coordination (Redis) every replica spends the same budgets.
        if coordination is None:
            self.updates: Any = EditBudget(updates_per_window, window_s)
            self.posts: Any = BudgetPool(posts_per_channel, post_window_s)
        else:
            self.updates = coordination.budget("slack:updates", updates_per_window, window_s, local=EditBudget)
            self.posts = coordination.budget_pool("slack:posts", posts_per_channel, post_window_s, local=BudgetPool)


def render_slack(view: ReplyView) -> str:
    """A message's mrkdwn text: model Markdown converted and defused, agent tag in bold, marker while streaming."""
    return render_plain(view, sanitize=to_mrkdwn, bold=lambda s: f"*{s}*", italic=lambda s: f"_{s}_")


def _slack_source(source: SourceRef) -> str:
    """A cited document's title, linked to its page when it has one (`<url|title>`; `|`, `<` and `>` in either
    part cannot break out of the link: the title is escaped and the address must be a plain http(s) URL)."""
    title = defuse_broadcasts(escape(source.title)).replace("|", "¦")
    url = source_url(source)
    if url is None or any(ch in url for ch in "<>| \n"):
        return title
    return f"<{url}|{title}>"


def feedback_blocks(view: ReplyView, session_key: str) -> list[dict[str, Any]]:
    """The final message as blocks: the answer, a context line (agent, sources), 👍/👎 and "Talk to a person"."""
    body = render_slack(ReplyView(body=view.body, agent=view.agent, status=view.status, sources=(),
                                  error_message=view.error_message, is_continuation=view.is_continuation))
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": part}}
                                    for part in split_markdown(body, SECTION_CHARS) if part.strip()]
    context = []
    if view.agent is not None:
        context.append(f"Answered by the *{escape(view.agent.label)}* agent")
    if view.sources:
        context.append("Sources: " + ", ".join(_slack_source(s) for s in view.sources))
    if context:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]})
    blocks.append({"type": "actions", "block_id": "feedback", "elements": [
        {"type": "button", "action_id": FEEDBACK_UP, "value": session_key,
         "text": {"type": "plain_text", "text": "👍 Helpful", "emoji": True}},
        {"type": "button", "action_id": FEEDBACK_DOWN, "value": session_key,
         "text": {"type": "plain_text", "text": "👎 Not helpful", "emoji": True}},
        {"type": "button", "action_id": HANDOFF_REQUEST, "value": session_key,
         "text": {"type": "plain_text", "text": "🙋 Talk to a person", "emoji": True}},
    ]})
    return blocks


def rate_limit_of(error: SlackApiError) -> float | None:
    """Retry-After of a 429 (None for any other error)."""
    response = error.response
    if getattr(response, "status_code", None) != 429 and response.get("error") != "ratelimited":
        return None
    return retry_after_of(getattr(response, "headers", None))


def platform_error(error: SlackApiError) -> Exception:
    """What a Slack error means to the renderer: RateLimited, MessageTooLong, SurfaceGone, or itself."""
    retry_after = rate_limit_of(error)
    if retry_after is not None:
        RATE_LIMITED.labels(platform="slack").inc()
        return RateLimited(retry_after)
    code = error.response.get("error")
    if code == "msg_too_long":
        return MessageTooLong()
    if code in GONE_ERRORS:
        return SurfaceGone(code)
    return error


class SlackThreadSurface:
    """Posts and edits the messages of one answer in one thread (`thread_ts`) of one channel.

    `post_budget` is the channel's (posts per channel), `edit_budget` the workspace's `chat.update` budget; the
    renderer takes their slots and feeds them Slack's 429s."""

    finalize_sets_text = True  # the final chat.update carries text and blocks at once

    def __init__(self, client: AsyncWebClient, channel: str, thread_ts: str, session_key: str, *,
                 post_budget: Budget | None = None, edit_budget: Budget | None = None,
                 max_chars: int = 3900) -> None:
        self.client = client
        self.channel = channel
        self.thread_ts = thread_ts
        self.session_key = session_key
        self.post_budget = post_budget
        self.edit_budget = edit_budget
        self.max_chars = max_chars

    def render(self, view: ReplyView) -> str:
        return render_slack(view)

    def budget_for(self, write: Write) -> Budget | None:
        return self.post_budget if write == "post" else self.edit_budget

    def where(self) -> dict[str, str]:
        """The thread, as a handoff's link and notices need it (`bots.slack.handoff.SlackStaff`)."""
        return {"channel": self.channel, "thread_ts": self.thread_ts}

    def locate(self, handle: str) -> dict[str, str]:
        """Where a message is, for another replica that must mark it interrupted if this one dies."""
        return {"channel": self.channel, "ts": handle, "thread_ts": self.thread_ts}

    async def post(self, text: str) -> str:
        response = await self._call(self.client.chat_postMessage, channel=self.channel, thread_ts=self.thread_ts,
                                    text=text, unfurl_links=False, unfurl_media=False)
        return str(response["ts"])

    async def edit(self, handle: str, text: str) -> None:
        await self._call(self.client.chat_update, channel=self.channel, ts=handle, text=text)

    async def post_final(self, view: ReplyView) -> str:
        """A last message whose first write is already final: text, context line and buttons in one post."""
        extra = {"blocks": feedback_blocks(view, self.session_key)} if view.status == "done" else {}
        response = await self._call(self.client.chat_postMessage, channel=self.channel, thread_ts=self.thread_ts,
                                    text=render_slack(view), unfurl_links=False, unfurl_media=False, **extra)
        return str(response["ts"])

    async def finalize(self, handle: str, view: ReplyView) -> None:
        """The final edit: the text, and for an answer blocks with the context line and feedback buttons."""
        if view.status != "done":
            await self.edit(handle, render_slack(view))
            return
        await self._call(self.client.chat_update, channel=self.channel, ts=handle, text=render_slack(view),
                         blocks=feedback_blocks(view, self.session_key))

    async def _call(self, method: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return await method(**kwargs)
        except SlackApiError as error:
            mapped = platform_error(error)
            if mapped is error:
                raise
            raise mapped from error

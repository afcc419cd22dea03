"""Discord as a `bots.streaming.Surface`: where one answer's messages go, and how they look.

Two surfaces, one look (`render_discord`):
- `ChannelSurface`: messages in a thread, a DM, or (where threads are not allowed) replies in a channel;
  `post` is `channel.send`, `edit` is `message.edit`, `typing` keeps Discord's typing indicator up until the
  first words are visible.
- `InteractionSurface`: the answer to `/ask`. The command was deferred at once (Discord shows "is thinking…"),
  so the first message is the interaction's original response, edited in place; continuations are follow-ups.

Both end a successful answer the same way: `finalize` is the last message's final edit (`finalize_sets_text`), and
it carries the 👍/👎 buttons (`bots.discord.feedback`) in the same call as the final text, so the buttons cost no
extra write against Discord's 5-per-5-s channel budget. An answer that ended in an error gets no buttons.

Every send and edit carries `AllowedMentions.none()`: nothing the model writes (`@everyone`, `<@id>`, a role)
pings anyone. discord.py's errors are mapped to what the renderer understands: a 429 to `RateLimited`, a
refused length (50035) to `MessageTooLong`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import discord

from bots.discord.feedback import feedback_view
from bots.links import defang
from bots.splitting import close_open_fence
from bots.pacing import Budget, retry_after_of
from core.events import SourceRef
from bots.surface import MessageTooLong, RateLimited, ReplyView, SurfaceGone, Write, source_url

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
SUBTEXT = "-# "  # Discord's small grey "subtext" line
MARKER = "▌"  # in-progress marker, gone once the answer is complete
THINKING = f"{SUBTEXT}Thinking…"
MAX_SOURCES = 5
MAX_SOURCE_TITLE = 80
INVALID_FORM_BODY = 50035


def _discord_source(source: SourceRef) -> str:
    """A cited document's title, as a masked link to its page when it has one (`[title](<url>)`: the angle
    brackets keep Discord from adding a preview card for it)."""
    title = _title(source.title).replace("[", "(").replace("]", ")")
    url = source_url(source)
    if url is None or any(ch in url for ch in "<>() \n"):
        return title
    return f"[{title}](<{url}>)"


def render_discord(view: ReplyView) -> str:
    """One Discord message: the answer's Markdown, then a `-#` subtext footer with the agent and sources.

    While streaming the last message ends with a marker and "answering…"; a message that continues in the next
    one says so in its footer; an error is a ⚠️ line before the footer. Never empty (Discord refuses that).
    """
    if view.status == "thinking":
        return THINKING
    body = defang(view.body).lstrip("\n").rstrip()  # links off the allow-list as text (`bots.links`)
    streaming = view.status in ("routed", "streaming") and view.is_last_part
    if streaming:
        body = close_open_fence(body)
    lines: list[str] = []
    if body:
        if not streaming:
            lines.append(body)
        elif body.rsplit("\n", 1)[-1].lstrip().startswith("```"):
            lines.extend((body, MARKER))  # after a closing fence the marker needs a line of its own
        else:
            lines.append(f"{body} {MARKER}")
    if not view.is_last_part:
        lines.append(f"{SUBTEXT}continued below ↓")
        return "\n".join(lines)
    if view.status == "error":
        lines.append(f"⚠️ {view.error_message}")
    elif view.status == "done" and not body and not view.is_continuation:
        lines.append("*(no answer)*")  # a continuation may carry only the footer that did not fit above
    footer: list[str] = [view.agent.label] if view.agent else []
    if streaming:
        footer.append("answering…" if body else "looking into it…")
    elif view.status == "done" and view.sources:
        footer.append("Sources: " + ", ".join(_discord_source(s) for s in view.sources[:MAX_SOURCES]))
    if footer:
        lines.append(SUBTEXT + " · ".join(footer))
    return "\n".join(lines) or THINKING


def _title(title: str) -> str:
    title = " ".join(title.split())
    return title if len(title) <= MAX_SOURCE_TITLE else title[: MAX_SOURCE_TITLE - 1] + "…"


@contextlib.contextmanager
def platform_errors() -> Iterator[None]:
    """Translate discord.py's exceptions into the renderer's: 429 -> RateLimited, too long -> MessageTooLong,
    404/403 (the channel or message is gone, or the bot lost access) -> SurfaceGone."""
    try:
        yield
    except discord.RateLimited as exc:  # discord.py refused to wait that long itself
        raise RateLimited(exc.retry_after) from exc
    except discord.HTTPException as exc:
        if exc.status == 429:  # discord.py gave up retrying
            raise RateLimited(_retry_after(exc)) from exc
        if exc.code == INVALID_FORM_BODY and "length" in (exc.text or "").lower():
            raise MessageTooLong() from exc
        if isinstance(exc, (discord.NotFound, discord.Forbidden)):  # channel/message deleted, access removed
            raise SurfaceGone(f"{exc.status} {exc.code}") from exc
        raise


def _retry_after(exc: discord.HTTPException) -> float:
    return retry_after_of(getattr(exc.response, "headers", None))


class DiscordSurface:
    """What both surfaces share: the look, the limit, the final edit with the feedback buttons, and knowing when
    the first words became visible. `session_key` is the conversation the buttons' votes are recorded against;
    without it the answer gets no buttons."""

    finalize_sets_text = True  # `finalize` is the last message's final edit: text and buttons in one write
    first_write_wait_s = 1.0  # the first write waits this long for words (typing shows), saving a placeholder

    def __init__(self, max_chars: int, session_key: str | None = None, budget: Budget | None = None) -> None:
        self.max_chars = max_chars
        self.session_key = session_key
        self.budget = budget  # the channel's: every create and edit there counts against one window
        self._texts: dict[int, str] = {}  # message id -> the text last sent to it
        self.first_text = asyncio.Event()  # set once a message with answer text (or the end) has been sent
        self.posted = asyncio.Event()  # set once the first message exists
        self._bodiless: set[str] = {THINKING}  # rendered texts that carry no answer text yet

    def render(self, view: ReplyView) -> str:
        text = render_discord(view)
        if not view.body.strip() and len(self._bodiless) < 64:
            self._bodiless.add(text)
        return text

    def budget_for(self, write: Write) -> Budget | None:
        return self.budget

    def _buttons(self, view: ReplyView) -> discord.ui.View | None:
        return feedback_view(self.session_key) if view.status == "done" and self.session_key else None

    async def post_final(self, view: ReplyView) -> Any:
        """A last message whose first write is already final (its answer finished while it queued for the
        channel's budget): the final text and the buttons in one create, not a create and an edit."""
        return await self._post(self.render(view), self._buttons(view))

    async def post(self, text: str) -> Any:
        return await self._post(text, None)

    async def _post(self, text: str, buttons: discord.ui.View | None) -> Any:
        raise NotImplementedError

    async def finalize(self, handle: Any, view: ReplyView) -> None:
        """The last message's final edit: its final text and, for a successful answer, the 👍/👎 buttons."""
        text = self.render(view)
        buttons = self._buttons(view)
        if buttons is None and self._texts.get(handle.id) == text:
            return  # already showing exactly this (a last message posted with its final text): save the write
        with platform_errors():
            if buttons is None:
                await handle.edit(content=text, allowed_mentions=NO_MENTIONS)
            else:
                await handle.edit(content=text, view=buttons, allowed_mentions=NO_MENTIONS)
        self._sent(text, handle)

    def _sent(self, text: str, message: Any) -> None:
        self._texts[message.id] = text
        self.posted.set()
        if text not in self._bodiless:
            self.first_text.set()

    def close(self) -> None:
        """The reply is over: stop anything (the typing indicator) waiting for the first words."""
        self.posted.set()
        self.first_text.set()


class ChannelSurface(DiscordSurface):
    """An answer as messages in `channel` (a thread, a DM or a text channel).

    With `reply_to`, the first message is a reply to that message (without pinging its author); the
    continuations follow it in the channel.
    """

    def __init__(
        self,
        channel: discord.abc.Messageable,
        *,
        reply_to: discord.Message | None = None,
        max_chars: int = 2000,
        typing_every_s: float = 8.0,
        session_key: str | None = None,
        budget: Budget | None = None,
    ) -> None:
        super().__init__(max_chars, session_key, budget)
        self.channel = channel
        self.reply_to = reply_to
        self.typing_every_s = typing_every_s  # Discord shows the indicator for about 10 s per trigger

    def where(self) -> dict[str, int | None]:
        """The conversation's channel (a thread, a DM), as a handoff's link and notices need it."""
        guild = getattr(self.channel, "guild", None)
        return {"guild_id": guild.id if guild is not None else None, "channel_id": self.channel.id}

    def locate(self, handle: discord.Message) -> dict[str, int]:
        """Where a message is, for another replica that must mark it interrupted if this one dies."""
        return {"channel_id": handle.channel.id, "message_id": handle.id}

    async def _post(self, text: str, buttons: discord.ui.View | None) -> discord.Message:
        extra: dict[str, Any] = {"view": buttons} if buttons is not None else {}
        if self.reply_to is not None and not self.posted.is_set():
            extra |= {"reference": self.reply_to.to_reference(fail_if_not_exists=False), "mention_author": False}
        with platform_errors():
            message = await self.channel.send(text, allowed_mentions=NO_MENTIONS, **extra)
        self._sent(text, message)
        return message

    async def edit(self, handle: discord.Message, text: str) -> None:
        with platform_errors():
            await handle.edit(content=text, allowed_mentions=NO_MENTIONS)
        self._sent(text, handle)

    async def typing(self) -> None:
        """Keep the typing indicator up from the start until the first words are visible.

        The renderer holds the first write back briefly (`first_write_wait_s`) so it can carry words; the
        indicator shows meanwhile. Discord clears the bot's indicator when the bot posts, so after a placeholder
        (a post without words) it is triggered again.
        """
        while not self.first_text.is_set():
            posted_before = self.posted.is_set()
            await self.channel.typing()
            waits = [asyncio.ensure_future(self.first_text.wait())]
            if not posted_before:
                waits.append(asyncio.ensure_future(self.posted.wait()))
            try:
                await asyncio.wait(waits, timeout=self.typing_every_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()


class InteractionSurface(DiscordSurface):
    """An answer to a deferred slash command: the original response first, then follow-up messages."""

    def __init__(self, interaction: discord.Interaction, *, max_chars: int = 2000,
                 session_key: str | None = None, budget: Budget | None = None) -> None:
        super().__init__(max_chars, session_key, budget)
        self.interaction = interaction

    def where(self) -> dict[str, int | None]:
        """Where the command was run, as a handoff's link and notices need it."""
        return {"guild_id": self.interaction.guild_id, "channel_id": self.interaction.channel_id}

    async def _post(self, text: str, buttons: discord.ui.View | None
                    ) -> discord.InteractionMessage | discord.WebhookMessage:
        extra: dict[str, Any] = {"view": buttons} if buttons is not None else {}
        with platform_errors():
            if not self.posted.is_set():
                message: Any = await self.interaction.edit_original_response(content=text,
                                                                             allowed_mentions=NO_MENTIONS, **extra)
            else:
                message = await self.interaction.followup.send(text, wait=True, allowed_mentions=NO_MENTIONS,
                                                               **extra)
        self._sent(text, message)
        return message

    async def edit(self, handle: discord.InteractionMessage | discord.WebhookMessage, text: str) -> None:
        with platform_errors():
            await handle.edit(content=text, allowed_mentions=NO_MENTIONS)
        self._sent(text, handle)

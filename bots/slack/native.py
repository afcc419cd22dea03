"""Slack's native streaming (`SLACK_STREAMING=native`): `chat.startStream` / `appendStream` / `stopStream`, with
`assistant.threads.setStatus` naming the agent while it works.

Why optional: native streams need a workspace (and app) that allows them; where Slack refuses the first call,
the reply falls back to the edit renderer with every event seen so far replayed, so nothing is lost. A ticker
appends whatever arrived once per `interval_s` (one merged call, also while the model pauses); a 429 waits
`Retry-After` and merges more. The stream carries Markdown (Slack renders it), defused so nothing the model
writes can ping: `<!here>`-style tokens and bare `@here`/`@channel`/`@everyone` get a word joiner. A cut never falls between `<` or `@` and what follows, so
defusing each piece equals defusing the whole.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.metrics import RATE_LIMITED
from bots.pacing import EditPacer
from bots.slack.mrkdwn import ZWJ, defuse_broadcasts
from bots.slack.surface import SlackThreadSurface, feedback_blocks, rate_limit_of
from bots.streaming import AgentTag, ReplyOutcome, ReplyView, StreamingReply
from core.events import Agent, Complete, Error, Event, Sources, Token
from core.retry import USER_MESSAGES

log = logging.getLogger(__name__)

_UNSAFE_TAIL = re.compile(r"[<@][\w!^|]*$")


def defuse_markdown(text: str) -> str:
    """Markdown for a native stream with nothing in it that Slack would turn into a mention."""
    return defuse_broadcasts(re.sub(r"<(?=[!@#])", f"<{ZWJ}", text))


class NativeStreamReply:
    """One answer as a native Slack stream; `run(events)` mirrors `StreamingReply.run`."""

    def __init__(self, client: AsyncWebClient, surface: SlackThreadSurface, *, team: str | None, user: str | None,
                 interval_s: float = 1.0, attempts: int = 5) -> None:
        self.client = client
        self.surface = surface
        self.team = team
        self.user = user
        self.interval_s = interval_s
        self.attempts = attempts
        self.outcome = ReplyOutcome()
        self._ts: str | None = None
        self._text = ""  # the whole answer so far (raw Markdown)
        self._sent = 0  # how much of it has been streamed
        self._last_flush = 0.0
        self._io = asyncio.Lock()  # one Slack call at a time: appends never overtake each other or the stop
        self._ticker: asyncio.Task[None] | None = None

    async def run(self, events: AsyncIterator[Event]) -> ReplyOutcome:
        iterator = aiter(events)
        seen: list[Event] = []
        await self._status("Thinking…")
        agent: AgentTag | None = None
        sources: tuple = ()
        try:
            async for event in iterator:
                seen.append(event)
                if isinstance(event, Agent):
                    agent = AgentTag(event.name, event.label)
                    self.outcome.agent = event.name
                    await self._status(f"{event.label} is looking into it…")
                elif isinstance(event, Sources):
                    sources = tuple(event.items)
                elif isinstance(event, Token) and event.text:
                    self._text += event.text
                    if self.outcome.first_token_received_at is None:
                        self.outcome.first_token_received_at = time.monotonic()
                    if self._ts is None:
                        if not await self._start(agent):
                            return await self._fall_back(seen, iterator)
                        self._ticker = asyncio.create_task(self._tick())
                elif isinstance(event, Complete):
                    if event.text.strip() and event.text.startswith(self._text):
                        self._text = event.text
                    self.outcome.status = "done"
                    break
                elif isinstance(event, Error):
                    self.outcome.status, self.outcome.error_code = "error", event.code
                    self._text += f"\n\n⚠️ {event.user_message}"
                    break
            else:
                self.outcome.status, self.outcome.error_code = "error", "internal"
                self._text += f"\n\n⚠️ {USER_MESSAGES['internal']}"
        except asyncio.CancelledError:
            self.outcome.status, self.outcome.error_code = "interrupted", "interrupted"
            self._text += f"\n\n⚠️ {USER_MESSAGES['interrupted']}"
            await self._stop_ticker()
            if self._ts is not None:
                await asyncio.shield(self._stop(agent, sources))
            raise
        await self._stop_ticker()
        if self._ts is None and not await self._start(agent):
            return await self._fall_back(seen, iterator)
        await self._stop(agent, sources)
        return self.outcome

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self._flush()

    async def _stop_ticker(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
            self._ticker = None

    async def _status(self, status: str) -> None:
        try:
            await self.client.assistant_threads_setStatus(channel_id=self.surface.channel,
                                                          thread_ts=self.surface.thread_ts, status=status)
        except Exception:  # noqa: BLE001 - the status line is decoration
            log.debug("assistant.threads.setStatus failed", exc_info=True)

    async def _start(self, agent: AgentTag | None) -> bool:
        header = f"**{agent.label}**\n\n" if agent else ""
        text, cut = self._pending(final=False)
        try:
            response = await self._call(self.client.chat_startStream, channel=self.surface.channel,
                                        thread_ts=self.surface.thread_ts, recipient_team_id=self.team,
                                        recipient_user_id=self.user, markdown_text=header + text)
        except SlackApiError as error:
            log.info("native streaming refused (%s): falling back to edits", error.response.get("error"))
            return False
        self._ts = str(response["ts"])
        self._sent = cut
        self._last_flush = time.monotonic()
        self.outcome.handles.append(self._ts)
        self.outcome.posts += 1
        self.outcome.placeholder_at = self._last_flush
        if text.strip():
            self.outcome.first_token_at = self._last_flush
        return True

    async def _fall_back(self, seen: list[Event], rest: AsyncIterator[Event]) -> ReplyOutcome:
        async def replay() -> AsyncIterator[Event]:
            for event in seen:
                yield event
            async for event in rest:
                yield event

        return await StreamingReply(self.surface, EditPacer(self.interval_s)).run(replay())

    def _pending(self, *, final: bool) -> tuple[str, int]:
        """The defused text not yet streamed, and where it ends in `_text` (held back before a `<`/`@` word)."""
        end = len(self._text)
        if not final and (tail := _UNSAFE_TAIL.search(self._text, self._sent)):
            end = tail.start()
        return defuse_markdown(self._text[self._sent:end]), end

    async def _flush(self) -> None:
        """Append what arrived since the last append (held back before a `<`/`@` word still being written)."""
        async with self._io:
            text, end = self._pending(final=False)
            if not text:
                return
            try:
                await self._call(self.client.chat_appendStream, channel=self.surface.channel, ts=self._ts,
                                 markdown_text=text)
            except SlackApiError as error:
                log.info("chat.appendStream failed (%s); merged into the next one", error.response.get("error"))
                return
            self._sent = end
            self._last_flush = time.monotonic()
            self.outcome.edits += 1
            if self.outcome.first_token_at is None:
                self.outcome.first_token_at = self._last_flush

    async def _stop(self, agent: AgentTag | None, sources: tuple) -> None:
        async with self._io:
            await self._stop_locked(agent, sources)

    async def _stop_locked(self, agent: AgentTag | None, sources: tuple) -> None:
        for attempt in range(self.attempts):
            text, end = self._pending(final=True)
            view = ReplyView(body=self._text, agent=agent, status="done" if self.outcome.status == "done"
                             else "error", sources=sources)
            kwargs: dict[str, Any] = {"markdown_text": text} if text else {}
            if view.status == "done":
                kwargs["blocks"] = [b for b in feedback_blocks(view, self.surface.session_key)
                                    if b["type"] != "section"]
            try:
                await self._call(self.client.chat_stopStream, channel=self.surface.channel, ts=self._ts, **kwargs)
                self._sent = end
                self.outcome.delivered = True
                self.outcome.answer = self._text
                return
            except SlackApiError as error:
                log.warning("chat.stopStream failed (%s), attempt %d", error.response.get("error"), attempt + 1)
                await asyncio.sleep(min(2.0**attempt, 10.0))

    async def _call(self, method: Any, **kwargs: Any) -> Any:
        """A streaming call; a 429 waits Retry-After and tries again (the pending text grows meanwhile)."""
        for _ in range(self.attempts):
            try:
                return await method(**kwargs)
            except SlackApiError as error:
                retry_after = rate_limit_of(error)
                if retry_after is None:
                    raise
                RATE_LIMITED.labels(platform="slack").inc()
                self.outcome.rate_limited += 1
                await asyncio.sleep(retry_after)
        return await method(**kwargs)

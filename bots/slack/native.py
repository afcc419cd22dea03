"""Slack's native streaming (`SLACK_STREAMING=native`): `chat.startStream` / `appendStream` / `stopStream`, with
`assistant.threads.setStatus` naming the agent while it works.

Why optional: native streams need a workspace (and app) that allows them; where Slack refuses the first call,
the reply falls back to the edit renderer with every event seen so far replayed, so nothing is lost. A ticker
appends whatever arrived, paced like the edit renderer (`EditPacer` per reply, the surface's shared budgets, an
injected clock): one merged call per interval, also while the model pauses. A 429 is fed to the budget the call
spent (so the workspace's other replies slow down too), then the call waits `Retry-After`. The stream carries Markdown (Slack renders it), defused so nothing the model
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

from bots.pacing import Clock, EditPacer, Sleep
from bots.slack.mrkdwn import ZWJ, defuse_broadcasts
from bots.slack.surface import SlackThreadSurface, feedback_blocks, platform_error
from bots.streaming import StreamingReply
from bots.surface import AgentTag, RateLimited, ReplyOutcome, ReplyView, Write, spending
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
                 interval_s: float = 1.0, attempts: int = 5, clock: Clock = time.monotonic,
                 sleep: Sleep = asyncio.sleep) -> None:
        self.client = client
        self.surface = surface
        self.team = team
        self.user = user
        self.interval_s = interval_s
        self.pacer = EditPacer(interval_s)
        self.attempts = attempts
        self._clock = clock
        self._sleep = sleep
        self.outcome = ReplyOutcome()
        self._ts: str | None = None
        self._text = ""  # the whole answer so far (raw Markdown)
        self._sent = 0  # how much of it has been streamed
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
                        self.outcome.first_token_received_at = self._clock()
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
            budget = self.surface.budget_for("edit")
            now = self._clock()
            wait = max(self.pacer.delay(now), budget.wait_time() if budget is not None else 0.0)
            await self._sleep(wait if wait > 0 else self.interval_s)
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
            response = await self._call(self.client.chat_startStream, "post", channel=self.surface.channel,
                                        thread_ts=self.surface.thread_ts, recipient_team_id=self.team,
                                        recipient_user_id=self.user, markdown_text=header + text)
        except SlackApiError as error:
            log.info("native streaming refused (%s): falling back to edits", error.response.get("error"))
            return False
        self._ts = str(response["ts"])
        self._sent = cut
        now = self._clock()
        self.outcome.handles.append(self._ts)
        self.outcome.posts += 1
        self.outcome.placeholder_at = now
        if text.strip():
            self.outcome.first_token_at = now
        return True

    async def _fall_back(self, seen: list[Event], rest: AsyncIterator[Event]) -> ReplyOutcome:
        async def replay() -> AsyncIterator[Event]:
            for event in seen:
                yield event
            async for event in rest:
                yield event

        fallback = StreamingReply(self.surface, EditPacer(self.interval_s), clock=self._clock, sleep=self._sleep)
        fallback.outcome.agent = self.outcome.agent
        self.outcome = fallback.outcome  # the pipeline reads the outcome of whichever renderer ran
        return await fallback.run(replay())

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
                await self._call(self.client.chat_appendStream, "edit", channel=self.surface.channel, ts=self._ts,
                                 markdown_text=text)
            except SlackApiError as error:
                log.info("chat.appendStream failed (%s); merged into the next one", error.response.get("error"))
                return
            self._sent = end
            self.outcome.edits += 1
            if self.outcome.first_token_at is None:
                self.outcome.first_token_at = self._clock()

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
                await self._call(self.client.chat_stopStream, "edit", channel=self.surface.channel, ts=self._ts,
                                 **kwargs)
                self._sent = end
                self.outcome.delivered = True
                self.outcome.final_at = self._clock()
                self.outcome.answer = self._text
                return
            except SlackApiError as error:
                log.warning("chat.stopStream failed (%s), attempt %d", error.response.get("error"), attempt + 1)
                await self._sleep(min(2.0**attempt, 10.0))

    async def _call(self, method: Any, write: Write, **kwargs: Any) -> Any:
        """A streaming call within the surface's budget for `write` (`spending`: a 429 teaches the budget),
        waited out (the pending text grows meanwhile) and tried again."""
        for attempt in range(self.attempts + 1):
            self.pacer.record(self._clock())
            try:
                async with spending(self.surface.budget_for(write)):
                    try:
                        return await method(**kwargs)
                    except SlackApiError as error:
                        mapped = platform_error(error)
                        if isinstance(mapped, RateLimited) and attempt < self.attempts:
                            raise mapped from error
                        raise
            except RateLimited as limited:
                self.outcome.rate_limited += 1
                await self._sleep(limited.retry_after)
        raise AssertionError("unreachable")

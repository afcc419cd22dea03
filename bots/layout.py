"""The layout of one reply: a growing answer cut into messages that each fit once rendered. Pure; no I/O.

Why apart from the flusher: what each message shows is a function of the answer so far, the reply's state and
the surface's rendering and limit; keeping it pure makes the fiddly rules testable without a clock:
- a finished (sealed) message keeps its cut while the answer grows, so it is never edited again;
- a message is cut when its *rendered* text (tag, marker and footer included) would exceed the limit, at a
  place `bots.splitting.cut_markdown` chooses (never inside a code fence that could move whole);
- after the platform refuses a message as too long (`refused`), cuts from that message on are made smaller.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from bots.splitting import Cut, cut_markdown
from bots.surface import AgentTag, ReplyView, Status
from core.events import SourceRef

log = logging.getLogger(__name__)

MIN_PART_CHARS = 60  # the splitter is never asked for smaller parts than this
TOO_LONG_STEP = 0.1  # after a refusal, parts are cut this fraction of max_chars smaller


@dataclass(frozen=True, slots=True)
class ReplyState:
    """Everything but the text that decides how a reply's messages look."""

    agent: AgentTag | None = None
    status: Status = "thinking"
    sources: tuple[SourceRef, ...] = ()
    error_message: str = ""

    def view(self, body: str, index: int, last: bool) -> ReplyView:
        return ReplyView(body=body, agent=self.agent, status=self.status, sources=self.sources,
                         error_message=self.error_message, is_continuation=index > 0, is_last_part=last)


@dataclass(frozen=True, slots=True)
class _Seal:
    """A finished message: its body, and where the rest of the answer resumes."""

    body: str
    end: int  # offset in the answer where the next message's own text starts
    reopen: str  # a fence opening line the next message starts with, or ""


class Layout:
    """Cuts one reply's answer into message views. Keep one per reply; the answer only ever grows."""

    def __init__(self, render: Callable[[ReplyView], str], max_chars: int) -> None:
        self._render = render
        self.max_chars = max_chars
        self._seals: list[_Seal] = []
        self._shrink = 0  # characters taken off max_chars for new cuts after a refusal

    def views(self, body: str, state: ReplyState) -> list[ReplyView]:
        """One view per message, the last one growing."""
        for index, seal in enumerate(self._seals):
            if len(self._render(state.view(seal.body, index, False))) > self.max_chars:
                del self._seals[index:]  # the surface renders this part longer now: cut again from here
                break
        limit = max(MIN_PART_CHARS, self.max_chars - self._shrink)
        while True:
            start, reopen = (self._seals[-1].end, self._seals[-1].reopen) if self._seals else (0, "")
            tail = reopen + body[start:]
            index = len(self._seals)
            if len(self._render(state.view(tail, index, True))) <= limit or not tail[len(reopen):].strip():
                break
            if state.status in ("done", "error") and len(self._render(state.view(tail, index, False))) <= limit:
                # Only the footer (sources, error line) does not fit beside the last part: it moves to a message
                # of its own instead of a code block being cut to make room for it.
                self._seals.append(_Seal(tail, len(body), ""))
                tail = ""
                break
            cut = self._cut_to_fit(tail, index, limit, state)
            end = start + cut.consumed - len(reopen) if cut else start
            if cut is None or end <= start:  # cannot cut smaller: send as is, the surface may refuse it
                log.warning("message %d cannot be cut to fit %d characters", index, limit)
                break
            self._seals.append(_Seal(cut.head, end, cut.reopen))
        views = [state.view(seal.body, i, False) for i, seal in enumerate(self._seals)]
        return [*views, state.view(tail, len(self._seals), True)]

    def refused(self, index: int) -> None:
        """The platform refused message `index` as too long: cut it, and every later one, smaller."""
        del self._seals[index:]
        self._shrink = min(self._shrink + max(1, int(self.max_chars * TOO_LONG_STEP)),
                           self.max_chars - MIN_PART_CHARS)

    @property
    def shrink(self) -> int:
        return self._shrink

    def _cut_to_fit(self, tail: str, index: int, limit: int, state: ReplyState) -> Cut | None:
        """The longest cut of `tail` whose rendered message fits `limit`, or None if none can."""
        overhead = len(self._render(state.view("", index, False)))
        chars = min(len(tail) - 1, limit - overhead)
        for _ in range(20):
            chars = max(chars, MIN_PART_CHARS)
            try:
                cut = cut_markdown(tail, chars)
            except ValueError:
                return None
            over = len(self._render(state.view(cut.head, index, False))) - limit
            if over <= 0 or chars == MIN_PART_CHARS:
                return cut
            chars -= over
        return None

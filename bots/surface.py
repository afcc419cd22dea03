"""The surface contract: what the streaming renderer needs from a platform, and what it reports back.

A `Surface` is one answer's place on one platform (a Slack thread, a Discord channel or interaction, a test
fake). It knows its platform's calls, its length limit and which budget each kind of write spends; it knows
nothing of pacing. The renderer (`bots.streaming`) knows nothing of platforms.

The contract:
- `max_chars`: the platform's limit for one message's text.
- `post(text) -> handle` and `edit(handle, text)`: raise `RateLimited(retry_after)` on a 429, `MessageTooLong()`
  when the platform refuses the length, `SurfaceGone` when the place is gone for good; any other exception is
  logged and retried by the renderer.
- `budget_for(write) -> Budget | None`: the shared budget a `"post"` or an `"edit"` spends (Slack: posts per
  channel, `chat.update` per workspace; Discord: one per channel). The renderer takes the slot around each call
  and feeds a 429 back to the same budget, so every reply sharing it slows down, not just the one that hit it.
- `render(view) -> str`: the platform text of one message (`ReplyView`); `render_plain` is a usable default.
- optional `finalize(handle, view)`: the last message's extras (Slack blocks and buttons, Discord buttons).
  With `finalize_sets_text = True` it also sets the final text, so it *is* the final edit (one call, not two).
- optional `typing()`: started alongside the first write (Discord's typing indicator); failures are ignored.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

from bots.pacing import Budget, Priority
from bots.splitting import close_open_fence
from core.events import SourceRef

Status = Literal["thinking", "routed", "streaming", "done", "error"]
Write = Literal["post", "edit"]
FINAL_STATUSES = ("done", "error")
MARKER = "▌"  # the in-progress marker at the end of a message being written
THINKING = "Thinking…"  # a placeholder before the agent is known
LOOKING = "is looking into it…"  # after the agent's name, before its first words


class RateLimited(Exception):
    """The platform answered 429: nothing more may be sent for `retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited for {retry_after:.2f}s")
        self.retry_after = max(0.0, float(retry_after))


class MessageTooLong(Exception):
    """The platform refused a message's text as too long."""


class SurfaceGone(Exception):
    """The place the reply was going is gone for good (channel deleted or archived, bot removed, message
    deleted): retrying cannot help, so the reply stops at once instead of backing off for minutes."""


class AgentTag(NamedTuple):
    name: str  # the agent's name in the agents file
    label: str  # "Billing", as users see it


@dataclass(frozen=True, slots=True)
class ReplyView:
    """What one message of a reply should show; `Surface.render` turns it into platform text.

    `body` is the Markdown that belongs in this message (fences balanced between messages; the last message may
    end inside a fence while streaming). `is_continuation` is true for every message after the first;
    `is_last_part` for the message that carries the in-progress marker, the sources and the error line.
    """

    body: str = ""
    agent: AgentTag | None = None
    status: Status = "thinking"
    sources: tuple[SourceRef, ...] = ()
    error_message: str = ""
    is_continuation: bool = False
    is_last_part: bool = True


@runtime_checkable
class Surface(Protocol):
    max_chars: int

    async def post(self, text: str) -> Any:
        """Post a new message and return its handle (Slack ts, Discord Message)."""

    async def edit(self, handle: Any, text: str) -> None:
        """Replace the text of a posted message."""

    def render(self, view: ReplyView) -> str:
        """The platform text for one message."""

    def budget_for(self, write: Write) -> Budget | None:
        """The shared budget this kind of write spends, or None when the platform sets none."""


@dataclass
class ReplyOutcome:
    """What happened to one reply; the pipeline records metrics from it and benchmarks read it.

    Times are the renderer's clock (`time.monotonic` in production)."""

    handles: list[Any] = field(default_factory=list)  # every message posted, in order
    texts: list[str] = field(default_factory=list)  # the last text sent to each message
    posts: int = 0
    edits: int = 0
    rate_limited: int = 0  # 429s seen
    placeholder_at: float | None = None  # when the first message was visible
    first_token_received_at: float | None = None  # when the first token arrived from the core
    first_token_at: float | None = None  # when the first answer text was visible on the platform
    last_token_at: float | None = None  # when the core's last token (or the terminal event) arrived
    final_at: float | None = None  # when the final text was visible
    delivered: bool = False  # the final text landed
    status: Literal["done", "error", "interrupted", "pending"] = "pending"
    error_code: str | None = None
    agent: str | None = None
    answer: str = ""  # the whole answer text as rendered from


@contextlib.asynccontextmanager
async def spending(budget: Budget | None, priority: int = Priority.PROGRESS, reserve: int = 0
                   ) -> AsyncIterator[None]:
    """One platform call within `budget`'s slot. A 429 raised inside (`RateLimited`) is fed to the same budget
    before it propagates, so every reply sharing it holds back: the one place a 429 teaches a budget."""
    async with budget.slot(priority, reserve) if budget is not None else contextlib.nullcontext():
        try:
            yield
        except RateLimited as limited:
            if budget is not None:
                budget.note_rate_limited(limited.retry_after)
            raise


def shows_in_progress(text: str) -> bool:
    """A message still being written as rendered here: the marker, or a placeholder (another replica uses this
    to find the messages a dead one left unfinished)."""
    return MARKER in text or THINKING in text or LOOKING in text


def _same(text: str) -> str:
    return text


def source_url(source: SourceRef) -> str | None:
    """The web address of a cited document when it has one (synced pages, `knowledge.sources`), else None: a
    file path from the docs folder is shown as its title only."""
    return source.source if source.source.startswith(("https://", "http://")) else None


def render_plain(
    view: ReplyView,
    *,
    sanitize: Callable[[str], str] = _same,
    marker: str = f" {MARKER}",
    bold: Callable[[str], str] = lambda s: f"*{s}*",
    italic: Callable[[str], str] = lambda s: f"_{s}_",
) -> str:
    """A default rendering: agent tag on the first message, marker while streaming, footer on the last.

    `sanitize` is applied to everything that came from the model or the documents (body, source titles), so a
    platform can neutralise mentions there. The result is never empty (platforms refuse empty messages).
    """
    if view.status == "thinking":
        return italic(THINKING)
    body = sanitize(view.body).lstrip("\n").rstrip()
    streaming = view.status in ("routed", "streaming") and view.is_last_part
    if streaming:
        body = close_open_fence(body)
    lines: list[str] = []
    if view.agent and not view.is_continuation:
        routed_only = view.status == "routed" and not body
        lines.append(f"{bold(view.agent.label)} {italic(LOOKING)}" if routed_only
                     else bold(view.agent.label))
    if body:
        lines.append(body)
    elif view.status == "done" and view.is_last_part and not view.is_continuation:
        lines.append(italic("(no answer)"))
    if not view.is_last_part:
        lines.append(italic("(continued below)"))
    elif streaming and body:
        if body.rstrip().endswith("`"):
            lines.append(marker.strip())  # after a closing fence line the marker needs a line of its own
        else:
            lines[-1] += marker
    elif view.status == "error":
        lines.append(f"\n⚠️ {view.error_message}")
    elif view.status == "done" and view.sources:
        lines.append("\n" + italic("Sources: " + ", ".join(sanitize(s.title) for s in view.sources)))
    return "\n".join(lines).strip("\n") or italic("(no answer)")

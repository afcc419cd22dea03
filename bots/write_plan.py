"""Which write a reply makes next, and when: a pure function of the reply's progress and the clock.

Every write counts against a shared window (Discord: 5 per 5 s per channel; Slack: the workspace's
`chat.update` budget), so the plan spends them where a reader gains most:
- the first write carries the first words (and the agent tag with them) and is never held back by the pacer;
- the agent tag gets an edit of its own only when the model is slow to start (`ROUTED_GRACE_S` after routing);
- progress edits are paced (`EditPacer`) and keep one write in reserve, so a final that could come within the
  window never waits for the window to reopen;
- under contention the budget serves `Priority.FIRST` (a reply showing nothing yet) before finals, and finals
  before progress (`bots.pacing.EditBudget`).
"""

from __future__ import annotations

from dataclasses import dataclass

from bots.pacing import Priority

ROUTED_GRACE_S = 1.0  # the agent tag waits this long for the first words before it is shown on its own
PROGRESS_RESERVE = 1  # writes a progress edit leaves free in the window for a final


@dataclass(frozen=True, slots=True)
class Progress:
    """What a reply has and has shown so far (times on the reply's clock)."""

    posted: bool  # its first message exists
    has_text: bool  # the answer has words
    shown_text: bool  # words are visible on the platform
    has_agent: bool
    shown_agent: bool
    routed_at: float | None
    blocked_until: float  # a 429 asked to wait until then
    next_edit_at: float  # the pacer allows the next progress edit from then


@dataclass(frozen=True, slots=True)
class WritePlan:
    delay_s: float  # wait this long first
    priority: Priority
    reserve: int  # writes to leave free in the window
    overtakable: bool  # new words while waiting make a better write (a bare tag was waiting to be shown)


def plan_next_write(progress: Progress, now: float) -> WritePlan | None:
    """The next write, or None when nothing needs showing yet."""
    blocked = max(0.0, progress.blocked_until - now)
    if not progress.posted or (progress.has_text and not progress.shown_text):
        return WritePlan(blocked, Priority.FIRST, 0, False)  # the first write, or the first words
    if not progress.has_text:
        if not progress.has_agent or progress.shown_agent or progress.routed_at is None:
            return None
        wait = max(blocked, progress.routed_at + ROUTED_GRACE_S - now)
        return WritePlan(wait, Priority.PROGRESS, PROGRESS_RESERVE, True)
    return WritePlan(max(blocked, progress.next_edit_at - now), Priority.PROGRESS, PROGRESS_RESERVE, False)


def final_priority(shown_text: bool) -> Priority:
    """A final text that is also a reply's first words goes as early as any first write."""
    return Priority.FINAL if shown_text else Priority.FIRST

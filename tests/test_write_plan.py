"""The write plan alone: which write a reply makes next, and when. Pure; no clock, no I/O."""

from __future__ import annotations

from dataclasses import replace

from bots.pacing import Priority
from bots.write_plan import ROUTED_GRACE_S, Progress, WritePlan, final_priority, plan_next_write

STREAMING = Progress(posted=True, has_text=True, shown_text=True, has_agent=True, shown_agent=True,
                     routed_at=10.0, blocked_until=0.0, next_edit_at=12.0)


def test_the_first_write_and_the_first_words_go_first_and_unpaced() -> None:
    nothing = Progress(False, False, False, False, False, None, 0.0, 0.0)
    assert plan_next_write(nothing, 11.0) == WritePlan(0.0, Priority.FIRST, 0, False)
    first_words = replace(STREAMING, shown_text=False)
    assert plan_next_write(first_words, 11.0) == WritePlan(0.0, Priority.FIRST, 0, False)


def test_progress_is_paced_and_keeps_a_write_in_reserve_for_the_final() -> None:
    assert plan_next_write(STREAMING, 11.5) == WritePlan(0.5, Priority.PROGRESS, 1, False)
    assert plan_next_write(replace(STREAMING, blocked_until=14.0), 11.5).delay_s == 2.5  # a 429 wins


def test_a_bare_agent_tag_waits_for_the_first_words_and_can_be_overtaken() -> None:
    routed = replace(STREAMING, has_text=False, shown_text=False, shown_agent=False)
    plan = plan_next_write(routed, 10.25)
    assert plan == WritePlan(ROUTED_GRACE_S - 0.25, Priority.PROGRESS, 1, True)
    assert plan_next_write(replace(routed, shown_agent=True), 10.25) is None  # nothing new to show
    assert plan_next_write(replace(routed, has_agent=False, routed_at=None), 10.25) is None


def test_a_final_that_is_also_the_first_words_goes_as_a_first_write() -> None:
    assert final_priority(shown_text=False) is Priority.FIRST
    assert final_priority(shown_text=True) is Priority.FINAL

"""Pacing maths with a fake clock: the per-reply interval and the shared sliding-window budget. No real sleeping."""

from __future__ import annotations

import asyncio

import pytest

from bots.pacing import EditBudget, EditPacer


class ManualClock:
    """A clock that moves only when `sleep` is awaited: sleeping advances time by exactly what was asked."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def test_pacer_lets_the_first_edit_go_at_once_then_spaces_edits() -> None:
    pacer = EditPacer(1.0)
    assert pacer.delay(5.0) == 0
    pacer.record(5.0)
    assert pacer.delay(5.4) == pytest.approx(0.6)
    assert pacer.delay(6.0) == 0
    assert pacer.delay(9.0) == 0


def test_pacer_refuses_a_negative_interval() -> None:
    with pytest.raises(ValueError):
        EditPacer(-1)


async def test_budget_allows_max_ops_then_waits_for_the_oldest_to_leave_the_window() -> None:
    clock = ManualClock()
    budget = EditBudget(5, 5.0, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        await budget.acquire()
    assert clock.slept == [] and budget.ops_in_window() == 5
    await budget.acquire()
    assert clock.slept == [pytest.approx(5.0)]


async def test_budget_window_slides_rather_than_resetting() -> None:
    clock = ManualClock()
    budget = EditBudget(2, 5.0, clock=clock, sleep=clock.sleep)
    await budget.acquire()  # t=100
    clock.now += 3
    await budget.acquire()  # t=103
    assert budget.wait_time() == pytest.approx(2.0)  # the op at 100 leaves the window at 105
    clock.now += 2
    assert budget.wait_time() == 0


async def test_budget_counts_an_operation_from_when_the_platform_answered() -> None:
    clock = ManualClock()
    budget = EditBudget(1, 5.0, clock=clock, sleep=clock.sleep)
    async with budget.slot():
        assert budget.wait_time() == pytest.approx(5.0)  # in flight: counts as happening now
        clock.now += 2.0  # a slow request
    assert budget.wait_time() == pytest.approx(5.0)  # counted from t=102, not t=100


async def test_rate_limit_blocks_every_user_of_the_budget() -> None:
    clock = ManualClock()
    budget = EditBudget(5, 5.0, clock=clock, sleep=clock.sleep)
    budget.note_rate_limited(3.0)
    budget.note_rate_limited(1.0)  # a shorter 429 never shortens the block
    assert budget.wait_time() == pytest.approx(3.0)
    await budget.acquire()
    assert clock.slept == [pytest.approx(3.0)] and clock.now == pytest.approx(103.0)


async def test_many_concurrent_users_never_exceed_the_window() -> None:
    clock = ManualClock()
    budget = EditBudget(5, 5.0, clock=clock, sleep=clock.sleep)
    stamps: list[float] = []

    async def user() -> None:
        for _ in range(6):
            async with budget.slot():
                stamps.append(clock.now)

    await asyncio.gather(*(user() for _ in range(4)))
    assert len(stamps) == 24
    for start in stamps:
        assert sum(1 for t in stamps if start <= t < start + 5.0) <= 5


def test_budget_refuses_nonsense_limits() -> None:
    with pytest.raises(ValueError):
        EditBudget(0, 5.0)
    with pytest.raises(ValueError):
        EditBudget(5, 0)


def test_retry_after_is_read_from_either_header_case_insensitively() -> None:
    from bots.pacing import retry_after_of

    assert retry_after_of({"Retry-After": "3"}) == 3.0
    assert retry_after_of({"retry-after": ["2.5"]}) == 2.5  # slack_sdk gives lists
    assert retry_after_of({"Retry-After": "4", "X-RateLimit-Reset-After": "1.25"}) == 1.25  # Discord's precise one
    assert retry_after_of({"Retry-After": "soon"}) == 1.0 and retry_after_of(None) == 1.0
    assert retry_after_of({}, default=5.0) == 5.0


async def test_a_pool_feeds_an_outside_429_to_the_keys_budget_only() -> None:
    from bots.pacing import BudgetPool

    clock = ManualClock()
    pool = BudgetPool(5, 5.0, clock=clock, sleep=clock.sleep)
    with pool.using("C1") as c1, pool.using("C2") as c2:
        pool.note_rate_limited("C1", 2.0)
        pool.note_rate_limited("C9", 2.0)  # no such budget: nothing to hold back
        assert c1.wait_time() == pytest.approx(2.0) and c2.wait_time() == 0


async def test_waiters_are_served_by_priority_then_in_order_of_arrival() -> None:
    from bots.pacing import Priority
    from tests.test_streaming import VirtualTime

    clock = VirtualTime()  # concurrent sleepers need a scheduler-aware clock
    budget = EditBudget(1, 5.0, clock=clock.clock, sleep=clock.sleep)
    await budget.acquire()  # the window is full for 5 s
    served: list[str] = []

    async def write(name: str, priority: Priority) -> None:
        async with budget.slot(priority):
            served.append(name)

    tasks = [asyncio.create_task(write(name, priority)) for name, priority in
             [("progress", Priority.PROGRESS), ("final-a", Priority.FINAL), ("first", Priority.FIRST),
              ("final-b", Priority.FINAL)]]
    await asyncio.gather(*tasks)
    clock.stop()
    assert served == ["first", "final-a", "final-b", "progress"]


async def test_a_write_asking_for_a_reserve_leaves_that_room_free() -> None:
    clock = ManualClock()
    budget = EditBudget(5, 5.0, clock=clock, sleep=clock.sleep)
    for _ in range(4):
        await budget.acquire()
    assert budget.wait_time() == 0 and budget.wait_time(reserve=1) == pytest.approx(5.0)
    start = clock.now
    await budget.acquire(reserve=1)  # waits for the window to reopen rather than take the last write
    assert clock.now == pytest.approx(start + 5.0)

"""Coordination between replicas (`coordination/`), on real Redis and in-process, with the same behavioural tests.

"Replicas" are separate `Coordination` objects with their own Redis clients and connection pools (and, where it
matters, separate OS processes: a SIGKILLed holder, processes racing on one delivery key). In-process, every
"replica" is the one object (that is all one process has). Each test uses its own key prefix, removed after.
Redis tests skip, saying so, when `SWITCHBOARD_TEST_REDIS_URL` (default redis://127.0.0.1:6379/0) does not answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import coordination
from bots.pacing import Budget, BudgetPool, EditBudget, Priority
from coordination import Coordination, CoordinationUnavailable, connect

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("SWITCHBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _redis_missing() -> str | None:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means the Redis tests cannot run here
        return f"Redis at {REDIS_URL} is not reachable ({type(exc).__name__}); start redis-server to run these"
    return None


MISSING = _redis_missing()


class Replicas:
    """Makes "replicas": a new client each for Redis, the one in-process object otherwise."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.prefix = f"sbtest:{uuid.uuid4().hex[:10]}"
        self.made: list[Coordination] = []
        self._local: Coordination | None = None

    def __call__(self, **options: Any) -> Coordination:
        if self.backend == "local":
            if self._local is None:
                self._local = connect(None, **options)
            return self._local
        replica = connect(REDIS_URL, prefix=self.prefix, **options)
        self.made.append(replica)
        return replica

    def budgets(self, count: int, max_ops: int, window_s: float) -> list[Any]:
        """`count` replicas' handles on one shared budget (in-process: one `EditBudget`)."""
        if self.backend == "local":
            return [self().budget("w", max_ops, window_s, local=EditBudget)] * count
        return [self().budget("w", max_ops, window_s, local=EditBudget) for _ in range(count)]

    async def aclose(self) -> None:
        if self.made:
            client = self.made[0]._client
            assert client is not None
            names = [name async for name in client.scan_iter(f"{self.prefix}:*")]
            if names:
                await client.delete(*names)
        for replica in [*self.made, *([self._local] if self._local else [])]:
            await replica.aclose()


async def _replicas(backend: str) -> AsyncIterator[Replicas]:
    if backend == "redis" and MISSING:
        pytest.skip(MISSING)
    made = Replicas(backend)
    try:
        yield made
    finally:
        await made.aclose()


@pytest.fixture(params=["local", "redis"])
async def replicas(request: pytest.FixtureRequest) -> AsyncIterator[Replicas]:
    async for made in _replicas(request.param):
        yield made


@pytest.fixture
async def redis_replicas() -> AsyncIterator[Replicas]:
    async for made in _replicas("redis"):
        yield made


async def cancel_half_at_odd_moments(start: Any) -> None:
    """Rounds of 20 calls, every other one cancelled before, during and after its first round trips."""
    for round_ in range(5):
        tasks = [asyncio.create_task(start(i)) for i in range(20)]
        await asyncio.sleep(0.0005 * round_)
        for task in tasks[::2]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# A child process: a replica that can be raced against or killed. argv: mode, url, prefix, argument.
CHILD = r"""
import asyncio, json, sys
import coordination

async def main(mode, url, prefix, arg):
    co = coordination.connect(url, prefix=prefix, lease_s=1.0)
    await co.ping()
    if mode == "race":
        print("ready", flush=True)
        while not await co._client.exists(prefix + ":go"):
            await asyncio.sleep(0.001)
        keys = co.delivery_keys("race")
        won = await asyncio.gather(*(keys.first_time(f"event-{i}") for i in range(int(arg))))
        print(json.dumps([i for i, first in enumerate(won) if first]), flush=True)
    elif mode == "hold":
        async with co.locks.hold(arg):
            print("held", flush=True)
            await asyncio.sleep(3600)
    elif mode == "reply":
        async with co.inflight.track(arg, {"platform": "slack", "channel": "C1", "ts": "1.2"}, lease_s=1.0):
            print("replying", flush=True)
            await asyncio.sleep(3600)
    await co.aclose()

asyncio.run(main(*sys.argv[1:]))
"""


def child(mode: str, prefix: str, arg: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", CHILD, mode, REDIS_URL, prefix, arg], stdout=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT)


async def read_line(process: subprocess.Popen[str], timeout: float = 20.0) -> str:
    assert process.stdout is not None
    return (await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), timeout)).strip()


def sigkill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    if process.stdout is not None:
        process.stdout.close()


# --- duplicate-delivery keys -----------------------------------------------------------------------------------
async def test_delivery_keys_remember_like_recent_keys(replicas: Replicas) -> None:
    keys = replicas().delivery_keys("slack")
    assert await keys.first_time("Ev1", ("C1", "1.0"))
    assert not await keys.first_time("Ev1")
    assert not await keys.first_time("Ev2", ("C1", "1.0"))  # the message twin of a mention
    assert await keys.first_time("Ev2")  # a refused delivery remembered none of its other keys
    assert await keys.first_time(None, "Ev3") and not await keys.first_time("Ev3", None)
    assert await replicas().delivery_keys("discord").first_time("Ev1")  # scopes are separate


async def test_two_replicas_racing_on_one_delivery_answer_it_once(replicas: Replicas) -> None:
    a, b = replicas().delivery_keys("race"), replicas().delivery_keys("race")
    firsts = await asyncio.gather(*(keys.first_time(f"event-{i}", ("C", str(i))) for i in range(300)
                                    for keys in (a, b)))
    assert sum(firsts) == 300
    assert all(firsts[2 * i] != firsts[2 * i + 1] for i in range(300))


async def test_delivery_keys_expire_after_their_ttl(redis_replicas: Replicas) -> None:
    keys = redis_replicas(dedupe_ttl_s=0.2).delivery_keys("slack")
    assert await keys.first_time("Ev1") and not await keys.first_time("Ev1")
    await asyncio.sleep(0.3)
    assert await keys.first_time("Ev1")


async def test_processes_racing_on_delivery_keys_win_each_key_once(redis_replicas: Replicas) -> None:
    processes = [child("race", redis_replicas.prefix, "200") for _ in range(3)]
    try:
        assert [await read_line(p) for p in processes] == ["ready"] * 3
        control = redis_replicas()
        assert control._client is not None
        await control._client.set(f"{redis_replicas.prefix}:go", "1")
        won = [json.loads(await read_line(p)) for p in processes]
    finally:
        for process in processes:
            sigkill(process)
    assert sorted(i for wins in won for i in wins) == list(range(200))


# --- session locks ---------------------------------------------------------------------------------------------
async def test_lock_serialises_holders_in_arrival_order(replicas: Replicas) -> None:
    events: list[str] = []

    async def holder(name: str, replica: Coordination) -> None:
        async with replica.locks.hold("slack:T1:C1:1.0") as lease:
            events.append(f"{name} in")
            await asyncio.sleep(0.1)
            assert not lease.lost
            events.append(f"{name} out")

    tasks = []
    for name in "ABC":
        tasks.append(asyncio.create_task(holder(name, replicas())))
        await asyncio.sleep(0.03)
    await asyncio.gather(*tasks)
    assert events == ["A in", "A out", "B in", "B out", "C in", "C out"]


async def test_lock_is_exclusive_and_fifo_under_load(replicas: Replicas) -> None:
    nodes = [replicas() for _ in range(3)]
    for node in nodes:  # arrival across replicas is when Redis hands out the ticket: open the connections first
        await node.ping()
    inside, most, order = 0, 0, []

    async def message(i: int) -> None:
        nonlocal inside, most
        async with nodes[i % 3].locks.hold("thread"):
            inside += 1
            most = max(most, inside)
            order.append(i)
            await asyncio.sleep(0.005)
            inside -= 1

    tasks = []
    for i in range(12):
        tasks.append(asyncio.create_task(message(i)))
        await asyncio.sleep(0.02)
    await asyncio.gather(*tasks)
    assert most == 1 and order == list(range(12))


async def test_different_sessions_do_not_wait_for_each_other(replicas: Replicas) -> None:
    a, b = replicas(), replicas()
    async with a.locks.hold("one"):
        async with asyncio.timeout(1.0):
            async with b.locks.hold("two"):
                pass


async def test_a_cancelled_waiter_leaves_the_queue(replicas: Replicas) -> None:
    a, b, c = replicas(), replicas(), replicas()
    entered = asyncio.Event()

    async def wait_on(replica: Coordination) -> None:
        async with replica.locks.hold("k"):
            entered.set()

    async with a.locks.hold("k"):
        doomed = asyncio.create_task(wait_on(b))
        await asyncio.sleep(0.03)
        waiting = asyncio.create_task(wait_on(c))
        await asyncio.sleep(0.03)
        doomed.cancel()
        await asyncio.gather(doomed, return_exceptions=True)
        released = time.monotonic()
    await asyncio.wait_for(waiting, 1.0)  # not after the cancelled waiter's 15 s lease
    assert time.monotonic() - released < 0.5


async def test_waiters_cancelled_at_any_moment_leave_no_ticket_behind(replicas: Replicas) -> None:
    nodes = [replicas() for _ in range(3)]

    async def message(i: int) -> None:
        async with nodes[i % 3].locks.hold("k"):
            await asyncio.sleep(0.001)

    await cancel_half_at_odd_moments(message)
    async with asyncio.timeout(0.5):  # not a 15 s lease of some orphaned ticket
        async with nodes[0].locks.hold("k"):
            pass


async def test_the_lease_is_renewed_while_held(redis_replicas: Replicas) -> None:
    a, b = redis_replicas(lease_s=0.3), redis_replicas(lease_s=0.3)
    got_it: list[float] = []

    async def other() -> None:
        async with b.locks.hold("k"):
            got_it.append(time.monotonic())

    async with a.locks.hold("k") as lease:
        waiter = asyncio.create_task(other())
        await asyncio.sleep(1.2)  # four leases: only renewal keeps the key
        assert not got_it and not lease.lost
        released = time.monotonic()
    await waiter
    assert got_it[0] >= released


async def test_a_lost_lease_is_flagged_and_logged(redis_replicas: Replicas, caplog: pytest.LogCaptureFixture) -> None:
    a = redis_replicas(lease_s=0.3)
    assert a._client is not None
    with caplog.at_level(logging.ERROR, logger="coordination.locks"):
        async with a.locks.hold("k") as lease:
            await a._client.delete(*[name async for name in a._client.scan_iter(f"{redis_replicas.prefix}:lock:*")])
            await asyncio.sleep(0.25)
            assert lease.lost
            with pytest.raises(coordination.LeaseLost):
                lease.check()
    assert "lease lost" in caplog.text


async def test_a_sigkilled_holder_frees_the_lock_within_its_lease(redis_replicas: Replicas) -> None:
    holder = child("hold", redis_replicas.prefix, "slack:T1:C1:9.9")
    try:
        assert await read_line(holder) == "held"
        waiter_replica = redis_replicas(lease_s=1.0)
        acquired = asyncio.Event()

        async def waiter() -> None:
            async with waiter_replica.locks.hold("slack:T1:C1:9.9"):
                acquired.set()

        task = asyncio.create_task(waiter())
        await asyncio.sleep(1.5)  # longer than the lease: the live holder keeps renewing
        assert not acquired.is_set()
    finally:
        sigkill(holder)
    killed = time.monotonic()
    await asyncio.wait_for(task, 5.0)
    assert time.monotonic() - killed <= 1.0 + 0.3


# --- shared rate budgets ---------------------------------------------------------------------------------------
async def test_two_clients_never_exceed_the_shared_window(replicas: Replicas) -> None:
    max_ops, window_s = 5, 1.0
    budgets = replicas.budgets(2, max_ops, window_s)
    assert all(isinstance(budget, Budget) for budget in budgets)  # the renderer's protocol
    entered: list[float] = []
    deadline = time.monotonic() + 2.5

    async def writer(budget: Any) -> None:
        while time.monotonic() < deadline:
            async with budget.slot(Priority.FINAL):
                entered.append(time.monotonic())
                await asyncio.sleep(0.01)  # the platform's answer

    writers = [asyncio.create_task(writer(budget)) for budget in budgets for _ in range(3)]
    await asyncio.sleep(2.5)
    for task in writers:
        task.cancel()
    await asyncio.gather(*writers, return_exceptions=True)
    entered.sort()
    assert len(entered) >= 2 * max_ops  # the budget was used, not just never reached
    # Any max_ops + 1 writes span at least a window (15 ms for reading the clock after the grant).
    spans = [entered[i + max_ops] - entered[i] for i in range(len(entered) - max_ops)]
    assert min(spans) >= window_s - 0.015, spans


async def test_a_429_on_one_replica_holds_back_the_other(replicas: Replicas) -> None:
    a, b = replicas.budgets(2, 10, 1.0)
    a.note_rate_limited(0.5)
    if hasattr(a, "flush"):
        await a.flush()
    started = time.monotonic()
    async with b.slot(Priority.FIRST):
        waited = time.monotonic() - started
    assert 0.45 <= waited < 1.0


async def test_progress_writes_keep_a_reserve_for_final_texts(replicas: Replicas) -> None:
    a, b = replicas.budgets(2, 3, 2.0)
    await a.acquire()
    await a.acquire()  # two of three used: a progress edit (reserve 1) must now wait, a final text must not
    progress_entered = asyncio.Event()

    async def progress() -> None:
        async with b.slot(Priority.PROGRESS, reserve=1):
            progress_entered.set()

    task = asyncio.create_task(progress())
    await asyncio.sleep(0.1)
    assert not progress_entered.is_set()
    started = time.monotonic()
    async with b.slot(Priority.FINAL):
        assert time.monotonic() - started < 0.1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_writes_cancelled_while_queueing_are_not_counted(redis_replicas: Replicas) -> None:
    budget = redis_replicas().budget("w", 1000, 10.0, local=EditBudget)
    entered = 0

    async def write(_: int) -> None:
        nonlocal entered
        async with budget.slot():
            entered += 1

    await cancel_half_at_odd_moments(write)
    await asyncio.sleep(0.05)
    await budget.flush()
    assert await budget.ops_in_window() == entered


async def test_budget_pools_share_per_key_across_replicas(replicas: Replicas) -> None:
    first = replicas().budget_pool("discord", 2, 5.0, local=BudgetPool)
    second = first if replicas.backend == "local" else replicas().budget_pool("discord", 2, 5.0, local=BudgetPool)
    with first.using(123) as a, second.using(123) as b, second.using(456) as other:
        await a.acquire()
        await a.acquire()
        assert (await b.shared_wait_time() if hasattr(b, "shared_wait_time") else b.wait_time()) > 4.0
        assert (await other.shared_wait_time() if hasattr(other, "shared_wait_time") else other.wait_time()) == 0
        first.note_rate_limited(456, 0.5)
        if hasattr(first, "budget"):
            await first.budget(456).flush()
        started = time.monotonic()
        async with other.slot():
            assert time.monotonic() - started >= 0.45


# --- replies in flight -----------------------------------------------------------------------------------------
async def test_expired_replies_become_orphans_claimed_once(replicas: Replicas) -> None:
    a, b = replicas(), replicas()
    await a.inflight.start("r1", {"platform": "slack", "channel": "C1", "ts": "1.2"}, lease_s=0.2)
    await a.inflight.start("r2", {"platform": "discord"}, lease_s=0.2)
    await a.inflight.finish("r2")
    assert await b.inflight.orphans() == []
    assert not await b.inflight.claim("r1")  # still under its lease
    await asyncio.sleep(0.3)
    [orphan] = await b.inflight.orphans()
    assert orphan["reply_id"] == "r1" and orphan["channel"] == "C1" and orphan["replica"] == a.replica_id
    claims = await asyncio.gather(a.inflight.claim("r1"), b.inflight.claim("r1"), b.inflight.claim("r1"))
    assert sorted(claims) == [False, False, True]
    assert await a.inflight.orphans() == [] and not await a.inflight.renew("r1")


async def test_a_tracked_reply_is_renewed_and_finished(replicas: Replicas) -> None:
    a, b = replicas(), replicas()
    async with a.inflight.track("r1", {"platform": "web"}, lease_s=0.3):
        await asyncio.sleep(0.8)
        assert await b.inflight.orphans() == []
    await asyncio.sleep(0.4)
    assert await b.inflight.orphans() == []


async def test_a_sigkilled_replicas_reply_is_found_and_reaped_once(redis_replicas: Replicas) -> None:
    replier = child("reply", redis_replicas.prefix, "reply-7")
    try:
        assert await read_line(replier) == "replying"
    finally:
        sigkill(replier)
    a, b = redis_replicas(), redis_replicas()
    assert await a.inflight.orphans() == []  # its lease (1 s) has not run out yet
    handled: list[dict[str, Any]] = []

    async def mark_interrupted(info: dict[str, Any]) -> None:
        handled.append(info)

    found_at = time.monotonic()
    while not handled and time.monotonic() - found_at < 5:
        await asyncio.gather(a.inflight.reap(mark_interrupted), b.inflight.reap(mark_interrupted))
        await asyncio.sleep(0.05)
    assert [info["reply_id"] for info in handled] == ["reply-7"]
    assert handled[0]["channel"] == "C1" and handled[0]["ts"] == "1.2"
    assert time.monotonic() - found_at <= 1.5


# --- the bundle --------------------------------------------------------------------------------------------------
async def test_without_a_url_everything_is_in_process() -> None:
    from pydantic import SecretStr

    assert connect(SecretStr("")).backend == "local"
    from_settings = connect(SecretStr(REDIS_URL))  # Settings.redis_url as it comes
    assert from_settings.redis_url == REDIS_URL
    await from_settings.aclose()
    local = connect(None)
    assert local.backend == "local" and not local.shared and await local.ping() is None
    assert isinstance(local.budget("w", 1, 1.0, local=EditBudget), EditBudget)
    assert isinstance(local.budget_pool("p", 1, 1.0, local=BudgetPool), BudgetPool)
    await local.aclose()


async def test_ping_is_quiet_when_redis_answers(redis_replicas: Replicas) -> None:
    replica = redis_replicas()
    assert replica.backend == "redis" and replica.shared and await replica.ping() is None


async def test_without_redis_ping_explains_locks_refuse_and_budgets_pace_alone(
        caplog: pytest.LogCaptureFixture) -> None:
    unreachable = connect("redis://:hunter2@127.0.0.1:1/0")  # nothing listens on port 1
    try:
        sentence = await unreachable.ping()
        assert sentence is not None and "REDIS_URL" in sentence and "hunter2" not in sentence
        with pytest.raises(CoordinationUnavailable, match="Redis is unreachable"):
            async with unreachable.locks.hold("k"):
                pass
        with caplog.at_level(logging.WARNING, logger="coordination"):
            started = time.monotonic()
            async with unreachable.budget("w", 10, 1.0, local=EditBudget).slot():
                pass
        assert time.monotonic() - started < 0.5 and "pacing this replica alone" in caplog.text
    finally:
        await unreachable.aclose()

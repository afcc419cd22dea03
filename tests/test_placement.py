"""Replicas on one Redis must share one conversation store: the refusal of `switchboard run` (issue 11).

"More than one worker or replica ... on SQLite across machines refuses to start with a sentence saying what to
set." Each replica announces where it keeps conversations (machine, SQLite file or Postgres) in the directory
of replicas in Redis; one that would split them refuses. End to end: another machine's replica is planted in
Redis exactly as a running replica writes itself (`Membership`, through `coordination.replicas`), and a real
`switchboard run` process is started against it. The pure rule and doctor's report are checked in-process.

Skipped, saying what is missing, without Redis (the pure rule needs nothing).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.conftest import make_settings
from tests.replica_harness import (SWITCHBOARD_EXE, free_port, redis_database, redis_problem, replica_env, spawn,
                                   wait_ready)
from switchboard.placement import FIX, Placement, clash, this_machine

REDIS_MISSING = redis_problem() or (None if SWITCHBOARD_EXE.exists() else f"no `switchboard` at {SWITCHBOARD_EXE}")
needs_redis = pytest.mark.skipif(REDIS_MISSING is not None, reason=REDIS_MISSING or "")
DB_PLACEMENT = 12  # a Redis database of this module's own (the replica tests use 10 and 11), flushed
ELSEWHERE = Placement("replica-far", "db-host-2", "0123456789abcdef/db-host-2", "sqlite",
                      "/srv/switchboard/data/checkpoints.sqlite")


# --- the rule ---------------------------------------------------------------------------------------------------

def test_only_one_machines_sqlite_file_or_postgres_is_shared() -> None:
    here = Placement("a", "h1", "m1/h1", "sqlite", "/data/checkpoints.sqlite")
    assert here.shares_conversations_with(Placement("b", "h1", "m1/h1", "sqlite", "/data/checkpoints.sqlite"))
    assert not here.shares_conversations_with(Placement("b", "h2", "m2/h2", "sqlite", "/data/checkpoints.sqlite"))
    assert not here.shares_conversations_with(Placement("b", "h1", "m1/h1", "sqlite", "/other/checkpoints.sqlite"))
    assert not here.shares_conversations_with(Placement("b", "h1", "m1/h1", "postgres"))
    assert Placement("a", "h1", "m1/h1", "postgres").shares_conversations_with(Placement("b", "h2", "m2", "postgres"))
    assert clash(here, [{"member": "x", "note": "no placement"}]) is None  # nothing to compare


def test_this_machine_is_stable_and_names_the_host() -> None:
    import socket

    assert this_machine() == this_machine() and this_machine().endswith(socket.gethostname())


# --- `switchboard run` against a planted replica -----------------------------------------------------------------

async def plant(redis_url: str, placement: Placement, ttl_s: float) -> None:
    """Another replica's entry, written as a running replica writes its own (a member of its own)."""
    import coordination

    coord = coordination.connect(redis_url)
    try:
        directory = coord.replicas.as_member(f"{placement.host}:{uuid.uuid4().hex[:6]}")  # type: ignore[attr-defined]
        await directory.join(placement.document(), ttl_s)
    finally:
        await coord.aclose()


async def directory_now(redis_url: str) -> list[dict]:
    import coordination

    coord = coordination.connect(redis_url)
    try:
        return await coord.replicas.members()
    finally:
        await coord.aclose()


def refused(tmp_path: Path, redis_url: str, database_url: str | None) -> tuple[int, str]:
    env = replica_env(data_dir=tmp_path / "data", port=free_port(), redis_url=redis_url, database_url=database_url)
    done = subprocess.run([str(SWITCHBOARD_EXE), "run"], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    return done.returncode, " ".join((done.stdout + done.stderr).split())


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    with redis_database(DB_PLACEMENT) as url:
        yield url


# Postgres on port 1 (unreachable): the placement check comes before any connection to the store, so a replica
# on Postgres beside a live SQLite replica elsewhere is refused for that, not for the unreachable server.
@needs_redis
@pytest.mark.parametrize("database_url", [None, "postgresql://switchboard@127.0.0.1:1/switchboard"],
                         ids=["sqlite-here", "postgres-here"])
async def test_a_replica_beside_a_live_sqlite_replica_on_another_machine_refuses_with_the_fix(
        redis_url: str, tmp_path: Path, database_url: str | None) -> None:
    await plant(redis_url, ELSEWHERE, ttl_s=60)
    code, output = await asyncio.to_thread(refused, tmp_path, redis_url, database_url)
    assert code == 2, output
    assert "Cannot start: Replica replica-far on db-host-2 shares this Redis" in output, output
    assert "in SQLite at /srv/switchboard/data/checkpoints.sqlite" in output, output
    assert FIX in output and "Traceback" not in output, output
    assert [d["replica"] for d in await directory_now(redis_url)] == ["replica-far"]  # the refused one left


@needs_redis
async def test_a_replica_starts_beside_its_own_machines_workers_and_an_expired_entry_and_announces_itself(
        redis_url: str, tmp_path: Path, ingested_dir: Path) -> None:
    import shutil

    data_dir = tmp_path / "data"
    shutil.copytree(ingested_dir, data_dir)
    port = free_port()
    env = replica_env(data_dir=data_dir, port=port, redis_url=redis_url, database_url=None, replica_id="replica-new")
    # A worker of this machine on the same file, then another machine's replica that died (its lease runs out
    # at once; its entry stays in the directory until a join prunes it: the new replica's own).
    sibling = Placement.of(make_settings(data_dir), "replica-new-worker")
    await plant(redis_url, sibling, ttl_s=60)
    await plant(redis_url, ELSEWHERE, ttl_s=0.001)

    server = spawn("P", env, workdir=tmp_path, data_dir=data_dir, port=port)
    try:
        await asyncio.to_thread(wait_ready, [server])
        alive = {d["replica"]: d for d in await directory_now(redis_url)}
        assert set(alive) == {"replica-new-worker", "replica-new"}, alive
        assert Placement.from_document(alive["replica-new"]) == Placement.of(make_settings(data_dir), "replica-new")

        server.signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.process.wait, 45) == 0, server.log()
        assert [d["replica"] for d in await directory_now(redis_url)] == ["replica-new-worker"]  # it left
    finally:
        server.kill_group()


@needs_redis
async def test_doctor_says_which_replica_a_start_here_would_split_from(redis_url: str, tmp_path: Path) -> None:
    from switchboard.doctor import check_replicas

    settings = make_settings(tmp_path, redis_url=SecretStr(redis_url))
    assert await check_replicas(make_settings(tmp_path)) == []  # no Redis: nothing to say
    [alone] = await check_replicas(settings)
    assert alone.ok and alone.detail.startswith("0 alive")
    await plant(redis_url, ELSEWHERE, ttl_s=60)
    [split] = await check_replicas(settings)
    assert not split.ok and "replica-far on db-host-2" in split.detail and split.fix == FIX

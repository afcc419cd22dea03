"""What the checkpointer adds to a turn: SQLite (the default) against Postgres (DATABASE_URL).

Real offline turns through `Orchestrator.respond()` (20 conversations of 5 turns, so the state carries a growing
history as a real thread does) are recorded: every call the graph makes to the checkpointer (`aget_tuple`,
`aput`, `aput_writes`) with its arguments. The calls are then replayed, in order and one at a time, against each
store with nothing else running on the loop (timing them inside the live turn would also count the graph's own
work that runs while a background write waits). `checkpoint_ms_per_turn_<store>` is the median over turns of the
time one turn's calls take (best of three rounds after a warm-up). Postgres is the one on 127.0.0.1:5432,
database `test` (`SWITCHBOARD_BENCH_POSTGRES` names another), in a schema of its own that is dropped afterwards;
without it only the SQLite figure is reported, with a note.
"""

from __future__ import annotations

import asyncio
import copy
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

SERVER = os.environ.get("SWITCHBOARD_BENCH_POSTGRES", "postgresql://127.0.0.1:5432/test")
CONVERSATIONS = 20
TURNS = 5
ROUNDS = 3  # measured replays per store (after one warm-up)
QUESTIONS = ("How do I verify webhook signatures?", "ok and what if it keeps failing for days?",
             "What does the Enterprise plan cost?", "Do you comply with GDPR?", "How long do you keep backups?")
TIMED = ("aget_tuple", "aput", "aput_writes")


class Recorder:
    """Wraps a checkpointer's async methods on the instance and records each call (a deep copy of its
    arguments), turn by turn, so the same calls can be replayed against another store."""

    def __init__(self, saver: Any) -> None:
        self.turns: list[list[tuple[str, tuple, dict]]] = []
        for name in TIMED:
            setattr(saver, name, self._recorded(name, getattr(saver, name)))

    def _recorded(self, name: str, method: Any) -> Any:
        async def recorded(*args: Any, **kwargs: Any) -> Any:
            if self.turns:
                recorded_args = (_stored_config(args[0]), *copy.deepcopy(args[1:]))
                self.turns[-1].append((name, recorded_args, copy.deepcopy(kwargs)))
            return await method(*args, **kwargs)
        return recorded


def _stored_config(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a call's config a checkpointer reads (its `configurable` thread and checkpoint keys), copied.
    The rest is the turn's own run-time context (`TurnContext`, whose embedding-ahead future holds a lock), which
    cannot be copied and which no store sees."""
    read = {k: v for k, v in config.get("configurable", {}).items() if k.startswith(("thread_", "checkpoint_"))}
    return {"configurable": copy.deepcopy(read)}


async def _record(settings: Any) -> list[list[list[tuple[str, tuple, dict]]]]:
    """Real offline turns: per conversation, per turn, the checkpointer calls the graph made."""
    from core.events import Complete
    from core.orchestrator import build_orchestrator

    orchestrator = await build_orchestrator(settings)
    recorder = Recorder(orchestrator.checkpointer)
    conversations = []
    try:
        for c in range(CONVERSATIONS):
            key = f"bench:{uuid.uuid4()}"
            start = len(recorder.turns)
            for t in range(TURNS):
                recorder.turns.append([])
                events = [e async for e in orchestrator.respond(key, QUESTIONS[(c + t) % len(QUESTIONS)])]
                assert isinstance(events[-1], Complete), events[-1]
            conversations.append(recorder.turns[start:])
    finally:
        await orchestrator.aclose()
    return conversations


def _rethread(value: Any, thread_id: str) -> Any:
    """A recorded config with another thread id (every other field, checkpoint ids included, kept)."""
    if isinstance(value, dict):
        return {k: thread_id if k == "thread_id" else _rethread(v, thread_id) for k, v in value.items()}
    return value


async def _replay(settings: Any, conversations: list) -> list[float]:
    """The recorded calls, in order, against the store `settings` name: milliseconds per turn, of the measured
    round whose median is lowest (a warm-up round first; the best of ROUNDS keeps a busy machine's scheduling
    stalls, which hit a server process harder than an in-process SQLite thread, out of the figure)."""
    from core.checkpoints import open_checkpointer

    saver, close = await open_checkpointer(settings)
    rounds: list[list[float]] = []
    try:
        for round_ in range(ROUNDS + 1):
            per_turn: list[float] = []
            for turns in conversations:
                thread_id = f"bench:{uuid.uuid4()}"
                for calls in turns:
                    started = time.perf_counter()
                    for name, args, kwargs in calls:
                        await getattr(saver, name)(_rethread(args[0], thread_id), *args[1:], **kwargs)
                    per_turn.append((time.perf_counter() - started) * 1000)
            if round_:
                rounds.append(per_turn)
    finally:
        await close()
    return min(rounds, key=statistics.median)


def _postgres_problem() -> str | None:
    try:
        import psycopg

        with psycopg.connect(SERVER, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
    return None


async def _measure(root: Path) -> dict[str, float]:
    from bench.corpus import ingested_copy
    from tests.conftest import make_settings

    ingested_copy(root / "data")
    conversations = await _record(make_settings(root / "data"))
    calls = [len(turn) for turns in conversations for turn in turns]
    results: dict[str, float] = {"checkpoint_calls_per_turn": round(statistics.mean(calls), 1)}
    sqlite = await _replay(make_settings(root / "replay"), conversations)
    results["checkpoint_ms_per_turn_sqlite"] = round(statistics.median(sqlite), 3)

    problem = _postgres_problem()
    if problem:
        print(f"  note: no Postgres at {SERVER} ({problem}); checkpoint_ms_per_turn_postgres not measured")
        return results
    import psycopg

    schema = f"sb_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        user = conn.info.user
    params = psycopg.conninfo.conninfo_to_dict(SERVER)
    url = (f"postgresql://{params.get('user') or user}@{params.get('host') or '127.0.0.1'}:"
           f"{params.get('port') or 5432}/{params.get('dbname') or 'test'}"
           f"?options={quote(f'-c search_path={schema}', safe='')}")
    try:
        postgres = await _replay(make_settings(root / "replay", database_url=url), conversations)
    finally:
        with psycopg.connect(SERVER, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    results["checkpoint_ms_per_turn_postgres"] = round(statistics.median(postgres), 3)
    results["checkpoint_ms_per_turn_postgres_p95"] = round(sorted(postgres)[int(len(postgres) * 0.95)], 3)
    return results


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(_measure(Path(tmp)))


if __name__ == "__main__":
    print(run())

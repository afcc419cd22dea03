"""What the orchestrator can say about its own dependencies: the web `/health` endpoint and the start-up check of
`switchboard run` read it through `Orchestrator.health()`, never the knowledge base or the checkpointer directly.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from core.checkpoints import CheckpointsUnavailable
from knowledge.store import StoreUnavailableError

log = logging.getLogger(__name__)

EMPTY_STORE = "the knowledge base is empty; run `switchboard ingest`"


@dataclass(frozen=True, slots=True)
class HealthReport:
    """`chunks` is None when the store cannot be read; `*_error` are sentences safe to show publicly (exception
    types only); `store_cause` is the exception text, for the operator's console or log."""

    mode: str
    chunks: dict[str, int] | None
    store_error: str = ""
    store_cause: str = ""
    checkpoints_error: str = ""
    coordination_error: str | None = None  # None: coordination is in-process (nothing to check)
    disk_error: str | None = None  # None: not checked; "" ok; else "disk full…" / "read-only…" (core.datadir)

    @property
    def store_empty(self) -> bool:
        return self.chunks is not None and sum(self.chunks.values()) == 0

    def checks(self) -> dict[str, dict[str, Any]]:
        """The `checks` object of `/health`: llm, store and checkpoints, each with `ok` and, when not, `error`."""
        store = _check(self.store_error, **({"chunks": dict(self.chunks)} if self.chunks is not None else {}))
        checks = {"llm": {"ok": True, "mode": self.mode}, "store": store,
                  "checkpoints": _check(self.checkpoints_error)}
        if self.disk_error is not None:  # a small write in the data directory (full disk, read-only mount)
            checks["disk"] = _check(self.disk_error)
        if self.coordination_error is not None:  # Redis (REDIS_URL): shared by the replicas
            checks["coordination"] = _check(self.coordination_error)
        return checks

    @property
    def failing(self) -> list[str]:
        return [name for name, check in self.checks().items() if not check["ok"]]


def _check(error: str, **extra: Any) -> dict[str, Any]:
    """One entry of `/health`'s checks: `ok`, what it knows, and the error sentence when not ok."""
    return {"ok": not error, **extra, **({"error": error} if error else {})}


async def probe(mode: str, knowledge: Any, checkpointer: Any, coordination: Any | None = None, *,
                data_dir: Any | None = None) -> HealthReport:
    """Count the chunks per agent and read one checkpoint; each failure becomes a sentence, never an exception."""
    chunks: dict[str, int] | None = None
    store_error = store_cause = checkpoints_error = ""
    try:
        chunks = dict(await asyncio.to_thread(knowledge.counts))
        if sum(chunks.values()) == 0:
            store_error = EMPTY_STORE
    except Exception as exc:  # noqa: BLE001 - reported as a sentence
        log.warning("health: the knowledge store cannot be read: %s", exc)
        # an unreachable Chroma server says so (without its address: /health is public); else the exception type
        reason = exc.public if isinstance(exc, StoreUnavailableError) else type(exc).__name__
        store_error, store_cause = f"the knowledge store cannot be read: {reason}", str(exc)
    try:
        await checkpointer.aget_tuple({"configurable": {"thread_id": "health:probe"}})
    except Exception as exc:  # noqa: BLE001
        log.warning("health: checkpoints cannot be read: %s", exc)
        # an unusable Postgres (DATABASE_URL) says so with its fix (without its address); else the exception type
        checkpoints_error = (exc.public if isinstance(exc, CheckpointsUnavailable)
                             else f"checkpoints cannot be read: {type(exc).__name__}")
    coordination_error = None
    if coordination is not None and coordination.shared:
        problem = await coordination.ping()
        coordination_error = ("coordination (REDIS_URL) does not answer: start Redis or fix the URL"
                              if problem else "")  # the sentence with the address goes to the log only
        if problem:
            log.warning("health: %s", problem)
    disk_error = None
    if data_dir is not None:
        from core.datadir import write_problem

        disk_error = await asyncio.to_thread(write_problem, data_dir)
        if disk_error:
            log.warning("health: %s (%s)", disk_error, data_dir)
    return HealthReport(mode, chunks, store_error, store_cause, checkpoints_error, coordination_error, disk_error)

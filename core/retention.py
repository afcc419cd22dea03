"""How long conversations are kept (`RETENTION_DAYS`) and how a person's are erased, for the checkpoints and the
turn ledger (`core.interrupted`). The support log and votes have their own `prune`/`forget` in `bots/`; the
composition root (`switchboard/privacy_cli.py`) runs all of them, from `switchboard prune`/`forget` and the
daily job of `switchboard run`.

A conversation's age is its latest checkpoint's: checkpoint ids are UUIDv6, whose first 60 bits are the time it
was written, so no blob is read (an SQLite checkpoint is msgpack) and conversations older than the ledger count.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from core.interrupted import TurnLedger

log = logging.getLogger(__name__)

DAY_S = 86_400.0
_GREGORIAN_TO_UNIX_100NS = 0x01B21DD213814000
LATEST = "SELECT thread_id, MAX(checkpoint_id) AS latest FROM checkpoints WHERE checkpoint_ns = '' GROUP BY thread_id"


def cutoff(retention_days: float, now: float | None = None) -> float:
    """The epoch second before which things are expired."""
    return (time.time() if now is None else now) - retention_days * DAY_S


def uuid6_time(checkpoint_id: str) -> float | None:
    """When a LangGraph checkpoint id (UUIDv6) was made, in epoch seconds; None for anything else."""
    try:
        value = uuid.UUID(str(checkpoint_id))
    except ValueError:
        return None
    if value.version != 6:
        return None
    stamp = ((value.int >> 80) << 12) | ((value.int >> 64) & 0x0FFF)
    return (stamp - _GREGORIAN_TO_UNIX_100NS) / 10_000_000


async def latest_checkpoints(checkpointer: Any) -> dict[str, float]:
    """Every conversation and when its latest checkpoint was written."""
    conn = getattr(checkpointer, "conn", None)
    if conn is not None and hasattr(checkpointer, "lock") and hasattr(conn, "commit"):  # SQLite
        async with checkpointer.lock:
            cursor = await conn.execute(LATEST)
            rows = [(row[0], row[1]) for row in await cursor.fetchall()]
            await cursor.close()
    else:  # Postgres: a pool or one connection
        if hasattr(conn, "connection"):
            async with conn.connection() as pg:
                rows = [(r["thread_id"], r["latest"]) for r in await (await pg.execute(LATEST)).fetchall()]
        else:
            rows = [(r["thread_id"], r["latest"]) for r in await (await conn.execute(LATEST)).fetchall()]
    ages: dict[str, float] = {}
    for thread_id, latest in rows:
        when = uuid6_time(latest)
        if when is not None:
            ages[thread_id] = when
    return ages


async def delete_conversations(checkpointer: Any, ledger: TurnLedger, session_keys: list[str]) -> None:
    """Delete conversations whole: checkpoints, pending writes and ledger rows."""
    for key in session_keys:
        await checkpointer.adelete_thread(key)
    await ledger.drop(session_keys)


async def prune_conversations(checkpointer: Any, before: float, ledger: TurnLedger | None = None) -> list[str]:
    """Delete the conversations whose last turn is older than `before`; returns their session keys."""
    ledger = ledger or TurnLedger(checkpointer)
    ages = await latest_checkpoints(checkpointer)
    expired = {key for key, when in ages.items() if when < before}
    # a ledger row whose conversation has no checkpoint (a cut first turn, a reset) expires by its own time
    expired |= {key for key in await ledger.idle_since(before) if key not in ages}
    keys = sorted(expired)
    await delete_conversations(checkpointer, ledger, keys)
    if keys:
        log.info("retention: deleted %d conversation(s) older than the retention period", len(keys))
    return keys


async def forget_user(checkpointer: Any, user: str, ledger: TurnLedger | None = None,
                      also: tuple[str, ...] = ()) -> list[str]:
    """Delete every conversation `user` asked in (and those in `also`, found by the other stores); returns
    the session keys, so the support log and votes can be erased for them too."""
    ledger = ledger or TurnLedger(checkpointer)
    keys = sorted(set(await ledger.sessions_of(user)) | set(also))
    await delete_conversations(checkpointer, ledger, keys)
    return keys


__all__ = ["cutoff", "delete_conversations", "forget_user", "latest_checkpoints", "prune_conversations",
           "uuid6_time"]

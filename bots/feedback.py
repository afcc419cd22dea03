"""👍/👎 on answers, recorded with the session key so a team can read the conversation that earned it.

Two stores behind one small interface (`FeedbackStore`), chosen from settings by `feedback_store(settings)`:

- `SqliteFeedbackStore` (the default): the `switchboard_feedback` table of `support.sqlite` in the data
  directory, beside the support log, so votes expire with the conversations (`RETENTION_DAYS`) and
  `switchboard forget` erases them (they used to go to an unbounded `feedback.jsonl`, imported once if found).
- `PostgresFeedbackStore` (when `DATABASE_URL` is set): the `switchboard_feedback` table in the same Postgres as
  the conversations, so every replica's votes land in one place. The table is created by `switchboard migrate`
  and, should that not have run, by the first vote. Votes are rare (a click each), so each one opens a short
  psycopg async connection rather than holding a pool.

Front-ends record through the store: `await store.record(frontend=…, session_key=…, vote=…, user=…, message=…)`.
The module functions `record_feedback(data_dir, …)` and `read_feedback(data_dir)` are the SQLite store's sync
form, for callers and tests that write it directly. Both stores have `prune(before)` and `forget(user, keys)`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any, Literal, Protocol

from bots.metrics import FEEDBACK

log = logging.getLogger(__name__)

Vote = Literal["up", "down"]
FEEDBACK_FILE = "feedback.jsonl"
TABLE = "switchboard_feedback"


class FeedbackStore(Protocol):
    """Where votes go and come back from. `where` names it for people (never with a password)."""

    where: str

    async def record(self, *, frontend: str, session_key: str, vote: Vote, user: str | None = None,
                     message: str | None = None) -> None: ...

    async def read(self) -> list[dict[str, Any]]:
        """Every vote, oldest first, as dicts with `at` (epoch seconds), frontend, session_key, vote, user,
        message."""
        ...

    async def setup(self) -> None:
        """Create what the store needs (idempotent)."""
        ...

    async def prune(self, before: float) -> int:
        """Delete the votes older than `before` (epoch seconds); how many."""
        ...

    async def forget(self, user: str, session_keys: tuple[str, ...] = ()) -> int:
        """Delete `user`'s votes and every vote on `session_keys`; how many."""
        ...


def _counted(frontend: str, session_key: str, vote: Vote, user: str | None) -> None:
    FEEDBACK.labels(frontend=frontend, vote=vote).inc()
    log.info("feedback %s on session %s from %s", vote, session_key, user)


# --- SQLite beside the support log (default) ---------------------------------------------------------------------
# Votes used to be appended to `feedback.jsonl`, which grew without bound and was read whole. They now live in the
# `switchboard_feedback` table of `support.sqlite` (the support store's file), so they expire with the
# conversations (`RETENTION_DAYS`) and `switchboard forget` finds them; an old `feedback.jsonl` is imported once.

SQLITE_FILE = "support.sqlite"  # = bots.support.store.SQLITE_FILE: one file for what the support loop keeps
SQLITE_SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at DOUBLE PRECISION NOT NULL,
        frontend TEXT NOT NULL,
        session_key TEXT NOT NULL,
        vote TEXT NOT NULL CHECK (vote IN ('up', 'down')),
        user_id TEXT,
        message TEXT
    )""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_session_key_idx ON {TABLE} (session_key)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_at_idx ON {TABLE} (at)",
)


def _sqlite(data_dir: Path, *, create: bool = True) -> Any:
    """A short sqlite3 connection to `data_dir/support.sqlite` with the table ready (None when it does not exist
    and `create` is false); a leftover `feedback.jsonl` is moved into the table and removed."""
    import sqlite3

    path = Path(data_dir) / SQLITE_FILE
    if not create and not path.exists():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=5.0)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA journal_mode = WAL")  # shared with the support store's connection
    for statement in SQLITE_SCHEMA:
        conn.execute(statement)
    legacy = Path(data_dir) / FEEDBACK_FILE
    if legacy.exists():
        rows = [json.loads(line) for line in legacy.read_text(encoding="utf-8").splitlines() if line.strip()]
        conn.executemany(f"INSERT INTO {TABLE} (at, frontend, session_key, vote, user_id, message) "
                         "VALUES (?, ?, ?, ?, ?, ?)",
                         [(r.get("at") or time.time(), r.get("frontend") or "", r.get("session_key") or "",
                           r.get("vote") if r.get("vote") in ("up", "down") else "down", r.get("user"),
                           r.get("message")) for r in rows])
        conn.commit()
        legacy.unlink()
        log.info("feedback: %d vote(s) moved from %s into %s", len(rows), FEEDBACK_FILE, SQLITE_FILE)
    conn.commit()
    return conn


def record_feedback(data_dir: Path, *, frontend: str, session_key: str, vote: Vote, user: str | None = None,
                    message: str | None = None) -> Path:
    """Store one vote in `data_dir/support.sqlite` and count it; returns the database file."""
    conn = _sqlite(data_dir)
    try:
        conn.execute(f"INSERT INTO {TABLE} (at, frontend, session_key, vote, user_id, message) "
                     "VALUES (?, ?, ?, ?, ?, ?)", (time.time(), frontend, session_key, vote, user, message))
        conn.commit()
    finally:
        conn.close()
    _counted(frontend, session_key, vote, user)
    return Path(data_dir) / SQLITE_FILE


def read_feedback(data_dir: Path) -> list[dict]:
    """Every vote kept in `data_dir/support.sqlite`, oldest first."""
    conn = _sqlite(data_dir, create=(Path(data_dir) / FEEDBACK_FILE).exists())
    if conn is None:
        return []
    try:
        rows = conn.execute(f"SELECT at, frontend, session_key, vote, user_id, message FROM {TABLE} "
                            "ORDER BY at, id").fetchall()
    finally:
        conn.close()
    return [{"at": r[0], "frontend": r[1], "session_key": r[2], "vote": r[3], "user": r[4], "message": r[5]}
            for r in rows]


def _sqlite_delete(data_dir: Path, where: str, params: tuple[Any, ...]) -> int:
    conn = _sqlite(data_dir, create=False)
    if conn is None:
        return 0
    try:
        count = conn.execute(f"DELETE FROM {TABLE} WHERE {where}", params).rowcount
        conn.commit()
        return count
    finally:
        conn.close()


class SqliteFeedbackStore:
    """The `switchboard_feedback` table of `data_dir/support.sqlite`; each call is a short sqlite3 connection in a
    worker thread (votes are a click each)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.where = f"{TABLE} in {self.data_dir / SQLITE_FILE}"

    async def record(self, *, frontend: str, session_key: str, vote: Vote, user: str | None = None,
                     message: str | None = None) -> None:
        await asyncio.to_thread(record_feedback, self.data_dir, frontend=frontend, session_key=session_key,
                                vote=vote, user=user, message=message)

    async def read(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(read_feedback, self.data_dir)

    async def setup(self) -> None:
        await asyncio.to_thread(lambda: _sqlite(self.data_dir).close())

    async def prune(self, before: float) -> int:
        """Delete the votes older than `before` (epoch seconds): RETENTION_DAYS."""
        return await asyncio.to_thread(_sqlite_delete, self.data_dir, "at < ?", (before,))

    async def forget(self, user: str, session_keys: tuple[str, ...] = ()) -> int:
        """Delete a person's votes, and every vote on their conversations."""
        marks = ", ".join("?" for _ in session_keys) or "NULL"
        return await asyncio.to_thread(_sqlite_delete, self.data_dir,
                                       f"user_id = ? OR session_key IN ({marks})", (user, *session_keys))


FileFeedbackStore = SqliteFeedbackStore  # the old name (the store used to be feedback.jsonl)


# --- Postgres (DATABASE_URL) ------------------------------------------------------------------------------------

CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL DEFAULT now(),
    frontend TEXT NOT NULL,
    session_key TEXT NOT NULL,
    vote TEXT NOT NULL CHECK (vote IN ('up', 'down')),
    user_id TEXT,
    message TEXT
)"""
CREATE_INDEX = f"CREATE INDEX IF NOT EXISTS {TABLE}_session_key_idx ON {TABLE} (session_key)"
INSERT = (f"INSERT INTO {TABLE} (frontend, session_key, vote, user_id, message) "
          "VALUES (%(frontend)s, %(session_key)s, %(vote)s, %(user)s, %(message)s)")
SELECT = (f'SELECT extract(epoch FROM at)::float8 AS at, frontend, session_key, vote, user_id AS "user", message '
          f"FROM {TABLE} ORDER BY at, id")


class PostgresFeedbackStore:
    """The `switchboard_feedback` table of the Postgres at `url` (DATABASE_URL)."""

    def __init__(self, url: str) -> None:
        from core.checkpoints import check_url, redact_url

        check_url(url)
        self._url = url
        self.where = f"{TABLE} in Postgres at {redact_url(url)}"
        self._ready = False

    async def _connect(self) -> Any:
        from core.checkpoints import connect

        return await connect(self._url)  # an unusable server is one sentence with its fix, never the password

    async def setup(self) -> None:
        from core.checkpoints import migration_lock

        conn = await self._connect()
        try:
            async with migration_lock(conn):
                await conn.execute(CREATE_TABLE)
                await conn.execute(CREATE_INDEX)
        finally:
            await conn.close()
        self._ready = True

    async def record(self, *, frontend: str, session_key: str, vote: Vote, user: str | None = None,
                     message: str | None = None) -> None:
        if not self._ready:
            await self.setup()
        conn = await self._connect()
        try:
            await conn.execute(INSERT, {"frontend": frontend, "session_key": session_key, "vote": vote,
                                        "user": user, "message": message})
        finally:
            await conn.close()
        _counted(frontend, session_key, vote, user)

    async def read(self) -> list[dict[str, Any]]:
        conn = await self._connect()
        try:
            found = await (await conn.execute("SELECT to_regclass(%s) IS NOT NULL AS ok", (TABLE,))).fetchone()
            if not found["ok"]:
                return []
            return [dict(row) for row in await (await conn.execute(SELECT)).fetchall()]
        finally:
            await conn.close()

    async def _delete(self, where: str, params: tuple[Any, ...]) -> int:
        conn = await self._connect()
        try:
            found = await (await conn.execute("SELECT to_regclass(%s) IS NOT NULL AS ok", (TABLE,))).fetchone()
            if not found["ok"]:
                return 0
            return (await conn.execute(f"DELETE FROM {TABLE} WHERE {where}", params)).rowcount
        finally:
            await conn.close()

    async def prune(self, before: float) -> int:
        """Delete the votes older than `before` (epoch seconds): RETENTION_DAYS."""
        return await self._delete("at < to_timestamp(%s)", (before,))

    async def forget(self, user: str, session_keys: tuple[str, ...] = ()) -> int:
        """Delete a person's votes, and every vote on their conversations."""
        return await self._delete("user_id = %s OR session_key = ANY(%s)", (user, list(session_keys)))


# --- choosing, and reading -------------------------------------------------------------------------------------

def feedback_store(settings: Any) -> FeedbackStore:
    """The store the settings name: Postgres when DATABASE_URL is set, else the data directory's file.
    Building one opens nothing."""
    from core.checkpoints import database_url

    url = database_url(settings)
    return PostgresFeedbackStore(url) if url else SqliteFeedbackStore(settings.data_dir)


def summarize(rows: list[dict], recent: int = 10) -> dict:
    """Votes per front-end, and the latest 👎 with their session keys (the conversations worth reading)."""
    by_frontend: dict[str, dict[str, int]] = {}
    for row in rows:
        counts = by_frontend.setdefault(str(row.get("frontend")), {"up": 0, "down": 0})
        counts[row.get("vote", "down")] = counts.get(row.get("vote", "down"), 0) + 1
    downs = [row for row in rows if row.get("vote") == "down"][-recent:]
    return {"total": len(rows), "by_frontend": by_frontend,
            "recent_down": [{"at": r.get("at"), "session_key": r.get("session_key"), "user": r.get("user")}
                            for r in reversed(downs)]}

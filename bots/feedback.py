"""👍/👎 on answers, recorded with the session key so a team can read the conversation that earned it.

Two stores behind one small interface (`FeedbackStore`), chosen from settings by `feedback_store(settings)`:

- `FileFeedbackStore` (the default): append-only JSON lines in the data directory (`feedback.jsonl`). No
  database to run, trivially shipped to whatever analytics a team has, and safe under concurrent writers in one
  process (one short append each).
- `PostgresFeedbackStore` (when `DATABASE_URL` is set): the `switchboard_feedback` table in the same Postgres as
  the conversations, so every replica's votes land in one place. The table is created by `switchboard migrate`
  and, should that not have run, by the first vote. Votes are rare (a click each), so each one opens a short
  psycopg async connection rather than holding a pool.

Front-ends record through the store: `await store.record(frontend=…, session_key=…, vote=…, user=…, message=…)`.
The module functions `record_feedback(data_dir, …)` and `read_feedback(data_dir)` are the file store's sync
form, kept for callers and tests that write the file directly.
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


def _counted(frontend: str, session_key: str, vote: Vote, user: str | None) -> None:
    FEEDBACK.labels(frontend=frontend, vote=vote).inc()
    log.info("feedback %s on session %s from %s", vote, session_key, user)


# --- the JSON-lines file (default) -----------------------------------------------------------------------------

def record_feedback(data_dir: Path, *, frontend: str, session_key: str, vote: Vote, user: str | None = None,
                    message: str | None = None) -> Path:
    """Append one vote to `data_dir/feedback.jsonl` and count it; returns the file written."""
    path = Path(data_dir) / FEEDBACK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    row = {"at": time.time(), "frontend": frontend, "session_key": session_key, "vote": vote, "user": user,
           "message": message}
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    _counted(frontend, session_key, vote, user)
    return path


def read_feedback(data_dir: Path) -> list[dict]:
    """Every vote recorded so far in `data_dir/feedback.jsonl`, oldest first."""
    path = Path(data_dir) / FEEDBACK_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class FileFeedbackStore:
    """`data_dir/feedback.jsonl`; the file work runs in a worker thread."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.where = str(self.data_dir / FEEDBACK_FILE)

    async def record(self, *, frontend: str, session_key: str, vote: Vote, user: str | None = None,
                     message: str | None = None) -> None:
        await asyncio.to_thread(record_feedback, self.data_dir, frontend=frontend, session_key=session_key,
                                vote=vote, user=user, message=message)

    async def read(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(read_feedback, self.data_dir)

    async def setup(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)


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


# --- choosing, and reading -------------------------------------------------------------------------------------

def feedback_store(settings: Any) -> FeedbackStore:
    """The store the settings name: Postgres when DATABASE_URL is set, else the data directory's file.
    Building one opens nothing."""
    from core.checkpoints import database_url

    url = database_url(settings)
    return PostgresFeedbackStore(url) if url else FileFeedbackStore(settings.data_dir)


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

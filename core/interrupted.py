"""The turn ledger: per conversation, how many questions it has had, who asked them, and the question being
answered right now — beside the checkpoints, in the same database.

Why it exists:
- **A crash must not lose a question.** Turns are checkpointed once, when the graph finishes
  (`durability="exit"`), so a process killed mid-reply used to lose the question entirely. `begin()` records the
  question (one small upsert, committed before the model is called); `finish()` clears it. A question still
  recorded when the next turn of that conversation begins was cut by a crash: that turn's input carries it, with
  the note `UNANSWERED_NOTE`, so the conversation (and the model) sees what went unanswered.
- **A conversation has a bound** (`MAX_TURNS`): the count is read in the same statement, so refusing costs no
  checkpoint read.
- **Erasure and retention need an index.** Session keys do not name people; `switchboard forget --user` finds a
  person's conversations here, and `switchboard prune` finds conversations by their last turn.

SQLite: two tables in `checkpoints.sqlite`, on the saver's own connection, each call one trip to its thread
(`core.sqlite_checkpoints.run_in_connection`). Postgres
(`DATABASE_URL`): the same tables over the saver's pool (created once under the migration lock).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage

from core.sqlite_checkpoints import run_in_connection, sqlite3_of

SESSIONS = "switchboard_sessions"
SESSION_USERS = "switchboard_session_users"
UNANSWERED_NOTE = "(this question was not answered: the service restarted)"
TURN_LIMIT_MESSAGE = ("This conversation has reached its limit of {limit} questions. Please start a new "
                      "conversation (a new thread, or reset) to ask more.")

SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {SESSIONS} (
        session_key TEXT PRIMARY KEY,
        turns INTEGER NOT NULL DEFAULT 0,
        updated_at DOUBLE PRECISION NOT NULL,
        open_question TEXT,
        open_at DOUBLE PRECISION
    )""",
    f"""CREATE TABLE IF NOT EXISTS {SESSION_USERS} (
        session_key TEXT NOT NULL,
        user_id TEXT NOT NULL,
        PRIMARY KEY (session_key, user_id)
    )""",
    f"CREATE INDEX IF NOT EXISTS {SESSION_USERS}_user_idx ON {SESSION_USERS} (user_id)",
    f"CREATE INDEX IF NOT EXISTS {SESSIONS}_updated_idx ON {SESSIONS} (updated_at)",
)
READ = f"SELECT turns, open_question FROM {SESSIONS} WHERE session_key = ?"
OPEN = (f"INSERT INTO {SESSIONS} (session_key, turns, updated_at, open_question, open_at) VALUES (?, 1, ?, ?, ?) "
        f"ON CONFLICT (session_key) DO UPDATE SET turns = {SESSIONS}.turns + 1, updated_at = excluded.updated_at, "
        "open_question = excluded.open_question, open_at = excluded.open_at")
ADD_USER = f"INSERT INTO {SESSION_USERS} (session_key, user_id) VALUES (?, ?) ON CONFLICT DO NOTHING"
CLOSE = f"UPDATE {SESSIONS} SET open_question = NULL, open_at = NULL WHERE session_key = ? AND open_at = ?"


@dataclass(frozen=True, slots=True)
class Opening:
    """What `begin()` found: `refused` when the conversation is at its limit (nothing was recorded); `unanswered`,
    the question a crash cut in this conversation's previous turn; `turns`, the questions before this one."""

    turns: int
    refused: bool = False
    unanswered: str | None = None
    at: float = 0.0

    def carried(self) -> list[BaseMessage]:
        """The messages that go before this turn's question: the cut question, marked, or nothing."""
        if not self.unanswered:
            return []
        return [HumanMessage(f"{self.unanswered}\n\n{UNANSWERED_NOTE}",
                             additional_kwargs={"unanswered": True})]


def _first(row: Any, index: int, name: str) -> Any:
    return row[name] if isinstance(row, dict) else row[index]


def _opened(rows: Any) -> tuple[int, str | None]:
    """(questions so far, the question left open) from the READ statement's rows."""
    if not rows:
        return 0, None
    return int(_first(rows[0], 0, "turns")), _first(rows[0], 1, "open_question")


class TurnLedger:
    """The two tables, over the checkpointer's own connection (`for_checkpointer`)."""

    def __init__(self, checkpointer: Any) -> None:
        conn = getattr(checkpointer, "conn", None)
        self._sqlite = conn is not None and hasattr(checkpointer, "lock") and hasattr(conn, "commit")
        self._conn = conn
        self._lock: Any = getattr(checkpointer, "lock", None) if self._sqlite else None
        self._ready = False
        self._setup_lock = asyncio.Lock()

    # --- plumbing: `?` statements on either backend ----------------------------------------------------------------

    async def _setup(self) -> None:
        async with self._setup_lock:
            if self._ready:
                return
            if self._sqlite:
                async with self._lock:
                    for statement in SCHEMA:
                        await self._conn.execute(statement)
                    await self._conn.commit()
            else:
                from core.checkpoints import migration_lock

                async with self._pg() as conn:
                    async with migration_lock(conn):
                        for statement in SCHEMA:
                            await conn.execute(statement)
            self._ready = True

    def _pg(self) -> Any:
        """A Postgres connection: from the saver's pool, or its one connection."""
        import contextlib

        if hasattr(self._conn, "connection"):
            return self._conn.connection()

        @contextlib.asynccontextmanager
        async def one() -> Any:
            yield self._conn

        return one()

    async def _run(self, statements: list[tuple[str, tuple[Any, ...]]], fetch_first: bool = False) -> Any:
        """Run statements in one transaction; the first one's rows when `fetch_first`."""
        await self._setup()
        rows: Any = None
        if self._sqlite:  # every statement and the commit in one trip to the connection's thread: atomic
            return await run_in_connection(self._conn, self._run_here, statements, fetch_first)
        async with self._pg() as conn:
            async with conn.transaction():
                for index, (sql, params) in enumerate(statements):
                    cursor = await conn.execute(sql.replace("?", "%s"), params)
                    if index == 0 and fetch_first:
                        rows = await cursor.fetchall()
        return rows

    def _run_here(self, statements: list[tuple[str, tuple[Any, ...]]], fetch_first: bool) -> Any:
        """`_run` on SQLite, in the connection's thread: one transaction, rolled back if a statement fails."""
        conn = sqlite3_of(self._conn)
        rows: Any = None
        try:
            for index, (sql, params) in enumerate(statements):
                cursor = conn.execute(sql, params)
                if index == 0 and fetch_first:
                    rows = cursor.fetchall()
                cursor.close()
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return rows

    # --- turns ----------------------------------------------------------------------------------------------------

    async def begin(self, session_key: str, question: str, user: str | None, limit: int) -> Opening:
        """Record `question` as being answered (committed before this returns), unless the conversation already
        had `limit` questions."""
        now = time.time()
        statements = [(OPEN, (session_key, now, question, now))]
        if user:
            statements.append((ADD_USER, (session_key, str(user))))
        if self._sqlite:  # the read, the limit and the writes in one trip (one transaction)
            await self._setup()
            return await run_in_connection(self._conn, self._begin_here, session_key, limit, statements, now)
        rows = await self._run([(READ, (session_key,))], fetch_first=True)
        turns, unanswered = _opened(rows)
        if turns >= limit:
            return Opening(turns, refused=True)
        await self._run(statements)
        return Opening(turns, unanswered=unanswered, at=now)

    def _begin_here(self, session_key: str, limit: int, statements: list[tuple[str, tuple[Any, ...]]],
                    now: float) -> Opening:
        """`begin` on SQLite, in the connection's thread."""
        turns, unanswered = _opened(sqlite3_of(self._conn).execute(READ, (session_key,)).fetchall())
        if turns >= limit:
            return Opening(turns, refused=True)
        self._run_here(statements, fetch_first=False)
        return Opening(turns, unanswered=unanswered, at=now)

    async def finish(self, session_key: str, opening: Opening) -> None:
        """The turn ended (answered, or failed in a way the user was told about): nothing is left open."""
        if opening.refused:
            return
        await self._run([(CLOSE, (session_key, opening.at))])

    # --- retention and erasure ------------------------------------------------------------------------------------

    async def sessions_of(self, user: str) -> list[str]:
        rows = await self._run([(f"SELECT session_key FROM {SESSION_USERS} WHERE user_id = ?", (user,))], True)
        return [_first(row, 0, "session_key") for row in rows or []]

    async def idle_since(self, before: float) -> list[str]:
        """Conversations whose last question is older than `before` (epoch seconds)."""
        rows = await self._run([(f"SELECT session_key FROM {SESSIONS} WHERE updated_at < ?", (before,))], True)
        return [_first(row, 0, "session_key") for row in rows or []]

    async def drop(self, session_keys: list[str]) -> None:
        """Forget these conversations' rows (their checkpoints are deleted by the caller)."""
        statements: list[tuple[str, tuple[Any, ...]]] = []
        for key in session_keys:
            statements.append((f"DELETE FROM {SESSIONS} WHERE session_key = ?", (key,)))
            statements.append((f"DELETE FROM {SESSION_USERS} WHERE session_key = ?", (key,)))
        if statements:
            await self._run(statements)


__all__ = ["Opening", "TURN_LIMIT_MESSAGE", "TurnLedger", "UNANSWERED_NOTE"]

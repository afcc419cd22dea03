"""Where the support loop keeps what must last: handoffs (one row per conversation) and support events.

The same place as the conversations (`core.checkpoints`): SQLite in the data directory by default
(`support.sqlite`, shared by the workers of one machine), the Postgres of `DATABASE_URL` when it is set, so
every replica sees the same handoffs. That is what keeps the bot quiet in a handed-off thread on every replica
and across restarts: each message in a thread reads its handoff row (`get_handoff`, one primary-key lookup).

- `switchboard_handoffs`: per session key, its status (`requested` → `taken` → `resolved`, or `returned` to the
  bot; `failed` when no person could be reached), who asked, who took it, the ticket as sent and where the staff
  message is. Opening one is atomic (`open_handoff`: an upsert that only succeeds when no handoff is open), so a
  double click, or two replicas handling the same click, post one staff message. Status changes are compare-and-
  set (`transition`), so two staff members pressing "Take it" at once get one winner.
- `switchboard_support_events`: an append-only log of what happened per turn and per handoff (`answered`,
  `declined`, `handoff`, `taken`, `returned`, `resolved`, `note`: a message posted in a handed-off thread), which
  the outcomes, `switchboard gaps` and `switchboard draft-article` read.

Queries are written once with `:name` parameters (SQLite's style) and rewritten to psycopg's `%(name)s`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

SQLITE_FILE = "support.sqlite"
HANDOFFS = "switchboard_handoffs"
EVENTS = "switchboard_support_events"
OPEN = ("requested", "taken")  # a person is (being) asked: the bot stays quiet when a staff message exists

SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {HANDOFFS} (
        session_key TEXT PRIMARY KEY,
        platform TEXT NOT NULL,
        status TEXT NOT NULL,
        requested_by TEXT,
        taken_by TEXT,
        requested_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        ticket TEXT NOT NULL DEFAULT '{{}}',
        staff TEXT NOT NULL DEFAULT '{{}}'
    )""",
    f"""CREATE TABLE IF NOT EXISTS {EVENTS} (
        at DOUBLE PRECISION NOT NULL,
        platform TEXT NOT NULL,
        session_key TEXT NOT NULL,
        kind TEXT NOT NULL,
        agent TEXT,
        text TEXT NOT NULL DEFAULT '',
        user_id TEXT,
        confidence DOUBLE PRECISION,
        detail TEXT NOT NULL DEFAULT '{{}}'
    )""",
    f"CREATE INDEX IF NOT EXISTS {EVENTS}_at_idx ON {EVENTS} (at)",
    f"CREATE INDEX IF NOT EXISTS {EVENTS}_session_idx ON {EVENTS} (session_key)",
)
_HANDOFF_COLUMNS = "session_key, platform, status, requested_by, taken_by, requested_at, updated_at, ticket, staff"
OPEN_HANDOFF = (
    f"INSERT INTO {HANDOFFS} ({_HANDOFF_COLUMNS}) VALUES (:session_key, :platform, 'requested', :requested_by, "
    f"NULL, :at, :at, :ticket, '{{}}') ON CONFLICT (session_key) DO UPDATE SET platform = excluded.platform, "
    "status = 'requested', requested_by = excluded.requested_by, taken_by = NULL, "
    "requested_at = excluded.requested_at, updated_at = excluded.updated_at, ticket = excluded.ticket, "
    f"staff = '{{}}' WHERE {HANDOFFS}.status NOT IN ('requested', 'taken')"
)
GET_HANDOFF = f"SELECT {_HANDOFF_COLUMNS} FROM {HANDOFFS} WHERE session_key = :session_key"
SET_STAFF = f"UPDATE {HANDOFFS} SET staff = :staff, updated_at = :at WHERE session_key = :session_key"
INSERT_EVENT = (f"INSERT INTO {EVENTS} (at, platform, session_key, kind, agent, text, user_id, confidence, detail) "
                "VALUES (:at, :platform, :session_key, :kind, :agent, :text, :user_id, :confidence, :detail)")
_EVENT_COLUMNS = "at, platform, session_key, kind, agent, text, user_id, confidence, detail"


def _transition_sql(sources: tuple[str, ...]) -> str:
    allowed = ", ".join(f"'{s}'" for s in sources)
    return (f"UPDATE {HANDOFFS} SET status = :status, taken_by = COALESCE(:taken_by, taken_by), updated_at = :at "
            f"WHERE session_key = :session_key AND status IN ({allowed})")


@dataclass(frozen=True, slots=True)
class HandoffRecord:
    """One conversation's handoff. `staff` says where the staff message is (empty: none was posted)."""

    session_key: str
    platform: str
    status: str
    requested_by: str | None
    taken_by: str | None
    requested_at: float
    updated_at: float
    ticket: dict[str, Any] = field(default_factory=dict)
    staff: dict[str, Any] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        return self.status in OPEN

    @property
    def quiet(self) -> bool:
        """The bot stays out of the thread: a person is asked there, and staff can hand it back (buttons)."""
        return self.open and bool(self.staff)


@dataclass(frozen=True, slots=True)
class SupportEvent:
    """One line of the support log (see the module docstring for the kinds)."""

    platform: str
    session_key: str
    kind: str
    text: str = ""
    agent: str | None = None
    user: str | None = None
    confidence: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)


class SupportStore(Protocol):
    """The handoffs and the support log. `where` names it for people (never with a password)."""

    where: str

    async def setup(self) -> None: ...
    async def open_handoff(self, session_key: str, platform: str, requested_by: str | None,
                           ticket: dict[str, Any]) -> HandoffRecord | None: ...
    async def get_handoff(self, session_key: str) -> HandoffRecord | None: ...
    async def set_staff(self, session_key: str, staff: dict[str, Any]) -> None: ...
    async def transition(self, session_key: str, status: str, *, sources: tuple[str, ...],
                         taken_by: str | None = None) -> HandoffRecord | None: ...
    async def add_event(self, event: SupportEvent) -> None: ...
    async def events(self, *, since: float | None = None, session_key: str | None = None) -> list[SupportEvent]: ...
    async def handoffs(self) -> list[HandoffRecord]: ...
    async def aclose(self) -> None: ...


def _record(row: Any) -> HandoffRecord:
    r = dict(row)
    return HandoffRecord(r["session_key"], r["platform"], r["status"], r["requested_by"], r["taken_by"],
                         float(r["requested_at"]), float(r["updated_at"]), json.loads(r["ticket"] or "{}"),
                         json.loads(r["staff"] or "{}"))


def _event(row: Any) -> SupportEvent:
    r = dict(row)
    return SupportEvent(r["platform"], r["session_key"], r["kind"], r["text"] or "", r["agent"], r["user_id"],
                        r["confidence"], json.loads(r["detail"] or "{}"), float(r["at"]))


def _event_params(event: SupportEvent) -> dict[str, Any]:
    return {"at": event.at, "platform": event.platform, "session_key": event.session_key, "kind": event.kind,
            "agent": event.agent, "text": event.text, "user_id": event.user, "confidence": event.confidence,
            "detail": json.dumps(event.detail, ensure_ascii=False)}


def _events_query(since: float | None, session_key: str | None) -> tuple[str, dict[str, Any]]:
    where, params = [], {}
    if since is not None:
        where.append("at >= :since")
        params["since"] = since
    if session_key is not None:
        where.append("session_key = :session_key")
        params["session_key"] = session_key
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return f"SELECT {_EVENT_COLUMNS} FROM {EVENTS}{clause} ORDER BY at", params


class StoreClosed(RuntimeError):
    """The store was closed (shutdown); a late caller must not open a new connection, which would outlive it."""


class SqlSupportStore:
    """The queries, over a `_run(sql, params, fetch)` each backend provides."""

    where = ""
    _closed = False
    redact: Any = staticmethod(lambda text: text)  # REDACT (`support_store` sets it): texts are masked when kept

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(f"the support store ({self.where}) is closed")

    async def _run(self, sql: str, params: dict[str, Any], fetch: str = "none") -> Any:
        raise NotImplementedError

    async def open_handoff(self, session_key: str, platform: str, requested_by: str | None,
                           ticket: dict[str, Any]) -> HandoffRecord | None:
        """Open a handoff unless one is open already (then None): atomic across processes."""
        changed = await self._run(OPEN_HANDOFF, {"session_key": session_key, "platform": platform,
                                                 "requested_by": requested_by, "at": time.time(),
                                                 "ticket": json.dumps(ticket, ensure_ascii=False)}, "rowcount")
        return await self.get_handoff(session_key) if changed else None

    async def get_handoff(self, session_key: str) -> HandoffRecord | None:
        row = await self._run(GET_HANDOFF, {"session_key": session_key}, "one")
        return _record(row) if row is not None else None

    async def set_staff(self, session_key: str, staff: dict[str, Any]) -> None:
        await self._run(SET_STAFF, {"session_key": session_key, "staff": json.dumps(staff), "at": time.time()})

    async def transition(self, session_key: str, status: str, *, sources: tuple[str, ...],
                         taken_by: str | None = None) -> HandoffRecord | None:
        """Move to `status` if the handoff is in one of `sources` (compare-and-set); None when it was not."""
        changed = await self._run(_transition_sql(sources), {"status": status, "taken_by": taken_by,
                                                             "at": time.time(), "session_key": session_key},
                                  "rowcount")
        return await self.get_handoff(session_key) if changed else None

    async def add_event(self, event: SupportEvent) -> None:
        if event.text:  # a note is a message as posted: mask it as the core masks questions
            from dataclasses import replace

            event = replace(event, text=self.redact(event.text))
        await self._run(INSERT_EVENT, _event_params(event))

    async def events(self, *, since: float | None = None, session_key: str | None = None) -> list[SupportEvent]:
        sql, params = _events_query(since, session_key)
        return [_event(row) for row in await self._run(sql, params, "all")]

    async def handoffs(self) -> list[HandoffRecord]:
        rows = await self._run(f"SELECT {_HANDOFF_COLUMNS} FROM {HANDOFFS} ORDER BY requested_at", {}, "all")
        return [_record(row) for row in rows]

    # --- retention and erasure (RETENTION_DAYS, `switchboard prune` / `forget`; core.retention) --------------------

    async def prune(self, before: float) -> int:
        """Delete support events older than `before` (epoch seconds) and handoffs closed before it (an open one is
        a person's work in progress); how many rows."""
        events = await self._run(f"DELETE FROM {EVENTS} WHERE at < :before", {"before": before}, "rowcount")
        handoffs = await self._run(f"DELETE FROM {HANDOFFS} WHERE updated_at < :before AND status NOT IN "
                                   "('requested', 'taken')", {"before": before}, "rowcount")
        return int(events or 0) + int(handoffs or 0)

    async def sessions_of(self, user: str) -> list[str]:
        """The conversations `user` appears in here: asked in, handed off, or took as staff."""
        rows = await self._run(
            f"SELECT session_key FROM {EVENTS} WHERE user_id = :user UNION SELECT session_key FROM {HANDOFFS} "
            "WHERE requested_by = :user OR taken_by = :user", {"user": user}, "all")
        return sorted({row["session_key"] if isinstance(row, dict) else row[0] for row in rows})

    async def forget(self, session_keys: tuple[str, ...]) -> int:
        """Delete every event and handoff of these conversations (GDPR erasure); how many rows."""
        removed = 0
        for key in session_keys:
            for table in (EVENTS, HANDOFFS):
                removed += int(await self._run(f"DELETE FROM {table} WHERE session_key = :key", {"key": key},
                                               "rowcount") or 0)
        return removed


class SqliteSupportStore(SqlSupportStore):
    """`data_dir/support.sqlite` over one aiosqlite connection (WAL, so the workers of a machine share it)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.where = str(self.path)
        self._conn: Any = None
        self._opening = asyncio.Lock()

    async def _connection(self) -> Any:
        async with self._opening:
            self._check_open()
            if self._conn is None:
                from core.sql import open_sqlite

                conn = await open_sqlite(self.path)
                await conn.execute("PRAGMA synchronous = NORMAL")  # WAL: no fsync per logged turn
                for statement in SCHEMA:
                    await conn.execute(statement)
                await conn.commit()
                self._conn = conn
        return self._conn

    async def setup(self) -> None:
        await self._connection()

    async def _run(self, sql: str, params: dict[str, Any], fetch: str = "none") -> Any:
        from core.sql import run_sqlite

        return await run_sqlite(await self._connection(), sql, params, fetch)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        async with self._opening:
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()


_NAMED = re.compile(r"(?<![:\w]):(\w+)")


def to_psycopg(sql: str) -> str:
    """`:name` parameters as psycopg's `%(name)s`."""
    return _NAMED.sub(r"%(\1)s", sql)


class PostgresSupportStore(SqlSupportStore):
    """The two tables in the Postgres of DATABASE_URL, over a small psycopg pool (a quiet check per thread
    message must not open a connection each time)."""

    def __init__(self, url: str) -> None:
        from core.checkpoints import check_url, redact_url

        check_url(url)
        self._url = url
        self.where = f"{HANDOFFS} and {EVENTS} in Postgres at {redact_url(url)}"
        self._pool: Any = None
        self._opening = asyncio.Lock()

    async def _get_pool(self) -> Any:
        async with self._opening:
            self._check_open()
            if self._pool is None:
                from psycopg.rows import dict_row
                from psycopg_pool import AsyncConnectionPool

                from core.checkpoints import connect, explain, migration_lock

                conn = await connect(self._url)  # one sentence with the fix when the server cannot be used
                try:
                    async with migration_lock(conn):
                        for statement in SCHEMA:
                            await conn.execute(statement)
                finally:
                    await conn.close()
                pool = AsyncConnectionPool(self._url, min_size=1, max_size=4, open=False, timeout=5.0,
                                           kwargs={"autocommit": True, "row_factory": dict_row,
                                                   "connect_timeout": 5}, name="switchboard-support")
                try:
                    await pool.open(wait=True, timeout=5.0)
                except Exception as exc:  # noqa: BLE001
                    await pool.close()
                    raise explain(exc, self._url) from None
                self._pool = pool
        return self._pool

    async def setup(self) -> None:
        await self._get_pool()

    async def _run(self, sql: str, params: dict[str, Any], fetch: str = "none") -> Any:
        pool = await self._get_pool()
        async with pool.connection() as conn:
            cursor = await conn.execute(to_psycopg(sql), params)
            if fetch == "one":
                return await cursor.fetchone()
            if fetch == "all":
                return await cursor.fetchall()
            return cursor.rowcount

    async def aclose(self) -> None:
        async with self._opening:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


def support_store(settings: Any) -> SupportStore:
    """The store the settings name: Postgres when DATABASE_URL is set, else `data_dir/support.sqlite`. Building
    one opens nothing."""
    from core.checkpoints import database_url

    from core.redaction import redactor_for

    url = database_url(settings)
    store = PostgresSupportStore(url) if url else SqliteSupportStore(Path(settings.data_dir) / SQLITE_FILE)
    store.redact = redactor_for(settings)
    return store

"""A small async SQL runner over SQLite (default) or the Postgres of DATABASE_URL, for small tables of settings.

Why its own module: the workspace settings (`core.workspaces`) and the Slack installations
(`bots.slack.installations`) each keep a few rows in the same place as the conversations, and both need the
same two backends the support store reaches (`bots.support.store`): one aiosqlite connection in WAL mode, or a
tiny psycopg pool with the tables created under the migration lock. Queries are written once with `:name`
parameters (SQLite's style) and rewritten to psycopg's `%(name)s`; blobs are `BLOB` in SQLite and `BYTEA` in
Postgres (write `{blob}` in a schema statement; it is replaced, not formatted).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

Fetch = Literal["none", "one", "all", "rowcount"]
_NAMED = re.compile(r"(?<![:\w]):(\w+)")


def to_psycopg(sql: str) -> str:
    """`:name` parameters as psycopg's `%(name)s` (a literal `%` in the statement doubled, as psycopg wants)."""
    return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%"))


WAL_ATTEMPTS = 5


async def open_sqlite(path: Path) -> Any:
    """One aiosqlite connection to `path` in WAL mode (so the workers of one machine share the file), rows as
    `aiosqlite.Row`. Two processes opening a new file at once race to switch it to WAL, and the loser gets
    "database is locked" at once (SQLite does not wait on that switch): it tries again after a moment."""
    import sqlite3

    import aiosqlite

    path.parent.mkdir(parents=True, exist_ok=True)
    conn = await aiosqlite.connect(str(path))
    conn.row_factory = aiosqlite.Row
    await conn.execute("PRAGMA busy_timeout = 5000")
    for attempt in range(WAL_ATTEMPTS):
        try:
            await conn.execute("PRAGMA journal_mode = WAL")
            return conn
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == WAL_ATTEMPTS - 1:
                await conn.close()
                raise
            await asyncio.sleep(0.05 * (attempt + 1))
    return conn


class SqlRunner:
    """Runs statements on one backend; `setup()` (or the first statement) creates the schema."""

    where = ""

    async def run(self, sql: str, params: dict[str, Any] | None = None, fetch: Fetch = "none") -> Any:
        raise NotImplementedError

    async def setup(self) -> None:
        await self.run("SELECT 1", {}, "one")

    async def aclose(self) -> None:
        raise NotImplementedError


def _one_trip(conn: Any, sql: str, params: dict[str, Any], fetch: Fetch) -> Any:
    """A statement executed, then fetched or committed, and its cursor closed: run in the connection's thread."""
    cursor = conn.execute(sql, params)
    try:
        if fetch == "one":
            return cursor.fetchone()
        if fetch == "all":
            return cursor.fetchall()
        conn.commit()
        return cursor.rowcount
    finally:
        cursor.close()


async def run_sqlite(conn: Any, sql: str, params: dict[str, Any], fetch: Fetch = "none") -> Any:
    """One statement on an aiosqlite connection, in one trip to its thread: the row(s) for "one" / "all",
    else the row count once committed.

    Why not aiosqlite's own calls: `execute`, then `fetchone` or `commit`, then the cursor's `close` are three
    trips, each a wake-up of the connection's thread and then of the event loop; a turn writes its record and
    its support events this way, so a burst of 200 questions paid for some 1,600 of them (issue 12)."""
    from core.sqlite_checkpoints import run_in_connection, sqlite3_of

    return await run_in_connection(conn, _one_trip, sqlite3_of(conn), sql, params, fetch)


class SqliteRunner(SqlRunner):
    """One aiosqlite connection to `path` (WAL, so the workers of one machine share the file)."""

    def __init__(self, path: Path, schema: Sequence[str]) -> None:
        self.path = Path(path)
        self.where = str(self.path)
        self._schema = [s.replace("{blob}", "BLOB") for s in schema]
        self._conn: Any = None
        self._opening = asyncio.Lock()

    async def _connection(self) -> Any:
        async with self._opening:
            if self._conn is None:
                conn = await open_sqlite(self.path)
                for statement in self._schema:
                    await conn.execute(statement)
                await conn.commit()
                self._conn = conn
        return self._conn

    async def run(self, sql: str, params: dict[str, Any] | None = None, fetch: Fetch = "none") -> Any:
        found = await run_sqlite(await self._connection(), sql, params or {}, fetch)
        if fetch == "one":
            return dict(found) if found is not None else None
        if fetch == "all":
            return [dict(row) for row in found]
        return found

    async def aclose(self) -> None:
        async with self._opening:
            conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()


class PostgresRunner(SqlRunner):
    """The tables in the Postgres of DATABASE_URL, over a pool of at most two connections."""

    def __init__(self, url: str, schema: Sequence[str], name: str) -> None:
        from core.checkpoints import check_url, redact_url

        check_url(url)
        self._url = url
        self._name = name
        self.where = f"Postgres at {redact_url(url)}"
        self._schema = [s.replace("{blob}", "BYTEA") for s in schema]
        self._pool: Any = None
        self._opening = asyncio.Lock()

    async def _get_pool(self) -> Any:
        async with self._opening:
            if self._pool is None:
                from psycopg.rows import dict_row
                from psycopg_pool import AsyncConnectionPool

                from core.checkpoints import connect, explain, migration_lock

                conn = await connect(self._url)  # one sentence with the fix when the server cannot be used
                try:
                    async with migration_lock(conn):
                        for statement in self._schema:
                            await conn.execute(statement)
                finally:
                    await conn.close()
                pool = AsyncConnectionPool(self._url, min_size=1, max_size=2, open=False, timeout=5.0,
                                           kwargs={"autocommit": True, "row_factory": dict_row,
                                                   "connect_timeout": 5}, name=self._name)
                try:
                    await pool.open(wait=True, timeout=5.0)
                except Exception as exc:  # noqa: BLE001
                    await pool.close()
                    raise explain(exc, self._url) from None
                self._pool = pool
        return self._pool

    async def run(self, sql: str, params: dict[str, Any] | None = None, fetch: Fetch = "none") -> Any:
        pool = await self._get_pool()
        async with pool.connection() as conn:
            cursor = await conn.execute(to_psycopg(sql), params or {})
            if fetch == "one":
                return await cursor.fetchone()
            if fetch == "all":
                return await cursor.fetchall()
            return cursor.rowcount

    async def aclose(self) -> None:
        async with self._opening:
            pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


def sql_runner(settings: Any, sqlite_file: str, schema: Sequence[str], name: str) -> SqlRunner:
    """Postgres when DATABASE_URL is set, else `data_dir/<sqlite_file>`. Building one opens nothing."""
    from core.checkpoints import database_url

    url = database_url(settings)
    if url:
        return PostgresRunner(url, schema, name)
    return SqliteRunner(Path(settings.data_dir) / sqlite_file, schema)

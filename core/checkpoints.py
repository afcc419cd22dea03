"""Where conversations are kept: LangGraph's checkpointer, chosen from settings.

- `DATABASE_URL` unset (the default): `AsyncSqliteSaver` on `data_dir/checkpoints.sqlite` (as
  `core.sqlite_checkpoints.SqliteCheckpointer`: each read or write one trip to its thread). Nothing to run; one
  process only.
- `DATABASE_URL=postgresql://…`: `AsyncPostgresSaver` (langgraph-checkpoint-postgres) over a psycopg async
  connection pool, so every replica reads and writes the same conversations. The pool's connections are opened
  as the package requires (`autocommit=True`, `prepare_threshold=0`, `row_factory=dict_row`) and checked before
  each use, so a Postgres restart costs the replies in flight at that moment, not the replica.

`setup()` (the package's idempotent migrations) runs in `open_checkpointer` at start-up and in `switchboard
migrate`, under a Postgres advisory lock so replicas starting together do not race on `CREATE TABLE`.

A Postgres that cannot be used is a `CheckpointsUnavailable`: `str()` is one sentence with the fix, `problem`
and `fix` its halves (for `switchboard doctor`), `public` the same without the server's address (for `/health`).
The URL's password never appears in any of them, nor in a log line (`redact_url`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from core.settings import Settings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5  # libpq's connect_timeout: an address that drops packets fails in 5 s, not minutes
POOL_TIMEOUT_S = 5.0  # longest wait for a pooled connection before a checkpoint read or write fails
POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 4  # AsyncPostgresSaver serialises its own calls (one lock per saver): a few connections suffice
IDLE_CHECK_AFTER_S = 2.0  # a pooled connection idle this long is tested before use (see IdleCheck)
MIGRATION_LOCK_KEY = 0x5357_4244  # pg_advisory_lock key ("SWBD") held while tables are created or migrated
MIGRATION_LOCK_TIMEOUT_S = 120.0  # longest wait for another replica's migrations to finish
SETTING = "DATABASE_URL"


class CheckpointsUnavailable(RuntimeError):
    """The Postgres of DATABASE_URL cannot be used. `str()` is one sentence with the fix."""

    def __init__(self, problem: str, fix: str, public: str) -> None:
        super().__init__(f"{problem}: {fix}")
        self.problem, self.fix, self.public = problem, fix, public


# --- the URL, without its password ---------------------------------------------------------------------------

def database_url(settings: Settings) -> str | None:
    """DATABASE_URL in clear (for connecting only: never log it), or None when unset or blank."""
    secret = settings.database_url
    raw = secret.get_secret_value().strip() if secret is not None else ""
    return raw or None


def uses_postgres(settings: Settings) -> bool:
    return database_url(settings) is not None


def _params(url: str) -> dict[str, str]:
    from psycopg.conninfo import conninfo_to_dict

    try:
        return {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
    except Exception:  # noqa: BLE001 - an unparsable URL is reported by `check_url`
        return {}


def address(url: str) -> str:
    """`host:port` of a Postgres URL (libpq's defaults when absent), for messages."""
    params = _params(url)
    host = params.get("host") or "localhost"
    return f"{host}:{params.get('port') or 5432}"


def redact_url(url: str) -> str:
    """The URL as it can be shown: `postgresql://user:****@host:port/db` (no password, no query options)."""
    params = _params(url)
    if not params:
        return "(unparsable DATABASE_URL)"
    user = params.get("user", "")
    credentials = f"{user}{':****' if params.get('password') else ''}@" if user or params.get("password") else ""
    return f"postgresql://{credentials}{address(url)}/{params.get('dbname', '')}"


def _scrub(text: str, url: str) -> str:
    """`text` with the URL's password (if any) replaced, in case a driver message ever quotes it."""
    password = _params(url).get("password")
    return text.replace(password, "****") if password else text


def check_url(url: str) -> None:
    """Raise `CheckpointsUnavailable` unless `url` looks like a Postgres URL (never quoting it)."""
    if not url.startswith(("postgresql://", "postgres://")) or not _params(url):
        raise CheckpointsUnavailable(
            f"{SETTING} is not a Postgres URL",
            "set it to postgresql://user:password@host:5432/dbname, or leave it empty to keep conversations in SQLite",
            f"{SETTING} is not a Postgres URL",
        )


def explain(exc: BaseException, url: str) -> CheckpointsUnavailable:
    """One sentence with the fix for a failure to reach or use the Postgres of `url`."""
    if isinstance(exc, CheckpointsUnavailable):
        return exc
    where = address(url)
    dbname = _params(url).get("dbname") or "(default)"
    text = _scrub(str(exc), url)
    lowered = text.lower()
    if "connection refused" in lowered:
        return CheckpointsUnavailable(f"Postgres at {where} refused the connection ({SETTING})",
                                      "start it or fix the URL", f"Postgres ({SETTING}) refused the connection: "
                                      "start it or fix the URL")
    if "resolve host" in lowered or "could not translate host name" in lowered:
        return CheckpointsUnavailable(f"The Postgres host in {SETTING} ({where}) cannot be resolved",
                                      "fix the host name in the URL",
                                      f"The Postgres host in {SETTING} cannot be resolved: fix the URL")
    if "timeout" in lowered or "timed out" in lowered or "couldn't get a connection" in lowered:
        return CheckpointsUnavailable(f"Postgres at {where} did not answer in time ({SETTING})",
                                      "check that it is running and reachable from here, or fix the URL",
                                      f"Postgres ({SETTING}) did not answer in time: check that it is running")
    if "password authentication failed" in lowered or "no password supplied" in lowered or (
            "role" in lowered and "does not exist" in lowered):
        return CheckpointsUnavailable(f"Postgres at {where} rejected the user or password in {SETTING}",
                                      "fix the credentials in the URL",
                                      f"Postgres ({SETTING}) rejected the credentials: fix the URL")
    if "database" in lowered and "does not exist" in lowered:
        return CheckpointsUnavailable(f"Postgres at {where} has no database {dbname!r} ({SETTING})",
                                      f"create it (`createdb {dbname}`) or fix the database name in the URL",
                                      f"The database of {SETTING} does not exist: create it or fix the URL")
    first_line = (text.strip().splitlines() or [""])[0][:160]
    return CheckpointsUnavailable(
        f"Postgres at {where} cannot be used ({SETTING}; {type(exc).__name__}: {first_line})",
        "check the server and the URL, then `switchboard migrate`",
        f"Postgres ({SETTING}) cannot be used ({type(exc).__name__}): check the server and the URL")


# --- Postgres -------------------------------------------------------------------------------------------------

def _connection_kwargs() -> dict[str, Any]:
    """What AsyncPostgresSaver requires of its connections (see its `from_conn_string`)."""
    from psycopg.rows import dict_row

    return {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row,
            "connect_timeout": CONNECT_TIMEOUT_S}


async def connect(url: str) -> Any:
    """One psycopg async connection as the savers need it; a failure is `CheckpointsUnavailable`."""
    import psycopg

    check_url(url)
    try:
        return await psycopg.AsyncConnection.connect(url, **_connection_kwargs())
    except (psycopg.Error, OSError) as exc:
        raise explain(exc, url) from None


@asynccontextmanager
async def migration_lock(conn: Any) -> AsyncIterator[None]:
    """Hold the database-wide advisory lock that serialises table creation across replicas.

    Taken by polling `pg_try_advisory_lock`, never by waiting in `pg_advisory_lock`: a session blocked in that
    call is an open transaction, and the lock holder's `CREATE INDEX CONCURRENTLY` (in the checkpointer's
    migrations) waits for every open transaction to end, which would deadlock the two."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MIGRATION_LOCK_TIMEOUT_S
    while True:
        row = await (await conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (MIGRATION_LOCK_KEY,))).fetchone()
        if (row["ok"] if isinstance(row, dict) else row[0]):
            break
        if loop.time() > deadline:
            raise TimeoutError(f"another process held the migration lock for over {MIGRATION_LOCK_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.05)
    try:
        yield
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))


@functools.cache
def _saver_class() -> type:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    class PostgresCheckpointer(AsyncPostgresSaver):
        """`AsyncPostgresSaver` whose connection failures (server gone, pool timeout) are
        `CheckpointsUnavailable` sentences rather than driver exceptions; query results are untouched."""

        url: str = ""

        @asynccontextmanager
        async def _cursor(self, *, pipeline: bool = False) -> AsyncIterator[Any]:
            import psycopg
            from psycopg_pool import PoolTimeout

            try:
                async with super()._cursor(pipeline=pipeline) as cur:
                    yield cur
            except PoolTimeout as exc:
                raise await _diagnose(self.url, exc) from None
            except psycopg.OperationalError as exc:
                sqlstate = getattr(exc, "sqlstate", None) or ""
                if sqlstate and not sqlstate.startswith("57"):  # the server answered with an error: say which
                    raise explain(exc, self.url) from None
                # the connection was lost, or the server is shutting down: why (refused…)?
                raise await _diagnose(self.url, exc) from None

    return PostgresCheckpointer


async def _diagnose(url: str, exc: BaseException) -> CheckpointsUnavailable:
    """Why the pool has no connection to give, or lost the one it gave: one direct attempt says (refused, unknown
    host…); when that attempt succeeds, the original failure is explained instead."""
    try:
        conn = await connect(url)
    except CheckpointsUnavailable as reason:
        return reason
    await conn.close()
    return explain(exc, url)


class IdleCheck:
    """The pool's `check`: a connection idle for `after_s` or more is tested (one empty query) before it is
    handed out, so one left broken by a Postgres restart is replaced instead of failing the next reply; one used
    within the last `after_s` is handed out as is (the test costs about 0.2 ms, and a turn takes 8 connections)."""

    def __init__(self, after_s: float = IDLE_CHECK_AFTER_S) -> None:
        import weakref

        self.after_s = after_s
        self._last: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    async def __call__(self, conn: Any) -> None:
        from psycopg_pool import AsyncConnectionPool

        now = asyncio.get_running_loop().time()
        last, self._last[conn] = self._last.get(conn), now
        if last is None or now - last >= self.after_s:
            await AsyncConnectionPool.check_connection(conn)


async def _open_postgres(url: str, *, setup: bool) -> tuple[Any, Callable[[], Awaitable[None]]]:
    from psycopg_pool import AsyncConnectionPool

    first = await connect(url)  # fails fast with the precise reason (the pool would only time out)
    try:
        if setup:
            async with migration_lock(first):
                saver = _saver_class()(first)
                await saver.setup()
    finally:
        await first.close()
    pool = AsyncConnectionPool(url, kwargs=_connection_kwargs(), min_size=POOL_MIN_SIZE, max_size=POOL_MAX_SIZE,
                               timeout=POOL_TIMEOUT_S, check=IdleCheck(),
                               name="switchboard-checkpoints", open=False)
    try:
        await pool.open(wait=True, timeout=POOL_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001
        await pool.close()
        raise await _diagnose(url, exc) from None
    saver = _saver_class()(pool)
    saver.url = url
    log.info("checkpoints in Postgres at %s", redact_url(url))
    return saver, pool.close


async def migrate_postgres(url: str) -> int:
    """Run the checkpointer's migrations (idempotent); returns how many are applied now."""
    conn = await connect(url)
    try:
        async with migration_lock(conn):
            saver = _saver_class()(conn)
            await saver.setup()
        row = await (await conn.execute("SELECT max(v) AS v FROM checkpoint_migrations")).fetchone()
        return int(row["v"]) + 1
    finally:
        await conn.close()


async def postgres_status(url: str) -> str:
    """What `switchboard doctor` says about a reachable Postgres (read-only: it migrates nothing)."""
    from langgraph.checkpoint.postgres.base import BasePostgresSaver

    conn = await connect(url)
    try:
        found = await (await conn.execute("SELECT to_regclass('checkpoint_migrations') IS NOT NULL AS ok")).fetchone()
        applied = 0
        if found["ok"]:
            row = await (await conn.execute("SELECT max(v) AS v FROM checkpoint_migrations")).fetchone()
            applied = 0 if row["v"] is None else int(row["v"]) + 1
        version = (await (await conn.execute("SHOW server_version")).fetchone())["server_version"]
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, url) from None
    finally:
        await conn.close()
    total = len(BasePostgresSaver.MIGRATIONS)
    state = ("tables ready" if applied >= total else
             f"{applied} of {total} migrations applied; `switchboard migrate` (or the next start) applies the rest")
    return f"Postgres {version.split()[0]} at {redact_url(url)} ({state})"


# --- the one entry point --------------------------------------------------------------------------------------

async def open_checkpointer(settings: Settings, *, setup: bool = True) -> tuple[Any, Callable[[], Awaitable[None]]]:
    """The configured checkpointer and the coroutine that closes it: Postgres when DATABASE_URL is set (tables
    created or migrated first unless `setup=False`), else SQLite in the data directory."""
    url = database_url(settings)
    if url is not None:
        return await _open_postgres(url, setup=setup)
    import aiosqlite

    from core.sqlite_checkpoints import SqliteCheckpointer

    path = Path(settings.checkpoint_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = await aiosqlite.connect(str(path))
    saver = SqliteCheckpointer(conn)  # AsyncSqliteSaver, one trip to its thread per read or write
    await saver.setup()  # WAL mode
    # In WAL mode, NORMAL syncs the log at checkpoints, not at every commit: a commit survives the process being
    # killed (it is in the log), only an OS crash or power cut can take back the last ones. An fsync per commit
    # was 1 ms of each turn's three commits, one after another on the connection's thread in a burst.
    await conn.execute("PRAGMA synchronous = NORMAL")
    return saver, conn.close


# Only a conversation's latest checkpoint is needed (each holds the whole conversation), so the older ones are
# deleted as turns are written: without this a thread of n turns stores n copies of its history, quadratic in n.
_SQLITE_KEEP_LATEST = (
    "DELETE FROM writes WHERE thread_id = ? AND checkpoint_ns = '' AND checkpoint_id < "
    "(SELECT MAX(checkpoint_id) FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = '')",
    "DELETE FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = '' AND checkpoint_id < "
    "(SELECT MAX(checkpoint_id) FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = '')",
)


async def keep_latest(checkpointer: Any, thread_id: str) -> None:
    """Delete every checkpoint of a conversation but its latest (ids are time-ordered UUIDs), and their pending
    writes. Postgres: LangGraph's own `aprune(strategy="keep_latest")`; SQLite (whose saver has no prune): the
    same two statements, in one trip to the connection's thread. The conversation reads back the same; only
    history is lost."""
    conn = getattr(checkpointer, "conn", None)
    if conn is not None and hasattr(conn, "execute") and hasattr(checkpointer, "lock"):
        from core.sqlite_checkpoints import run_in_connection, sqlite3_of

        def prune() -> None:  # both statements and the commit in one trip to the connection's thread
            db = sqlite3_of(conn)
            for statement in _SQLITE_KEEP_LATEST:
                db.execute(statement, (thread_id, thread_id))
            db.commit()

        await run_in_connection(conn, prune)  # one trip: atomic without the saver's lock
        return
    await checkpointer.aprune([thread_id], strategy="keep_latest")


async def migrate(settings: Settings) -> str:
    """`switchboard migrate`, the checkpoints' part: one line saying what was done."""
    url = database_url(settings)
    if url is None:
        saver, close = await open_checkpointer(settings)
        await close()
        return f"checkpoints: SQLite at {settings.checkpoint_path} (DATABASE_URL is not set), ready"
    applied = await migrate_postgres(url)
    return f"checkpoints: Postgres at {redact_url(url)}, {applied} migrations applied"


def describe(settings: Settings) -> str:
    url = database_url(settings)
    return f"Postgres at {redact_url(url)}" if url else f"SQLite at {settings.checkpoint_path}"


__all__ = ["CheckpointsUnavailable", "address", "check_url", "connect", "database_url", "describe", "explain",
           "keep_latest", "migrate", "migration_lock", "open_checkpointer", "postgres_status", "redact_url", "uses_postgres"]

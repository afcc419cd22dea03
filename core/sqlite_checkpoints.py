"""The SQLite checkpointer, each read or write one trip to its connection's thread.

Why: `AsyncSqliteSaver` awaits every step of a query on its aiosqlite connection (open a cursor, execute, fetch,
execute again, fetch, close), and each await is a trip to the connection's thread and back through the event
loop. One connection serves every conversation under one lock, so with 200 questions arriving at once the
trips of all of them queue behind each other, and each costs a turn of a busy event loop: reading a new
conversation's (absent) checkpoint took 1.4 s at the median of such a burst (issue 12), longer than routing.

`SqliteCheckpointer` keeps `AsyncSqliteSaver` (its tables, its `setup()` migrations, its `conn` and `lock`, which
`core.interrupted`, `core.retention` and `keep_latest` share) and runs each of the hot operations, `aget_tuple`,
`aput`, `aput_writes` and `adelete_thread`, as the synchronous `SqliteSaver`'s code in the connection's own
thread, in one trip: the same SQL, the same serializer, the same rows. `run_in_connection` is that trip for the
other users of the connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

T = TypeVar("T")


def sqlite3_of(conn: Any) -> sqlite3.Connection:
    """The `sqlite3.Connection` an aiosqlite connection's thread owns: only code run by `run_in_connection`
    may use it."""
    return conn._conn


async def run_in_connection(conn: Any, fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(*args)` in the thread of the aiosqlite connection `conn`, in order with its other operations: one
    trip, however many statements `fn` runs on `sqlite3_of(conn)`.

    aiosqlite has no public call for this; `_execute` is what each of its own methods is made of (aiosqlite
    0.17 to 0.22).

    A trip needs no lock: the thread runs trips one after another, so one that begins and commits its own
    transaction is atomic with respect to every other. (`AsyncSqliteSaver`'s lock orders its remaining
    multi-step methods, `alist` and `setup`, among themselves; a trip between two of their reads is harmless.)
    Not taking it is what lets a burst's trips queue in the thread back to back, instead of one per turn of the
    event loop while each waiter is woken in turn."""
    return await conn._execute(fn, *args)


class SqliteCheckpointer(AsyncSqliteSaver):
    """`AsyncSqliteSaver` whose reads and writes are one trip each to the connection's thread (module docstring)."""

    def __init__(self, conn: Any, **kwargs: Any) -> None:
        super().__init__(conn, **kwargs)
        self._sync: SqliteSaver | None = None

    async def setup(self) -> None:
        await super().setup()
        if self._sync is None:
            sync = SqliteSaver(sqlite3_of(self.conn), serde=self.serde)
            sync.is_setup = True  # the tables are the ones just set up (the same connection)
            sync._has_task_path = self._has_task_path
            self._sync = sync

    async def _in_thread(self, method: str, *args: Any) -> Any:
        """The synchronous saver's `method(*args)`, in one trip to the connection's thread."""
        await self.setup()
        return await run_in_connection(self.conn, getattr(self._sync, method), *args)

    async def aget_tuple(self, config: Any) -> Any:
        return await self._in_thread("get_tuple", config)

    async def aput(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        return await self._in_thread("put", config, checkpoint, metadata, new_versions)

    async def aput_writes(self, config: Any, writes: Sequence[tuple[str, Any]], task_id: str,
                          task_path: str = "") -> None:
        await self._in_thread("put_writes", config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await self._in_thread("delete_thread", thread_id)


__all__ = ["SqliteCheckpointer", "run_in_connection", "sqlite3_of"]

"""`core.sql`: a statement on SQLite is one trip to the connection's thread (execute, fetch or commit, close), and
reads, writes and failures behave as aiosqlite's own calls did."""

from __future__ import annotations

import sqlite3

import pytest

from core.sql import SqliteRunner

SCHEMA = ["CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL, data {blob})"]


async def test_each_statement_is_one_trip_and_reads_what_was_written(tmp_path) -> None:
    runner = SqliteRunner(tmp_path / "notes.sqlite", SCHEMA)
    conn = await runner._connection()
    trips = 0
    original = conn._execute

    async def counted(fn, *args, **kwargs):
        nonlocal trips
        trips += 1
        return await original(fn, *args, **kwargs)

    conn._execute = counted
    try:
        assert await runner.run("INSERT INTO notes (body, data) VALUES (:body, :data)",
                                {"body": "first", "data": b"\x00\x01"}) == 1
        assert trips == 1  # aiosqlite's execute, commit and cursor close were three
        assert await runner.run("SELECT body, data FROM notes WHERE body = :body", {"body": "first"}, "one") == \
            {"body": "first", "data": b"\x00\x01"}
        assert await runner.run("SELECT body FROM notes WHERE body = :body", {"body": "none"}, "one") is None
        await runner.run("INSERT INTO notes (body) VALUES (:body)", {"body": "second"})
        assert await runner.run("SELECT body FROM notes ORDER BY id", {}, "all") == [{"body": "first"},
                                                                                  {"body": "second"}]
        assert trips == 5
    finally:
        conn._execute = original
        await runner.aclose()
    # Committed: another connection sees both rows.
    with sqlite3.connect(tmp_path / "notes.sqlite") as other:
        assert other.execute("SELECT count(*) FROM notes").fetchone()[0] == 2


async def test_a_failing_statement_raises_and_the_connection_goes_on(tmp_path) -> None:
    runner = SqliteRunner(tmp_path / "notes.sqlite", SCHEMA)
    try:
        with pytest.raises(sqlite3.IntegrityError):
            await runner.run("INSERT INTO notes (body) VALUES (NULL)", {})
        assert await runner.run("INSERT INTO notes (body) VALUES (:body)", {"body": "after"}) == 1
        assert await runner.run("SELECT count(*) AS n FROM notes", {}, "one") == {"n": 1}
    finally:
        await runner.aclose()

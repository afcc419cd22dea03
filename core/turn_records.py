"""One row per answered turn: what the operator's dashboard (`bots/web/admin.py`) draws and searches.

A turn record is the outcome of one question on any platform: when, where (platform, session key), which agent,
how confident, how fast (first token as the user saw it, total), tokens where known, whether the bot declined or
handed off, and the question and answer text (masked by `REDACT` first, like everything stored). Conversation
state stays in the checkpointer; this is the flat, queryable log beside it, so the dashboard never replays
checkpoints to draw a chart.

Kept where the rest is (as `bots.support.store` keeps handoffs): `turns.sqlite` in the data directory by default,
the table `switchboard_turns` in the Postgres of `DATABASE_URL` when it is set. Rows older than `RETENTION_DAYS`
are deleted when the store opens and then at most once an hour on writes. Writes are fire-and-forget
(`record_soon`) so a slow disk never delays a reply; `aclose` waits for the ones still running.

`TurnFacts.watch` reads the core's event stream as it passes (agent, confidence, declined, handoff, error) so a
front-end collects a record without changing how it renders.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

from core.events import Agent, Complete, Error, Event, Handoff, Sources
from core.sql import Fetch, SqlRunner, sql_runner

log = logging.getLogger(__name__)

SQLITE_FILE = "turns.sqlite"
TABLE = "switchboard_turns"
PRUNE_EVERY_S = 3600.0
TEXT_LIMIT = 4000  # characters of question/answer kept: enough to read a turn, bounded per row

SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        turn_id TEXT PRIMARY KEY,
        at DOUBLE PRECISION NOT NULL,
        platform TEXT NOT NULL,
        session_key TEXT NOT NULL,
        agent TEXT,
        status TEXT NOT NULL DEFAULT 'done',
        error_code TEXT,
        confidence DOUBLE PRECISION,
        first_token_ms DOUBLE PRECISION,
        total_ms DOUBLE PRECISION,
        tokens_in INTEGER,
        tokens_out INTEGER,
        declined INTEGER NOT NULL DEFAULT 0,
        handed_off INTEGER NOT NULL DEFAULT 0,
        question TEXT NOT NULL DEFAULT '',
        answer TEXT NOT NULL DEFAULT '',
        sources TEXT NOT NULL DEFAULT ''
    )""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_at_idx ON {TABLE} (at)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_session_idx ON {TABLE} (session_key)",
)
COLUMNS = ("turn_id", "at", "platform", "session_key", "agent", "status", "error_code", "confidence",
           "first_token_ms", "total_ms", "tokens_in", "tokens_out", "declined", "handed_off", "question", "answer",
           "sources")
INSERT = (f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({', '.join(':' + c for c in COLUMNS)}) "
          "ON CONFLICT (turn_id) DO NOTHING")
PRUNE = f"DELETE FROM {TABLE} WHERE at < :before"


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """One answered question. Times in ms; `at` in epoch seconds; `vote` is filled in by readers from the votes
    store (a vote arrives later, on another request, keyed by session)."""

    platform: str
    session_key: str
    agent: str | None = None
    status: str = "done"  # done | error | interrupted
    error_code: str | None = None
    confidence: float | None = None
    first_token_ms: float | None = None
    total_ms: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    declined: bool = False
    handed_off: bool = False
    question: str = ""
    answer: str = ""
    sources: str = ""  # the cited sources, newline-separated
    at: float = field(default_factory=time.time)
    turn_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    vote: str | None = None

    def params(self) -> dict[str, Any]:
        row = asdict(self)
        row.pop("vote")
        row["declined"], row["handed_off"] = int(self.declined), int(self.handed_off)
        row["question"], row["answer"] = self.question[:TEXT_LIMIT], self.answer[:TEXT_LIMIT]
        return row


def _record(row: Any) -> TurnRecord:
    r = dict(row)
    return TurnRecord(
        platform=r["platform"], session_key=r["session_key"], agent=r["agent"], status=r["status"],
        error_code=r["error_code"], confidence=r["confidence"], first_token_ms=r["first_token_ms"],
        total_ms=r["total_ms"], tokens_in=r["tokens_in"], tokens_out=r["tokens_out"], declined=bool(r["declined"]),
        handed_off=bool(r["handed_off"]), question=r["question"] or "", answer=r["answer"] or "",
        sources=r["sources"] or "", at=float(r["at"]), turn_id=r["turn_id"])


class TurnFacts:
    """What one turn's events said, collected while they pass through to the renderer unchanged."""

    def __init__(self) -> None:
        self.agent: str | None = None
        self.complete: Complete | None = None
        self.error: Error | None = None
        self.handed_off = False
        self.sources: list[str] = []

    async def watch(self, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        try:
            async for event in events:
                if isinstance(event, Agent):
                    self.agent = event.name
                elif isinstance(event, Complete):
                    self.complete = event
                    self.agent = event.agent or self.agent
                elif isinstance(event, Error):
                    self.error = event
                elif isinstance(event, Handoff):
                    self.handed_off = True
                elif isinstance(event, Sources):
                    self.sources = [f"{item.title} ({item.source})" for item in event.items]
                yield event
        finally:
            closer = getattr(events, "aclose", None)
            if closer is not None:
                await closer()

    def record(self, platform: str, session_key: str, question: str, *, first_token_ms: float | None,
               total_ms: float | None, status: str | None = None, error_code: str | None = None) -> TurnRecord:
        done = self.complete
        code = error_code or (self.error.code if self.error is not None else None)
        return TurnRecord(
            platform=platform, session_key=session_key, agent=self.agent or None,
            status=status or ("done" if done is not None else "error"), error_code=None if done else code,
            confidence=done.confidence if done is not None else None, first_token_ms=first_token_ms,
            total_ms=total_ms if total_ms is not None else (done.duration_ms if done is not None else None),
            tokens_out=done.tokens if done is not None and done.tokens else None,
            declined=bool(done.declined) if done is not None else False, handed_off=self.handed_off,
            question=question, answer=done.text if done is not None else "", sources="\n".join(self.sources))


@dataclass(frozen=True, slots=True)
class Query:
    """A dashboard search: since (epoch s), words in the question or answer, platform, agent."""

    since: float | None = None
    text: str = ""
    platform: str | None = None
    agent: str | None = None
    session_key: str | None = None
    limit: int = 5000


class SqlTurnStore:
    """The turn records over one `core.sql` runner (SQLite, or the Postgres of DATABASE_URL): writes in the
    background, queries for the dashboard, pruning and erasure."""

    def __init__(self, runner: SqlRunner, retention_days: float = 90, redact: Any = None) -> None:
        self.runner = runner
        self.where = f"{TABLE} in {runner.where}"
        self.retention_s = retention_days * 86400
        self._redact = redact
        self._pending: set[asyncio.Task[None]] = set()
        self._pruned_at = 0.0
        self._closed = False

    async def _run(self, sql: str, params: dict[str, Any], fetch: Fetch = "none") -> Any:
        if self._closed:
            raise RuntimeError(f"the turn store ({self.where}) is closed")
        return await self.runner.run(sql, params, fetch)

    async def setup(self) -> None:
        await self.runner.setup()

    async def aclose(self) -> None:
        await self.drain()
        self._closed = True
        await self.runner.aclose()

    async def add(self, record: TurnRecord) -> None:
        params = record.params()
        if self._redact is not None:
            params["question"], params["answer"] = self._redact(params["question"]), self._redact(params["answer"])
        await self._run(INSERT, params)
        if time.time() - self._pruned_at > PRUNE_EVERY_S:
            await self.prune()

    def record_soon(self, record: TurnRecord) -> None:
        """Write in the background: a reply never waits for the dashboard's bookkeeping. Failures are logged."""
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._add_logged(record))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _add_logged(self, record: TurnRecord) -> None:
        try:
            await self.add(record)
        except Exception:  # noqa: BLE001 - bookkeeping: the reply was delivered, the row is lost
            log.warning("[%s] the turn record could not be written (%s)", record.session_key, self.where,
                        exc_info=True)

    async def prune(self, now: float | None = None) -> int:
        """Delete rows older than the retention period; returns how many."""
        now = time.time() if now is None else now
        self._pruned_at = now
        return int(await self._run(PRUNE, {"before": now - self.retention_s}, "rowcount") or 0)

    async def forget(self, session_keys: list[str]) -> int:
        """Delete the records of these conversations (erasure: `switchboard forget`); returns how many."""
        deleted = 0
        for key in session_keys:
            deleted += int(await self._run(f"DELETE FROM {TABLE} WHERE session_key = :key", {"key": key},
                                           "rowcount") or 0)
        return deleted

    async def turns(self, query: Query = Query()) -> list[TurnRecord]:
        """Matching turns, newest first."""
        where, params = [], {"limit": query.limit}
        if query.since is not None:
            where.append("at >= :since")
            params["since"] = query.since
        if query.platform:
            where.append("platform = :platform")
            params["platform"] = query.platform
        if query.agent:
            where.append("agent = :agent")
            params["agent"] = query.agent
        if query.session_key:
            where.append("session_key = :session_key")
            params["session_key"] = query.session_key
        for i, word in enumerate(query.text.split()[:8]):
            like = "%" + word.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append(f"(LOWER(question) LIKE :w{i} ESCAPE '\\' OR LOWER(answer) LIKE :w{i} ESCAPE '\\')")
            params[f"w{i}"] = like
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT {', '.join(COLUMNS)} FROM {TABLE}{clause} ORDER BY at DESC LIMIT :limit"
        return [_record(row) for row in await self._run(sql, params, "all")]

    async def drain(self) -> None:
        """Wait for the background writes started so far."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=10)


def turn_store(settings: Any) -> SqlTurnStore:
    """The store the settings name (Postgres with DATABASE_URL, else `data_dir/turns.sqlite`); opens nothing."""
    try:
        from core.redaction import redactor_for

        redact: Any = redactor_for(settings)
    except (ImportError, ValueError):  # noqa: PERF203 - an older checkout, or a REDACT already refused at start
        redact = None
    days = getattr(settings, "retention_days", 90)
    return SqlTurnStore(sql_runner(settings, SQLITE_FILE, SCHEMA, "switchboard-turns"), days, redact)


def turn_store_of(orchestrator: Any) -> SqlTurnStore | None:
    """The orchestrator's one turn store (closed with it), or None for a stand-in orchestrator without settings."""
    settings = getattr(orchestrator, "settings", None)
    shared = getattr(orchestrator, "shared", None)
    if settings is None or shared is None or not hasattr(settings, "data_dir"):
        return None
    return shared("turn_records", lambda: turn_store(settings))  # type: ignore[no-any-return]

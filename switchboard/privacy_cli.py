"""Retention and erasure across every store: `switchboard prune`, `switchboard forget --user ID`, and the daily
prune of `switchboard run`.

The composition root is the one place that knows all the stores a conversation leaves rows in: the checkpoints
and the turn ledger (`core.retention`), the support log and handoffs (`bots.support.store`), the votes
(`bots.feedback`) and the dashboard's per-turn records (`core.turn_records`). Each store deletes its own rows;
this module runs them together, with one cut-off (`RETENTION_DAYS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import typer
from rich.console import Console

from core.settings import Settings

log = logging.getLogger(__name__)
console = Console()
PRUNE_EVERY_S = 86_400.0  # the daily job
FIRST_PRUNE_AFTER_S = 60.0  # not in the way of start-up
LEASE = "retention-prune"  # one replica prunes per day


@dataclass(frozen=True, slots=True)
class Removed:
    """What a prune or an erasure deleted, per store."""

    conversations: int
    support_rows: int
    votes: int
    turn_records: int = 0  # the admin dashboard's rows (they hold the question and answer text too)

    def sentence(self) -> str:
        return (f"{self.conversations} conversation(s), {self.support_rows} support-log row(s), "
                f"{self.turn_records} dashboard turn record(s) and {self.votes} vote(s)")


async def prune_everything(settings: Settings, checkpointer: Any, *, now: float | None = None) -> Removed:
    """Delete whatever is older than RETENTION_DAYS, in every store."""
    from bots.feedback import feedback_store
    from bots.support.store import support_store
    from core.retention import cutoff, prune_conversations

    before = cutoff(settings.retention_days, now)
    conversations = await prune_conversations(checkpointer, before)
    support = support_store(settings)
    try:
        support_rows = await support.prune(before)
    finally:
        await support.aclose()
    votes = await feedback_store(settings).prune(before)
    turns = await _in_turn_store(settings, lambda store: store.prune(now))
    return Removed(len(conversations), support_rows, votes, turns)


async def forget_everything(settings: Settings, checkpointer: Any, user: str) -> Removed:
    """Erase a person: every conversation they asked in (on any platform), its support log and handoffs, their
    votes and every vote on those conversations."""
    from bots.feedback import feedback_store
    from bots.support.store import support_store
    from core.retention import forget_user

    support = support_store(settings)
    try:
        also = tuple(await support.sessions_of(user))
        keys = await forget_user(checkpointer, user, also=also)
        support_rows = await support.forget(tuple(keys))
    finally:
        await support.aclose()
    votes = await feedback_store(settings).forget(user, tuple(keys))
    turns = await _in_turn_store(settings, lambda store: store.forget(list(keys)))
    return Removed(len(keys), support_rows, votes, turns)


async def _in_turn_store(settings: Settings, work: Any) -> int:
    """Run `work` on a connection of its own to the dashboard's turn records (the store prunes by its own
    `RETENTION_DAYS` cut-off, the same one as the others)."""
    from core.turn_records import turn_store

    store = turn_store(settings)
    try:
        return int(await work(store))
    finally:
        await store.aclose()


async def _with_checkpointer(settings: Settings, work: Any) -> Removed:
    from core.checkpoints import open_checkpointer

    checkpointer, close = await open_checkpointer(settings)
    try:
        return await work(checkpointer)
    finally:
        await close()


class RetentionJob:
    """The daily prune of `switchboard run`: the first a minute after start-up, then every day; with replicas, the
    first to claim the day's lease prunes for all."""

    def __init__(self, settings: Settings, checkpointer: Any, leases: Any | None = None, *,
                 every_s: float = PRUNE_EVERY_S, first_after_s: float = FIRST_PRUNE_AFTER_S) -> None:
        self.settings = settings
        self.checkpointer = checkpointer
        self.leases = leases
        self.every_s = every_s
        self.first_after_s = first_after_s
        self.runs = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="retention-prune")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def run_once(self) -> Removed | None:
        """Prune now unless another replica did within the period; None when skipped."""
        if self.leases is not None and not await self.leases.claim(LEASE, self.every_s * 0.95):
            return None
        removed = await prune_everything(self.settings, self.checkpointer)
        self.runs += 1
        log.info("retention (%d days): deleted %s", self.settings.retention_days, removed.sentence())
        return removed

    async def _loop(self) -> None:
        await asyncio.sleep(self.first_after_s)
        while True:
            try:
                await self.run_once()
            except Exception:  # noqa: BLE001 - a store away for a while: the next day tries again
                log.warning("the retention prune failed; retrying in %.0f s", self.every_s, exc_info=True)
            await asyncio.sleep(self.every_s)


def start_retention(settings: Settings, orchestrator: Any, coordination: Any | None = None) -> RetentionJob:
    """The daily prune for `switchboard run`, started."""
    job = RetentionJob(settings, orchestrator.checkpointer,
                       getattr(coordination, "leases", None) if getattr(coordination, "shared", False) else None)
    job.start()
    return job


def prune_command() -> None:
    """Delete conversations, support-log rows, dashboard turn records and votes older than RETENTION_DAYS (the
    daily job of `run`)."""
    from core.checkpoints import CheckpointsUnavailable
    from core.settings import load_settings

    settings = load_settings()
    started = time.perf_counter()
    try:
        removed = asyncio.run(_with_checkpointer(settings, lambda cp: prune_everything(settings, cp)))
    except CheckpointsUnavailable as exc:
        console.print(f"[red]Cannot prune:[/] {exc}")
        raise typer.Exit(2) from None
    console.print(f"Deleted {removed.sentence()} older than {settings.retention_days} days "
                  f"({time.perf_counter() - started:.1f} s).")


def forget_command(
    user: str = typer.Option(..., "--user", help="The person's id as the platform gives it (Slack U…, Discord "
                                                 "user id, the web client's id)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Erase a person (GDPR): their conversations on every platform, those conversations' support log,
    handoffs and dashboard turn records, and their votes."""
    from core.checkpoints import CheckpointsUnavailable
    from core.settings import load_settings

    if not yes and not typer.confirm(f"Delete every conversation and vote of {user}? This cannot be undone."):
        raise typer.Exit(1)
    settings = load_settings()
    try:
        removed = asyncio.run(_with_checkpointer(settings, lambda cp: forget_everything(settings, cp, user)))
    except CheckpointsUnavailable as exc:
        console.print(f"[red]Cannot forget:[/] {exc}")
        raise typer.Exit(2) from None
    console.print(f"Deleted {removed.sentence()} of {user}.")


__all__ = ["RetentionJob", "Removed", "forget_command", "forget_everything", "prune_command", "prune_everything",
           "start_retention"]

"""Knowledge sources in the running service: each source synced on its interval in the background of `switchboard
run`, one replica at a time, plus what `switchboard sync`, `switchboard sources` and `doctor` share.

The sync itself is `knowledge.sources.sync.sync_source` (blocking: HTTP and embedding), run in a worker thread,
one source at a time so answering keeps the other core. Across replicas two leases from `coordination` decide who
syncs (named after the source): `source-sync:<name>` is held, and renewed, while a replica syncs it, so no two
sync one source at once; `source-synced:<name>` is taken after a sync for as long as the source is not due
(its interval, or the backoff after a failure), so a replica whose own state is older does not sync it again.
Without Redis both are in-process and the per-source state under the data directory decides alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from core.doctor import CheckResult
from core.settings import Settings
from knowledge.sources.config import SourcesFileError, SourceSpec, load_sources
from knowledge.sources.http import HttpPolicy
from knowledge.sources.state import StateStore
from knowledge.sources.sync import SyncReport, is_due, sync_source

log = logging.getLogger(__name__)
LEASE_S = 120.0  # a replica that dies mid-sync frees the source within this long


def secrets_env(settings: Settings) -> dict[str, str]:
    """Where `token_env:` names are looked up: the process environment over the `.env` file (as settings are)."""
    from dotenv import dotenv_values

    env_file = settings.model_config.get("env_file")
    values: dict[str, str] = {}
    if isinstance(env_file, str) and os.path.exists(env_file):
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ)
    return values


def http_policy(settings: Settings) -> HttpPolicy:
    return HttpPolicy(timeout_s=settings.sources_timeout_s, max_retry_after_s=settings.sources_max_retry_after_s)


def load_specs(settings: Settings, agents: tuple[str, ...] | list[str]) -> list[SourceSpec]:
    """The sources file's entries (none when SOURCES_FILE is unset); raises `SourcesFileError`."""
    if settings.sources_file is None:
        return []
    return load_sources(settings.sources_file, agents)


class SourceSyncJobs:
    """The background loop of `switchboard run`: every `check_s`, sync the sources that are due."""

    def __init__(self, settings: Settings, specs: list[SourceSpec], store: Any, leases: Any, *,
                 env: Mapping[str, str] | None = None, clock: Callable[[], float] = time.time,
                 sync: Callable[..., SyncReport] = sync_source) -> None:
        self.specs = specs
        self.store = store
        self.leases = leases
        self.states = StateStore(settings.sources_state_dir)
        self.policy = http_policy(settings)
        self.check_s = settings.sources_check_s
        self.env = dict(env) if env is not None else secrets_env(settings)
        self.clock = clock
        self._sync = sync
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="source-sync")

    async def stop(self) -> None:
        """Stop looking for due sources. A sync running in its thread finishes on its own (its lease expires
        if the process exits first); what it wrote is consistent either way."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_due()
            except Exception:  # noqa: BLE001 - Redis away, a bug in one round: try again next round
                log.warning("the source sync round failed; retrying in %.0fs", self.check_s, exc_info=True)
            await asyncio.sleep(self.check_s)

    async def run_due(self) -> list[SyncReport]:
        """One round: sync every source that is due here and that no replica is syncing or has just synced."""
        reports = []
        for spec in self.specs:
            if not is_due(self.states.load(spec.name), self.clock()):
                continue
            if await self.leases.holder(f"source-synced:{spec.name}") is not None:
                continue  # another replica synced it within its interval
            report = await self.sync_one(spec)
            if report is not None:
                reports.append(report)
        return reports

    async def sync_one(self, spec: SourceSpec, *, full: bool = False,
                       progress: Callable[..., None] | None = None) -> SyncReport | None:
        """Sync one source under its lease; None when another replica holds it."""
        name = f"source-sync:{spec.name}"
        if not await self.leases.claim(name, LEASE_S):
            return None
        renewer = asyncio.create_task(self._renew(name))
        try:
            report = await asyncio.to_thread(self._sync, spec, self.store, self.states, env=self.env,
                                             policy=self.policy, full=full, progress=progress,
                                             clock=self.clock)
            next_due = self.states.load(spec.name).next_due or (self.clock() + spec.every_s)
            await self.leases.claim(f"source-synced:{spec.name}", max(1.0, next_due - self.clock()))
        finally:
            renewer.cancel()
            await self.leases.release(name)
        _log_report(report)
        return report

    async def _renew(self, name: str) -> None:
        while True:
            await asyncio.sleep(LEASE_S / 3)
            if not await self.leases.renew(name, LEASE_S):
                log.warning("lost the lease %s while syncing; another replica may start it too", name)
                return


def _log_report(report: SyncReport) -> None:
    if report.ok:
        log.info("source %s synced: %d seen, %d added, %d updated, %d unchanged, %d removed, %d failed", report.name,
                 report.seen, report.added, report.updated, report.unchanged, report.removed, report.failed)
    else:
        log.warning("source %s failed to sync: %s", report.name, report.error)


def start_source_sync(settings: Settings, orchestrator: Any, coordination: Any) -> SourceSyncJobs | None:
    """The background syncs for `switchboard run`, started; None when there is no SOURCES_FILE (or no local
    store to write to). A bad sources file is a `SourcesFileError` (a start-up sentence)."""
    if settings.sources_file is None:
        return None
    specs = load_specs(settings, list(orchestrator.agents.names))
    store = getattr(getattr(orchestrator.brain, "knowledge", None), "store", None)
    if not specs or store is None:
        return None
    jobs = SourceSyncJobs(settings, specs, store, coordination.leases)
    jobs.start()
    return jobs


async def check_sources(settings: Settings) -> list[CheckResult]:
    """`switchboard doctor`: the sources file reads, and each source's last sync (a failing one, with why)."""
    if settings.sources_file is None:
        return []
    from knowledge.agents import AgentsFileError, load_agents

    try:
        specs = load_specs(settings, list(load_agents(settings.agents_file).names))
    except (SourcesFileError, AgentsFileError) as exc:
        return [CheckResult("sources", False, str(exc), "fix the sources file (SOURCES_FILE)")]
    states = StateStore(settings.sources_state_dir)
    results = []
    for spec in specs:
        state = states.load(spec.name)
        name = f"source {spec.name}"
        if state.last_error:
            results.append(CheckResult(name, False, f"failing ({state.failures}× in a row): {state.last_error}; "
                                       f"keeping its {state.documents} documents",
                                       f"fix it, then run `switchboard sync {spec.name}`"))
        elif state.last_success is None:
            results.append(CheckResult(name, True, f"{spec.kind}, not synced yet (`switchboard sync {spec.name}`)"))
        else:
            skipped = f", {state.skipped_count} skipped" if state.skipped_count else ""
            results.append(CheckResult(name, True, f"{spec.kind}, {state.documents} documents{skipped}, synced "
                                       f"{ago(state.last_success, time.time())}"))
    return results


def ago(when: float | None, now: float) -> str:
    if when is None:
        return "never"
    seconds = max(0.0, now - when)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"

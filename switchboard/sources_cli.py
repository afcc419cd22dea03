"""`switchboard sync [NAME ...]` and `switchboard sources`: the knowledge sources of SOURCES_FILE, synced on
demand with a progress bar each and a summary table, and their status (last sync, documents, last error).

Registered by `switchboard/cli.py`; the work is `knowledge.sources` and `switchboard.sync_jobs`.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.settings import Settings, load_settings
from knowledge.sources.config import SourcesFileError, SourceSpec
from knowledge.sources.state import StateStore
from knowledge.sources.sync import SyncReport, prune_removed_sources
from switchboard.sync_jobs import SourceSyncJobs, ago, load_specs

console = Console()
err_console = Console(stderr=True)
WARNINGS_SHOWN = 10  # per source; the rest are counted


def _specs(settings: Settings) -> tuple[list[SourceSpec], tuple[str, ...]]:
    from knowledge.agents import AgentsFileError, load_agents

    if settings.sources_file is None:
        err_console.print("No sources: set SOURCES_FILE to a sources.yml (see README, \"Knowledge sources\").",
                          soft_wrap=True, highlight=False)
        raise typer.Exit(2)
    try:
        agents = load_agents(settings.agents_file).names
        return load_specs(settings, list(agents)), tuple(agents)
    except (SourcesFileError, AgentsFileError) as exc:
        err_console.print(f"[red]error:[/] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None


def sync_command(
    names: Optional[list[str]] = typer.Argument(None, help="Sources to sync (default: every source)."),
    full: bool = typer.Option(False, "--full", help="Read every document again (unchanged ones are still not "
                                                     "re-embedded); picks up label changes."),
) -> None:
    """Sync knowledge sources now: only what changed upstream is fetched and embedded, deletions are removed."""
    from core.logging_setup import setup_logging
    from knowledge.agents import load_agents
    from knowledge.base import open_store
    from knowledge.embeddings import make_embedder
    from knowledge.store import EmbeddingMismatchError, StoreUnavailableError

    settings = load_settings()
    setup_logging("ERROR")  # the table says what happened; warnings would tear the progress bars
    specs, agents = _specs(settings)
    unknown = sorted(set(names or []) - {s.name for s in specs})
    if unknown:
        err_console.print(f"[red]Unknown source(s) {', '.join(unknown)}[/]; the sources file has "
                          f"{', '.join(s.name for s in specs) or 'none'}.", highlight=False)
        raise typer.Exit(2)
    chosen = [s for s in specs if not names or s.name in names]
    try:
        store = open_store(settings, make_embedder(settings), load_agents(settings.agents_file))
    except (EmbeddingMismatchError, StoreUnavailableError) as exc:
        err_console.print(f"[red]error:[/] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from None
    from coordination import CoordinationUnavailable

    try:
        reports, skipped = asyncio.run(_sync(settings, chosen, store, full))
    except CoordinationUnavailable as exc:  # REDIS_URL set but unreachable: who else is syncing is unknown
        err_console.print(f"[red]error:[/] {exc}; start Redis or fix REDIS_URL", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from None
    pruned = prune_removed_sources(store, {s.name for s in specs}) if not names else 0
    console.print(_summary(reports, skipped))
    for report in reports:
        for warning in report.warnings[:WARNINGS_SHOWN]:
            console.print(f"[yellow]warning:[/] {report.name}: {warning}", soft_wrap=True, highlight=False)
        if len(report.warnings) > WARNINGS_SHOWN:
            console.print(f"[yellow]…and {len(report.warnings) - WARNINGS_SHOWN} more for {report.name}[/]")
        if not report.ok:
            console.print(f"[red]{report.name} failed:[/] {report.error}; its documents are kept.", soft_wrap=True,
                          highlight=False)
    if pruned:
        console.print(f"Removed {pruned} documents of sources no longer in the sources file.")
    if any(not r.ok for r in reports):
        raise typer.Exit(1)


async def _sync(settings: Settings, specs: list[SourceSpec], store: Any,
                full: bool) -> tuple[list[SyncReport], list[str]]:
    from coordination import connect

    coord = connect(settings.redis_url, replica_id=settings.replica_id)
    jobs = SourceSyncJobs(settings, specs, store, coord.leases)
    reports: list[SyncReport] = []
    skipped: list[str] = []
    try:
        with Progress(TextColumn("[bold]{task.fields[name]}[/]"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TextColumn("{task.description}"), console=console,
                      transient=False) as progress:
            for spec in specs:
                task = progress.add_task("", total=None, name=spec.name)

                def advance(done: int, total: int | None, current: str, task: Any = task) -> None:
                    progress.update(task, completed=done, total=total, description=current[-60:])

                report = await jobs.sync_one(spec, full=full, progress=advance)
                if report is None:
                    skipped.append(spec.name)
                    progress.update(task, description="being synced by another replica, skipped")
                    continue
                progress.update(task, total=report.seen or 1, completed=report.seen or 1,
                                description="done" if report.ok else "[red]failed[/]")
                reports.append(report)
    finally:
        await coord.aclose()
    return reports, skipped


def _summary(reports: list[SyncReport], skipped: list[str]) -> Table:
    table = Table("source", "kind", "seen", "added", "updated", "unchanged", "removed", "failed", "time",
                  title="Sync")
    for r in reports:
        if not r.ok:
            table.add_row(r.name, r.kind, "", "", "", "", "", "[red]source failed[/]", f"{r.seconds:.1f}s")
            continue
        table.add_row(r.name, r.kind, str(r.seen), str(r.added), str(r.updated), str(r.unchanged), str(r.removed),
                      str(r.failed), f"{r.seconds:.1f}s")
    for name in skipped:
        table.add_row(name, "", "", "", "", "", "", "another replica is syncing it", "")
    return table


def sources_command(as_json: bool = typer.Option(False, "--json", help="Print the status as JSON.")) -> None:
    """List the knowledge sources with their last sync, document count and last error."""
    settings = load_settings()
    specs, _ = _specs(settings)
    states = StateStore(settings.sources_state_dir)
    now = time.time()
    rows = []
    for spec in specs:
        state = states.load(spec.name)
        rows.append({"name": spec.name, "kind": spec.kind, "every_s": spec.every_s, "documents": state.documents,
                     "last_success": state.last_success, "next_due": state.next_due, "failing": state.failing,
                     "last_error": state.last_error, "failures": state.failures,
                     "skipped": state.skipped_count, "skipped_examples": state.skipped[:3]})
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    table = Table("source", "kind", "every", "documents", "last sync", "next", "status", title="Knowledge sources")
    for row in rows:
        if row["failing"]:
            status = f"[red]failing ({row['failures']}×)[/]"
        elif row["last_success"] is None:
            status = "not synced yet"
        else:
            status = "[green]ok[/]" + (f", {row['skipped']} skipped" if row["skipped"] else "")
        upcoming = "now" if (row["next_due"] or 0) <= now else f"in {_span(row['next_due'] - now)}"
        table.add_row(row["name"], row["kind"], _span(row["every_s"]), str(row["documents"]),
                      ago(row["last_success"], now), upcoming, status)
    console.print(table)
    for row in rows:
        if row["failing"]:
            console.print(f"[red]{row['name']}:[/] {row['last_error']}; its {row['documents']} documents are kept.",
                          soft_wrap=True, highlight=False)
        for example in row["skipped_examples"]:
            console.print(f"[yellow]{row['name']} skipped:[/] {example}", soft_wrap=True, highlight=False)


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"

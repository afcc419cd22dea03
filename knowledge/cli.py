"""`switchboard ingest` and `switchboard search`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()


def ingest_command(
    paths: Optional[list[Path]] = typer.Argument(None, help="Files or folders (default: the shipped sample corpus)."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Empty the store first (after changing embedding model)."),
    if_empty: bool = typer.Option(False, "--if-empty", help="Do nothing when the store already has documents."),
) -> None:
    """Add documents to the knowledge base; unchanged files are skipped, changed ones replaced."""
    from core.settings import load_settings
    from knowledge.base import open_store
    from knowledge.embeddings import make_embedder
    from knowledge.ingest import ingest

    settings = load_settings()
    store = open_store(settings, make_embedder(settings))
    if if_empty and not store.is_empty():
        console.print(f"Knowledge base ready: {store.count()} chunks ({settings.chroma_dir}).")
        return
    targets = list(paths or [settings.docs_dir])
    missing = [p for p in targets if not p.exists()]
    for path in missing:
        console.print(f"[yellow]warning:[/] {path}: no such file or folder, skipped")
    with Progress(
        TextColumn("[bold]Ingesting[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.description}"), console=console, transient=True,
    ) as progress:
        task = progress.add_task("", total=None)

        def advance(name: str, done: int, total: int) -> None:
            progress.update(task, completed=done, total=total, description=Path(name).name)

        report = ingest([p for p in targets if p.exists()], store, rebuild=rebuild, progress=advance)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)
    table = Table("files", "added", "updated", "unchanged", "removed", "failed", title="Ingestion")
    table.add_row(str(report.files_seen), str(report.files_added), str(report.files_updated),
                  str(report.files_unchanged), str(report.files_removed), str(report.files_failed))
    console.print(table)
    console.print(
        f"chunks: {report.chunks_added} added, {report.chunks_updated} updated, {report.chunks_removed} removed "
        f"· store now {store.count()} chunks · {report.seconds:.1f}s"
    )
    if report.files_read == 0 and report.files_removed == 0:
        console.print("[red]Nothing could be read.[/] Give Markdown, text, HTML or PDF files or folders.")
        raise typer.Exit(1)


def search_command(
    query: str = typer.Argument(..., help="What to look for."),
    agent: Optional[str] = typer.Option(None, "--agent", help="billing, technical or policy (default: all)."),
    k: int = typer.Option(5, "-k", help="How many passages."),
) -> None:
    """Print the passages the knowledge base returns for a query, with scores and sources."""
    from core.settings import load_settings
    from knowledge.base import open_store
    from knowledge.embeddings import make_embedder

    settings = load_settings()
    store = open_store(settings, make_embedder(settings))
    if agent is not None and agent not in store.agents:
        console.print(f"[red]Unknown agent {agent!r}[/]; use one of {', '.join(store.agents)}.")
        raise typer.Exit(2)
    if store.is_empty():
        console.print("[yellow]The knowledge base is empty.[/] Run `switchboard ingest` first.")
        raise typer.Exit(1)
    passages = store.search_all(query, k, [agent] if agent else None)
    table = Table("score", "agent", "source", "heading", "passage", show_lines=True)
    for p in passages:
        snippet = p.text if len(p.text) <= 300 else p.text[:300] + " …"
        table.add_row(f"{p.score:.3f}", p.agent, p.source, p.heading, snippet)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command(name="ingest")(ingest_command)
    app.command(name="search")(search_command)

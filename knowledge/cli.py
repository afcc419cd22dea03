"""`switchboard ingest` and `switchboard search`; `register(app)` mounts them on the main typer app."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()


def _open_store(settings: Any, *, check_embedder: bool = True) -> Any:
    """The store with the configured embedder; a model mismatch is printed as the fix, exit code 1."""
    from knowledge.embeddings import make_embedder
    from knowledge.store import EmbeddingMismatchError, KnowledgeStore, open_chroma_client

    try:
        return KnowledgeStore(open_chroma_client(settings), make_embedder(settings), check_embedder=check_embedder)
    except EmbeddingMismatchError as exc:
        console.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(1) from None


def _summary(report: Any) -> Table:
    table = Table("", "seen", "added", "updated", "unchanged", "removed", "failed", title="Ingestion")
    table.add_row("files", str(report.files_seen), str(report.files_added), str(report.files_updated),
                  str(report.files_skipped), str(report.files_removed), str(report.files_failed))
    table.add_row("chunks", "", str(report.chunks_added), str(report.chunks_updated), "",
                  str(report.chunks_removed), "")
    return table


def ingest_command(
    paths: Optional[list[Path]] = typer.Argument(None, help="Files or folders (default: the shipped sample corpus)."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Empty the store first (after changing embedding model)."),
    if_empty: bool = typer.Option(False, "--if-empty", help="Do nothing when the store already has documents."),
) -> None:
    """Add documents to the knowledge base; unchanged files are skipped, changed ones replaced.

    Exits non-zero only when nothing at all could be read."""
    from core.settings import load_settings
    from knowledge.ingest import ingest

    settings = load_settings()
    store = _open_store(settings, check_embedder=not rebuild)
    if if_empty and not rebuild and not store.is_empty():
        console.print(f"Knowledge base ready: {store.count()} chunks ({settings.chroma_dir}).")
        return
    targets = list(paths or [settings.docs_dir])
    for path in targets:
        if not path.exists():
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
        console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True, highlight=False)
    console.print(_summary(report))
    console.print(f"store now {store.count()} chunks · {report.seconds:.1f}s", highlight=False)
    if report.files_read == 0 and report.files_removed == 0 and report.files_excluded == 0:
        console.print("[red]Nothing could be read.[/] Give Markdown, text, HTML or PDF files or folders.")
        raise typer.Exit(1)


def search_command(
    query: str = typer.Argument(..., help="What to look for."),
    agent: Optional[str] = typer.Option(None, "--agent", help="billing, technical or policy (default: all)."),
    k: int = typer.Option(5, "-k", min=1, max=50, help="How many passages."),
) -> None:
    """Print the passages the knowledge base returns for a query, with scores and sources."""
    from core.settings import load_settings

    store = _open_store(load_settings())
    if agent is not None and agent not in store.agents:
        console.print(f"[red]Unknown agent {agent!r}[/]; use one of {', '.join(store.agents)}.")
        raise typer.Exit(2)
    if store.is_empty():
        console.print("[yellow]The knowledge base is empty.[/] Run `switchboard ingest` first.")
        raise typer.Exit(1)
    passages = store.retrieve(agent, query, k) if agent else store.search_all(query, k)
    table = Table("score", "agent", "source", "heading", "passage", show_lines=True)
    for p in passages:
        snippet = p.text if len(p.text) <= 300 else p.text[:300] + " …"
        table.add_row(f"{p.score:.3f}", p.agent, p.source, p.heading, snippet)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command(name="ingest")(ingest_command)
    app.command(name="search")(search_command)

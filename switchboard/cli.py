"""The `switchboard` command: ask, eval, eval-retrieval, doctor, ingest, search, run, feedback, migrate, gaps and
draft-article.

Only wiring lives here; each command calls into the package that does the work (`core`, `knowledge`, `bots`).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.events import Agent, Complete, Error, Handoff, Sources, Token, event_to_dict
from core.logging_setup import setup_logging
from core.settings import Settings, load_settings
from switchboard.run import run_command
from switchboard.sources_cli import sources_command, sync_command
from switchboard.support_cli import draft_article_command, gaps_command
from switchboard.workspaces_cli import workspaces_app

app = typer.Typer(help="Switchboard: a support bot for Slack, Discord and the web.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


def _settings() -> Settings:
    settings = load_settings()
    setup_logging("WARNING" if settings.log_level.upper() == "INFO" else settings.log_level)
    from core.logging_setup import use_log_format

    use_log_format(settings.log_format)  # LOG_FORMAT=json: JSON lines
    return settings


def _agents(settings: Settings) -> Any:
    """The agents file's registry (AGENTS_FILE, or the shipped one); a bad file is printed as its fix, exit 2."""
    from knowledge.agents import AgentsFileError, load_agents

    try:
        return load_agents(settings.agents_file)
    except AgentsFileError as exc:
        err_console.print(f"[red]error:[/] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None


@app.command()
def ask(
    question: str = typer.Argument(..., help="The question to ask."),
    session: Optional[str] = typer.Option(None, "--session", help="Session key; reuse it to continue a conversation."),
    as_json: bool = typer.Option(False, "--json", help="Print one event per line as JSON."),
) -> None:
    """Ask one question and stream the answer, tagged with the agent that answered."""
    settings = _settings()
    _agents(settings)  # a bad agents file is one sentence here, not a traceback
    key = session or f"cli:{uuid.uuid4()}"
    from knowledge.store import StoreUnavailableError

    try:
        code = asyncio.run(_ask(settings, key, question, as_json))
    except StoreUnavailableError as exc:
        err_console.print(f"[red]error:[/] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


async def _ask(settings: Settings, key: str, question: str, as_json: bool) -> int:
    from core.orchestrator import build_orchestrator

    orchestrator = await build_orchestrator(settings)
    status = 0
    try:
        async for event in orchestrator.respond(key, question, user="cli"):
            if as_json:
                print(json.dumps(event_to_dict(event), ensure_ascii=False), flush=True)
                status = 1 if isinstance(event, Error) else status
                continue
            if isinstance(event, Agent):
                console.print(f"[bold cyan][{event.label}][/] ", end="")
            elif isinstance(event, Token):
                sys.stdout.write(event.text)
                sys.stdout.flush()
            elif isinstance(event, Sources):
                console.print("\n\n[dim]Sources: " + "; ".join(f"{s.title} ({s.source})" for s in event.items) + "[/]")
            elif isinstance(event, Handoff):
                console.print("🙋 Asked for a person: on Slack, Discord or the chat page this hands the "
                              "conversation to the team.")
            elif isinstance(event, Complete):
                confidence = "" if event.confidence is None else f" · confidence {event.confidence:.2f}"
                declined = " · declined" if event.declined else ""
                console.print(f"\n[dim]{event.agent or 'nobody'} · {event.duration_ms:.0f} ms{confidence}{declined} "
                              f"· session {key}[/]")
            elif isinstance(event, Error):
                console.print(f"\n[bold red]{event.user_message}[/]")
                status = 1
    finally:
        await orchestrator.aclose()
    return status


@app.command(name="eval")
def evaluate(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="TSV with a header row label<TAB>question."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    answer: bool = typer.Option(False, "--answer", help="Answer each question in full (with a model, its own "
                                "'the documents do not answer this' counts too); default: routing and retrieval."),
) -> None:
    """Routing accuracy over a labelled TSV: accuracy, per-agent precision/recall and a confusion matrix; and how
    well the bot declines the questions labelled `none` (precision and recall of declining)."""
    from core.evaluation import EvalFileError, load_labelled

    settings = _settings()
    agents = _agents(settings).names
    try:
        questions = load_labelled(file, list(agents))
    except EvalFileError as exc:
        err_console.print(f"[red]{exc}[/]")
        raise typer.Exit(2)
    report = asyncio.run(_evaluate(settings, questions, agents, answer=answer))
    if as_json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
        return
    console.print(f"Accuracy: [bold]{report.accuracy:.1%}[/] over {len(report.items)} questions · routing "
                  f"accuracy on the answerable ones: [bold]{report.routing_accuracy:.1%}[/]")
    if report.decline is not None:
        d = report.decline
        console.print(f"Declining: precision [bold]{d['precision']:.1%}[/], recall [bold]{d['recall']:.1%}[/] "
                      f"({d['declined']} declined, {d['unanswerable']} labelled none, "
                      f"{d['answerable_declined']} answerable declined; threshold {settings.confidence_threshold})")
    labels = list(report.confusion)
    table = Table("label", "precision", "recall")
    for name in labels:
        table.add_row(name, f"{report.precision[name]:.1%}", f"{report.recall[name]:.1%}")
    console.print(table)
    matrix = Table("label \\ predicted", *labels)
    for label in labels:
        matrix.add_row(label, *(str(report.confusion[label][p]) for p in labels))
    console.print(matrix)
    misses = [p for p in report.items if p.label != p.predicted]
    for miss in misses:
        console.print(f"[yellow]✗[/] {miss.label} → {miss.predicted} ({miss.confidence:.2f}): {miss.question}")


async def _evaluate(settings: Settings, questions: list, agents: tuple[str, ...], *, answer: bool = False) -> Any:
    from core.orchestrator import build_orchestrator
    from core.support_eval import predict
    from core.evaluation import score

    orchestrator = await build_orchestrator(settings)
    try:
        predictions = [await predict(orchestrator, item, answer=answer) for item in questions]
    finally:
        await orchestrator.aclose()
    return score(predictions, list(agents))


@app.command(name="eval-retrieval")
def evaluate_retrieval(
    file: Path = typer.Argument(..., exists=True, dir_okay=False,
                                help="TSV with a header row source<TAB>question; source may end in #Heading."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Retrieval quality over a TSV of questions and the document (or section) that answers each: top-1, top-3
    and MRR@5, overall and per agent, and the questions whose passage did not come first."""
    from core.retrieval_eval import RetrievalCasesError, evaluate, load_cases

    settings = _settings()
    try:
        cases = load_cases(file)
    except RetrievalCasesError as exc:
        err_console.print(f"[red]{exc}[/]", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    store = _open_store(settings)
    agent_of = {source: agent for source, (agent, _, _) in store.file_hashes().items()}
    try:
        report = evaluate(cases, agent_of, store.retrieve)
    except RetrievalCasesError as exc:
        err_console.print(f"[red]error:[/] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
        return
    table = Table("agent", "questions", "top-1", "top-3", "MRR@5")
    for name, m in [*report.per_agent.items(), ("all", report.overall)]:
        table.add_row(name, str(m.questions), f"{m.top1:.3f}", f"{m.top3:.3f}", f"{m.mrr:.3f}")
    console.print(table)
    for miss in report.misses:
        where = f"rank {miss.rank}" if miss.rank else "not in the top 5"
        console.print(f"[yellow]✗[/] {miss.case.expected} ({where}): {miss.case.question}", soft_wrap=True,
                      highlight=False)
        console.print(f"   got: {', '.join(miss.found[:3])}", soft_wrap=True, highlight=False, style="dim")


@app.command()
def doctor() -> None:
    """Show the effective settings (secrets masked) and check every dependency, with the fix for each failure."""
    from core.doctor import settings_rows
    from switchboard.doctor import run_checks

    settings = _settings()
    table = Table("setting", "value", title="Effective settings")
    for name, value in settings_rows(settings):
        table.add_row(name, value)
    console.print(table)
    results = asyncio.run(run_checks(settings))
    failed = False
    for result in results:
        mark = "[green]✓[/]" if result.ok else "[red]✗[/]"
        console.print(f"{mark} {result.name}: {result.detail}")
        if not result.ok:
            failed = True
            console.print(f"   [yellow]fix:[/] {result.fix}")
    raise typer.Exit(1 if failed else 0)


# --- the knowledge base -------------------------------------------------------------------------------

def _open_store(settings: Any, *, check_embedder: bool = True) -> Any:
    """The store with the configured embedder and the agents file's agents; a model mismatch is printed as the
    fix, exit code 1."""
    from knowledge.base import lexical_dir
    from knowledge.embeddings import make_embedder
    from knowledge.store import EmbeddingMismatchError, KnowledgeStore, StoreUnavailableError, open_chroma_client

    agents = _agents(settings).names
    try:
        return KnowledgeStore(open_chroma_client(settings), make_embedder(settings), agents,
                              check_embedder=check_embedder, lexical_dir=lexical_dir(settings))
    except (EmbeddingMismatchError, StoreUnavailableError) as exc:
        console.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(1) from None


def _summary(report: Any) -> Table:
    table = Table("", "seen", "added", "updated", "unchanged", "removed", "failed", title="Ingestion")
    table.add_row("files", str(report.files_seen), str(report.files_added), str(report.files_updated),
                  str(report.files_skipped), str(report.files_removed), str(report.files_failed))
    table.add_row("chunks", "", str(report.chunks_added), str(report.chunks_updated), "",
                  str(report.chunks_removed), "")
    return table


@app.command(name="ingest")
def ingest_command(
    paths: Optional[list[Path]] = typer.Argument(None, help="Files or folders (default: the shipped sample corpus)."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Empty the store first (after changing embedding model)."),
    if_empty: bool = typer.Option(False, "--if-empty", help="Do nothing when the store already has documents."),
) -> None:
    """Add documents to the knowledge base; unchanged files are skipped, changed ones replaced.

    Exits non-zero only when nothing at all could be read."""
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


@app.command(name="search")
def search_command(
    query: str = typer.Argument(..., help="What to look for."),
    agent: Optional[str] = typer.Option(None, "--agent", help="An agent's name from the agents file (default: all)."),
    k: int = typer.Option(5, "-k", min=1, max=50, help="How many passages."),
    as_json: bool = typer.Option(False, "--json", help="Print the passages as JSON, for scripts."),
) -> None:
    """Print the passages the knowledge base returns for a query, best first, with scores and sources.

    `relevance` is the hybrid score (cosine, BM25 and section view; `knowledge.hybrid`) they are ordered by; `score` the cosine."""
    store = _open_store(load_settings())
    if agent is not None and agent not in store.agents:
        console.print(f"[red]Unknown agent {agent!r}[/]; use one of {', '.join(store.agents)}.")
        raise typer.Exit(2)
    if store.is_empty():
        console.print("[yellow]The knowledge base is empty.[/] Run `switchboard ingest` first.")
        raise typer.Exit(1)
    passages = store.retrieve(agent, query, k) if agent else store.search_all(query, k)
    if as_json:
        print(json.dumps({"query": query, "agent": agent, "passages": [_passage_json(p) for p in passages]},
                         ensure_ascii=False, indent=2))
        return
    from core.quoting import quote

    table = Table(show_lines=True)
    for column in ("relevance", "score", "agent", "source"):
        table.add_column(column, no_wrap=True)
    table.add_column("heading")
    table.add_column("passage")
    for p in passages:
        snippet = p.text if len(p.text) <= 300 else quote(p.text, max_units=3, max_chars=300) + " …"
        table.add_row(f"{p.relevance:.3f}", f"{p.score:.3f}", p.agent, p.source, p.heading, snippet)
    console.print(table)


def _passage_json(passage: Any) -> dict[str, Any]:
    section = passage.section
    return {
        "relevance": passage.relevance,
        "score": round(passage.score, 6),
        "agent": passage.agent,
        "source": passage.source,
        "title": passage.title,
        "heading": passage.heading,
        "text": passage.text,
        "section": {"heading": section.heading, "text": section.text} if section else None,
    }


# --- the front-ends ------------------------------------------------------------------------------------

app.command(name="run")(run_command)


# --- knowledge sources (SOURCES_FILE): `switchboard/sources_cli.py` --------------------------------------------

app.command(name="sync")(sync_command)
app.command(name="sources")(sources_command)


# --- the support loop: `switchboard/support_cli.py` -----------------------------------------------------------

app.command(name="gaps")(gaps_command)
app.command(name="draft-article")(draft_article_command)

# --- retention and erasure (RETENTION_DAYS): `switchboard/privacy_cli.py` -------------------------------------
from switchboard.privacy_cli import forget_command, prune_command  # noqa: E402

app.command(name="prune")(prune_command)
app.command(name="forget")(forget_command)

# --- many workspaces: `switchboard/workspaces_cli.py` (issue 18) ---------------------------------------------------
app.add_typer(workspaces_app, name="workspaces")


@app.command(name="feedback")
def feedback_command(as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
                     recent: int = typer.Option(10, help="How many of the latest 👎 to list.")) -> None:
    """Show the 👍/👎 votes recorded so far and the latest 👎 conversations (their session keys)."""
    from bots.feedback import feedback_store, summarize
    from core.checkpoints import CheckpointsUnavailable

    try:  # the configured store: feedback.jsonl, or Postgres when DATABASE_URL is set
        summary = summarize(asyncio.run(feedback_store(load_settings()).read()), recent)
    except CheckpointsUnavailable as exc:
        err_console.print(f"[red]error:[/] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from None
    if as_json:
        console.print_json(data=summary)
        return
    if not summary["total"]:
        console.print("No feedback yet: votes appear here once people click 👍/👎 under answers in Slack or Discord.")
        return
    table = Table("front-end", "👍", "👎", title=f"{summary['total']} votes")
    for frontend, counts in sorted(summary["by_frontend"].items()):
        table.add_row(frontend, str(counts["up"]), str(counts["down"]))
    console.print(table)
    for row in summary["recent_down"]:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["at"] or 0))
        console.print(f"👎 {when}  {row['session_key']}  (by {row['user']})")


@app.command(name="migrate")
def migrate_command() -> None:
    """Create or update the tables of DATABASE_URL's Postgres (conversations, feedback, support, Slack
    installations and OAuth states, workspace settings); safe to run again."""
    from core.checkpoints import CheckpointsUnavailable

    try:
        for line in asyncio.run(_migrate(_settings())):
            console.print(line, highlight=False, soft_wrap=True)
    except CheckpointsUnavailable as exc:
        err_console.print(f"[red]error:[/] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from None


async def _migrate(settings: Settings) -> list[str]:
    from bots.feedback import feedback_store
    from core.checkpoints import migrate

    store = feedback_store(settings)
    lines = [await migrate(settings)]
    await store.setup()
    lines.append(f"feedback: {store.where}, ready")
    from bots.support.store import support_store  # handoffs and the support log (bots.support)

    support = support_store(settings)
    try:
        await support.setup()
    finally:
        await support.aclose()
    lines.append(f"support: {support.where}, ready")
    # "Add to Slack" installations and OAuth states, and the per-workspace settings (issue 18)
    from bots.slack.installations import SqlInstallationStore
    from core.workspaces import Workspaces

    owners: tuple[tuple[str, SqlInstallationStore | Workspaces], ...] = (
        ("slack installations", SqlInstallationStore(settings)),  # and its OAuth states table
        ("workspaces", Workspaces(settings)))
    for label, owner in owners:
        try:
            await owner.runner.setup()
        finally:
            await owner.aclose()
        lines.append(f"{label}: {owner.where}, ready")
    return lines


def main() -> None:
    app()


if __name__ == "__main__":
    main()

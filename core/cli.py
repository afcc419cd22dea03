"""The `switchboard` command: ask, eval, doctor, ingest, search and run.

Only wiring lives here; each command calls into the module that does the work.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from core.agents import AGENTS
from core.events import Agent, Complete, Error, Sources, Token, event_to_dict
from core.logging_setup import setup_logging
from core.settings import Settings, load_settings

app = typer.Typer(help="Switchboard: a support bot for Slack, Discord and the web.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


def _settings() -> Settings:
    settings = load_settings()
    setup_logging("WARNING" if settings.log_level.upper() == "INFO" else settings.log_level)
    return settings


@app.command()
def ask(
    question: str = typer.Argument(..., help="The question to ask."),
    session: Optional[str] = typer.Option(None, "--session", help="Session key; reuse it to continue a conversation."),
    as_json: bool = typer.Option(False, "--json", help="Print one event per line as JSON."),
) -> None:
    """Ask one question and stream the answer, tagged with the agent that answered."""
    settings = _settings()
    key = session or f"cli:{uuid.uuid4()}"
    code = asyncio.run(_ask(settings, key, question, as_json))
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
            elif isinstance(event, Complete):
                console.print(f"\n[dim]{event.agent} · {event.duration_ms:.0f} ms · session {key}[/]")
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
) -> None:
    """Routing accuracy over a labelled TSV: accuracy, per-agent precision/recall and a confusion matrix."""
    from core.evaluation import EvalFileError, load_labelled

    settings = _settings()
    try:
        questions = load_labelled(file, list(AGENTS))
    except EvalFileError as exc:
        err_console.print(f"[red]{exc}[/]")
        raise typer.Exit(2)
    report = asyncio.run(_evaluate(settings, questions))
    if as_json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
        return
    console.print(f"Routing accuracy: [bold]{report.accuracy:.1%}[/] over {len(report.items)} questions")
    table = Table("agent", "precision", "recall")
    for name in AGENTS:
        table.add_row(name, f"{report.precision[name]:.1%}", f"{report.recall[name]:.1%}")
    console.print(table)
    matrix = Table("label \\ predicted", *AGENTS)
    for label in AGENTS:
        matrix.add_row(label, *(str(report.confusion[label][p]) for p in AGENTS))
    console.print(matrix)
    misses = [p for p in report.items if p.label != p.predicted]
    for miss in misses:
        console.print(f"[yellow]✗[/] {miss.label} → {miss.predicted} ({miss.confidence:.2f}): {miss.question}")


async def _evaluate(settings: Settings, questions: list) -> object:
    from core.evaluation import Prediction, score
    from core.orchestrator import build_orchestrator

    orchestrator = await build_orchestrator(settings)
    try:
        predictions = []
        for item in questions:
            decision = await orchestrator.route(item.question)
            predictions.append(Prediction(item.question, item.label, decision.agent, round(decision.confidence, 4)))
    finally:
        await orchestrator.aclose()
    return score(predictions, list(AGENTS))


@app.command()
def doctor() -> None:
    """Show the effective settings (secrets masked) and check every dependency, with the fix for each failure."""
    from core.doctor import run_checks, settings_rows

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


def _register_optional_commands() -> None:
    """Commands owned by other packages; each registers itself on the app."""
    try:
        from knowledge.cli import register as register_knowledge
    except ImportError:  # pragma: no cover - during development only
        pass
    else:
        register_knowledge(app)
    try:
        from bots.run import register as register_run
    except ImportError:  # pragma: no cover
        pass
    else:
        register_run(app)


_register_optional_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()

"""`switchboard gaps` and `switchboard draft-article`: the support loop's reports, wired to the stores.

Only wiring: the grouping and the outcomes are `bots.support.gaps`, the draft is `bots.support.drafts`; the
support log and handoffs come from `bots.support.store`, the votes from `bots.feedback`, and conversations from
the checkpointer (`core.checkpoints`, read directly: no knowledge base or model is opened for a report).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from core.settings import Settings, load_settings

console = Console()
err_console = Console(stderr=True)


async def transcripts(settings: Settings, keys: list[str]) -> dict[str, list[Any]]:
    """Session key → its turns (`core.transcript`), straight from the checkpointer."""
    from core.checkpoints import open_checkpointer
    from core.transcript import turns_of

    checkpointer, close = await open_checkpointer(settings, setup=False)
    try:
        found: dict[str, list[Any]] = {}
        for key in keys:
            saved = await checkpointer.aget_tuple({"configurable": {"thread_id": key, "checkpoint_ns": ""}})
            messages = (saved.checkpoint.get("channel_values") or {}).get("messages") if saved else None
            found[key] = turns_of(messages or [])
        return found
    finally:
        await close()


async def _gaps(settings: Settings, since: float | None) -> tuple[list[Any], dict[str, str]]:
    from bots.feedback import feedback_store
    from bots.support.gaps import collect, group, outcomes
    from bots.support.store import support_store
    from core.transcript import last_answered
    from knowledge.embeddings import make_embedder

    store = support_store(settings)
    try:
        events = await store.events(since=since)
        handoffs = await store.handoffs()
    finally:
        await store.aclose()
    votes = await feedback_store(settings).read()
    downs = sorted({str(v["session_key"]) for v in votes if v.get("vote") == "down"
                    and (since is None or float(v.get("at") or 0) >= since)})
    turns = await transcripts(settings, downs) if downs else {}
    question_of = {key: answered.question for key, t in turns.items() if (answered := last_answered(t))}
    gaps = collect(events, votes, question_of, since=since)
    embedder = make_embedder(settings) if gaps else None
    topics = group(gaps, embedder.embed_documents) if embedder is not None else []
    return topics, outcomes(events, handoffs, votes, since=since)


def gaps_command(
    since: Optional[str] = typer.Option(None, "--since", help="Only the last 7d, 12h, 30m… (default: everything)."),
    csv_file: Optional[Path] = typer.Option(None, "--csv", dir_okay=False, help="Also write one row per question."),
    as_json: bool = typer.Option(False, "--json", help="Print the topics and outcomes as JSON."),
) -> None:
    """The questions the bot could not answer, that were handed to a person or got 👎, grouped by topic (largest
    first, with counts and an example thread each), and how the sessions ended."""
    from bots.support.gaps import OUTCOMES, parse_since, write_csv

    settings = load_settings()
    try:
        start = parse_since(since)
    except ValueError:
        err_console.print(f"[red]error:[/] --since {since!r}: use 7d, 12h, 30m or a number of days.")
        raise typer.Exit(2) from None
    topics, ended = asyncio.run(_gaps(settings, start))
    counts = {name: sum(1 for o in ended.values() if o == name) for name in OUTCOMES}
    if csv_file is not None:
        write_csv(topics, csv_file)
    if as_json:
        print(json.dumps({"topics": [t.to_dict() for t in topics], "outcomes": counts, "sessions": ended},
                         ensure_ascii=False, indent=2))
        return
    summary = ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in counts.items() if n)
    console.print(f"{len(ended)} sessions: {summary or 'none recorded yet'}", highlight=False)
    if not topics:
        console.print("No gaps: nothing declined, handed off or voted 👎" + (f" since {since}." if since else "."))
        return
    table = Table("#", "topic", "questions", "declined", "handed off", "👎", "example thread")
    for number, topic in enumerate(topics, start=1):
        kinds, example = topic.kinds, topic.example
        table.add_row(str(number), topic.name, str(topic.count), str(kinds.get("declined", 0)),
                      str(kinds.get("handoff", 0)), str(kinds.get("down", 0)), example.link or example.session_key)
    console.print(table)
    if csv_file is not None:
        console.print(f"Every question, with its topic: {csv_file}")


async def _draft_inputs(settings: Settings, session_key: str) -> tuple[Any, Any, Any]:
    from bots.support.store import support_store

    store = support_store(settings)
    try:
        record = await store.get_handoff(session_key)
        notes = await store.events(session_key=session_key)
    finally:
        await store.aclose()
    turns = (await transcripts(settings, [session_key]))[session_key]
    return turns, record, notes


def draft_article_command(
    session_key: str = typer.Argument(..., help="The conversation, e.g. slack:T…:C…:1712345678.000100."),
    out: Optional[Path] = typer.Option(None, "--out", file_okay=False,
                                       help="Folder for the draft (default: knowledge/drafts/, never ingested)."),
) -> None:
    """Draft a knowledge-base article from a conversation a person answered: the question, the agent, and the
    staff's answer from the thread, as Markdown in knowledge/drafts/ for a person to review and move into docs/."""
    from bots.support.drafts import NothingToDraft, draft, write_draft

    settings = load_settings()
    turns, record, notes = asyncio.run(_draft_inputs(settings, session_key))
    try:
        name, text = draft(session_key, turns, record, notes)
    except NothingToDraft as exc:
        err_console.print(f"[red]error:[/] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from None
    folder = out or settings.docs_dir.parent / "drafts"
    path = write_draft(folder, name, text)
    console.print(f"Draft written: {path}\nReview it, delete `ingest: false`, and move it into docs/ to use it.",
                  highlight=False)

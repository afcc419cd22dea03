"""A knowledge-base article drafted from a conversation a person answered (`switchboard draft-article`).

When staff answer in a handed-off thread, their answer is exactly what the knowledge base was missing. The draft
is Markdown with front matter the loader understands (`agent:`, `title:`) plus the question and the session it
came from, and `ingest: false`, so even a `switchboard ingest` run over the drafts folder leaves it out
(`knowledge.loaders` honours that key): it reaches the bot only once a person has reviewed it, removed that line
and moved it into `docs/<agent>/`.

The staff's answer is what was posted in the thread while it was handed off (the support log's notes) by anyone
but the user who asked; the person who took the handoff first, when they wrote anything.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from bots.support.store import HandoffRecord, SupportEvent
from core.transcript import Turn, questions_of

SLUG_CHARS = 60


class NothingToDraft(ValueError):
    """The session has no handoff, or no one but the user wrote in it; the message says which."""


def slug(text: str) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return (words[:SLUG_CHARS].rstrip("-") or "draft")


def staff_answer(record: HandoffRecord, notes: Sequence[SupportEvent]) -> list[str]:
    """What the staff wrote in the thread after the handoff, in order."""
    after = [n for n in notes if n.kind == "note" and n.at >= record.requested_at and n.text.strip()]
    staff = [n for n in after if n.user and n.user != record.requested_by]
    taker_id = next((n.user for n in notes if n.kind == "taken" and n.user), None)
    by_taker = [n for n in staff if taker_id and n.user == taker_id]
    return [n.text.strip() for n in (by_taker or staff)]


def draft(session_key: str, turns: Sequence[Turn], record: HandoffRecord | None, notes: Sequence[SupportEvent],
          *, now: float | None = None) -> tuple[str, str]:
    """(file name, Markdown) of the draft; `NothingToDraft` when there is nothing a person answered."""
    if record is None:
        raise NothingToDraft(f"{session_key} was never handed to a person, so there is no staff answer to draft "
                             "from; `switchboard gaps` lists the sessions that were.")
    answer = staff_answer(record, notes)
    if not answer:
        raise NothingToDraft(f"Nobody but the user wrote in {session_key} after the handoff; draft it once a person "
                             "has answered in the thread.")
    questions = questions_of(turns) or list(record.ticket.get("questions") or [])
    question = questions[-1] if questions else "(the question)"
    agent = record.ticket.get("agent") or next((t.agent for t in reversed(turns) if t.agent), None)
    meta = {
        "title": question.rstrip("?").strip()[:120] or "Draft",
        "agent": agent or "",
        "question": question,
        "session": session_key,
        "source": "handoff",
        "status": "draft",
        "drafted_at": time.strftime("%Y-%m-%d", time.gmtime(time.time() if now is None else now)),
        "ingest": False,
    }
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip()
    body = "\n\n".join(answer)
    text = (f"---\n{front}\n---\n\n# {meta['title']}\n\n{body}\n\n"
            f"<!-- Drafted by `switchboard draft-article` from {session_key}. Review and edit it, delete the "
            f"`ingest: false` line, then move it into docs/{agent or '<agent>'}/ and run `switchboard ingest`. -->\n")
    return f"{slug(question)}.md", text


def write_draft(folder: Path, name: str, text: str) -> Path:
    """Write the draft into `folder`, never over an existing file (a second draft gets -2, -3…)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    number = 2
    while path.exists():
        path = folder / f"{Path(name).stem}-{number}.md"
        number += 1
    path.write_text(text, encoding="utf-8")
    return path

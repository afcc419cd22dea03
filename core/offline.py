"""Answers without a language model: the best passages, composed readably.

Offline mode is what a newcomer sees before configuring a key, so it must be useful and honest: it says it is
answering without a language model, quotes the most relevant passages with their titles, and points to a human
when nothing in the knowledge base is close enough.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from knowledge.types import Passage

MIN_SCORE = 0.30  # below this cosine similarity a passage is not about the question
MAX_PASSAGES = 2
MAX_PASSAGE_CHARS = 700
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


_STRUCTURED_LINE = re.compile(r"^\s*([-*+]\s|\d+[.)]\s|\||#|>|```)")


def unwrap(text: str) -> str:
    """Join the hard-wrapped lines of prose (documents wrap at ~110 columns; chat clients would show every
    break). Blank lines, list items, tables, quotes, headings and code blocks keep their lines."""
    lines: list[str] = []
    joinable: list[bool] = []  # may the next prose line continue this one?
    in_fence = False
    for line in text.split("\n"):
        fence_line = line.lstrip().startswith("```")
        prose = not in_fence and not fence_line and bool(line.strip()) and not _STRUCTURED_LINE.match(line)
        if prose and joinable and joinable[-1]:
            lines[-1] = f"{lines[-1]} {line.strip()}"
        else:
            lines.append(line)
            joinable.append(prose)
        if fence_line:
            in_fence = not in_fence
    return "\n".join(lines)


def _trim(text: str, limit: int) -> str:
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = text[:limit]
    # Close at the last full sentence, and never leave a code fence open.
    ends = [m.end() for m in _SENTENCE_END.finditer(cut)]
    if ends and ends[-1] > limit // 2:
        cut = cut[: ends[-1]].rstrip()
    else:
        cut = cut.rsplit(" ", 1)[0] + " …"
    if cut.count("```") % 2:
        cut += "\n```"
    return cut


def compose_offline_answer(passages: Sequence[Passage], *, support_email: str) -> tuple[str, list[Passage]]:
    """Return the answer text and the passages it quotes."""
    relevant = [p for p in passages if p.score >= MIN_SCORE][:MAX_PASSAGES]
    header = "_Offline mode: I'm answering without a language model, straight from the knowledge base._"
    if not relevant:
        text = (
            f"{header}\n\nI couldn't find anything in the knowledge base that answers this. "
            f"Please contact {support_email} and a person will help."
        )
        return text, []
    parts = [header, ""]
    for passage in relevant:
        parts.append(f"**{_label(passage)}**")
        parts.append("")
        parts.append(_trim(unwrap(passage.text), MAX_PASSAGE_CHARS))
        parts.append("")
    parts.append(f"If this doesn't answer your question, contact {support_email}.")
    return "\n".join(parts), relevant


def _label(passage: Passage) -> str:
    """"Title — Section" for a passage; chunk headings are paths that already start with the title."""
    heading = passage.heading.strip()
    if heading.startswith(passage.title):
        heading = heading[len(passage.title):].lstrip(" >—-")
    return f"{passage.title} — {heading}" if heading else passage.title


def stream_pieces(text: str, words_per_piece: int = 3) -> Iterator[str]:
    """Split text into small pieces, keeping whitespace, so offline answers stream like a model's."""
    tokens = re.findall(r"\S+\s*|\s+", text)
    for start in range(0, len(tokens), words_per_piece):
        yield "".join(tokens[start : start + words_per_piece])

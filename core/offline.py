"""Answers without a language model: the best passages, quoted readably.

Offline mode is what a newcomer sees before configuring a key, so it must be useful and honest: it says it is
answering without a language model, quotes the part of the knowledge base that answers, and points to a human
when nothing in the knowledge base is close enough.

Readable means: the section that answers comes first; each source is quoted once, in a few whole sentences
(`core.quoting`: never cut inside a word, a sentence or a Markdown span), starting where the retrieved chunk
starts inside its section, or, given the question, at the sentences that share most of its words; each source
is named and, when it has an address (a synced page), linked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from core.quoting import quote
from knowledge.types import Passage

MIN_SCORE = 0.30  # below this cosine similarity a passage is not about the question
MAX_SOURCES = 2  # documents quoted
MAX_SENTENCES = 4  # per source: a sentence, a list item, a table or a code block each count one
MAX_QUOTE_CHARS = 700  # per source, about
HEADER = "_Offline mode: I'm answering without a language model, straight from the knowledge base._"


def compose_offline_answer(
    passages: Sequence[Passage], *, support_email: str, question: str = ""
) -> tuple[str, list[Passage]]:
    """Return the answer text and the passages it quotes (one per source, best first)."""
    relevant = [p for p in passages if p.score >= MIN_SCORE]
    chosen: list[Passage] = []
    for passage in relevant:  # best first: one passage per document, the best one
        if passage.source not in {p.source for p in chosen}:
            chosen.append(passage)
        if len(chosen) == MAX_SOURCES:
            break
    quoted = [(p, _quote(p, question)) for p in chosen]
    quoted = [(p, text) for p, text in quoted if text]
    if not quoted:
        text = (
            f"{HEADER}\n\nI couldn't find anything in the knowledge base that answers this. "
            f"Please contact {support_email} and a person will help."
        )
        return text, []
    parts = [HEADER, ""]
    for passage, text in quoted:
        parts += [_heading_line(passage), "", text, ""]
    parts.append(f"If this doesn't answer your question, contact {support_email}.")
    return "\n".join(parts), [p for p, _ in quoted]


def _quote(passage: Passage, question: str) -> str:
    """A few whole sentences from the passage's section (or the passage itself), from where it matched."""
    shown = passage.shown
    return quote(shown.text, anchor=passage.text, question=question, max_units=MAX_SENTENCES,
                 max_chars=MAX_QUOTE_CHARS)


def _heading_line(passage: Passage) -> str:
    """`**Title — Section**` and where it comes from: a link when the source is an address, else its path."""
    label = _label(passage)
    if re.match(r"https?://", passage.source):
        return f"**[{label}]({passage.source})**"
    return f"**{label}** · _{passage.source}_"


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

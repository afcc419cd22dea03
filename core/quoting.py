"""Quoting a few whole sentences of Markdown: never cut inside a word, a sentence or a Markdown span.

An offline answer quotes the knowledge base, and a quote that stops at "write-only **project t" reads as broken
(and leaves a bold span open, which the chat renders as stray asterisks). So text is first cut into *units*: a
prose sentence, a list item (with its continuation lines), a table, a code block, a block quote, or a subsection
label (`**Okta**`, as `knowledge.sections` writes them). A sentence ends at `.`, `!` or `?` followed by a space
and a capital, digit or Markdown opener, but never inside a code span, a link, a bold or italic span, nor after
an abbreviation ("e.g.", "Inc.", "B.V."). A quote is a run of consecutive units, whole.

Pure functions; `knowledge.analysis` supplies the terms a question is matched with.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from knowledge.analysis import query_terms, terms

_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_SPANS = re.compile(
    r"`[^`\n]*`"  # code span
    r"|!?\[[^\]\n]*\]\([^)\n]*\)"  # link or image
    r"|\*\*[^\n]+?\*\*|__[^\n]+?__"  # bold
    r"|(?<![\w*])\*[^*\n]+?\*(?![\w*])|(?<![\w_])_[^_\n]+?_(?![\w_])"  # italic
)
_BOUNDARY = re.compile(r"[.!?][\"')\]]*(\s+)(?=[A-Z0-9*_`\"'(\[])")
_ABBREVIATIONS = frozenset("e.g i.e etc vs inc ltd b.v no approx cf mr mrs ms dr st fig".split())
_MARKER = re.compile(r"^\*\*[^*\n]+\*\*$")


@dataclass(frozen=True, slots=True)
class Unit:
    """One quotable piece. `block` numbers the paragraph or list it belongs to, so units of one block are
    joined back the way they were written (a space between sentences, a line break between items)."""

    text: str
    kind: str  # "sentence", "item", "table", "code", "quote" or "marker"
    block: int

    @property
    def introduces(self) -> bool:
        """A sentence ending in a colon announces what follows ("There are two kinds:")."""
        return self.kind in ("sentence", "item") and self.text.rstrip().endswith(":")


def sentences(paragraph: str) -> list[str]:
    """A prose paragraph's sentences (its hard-wrapped lines joined first)."""
    text = " ".join(line.strip() for line in paragraph.splitlines() if line.strip())
    protected = [(m.start(), m.end()) for m in _SPANS.finditer(text)]
    pieces: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        end = match.start(1)
        if any(a < end <= b for a, b in protected):
            continue
        last_word = text[start:match.start() + 1].rsplit(None, 1)[-1].rstrip(".").lower()
        if last_word in _ABBREVIATIONS or (len(last_word) == 1 and last_word.isalpha()):
            continue
        pieces.append(text[start:end].strip())
        start = match.end()
    pieces.append(text[start:].strip())
    return [p for p in pieces if p]


def units(text: str) -> list[Unit]:
    """The units of a Markdown text, in order."""
    found: list[Unit] = []
    lines = text.strip("\n").split("\n")
    block, i = 0, 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            i += 1
            continue
        block += 1
        if stripped.startswith("```"):
            end = i + 1
            while end < len(lines) and not lines[end].strip().startswith("```"):
                end += 1
            found.append(Unit("\n".join(lines[i:end + 1]), "code", block))
            i = end + 1
        elif stripped.startswith("|") or stripped.startswith(">"):
            kind, mark = ("table", "|") if stripped.startswith("|") else ("quote", ">")
            end = i
            while end < len(lines) and lines[end].strip().startswith(mark):
                end += 1
            found.append(Unit("\n".join(lines[i:end]), kind, block))
            i = end
        elif _LIST_ITEM.match(line):
            while i < len(lines) and _LIST_ITEM.match(lines[i]):
                item = [lines[i].rstrip()]
                i += 1
                while i < len(lines) and lines[i].strip() and lines[i][:1].isspace() \
                        and not _LIST_ITEM.match(lines[i]):
                    item.append(lines[i].strip())  # a wrapped item's continuation line
                    i += 1
                found.append(Unit(" ".join(item), "item", block))
        elif _MARKER.match(stripped):
            found.append(Unit(stripped, "marker", block))
            i += 1
        else:
            end = i
            while end < len(lines) and lines[end].strip() and not _starts_block(lines[end]):
                end += 1
            end = max(end, i + 1)
            found.extend(Unit(s, "sentence", block) for s in sentences("\n".join(lines[i:end])))
            i = end
    return found


def _starts_block(line: str) -> bool:
    stripped = line.strip()
    return bool(_LIST_ITEM.match(line)) or stripped.startswith(("```", "|", ">")) or bool(_MARKER.match(stripped))


def render(chosen: Sequence[Unit]) -> str:
    """Units back into Markdown: sentences of one paragraph on one line, items of one list on their own
    lines, blocks apart."""
    out = ""
    previous: Unit | None = None
    for unit in chosen:
        if previous is None:
            out = unit.text
        elif unit.block == previous.block:
            out += (" " if unit.kind == "sentence" else "\n") + unit.text
        else:
            out += "\n\n" + unit.text
        previous = unit
    return out


def quote(text: str, *, anchor: str = "", question: str = "", max_units: int = 4, max_chars: int = 700) -> str:
    """At most `max_units` whole units of `text` (about `max_chars`; a first unit longer than that is kept
    whole when it is the only way to say anything, up to twice the budget).

    The run starts where `anchor` (the passage that matched, inside its section) starts. Given the `question`,
    it starts instead at the unit sharing the most of its terms, and when the text ends before the run is
    full, the sentences before that unit in its paragraph come first. A sentence that announces a list is kept
    with it or not at all; a run stops at the next subsection's label and never starts with the tail of a cut
    sentence."""
    found = units(text)
    if not found:
        return ""
    start = _anchor_index(found, anchor)
    if question:
        start = _best_unit(found, question, start)
    if found[start].kind == "item":  # a list is quoted from its first item, and its announcement, when they fit
        target = start
        while start > 0 and found[start - 1].kind == "item" and found[start - 1].block == found[target].block \
                and target - (start - 1) < max_units:
            start -= 1
        if start > 0 and found[start - 1].introduces and target - (start - 1) < max_units:
            start -= 1  # "There are two kinds:" before its items
    while start + 1 < len(found) and (_fragment(found[start]) or found[start].kind == "marker"):
        start += 1  # not inside a sentence (the chunker's overlap), nor on a label the heading line repeats
    chosen: list[Unit] = []
    size = 0
    for unit in found[start:]:
        if unit.kind == "marker" and chosen:
            break  # the next subsection is another topic
        if sum(u.kind != "marker" for u in chosen) >= max_units:
            break
        cost = len(unit.text) + 2
        if chosen and size + cost > max_chars:
            break
        if not chosen and cost > 2 * max_chars:
            continue  # a table or code block too long to quote: the next unit may say it in words
        chosen.append(unit)
        size += cost
    if question and chosen:
        first = found.index(chosen[0])
        while first > 0 and len(chosen) < max_units and found[first - 1].block == chosen[0].block \
                and found[first - 1].kind == "sentence" and not _fragment(found[first - 1]) \
                and size + len(found[first - 1].text) + 2 <= max_chars:
            first -= 1  # the paragraph's sentences leading to the answer
            chosen.insert(0, found[first])
            size += len(found[first].text) + 2
    while chosen and (chosen[-1].kind == "marker" or (chosen[-1].introduces and len(chosen) > 1)):
        chosen.pop()
    return render(chosen)


def _fragment(unit: Unit) -> bool:
    """A sentence starting in lower case is the tail of one cut off before it."""
    return unit.kind == "sentence" and unit.text[:1].islower()


def _anchor_index(found: Sequence[Unit], anchor: str) -> int:
    """Where the anchor's first whole unit is in `found` (its first may be the tail of a cut sentence)."""
    texts = [u.text for u in found]
    for unit in units(anchor)[:3] if anchor.strip() else []:
        if unit.text in texts:
            return texts.index(unit.text)
    return 0


def _best_unit(found: Sequence[Unit], question: str, anchor: int) -> int:
    """The unit sharing the most of the question's terms (ties: the one nearest the anchor). A term counts by
    how rare it is in this text (log(1 + units / units having it)), so "browser" outweighs "key" in an
    article about keys."""
    wanted = set(query_terms(question))
    present = [wanted & set(terms(u.text)) for u in found]
    weight = {t: math.log(1 + len(found) / n) for t in wanted if (n := sum(t in p for p in present))}
    if not weight:
        return anchor
    hits = [sum(weight[t] for t in p) for p in present]
    return max(range(len(found)), key=lambda i: (hits[i], -abs(i - anchor)))

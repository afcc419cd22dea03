"""Acronyms the corpus defines itself, so a question using either form finds the passage using the other.

Why: people write "DPA" where a policy says "data processing agreement", and the other way round. A sentence
embedding may or may not know an acronym; BM25 only counts the words typed. Help centres define their acronyms
once, in parentheses: "Data Processing Agreement (DPA)", "RPO (recovery point objective)". Those definitions are
mined from the indexed chunks (titles and headings included) with the Schwartz & Hearst rule, a well-known one
for biomedical text: the short form is one token of 2 to 10 characters with at least two capitals, its letters
appear in order in the long form, and its first letter starts a word of it. No hand-written list: what the
corpus defines is what is expanded.

At query time (`Glossary.expand`) a question naming the short form also gets the long form's terms, and a
question with every term of the long form also gets the short form, for BM25 only: the embedding, and with it
routing, is untouched. The table is kept with the lexical index of each agent and merged across agents, since
a definition in one agent's documents names the same thing in another's.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping

from knowledge.analysis import terms

_PARENTHESIS = re.compile(r"\(([^()\n]{1,80})\)")
_SHORT = re.compile(r"[A-Za-z][A-Za-z0-9&-]{1,9}")
_BOUNDARY = re.compile(r"[.;:!?\n|(>]")  # a long form stays in its sentence, table cell, parenthesis or heading
_WORD = re.compile(r"[^\W_][\w'-]*")
_REACH = 200  # characters before a parenthesis searched for its long form (ten words and more)


def _is_short_form(token: str) -> bool:
    return bool(_SHORT.fullmatch(token)) and sum(c.isupper() for c in token) >= 2


def _long_form(short: str, words: list[str]) -> str | None:
    """The shortest tail of `words` that defines `short` (Schwartz & Hearst): scanning both from the end, each
    letter of the short form is found in order, the first one at the start of a word."""
    letters = [c for c in short.lower() if c.isalnum()]
    text = " ".join(words).lower()
    at = len(text) - 1
    for position in range(len(letters) - 1, -1, -1):
        wanted = letters[position]
        while at >= 0 and (text[at] != wanted or (position == 0 and at > 0 and text[at - 1].isalnum())):
            at -= 1
        if at < 0:
            return None
        at -= 1
    start = text.rfind(" ", 0, at + 1) + 1
    found = text[start:].strip().split()
    return " ".join(found) if len(found) >= 2 and short.lower() not in found else None


def mine(text: str) -> list[tuple[str, str]]:
    """(short form, long form) pairs defined in `text`, in either order: "long form (SF)" or "SF (long form)"."""
    plain = text.replace("*", "").replace("`", "")
    found: list[tuple[str, str]] = []
    for match in _PARENTHESIS.finditer(plain):
        inside = match.group(1).strip()
        before = _BOUNDARY.split(plain[max(0, match.start() - _REACH): match.start()])[-1]
        words = _WORD.findall(before)
        if _is_short_form(inside) and words:
            window = words[-min(len(inside) + 5, 2 * len(inside)):]
            long = _long_form(inside, window)
            if long:
                found.append((inside, long))
        elif words and _is_short_form(words[-1]):
            inner = _WORD.findall(inside)
            long = _long_form(words[-1], inner) if 2 <= len(inner) <= 2 * len(words[-1]) else None
            if long and long == " ".join(inner).lower():  # the whole parenthesis is the definition
                found.append((words[-1], long))
    return found


class Glossary:
    """Short form ↔ long form, as index terms (`knowledge.analysis`): {"dpa": ("data", "process", "agreement")}.
    Immutable once built; an acronym defined two ways keeps the definition the corpus uses most."""

    def __init__(self, entries: Mapping[str, tuple[str, ...]]) -> None:
        self.entries: dict[str, tuple[str, ...]] = dict(entries)
        self._by_first: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
        for short, long in self.entries.items():
            self._by_first.setdefault(long[0], []).append((short, long))

    @classmethod
    def of(cls, texts: Iterable[str]) -> Glossary:
        counts: Counter[tuple[str, tuple[str, ...]]] = Counter()
        for text in texts:
            for short, long in mine(text):
                short_terms, long_terms = terms(short), tuple(terms(long))
                if len(short_terms) == 1 and len(long_terms) >= 2:
                    counts[(short_terms[0], long_terms)] += 1
        entries: dict[str, tuple[str, ...]] = {}
        for (short, long), _ in counts.most_common():
            entries.setdefault(short, long)
        return cls(entries)

    @classmethod
    def merge(cls, glossaries: Iterable[Glossary]) -> Glossary:
        entries: dict[str, tuple[str, ...]] = {}
        for glossary in glossaries:
            for short, long in glossary.entries.items():
                entries.setdefault(short, long)
        return cls(entries)

    def __len__(self) -> int:
        return len(self.entries)

    def expand(self, query: tuple[str, ...]) -> tuple[str, ...]:
        """The query's terms, then the other form of every acronym it uses (each term once)."""
        present = set(query)
        extra: list[str] = []
        for term in query:
            if (long := self.entries.get(term)) is not None:
                extra.extend(long)
            for short, long in self._by_first.get(term, ()):
                if present.issuperset(long):
                    extra.append(short)
        return query + tuple(t for t in dict.fromkeys(extra) if t not in present)

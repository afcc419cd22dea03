"""Hybrid re-ranking: vector similarity plus a light lexical signal.

Dense embeddings miss exact identifiers ("E1008", "lum_test", "SCIM") and are weak on tables; users type
exactly those. We fetch a few more candidates than asked for by vector search, then add a bonus for query terms
that occur in the passage (its title and heading included), weighted by how rare each term is in the
collection (IDF), and re-sort. Pure functions; the store keeps the IDF table.

Speed: the same passages come back for many questions, so a passage's term set is cached by its text (stemming
ten candidates per agent was a third of a routing decision's time), and the IDF default is computed once per
re-rank, not once per passage.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

from knowledge.types import Passage

LEXICAL_WEIGHT = 0.12
TITLE_WEIGHT = 0.08
_WORD = re.compile(r"[a-z0-9][a-z0-9_\-]*[a-z0-9]|[a-z0-9]")
STOPWORDS = frozenset(
    "a an and are as at be but by can could do does did for from get got has have how i if in into is it its "
    "me my no not of on or our please should so than that the their them then there these they this to up us "
    "was we what when where which who why will with would you your yours i'm it's we're what's whats".split()
)


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def terms(text: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


@functools.lru_cache(maxsize=16_384)
def term_set(text: str) -> frozenset[str]:
    """The distinct terms of a text (cached: passages recur across questions)."""
    return frozenset(terms(text))


def idf_table(documents: Iterable[str]) -> dict[str, float]:
    frequency: Counter[str] = Counter()
    total = 0
    for document in documents:
        total += 1
        frequency.update(set(terms(document)))
    return {term: math.log(1 + (total - n + 0.5) / (n + 0.5)) for term, n in frequency.items()}


def lexical_score(query_terms: Sequence[str], passage: Passage, idf: dict[str, float],
                  default_idf: float | None = None) -> float:
    """Share of the query's IDF mass found in the passage, in [0, 1]."""
    if not query_terms:
        return 0.0
    present = term_set(f"{passage.title} {passage.heading} {passage.text}")
    default = max(idf.values(), default=1.0) if default_idf is None else default_idf
    weights = {t: idf.get(t, default) for t in set(query_terms)}
    total = sum(weights.values())
    return sum(w for t, w in weights.items() if t in present) / total if total else 0.0


def title_score(query_terms: Sequence[str], passage: Passage) -> float:
    """Share of the document title's words the question uses: help-centre titles name their topic."""
    title_terms = term_set(passage.title)
    return len(title_terms & set(query_terms)) / len(title_terms) if title_terms else 0.0


def rerank(query: str, candidates: Sequence[Passage], idf: dict[str, float], k: int) -> list[Passage]:
    query_terms = terms(query)
    default_idf = max(idf.values(), default=1.0)
    scored = [
        (
            p.score
            + LEXICAL_WEIGHT * lexical_score(query_terms, p, idf, default_idf)
            + TITLE_WEIGHT * title_score(query_terms, p),
            p,
        )
        for p in candidates
    ]
    scored.sort(key=lambda pair: pair[0], reverse=True)
    return [p for _, p in scored[:k]]

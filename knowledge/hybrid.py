"""Hybrid ranking: the cosine similarity of a chunk and its BM25 score for the question, fused.

The candidates are the union of the best chunks by cosine similarity (the store's vector search) and the best by
BM25 (`knowledge.lexical`), so a chunk only the exact words find still competes. A chunk found only by BM25 gets
its cosine from its stored vector (kept in the snapshot), so every passage's `score` stays its cosine similarity,
whatever ranked it.

Fusion is a weighted sum, calibrated on `eval/retrieval.tsv` (the hold-out sets were written afterwards):

    relevance = cosine + weight * bm25 / (best bm25 among the candidates)
                + VIEW_WEIGHT * cosine(question, section view) - LEAD_HANDICAP * (chunk is a document's lead)

with `weight` LEXICAL_WEIGHT, or IDENTIFIER_WEIGHT for a question naming an identifier (`lexical_weight`).
The tuning set is indifferent to IDENTIFIER_WEIGHT between 0.1 and 0.5 (its questions with identifiers rank
first either way); 0.30 is what puts the section named by a bare error code ("E1008") first. The section view
and the lead are `knowledge.views`; BM25 sees the question's terms plus the other form of any acronym the
corpus defines (`knowledge.acronyms`). On the 119 tuning questions, MRR@5 is flat for VIEW_WEIGHT 0.1 to 0.2
and LEAD_HANDICAP 0.06 to 0.10 (0.90 without either, 0.93 with both); larger view weights start to let a
well-named but unrelated section win.

BM25 is scaled by the best candidate's so that its weight does not move with the corpus or the question's
length; the cosine keeps its own scale, so a strong semantic match is not outvoted by one shared word.
Reciprocal-rank fusion was measured too and ranked worse on the tuning set (top-1 0.90 against 0.93 at
best): it throws away how far apart two cosines are. Because `relevance` stays on the cosine's scale, the
candidates of several agents fused together rank across agents (`KnowledgeStore.search_all`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from knowledge.acronyms import Glossary
from knowledge.analysis import query_terms
from knowledge.lexical import LexicalSnapshot
from knowledge.types import Passage

LEXICAL_POOL = 10  # best BM25 chunks added to the vector candidates
LEXICAL_WEIGHT = 0.10  # the best BM25 candidate's bonus, on the cosine's scale
IDENTIFIER_WEIGHT = 0.30  # ... when the question names an identifier (E1008, lum_test, v1, S3, 99.95)
VIEW_WEIGHT = 0.10  # times the cosine of the question and the chunk's section view ("title: heading")
LEAD_HANDICAP = 0.08  # taken off a document's lead (its overview, before the first section)
_IDENTIFIER = re.compile(r"[0-9_./]")


@dataclass(slots=True)  # not frozen: a frozen dataclass sets each field through `object.__setattr__`, and every
class Candidate:  # probe builds ~20 of these, most of them thrown away by `fuse` (treat them as read-only)
    passage: Passage  # score = cosine similarity
    lexical: float  # BM25 (0.0: no query term in it)
    best: float = 0.0  # the best BM25 the question reached in the candidate's collection (the scale)
    snapshot: LexicalSnapshot | None = None
    position: int | None = None  # in the snapshot, for its section
    view: float = 0.0  # cosine of the question and the chunk's section view
    lead: bool = False  # the chunk is its document's lead


def candidates(
    agent: str,
    query: str,
    vector: np.ndarray,
    found: Sequence[Passage],
    snapshot: LexicalSnapshot,
    pool: int = LEXICAL_POOL,
    glossary: Glossary | None = None,
) -> list[Candidate]:
    """The vector search's passages (`found`) plus the `pool` best BM25 chunks of the agent's snapshot, each
    with its cosine similarity, its BM25 (acronyms expanded with `glossary`, default the snapshot's own) and
    its section view's cosine."""
    terms = (snapshot.glossary if glossary is None else glossary).expand(query_terms(query))
    scores = snapshot.scores(terms) if terms and len(snapshot) else None
    top = snapshot.top(scores, pool) if scores is not None else []
    best = top[0][1] if top else 0.0
    positions = [snapshot.by_text.get((passage.source, passage.text)) for passage in found]
    seen = {position for position in positions if position is not None}
    extra = [(position, bm25) for position, bm25 in top if position not in seen]
    known = [position for position in positions if position is not None] + [position for position, _ in extra]
    query_vector = np.asarray(vector, dtype=np.float32)
    query_vector = query_vector / (float(np.linalg.norm(query_vector)) or 1.0)
    views = dict(zip(known, (snapshot.views[known] @ query_vector).tolist(), strict=True)) if known else {}

    def candidate(passage: Passage, position: int | None, bm25: float) -> Candidate:
        if position is None:
            return Candidate(passage, bm25, best, snapshot, None)
        return Candidate(passage, bm25, best, snapshot, position, views[position], bool(snapshot.leads[position]))

    out = [candidate(passage, position, float(scores[position]) if scores is not None and position is not None
                     else 0.0) for passage, position in zip(found, positions, strict=True)]
    if extra:
        cosines = snapshot.vectors[[position for position, _ in extra]] @ query_vector
        for (position, bm25), cosine in zip(extra, cosines, strict=True):
            record = snapshot.records[position]
            passage = Passage(record.text, record.source, record.title, record.heading, agent, float(cosine))
            out.append(candidate(passage, position, bm25))
    return out


def lexical_weight(query: str) -> float:
    """How much BM25 counts for this question. An identifier (a term with a digit, `_`, `.` or `/`) is
    opaque to a sentence embedding: "E1008" and "E1009" are the same noise to it, so its cosines say little
    and the exact match decides. Hyphenated words ("sign-on") are ordinary words, not identifiers."""
    return IDENTIFIER_WEIGHT if any(_IDENTIFIER.search(t) for t in query_terms(query)) else LEXICAL_WEIGHT


def _fused(candidate: Candidate, best: float, weight: float) -> float:
    value = candidate.passage.score + VIEW_WEIGHT * candidate.view - LEAD_HANDICAP * candidate.lead
    return value + weight * candidate.lexical / best if best > 0 else value


def fuse(pool: Sequence[Candidate], k: int, weight: float = LEXICAL_WEIGHT) -> list[Passage]:
    """The k best candidates by fused relevance (`weight` from `lexical_weight`), as passages carrying
    `relevance` and their section. Several collections' candidates fused together share one BM25 scale: the
    best any of them reached."""
    if not pool:
        return []
    best = max(c.best for c in pool)
    ranked = sorted(
        ((_fused(c, best, weight), c) for c in pool),
        key=lambda pair: (-pair[0], -pair[1].passage.score),
    )
    chosen = []
    for value, candidate in ranked[:k]:
        section = None
        if candidate.snapshot is not None and candidate.position is not None:
            section = candidate.snapshot.section(candidate.position)
        chosen.append(replace(candidate.passage, relevance=round(value, 6), section=section))
    return chosen

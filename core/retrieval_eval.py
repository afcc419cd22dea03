"""Retrieval evaluation: does the passage that answers a question come first?

A support bot is judged by whether it quotes the right paragraph, so retrieval is measured on its own, apart
from routing: each question is asked of the agent that owns the expected document, and we record where the first
passage from that document (and, when the case names one, from that section) lands in the top five. Reported:
top-1 and top-3 (share of questions answered at rank 1, within rank 3) and MRR@5 (mean of 1/rank, 0 past
five), overall and per agent, with the misses listed so a regression names its question.

The cases file is a TSV with the header `source<TAB>question`; `source` is the document's path as ingested
(`policy/gdpr.md`), optionally followed by `#Heading` (`policy/cookies-and-data-residency.md#Data residency`)
when one section of the document is the answer. Pure functions: the caller supplies the retrieval.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.evaluation import tsv_rows
from knowledge.types import Passage

DEPTH = 5  # MRR@5: a passage below fifth place is not one a reader (or a prompt) will use


class RetrievalCasesError(ValueError):
    """The cases file is not `source<TAB>question` with a header row."""


@dataclass(frozen=True, slots=True)
class RetrievalCase:
    source: str  # the expected document, e.g. "billing/refunds.md"
    heading: str  # the expected section ("" when any section of the document will do)
    question: str

    @property
    def expected(self) -> str:
        return f"{self.source}#{self.heading}" if self.heading else self.source


@dataclass(frozen=True, slots=True)
class RetrievalOutcome:
    case: RetrievalCase
    agent: str
    rank: int | None  # 1-based position of the first matching passage within DEPTH, None when absent
    found: tuple[str, ...]  # "source#heading" of the passages returned, best first (for the misses list)


@dataclass(frozen=True, slots=True)
class Metrics:
    questions: int
    top1: float
    top3: float
    mrr: float  # MRR@DEPTH

    def to_json(self) -> dict[str, float | int]:
        return {"questions": self.questions, "top1": self.top1, "top3": self.top3, "mrr5": self.mrr}


@dataclass(frozen=True, slots=True)
class RetrievalReport:
    overall: Metrics
    per_agent: dict[str, Metrics]
    items: tuple[RetrievalOutcome, ...]

    @property
    def misses(self) -> list[RetrievalOutcome]:
        """Questions whose expected passage is not first."""
        return [item for item in self.items if item.rank != 1]

    def to_json(self) -> dict[str, object]:
        return {
            **self.overall.to_json(),
            "per_agent": {agent: m.to_json() for agent, m in self.per_agent.items()},
            "misses": [
                {"question": m.case.question, "expected": m.case.expected, "agent": m.agent, "rank": m.rank,
                 "found": list(m.found)}
                for m in self.misses
            ],
        }


def load_cases(path: Path) -> list[RetrievalCase]:
    rows: list[RetrievalCase] = []
    for number, row in tsv_rows(path, ("source", "question"), RetrievalCasesError):
        if len(row) != 2 or not row[1].strip():
            raise RetrievalCasesError(f"{path}:{number}: expected 'source<TAB>question', found {row!r}.")
        source, _, heading = row[0].strip().partition("#")
        rows.append(RetrievalCase(source.strip(), heading.strip(), row[1].strip()))
    if not rows:
        raise RetrievalCasesError(f"{path}: no questions found.")
    return rows


def matches(case: RetrievalCase, passage: Passage) -> bool:
    """The passage is from the expected document and, when the case names a section, from that section: one
    of the parts of the passage's heading path ("Cookies and data residency > Data residency") is it."""
    if passage.source != case.source:
        return False
    if not case.heading:
        return True
    wanted = case.heading.casefold()
    return any(part.strip().casefold() == wanted for part in passage.heading.split(" > "))


def rank_of(case: RetrievalCase, passages: Sequence[Passage]) -> int | None:
    for position, passage in enumerate(passages[:DEPTH], start=1):
        if matches(case, passage):
            return position
    return None


def evaluate(
    cases: Sequence[RetrievalCase],
    agent_of: Mapping[str, str],
    retrieve: Callable[[str, str, int], list[Passage]],
) -> RetrievalReport:
    """Ask each question of the agent owning its expected document (`agent_of`: source → agent, as ingested)
    and score the ranks. A case whose document is not in the knowledge base is an error, not a miss: the
    file and the store disagree, and a score over that would mislead."""
    unknown = sorted({c.source for c in cases if c.source not in agent_of})
    if unknown:
        raise RetrievalCasesError(
            f"not in the knowledge base: {', '.join(unknown)}; ingest them or correct the cases file."
        )
    outcomes = []
    for case in cases:
        agent = agent_of[case.source]
        passages = retrieve(agent, case.question, DEPTH)
        found = tuple(f"{p.source}#{p.heading}" for p in passages[:DEPTH])
        outcomes.append(RetrievalOutcome(case, agent, rank_of(case, passages), found))
    return score(outcomes)


def metrics(outcomes: Sequence[RetrievalOutcome]) -> Metrics:
    n = len(outcomes)
    if not n:
        return Metrics(0, 0.0, 0.0, 0.0)
    ranks = [o.rank for o in outcomes]
    return Metrics(
        questions=n,
        top1=sum(r == 1 for r in ranks) / n,
        top3=sum(r is not None and r <= 3 for r in ranks) / n,
        mrr=sum(1 / r for r in ranks if r is not None) / n,
    )


def score(outcomes: Sequence[RetrievalOutcome]) -> RetrievalReport:
    agents = sorted({o.agent for o in outcomes})
    per_agent = {agent: metrics([o for o in outcomes if o.agent == agent]) for agent in agents}
    return RetrievalReport(metrics(outcomes), per_agent, tuple(outcomes))

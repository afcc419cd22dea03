"""Value types shared by ingestion, retrieval and the agents."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Section:
    """The whole section a retrieved chunk sits in (its heading path and text, subsections included), for a
    reader to be shown instead of a fragment when it fits the budget (`knowledge.sections`)."""

    heading: str
    text: str


@dataclass(frozen=True, slots=True)
class Passage:
    """One retrieved chunk. `score` is cosine similarity in [-1, 1]; higher is closer. Routing and the source
    thresholds compare it, so it keeps that meaning whatever ranked the passage.

    `relevance` is the hybrid score the passages were ordered by (the cosine plus weighted BM25 and
    section-view bonuses, less a lead handicap: `knowledge.hybrid`), on the cosine's scale and comparable across agents; 0.0 when no hybrid retrieval
    ranked the passage. `section` is the enclosing section when it is longer than the chunk and fits the
    budget, else None."""

    text: str
    source: str  # path relative to the corpus root
    title: str
    heading: str
    agent: str
    score: float
    relevance: float = 0.0
    section: Section | None = None

    @property
    def shown(self) -> Section:
        """What to show a reader: the whole section when there is one, else the chunk."""
        return self.section or Section(self.heading, self.text)


@dataclass(frozen=True, slots=True)
class CachedContext:
    """Whole documents an agent keeps in its prompt (CAG), in a stable order so the prefix caches."""

    text: str
    tokens: int
    sources: tuple[str, ...] = field(default_factory=tuple)

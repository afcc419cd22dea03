"""Value types shared by ingestion, retrieval and the agents."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Passage:
    """One retrieved chunk. `score` is cosine similarity in [-1, 1]; higher is closer."""

    text: str
    source: str  # path relative to the corpus root
    title: str
    heading: str
    agent: str
    score: float


@dataclass(frozen=True, slots=True)
class CachedContext:
    """Whole documents an agent keeps in its prompt (CAG), in a stable order so the prefix caches."""

    text: str
    tokens: int
    sources: tuple[str, ...] = field(default_factory=tuple)

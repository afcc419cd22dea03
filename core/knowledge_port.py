"""What the core needs from the knowledge base, as a protocol, so the brain can be tested with any store.

`knowledge/` provides the real implementation (Chroma retrieval and cached documents); the core never imports
Chroma itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from knowledge.types import Passage


@dataclass(frozen=True, slots=True)
class CachedContext:
    """Whole documents an agent keeps in its prompt (CAG), in a stable order so the prefix caches."""

    text: str
    tokens: int
    sources: tuple[str, ...] = field(default_factory=tuple)


class KnowledgeBase(Protocol):
    def retrieve(self, agent: str, query: str, k: int) -> list[Passage]:
        """Top-k passages from the agent's collection, best first."""

    def cached_context(self, agent: str) -> CachedContext | None:
        """The agent's cached documents, or None when it keeps none."""

"""What the core needs from the knowledge base, as a protocol, so the brain can be tested with any store.

`knowledge/` provides the real implementation (Chroma retrieval and cached documents) and owns the value types
(`Passage`, `CachedContext`); the core never imports Chroma itself, and `knowledge/` never imports the core.
"""

from __future__ import annotations

from typing import Protocol

from knowledge.types import CachedContext, Passage

__all__ = ["CachedContext", "KnowledgeBase", "Passage"]


class KnowledgeBase(Protocol):
    def retrieve(self, agent: str, query: str, k: int) -> list[Passage]:
        """Top-k passages from the agent's collection, best first."""

    def cached_context(self, agent: str) -> CachedContext | None:
        """The agent's cached documents, or None when it keeps none."""

    def counts(self) -> dict[str, int]:
        """Chunks per agent (for health and start-up checks)."""

"""The knowledge base the core asks for (it satisfies `core.knowledge_port.KnowledgeBase` structurally):
retrieval plus cached documents, over the Chroma store. `settings` is duck-typed: any object with the fields
read here (`chroma_*`, `data_dir`, `cag_token_budget`, `agents_file`), so this package needs nothing from the core."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from knowledge.agents import AgentRegistry, load_agents
from knowledge.cag import CacheBudgetExceeded, CachedDocumentSet
from knowledge.embeddings import Embedder
from knowledge.store import LEXICAL_DIR, KnowledgeStore, open_chroma_client
from knowledge.types import CachedContext, Passage

log = logging.getLogger(__name__)


class LocalKnowledgeBase:
    def __init__(self, store: KnowledgeStore, cached: CachedDocumentSet) -> None:
        self.store = store
        self._cached = cached

    def retrieve(self, agent: str, query: str, k: int) -> list[Passage]:
        return self.store.retrieve(agent, query, k)

    def cached_context(self, agent: str) -> CachedContext | None:
        try:
            documents = self._cached.cached_documents(agent)
        except CacheBudgetExceeded as exc:
            # The agent still answers, from retrieval; the operator learns why from the log.
            log.warning("%s", exc)
            return None
        if documents is None:
            return None
        return CachedContext(documents.text, documents.tokens, documents.sources)

    def counts(self) -> dict[str, int]:
        return self.store.counts()


def open_store(settings: Any, embedder: Embedder, agents: AgentRegistry | None = None) -> KnowledgeStore:
    """The store with one collection per agent: `agents`, else those of `settings.agents_file` (None: the
    shipped agents file). Raises `AgentsFileError` for a bad agents file."""
    agents = agents if agents is not None else load_agents(getattr(settings, "agents_file", None))
    return KnowledgeStore(open_chroma_client(settings), embedder, agents.names, lexical_dir=lexical_dir(settings))


def lexical_dir(settings: Any) -> Path:
    """Where the BM25 index of each agent is kept: beside the vectors, in the data directory."""
    return Path(settings.data_dir) / LEXICAL_DIR


def open_knowledge_base(
    settings: Any, embedder: Embedder, agents: AgentRegistry | None = None
) -> LocalKnowledgeBase:
    """The knowledge base a server answers from. Its BM25 indexes are loaded (or rebuilt from the store, when
    missing or stale) here, at start-up, rather than by the first question."""
    agents = agents if agents is not None else load_agents(getattr(settings, "agents_file", None))
    store = open_store(settings, embedder, agents)
    store.sync_lexical()
    return LocalKnowledgeBase(store, CachedDocumentSet(store, settings.cag_token_budget, agents=agents))

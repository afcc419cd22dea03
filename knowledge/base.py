"""The knowledge base as the core sees it (`core.knowledge_port.KnowledgeBase`): retrieval plus cached
documents, over the Chroma store."""

from __future__ import annotations

import logging
from typing import Any

from core.knowledge_port import CachedContext
from knowledge.cag import CacheBudgetExceeded, CachedDocumentSet
from knowledge.embeddings import Embedder
from knowledge.store import KnowledgeStore, open_chroma_client
from knowledge.types import Passage

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


def open_store(settings: Any, embedder: Embedder) -> KnowledgeStore:
    return KnowledgeStore(open_chroma_client(settings), embedder)


def open_knowledge_base(settings: Any, embedder: Embedder) -> LocalKnowledgeBase:
    store = open_store(settings, embedder)
    return LocalKnowledgeBase(store, CachedDocumentSet(store, settings.cag_token_budget))

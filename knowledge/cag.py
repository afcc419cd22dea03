"""Cached documents (CAG): the whole documents an agent keeps in its prompt.

Small, stable documents (all of policy, the pricing sheet for billing) are cheaper and more faithful in the
prompt than retrieved in pieces. They are concatenated in a fixed order with fixed separators, so the prompt
prefix is byte-identical across calls and OpenAI-style prompt caching applies. Their size is counted in tokens
(the local tokenizer; no tiktoken, which downloads its tables at run time) and held to a budget.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from knowledge.loaders import UnreadableFile, load_document
from knowledge.store import KnowledgeStore


class CacheBudgetExceeded(RuntimeError):
    """An agent's cached documents are larger than the configured token budget."""


@dataclass(frozen=True, slots=True)
class CachedDocuments:
    text: str
    tokens: int
    sources: tuple[str, ...]


def approximate_tokens(text: str) -> int:
    """Fallback when no tokenizer is at hand: about four characters a token for English prose."""
    return (len(text) + 3) // 4


class CachedDocumentSet:
    """Builds and memoises each agent's cached documents; rebuilt when the files' hashes change."""

    def __init__(self, store: KnowledgeStore, budget_tokens: int, count_tokens: Callable[[str], int] | None = None):
        self._store = store
        self._budget = budget_tokens
        self._count = count_tokens or getattr(store.embedder, "count_tokens", None) or approximate_tokens
        self._memo: dict[str, tuple[tuple[str, ...], CachedDocuments]] = {}
        self._lock = threading.Lock()

    def cached_documents(self, agent: str) -> CachedDocuments | None:
        """The agent's cached documents, or None when it keeps none. Raises `CacheBudgetExceeded`."""
        located = self._store.cached_sources(agent)
        if not located:
            return None
        documents = []
        for root, source in located:
            path = Path(root) / source
            try:
                document = load_document(path, Path(root))
            except (OSError, UnreadableFile):
                continue  # gone since ingestion; the next ingest removes its chunks
            if document is not None:
                documents.append(document)
        key = tuple(f"{d.source}:{d.content_hash}" for d in documents)
        with self._lock:
            memo = self._memo.get(agent)
            if memo and memo[0] == key:
                return memo[1]
        text = "\n\n".join(f"### Source: {d.source} — {d.title}\n\n{d.text}" for d in documents)
        tokens = self._count(text)
        if tokens > self._budget:
            raise CacheBudgetExceeded(
                f"The {agent} agent's cached documents are {tokens:,} tokens, over the budget of "
                f"{self._budget:,}. Raise CAG_TOKEN_BUDGET, or remove `cache: true` from some of them so "
                "they are retrieved instead."
            )
        result = CachedDocuments(text, tokens, tuple(d.source for d in documents))
        with self._lock:
            self._memo[agent] = (key, result)
        return result

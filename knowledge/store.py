"""The vector store: one Chroma collection per agent, cosine distance, embeddings computed by us.

Chroma never embeds anything itself (no default model download): we pass vectors in and out. The embedding
model's name and dimension are recorded in each collection's metadata, and reopening with another model is a
clear error instead of silently comparing vectors from two different spaces.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from knowledge.chunking import Chunk
from knowledge.embeddings import Embedder
from knowledge.loaders import AGENT_NAMES
from knowledge.rerank import idf_table, rerank
from knowledge.types import Passage

COLLECTION_PREFIX = "switchboard_"


class EmbeddingMismatchError(RuntimeError):
    """The store was built with another embedding model than the one configured now."""


def open_chroma_client(settings: Any) -> Any:
    """`PersistentClient` under the data directory, or `HttpClient` when CHROMA_HOST is set."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.chroma_host:
        return chromadb.HttpClient(host=settings.chroma_host, port=settings.chroma_port, settings=chroma_settings)
    settings.chroma_dir.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(settings.chroma_dir), settings=chroma_settings)


class KnowledgeStore:
    """Chunks and their vectors, per agent. Thread-safe: the core queries it from worker threads."""

    def __init__(self, client: Any, embedder: Embedder, agents: Sequence[str] = AGENT_NAMES) -> None:
        self._client = client
        self.embedder = embedder
        self._lock = threading.RLock()
        self._collections = {agent: self._open(agent) for agent in agents}
        self._idf: dict[str, dict[str, float]] = {}

    def _open(self, agent: str) -> Any:
        name = COLLECTION_PREFIX + agent
        existing = {c.name if hasattr(c, "name") else str(c) for c in self._client.list_collections()}
        if name in existing:
            collection = self._client.get_collection(name, embedding_function=None)
            recorded = (collection.metadata or {}).get("embedding_model")
            if recorded and recorded != self.embedder.name and collection.count() > 0:
                raise EmbeddingMismatchError(
                    f"The knowledge store was built with the embedding model {recorded!r}, but "
                    f"{self.embedder.name!r} is configured now. Rebuild it with `switchboard ingest --rebuild`, "
                    "or set EMBEDDING_PROVIDER back to the model the store was built with."
                )
            return collection
        return self._client.create_collection(
            name,
            embedding_function=None,
            configuration={"hnsw": {"space": "cosine"}},
            metadata={"embedding_model": self.embedder.name, "agent": agent},
        )

    @property
    def agents(self) -> list[str]:
        return list(self._collections)

    def count(self, agent: str | None = None) -> int:
        with self._lock:
            if agent is not None:
                return self._collections[agent].count()
            return sum(c.count() for c in self._collections.values())

    def counts(self) -> dict[str, int]:
        return {agent: self.count(agent) for agent in self._collections}

    def is_empty(self) -> bool:
        return self.count() == 0

    # --- writing ---------------------------------------------------------------------------------------------
    def file_hashes(self) -> dict[str, tuple[str, str, str]]:
        """source → (agent, content hash, corpus root) for every ingested file."""
        hashes: dict[str, tuple[str, str, str]] = {}
        with self._lock:
            for agent, collection in self._collections.items():
                got = collection.get(include=["metadatas"])
                for meta in got["metadatas"] or []:
                    hashes[str(meta["source"])] = (agent, str(meta["content_hash"]), str(meta.get("root", "")))
        return hashes

    def cached_sources(self, agent: str) -> list[tuple[str, str]]:
        """(root, source) of the documents marked `cache: true` for an agent, in a stable order."""
        with self._lock:
            got = self._collections[agent].get(where={"cache": True}, include=["metadatas"])
        return sorted({(str(m.get("root", "")), str(m["source"])) for m in got["metadatas"] or []},
                      key=lambda pair: pair[1])

    def chunk_ids(self, agent: str) -> list[str]:
        with self._lock:
            return list(self._collections[agent].get(include=[])["ids"])

    def remove_source(self, source: str) -> int:
        """Delete every chunk of one file, in whatever collection it is; returns how many."""
        removed = 0
        with self._lock:
            for collection in self._collections.values():
                ids = collection.get(where={"source": source}, include=[])["ids"]
                if ids:
                    collection.delete(ids=ids)
                    removed += len(ids)
            self._idf.clear()
        return removed

    def add_chunks(self, chunks: Sequence[Chunk], vectors: np.ndarray, roots: Sequence[str] | None = None) -> None:
        by_agent: dict[str, list[int]] = {}
        for position, chunk in enumerate(chunks):
            by_agent.setdefault(chunk.agent, []).append(position)
        with self._lock:
            self._idf.clear()
            for agent, positions in by_agent.items():
                self._collections[agent].upsert(
                    ids=[chunks[i].id for i in positions],
                    embeddings=vectors[positions],
                    documents=[chunks[i].text for i in positions],
                    metadatas=[
                        {
                            "source": chunks[i].source,
                            "title": chunks[i].title,
                            "heading": chunks[i].heading,
                            "agent": agent,
                            "index": chunks[i].index,
                            "content_hash": chunks[i].content_hash,
                            "root": roots[i] if roots else "",
                            "cache": chunks[i].cache,
                        }
                        for i in positions
                    ],
                )

    def clear(self) -> None:
        with self._lock:
            for agent in list(self._collections):
                self._client.delete_collection(COLLECTION_PREFIX + agent)
                self._collections[agent] = self._open(agent)

    # --- reading ---------------------------------------------------------------------------------------------
    def search(self, agent: str, vector: np.ndarray, k: int) -> list[Passage]:
        """Top-k passages by cosine similarity to an already-embedded query."""
        collection = self._collections[agent]
        with self._lock:
            total = collection.count()
            if total == 0:
                return []
            result = collection.query(
                query_embeddings=[np.asarray(vector, dtype=np.float32)],
                n_results=min(k, total),
                include=["documents", "metadatas", "distances"],
            )
        return [
            Passage(
                text=text,
                source=str(meta["source"]),
                title=str(meta["title"]),
                heading=str(meta.get("heading", "")),
                agent=agent,
                score=1.0 - float(distance),
            )
            for text, meta, distance in zip(
                result["documents"][0], result["metadatas"][0], result["distances"][0], strict=True
            )
        ]

    def idf(self, agent: str) -> dict[str, float]:
        """Term rarity in one collection, for the lexical half of hybrid ranking; rebuilt after writes."""
        with self._lock:
            table = self._idf.get(agent)
            if table is None:
                got = self._collections[agent].get(include=["documents", "metadatas"])
                texts = [f"{m.get('title', '')} {m.get('heading', '')} {d}"
                         for d, m in zip(got["documents"] or [], got["metadatas"] or [])]
                table = self._idf[agent] = idf_table(texts)
            return table

    def retrieve(self, agent: str, query: str, k: int) -> list[Passage]:
        """Top-k passages for a question, best first: vector search, then hybrid re-ranking.

        `score` stays the cosine similarity, so thresholds elsewhere keep their meaning."""
        candidates = self.search(agent, self.embedder.embed_query(query), max(k * 3, 10))
        return rerank(query, candidates, self.idf(agent), k)

    def search_all(self, query: str, k: int, agents: Iterable[str] | None = None) -> list[Passage]:
        found = [p for agent in (agents or self._collections) for p in self.retrieve(agent, query, k)]
        return sorted(found, key=lambda p: p.score, reverse=True)[:k]

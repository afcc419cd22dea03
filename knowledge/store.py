"""The vector store: one Chroma collection per agent, cosine distance, embeddings computed by us.

Chroma never embeds anything itself (no default model download): collections are opened with
`embedding_function=None` and we pass vectors in and out. The embedding model's name and dimension are recorded
in each collection's metadata, and reopening with another model is a clear error instead of silently comparing
vectors from two different spaces. One collection per agent, because a metadata filter over one big collection
is far slower than searching a small one.
"""

from __future__ import annotations

import fnmatch
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from knowledge.chunking import Chunk
from knowledge.embeddings import Embedder
from knowledge.agents import default_agent_names
from knowledge import hybrid
from knowledge.acronyms import Glossary
from knowledge.lexical import LexicalIndex, LexicalSnapshot
from knowledge.types import Passage

COLLECTION_PREFIX = "switchboard_"
LEXICAL_DIR = "lexical"  # under the data directory: the BM25 index of each agent (`knowledge.lexical`)
RERANK_POOL = 10  # candidates fetched by vector search before hybrid fusion (at least 3 * k)
FETCH_BATCH = 1_000  # chunk ids per Chroma `get` when the lexical index fetches texts and vectors
# Collections up to this many chunks are searched exactly, in memory, over the unit vectors the lexical snapshot
# keeps anyway (a matrix-vector product: ~0.02 ms for 300 chunks, ~0.5 ms for 10k, and no GIL held), instead of
# a Chroma query (~1-3 ms of CPU each, most of it building the result). Bigger ones use Chroma's HNSW index.
EXACT_SEARCH_MAX = 20_000
REVISION_KEY = "revision"  # collection metadata: a new token on every write, so other processes notice it
FRESHNESS_S = 5.0  # how often a store looks for writes made by another process (`switchboard ingest`, a replica)


class EmbeddingMismatchError(RuntimeError):
    """The store was built with another embedding model than the one configured now."""


def _mismatch(recorded: str, configured: str) -> EmbeddingMismatchError:
    return EmbeddingMismatchError(
        f"The knowledge store was built with the embedding model {recorded}, but {configured} is configured "
        "now, and vectors from two models cannot be compared. Rebuild it with `switchboard ingest --rebuild`, "
        "or set EMBEDDING_PROVIDER back to the model the store was built with."
    )


class StoreUnavailableError(RuntimeError):
    """The Chroma server CHROMA_HOST/CHROMA_PORT name cannot be used. `str()` is one sentence with the fix;
    `problem` and `fix` are its two halves (for `switchboard doctor`), and `public` says what failed without the
    server's address (for `/health`, which anyone may read)."""

    public = "the Chroma server (CHROMA_HOST/CHROMA_PORT) does not answer"

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}; {fix}.")
        self.problem, self.fix = problem, fix


def _unreachable(host: str, port: int) -> StoreUnavailableError:
    return StoreUnavailableError(
        f"The Chroma server at http://{host}:{port} (CHROMA_HOST/CHROMA_PORT) does not answer",
        f"start it (`chroma run --host {host} --port {port} --path <folder>`) or correct CHROMA_HOST/CHROMA_PORT "
        "(unset CHROMA_HOST to use the embedded store)",
    )


def _not_chroma(host: str, port: int, cause: BaseException) -> StoreUnavailableError:
    import chromadb

    first_line = (str(cause).strip().splitlines() or [""])[0][:120]
    error = StoreUnavailableError(
        f"Something answers at http://{host}:{port} (CHROMA_HOST/CHROMA_PORT) but not as a Chroma "
        f"{chromadb.__version__.split('.')[0]}.x server ({type(cause).__name__}: {first_line})",
        "point CHROMA_HOST/CHROMA_PORT at a Chroma server of the same major version as the chromadb package",
    )
    error.public = "the Chroma server (CHROMA_HOST/CHROMA_PORT) does not answer as a Chroma server"
    return error


class _Remote:
    """A Chroma `HttpClient`, or a collection it returned, whose calls turn a lost connection (server stopped,
    restarted, unreachable) into `StoreUnavailableError`. Errors the server itself returns pass through."""

    __slots__ = ("_target", "_host", "_port")

    def __init__(self, target: Any, host: str, port: int) -> None:
        self._target, self._host, self._port = target, host, port

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            import httpx
            from chromadb.api.models.Collection import Collection

            try:
                result = value(*args, **kwargs)
            except httpx.TransportError as exc:
                raise _unreachable(self._host, self._port) from exc
            return _Remote(result, self._host, self._port) if isinstance(result, Collection) else result

        return call


def open_chroma_client(settings: Any) -> Any:
    """`PersistentClient` under the data directory, or `HttpClient` when CHROMA_HOST is set. No telemetry.

    The server is asked who we are when the client opens, so an unreachable server fails here, with
    `StoreUnavailableError` (and so does any later call once the connection is lost)."""
    import chromadb
    import httpx
    from chromadb.config import Settings as ChromaSettings
    from chromadb.errors import ChromaError

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.chroma_host:
        host, port = str(settings.chroma_host), int(settings.chroma_port)
        try:
            client = chromadb.HttpClient(host=host, port=port, settings=chroma_settings)
        except ChromaError:
            raise  # a Chroma server answered and refused (authentication, tenant): its own message says why
        except Exception as exc:  # noqa: BLE001 - chromadb wraps a refused connection in a ValueError
            if isinstance(exc, httpx.TransportError) or isinstance(exc.__context__, httpx.TransportError):
                raise _unreachable(host, port) from exc
            raise _not_chroma(host, port, exc) from exc
        return _Remote(client, host, port)
    settings.chroma_dir.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(settings.chroma_dir), settings=chroma_settings)


class KnowledgeStore:
    """Chunks and their vectors, per agent.

    Thread-safe: the core queries it from worker threads (`asyncio.to_thread`) while an ingestion may write; one
    re-entrant lock serialises access to the collections (a query takes a few milliseconds).

    `check_embedder=False` opens a store built with another model without complaint; only `ingest --rebuild`
    does that, and it clears the store before writing.

    `agents` are the names from the agents file (default: the shipped one's), one collection each; ingestion
    files documents under these names only.

    `lexical_dir` keeps the BM25 index of each agent between processes (`open_store` passes
    `<data dir>/lexical`); None keeps it in memory, built from the collections on first use.

    Writes by other processes (an ingestion from the CLI, another replica on the same Chroma server) are noticed
    within `freshness_s`: every write stamps the collections it touched with a new revision token, and a reader
    that finds a token it did not write bumps `generation`, so the lexical snapshot (and with it the in-memory
    vector search) and the cached documents catch up.
    """

    def __init__(
        self,
        client: Any,
        embedder: Embedder,
        agents: Sequence[str] | None = None,
        *,
        check_embedder: bool = True,
        lexical_dir: Path | None = None,
        freshness_s: float = FRESHNESS_S,
    ) -> None:
        self._client = client
        self.embedder = embedder
        self._check = check_embedder
        self._lock = threading.RLock()
        names = default_agent_names() if agents is None else agents
        self._collections = {agent: self._open(agent) for agent in names}
        # follows `generation`; see `lexical()`. The embedder computes the section views (`knowledge.views`).
        self._lexical = LexicalIndex(lexical_dir, embedder.name, embedder.embed_documents)
        self._glossaries: tuple[int, Glossary] | None = None  # (generation, every agent's acronyms merged)
        self._generation = 0
        self._freshness_s = freshness_s
        self._revisions = {agent: self._revision_of(agent) for agent in self._collections}
        self._checked_at = time.monotonic()

    @property
    def generation(self) -> int:
        """Bumped on every write, ours or (noticed within `freshness_s`) another process's, so derived caches
        (lexical index, cached documents) rebuild."""
        if time.monotonic() - self._checked_at >= self._freshness_s:
            self._notice_outside_writes()
        return self._generation

    # --- collections -----------------------------------------------------------------------------------------
    def _metadata(self, agent: str, dim: int | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"embedding_model": self.embedder.name, "agent": agent}
        if dim is not None:
            meta["embedding_dim"] = dim
        return meta

    def _open(self, agent: str) -> Any:
        name = COLLECTION_PREFIX + agent
        existing = {c.name if hasattr(c, "name") else str(c) for c in self._client.list_collections()}
        if name not in existing:
            # The dimension is recorded at the first write (asking a remote embedder for it costs a request).
            return self._client.create_collection(
                name,
                embedding_function=None,
                configuration={"hnsw": {"space": "cosine"}},
                metadata=self._metadata(agent),
            )
        collection = self._client.get_collection(name, embedding_function=None)
        recorded = (collection.metadata or {}).get("embedding_model")
        if recorded != self.embedder.name:
            if collection.count() == 0:
                # Nothing to compare against yet: the collection now belongs to the configured model.
                collection.modify(metadata=self._metadata(agent))
            elif self._check:
                raise _mismatch(str(recorded), self.embedder.name)
        return collection

    @property
    def agents(self) -> list[str]:
        return list(self._collections)

    def _collection(self, agent: str) -> Any:
        try:
            return self._collections[agent]
        except KeyError:
            raise KeyError(f"unknown agent {agent!r}; the store has {', '.join(self._collections)}") from None

    def count(self, agent: str | None = None) -> int:
        with self._lock:
            if agent is not None:
                return int(self._collection(agent).count())
            return sum(int(c.count()) for c in self._collections.values())

    def counts(self) -> dict[str, int]:
        return {agent: self.count(agent) for agent in self._collections}

    def is_empty(self) -> bool:
        return self.count() == 0

    # --- bookkeeping for incremental ingestion ---------------------------------------------------------------
    def file_hashes(self) -> dict[str, tuple[str, str, str]]:
        """source → (agent, content hash, corpus root) for every ingested file, read from chunk metadata.

        Kept in Chroma itself (not a side manifest) so the bookkeeping can never disagree with the vectors."""
        hashes: dict[str, tuple[str, str, str]] = {}
        with self._lock:
            for agent, collection in self._collections.items():
                got = collection.get(include=["metadatas"])
                for meta in got["metadatas"] or []:
                    hashes[str(meta["source"])] = (agent, str(meta["content_hash"]), str(meta.get("root", "")))
        return hashes

    def cached_sources(self, agent: str, patterns: Sequence[str] = ()) -> list[tuple[str, str]]:
        """(root, source) of an agent's cached documents, sorted by source (a stable order): those marked
        `cache: true` when ingested, and those whose source matches one of `patterns` (the agents file's
        `cached:` globs, applied when read, so editing the list needs no re-ingestion)."""
        with self._lock:
            where = None if patterns else {"cache": True}
            got = self._collection(agent).get(where=where, include=["metadatas"])
        pairs = {
            (str(m.get("root", "")), str(m["source"]))
            for m in got["metadatas"] or []
            if m.get("cache") or any(fnmatch.fnmatchcase(str(m["source"]), p) for p in patterns)
        }
        return sorted(pairs, key=lambda pair: pair[1])

    def chunk_ids(self, agent: str) -> list[str]:
        with self._lock:
            return list(self._collection(agent).get(include=[])["ids"])

    # --- writing ---------------------------------------------------------------------------------------------
    def remove_source(self, source: str) -> int:
        """Delete every chunk of one file, in whatever collection it is; returns how many."""
        removed = 0
        touched: list[str] = []
        with self._lock:
            for agent, collection in self._collections.items():
                ids = collection.get(where={"source": source}, include=[])["ids"]
                if ids:
                    collection.delete(ids=ids)
                    removed += len(ids)
                    touched.append(agent)
            self._changed(touched)
        return removed

    def add_chunks(self, chunks: Sequence[Chunk], vectors: np.ndarray, roots: Sequence[str] | None = None) -> None:
        """Upsert chunks with their (already computed) vectors; `roots[i]` is the corpus folder of chunk i."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        by_agent: dict[str, list[int]] = {}
        for position, chunk in enumerate(chunks):
            by_agent.setdefault(chunk.agent, []).append(position)
        with self._lock:
            for agent, positions in by_agent.items():
                collection = self._collection(agent)
                self._check_dim(agent, collection, int(vectors.shape[1]))
                collection.upsert(
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
            self._changed(by_agent)

    def _check_dim(self, agent: str, collection: Any, dim: int) -> None:
        recorded = (collection.metadata or {}).get("embedding_dim")
        if recorded is None:
            collection.modify(metadata=self._metadata(agent, dim))
        elif int(recorded) != dim:
            raise _mismatch(f"{self.embedder.name} ({recorded} dimensions)", f"a {dim}-dimension model")

    def clear(self) -> None:
        """Drop every collection and start empty (recorded with the configured embedding model)."""
        with self._lock:
            for agent in list(self._collections):
                self._client.delete_collection(COLLECTION_PREFIX + agent)
                self._collections[agent] = self._open(agent)
            self._changed()

    def _changed(self, agents: Iterable[str] | None = None) -> None:
        """After a write: a new generation here, and a new revision token on the collections written, for the
        other processes reading them."""
        for agent in agents if agents is not None else list(self._collections):
            collection = self._collection(agent)
            token = uuid.uuid4().hex
            collection.modify(metadata={**(collection.metadata or {}), REVISION_KEY: token})
            self._revisions[agent] = token
        self._generation += 1

    def _revision_of(self, agent: str) -> str | None:
        collection = self._client.get_collection(COLLECTION_PREFIX + agent, embedding_function=None)
        return (collection.metadata or {}).get(REVISION_KEY)

    def _notice_outside_writes(self) -> None:
        with self._lock:
            self._checked_at = time.monotonic()
            seen = {agent: self._revision_of(agent) for agent in self._collections}
            if seen != self._revisions:
                self._revisions = seen
                self._generation += 1

    # --- reading ---------------------------------------------------------------------------------------------
    def search(self, agent: str, vector: np.ndarray, k: int) -> list[Passage]:
        """Top-k passages by cosine similarity to an already-embedded query, best first.

        `score` = 1 - cosine distance (cosine similarity). Exact, over the lexical snapshot's unit vectors, for a
        collection of up to EXACT_SEARCH_MAX chunks; Chroma's index for a bigger one."""
        snapshot = self.lexical(agent)
        if len(snapshot) <= EXACT_SEARCH_MAX:
            return [
                Passage(text=r.text, source=r.source, title=r.title, heading=r.heading, agent=agent, score=score)
                for r, score in snapshot.nearest(np.asarray(vector, dtype=np.float32), k)
            ]
        with self._lock:
            result = self._collection(agent).query(
                query_embeddings=[np.asarray(vector, dtype=np.float32)],
                n_results=k,
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

    # --- the lexical side (`knowledge.lexical`) -------------------------------------------------------------
    def lexical(self, agent: str) -> LexicalSnapshot:
        """The agent's BM25 snapshot for the current generation: in step with the collection (only chunks
        written since the last sync are tokenised), loaded from the lexical directory or rebuilt from the
        collection when it is missing or stale."""
        self._collection(agent)  # an unknown agent is a KeyError here, as everywhere
        return self._lexical.snapshot(agent, self.generation, lambda: self._chunk_rows(agent),
                                      lambda ids: self._chunk_texts(agent, ids))

    def glossary(self) -> Glossary:
        """The acronyms every agent's documents define, merged: a definition in one agent's documents names the
        same thing in another's. Rebuilt when the generation moves on."""
        generation = self.generation
        cached = self._glossaries
        if cached is None or cached[0] != generation:
            cached = (generation, Glossary.merge(self.lexical(agent).glossary for agent in self._collections))
            self._glossaries = cached
        return cached[1]

    def sync_lexical(self) -> None:
        """Bring every agent's lexical index in line with its collection and save it (ingestion ends here)."""
        for agent in self._collections:
            self._lexical.sync(agent, self.generation, lambda a=agent: self._chunk_rows(a),
                               lambda ids, a=agent: self._chunk_texts(a, ids))

    def _chunk_rows(self, agent: str) -> list[tuple[str, str]]:
        with self._lock:
            got = self._collection(agent).get(include=["metadatas"])
        return [(chunk_id, str(meta.get("content_hash", "")))
                for chunk_id, meta in zip(got["ids"], got["metadatas"] or [], strict=True)]

    def _chunk_texts(self, agent: str, ids: list[str]) -> list[tuple[str, str, dict[str, Any], Any]]:
        """(id, text, metadata, vector) of the given chunks, for the lexical index, in batches."""
        found: list[tuple[str, str, dict[str, Any], Any]] = []
        for start in range(0, len(ids), FETCH_BATCH):
            with self._lock:
                got = self._collection(agent).get(ids=ids[start:start + FETCH_BATCH],
                                                  include=["documents", "metadatas", "embeddings"])
            found.extend(zip(got["ids"], got["documents"], got["metadatas"], got["embeddings"], strict=True))
        return found

    # --- retrieval -------------------------------------------------------------------------------------------
    def retrieve(self, agent: str, query: str, k: int) -> list[Passage]:
        """Top-k passages for a question, best first: vector search and BM25, fused (`knowledge.hybrid`).

        `score` stays the cosine similarity, so thresholds elsewhere keep their meaning; `relevance` is the
        fused score the passages are ordered by; `section` the enclosing section when it fits."""
        return self._retrieve(agent, query, self.embedder.embed_query(query), k)

    def _candidates(self, agent: str, query: str, vector: np.ndarray, k: int) -> list[hybrid.Candidate]:
        found = self.search(agent, vector, max(k * 3, RERANK_POOL))
        if not found:
            return []
        return hybrid.candidates(agent, query, vector, found, self.lexical(agent), glossary=self.glossary())

    def _retrieve(self, agent: str, query: str, vector: np.ndarray, k: int) -> list[Passage]:
        return hybrid.fuse(self._candidates(agent, query, vector, k), k, hybrid.lexical_weight(query))

    def search_all(self, query: str, k: int, agents: Iterable[str] | None = None) -> list[Passage]:
        """The best k passages across agents (the query is embedded once): every agent's candidates fused in
        one ranking, so the order across agents is by the same hybrid relevance as within one."""
        vector = self.embedder.embed_query(query)
        pool = [c for agent in (agents or self._collections) for c in self._candidates(agent, query, vector, k)]
        return hybrid.fuse(pool, k, hybrid.lexical_weight(query))

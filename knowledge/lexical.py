"""The lexical side of hybrid retrieval: a BM25 index per agent, beside its vector collection.

Why: sentence embeddings blur exact terms ("E1008", "SEPA", "DPA", "v1"), and those are what people type. BM25
(`bm25s`, eager sparse scores, so a query is a few array slices) over PyStemmer-stemmed terms
(`knowledge.analysis`) finds them. Each chunk is indexed as two fields, its text and its title plus heading
path, scored separately and added with `HEADING_WEIGHT`: help-centre headings name their topic, and a short
field must not be drowned by a long body. Each chunk's stored vector is kept beside it (unit length), so a
chunk that only BM25 found gets its cosine similarity with one dot product, not a round trip to the store.

Kept in step with the store, incrementally. A snapshot (one agent, one store generation) is immutable, so
queries read it without a lock. When the store's generation moves on, `sync` lists the collection's (chunk id,
file hash) pairs, keeps the records whose hash is unchanged, fetches and tokenises only new or changed chunks,
and rebuilds the BM25 matrices from the kept tokens (milliseconds; tokenising is the costly part). Snapshots are
saved under the data directory (`<data>/lexical/<agent>/`); a process starting up loads them and syncs against
the store, so a missing, unreadable, outdated or foreign index (another embedding model, another format) is
rebuilt from the store, never trusted.

Two things derived from the same chunks are kept with them: the acronyms the chunks define
(`knowledge.acronyms`, mined whenever a snapshot is built) and each chunk's section view vector
(`knowledge.views`, embedded at sync, only for headings not seen before).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from knowledge.acronyms import Glossary
from knowledge.analysis import terms
from knowledge.sections import SECTION_CHARS, section_of
from knowledge.types import Section
from knowledge.views import Embed, leads, view_text, view_vectors

log = logging.getLogger(__name__)

FORMAT = 2  # bump when the analyzer, the fields or the file layout change: older saved indexes are rebuilt
K1, B = 1.2, 0.75
HEADING_WEIGHT = 2.0  # calibrated with hybrid.LEXICAL_WEIGHT on eval/retrieval.tsv

Rows = Callable[[], list[tuple[str, str]]]  # every (chunk id, content hash) of one collection
Fetched = tuple[str, str, dict[str, Any], Any]  # (chunk id, text, metadata, stored vector)
Fetch = Callable[[list[str]], list[Fetched]]


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    """What the lexical side keeps of a chunk: enough to score it, show it and find its section."""

    id: str
    content_hash: str
    source: str
    title: str
    heading: str
    index: int
    text: str
    body: tuple[str, ...]  # terms of the text
    head: tuple[str, ...]  # distinct terms of the title and heading path

    @classmethod
    def of(cls, chunk_id: str, text: str, meta: dict[str, Any]) -> ChunkRecord:
        title, heading = str(meta.get("title", "")), str(meta.get("heading", ""))
        return cls(
            chunk_id, str(meta.get("content_hash", "")), str(meta.get("source", "")), title, heading,
            int(meta.get("index", 0)), text, tuple(terms(text)),
            tuple(dict.fromkeys(terms(f"{title} {heading.replace(' > ', ' ')}"))),
        )


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What the last sync of an agent did (for tests and logs): where it started from, chunks re-tokenised."""

    origin: str  # "memory", "disk" or "empty"
    kept: int
    tokenized: int
    removed: int
    saved: bool


class _Field:
    """One field's BM25 matrix (bm25s, numpy backend): a query's scores are the sum of its terms' columns."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.vocab: dict[str, int] = model.vocab_dict
        self._bounds: list[int] = model.scores["indptr"].tolist()  # Python ints: each term's postings are a slice

    @classmethod
    def build(cls, documents: Sequence[Sequence[str]]) -> _Field | None:
        if not any(documents):
            return None
        import bm25s  # imported on first use: a quarter of a second that only retrieval needs

        model = bm25s.BM25(k1=K1, b=B, method="lucene")
        model.index([list(d) for d in documents], show_progress=False)
        return cls(model)

    @classmethod
    def load(cls, folder: Path) -> _Field | None:
        if not folder.exists():
            return None
        import bm25s

        return cls(bm25s.BM25.load(str(folder), show_progress=False))

    def scores(self, query: Sequence[str]) -> np.ndarray | None:
        """Every document's BM25 score for `query` (a term repeated counts again), or None if no term is known.

        What `bm25s.BM25.get_scores_from_ids` computes, in one `np.bincount` over the query terms' postings
        instead of one `np.add.at` per term: `np.add.at` is unbuffered and slow, and with several fields, agents
        and probes per question it was as much CPU as embedding the question (issue 12)."""
        ids = [self.vocab[t] for t in query if t in self.vocab]
        if not ids:
            return None
        matrix, bounds = self.model.scores, self._bounds
        indices, data = matrix["indices"], matrix["data"]
        docs = np.concatenate([indices[bounds[i]:bounds[i + 1]] for i in ids])
        weights = np.concatenate([data[bounds[i]:bounds[i + 1]] for i in ids])
        scores = np.bincount(docs, weights=weights, minlength=matrix["num_docs"])
        scores = scores.astype(self.model.dtype, copy=False)
        if self.model.nonoccurrence_array is not None:  # BM25L and BM25+ only; "lucene" has none
            scores += self.model.nonoccurrence_array[ids].sum()
        return scores


def _unit_rows(vectors: Sequence[Any], dim: int = 0) -> np.ndarray:
    matrix = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1) if len(vectors) else \
        np.zeros((0, dim), dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


class LexicalSnapshot:
    """One agent's chunks, their unit vectors, section views and BM25 fields, and the acronyms they define, at
    one store generation. Immutable once built (the section cache only fills in), so concurrent queries share
    it without a lock. `views` are in the same order as `vectors` (zero rows: none computed)."""

    def __init__(self, records: Sequence[ChunkRecord], vectors: np.ndarray,
                 fields: tuple[_Field | None, _Field | None] | None = None, views: np.ndarray | None = None,
                 glossary: Glossary | None = None) -> None:
        order = sorted(range(len(records)), key=lambda i: (records[i].source, records[i].index))
        self.records: tuple[ChunkRecord, ...] = tuple(records[i] for i in order)
        self.vectors = vectors[order] if len(order) else vectors  # row i: unit vector of records[i]
        if views is None:
            views = np.zeros_like(vectors)
        self.views = views[order] if len(order) else views  # row i: unit vector of records[i]'s section view
        self.leads = leads([r.source for r in self.records], [r.heading for r in self.records])
        self.by_text = {(r.source, r.text): i for i, r in enumerate(self.records)}
        if fields is None:  # built here; loaded snapshots pass the saved matrices, built in this same order
            fields = (_Field.build([r.body for r in self.records]), _Field.build([r.head for r in self.records]))
        self._body, self._head = fields
        if glossary is None:
            glossary = Glossary.of(f"{r.title}\n{r.heading}\n{r.text}" for r in self.records)
        self.glossary = glossary
        self._sections: dict[int, Section | None] = {}
        self.generation = -1

    @classmethod
    def empty(cls) -> LexicalSnapshot:
        return cls((), np.zeros((0, 0), dtype=np.float32), (None, None))

    def __len__(self) -> int:
        return len(self.records)

    def scores(self, query: Sequence[str]) -> np.ndarray:
        """BM25 of every chunk for the query's terms: text field plus HEADING_WEIGHT times the heading field."""
        total = np.zeros(len(self.records), dtype=np.float32)
        if self._body is not None and (body := self._body.scores(query)) is not None:
            total += body
        if self._head is not None and (head := self._head.scores(query)) is not None:
            total += HEADING_WEIGHT * head
        return total

    def nearest(self, vector: np.ndarray, k: int) -> list[tuple[ChunkRecord, float]]:
        """The k chunks closest to a unit query vector, best first, with their cosine similarity: an exact
        search (numpy releases the GIL in the product, so concurrent questions search side by side)."""
        n = min(k, len(self.records))
        if n <= 0:
            return []
        sims = self.vectors @ vector
        best = np.argpartition(-sims, n - 1)[:n] if n < len(sims) else np.arange(len(sims))
        best = best[np.argsort(-sims[best], kind="stable")]
        return [(self.records[i], float(sims[i])) for i in best]

    def top(self, scores: np.ndarray, n: int) -> list[tuple[int, float]]:
        """(position, BM25) of the n best chunks with a positive score in `scores` (from `scores()`), best
        first."""
        n = min(n, len(scores))
        if n <= 0:
            return []
        best = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
        return sorted(((int(i), float(scores[i])) for i in best if scores[i] > 0), key=lambda p: -p[1])

    def section(self, position: int, budget: int = SECTION_CHARS) -> Section | None:
        """The enclosing section of a chunk when it fits `budget` (`knowledge.sections`); cached."""
        if position not in self._sections:
            source = self.records[position].source
            first = position
            while first > 0 and self.records[first - 1].source == source:
                first -= 1
            last = position
            while last + 1 < len(self.records) and self.records[last + 1].source == source:
                last += 1
            document = [(r.heading, r.text) for r in self.records[first:last + 1]]
            self._sections[position] = section_of(document, position - first, budget)
        return self._sections[position]


class LexicalIndex:
    """The lexical snapshots of every agent, kept in step with the store's generation and saved under
    `directory` (None: in memory only, rebuilt from the store by each process). `model` names the embedding
    model of the vectors kept: a saved index of another model is not loaded. `embed` (that model's
    `embed_documents`) computes the section views; without it they are zero and play no part."""

    def __init__(self, directory: Path | None = None, model: str = "", embed: Embed | None = None) -> None:
        self.directory = directory
        self.model = model
        self._embed = embed
        self._snapshots: dict[str, LexicalSnapshot] = {}
        self._lock = threading.Lock()  # one sync at a time; queries never take it on the fast path
        self.last_sync: dict[str, SyncReport] = {}

    def snapshot(self, agent: str, generation: int, rows: Rows, fetch: Fetch) -> LexicalSnapshot:
        """The agent's snapshot for the store at `generation` (read before `rows`, so a write racing with a sync
        leaves the snapshot behind and the next query syncs again)."""
        current = self._snapshots.get(agent)
        if current is not None and current.generation == generation:
            return current
        with self._lock:
            current = self._snapshots.get(agent)
            if current is not None and current.generation == generation:
                return current
            return self._sync(agent, generation, rows, fetch)

    def sync(self, agent: str, generation: int, rows: Rows, fetch: Fetch) -> LexicalSnapshot:
        """Bring the agent's index in line with the store now, and save it (ingestion ends with this)."""
        with self._lock:
            return self._sync(agent, generation, rows, fetch)

    # --- keeping in step -------------------------------------------------------------------------------------
    def _sync(self, agent: str, generation: int, rows: Rows, fetch: Fetch) -> LexicalSnapshot:
        current, origin = self._snapshots.get(agent), "memory"
        if current is None:
            current, origin = self._load(agent), "disk"
        if current is None:
            current, origin = LexicalSnapshot.empty(), "empty"
        wanted = dict(rows())
        kept = [i for i, r in enumerate(current.records) if wanted.get(r.id) == r.content_hash]
        have = {current.records[i].id for i in kept}
        missing = [chunk_id for chunk_id in wanted if chunk_id not in have]
        removed = len(current.records) - len(kept)
        fresh = current
        if missing or removed:
            fetched = fetch(missing)
            records = [current.records[i] for i in kept] + [ChunkRecord.of(i, t, m) for i, t, m, _ in fetched]
            added = _unit_rows([v for *_, v in fetched], current.vectors.shape[1])
            vectors = np.vstack([current.vectors[kept], added]) if kept else added
            known = {view_text(r.title, r.heading): current.views[i] for i, r in enumerate(current.records)}
            views = view_vectors([view_text(r.title, r.heading) for r in records], known, self._embed,
                                 vectors.shape[1])
            fresh = LexicalSnapshot(records, vectors, views=views)
        saved = False
        if self.directory is not None and (fresh is not current or origin == "empty"):
            saved = self._save(agent, fresh)
        self.last_sync[agent] = SyncReport(origin, len(kept), len(missing), removed, saved)
        fresh.generation = generation
        self._snapshots[agent] = fresh
        return fresh

    # --- persistence -----------------------------------------------------------------------------------------
    def _folder(self, agent: str) -> Path:
        assert self.directory is not None
        return self.directory / agent

    def _header(self) -> dict[str, Any]:
        return {"format": FORMAT, "k1": K1, "b": B, "heading_weight": HEADING_WEIGHT, "model": self.model}

    def _save(self, agent: str, snapshot: LexicalSnapshot) -> bool:
        """Write the snapshot next to the old one, then swap: a crash leaves the old index, or none (rebuilt)."""
        folder = self._folder(agent)
        staging = folder.with_name(f".{agent}.{os.getpid()}.{threading.get_ident()}")
        try:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            payload = {
                **self._header(),
                "records": [[r.id, r.content_hash, r.source, r.title, r.heading, r.index, r.text, r.body, r.head]
                            for r in snapshot.records],
                "acronyms": snapshot.glossary.entries,
            }
            (staging / "records.json").write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
            np.save(staging / "vectors.npy", snapshot.vectors, allow_pickle=False)
            np.save(staging / "views.npy", snapshot.views, allow_pickle=False)
            for name, field in (("body", snapshot._body), ("head", snapshot._head)):
                if field is not None:
                    field.model.save(str(staging / name), show_progress=False)
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(staging, folder)
            return True
        except OSError as exc:  # a read-only data directory costs a rebuild per process, not a failure
            log.warning("could not save the lexical index of %s in %s: %s", agent, folder, exc)
            shutil.rmtree(staging, ignore_errors=True)
            return False

    def _load(self, agent: str) -> LexicalSnapshot | None:
        if self.directory is None:
            return None
        folder = self._folder(agent)
        try:
            payload = json.loads((folder / "records.json").read_text(encoding="utf-8"))
            if {key: payload.get(key) for key in self._header()} != self._header():
                return None  # another format, parameters or embedding model: rebuilt from the store
            records = [ChunkRecord(r[0], r[1], r[2], r[3], r[4], int(r[5]), r[6], tuple(r[7]), tuple(r[8]))
                       for r in payload["records"]]
            vectors = np.load(folder / "vectors.npy", allow_pickle=False)
            views = np.load(folder / "views.npy", allow_pickle=False)
            glossary = Glossary({str(short): tuple(long) for short, long in payload["acronyms"].items()})
            fields = (_Field.load(folder / "body"), _Field.load(folder / "head"))
            if len(vectors) != len(records) or views.shape != vectors.shape or any(
                f is not None and f.model.scores["num_docs"] != len(records) for f in fields
            ):
                raise ValueError("its parts disagree on the number of chunks")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            log.warning("the lexical index of %s in %s is unreadable (%s); rebuilding it from the store",
                        agent, folder, exc)
            return None
        return LexicalSnapshot(records, vectors, fields, views, glossary)

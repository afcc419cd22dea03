"""Retrieval benchmarks: search and query latency over a 10,000-chunk collection, and ingestion throughput.

- `retrieval_search_ms_p50_10k`: `KnowledgeStore.search` alone, with a precomputed query vector (target <= 3).
- `retrieval_query_ms_p50_10k`: `KnowledgeStore.retrieve` on a new question each time, i.e. embedding the query
  (local MiniLM, no cache hit), vector search, BM25 and their fusion (target <= 20).
- `retrieval_lexical_cpu_ms_p50_10k`: the lexical side alone, in CPU time: BM25 over the 10,000 chunks, the
  lexical-only candidates' cosines, the fusion and the sections, given the vector search's passages.
- `ingest_chunks_per_s`: ingesting the shipped corpus into an empty store, chunks per second (embedding included).

The synthetic collection holds random unit vectors: search time does not depend on what the vectors mean.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

SYNTHETIC_CHUNKS = 10_000
QUESTIONS = [
    "What does the Enterprise plan cost?",
    "My API integration keeps timing out. How do I fix this?",
    "Do you comply with GDPR?",
    "Can I upgrade from the Basic plan?",
    "how do I verify webhook signatures",
    "we were charged twice this month",
]


def _synthetic_store(data_dir: Path, embedder, n: int = SYNTHETIC_CHUNKS):
    from knowledge.chunking import Chunk
    from knowledge.store import KnowledgeStore, open_chroma_client
    from tests.conftest import make_settings

    store = KnowledgeStore(open_chroma_client(make_settings(data_dir)), embedder, agents=("technical",))
    rng = np.random.default_rng(7)
    for start in range(0, n, 2_000):
        count = min(2_000, n - start)
        vectors = rng.standard_normal((count, embedder.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        chunks = [
            Chunk(f"synthetic/{i}.md#0", f"Synthetic passage {i} about topic {i % 97} and webhooks {i % 13}.",
                  "", f"synthetic/{i}.md", f"Doc {i}", f"Section {i % 11}", "technical", 0, "h")
            for i in range(start, start + count)
        ]
        store.add_chunks(chunks, vectors)
    return store


def _timed_ms(action, repeats: int) -> float:
    samples = []
    for i in range(repeats):
        started = time.perf_counter()
        action(i)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def _lexical_cpu_ms(store, model, n: int = 150) -> float:
    """Median CPU milliseconds of the lexical side of one retrieval (new questions, vector search done)."""
    from knowledge import hybrid

    questions = [f"{QUESTIONS[i % len(QUESTIONS)]} #{i + 1000}" for i in range(n)]
    vectors = [model.embed_query(q) for q in questions]
    found = [store.search("technical", v, 12) for v in vectors]
    snapshot = store.lexical("technical")
    samples = []
    for question, vector, passages in zip(questions, vectors, found, strict=True):
        started = time.process_time()
        hybrid.fuse(hybrid.candidates("technical", question, vector, passages, snapshot), 4,
                    hybrid.lexical_weight(question))
        samples.append((time.process_time() - started) * 1000)
    return statistics.median(samples)


def run() -> dict[str, float]:
    from knowledge.embeddings import local_model
    from knowledge.ingest import ingest
    from knowledge.store import KnowledgeStore, open_chroma_client
    from tests.conftest import DOCS, make_settings

    model = local_model()
    with tempfile.TemporaryDirectory() as tmp:
        store = _synthetic_store(Path(tmp), model)
        vectors = [model.embed_query(q) for q in QUESTIONS]
        store.retrieve("technical", QUESTIONS[0], 4)  # warm-up: loads the vector index, builds the lexical one
        search = _timed_ms(lambda i: store.search("technical", vectors[i % len(vectors)], 4), 300)
        query = _timed_ms(lambda i: store.retrieve("technical", f"{QUESTIONS[i % len(QUESTIONS)]} #{i}", 4), 150)
        lexical = _lexical_cpu_ms(store, model)

    with tempfile.TemporaryDirectory() as tmp:
        fresh = KnowledgeStore(open_chroma_client(make_settings(Path(tmp))), model)
        started = time.perf_counter()
        report = ingest([DOCS], fresh)
        ingest_s = time.perf_counter() - started

    return {
        "retrieval_search_ms_p50_10k": round(search, 3),
        "retrieval_query_ms_p50_10k": round(query, 3),
        "retrieval_lexical_cpu_ms_p50_10k": round(lexical, 3),
        "ingest_chunks_per_s": round(report.chunks_added / ingest_s, 1),
    }


if __name__ == "__main__":
    print(run())

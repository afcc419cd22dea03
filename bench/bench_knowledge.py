"""Knowledge benchmarks: query embedding, retrieval over 10,000 chunks, ingestion throughput."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

QUESTIONS = [
    "What does the Enterprise plan cost?",
    "My API integration keeps timing out. How do I fix this?",
    "Do you comply with GDPR?",
    "Can I upgrade from the Basic plan?",
    "how do I verify webhook signatures",
    "we were charged twice this month",
]


def _p50(samples: list[float]) -> float:
    return statistics.median(samples)


def _synthetic_store(root: Path, n: int = 10_000):
    """A 10,000-chunk collection of random unit vectors: search timing does not depend on the text."""
    from knowledge.chunking import Chunk
    from knowledge.embeddings import local_model
    from knowledge.store import KnowledgeStore, open_chroma_client
    from tests.conftest import make_settings

    store = KnowledgeStore(open_chroma_client(make_settings(root)), local_model(), agents=("technical",))
    rng = np.random.default_rng(7)
    for start in range(0, n, 2_000):
        count = min(2_000, n - start)
        vectors = rng.standard_normal((count, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        chunks = [Chunk(f"synthetic/{i}.md#0", f"Synthetic passage {i} about topic {i % 97}.", "", f"synthetic/{i}.md",
                        f"Doc {i}", "", "technical", 0, "h") for i in range(start, start + count)]
        store.add_chunks(chunks, vectors)
    return store


def run() -> dict[str, float]:
    from knowledge.base import open_store
    from knowledge.embeddings import local_model
    from knowledge.ingest import ingest
    from tests.conftest import DOCS, make_settings

    model = local_model()
    for q in QUESTIONS:
        model._encode_batch(model.tokenize([q]))  # warm-up
    embed = []
    for i in range(200):
        text = f"{QUESTIONS[i % len(QUESTIONS)]} ({i})"  # unique text: the query cache never hits
        started = time.perf_counter()
        model.embed_query(text)
        embed.append((time.perf_counter() - started) * 1000)

    with tempfile.TemporaryDirectory() as tmp:
        store = _synthetic_store(Path(tmp))
        vectors = [model.embed_query(q) for q in QUESTIONS]
        search, query = [], []
        for i in range(200):
            started = time.perf_counter()
            store.search("technical", vectors[i % len(vectors)], 4)
            search.append((time.perf_counter() - started) * 1000)
        for i in range(100):
            started = time.perf_counter()
            store.search("technical", model.embed_query(f"{QUESTIONS[i % len(QUESTIONS)]} #{i}"), 4)
            query.append((time.perf_counter() - started) * 1000)

    with tempfile.TemporaryDirectory() as tmp:
        fresh = open_store(make_settings(Path(tmp)), model)
        started = time.perf_counter()
        report = ingest([DOCS], fresh)
        ingest_s = time.perf_counter() - started

    return {
        "embed_query_ms_p50": round(_p50(embed), 3),
        "retrieval_search_ms_p50_10k": round(_p50(search), 3),
        "retrieval_query_ms_p50_10k": round(_p50(query), 3),
        "ingest_chunks_per_s": round(report.chunks_added / ingest_s, 1),
    }

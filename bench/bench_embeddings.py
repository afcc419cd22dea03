"""Embedding benchmarks: one question (uncached), a batch of chunk-sized documents, and concurrent questions.

- `embed_query_ms_p50` / `_p90`: `embed_query` on 200 distinct 10-20 word questions after a warm-up, with the
  query cache off, so every call runs the tokenizer and the full forward pass.
- `embed_batch_docs_per_s`: `embed_documents` on 64 texts of about 1,000 characters (the chunker's target size,
  ~200 word pieces), cut from the shipped corpus; best of three runs.
- `embed_query_concurrent_ms_p50`: the same questions from two threads at once, as two sessions would.
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

QUESTIONS = [
    "How do I update the credit card on file for my team's subscription?",
    "My API integration keeps timing out after thirty seconds, how do I fix this?",
    "Can I get a refund if I cancel my annual plan halfway through the year?",
    "Why does the dashboard show a 502 error when I open the usage report?",
    "Where can I download invoices with our VAT number on them for last quarter?",
    "Do you store customer data in the EU, and can we sign a DPA with you?",
    "What happens to my workspace data after I delete my account?",
    "How do I verify the signature of a webhook request in Python?",
]
RUNS, WARM_UP, BATCH = 200, 20, 64
CHUNK_CHARS = 1000


def _questions(n: int) -> list[str]:
    """n distinct questions of typical length (the index keeps each one out of any cache)."""
    return [f"{QUESTIONS[i % len(QUESTIONS)]} Ticket {i}." for i in range(n)]


def _chunks(n: int) -> list[str]:
    """n chunk-sized windows of real corpus prose."""
    docs = Path(__file__).resolve().parent.parent / "knowledge" / "docs"
    words = " ".join(p.read_text(encoding="utf-8") for p in sorted(docs.rglob("*.md"))).split()
    chunks, start = [], 0
    while len(chunks) < n:
        text, end = "", start
        while len(text) < CHUNK_CHARS:
            text += words[end % len(words)] + " "
            end += 1
        chunks.append(text.strip())
        start = end
    return chunks


def _time_ms(call, arg) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    call(arg)
    return (time.perf_counter() - started) * 1000


def run() -> dict[str, float]:
    from knowledge.embeddings import LocalMiniLM

    model = LocalMiniLM(query_cache_size=0)  # uncached: every call is a full forward pass
    for text in _questions(WARM_UP):
        model.embed_query(text)
    single = [_time_ms(model.embed_query, text) for text in _questions(RUNS)]

    concurrent: list[float] = []
    lock = threading.Lock()

    def worker(offset: int) -> None:
        samples = [_time_ms(model.embed_query, text) for text in _questions(RUNS // 2)[offset::2]]
        with lock:
            concurrent.extend(samples)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    chunks = _chunks(BATCH)
    model.embed_documents(chunks[:8])  # warm-up
    best_s = min(_time_ms(model.embed_documents, chunks) for _ in range(3)) / 1000

    ordered = sorted(single)
    return {
        "embed_query_ms_p50": round(statistics.median(single), 3),
        "embed_query_ms_p90": round(ordered[int(len(ordered) * 0.9)], 3),
        "embed_query_concurrent_ms_p50": round(statistics.median(concurrent), 3),
        "embed_batch_docs_per_s": round(BATCH / best_s, 1),
    }


if __name__ == "__main__":
    print(run())

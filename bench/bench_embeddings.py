"""Embedding benchmarks: one question (uncached), a batch of chunk-sized documents, and concurrent questions.

- `embed_query_ms_p50` / `_p90`: `embed_query` on 200 distinct 10-20 word questions after a warm-up, with the
  query cache off, so every call runs the tokenizer and the full forward pass.
- `embed_batch_docs_per_s`: `embed_documents` on 64 texts of about 1,000 characters (the chunker's target size,
  ~200 word pieces), cut from the shipped corpus; best of three runs.
- `embed_query_concurrent_ms_p50`: the same questions from two threads at once, as two sessions would.
- `embed_batch_busy_gil_ratio`: the wall time of one forward pass over a batch of 14 questions, run in a worker
  thread while another thread spins in pure Python (as the server's event loop does under a burst), divided by
  its wall time on an idle interpreter (median of five runs each). A pass that takes the GIL back after each of
  its ~100 numpy calls waits for it each time (the numpy backend: 12-43 on a 2-core machine, by load); one ONNX
  Runtime call, which releases it for the whole pass, scores ~1.2.

`python -c "from bench.bench_embeddings import run; print(run('numpy'))"` measures the numpy backend.
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
GIL_BATCH, GIL_RUNS = 14, 5
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


def _busy_gil_ratio(model) -> float:  # type: ignore[no-untyped-def]
    """Median wall time of a batch pass in a thread beside a pure-Python spinner, over its median idle time."""
    tokens = model.tokenize(_questions(GIL_BATCH))
    model._encode_batch(tokens)  # warm-up

    def timed() -> float:
        samples: list[float] = []
        for _ in range(GIL_RUNS):
            worker = threading.Thread(target=lambda: samples.append(_time_ms(model._encode_batch, tokens)))
            worker.start()
            worker.join()
        return statistics.median(samples)

    idle_ms = timed()
    stop = threading.Event()

    def spin() -> None:
        x = 0
        while not stop.is_set():  # pure Python: holds the GIL except at the interpreter's switch interval
            x += 1

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        busy_ms = timed()
    finally:
        stop.set()
        spinner.join()
    return busy_ms / idle_ms


def run(backend: str = "auto") -> dict[str, float]:
    """The metrics above, for LocalMiniLM's `backend` ("auto": ONNX Runtime when it can, as in the server)."""
    from knowledge.embeddings import LocalMiniLM

    # uncached: every call is a full forward pass
    model = LocalMiniLM(query_cache_size=0, backend=backend)  # type: ignore[arg-type]
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
        "embed_batch_busy_gil_ratio": round(_busy_gil_ratio(model), 2),
    }


if __name__ == "__main__":
    print(run())

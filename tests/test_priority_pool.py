"""The routing threads' pool (`core.priority_pool`): the waiting job with the lowest priority runs first, and in
a burst the first question's routing goes before a later question's embedding (`core.graph`)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from core.graph import decide_route, embed_ahead, routing_pool
from core.orchestrator import build_orchestrator
from core.priority_pool import PriorityThreadPool
from knowledge.embeddings import local_model


def _blocked(pool: PriorityThreadPool, threads: int) -> threading.Semaphore:
    """Occupy `threads` of the pool's threads until the returned semaphore is released (once per thread)."""
    gate = threading.Semaphore(0)
    started = threading.Barrier(threads + 1)

    def hold() -> None:
        started.wait(10)
        assert gate.acquire(timeout=30), "the test never released the pool"

    for _ in range(threads):
        pool.submit(float("-inf"), hold)
    started.wait(10)  # every thread is busy: what is submitted next waits in the queue
    return gate


def test_the_lowest_priority_runs_first_and_ties_in_submission_order() -> None:
    pool = PriorityThreadPool(1, "test")
    gate = _blocked(pool, 1)
    ran: list[str] = []
    futures = [pool.submit(priority, ran.append, name)
               for priority, name in ((3.0, "third"), (1.0, "first"), (2.0, "second a"), (2.0, "second b"))]
    assert pool.queued() == 4
    gate.release()
    for future in futures:
        future.result(10)
    assert ran == ["first", "second a", "second b", "third"]
    pool.shutdown()


def test_a_failing_job_fails_its_future_and_the_pool_goes_on() -> None:
    pool = PriorityThreadPool(2, "test")

    def fail() -> None:
        raise ValueError("broken probe")

    failed = pool.submit(0, fail)
    with pytest.raises(ValueError, match="broken probe"):
        failed.result(10)
    assert pool.submit(0, lambda: 41 + 1).result(10) == 42
    pool.shutdown()


def test_a_job_cancelled_while_it_waits_never_runs() -> None:
    pool = PriorityThreadPool(1, "test")
    gate = _blocked(pool, 1)
    ran: list[str] = []
    cancelled = pool.submit(1, ran.append, "cancelled")
    kept = pool.submit(2, ran.append, "kept")
    assert cancelled.cancel()
    gate.release()
    kept.result(10)
    assert ran == ["kept"]
    pool.shutdown()


def test_threads_start_as_jobs_need_them_up_to_the_limit() -> None:
    pool = PriorityThreadPool(3, "capped")
    assert pool.submit(0, lambda: None).result(10) is None
    assert _names("capped") == ["capped_0"]  # one job at a time needs one thread
    gate = _blocked(pool, 3)
    assert _names("capped") == ["capped_0", "capped_1", "capped_2"]
    extra = pool.submit(0, lambda: "done")
    assert not extra.done() and len(_names("capped")) == 3  # waits for a thread, starts no fourth
    for _ in range(3):
        gate.release()
    assert extra.result(10) == "done"
    pool.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(0, lambda: None)
    deadline = time.monotonic() + 10
    while _names("capped") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _names("capped") == []  # shut down and idle: the threads have ended


def _names(prefix: str) -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith(f"{prefix}_"))


class RecordingEmbedder:
    """The real local model, noting the questions in the order it embeds them."""

    def __init__(self) -> None:
        self._model = local_model()
        self.name, self.dim = self._model.name, self._model.dim
        self.order: list[str] = []

    def embed_documents(self, texts):
        return self._model.embed_documents(texts)

    def embed_query(self, text: str):
        self.order.append(text)
        return self._model.embed_query(text)


async def test_an_earlier_questions_routing_goes_before_a_later_questions_embedding(corpus_settings) -> None:
    """With every routing thread busy, a later question's embedding is queued first, then an earlier question's
    routing: the thread that frees up takes the earlier question. A first-come-first-served pool would embed the
    later one first, and in a burst every question would be routed only after all were embedded."""
    embedder = RecordingEmbedder()
    orchestrator = await build_orchestrator(corpus_settings, embedder=embedder)
    pool = routing_pool()
    gate = _blocked(pool, pool.workers)
    try:
        now = time.perf_counter()
        late = embed_ahead(orchestrator.brain, "LATE: what does the Enterprise plan cost?", now + 1)
        early = asyncio.create_task(decide_route(orchestrator.brain, "EARLY: how do I rotate an API key?", None,
                                                 "early", arrival=now))
        deadline = time.monotonic() + 10
        while pool.queued() < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert pool.queued() == 2
        gate.release()  # one thread frees up
        decision = await asyncio.wait_for(early, 30)
        assert decision.agent == "technical"
        assert embedder.order[:1] == ["EARLY: how do I rotate an API key?"]
    finally:
        for _ in range(pool.workers):
            gate.release()
        await orchestrator.aclose()
    await asyncio.wrap_future(late.vector)
    # (the knowledge probes ask for the question's vector again, from the embedder's cache: first asks count)
    assert list(dict.fromkeys(embedder.order)) == ["EARLY: how do I rotate an API key?",
                                                   "LATE: what does the Enterprise plan cost?"]

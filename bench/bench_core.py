"""Core benchmarks: semantic routing time and the orchestrator's own overhead before the first token.

`core_overhead_ms_p50` is the time from `respond()` to the first `Token`, minus the fake model's own time to
first token (200 ms here), on the RAG path (technical), against the loopback fake OpenAI server.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bench.bench_retrieval import QUESTIONS

FAKE_TTFT_S = 0.2


async def _measure(data_dir: Path) -> dict[str, float]:
    from core.events import Token
    from core.orchestrator import build_orchestrator
    from bench.corpus import ingested_copy
    from tests.conftest import make_settings
    from tests.fakes.openai_server import FakeOpenAI

    ingested_copy(data_dir)
    async with FakeOpenAI(ttft_s=FAKE_TTFT_S, tokens_per_s=50) as fake:
        settings = make_settings(data_dir, llm_provider="openai", openai_base_url=fake.base_url,
                                 openai_api_key="sk-bench")
        orchestrator = await build_orchestrator(settings)
        try:
            route = []
            for i in range(100):
                started = time.perf_counter()
                await orchestrator.route(f"{QUESTIONS[i % len(QUESTIONS)]} [{i}]")
                route.append((time.perf_counter() - started) * 1000)
            overhead = []
            for i in range(20):
                started = time.perf_counter()
                async for event in orchestrator.respond(f"bench:{i}", f"How do I fix API timeouts? case {i}"):
                    if isinstance(event, Token):
                        overhead.append((time.perf_counter() - started) * 1000 - FAKE_TTFT_S * 1000)
                        break
        finally:
            await orchestrator.aclose()
    return {
        "route_ms_p50": round(statistics.median(route), 3),
        "core_overhead_ms_p50": round(statistics.median(overhead), 3),
    }


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(_measure(Path(tmp)))

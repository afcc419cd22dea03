"""HTTP API benchmarks: what the web front-end adds before the first token, and 200 concurrent SSE streams.

The app runs as `switchboard run` serves it (aiohttp `AppRunner` + `TCPSite` on loopback) over the real
orchestrator, against the loopback fake OpenAI server; clients are real aiohttp HTTP clients reading the SSE
stream line by line.

- `web_first_token_overhead_ms_p50`: for the same question, the time to the first `token` frame received by an
  HTTP client via `POST /chat`, minus the time to the first `Token` when calling `orchestrator.respond()`
  directly; the median of paired differences (the two alternate, each in a fresh session; fake LLM ttft 50 ms;
  everything in this process). `web_first_token_ms_p50`: the HTTP time to first token itself, for context.
- 200 concurrent SSE streams started at once (fake LLM: ttft 200 ms, 50 tokens a second). The fake LLM and the
  clients run in a child process, so the numbers are the server's own, as in production where neither the
  model nor the browsers share its CPU: `web_concurrent_first_token_ms_p50` / `_p95` from each request to its
  first token frame, and `web_errors`, the streams that failed (a non-200 status, an `error` event, no
  `complete` event, a dropped connection, or a `complete` whose text differs from the tokens streamed).
- The same 200 streams against `switchboard run --workers 2` (a subprocess, Redis coordination):
  `web_concurrent_first_token_ms_p50_w2`, and `web_concurrent_w2_ratio`, its ratio to the one-worker figure
  (target <= 0.6: the second core pays).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

from bench.bench_retrieval import QUESTIONS

PAIRS = 30
WARMUP = 3
CONCURRENT = 200
SEQ_TTFT_S = 0.05
CONC_TTFT_S = 0.2
TOKENS_PER_S = 50


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _stream(http, url: str, message: str) -> tuple[float | None, bool]:
    """POST /chat and read the SSE stream to its end: (ms to the first token frame, whether it went well)."""
    started = time.perf_counter()
    first: float | None = None
    event = ""
    tokens: list[str] = []
    complete: dict | None = None
    try:
        async with http.post(url, json={"message": message}) as response:
            if response.status != 200:
                return None, False
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                    if event == "token" and first is None:
                        first = (time.perf_counter() - started) * 1000
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if event == "token":
                        tokens.append(data["text"])
                    elif event == "complete":
                        complete = data
                    elif event == "error":
                        return first, False
    except Exception:  # noqa: BLE001 - any transport failure is a failed stream
        return first, False
    ok = first is not None and complete is not None and complete["text"] == "".join(tokens)
    return first, ok


async def _direct_first_token_ms(orchestrator, key: str, message: str) -> float:
    from core.events import Token

    started = time.perf_counter()
    first: float | None = None
    async for event in orchestrator.respond(key, message):
        if isinstance(event, Token) and first is None:
            first = (time.perf_counter() - started) * 1000
    assert first is not None, "the orchestrator streamed no token"
    return first


async def _serve(orchestrator):
    """The app as `switchboard run` serves it; returns (runner, /chat URL)."""
    from aiohttp import web

    from bots.web.server import create_app

    runner = web.AppRunner(create_app(orchestrator), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/chat"


def _load_process(conn, streams: int, ttft_s: float, tokens_per_s: float) -> None:
    """Child process: the fake LLM and the 200 HTTP clients, off the server's interpreter (as in production,
    where neither the model nor the browsers share the server's CPU and GIL)."""
    asyncio.run(_load(conn, streams, ttft_s, tokens_per_s))


async def _load(conn, streams: int, ttft_s: float, tokens_per_s: float) -> None:
    from aiohttp import ClientSession, TCPConnector

    from tests.fakes.openai_server import FakeOpenAI

    async with FakeOpenAI(ttft_s=ttft_s, tokens_per_s=tokens_per_s) as fake:
        conn.send(fake.base_url)
        url = await asyncio.to_thread(conn.recv)
        async with ClientSession(connector=TCPConnector(limit=0)) as http:
            await _stream(http, url, "What does the Enterprise plan cost? (warm-up)")
            results = await asyncio.gather(*(
                _stream(http, url, f"{QUESTIONS[i % len(QUESTIONS)]} (stream {i})") for i in range(streams)
            ))
        conn.send(list(results))


async def _measure(data_dir: Path) -> dict[str, float]:
    from aiohttp import ClientSession, TCPConnector

    from core.orchestrator import build_orchestrator
    from bench.corpus import ingested_copy
    from tests.conftest import make_settings
    from tests.fakes.openai_server import FakeOpenAI

    ingested_copy(data_dir)

    # 1. Sequential, everything in this process: HTTP vs direct time to first token, same question, paired.
    #    (Different suffixes, so neither side profits from the other's query-embedding cache.)
    async with FakeOpenAI(ttft_s=SEQ_TTFT_S) as fake:  # tokens as fast as possible: only the first one counts
        settings = make_settings(data_dir, llm_provider="openai", openai_base_url=fake.base_url,
                                 openai_api_key="sk-bench")
        orchestrator = await build_orchestrator(settings)
        runner, url = await _serve(orchestrator)
        try:
            async with ClientSession() as http:
                for i in range(WARMUP):
                    await _stream(http, url, f"{QUESTIONS[i % len(QUESTIONS)]} (warm-up web {i})")
                    await _direct_first_token_ms(orchestrator, f"bench:warm:{i}",
                                                 f"{QUESTIONS[i % len(QUESTIONS)]} (warm-up direct {i})")
                overhead, via_http = [], []
                for i in range(PAIRS):
                    question = QUESTIONS[i % len(QUESTIONS)]
                    direct = await _direct_first_token_ms(orchestrator, f"bench:direct:{i}", f"{question} (d{i})")
                    http_ms, ok = await _stream(http, url, f"{question} (w{i})")
                    assert ok and http_ms is not None, "a sequential stream failed"
                    overhead.append(http_ms - direct)
                    via_http.append(http_ms)
        finally:
            await runner.cleanup()
            await orchestrator.aclose()

    # 2. 200 concurrent SSE streams; the fake LLM and the clients run in a child process.
    context = multiprocessing.get_context("spawn")
    conn, child_conn = context.Pipe()
    load = context.Process(target=_load_process, args=(child_conn, CONCURRENT, CONC_TTFT_S, TOKENS_PER_S),
                           daemon=True)
    load.start()
    try:
        if not await asyncio.to_thread(conn.poll, 60):
            raise RuntimeError("the load process did not start its fake LLM")
        base_url = conn.recv()
        settings = make_settings(data_dir, llm_provider="openai", openai_base_url=base_url, openai_api_key="sk-bench")
        orchestrator = await build_orchestrator(settings)
        runner, url = await _serve(orchestrator)
        try:
            conn.send(url)
            if not await asyncio.to_thread(conn.poll, 300):
                raise RuntimeError("the concurrent streams did not finish within 5 minutes")
            results = conn.recv()
        finally:
            await runner.cleanup()
            await orchestrator.aclose()
    finally:
        load.join(10)
        if load.is_alive():
            load.kill()
    firsts = [ms for ms, _ in results if ms is not None]
    errors = sum(1 for _, ok in results if not ok)
    workers = await asyncio.to_thread(_two_workers, data_dir)
    if firsts and workers.get("web_concurrent_first_token_ms_p50_w2"):
        workers["web_concurrent_w2_ratio"] = round(workers["web_concurrent_first_token_ms_p50_w2"]
                                                   / statistics.median(firsts), 3)
    return {
        **workers,
        "web_first_token_overhead_ms_p50": round(statistics.median(overhead), 3),
        "web_first_token_ms_p50": round(statistics.median(via_http), 3),
        "web_concurrent_first_token_ms_p50": round(statistics.median(firsts), 3) if firsts else float("nan"),
        "web_concurrent_first_token_ms_p95": round(_percentile(firsts, 0.95), 3) if firsts else float("nan"),
        "web_errors": errors,
    }


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _two_workers(data_dir: Path) -> dict[str, float]:
    """The same 200 streams against `switchboard run --workers 2` (a real subprocess, Redis coordination), so
    the server's CPU is two interpreters: `web_concurrent_first_token_ms_p50_w2`. Needs Redis; {} without."""
    import os
    import subprocess
    import sys
    import urllib.request

    redis_url = os.environ.get("SWITCHBOARD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    try:
        import redis

        client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
        client.flushdb()
        client.close()
    except Exception as exc:  # noqa: BLE001
        print(f"  --workers 2 skipped: Redis at {redis_url} is not reachable ({type(exc).__name__})")
        return {}
    context = multiprocessing.get_context("spawn")
    conn, child_conn = context.Pipe()
    load = context.Process(target=_load_process, args=(child_conn, CONCURRENT, CONC_TTFT_S, TOKENS_PER_S),
                           daemon=True)
    load.start()
    server = None
    try:
        if not conn.poll(60):
            raise RuntimeError("the load process did not start its fake LLM")
        base_url = conn.recv()
        port = _free_port()
        env = {**os.environ, "SWITCHBOARD_DATA_DIR": str(data_dir), "WEB_PORT": str(port), "REDIS_URL": redis_url,
               "LLM_PROVIDER": "openai", "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "sk-bench",
               "SLACK_BOT_TOKEN": "", "DISCORD_TOKEN": "", "DATABASE_URL": "", "LOG_LEVEL": "WARNING"}
        server = subprocess.Popen([sys.executable, "-m", "switchboard", "run", "--workers", "2"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # both workers answer /health (SO_REUSEPORT spreads the probes)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        time.sleep(8)  # the second worker loads its model too
        conn.send(f"http://127.0.0.1:{port}/chat")
        if not conn.poll(300):
            raise RuntimeError("the concurrent streams did not finish within 5 minutes")
        results = conn.recv()
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(40)
            except subprocess.TimeoutExpired:
                server.kill()
        load.join(10)
        if load.is_alive():
            load.kill()
    firsts = [ms for ms, _ in results if ms is not None]
    return {"web_concurrent_first_token_ms_p50_w2": round(statistics.median(firsts), 3) if firsts else float("nan"),
            "web_errors_w2": sum(1 for _, ok in results if not ok)}


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(_measure(Path(tmp)))


if __name__ == "__main__":
    print(run())

"""HTTP API benchmarks: what the web front-end adds before the first token, and 200 concurrent SSE streams.

The app runs as `switchboard run` serves it (aiohttp `AppRunner` + `TCPSite` on loopback) over the real
orchestrator, against the loopback fake OpenAI server; clients are real aiohttp HTTP clients reading the SSE
stream line by line.

- `web_first_token_overhead_ms_p50`: for the same question, the time to the first `token` frame received by an
  HTTP client via `POST /chat`, minus the time to the first `Token` when calling `orchestrator.respond()`
  directly; the median of paired differences (the two alternate, each in a fresh session; fake LLM ttft 50 ms;
  everything in this process). `web_first_token_ms_p50`: the HTTP time to first token itself, for context.
- 200 concurrent SSE streams started at once, over connections the clients opened beforehand (fake LLM: ttft
  200 ms, 50 tokens a second). The fake LLM and the clients run in a child process, so the numbers are the
  server's own, as in production where neither the model nor the browsers share its CPU:
  `web_concurrent_first_token_ms_p50` / `_p95` from each request to its first token frame, and `web_errors`, the
  streams that failed (a non-200 status, an `error` event, no `complete` event, a dropped connection, or a
  `complete` whose text differs from the tokens streamed).
- Then a second burst of 200, while 20 streams that were already answering (long answers, a token every 20 ms) keep
  reading: `inflight_token_gap_ms_p99`, the 99th percentile of the pauses between their token frames from the
  moment the burst starts until every one of the 200 has its first token (a starved event loop shows here).
- `cpu_ms_per_question`: the server process's CPU time over the lone burst (from its start until the last of
  the 200 completes) divided by 200. `SWITCHBOARD_BENCH_PROFILE=FILE` also records the server process during
  the lone burst with py-spy (all threads) into FILE, as collapsed stacks.
- The same 200 streams against `switchboard run --workers 2` (a subprocess, Redis coordination):
  `web_concurrent_first_token_ms_p50_w2`, and `web_concurrent_w2_ratio`, its ratio to the one-worker figure
  (target <= 0.6: the second core pays).
"""

from __future__ import annotations

import asyncio
import contextlib
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
INFLIGHT = 20
LONG_ANSWER_WORDS = 600  # 12 s at 50 tokens a second: longer than the burst takes to be answered
SEQ_TTFT_S = 0.05
CONC_TTFT_S = 0.2
TOKENS_PER_S = 50
# The bench measures the server's capacity, not its abuse controls: one loopback client opens every stream.
UNCAPPED = {"web_rate_limit": "100000/minute", "web_max_streams_per_client": 10_000, "web_max_answers": 10_000}
UNCAPPED_ENV = {name.upper(): str(value) for name, value in UNCAPPED.items()}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _stream(http, url: str, message: str, arrivals: list[float] | None = None
                  ) -> tuple[float | None, bool]:
    """POST /chat and read the SSE stream to its end: (ms to the first token frame, whether it went well).
    `arrivals`, when given, receives the `perf_counter()` time of every token frame."""
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
                    if event == "token":
                        now = time.perf_counter()
                        if first is None:
                            first = (now - started) * 1000
                        if arrivals is not None:
                            arrivals.append(now)
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


def _long_answers(body: dict):
    """The fake model's responder: a long answer for the in-flight streams' questions, the default otherwise."""
    from tests.fakes.openai_server import Reply, default_responder, question_of

    if "(long " in question_of(body):
        return Reply(text=" ".join(f"word{i}" for i in range(LONG_ANSWER_WORDS)))
    return default_responder(body)


def _gaps_ms(arrivals: list[float], start: float, end: float) -> list[float]:
    """Pauses between consecutive token frames of one stream within [start, end] (the pause running into the
    window counts from `start`, so a stream frozen for the whole window shows its whole length)."""
    inside = [t for t in arrivals if start <= t <= end]
    marks = [start, *inside]
    later = [t for t in arrivals if t > end]
    marks.append(later[0] if later else end)
    return [(b - a) * 1000 for a, b in zip(marks, marks[1:])]


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
    from switchboard.run import LISTEN_BACKLOG

    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=LISTEN_BACKLOG)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/chat"


def _load_process(conn, streams: int, ttft_s: float, tokens_per_s: float) -> None:
    """Child process: the fake LLM and the 200 HTTP clients, off the server's interpreter (as in production,
    where neither the model nor the browsers share the server's CPU and GIL)."""
    asyncio.run(_load(conn, streams, ttft_s, tokens_per_s))


async def _load(conn, streams: int, ttft_s: float, tokens_per_s: float) -> None:
    """Two bursts of `streams` questions against the URL the parent sends. The first arrives alone: the parent
    hears "burst" as it starts, then its results. Before the second, INFLIGHT long streams are started and each
    is answering; the parent hears "burst" again, then (second burst's results, in-flight token gaps in ms)."""
    from aiohttp import ClientSession, TCPConnector

    from tests.fakes.openai_server import FakeOpenAI

    def questions(tag: str) -> list[str]:
        return [f"{QUESTIONS[i % len(QUESTIONS)]} ({tag} {i})" for i in range(streams)]

    async with FakeOpenAI(ttft_s=ttft_s, tokens_per_s=tokens_per_s) as fake:
        fake.responder = _long_answers
        conn.send(fake.base_url)
        url = await asyncio.to_thread(conn.recv)
        async with ClientSession(connector=TCPConnector(limit=0)) as http:
            await _stream(http, url, "What does the Enterprise plan cost? (warm-up)")
            await _connect(http, url, streams)
            conn.send("burst")
            conn.send(list(await asyncio.gather(*(_stream(http, url, q) for q in questions("stream")))))

            await _connect(http, url, streams + INFLIGHT)
            arrivals: list[list[float]] = [[] for _ in range(INFLIGHT)]
            inflight = [asyncio.create_task(_stream(http, url, f"{QUESTIONS[i % len(QUESTIONS)]} (long {i})",
                                                    arrivals[i])) for i in range(INFLIGHT)]
            while not all(arrivals) and not any(task.done() for task in inflight):
                await asyncio.sleep(0.01)
            conn.send("burst")
            start = time.perf_counter()
            results = await asyncio.gather(*(_stream(http, url, q) for q in questions("during")))
            end = max((start + ms / 1000 for ms, _ in results if ms is not None), default=time.perf_counter())
            await asyncio.gather(*inflight)
        gaps = [gap for stream in arrivals for gap in _gaps_ms(stream, start, end)]
        conn.send((list(results), gaps))


async def _connect(http, url: str, clients: int) -> None:
    """Open `clients` keep-alive connections (one cheap GET each, at once) for the burst to reuse.

    Why: 200 browsers each open their own connection on their own CPU; here one load process, which is also the
    fake model, opens them all, and that work (and the server's accepts) would be timed as the server's.
    Connected beforehand, the 200 questions reach the server within ~20 ms, as the bench means."""
    base = url.rsplit("/", 1)[0]

    async def one() -> None:
        async with http.get(f"{base}/agents") as response:
            await response.read()

    await asyncio.gather(*(one() for _ in range(clients)))


async def _recv(conn, timeout_s: float, what: str):
    if not await asyncio.to_thread(conn.poll, timeout_s):
        raise RuntimeError(f"{what} did not happen within {timeout_s:.0f} s")
    return await asyncio.to_thread(conn.recv)


async def _bursts(conn, url: str) -> tuple[list, float, list, list[float]]:
    """Hand the load process the URL; measure this process's CPU while the lone burst runs (optionally under
    py-spy, see the module docstring): (lone burst results, its CPU seconds, second burst results, gaps)."""
    conn.send(url)
    assert await _recv(conn, 120, "the warm-up") == "burst"
    with _profiled():
        cpu = time.process_time()
        alone = await _recv(conn, 300, "the burst")
        cpu = time.process_time() - cpu
    assert await _recv(conn, 120, "the in-flight streams' start") == "burst"
    during, gaps = await _recv(conn, 300, "the burst with streams in flight")
    return alone, cpu, during, gaps


@contextlib.contextmanager
def _profiled():
    """`SWITCHBOARD_BENCH_PROFILE=FILE`: record this process (every thread, native frames off) with py-spy while
    the block runs, as collapsed stacks in FILE (`python -m bench.profile FILE` summarises them)."""
    import os
    import shutil
    import subprocess
    import sys

    target = os.environ.get("SWITCHBOARD_BENCH_PROFILE")
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not target or not Path(spy).exists():
        yield
        return
    only_gil = ["--gil"] if os.environ.get("SWITCHBOARD_BENCH_PROFILE_GIL") else []  # Python CPU, not waits
    recorder = subprocess.Popen([spy, "record", "--pid", str(os.getpid()), "--format", "raw", "--rate", "200",
                                 "--output", target, "--nonblocking", *only_gil], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)  # py-spy attaches
        yield
    finally:
        recorder.send_signal(2)  # SIGINT: py-spy writes what it recorded and exits
        recorder.wait(30)


async def _measure(data_dir: Path) -> dict[str, float]:
    from aiohttp import ClientSession

    from core.heap import settle_heap
    from core.orchestrator import build_orchestrator
    from bench.corpus import ingested_copy
    from tests.conftest import make_settings
    from tests.fakes.openai_server import FakeOpenAI

    ingested_copy(data_dir)

    # 1. Sequential, everything in this process: HTTP vs direct time to first token, same question, paired.
    #    (Different suffixes, so neither side profits from the other's query-embedding cache.)
    async with FakeOpenAI(ttft_s=SEQ_TTFT_S) as fake:  # tokens as fast as possible: only the first one counts
        settings = make_settings(data_dir, llm_provider="openai", openai_base_url=fake.base_url,
                                 openai_api_key="sk-bench", **UNCAPPED)
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
        settings = make_settings(data_dir, llm_provider="openai", openai_base_url=base_url, openai_api_key="sk-bench",
                                 **UNCAPPED)
        orchestrator = await build_orchestrator(settings)
        runner, url = await _serve(orchestrator)
        settle_heap()  # as `switchboard run` does once it has started (`core.heap`)
        try:
            results, cpu_s, _, gaps = await _bursts(conn, url)
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
        "inflight_token_gap_ms_p99": round(_percentile(gaps, 0.99), 3) if gaps else float("nan"),
        "cpu_ms_per_question": round(cpu_s * 1000 / CONCURRENT, 3),
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
               "SLACK_BOT_TOKEN": "", "DISCORD_TOKEN": "", "DATABASE_URL": "", "LOG_LEVEL": "WARNING",
               **UNCAPPED_ENV}
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
        if not conn.poll(120) or conn.recv() != "burst":
            raise RuntimeError("the warm-up did not finish")
        if not conn.poll(300):
            raise RuntimeError("the concurrent streams did not finish within 5 minutes")
        results = conn.recv()
        if conn.poll(120) and conn.recv() == "burst":
            conn.poll(300) and conn.recv()  # the second burst (with streams in flight) is not measured here
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

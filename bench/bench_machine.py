"""How fast this machine is today: fixed workloads, so figures from different sessions can be compared.

The CPU and latency targets are absolute (`cpu_ms_per_question <= 12`), but the machine under them is not: the
same commit measured `core_overhead_ms_p50` 14 ms in one session and 22 ms in the next, with `route_ms_p50`
5.3 against 11.5, on a "2-core" VM whose cores are shared with other tenants. A benchmark that moved by that
much says nothing about the code unless the machine's own speed is recorded beside it.

- `machine_python_ms`: the best of several runs of a fixed pure-Python workload shaped like the event loop's
  (JSON encoding and decoding of small frames, dict and string work, small dataclass objects), one core.
- `machine_numpy_ms`: the best of several runs of fixed float32 matrix products shaped like the embedder's
  (a batch of 16 tokens through 384x1536 and 1536x384 layers), one BLAS thread.

- `machine_int8_vnni`: 1 when the CPU has VNNI (AVX-512 VNNI or AVX-VNNI), 0 when not (`knowledge.cpu_features`).
  ONNX Runtime's integer kernels, which embed every question, run two to three times slower without it: the
  same question cost 1.2-1.3 ms of CPU on VNNI hosts and 4.2-4.6 ms on an AVX2-only one, where
  `machine_python_ms` differed by only 1.4x. It also decides the questions' weight type
  (`knowledge.onnx_minilm`).

Best-of, because a tenant's burst only ever makes a run slower. No target: these are the scale to read the
others against (two sessions' `cpu_ms_per_question` compare as their ratio to `machine_python_ms`, and only
between hosts with the same `machine_int8_vnni`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np

from knowledge.cpu_features import has_vnni

RUNS = 7
FRAMES = 20_000


@dataclass(frozen=True, slots=True)
class _Frame:
    event: str
    text: str
    index: int


def _python_workload() -> int:
    """What a streamed token costs in pure Python, FRAMES times: build an event, encode it as an SSE frame, parse
    a model's chunk."""
    total = 0
    chunk = json.dumps({"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"content": " word"}}]})
    for i in range(FRAMES):
        frame = _Frame("token", f" word{i % 97}", i)
        line = f"event: {frame.event}\ndata: {json.dumps({'text': frame.text, 'index': frame.index})}\n\n"
        parsed = json.loads(chunk)
        total += len(line) + len(parsed["choices"][0]["delta"]["content"])
    return total


def _numpy_workload(rng: np.random.Generator) -> float:
    x = rng.standard_normal((16, 384), dtype=np.float32)
    up = rng.standard_normal((384, 1536), dtype=np.float32) / 20
    down = rng.standard_normal((1536, 384), dtype=np.float32) / 40
    for _ in range(200):
        x = np.tanh(np.maximum(x @ up, 0) @ down)
    return float(x.sum())


def _best_ms(work, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000)
    return min(times)


def run(runs: int = RUNS) -> dict[str, float]:
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    with threadpool_limits(1):
        numpy_ms = _best_ms(lambda: _numpy_workload(rng), runs)
    return {"machine_python_ms": round(_best_ms(_python_workload, runs), 3), "machine_numpy_ms": round(numpy_ms, 3),
            "machine_int8_vnni": float(has_vnni())}

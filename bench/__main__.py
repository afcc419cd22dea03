"""`make bench`: run every `bench/bench_*.py` module's `run()` and report against the targets.

Each module returns a flat `{metric: number}`; the harness merges them into `.bench/results.json` and prints a
table with the target of each metric that has one. `python -m bench NAME ...` runs only the named modules.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time
import traceback
from pathlib import Path

from rich.console import Console
from rich.table import Table

import bench

# metric -> (comparison, target); "<=" means lower is better.
TARGETS: dict[str, tuple[str, float]] = {
    "embed_query_ms_p50": ("<=", 15),
    "retrieval_query_ms_p50_10k": ("<=", 20),
    "retrieval_search_ms_p50_10k": ("<=", 3),
    "ingest_chunks_per_s": (">=", 30),
    "route_ms_p50": ("<=", 20),
    "core_overhead_ms_p50": ("<=", 15),
    "slack_placeholder_ms_p50": ("<=", 100),
    "slack_first_token_visible_ms_p50": ("<=", 150),
    "slack_final_lag_ms_p50": ("<=", 1000),
    "slack_429_count": ("<=", 0),
    "slack_final_delivered_ratio": (">=", 1.0),
    "discord_first_token_visible_ms_p50": ("<=", 150),
    "discord_final_lag_ms_p50": ("<=", 300),
    "discord_burst_first_text_ms_p50": ("<=", 5500),
    "discord_burst_all_final_ms": ("<=", 15500),
    "discord_429_count": ("<=", 0),
    "discord_final_delivered_ratio": (">=", 1.0),
    "web_first_token_overhead_ms_p50": ("<=", 30),
    "web_errors": ("<=", 0),
    "web_concurrent_w2_ratio": ("<=", 0.6),
    "web_concurrent_first_token_ms_p50": ("<=", 1500),
    "web_concurrent_first_token_ms_p95": ("<=", 2500),
    "inflight_token_gap_ms_p99": ("<=", 250),
    "cpu_ms_per_question": ("<=", 12),
    "checkpoint_ms_per_turn_postgres": ("<=", 10),
    "redis_coordination_ms_p50": ("<=", 3),
    "replica_duplicate_replies": ("<=", 0),
    "replica_429_count": ("<=", 0),
    "replica_final_delivered_ratio": (">=", 1.0),
    "resync_requests_per_page": ("<=", 1.0),
    "resync_embeddings": ("<=", 0),
}
RESULTS = Path(".bench/results.json")


def main(selected: list[str]) -> int:
    console = Console()
    modules = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))
    if selected:
        modules = [m for m in modules if any(s in m for s in selected)]
    results: dict[str, float] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    failures = 0
    for name in modules:
        console.print(f"[bold]{name}[/] …")
        started = time.perf_counter()
        try:
            metrics = importlib.import_module(f"bench.{name}").run()
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others
            console.print(f"[red]{name} failed:[/]\n{traceback.format_exc()}")
            failures += 1
            continue
        results.update({k: float(v) for k, v in metrics.items()})
        console.print(f"  done in {time.perf_counter() - started:.1f}s")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")

    table = Table("metric", "value", "target", "")
    for metric, value in sorted(results.items()):
        target = TARGETS.get(metric)
        verdict = ""
        if target:
            op, limit = target
            ok = value <= limit if op == "<=" else value >= limit
            verdict = "[green]ok[/]" if ok else "[red]miss[/]"
        table.add_row(metric, f"{value:.3f}", f"{target[0]} {target[1]}" if target else "", verdict)
    console.print(table)
    console.print(f"written to {RESULTS}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""`switchboard run --workers N`: N processes of the same server on one machine, so it uses every core.

Each worker is a whole `switchboard run` (its own event loop, orchestrator and connections) and they share:
- the web port, through `SO_REUSEPORT` (the kernel spreads connections over the workers);
- Slack: each worker holds its own Socket Mode connection (Slack spreads events over up to 10 per app) or
  serves the HTTP events endpoint on the shared port;
- Discord: one worker holds the gateway connection, or with DISCORD_SHARD_COUNT > 1 every worker holds the
  shards it leases (`bots.discord.shards`);
- everything that keeps a reply correct across processes, through Redis (`REDIS_URL`): duplicate-delivery
  keys, the per-session lock, the platform budgets and the replies in flight. That is why more than one worker
  refuses to start without it.
The parent only starts the workers, forwards SIGINT/SIGTERM to them and waits; a worker that cannot start stops
the others, and the parent exits with its code.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from multiprocessing.process import BaseProcess

from bots.startup import StartupError
from core.settings import Settings

WORKER_ENV = "SWITCHBOARD_WORKER"  # "index/count", set in each worker's environment
STOP_GRACE_S = 40.0  # a worker drains its replies within its own timeout; this bounds the wait for all


def worker_position() -> tuple[int, int]:
    """(index, count) of this process among the workers; (0, 1) when not started by `--workers`."""
    raw = os.environ.get(WORKER_ENV, "")
    try:
        index, count = (int(part) for part in raw.split("/"))
    except ValueError:
        return 0, 1
    return index, count


def check_workers(settings: Settings, workers: int) -> None:
    """More than one worker needs shared coordination; say what to set when it is missing."""
    if workers > 1 and settings.redis_url is None:
        raise StartupError(f"--workers {workers} needs REDIS_URL: without Redis the workers cannot share "
                           "duplicate-delivery keys, session locks and rate budgets, and would answer twice. "
                           "Set REDIS_URL=redis://host:6379/0, or run one worker.")


def _worker(index: int, count: int) -> None:
    os.environ[WORKER_ENV] = f"{index}/{count}"
    from switchboard.run import run_command

    try:
        run_command(workers=1)
    except SystemExit as exit_:
        os._exit(int(exit_.code or 0))


def run_workers(count: int) -> int:
    """Start `count` workers and wait for them; returns the exit code."""
    context = multiprocessing.get_context("spawn")
    processes: list[BaseProcess] = []
    for index in range(count):
        process = context.Process(target=_worker, args=(index, count), name=f"switchboard-worker-{index}")
        process.start()
        processes.append(process)

    def forward(signum: int, _frame: object) -> None:
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = 0
        while any(process.is_alive() for process in processes):
            for process in processes:
                if not process.is_alive() and process.exitcode not in (0, None) and code == 0:
                    code = process.exitcode or 1
                    forward(signal.SIGTERM, None)  # one worker failed: stop the others
            time.sleep(0.2)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        return code or max((p.exitcode or 0 for p in processes), default=0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

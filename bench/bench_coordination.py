"""What Redis coordination adds to one reply, on the local Redis (`REDIS_URL`, else redis://127.0.0.1:6379/0).

Per reply, as a replica does it: the delivery check (`first_time` with an event id and a message key), the
session lock (queue, hold, release; the lease renewer starts and stops), and one budget write (`slot()` on a
per-channel pool: take, then restamp). Budgets are sized so nothing waits for room: this measures the cost of
coordinating, not rate limiting.
- `redis_coordination_ms_p50` (target <= 3): one reply at a time, median of `REPLIES`.
- `redis_coordination_replies_per_s`: `BURST` replies at once in one process (one client): how many replies'
  worth of coordination one process gets through a second. redis-py's asyncio client does about 10k commands
  a second per process here, five round trips a reply, so this is the client's ceiling, not Redis's.
- `redis_inflight_ms_p50`: registering a reply in flight and finishing it (`start` + `finish`), not in the target.
Returns {} (and says why) when Redis does not answer.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid

REPLIES = 500
WARMUP = 50
BURST = 200


async def _measure(url: str) -> dict[str, float]:
    import coordination

    prefix = f"sbbench:{uuid.uuid4().hex[:8]}"
    coord = coordination.connect(url, prefix=prefix)
    problem = await coord.ping()
    if problem:
        print(f"  skipped: {problem}")
        await coord.aclose()
        return {}
    seen = coord.delivery_keys("slack")
    pool = coord.budget_pool("slack:posts", 1_000_000, 1.0, local=None)  # type: ignore[arg-type]

    async def reply(i: int) -> float:
        started = time.perf_counter()
        assert await seen.first_time(f"Ev{i}", ("C1", f"{i}.0"))
        async with coord.locks.hold(f"slack:T1:C1:{i}.0"):
            with pool.using(f"C{i % 20}") as budget:
                async with budget.slot():
                    pass
        return (time.perf_counter() - started) * 1000

    async def inflight(i: int) -> float:
        started = time.perf_counter()
        await coord.inflight.start(f"reply-{i}", {"platform": "slack", "channel": "C1", "ts": f"{i}.0"})
        await coord.inflight.finish(f"reply-{i}")
        return (time.perf_counter() - started) * 1000

    try:
        for i in range(WARMUP):
            await reply(-1 - i)
        one = [await reply(i) for i in range(REPLIES)]
        burst_started = time.perf_counter()
        await asyncio.gather(*(reply(REPLIES + i) for i in range(BURST)))
        burst_s = time.perf_counter() - burst_started
        tracked = [await inflight(i) for i in range(REPLIES)]
    finally:
        client = coord._client
        if client is not None:
            names = [name async for name in client.scan_iter(f"{prefix}:*")]
            for start in range(0, len(names), 500):
                await client.delete(*names[start:start + 500])
        await coord.aclose()
    return {
        "redis_coordination_ms_p50": round(statistics.median(one), 3),
        "redis_coordination_replies_per_s": round(BURST / burst_s, 1),
        "redis_inflight_ms_p50": round(statistics.median(tracked), 3),
    }


def run() -> dict[str, float]:
    return asyncio.run(_measure(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"))


if __name__ == "__main__":
    print(run())

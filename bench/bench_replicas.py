"""Two replicas answering one Slack workspace, every event delivered to both (issue 11's replica benchmark).

Two real `switchboard run` processes (started by `tests/replica_harness.py`, as the replica tests do) share Redis
(database 13, flushed before and after: the tests use 10-12 and 15, `bench_web` 14) and Postgres (a schema of
their own, dropped afterwards), each with its own Socket Mode connection to the loopback fake Slack, which keeps
Slack's real limits (`chat.update` 50 a minute per workspace, burst 10; posts about 1 a second per channel).
The fake model answers after 200 ms at 50 tokens a second with `bench_slack.BURST_ANSWER` (one message).

`THREADS` mentions at once over 4 channels. Each is delivered to one replica's connection and, at the same
moment, redelivered (same event_id, `retry_attempt` 1) to the other's: the race a late ack causes, on every
event, while both replicas spend one workspace budget.
- `replica_duplicate_replies` (target 0): bot replies beyond one per thread.
- `replica_429_count` (target 0): calls the fake Slack answered with 429.
- `replica_final_delivered_ratio` (target 1.0): threads whose reply landed its whole final text (no cursor,
  with the feedback buttons).
- `replica_all_final_s`: from the burst to the last final text (no target: the workspace budget sets it).
Returns {} (saying why) without Redis, Postgres or the `switchboard` console script.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

THREADS = 20
CHANNELS = 4
REDIS_DB = 13
FAKE_TTFT_S = 0.2
TOKENS_PER_S = 50
FINALS_TIMEOUT_S = 120.0  # measured: about 25 s (the workspace budget)
SETTLE_S = 1.0  # after the last final: a duplicate reply would have posted its placeholder long before


def _missing() -> str | None:
    from tests.replica_harness import SWITCHBOARD_EXE, postgres_problem, redis_problem

    if not SWITCHBOARD_EXE.exists():
        return f"no `switchboard` console script at {SWITCHBOARD_EXE}"
    return redis_problem() or postgres_problem()


def _landed(slack: Any, event: dict[str, Any], expected: str) -> bool:
    from tests.replica_harness import MARKER, bot_messages, has_feedback

    replies = bot_messages(slack, event["channel"], event["ts"])
    return bool(replies) and has_feedback(replies[-1]) and expected in replies[-1].text and MARKER not in replies[-1].text


def _measure(workdir: Path) -> dict[str, float]:
    from bench.bench_discord import answer_responder
    from bench.bench_slack import BURST_ANSWER
    from bench.corpus import ingested_copy
    from bots.slack.mrkdwn import to_mrkdwn
    from tests.fakes.openai_server import FakeOpenAI
    from tests.fakes.slack import FakeSlack
    from tests.replica_harness import (bot_messages, connection_of, describe_threads, logs, on_fake,
                                       postgres_schema, redis_database, start_replicas)

    corpus = workdir / "corpus"
    ingested_copy(corpus)
    slack = FakeSlack().start_in_thread()
    llm = FakeOpenAI(ttft_s=FAKE_TTFT_S, tokens_per_s=TOKENS_PER_S).start_in_thread()
    llm.responder = answer_responder(BURST_ANSWER)
    replicas = []
    try:
        with redis_database(REDIS_DB) as redis_url, postgres_schema() as database_url:
            replicas = start_replicas(2, corpus=corpus, workdir=workdir / "replicas", redis_url=redis_url,
                                      database_url=database_url, slack=slack, llm=llm)
            first, other = (connection_of(slack, replica) for replica in replicas)
            channels = [f"C0REPL{n:04d}" for n in range(CHANNELS)]

            async def burst() -> list[dict[str, Any]]:
                for channel in channels:
                    slack.add_channel(channel, channel.lower())
                events = [slack.app_mention(f"Why does my API time out? (thread {i})", channel=channels[i % CHANNELS])
                          for i in range(THREADS)]
                sends = []
                for i, event in enumerate(events):
                    here, there = (first, other) if i % 2 == 0 else (other, first)
                    sends += [slack.send_event(event, connection=here),
                              slack.send_event(event, retry_num=1, retry_reason="timeout", connection=there)]
                await asyncio.gather(*sends)
                return events

            started = time.monotonic()
            events = slack.run(burst())
            expected = to_mrkdwn(BURST_ANSWER)
            try:
                slack.run(slack.wait_for(lambda: all(_landed(slack, e, expected) for e in events), FINALS_TIMEOUT_S,
                                         "every final text"), FINALS_TIMEOUT_S + 10)
            except TimeoutError:
                print(f"  not every final landed within {FINALS_TIMEOUT_S:.0f} s; the end of the threads:\n"
                      f"{describe_threads(slack)[-3000:]}{logs(replicas, 3000)}")
            all_final_s = time.monotonic() - started
            time.sleep(SETTLE_S)
            counts = on_fake(slack, lambda: [len(bot_messages(slack, e["channel"], e["ts"])) for e in events])
            landed = on_fake(slack, lambda: sum(_landed(slack, e, expected) for e in events))
            rate_limited = on_fake(slack, lambda: slack.rate_limited_count)
    finally:
        for replica in replicas:
            replica.stop(timeout=45)
        slack.stop_thread()
        llm.stop_thread()
    return {
        "replica_duplicate_replies": sum(max(0, n - 1) for n in counts),
        "replica_429_count": rate_limited,
        "replica_final_delivered_ratio": round(landed / THREADS, 3),
        "replica_all_final_s": round(all_final_s, 2),
    }


def run() -> dict[str, float]:
    missing = _missing()
    if missing:
        print(f"  skipped: {missing}")
        return {}
    with tempfile.TemporaryDirectory(prefix="switchboard-bench-replicas-") as tmp:
        return _measure(Path(tmp))


if __name__ == "__main__":
    print(run())

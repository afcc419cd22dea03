"""Redis going away under running replicas, and coming back (issue 11: "Postgres or Redis going away for a few
seconds mid-run: replies in flight end with a readable error, not a traceback or a stuck message; the service
recovers by itself when they come back").

Two real `switchboard run` processes (`tests/replica_harness.py`) share Postgres and reach Redis through a TCP
proxy the test cuts (`tests/proxy.py`): every connection to Redis is dropped mid-command and new ones are
refused, as when the server or the network goes away. Two slow Slack replies are streaming when it is cut (one
on each replica) and a third question arrives during the outage. Each must end settled: its final text, or a
readable error; never the placeholder, the cursor or a traceback. Once the proxy listens again, the next
question in the first thread is answered by the other replica, without restarting anything, and well within a
lock's lease: the lock the interrupted reply could not release while Redis was away must not hold the thread.

Skipped, saying what is missing, without Redis or Postgres.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from core.retry import USER_MESSAGES
from tests.fakes.slack import CHANNEL
from tests.proxy import CuttableProxy
from tests.replica_harness import (MARKER, REDIS_SERVER, SLOW_TAG, SWITCHBOARD_EXE, Replica, bot_messages,
                                   connection_of, describe_threads, has_feedback, logs, on_fake, postgres_problem,
                                   postgres_schema, redis_database, redis_problem, responder, settled,
                                   start_replicas, wait_fake)

NO_EXE = None if SWITCHBOARD_EXE.exists() else f"no `switchboard` console script at {SWITCHBOARD_EXE}"
MISSING = [problem for problem in (NO_EXE, redis_problem(), postgres_problem()) if problem]
pytestmark = [pytest.mark.skipif(bool(MISSING), reason="; ".join(MISSING)), pytest.mark.timeout(150)]

DB_OUTAGE = 15  # a Redis database of this module's own (replicas 10/11, placement 12, bench 13 and 14), flushed
LOCK_LEASE_S = 15.0  # coordination.locks.DEFAULT_LEASE_S: what a thread would wait if a lock were left behind
ANSWER_WITHIN_S = 5.0  # a short answer takes about a second; a lock left behind holds the thread ~10 s longer
READABLE = tuple(USER_MESSAGES.values())


def ended_well(slack: Any, event: dict[str, Any]) -> bool:
    """Every message of the reply settled, and the last one the final answer or a readable error."""
    replies = bot_messages(slack, event["channel"], event["ts"])
    return bool(replies) and all(settled(m) for m in replies) and (
        has_feedback(replies[-1]) or any(sentence in replies[-1].text for sentence in READABLE))


def health_of(replica: Replica) -> tuple[int, dict[str, Any]]:
    answer = replica.health(timeout=5)
    assert answer is not None, f"replica {replica.name} does not answer /health{logs([replica])}"
    return answer


def wait_healthy(replicas: list[Replica], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(health_of(r)[0] != 200 for r in replicas):
        if time.monotonic() > deadline:
            pytest.fail(f"not healthy {timeout:.0f} s after Redis came back: "
                        f"{[(r.name, health_of(r)) for r in replicas]}{logs(replicas)}", pytrace=False)
        time.sleep(0.1)


def test_a_redis_cut_mid_reply_ends_every_reply_readably_and_the_service_recovers_by_itself(
        ingested_dir: Path, tmp_path: Path) -> None:
    from tests.fakes.openai_server import FakeOpenAI
    from tests.fakes.slack import FakeSlack

    server = urlsplit(REDIS_SERVER)
    proxy = CuttableProxy(server.hostname or "127.0.0.1", server.port or 6379).start_in_thread()
    slack = FakeSlack().start_in_thread()
    llm = FakeOpenAI().start_in_thread()
    llm.responder = responder(slow=150)  # LONG_ANSWER (about 500 words) streams for about 3.5 s
    replicas: list[Replica] = []
    try:
        with redis_database(DB_OUTAGE), postgres_schema() as database_url:
            replicas = start_replicas(2, corpus=ingested_dir, workdir=tmp_path,
                                      redis_url=f"redis://127.0.0.1:{proxy.port}/{DB_OUTAGE}",
                                      database_url=database_url, slack=slack, llm=llm)
            a, b = replicas
            assert proxy.accepted > 0, "the replicas do not reach Redis through the proxy"
            on = {r.name: connection_of(slack, r) for r in replicas}

            first = on_fake(slack, lambda: slack.app_mention(f"Explain, {SLOW_TAG}, how to configure the integration"))
            second = on_fake(slack, lambda: slack.app_mention(f"Explain, {SLOW_TAG}, how to set up the integration"))
            slack.run(slack.send_event(first, connection=on["A"]))
            slack.run(slack.send_event(second, connection=on["B"]))

            def streaming() -> bool:
                return all((replies := bot_messages(slack, CHANNEL, e["ts"])) and MARKER in replies[-1].text
                           and "Step 2" in replies[-1].text for e in (first, second))
            wait_fake(slack, streaming, 30, "both replies streaming", replicas)

            proxy.cut_now()
            during = on_fake(slack, lambda: slack.app_mention("How much does the Pro plan cost?"))
            slack.run(slack.send_event(during, connection=on["A"]))
            wait_fake(slack, lambda: all(ended_well(slack, e) for e in (first, second, during)), 45,
                      "every reply ending with its final text or a readable error while Redis is away", replicas)
            [refused] = on_fake(slack, lambda: bot_messages(slack, CHANNEL, during["ts"]))
            assert USER_MESSAGES["unavailable"] in refused.text, describe_threads(slack)  # no lock without Redis
            status, health = health_of(a)
            assert status == 503 and "coordination (REDIS_URL) does not answer" in str(health), health
            texts = on_fake(slack, lambda: [m.text for e in (first, second, during)
                                            for m in bot_messages(slack, CHANNEL, e["ts"])])
            assert not any("Traceback" in text or "Error:" in text for text in texts), describe_threads(slack)

            proxy.restore_now()
            wait_healthy(replicas, 20)
            count = len(on_fake(slack, lambda: bot_messages(slack, CHANNEL, first["ts"])))
            follow_up = on_fake(slack, lambda: slack.app_mention("and how do I change my plan?",
                                                                  thread_ts=first["ts"]))
            asked_at = time.monotonic()
            slack.run(slack.send_event(follow_up, connection=on["B"]))  # the other replica: the lock is Redis's

            def answered_again() -> bool:
                replies = bot_messages(slack, CHANNEL, first["ts"])
                return len(replies) > count and has_feedback(replies[-1]) and all(settled(m) for m in replies)
            wait_fake(slack, answered_again, LOCK_LEASE_S + 10, "the next question in the thread answered after "
                      "Redis came back", replicas)
            took = time.monotonic() - asked_at
            assert took < ANSWER_WITHIN_S, (f"the thread's next question took {took:.1f} s to answer after Redis "
                                            f"came back: a lock left behind had to expire{logs(replicas)}")
            assert all(r.alive() for r in replicas), logs(replicas)
    finally:
        for replica in replicas:
            replica.stop(timeout=30)
        proxy.stop_thread()
        slack.stop_thread()
        llm.stop_thread()

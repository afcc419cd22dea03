"""Slack front-end benchmarks against the loopback fake Slack (real bolt, real slack_sdk) and the fake LLM.

The fake LLM answers after 200 ms and streams 50 tokens a second; the fake Slack enforces Slack's own limits
(chat.update Tier 3: 50 a minute per workspace, burst 10; chat.postMessage about 1 a second per channel), and the
bot runs with its production settings (one edit a second, the default budgets).

- `slack_placeholder_ms_p50`: the event sent over Socket Mode → the "Thinking…" placeholder posted.
- `slack_first_token_visible_ms_p50`: the first token reaching the renderer → the edit showing it answered.
- `slack_updates_per_reply`: chat.update calls per answer (placeholder edits, paced text, final, blocks).
- Under 20 concurrent threads in one workspace: `slack_429_count` and `slack_final_delivered_ratio` (final
  text containing the whole answer, without the in-progress marker).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

FAKE_TTFT_S = 0.2
TOKENS_PER_S = 50
SEQUENTIAL = 8
CONCURRENT = 20
ANSWER = ("Timeouts usually mean the client gives up before the API answers. Set the client timeout to 30 seconds, "
          "retry 429 and 5xx responses with exponential backoff starting at one second, and send an idempotency "
          "key with every POST so a retry never creates a duplicate. Large imports should use the bulk endpoint "
          "instead of one huge request. If timeouts persist, check the status page and write to "
          "support@lumenly.io with the request ID from the error.")


async def _measure(data_dir: Path) -> dict[str, float]:
    from pydantic import SecretStr

    from bots.slack.app import SlackFrontend
    from bots.slack.mrkdwn import to_mrkdwn
    from core.orchestrator import build_orchestrator
    from bench.corpus import ingested_copy
    from tests.conftest import make_settings
    from tests.fakes.openai_server import FakeOpenAI, Reply, default_responder, requested_schema
    from tests.fakes.slack import CHANNEL, FakeSlack

    ingested_copy(data_dir)
    async with FakeOpenAI(ttft_s=FAKE_TTFT_S, tokens_per_s=TOKENS_PER_S) as llm, FakeSlack() as slack:
        llm.responder = lambda body: default_responder(body) if requested_schema(body) or body.get("tools") \
            else Reply(text=ANSWER)
        settings = make_settings(data_dir, llm_provider="openai", openai_base_url=llm.base_url,
                                 openai_api_key="sk-bench", slack_bot_token=SecretStr(slack.bot_token),
                                 slack_app_token=SecretStr(slack.app_token), slack_api_url=slack.api_url)
        orchestrator = await build_orchestrator(settings)
        bot = SlackFrontend(settings, orchestrator)
        try:
            await bot.start()
            await slack.wait_for_connection()
            placeholder, visible = [], []
            for i in range(SEQUENTIAL):
                while bot.limits.updates.ops_in_window() > 3:  # latency, not queueing: let the budget refill
                    await asyncio.sleep(0.1)
                event = slack.app_mention(f"My API integration keeps timing out (case {i}). How do I fix this?")
                sent = time.monotonic()
                await slack.send_event(event)
                await slack.wait_for(lambda: slack.bot_messages(CHANNEL, event["ts"]), timeout=30)
                await bot.idle()
                outcome = bot.outcomes[-1]
                placeholder.append((outcome.placeholder_at - sent) * 1000)
                visible.append((outcome.first_token_at - outcome.first_token_received_at) * 1000)
            updates_per_reply = len(slack.calls_to("chat.update")) / SEQUENTIAL

            slack.rate_limited_count = 0
            channels = [CHANNEL, *(f"C0BENCH{n:04d}" for n in range(3))]
            for channel in channels[1:]:
                slack.add_channel(channel, channel.lower())
            events = [slack.app_mention(f"Why does my API time out? (thread {i})", channel=channels[i % 4])
                      for i in range(CONCURRENT)]
            await asyncio.gather(*(slack.send_event(e) for e in events))
            await slack.wait_for(lambda: all(slack.bot_messages(e["channel"], e["ts"]) for e in events), timeout=60)
            await asyncio.wait_for(bot.idle(), 600)
            expected = to_mrkdwn(ANSWER)
            delivered = sum(1 for e in events for m in slack.bot_messages(e["channel"], e["ts"])
                            if expected in m.text and "▌" not in m.text)
        finally:
            await bot.stop()
            await orchestrator.aclose()
    return {
        "slack_placeholder_ms_p50": round(statistics.median(placeholder), 3),
        "slack_first_token_visible_ms_p50": round(statistics.median(visible), 3),
        "slack_updates_per_reply": round(updates_per_reply, 2),
        "slack_429_count": slack.rate_limited_count,
        "slack_final_delivered_ratio": round(delivered / CONCURRENT, 3),
    }


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(_measure(Path(tmp)))


if __name__ == "__main__":
    print(run())

"""Slack front-end benchmarks against the loopback fake Slack (real bolt, real slack_sdk) and the fake LLM.

The fake LLM answers after 200 ms and streams 50 tokens a second; the fake Slack enforces Slack's own limits
(chat.update Tier 3: 50 a minute per workspace, burst 10; chat.postMessage about 1 a second per channel), and the
bot runs with its production settings (one edit a second, the default budgets, `slack_streaming="edit"`).

Single replies (`SEQUENTIAL` mentions in a row in one channel, each answered in its thread; before each the bot's
workspace edit budget is let refill to at most 3 writes in its window, so these measure latency, not queueing).
Each answer is `bench.bench_discord.ANSWER`, 150 tokens (about 3 s of streaming):
- `slack_placeholder_ms_p50`: the event sent over Socket Mode → the first message posted in the thread
  (`ReplyOutcome.placeholder_at`).
- `slack_first_token_visible_ms_p50`: the first token reaching the renderer → the write showing it
  (`ReplyOutcome.first_token_at - first_token_received_at`).
- `slack_final_lag_ms_p50`: the model's last token (when the fake OpenAI server wrote the last token-carrying
  chunk of that reply's answer completion, `RecordedRequest.last_token_at`) → the fake Slack handling the write
  that made the final text visible: the first version of the reply's last message whose text is its final text
  (without the in-progress marker `▌`, with the whole answer) and whose blocks carry the feedback buttons. Both
  on `time.monotonic`.
- `slack_updates_per_reply`: chat.update calls per answer (placeholder edits, paced text, final, blocks).

A burst: `CONCURRENT` mentions at once over 4 channels of one workspace (one shared chat.update budget), each
answered with the shorter `BURST_ANSWER` (about 70 tokens) to keep the run near a minute and a half.

Whole module (single replies and burst):
- `slack_429_count`: `ratelimited` answers from the fake.
- `slack_final_delivered_ratio`: the share of replies whose final text (the whole answer, without the marker)
  landed.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

FAKE_TTFT_S = 0.2
TOKENS_PER_S = 50
SEQUENTIAL = 8
CONCURRENT = 20
BURST_ANSWER = ("Timeouts usually mean the client gives up before the API answers. Set the client timeout to 30 seconds, "
          "retry 429 and 5xx responses with exponential backoff starting at one second, and send an idempotency "
          "key with every POST so a retry never creates a duplicate. Large imports should use the bulk endpoint "
          "instead of one huge request. If timeouts persist, check the status page and write to "
          "support@lumenly.io with the request ID from the error.")


MARKER = "▌"


def _final_at(messages: list[Any]) -> float | None:
    """When the fake Slack handled the write that made the reply's final text visible: the first version of its
    last message with the final text (no marker, the answer's end) and the feedback buttons; None if none did."""
    from bench.bench_discord import ANSWER_END

    if not messages:
        return None
    last = messages[-1]
    if MARKER in last.text or ANSWER_END not in last.text:
        return None
    for version in last.versions:
        buttons = any(block.get("type") == "actions" and block.get("block_id") == "feedback"
                      for block in version.blocks or [])
        if version.text == last.text and buttons:
            return version.at
    return None


async def _measure(data_dir: Path) -> dict[str, float]:
    from pydantic import SecretStr

    from bots.slack.app import SlackFrontend
    from bots.slack.mrkdwn import to_mrkdwn
    from core.orchestrator import build_orchestrator
    from bench.bench_discord import ANSWER, answer_responder, last_token_at
    from bench.corpus import ingested_copy
    from tests.conftest import make_settings
    from tests.fakes.openai_server import FakeOpenAI, question_of
    from tests.fakes.slack import CHANNEL, FakeSlack

    ingested_copy(data_dir)
    async with FakeOpenAI(ttft_s=FAKE_TTFT_S, tokens_per_s=TOKENS_PER_S) as llm, FakeSlack() as slack:
        single, burst = answer_responder(ANSWER), answer_responder(BURST_ANSWER)
        llm.responder = lambda body: burst(body) if "(thread " in question_of(body) else single(body)
        settings = make_settings(data_dir, llm_provider="openai", openai_base_url=llm.base_url,
                                 openai_api_key="sk-bench", slack_bot_token=SecretStr(slack.bot_token),
                                 slack_app_token=SecretStr(slack.app_token), slack_api_url=slack.api_url)
        orchestrator = await build_orchestrator(settings)
        bot = SlackFrontend(settings, orchestrator)
        try:
            await bot.start()
            await slack.wait_for_connection()
            placeholder, visible, lag = [], [], []
            delivered = 0
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
                final = _final_at(slack.bot_messages(CHANNEL, event["ts"]))
                if final is not None:
                    delivered += 1
                    lag.append((final - last_token_at(llm, f"(case {i})")) * 1000)
            updates_per_reply = len(slack.calls_to("chat.update")) / SEQUENTIAL

            channels = [CHANNEL, *(f"C0BENCH{n:04d}" for n in range(3))]
            for channel in channels[1:]:
                slack.add_channel(channel, channel.lower())
            events = [slack.app_mention(f"Why does my API time out? (thread {i})", channel=channels[i % 4])
                      for i in range(CONCURRENT)]
            await asyncio.gather(*(slack.send_event(e) for e in events))
            await slack.wait_for(lambda: all(slack.bot_messages(e["channel"], e["ts"]) for e in events), timeout=60)
            await asyncio.wait_for(bot.idle(), 600)
            expected = to_mrkdwn(BURST_ANSWER)
            delivered += sum(1 for e in events for m in slack.bot_messages(e["channel"], e["ts"])
                             if expected in m.text and MARKER not in m.text)
        finally:
            await bot.stop()
            await orchestrator.aclose()
    return {
        "slack_placeholder_ms_p50": round(statistics.median(placeholder), 3),
        "slack_first_token_visible_ms_p50": round(statistics.median(visible), 3),
        "slack_final_lag_ms_p50": round(statistics.median(lag), 3) if lag else float("inf"),
        "slack_updates_per_reply": round(updates_per_reply, 2),
        "slack_429_count": slack.rate_limited_count,
        "slack_final_delivered_ratio": round(delivered / (SEQUENTIAL + CONCURRENT), 3),
    }


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(_measure(Path(tmp)))


if __name__ == "__main__":
    print(run())

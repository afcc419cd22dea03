"""Discord benchmarks: how soon the first words are visible, how soon the final text lands once the model is done,
how many edits a reply costs, and how ten concurrent replies in one channel share Discord's 5-writes-per-5-s limit.

Everything real but the two servers: the bot's `DiscordFrontend` (discord.py 2.x) against the loopback fake
Discord, the orchestrator against the fake OpenAI server at 200 ms to first token and 50 tokens/s. Every answer is
`ANSWER`, 150 tokens (words, as the fake streams them): about 3 s of streaming; routing calls (tools) are answered
by the fake's default responder.

Times: "visible" is when the fake Discord had handled the write (a message create or edit answered 200) whose
resulting content is the one described; "the model's last token" is when the fake OpenAI server wrote the last
token-carrying chunk of that reply's answer completion (`RecordedRequest.last_token_at`). All on `time.monotonic`.
"Answer text" is content that does not start with a `-#` subtext line (the "Thinking…" placeholder and the
"looking into it…" status are only that line); "final text" is the reply's last message in its final state: its
content once the reply is over, without the in-progress marker `▌`, ending with the agent footer
(`-# Technical…`).

Single replies (one mention -> one thread, `SEQUENTIAL` in a row, each waiting for the previous to finish):
- `discord_first_token_visible_ms_p50`: the core's first `Token` reaching the renderer
  (`ReplyOutcome.first_token_received_at`) -> the first write showing answer text.
- `discord_final_lag_ms_p50`: the model's last token -> the final text visible.
- `discord_first_text_ms_p50`, `discord_final_text_ms_p50` (no target): the mention sent -> the first answer
  text visible / the final text visible.
- `discord_edits_per_reply`: mean message edits per reply (`ReplyOutcome.edits`; the first post not counted).

A burst: `CONCURRENT` mentions sent at once in one channel where threads are refused
(`fake.deny_thread_creation`), so every reply is a reply in that channel and all share its one budget:
- `discord_burst_first_text_ms_p50`: per reply, its mention sent -> the first write of that reply's messages
  showing answer text; p50 over the replies.
- `discord_burst_all_final_ms`: the first mention sent -> the last of the final texts visible.

Whole module (single replies and burst):
- `discord_429_count`: 429s answered by the fake.
- `discord_final_delivered_ratio`: the share of replies that ended `done` with their final text visible (the
  whole answer, no marker, agent footer).
"""

from __future__ import annotations

import asyncio
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

FAKE_TTFT_S = 0.2
TOKENS_PER_S = 50
SEQUENTIAL = 12
CONCURRENT = 10
QUESTION = "My API integration keeps timing out. How do I fix this?"
# 150 tokens as the fake model streams them (one word with its trailing whitespace per chunk).
ANSWER = (
    "Timeouts usually mean the client gives up before the API has answered, so start with the client itself. "
    "Set the request timeout to 30 seconds: many HTTP libraries default to 10, which is too short for large "
    "exports. Then make retries safe and patient:\n\n"
    "1. Retry 429 and 5xx responses with exponential backoff, starting at one second and doubling up to 32 "
    "seconds, and honour the Retry-After header when it is present.\n"
    "2. Send an Idempotency-Key header with every POST, so a retried request never creates a duplicate record.\n"
    "3. Keep each request small: use the bulk endpoint for imports of more than 500 records instead of one huge "
    "call.\n\n"
    "If requests still time out after that, check the status page for an ongoing incident, note the request ID "
    "from the error response and the time it happened, and write to support@lumenly.io so we can trace it in our "
    "logs."
)
ANSWER_END = "so we can trace it in our logs."
MARKER = "▌"
FOOTER = re.compile(r"\n-# (Billing|Technical|Policy)\b[^\n]*$")


def answer_responder(answer: str) -> Any:
    """The fake model's responder: `answer` for an answer request, the default for routing (tools/schemas)."""
    from tests.fakes.openai_server import Reply, default_responder, requested_schema

    return lambda body: (default_responder(body) if requested_schema(body) is not None or body.get("tools")
                         else Reply(text=answer))


def last_token_at(llm: Any, tag: str) -> float:
    """When the fake model wrote the last token of the answer to the question containing `tag` (the newest such
    completion if it was retried). Routing calls (tools, structured output) are not answers."""
    from tests.fakes.openai_server import question_of, requested_schema

    answers = [r for r in llm.chat_requests if r.streamed and not r.body.get("tools")
               and requested_schema(r.body) is None and tag in question_of(r.body) and r.last_token_at is not None]
    if not answers:
        raise RuntimeError(f"no streamed answer completion for {tag!r}")
    return answers[-1].last_token_at


def _writes(fake: Any, message_ids: set[int]) -> list[tuple[float, str]]:
    """(when handled, content after the write) of every successful create or edit of these messages, in order."""
    found = []
    for request in fake.requests:
        response = request.response
        if (request.status == 200 and request.method in ("POST", "PATCH") and "/messages" in request.path
                and isinstance(response, dict) and int(response.get("id") or 0) in message_ids):
            found.append((request.at, str(response.get("content") or "")))
    return found


def _first_text_at(fake: Any, outcome: Any) -> float:
    """When the first write of this reply's messages showing answer text was handled."""
    ids = {int(handle.id) for handle in outcome.handles}
    for at, content in _writes(fake, ids):
        if content and not content.startswith("-#"):
            return at
    raise RuntimeError(f"no answer text in messages {sorted(ids)}")


def _final_at(fake: Any, outcome: Any) -> float | None:
    """When the reply's final text became visible; None if it never did (not delivered)."""
    if not (outcome.delivered and outcome.status == "done" and outcome.handles):
        return None
    last_id = int(outcome.handles[-1].id)
    final = fake.message(last_id)["content"]
    if MARKER in final or not FOOTER.search(final) or ANSWER_END not in final:
        return None
    return next((at for at, content in _writes(fake, {last_id}) if content == final), None)


async def _measure(data_dir: Path) -> dict[str, float]:
    from bots.discord.bot import DiscordFrontend
    from core.orchestrator import build_orchestrator
    from bench.corpus import ingested_copy
    from tests.conftest import make_settings
    from tests.fakes.discord import FakeDiscord
    from tests.fakes.openai_server import FakeOpenAI

    ingested_copy(data_dir)
    async with FakeOpenAI(ttft_s=FAKE_TTFT_S, tokens_per_s=TOKENS_PER_S) as llm, FakeDiscord() as fake:
        llm.responder = answer_responder(ANSWER)
        core = await build_orchestrator(make_settings(data_dir, llm_provider="openai", openai_base_url=llm.base_url,
                                                      openai_api_key="sk-bench"))
        settings = make_settings(data_dir, discord_token=fake.token, discord_guild_id=fake.guild_id)
        frontend = DiscordFrontend(settings, core, guild_ready_timeout=0.05)
        await frontend.start()
        try:
            general, support = fake.channel_id("general"), fake.channel_id("support")
            visible_ms, lag_ms, first_text_ms, final_text_ms, edits = [], [], [], [], []
            delivered = 0
            for i in range(SEQUENTIAL):
                sent = time.monotonic()
                await fake.user_message(general, f"{QUESTION} (case {i})")
                await fake.wait_for(lambda: len(frontend.recent) == i + 1, timeout=30)
                _, outcome = frontend.recent[-1]
                assert outcome.first_token_received_at is not None, "the core sent no token"
                first_text = _first_text_at(fake, outcome)
                visible_ms.append((first_text - outcome.first_token_received_at) * 1000)
                first_text_ms.append((first_text - sent) * 1000)
                edits.append(outcome.edits)
                final = _final_at(fake, outcome)
                if final is not None:
                    delivered += 1
                    lag_ms.append((final - last_token_at(llm, f"(case {i})")) * 1000)
                    final_text_ms.append((final - sent) * 1000)

            fake.deny_thread_creation(support)  # every reply in `support` itself: one shared budget
            done_before = len(frontend.recent)
            sent_at: dict[int, float] = {}

            async def mention(i: int) -> None:
                started = time.monotonic()
                message = await fake.user_message(support, f"{QUESTION} (burst {i})")
                sent_at[int(message["id"])] = started

            await asyncio.gather(*(mention(i) for i in range(CONCURRENT)))
            await fake.wait_for(lambda: len(frontend.recent) == done_before + CONCURRENT, timeout=120)
            burst_first_ms, burst_finals = [], []
            for _, outcome in list(frontend.recent)[done_before:]:
                first = fake.message(outcome.handles[0].id)
                asked = sent_at[int(first["message_reference"]["message_id"])]
                burst_first_ms.append((_first_text_at(fake, outcome) - asked) * 1000)
                final = _final_at(fake, outcome)
                if final is not None:
                    delivered += 1
                    burst_finals.append(final)
            all_final_ms = ((max(burst_finals) - min(sent_at.values())) * 1000 if len(burst_finals) == CONCURRENT
                            else float("inf"))
            count_429 = fake.rate_limited_count
        finally:
            await frontend.stop()
            await core.aclose()
    return {
        "discord_first_token_visible_ms_p50": round(statistics.median(visible_ms), 3),
        "discord_final_lag_ms_p50": round(statistics.median(lag_ms), 3) if lag_ms else float("inf"),
        "discord_first_text_ms_p50": round(statistics.median(first_text_ms), 3),
        "discord_final_text_ms_p50": round(statistics.median(final_text_ms), 3) if final_text_ms else float("inf"),
        "discord_edits_per_reply": round(statistics.mean(edits), 3),
        "discord_burst_first_text_ms_p50": round(statistics.median(burst_first_ms), 3),
        "discord_burst_all_final_ms": round(all_final_ms, 3),
        "discord_429_count": count_429,
        "discord_final_delivered_ratio": round(delivered / (SEQUENTIAL + CONCURRENT), 3),
    }


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(_measure(Path(tmp)))


if __name__ == "__main__":
    print(run())

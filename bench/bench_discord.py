"""Discord benchmarks: how soon the first words are visible, how many edits a reply costs, and whether ten
concurrent replies in one channel stay under Discord's 5-writes-per-5-s limit.

Everything real but the two servers: the bot's `DiscordFrontend` (discord.py 2.x) against the loopback fake
Discord, the orchestrator against the fake OpenAI server at 200 ms to first token and 50 tokens/s.

- `discord_first_token_visible_ms_p50`: from the moment the core's first `Token` reached the reply to the moment
  the fake Discord handled the edit carrying the first answer text (one mention -> one thread, 12 in a row).
- `discord_edits_per_reply`: mean message edits per reply in that run (the placeholder post not counted).
- `discord_429_count`, `discord_final_delivered_ratio`: ten mentions at once in one channel where threads are
  not allowed, so all ten replies share the channel's real budget (5 per 5 s); 429s as counted by the fake, and
  the share of replies whose final text (with its agent footer) landed.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import tempfile
from pathlib import Path

FAKE_TTFT_S = 0.2
TOKENS_PER_S = 50
SEQUENTIAL = 12
CONCURRENT = 10
QUESTION = "My API integration keeps timing out. How do I fix this?"
FOOTER = re.compile(r"\n-# (Billing|Technical|Policy)\b[^\n]*$")


def _first_text_at(fake, channel_id: int, after: float) -> float:
    """When the fake handled the first write in `channel_id` showing answer text (not a `-#` status line)."""
    for request in fake.requests:
        body = request.body
        if (request.at >= after and f"/channels/{channel_id}/messages" in request.path
                and request.method in ("POST", "PATCH") and isinstance(body, dict)
                and not str(body.get("content", "-#")).startswith("-#")):
            return request.at
    raise RuntimeError(f"no answer text reached channel {channel_id}")


async def _measure(data_dir: Path) -> dict[str, float]:
    from bots.discord.bot import DiscordFrontend
    from core.orchestrator import build_orchestrator
    from bench.corpus import ingested_copy
    from tests.conftest import make_settings
    from tests.fakes.discord import FakeDiscord
    from tests.fakes.openai_server import FakeOpenAI

    ingested_copy(data_dir)
    async with FakeOpenAI(ttft_s=FAKE_TTFT_S, tokens_per_s=TOKENS_PER_S) as llm, FakeDiscord() as fake:
        core = await build_orchestrator(make_settings(data_dir, llm_provider="openai", openai_base_url=llm.base_url,
                                                      openai_api_key="sk-bench"))
        settings = make_settings(data_dir, discord_token=fake.token, discord_guild_id=fake.guild_id)
        frontend = DiscordFrontend(settings, core, guild_ready_timeout=0.05)
        await frontend.start()
        try:
            general, support = fake.channel_id("general"), fake.channel_id("support")
            visible_ms, edits = [], []
            for i in range(SEQUENTIAL):
                asked = await fake.user_message(general, f"{QUESTION} (case {i})")
                await fake.wait_for(lambda: len(frontend.recent) == i + 1, timeout=30)
                _, outcome = frontend.recent[-1]
                assert outcome.first_token_received_at is not None, "the core sent no token"
                seen = _first_text_at(fake, int(asked["id"]), outcome.first_token_received_at)
                visible_ms.append((seen - outcome.first_token_received_at) * 1000)
                edits.append(outcome.edits)

            fake.deny_thread_creation(support)  # every reply in `support` itself: one shared budget
            before_429 = fake.rate_limited_count
            done_before = len(frontend.recent)
            await asyncio.gather(*(fake.user_message(support, f"{QUESTION} (burst {i})") for i in range(CONCURRENT)))
            await fake.wait_for(lambda: len(frontend.recent) == done_before + CONCURRENT, timeout=120)
            burst = [outcome for _, outcome in list(frontend.recent)[done_before:]]
            delivered = sum(1 for o in burst if o.delivered and o.status == "done"
                            and FOOTER.search(fake.message(o.handles[-1].id)["content"]))
            count_429 = fake.rate_limited_count - before_429
        finally:
            await frontend.stop()
            await core.aclose()
    return {
        "discord_first_token_visible_ms_p50": round(statistics.median(visible_ms), 3),
        "discord_edits_per_reply": round(statistics.mean(edits), 3),
        "discord_429_count": count_429,
        "discord_final_delivered_ratio": delivered / CONCURRENT,
    }


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(_measure(Path(tmp)))

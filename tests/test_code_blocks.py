"""Code blocks stay whole on Slack and Discord (issue 10, part 6), end to end.

Each test streams a scripted answer from the fake OpenAI server through the real orchestrator, the real SDK
client of the platform (slack_sdk / discord.py) and its loopback fake, with a message limit of 500 characters so
a short answer already spans several messages; assertions read the final texts the fake platform holds, as a
user would see them.

- An answer whose first code block straddles the limit: the block fits in one message, so it must end up whole
  in one message, although it began streaming into the first message before that message filled up.
- An answer with a block longer than a message: it is split at line ends only, every message has balanced
  fences, and every reopened fence carries the language tag (on Discord; Slack's mrkdwn has no language tags, so
  there the check is that no piece starts with the tag printed as a line of code).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from pydantic import SecretStr

from bots.discord.bot import DiscordFrontend
from bots.slack.app import SlackFrontend
from bots.slack.mrkdwn import to_mrkdwn
from bots.slack.surface import SlackLimits
from core.orchestrator import build_orchestrator
from core.retry import RetryPolicy
from tests.conftest import make_settings
from tests.fakes.discord import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI, Reply, default_responder, requested_schema
from tests.fakes.slack import CHANNEL, FakeSlack, RateLimit

LIMIT = 500
FENCE = re.compile(r"^ {0,3}```")
QUESTION = "My uploads keep timing out. How do I retry them from the API client?"

INTRO = ("Uploads fail now and then when the network drops, so the client should retry them with a growing "
         "delay. Each retry waits twice as long as the one before, up to a ceiling of eight seconds. The client "
         "library has no retry of its own, so the loop below adds one.")
CODE_LINES = [
    "def upload_with_retries(client, path):",
    "    delay = 0.5",
    "    for attempt in range(5):",
    "        try:",
    "            return client.upload(path)",
    "        except TimeoutError:",
    "            time.sleep(delay)",
    "            delay = min(delay * 2, 8.0)",
    "    raise RuntimeError(path)",
]
BLOCK = "```python\n" + "\n".join(CODE_LINES) + "\n```"
# No paragraph break near the block (models often write none), so the cut cannot simply fall at one.
STRADDLING = f"{INTRO} Here is a complete example:\n{BLOCK}\n\nLog each retry, so a slow network shows."

LONG_LINES = [f"    results.append(client.upload('part_{i:02d}.bin', timeout=30))  # part {i}" for i in range(24)]
LONG_BLOCK = "```python\n" + "\n".join(LONG_LINES) + "\n```"
LONG = f"Upload the parts one by one:\n\n{LONG_BLOCK}\n\nThen check that every part was accepted."


def test_the_answers_exercise_what_they_claim() -> None:
    """Preconditions of the tests below: the first block starts inside the first message and ends past the
    limit, yet fits in one message; the long block does not fit in one."""
    start = STRADDLING.index("```")
    assert start < LIMIT - 100 and start + len(BLOCK) > LIMIT and len(BLOCK) < LIMIT - 150
    assert len(LONG_BLOCK) > 2 * LIMIT


def responder(answer: str, tokens_per_s: float):
    """Routing calls get the default structured answer; the answer call streams `answer` word by word."""
    def respond(body: dict) -> Reply:
        if requested_schema(body) or body.get("tools"):
            return default_responder(body)
        return Reply(text=answer, tokens_per_s=tokens_per_s)
    return respond


def llm_settings(base: Any, llm: FakeOpenAI, **overrides: Any) -> Any:
    return make_settings(base.data_dir, llm_provider="openai", openai_base_url=llm.base_url,
                         openai_api_key="sk-test", llm_timeout_s=10, **overrides)


def fenced_lines(text: str) -> tuple[list[str], list[str]]:
    """(the fence lines, the code lines between them) of one message."""
    fences, code, inside = [], [], False
    for line in text.split("\n"):
        if FENCE.match(line):
            fences.append(line)
            inside = not inside
        elif inside:
            code.append(line)
    return fences, code


def assert_block_whole_in_one_message(texts: list[str], block: str, code_lines: list[str]) -> None:
    assert len(texts) >= 2 and all(len(t) <= LIMIT for t in texts), [len(t) for t in texts]
    assert all(len(fenced_lines(t)[0]) % 2 == 0 for t in texts), texts
    holding = [t for t in texts if block in t]
    assert len(holding) == 1, f"the block is not whole in one message: {texts}"
    others = [line for t in texts if block not in t for line in fenced_lines(t)[1]]
    assert others == [], f"code outside the message holding the block: {others}"
    assert "```" not in texts[0], "part of the block stayed in the first message"
    assert sum(fenced_lines(t)[1] == code_lines for t in texts) == 1


def assert_split_at_line_ends(texts: list[str], opener: str) -> None:
    """Every message fits and has balanced fences; the code, read across messages, is the original lines in
    order (a mid-line cut would leave a piece that is no original line); every piece opens with `opener`."""
    assert all(len(t) <= LIMIT for t in texts), [len(t) for t in texts]
    pieces = []
    for text in texts:
        fences, code = fenced_lines(text)
        assert len(fences) % 2 == 0, text
        if fences:
            assert fences[0] == opener and all(f == "```" for f in fences[1::2]), fences
            pieces.append(code)
    assert len(pieces) >= 3, texts
    assert all(pieces), "an empty reopened block"
    assert [line for piece in pieces for line in piece] == LONG_LINES
    assert "```" not in texts[0], "the long block should start a message of its own"


# ---- Discord ---------------------------------------------------------------------------------------------------


async def discord_answer(base: Any, answer: str, tokens_per_s: float) -> tuple[list[str], list[list[str]]]:
    """Ask once on the fake Discord; returns the bot's final message texts in the thread and each message's
    edit history."""
    async with FakeOpenAI() as llm, FakeDiscord(rate_window_s=1.0) as fake:
        llm.responder = responder(answer, tokens_per_s)
        core = await build_orchestrator(llm_settings(base, llm),
                                        retry_policy=RetryPolicy(max_retries=1, base_delay_s=0.01))
        frontend = DiscordFrontend(
            make_settings(base.data_dir, discord_token=fake.token, discord_guild_id=fake.guild_id,
                          discord_edit_window_s=1.0, discord_max_chars=LIMIT),
            core, guild_ready_timeout=0.05, ready_timeout_s=10)
        try:
            await frontend.start()
            try:
                asked = await fake.user_message(fake.channel_id("general"), QUESTION)
                await fake.wait_for(lambda: len(frontend.recent) >= 1, timeout=60)
            finally:
                await frontend.stop()
        finally:
            await core.aclose()
        [(_, outcome)] = list(frontend.recent)
        assert outcome.status == "done" and outcome.delivered
        messages = fake.messages_in(int(asked["id"]), from_bot=True)
        return [m["content"] for m in messages], [[e["content"] for e in fake.edits_of(int(m["id"]))]
                                                  for m in messages]


async def test_discord_a_block_straddling_the_limit_ends_whole_in_the_next_message(corpus_settings) -> None:
    # Slow enough that the block is still streaming (unclosed) when the first message fills up.
    texts, edits = await discord_answer(corpus_settings, STRADDLING, tokens_per_s=25)
    assert any("```python" in e for e in edits[0]), "the block never streamed into the first message"
    assert_block_whole_in_one_message(texts, BLOCK, CODE_LINES)
    assert texts[0].startswith(INTRO.split(". ")[0]) and texts[0].endswith("-# continued below ↓")


async def test_discord_a_block_longer_than_a_message_is_split_at_line_ends_with_its_tag(corpus_settings) -> None:
    texts, _ = await discord_answer(corpus_settings, LONG, tokens_per_s=150)
    assert_split_at_line_ends(texts, "```python")


# ---- Slack -----------------------------------------------------------------------------------------------------


async def slack_answer(base: Any, answer: str, tokens_per_s: float) -> tuple[list[str], list[list[str]]]:
    """Ask once on the fake Slack (Socket Mode); returns the bot's final message texts in the thread and each
    message's version history."""
    async with FakeOpenAI() as llm, FakeSlack(limits={"chat.update": RateLimit(per_minute=1200, burst=20)}) as slack:
        llm.responder = responder(answer, tokens_per_s)
        settings = llm_settings(base, llm, slack_bot_token=SecretStr(slack.bot_token),
                                slack_app_token=SecretStr(slack.app_token), slack_api_url=slack.api_url,
                                slack_edit_interval_s=0.1, slack_max_chars=LIMIT)
        core = await build_orchestrator(settings, retry_policy=RetryPolicy(max_retries=1, base_delay_s=0.01))
        frontend = SlackFrontend(settings, core, limits=SlackLimits(updates_per_window=20, window_s=1.0))
        try:
            await frontend.start()
            try:
                await slack.wait_for_connection()
                event = slack.app_mention(QUESTION)
                await slack.send_event(event)
                await slack.wait_for(lambda: slack.bot_messages(CHANNEL, event["ts"]), timeout=30)
                await asyncio.wait_for(frontend.idle(), 60)
            finally:
                await frontend.stop()
        finally:
            await core.aclose()
        messages = slack.bot_messages(CHANNEL, event["ts"])
        return [m.text for m in messages], [[v.text for v in m.versions] for m in messages]


async def test_slack_a_block_straddling_the_limit_ends_whole_in_the_next_message(corpus_settings) -> None:
    texts, versions = await slack_answer(corpus_settings, STRADDLING, tokens_per_s=25)
    assert any("```" in v for v in versions[0]), "the block never streamed into the first message"
    assert_block_whole_in_one_message(texts, to_mrkdwn(BLOCK), CODE_LINES)
    assert texts[0].startswith("*Technical*\n" + INTRO.split(". ")[0]) and texts[0].endswith("_(continued below)_")


async def test_slack_a_block_longer_than_a_message_is_split_at_line_ends(corpus_settings) -> None:
    """Slack drops a fence's language tag (mrkdwn would print it as a first line of code), so every piece opens
    with a bare fence; a tag leaking into a reopened piece would show up as a code line that is not original."""
    texts, _ = await slack_answer(corpus_settings, LONG, tokens_per_s=150)
    assert_split_at_line_ends(texts, "```")



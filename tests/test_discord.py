"""The Discord front-end end to end: the REAL discord.py client against the loopback fake Discord
(`tests/fakes/discord.py`) and the real orchestrator, offline or against the fake OpenAI server.

Where a test needs Discord's rate limit to bite quickly it shrinks the window on both sides (the fake's
`rate_window_s` and DISCORD_EDIT_WINDOW_S) instead of waiting 5 s windows out; the logic is the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import discord
import pytest

from bots import metrics
from bots.discord.bot import MISSING_INTENT, NOT_HERE, RESET_DONE, RESET_WHERE, DiscordFrontend
from bots.discord.conversation import (
    ConversationMap,
    dm_key,
    is_allowed,
    reply_chain_key,
    strip_bot_mention,
    thread_key,
    thread_name,
)
from bots.discord.surface import MARKER, THINKING, platform_errors, render_discord
from bots.startup import StartupError
from bots.streaming import AgentTag, MessageTooLong, RateLimited, ReplyView, SurfaceGone
from core.events import SourceRef
from core.orchestrator import build_orchestrator
from core.retry import USER_MESSAGES, RetryPolicy
from tests.conftest import make_settings
from tests.fakes.discord import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI, Fault, Reply

TECH_Q = "My API integration keeps timing out. How do I fix this?"
FOOTER = re.compile(r"\n-# (Billing|Technical|Policy)( · Sources: .+)?$")
FENCE = re.compile(r"^ {0,3}```", re.M)
FAST_WINDOW_S = 1.0  # Discord's 5 writes per 5 s, as 5 per 1 s: the same pacing logic, 5x sooner


def fast_discord(**options: Any) -> FakeDiscord:
    """A fake Discord whose per-channel window is short (the bot's budget follows it in `running_bot`)."""
    return FakeDiscord(rate_window_s=FAST_WINDOW_S, **options)


# ---- harness ---------------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running_bot(fake: FakeDiscord, core: Any, base: Any, **overrides: Any) -> AsyncIterator[DiscordFrontend]:
    values: dict[str, Any] = {"discord_token": fake.token, "discord_guild_id": fake.guild_id,
                              "discord_edit_window_s": fake.limiter.window_s}
    values.update(overrides)
    frontend = DiscordFrontend(make_settings(base.data_dir, **values), core, guild_ready_timeout=0.05,
                               ready_timeout_s=10)
    await frontend.start()
    try:
        yield frontend
    finally:
        await frontend.stop()


async def replies(fake: FakeDiscord, frontend: DiscordFrontend, count: int, timeout: float = 20) -> list:
    """Wait until `count` replies have finished (final text landed); their (session key, outcome) pairs."""
    await fake.wait_for(lambda: len(frontend.recent) >= count, timeout=timeout)
    return list(frontend.recent)


async def llm_core(base: Any, llm: FakeOpenAI) -> Any:
    settings = make_settings(base.data_dir, llm_provider="openai", openai_base_url=llm.base_url,
                             openai_api_key="sk-test", llm_timeout_s=5)
    return await build_orchestrator(settings, retry_policy=RetryPolicy(max_retries=1, base_delay_s=0.01))


@pytest.fixture
async def offline_core(corpus_settings):
    core = await build_orchestrator(corpus_settings)
    yield core
    await core.aclose()


def bot_writes(fake: FakeDiscord) -> list[Any]:
    """Every message create/edit the bot sent (channel messages, interaction webhooks and callbacks)."""
    writes = []
    for request in fake.requests:
        body = request.body
        if request.method not in ("POST", "PATCH") or not isinstance(body, dict):
            continue
        if "/callback" in request.path:
            body = body.get("data") or {}
        if "content" in body:
            writes.append(body)
    return writes


def assert_never_pings(fake: FakeDiscord) -> None:
    writes = bot_writes(fake)
    assert writes and all(w.get("allowed_mentions") == {"parse": []} for w in writes), writes


def body_and_footer(content: str) -> tuple[str, str]:
    body, footer = content.rsplit("\n", 1)
    return body, footer


# ---- pure pieces -------------------------------------------------------------------------------------------------


def test_session_keys_thread_names_and_mention_stripping() -> None:
    assert thread_key(42) == "discord:thread:42" and dm_key(7) == "discord:dm:7"
    assert reply_chain_key(1, 2, 3) == "discord:1:2:3"
    assert strip_bot_mention("<@99> what  is\n<@!99> the plan?", 99) == "what is\nthe plan?"
    assert strip_bot_mention("<@99>", 99) == "" and strip_bot_mention("<@12> hi", 99) == "<@12> hi"
    long = thread_name("How   do I\nexport " + "data " * 60)
    assert len(long) == 100 and long.endswith("…") and "\n" not in long and "  " not in long
    assert thread_name("   ") == "Question"


def test_allow_lists_treat_a_thread_as_its_parent_and_leave_dms_alone() -> None:
    assert is_allowed([], [], guild_id=1, channel_id=2)
    assert not is_allowed([5], [], guild_id=1, channel_id=2)
    assert not is_allowed([], [3], guild_id=1, channel_id=2)
    assert is_allowed([1], [3], guild_id=1, channel_id=99, parent_id=3)
    assert is_allowed([5], [3], guild_id=None, channel_id=99)


def test_conversation_map_is_bounded_and_forgets_the_oldest() -> None:
    conversations = ConversationMap(capacity=2)
    conversations.remember([1, 2], "a")
    conversations.get(1)  # recently used: survives the next insert
    conversations.remember([3], "b")
    assert conversations.get(1) == "a" and conversations.get(2) is None and conversations.get(3) == "b"


def test_render_puts_agent_and_sources_in_a_subtext_footer_and_marks_progress() -> None:
    agent = AgentTag("billing", "Billing")
    sources = (SourceRef("Plans and pricing", "billing/plans.md"), SourceRef("Refunds", "billing/refunds.md"))
    assert render_discord(ReplyView()) == THINKING
    assert render_discord(ReplyView(agent=agent, status="routed")) == "-# Billing · looking into it…"
    streaming = render_discord(ReplyView(body="Pro costs", agent=agent, status="streaming"))
    assert streaming == f"Pro costs {MARKER}\n-# Billing · answering…"
    fenced = render_discord(ReplyView(body="Run:\n```sh\ncurl x", agent=agent, status="streaming"))
    assert fenced == f"Run:\n```sh\ncurl x\n```\n{MARKER}\n-# Billing · answering…"
    done = render_discord(ReplyView(body="Pro is $20.", agent=agent, status="done", sources=sources))
    assert done == "Pro is $20.\n-# Billing · Sources: Plans and pricing, Refunds"
    middle = render_discord(ReplyView(body="part one", agent=agent, status="streaming", is_last_part=False))
    assert middle == "part one\n-# continued below ↓" and MARKER not in middle
    error = render_discord(ReplyView(body="Partial", agent=agent, status="error", error_message="Try again."))
    assert error == "Partial\n⚠️ Try again.\n-# Billing"
    assert render_discord(ReplyView(status="error", error_message="Empty.")) == "⚠️ Empty."


def _http_error(status: int, body: dict, headers: dict | None = None) -> discord.HTTPException:
    response = SimpleNamespace(status=status, reason="x", headers=headers or {})
    return discord.HTTPException(response, body)  # type: ignore[arg-type]


def test_discord_errors_map_to_rate_limited_too_long_and_gone() -> None:
    with pytest.raises(RateLimited) as limited:
        with platform_errors():
            raise _http_error(429, {"message": "You are being rate limited.", "retry_after": 1.5},
                              {"X-RateLimit-Reset-After": "1.5"})
    assert limited.value.retry_after == 1.5
    with pytest.raises(MessageTooLong):
        with platform_errors():
            raise _http_error(400, {"code": 50035, "message": "Invalid Form Body", "errors": {"content": {
                "_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}]}}})
    with pytest.raises(SurfaceGone):  # access removed: retrying cannot help
        with platform_errors():
            raise discord.Forbidden(SimpleNamespace(status=403, reason="x"), {"code": 50013, "message": "no"})
    with pytest.raises(discord.HTTPException):  # anything else is the renderer's to retry
        with platform_errors():
            raise _http_error(500, {"code": 0, "message": "Internal Server Error"})


# ---- mentions, threads, follow-ups, replies, DMs ------------------------------------------------------------


async def test_mention_opens_a_thread_and_streams_the_answer_there(corpus_settings) -> None:
    async with FakeOpenAI(ttft_s=0.1, tokens_per_s=50) as llm, FakeDiscord() as fake:
        core = await llm_core(corpus_settings, llm)
        try:
            async with running_bot(fake, core, corpus_settings) as frontend:
                general = fake.channel_id("general")
                asked = await fake.user_message(general, TECH_Q)
                [(key, outcome)] = await replies(fake, frontend, 1)
        finally:
            await core.aclose()
    [thread] = fake.threads
    assert thread["id"] == asked["id"] and thread["parent_id"] == str(general) and thread["name"] == TECH_Q
    assert key == thread_key(int(thread["id"])) and fake.messages_in(general, from_bot=True) == []
    [message] = fake.messages_in(int(thread["id"]), from_bot=True)
    body, footer = body_and_footer(message["content"])
    assert body == outcome.answer.strip() and "Here is what I found" in body
    assert footer.startswith("-# Technical · Sources: ")
    edits = [e["content"] for e in fake.edits_of(int(message["id"]))]
    assert len(edits) >= 1 and edits[-1] == message["content"]
    # typing was shown in the thread while the first words were awaited, and the first write carried them (with
    # the agent tag): no "Thinking…" placeholder and no edit of its own for the tag, so no write is wasted
    writes = [r for r in fake.requests if r.method in ("POST", "PATCH") and isinstance(r.body, dict)
              and f"/channels/{thread['id']}/messages" in r.path]
    assert writes[0].method == "POST" and writes[0].body["content"].startswith("Here")
    assert writes[0].body["content"].endswith("-# Technical · answering…")
    streamed = [w.body["content"] for w in writes[:-1]]  # the first words, then progress: each a prefix of the end
    assert all(e.split("\n")[0].endswith(MARKER) and body.startswith(e.split(f" {MARKER}")[0]) for e in streamed)
    assert any(t.channel_id == int(thread["id"]) and t.at < writes[0].at for t in fake.typing_calls)
    assert_never_pings(fake)
    assert fake.rate_limited_count == 0 and fake.unhandled == []


async def test_follow_up_in_the_thread_is_answered_without_a_mention_and_remembered(corpus_settings,
                                                                                   offline_core) -> None:
    async with fast_discord() as fake:
        async with running_bot(fake, offline_core, corpus_settings) as frontend:
            asked = await fake.user_message(fake.channel_id("general"), "Do you comply with GDPR?")
            await replies(fake, frontend, 1)
            thread_id = int(asked["id"])
            await fake.user_message(thread_id, "How long do you keep backups?", mentions_bot=False)
            (first_key, _), (second_key, outcome) = await replies(fake, frontend, 2)
    assert first_key == second_key == thread_key(thread_id) and len(fake.threads) == 1
    info = await offline_core.session_info(thread_key(thread_id))
    assert info is not None and info.turns == 2 and outcome.status == "done"
    answers = fake.messages_in(thread_id, from_bot=True)
    assert len(answers) >= 2 and FOOTER.search(answers[-1]["content"])


async def test_where_threads_are_forbidden_it_replies_and_a_reply_continues_the_chain(corpus_settings,
                                                                                    offline_core) -> None:
    async with fast_discord() as fake:
        general = fake.channel_id("general")
        fake.deny_thread_creation(general)
        async with running_bot(fake, offline_core, corpus_settings) as frontend:
            asked = await fake.user_message(general, "Do you comply with GDPR?")
            [(key, first)] = await replies(fake, frontend, 1)
            assert key == reply_chain_key(fake.guild_id, general, int(asked["id"]))
            answer = fake.message(first.handles[0].id)
            assert answer["message_reference"]["message_id"] == asked["id"] and answer["mentions"] == []
            await fake.user_message(general, "How long do you keep backups?", mentions_bot=False,
                                    message_reference=int(answer["id"]), reply_ping=False)
            await replies(fake, frontend, 2)
            # after a restart the map is empty: the chain is found from the replied-to message's own reference
            frontend.conversations = ConversationMap()
            await fake.user_message(general, "Where is my data hosted?", mentions_bot=False,
                                    message_reference=int(answer["id"]))
            keys = [k for k, _ in await replies(fake, frontend, 3)]
    assert fake.threads == [] and keys == [key] * 3
    info = await offline_core.session_info(key)
    assert info is not None and info.turns == 3


async def test_a_direct_message_is_answered_in_the_dm(corpus_settings, offline_core) -> None:
    async with FakeDiscord() as fake:
        async with running_bot(fake, offline_core, corpus_settings) as frontend:
            dm = int(fake.dm_channel()["id"])
            await fake.user_message(dm, "Do you comply with GDPR?")
            [(key, outcome)] = await replies(fake, frontend, 1)
    assert key == dm_key(dm) and outcome.delivered
    [answer] = fake.messages_in(dm, from_bot=True)
    assert answer["content"].endswith("-# Policy · Sources: GDPR compliance") and fake.threads == []


async def test_answers_keep_coming_after_the_gateway_connection_drops(corpus_settings, offline_core) -> None:
    async with FakeDiscord() as fake:
        async with running_bot(fake, offline_core, corpus_settings) as frontend:
            await fake.drop_connections()  # discord.py reconnects and RESUMEs; missed events are replayed
            dm = int(fake.dm_channel()["id"])
            await fake.user_message(dm, "Do you comply with GDPR?")  # sent while the bot is disconnected
            [(key, outcome)] = await replies(fake, frontend, 1, timeout=30)
    assert key == dm_key(dm) and outcome.delivered


async def test_a_bare_mention_gets_usage_help_and_no_thread(corpus_settings, offline_core) -> None:
    async with FakeDiscord() as fake:
        general = fake.channel_id("general")
        async with running_bot(fake, offline_core, corpus_settings):
            await fake.user_message(general, "   ")
            [help_message] = await fake.wait_for(lambda: fake.messages_in(general, from_bot=True))
    assert "/ask" in help_message["content"] and "mention me" in help_message["content"]
    assert fake.threads == [] and help_message["mentions"] == []


async def test_bots_and_its_own_messages_are_ignored(corpus_settings, offline_core) -> None:
    async with FakeDiscord() as fake:
        general = fake.channel_id("general")
        other_bot = fake.add_user("echo-bot", bot=True)
        async with running_bot(fake, offline_core, corpus_settings) as frontend:
            await fake.user_message(general, "Do you comply with GDPR?", author=other_bot)
            asked = await fake.user_message(general, "Do you comply with GDPR?")
            await replies(fake, frontend, 1)
            await asyncio.sleep(0.2)  # room for a reply loop to show itself
    assert len(frontend.recent) == 1 and [t["id"] for t in fake.threads] == [asked["id"]]
    assert len(fake.messages_in(int(asked["id"]), from_bot=True)) == 1


async def test_the_allow_list_ignores_other_channels_and_counts_threads_as_their_parent(corpus_settings,
                                                                                      offline_core) -> None:
    async with fast_discord() as fake:
        general, support = fake.channel_id("general"), fake.channel_id("support")
        async with running_bot(fake, offline_core, corpus_settings, discord_allowed_channels=[support]) as frontend:
            await fake.user_message(general, "Do you comply with GDPR?")
            command = await fake.slash_command("ask", {"question": "Do you comply with GDPR?"}, channel_id=general)
            asked = await fake.user_message(support, "Do you comply with GDPR?")
            await replies(fake, frontend, 1)
            await fake.user_message(int(asked["id"]), "How long do you keep backups?", mentions_bot=False)
            await replies(fake, frontend, 2)
    assert [t["parent_id"] for t in fake.threads] == [str(support)]
    assert [m for m in fake.messages_in(general, from_bot=True) if not m["flags"] & 64] == []
    [refusal] = [r for r in fake.interaction_responses if r.token == command["token"]]
    assert refusal.type == 4 and refusal.data["content"] == NOT_HERE and refusal.data["flags"] & 64


# ---- slash commands ----------------------------------------------------------------------------------------------


async def test_ask_is_deferred_at_once_and_streams_into_the_interaction_response(corpus_settings,
                                                                                offline_core) -> None:
    async with FakeDiscord() as fake:
        general = fake.channel_id("general")
        async with running_bot(fake, offline_core, corpus_settings) as frontend:
            assert {c["name"] for c in fake.commands(fake.guild_id)} == {"ask", "reset", "help"}
            assert fake.commands(None) == []  # DISCORD_GUILD_ID set: commands go to that guild only
            interaction = await fake.slash_command("ask", {"question": "What does the Enterprise plan cost?"},
                                                   channel_id=general)
            [(key, outcome)] = await replies(fake, frontend, 1)
    [response] = fake.interaction_responses
    assert response.type == 5  # deferred: Discord shows "is thinking…" while the answer is on its way
    original = fake.original_response(interaction)
    assert original is not None and not original["flags"] & (1 << 7)  # no longer loading
    body, footer = body_and_footer(original["content"])
    assert body == outcome.answer.strip() and footer.startswith("-# Billing")
    assert key == f"discord:{fake.guild_id}:{general}:ask:{interaction['id']}"
    assert len(fake.edits_of(int(original["id"]))) >= 2
    assert_never_pings(fake)


async def test_reset_in_a_thread_forgets_it_and_elsewhere_explains_where(corpus_settings, offline_core) -> None:
    async with fast_discord() as fake:
        general = fake.channel_id("general")
        async with running_bot(fake, offline_core, corpus_settings) as frontend:
            asked = await fake.user_message(general, "Do you comply with GDPR?")
            await replies(fake, frontend, 1)
            thread_id = int(asked["id"])
            assert await offline_core.session_info(thread_key(thread_id)) is not None
            elsewhere = await fake.slash_command("reset", channel_id=general)
            reset = await fake.slash_command("reset", channel_id=thread_id)
            done = await fake.wait_for(lambda: (fake.original_response(reset) or {}).get("content") == RESET_DONE)
    assert done and await offline_core.session_info(thread_key(thread_id)) is None
    [where] = [r for r in fake.interaction_responses if r.token == elsewhere["token"]]
    assert where.data["content"] == RESET_WHERE and where.data["flags"] & 64


async def test_help_explains_how_to_ask_and_commands_sync_globally_without_a_guild(corpus_settings,
                                                                                  offline_core) -> None:
    async with FakeDiscord() as fake:
        async with running_bot(fake, offline_core, corpus_settings, discord_guild_id=None) as frontend:
            assert {c["name"] for c in fake.commands(None)} == {"ask", "reset", "help"}
            assert "synced globally" in frontend.describe()
            await fake.slash_command("help")
            [response] = await fake.wait_for(lambda: fake.interaction_responses)
    assert response.type == 4 and response.data["flags"] & 64
    assert all(word in response.data["content"] for word in ("/ask", "/reset", "thread"))


# ---- streaming under Discord's limits ---------------------------------------------------------------------------


async def test_ten_concurrent_questions_in_one_channel_all_land_without_a_429(corpus_settings,
                                                                             offline_core) -> None:
    async with FakeDiscord(rate_window_s=0.5) as fake:
        general = fake.channel_id("general")
        fake.deny_thread_creation(general)  # every reply shares the channel's 5-per-window budget
        async with running_bot(fake, offline_core, corpus_settings) as frontend:
            questions = ["Do you comply with GDPR?", "What does the Enterprise plan cost?", TECH_Q,
                         "Can I get a refund?", "How do webhooks retry?"] * 2
            asked = await asyncio.gather(*(fake.user_message(general, f"{q} ({i})")
                                           for i, q in enumerate(questions)))
            done = await replies(fake, frontend, 10, timeout=60)
    assert fake.rate_limited_count == 0 and frontend.platform_429s == 0
    assert all(outcome.delivered and outcome.status == "done" for _, outcome in done)
    assert len({key for key, _ in done}) == 10
    writes = [r for r in fake.requests if re.search(rf"/channels/{general}/messages", r.path)
              and r.method in ("POST", "PATCH")]
    assert len(writes) >= 20  # four times the window's budget: the sharing was needed, not idle
    for message in asked:
        [first] = [m for m in fake.messages_in(general, from_bot=True)
                   if m.get("message_reference", {}).get("message_id") == message["id"]]
        outcome = next(o for _, o in done if o.handles[0].id == int(first["id"]))
        assert FOOTER.search(fake.message(outcome.handles[-1].id)["content"])


async def test_a_long_answer_splits_into_messages_under_2000_characters_without_breaking_fences(
        corpus_settings) -> None:
    code = "\n".join(f"    client.call(endpoint_{i}, timeout=30)  # retry {i}" for i in range(90))
    answer = ("Timeouts usually come from slow endpoints. " * 30 + "\n\nTry this:\n\n```python\n"
              + code + "\n```\n\n" + "Then check the dashboard again. " * 40)
    async with FakeOpenAI() as llm, fast_discord() as fake:
        llm.responder = lambda body: Reply(text=answer, chunk_size=25, tokens_per_s=400)
        core = await llm_core(corpus_settings, llm)
        try:
            async with running_bot(fake, core, corpus_settings) as frontend:
                asked = await fake.user_message(fake.channel_id("general"), TECH_Q)
                [(_, outcome)] = await replies(fake, frontend, 1)
        finally:
            await core.aclose()
    messages = [m["content"] for m in fake.messages_in(int(asked["id"]), from_bot=True)]
    assert len(messages) >= 3 and all(len(m) <= 2000 for m in messages)
    assert all(len(FENCE.findall(m)) % 2 == 0 for m in messages)
    assert all(m.endswith("\n-# continued below ↓") for m in messages[:-1]) and FOOTER.search(messages[-1])

    def words(text: str) -> list[str]:
        kept = [line for line in text.splitlines() if not FENCE.match(line) and not line.startswith("-# ")]
        return " ".join(kept).split()

    assert words("\n".join(messages)) == words(answer) and outcome.delivered
    assert fake.rate_limited_count == 0


async def test_model_output_never_pings_anyone(corpus_settings) -> None:
    async with FakeOpenAI() as llm, FakeDiscord() as fake:
        alice = fake.default_user["id"]
        llm.responder = lambda body: Reply(text=f"Heads up @everyone and @here, <@{alice}> asked this.")
        core = await llm_core(corpus_settings, llm)
        try:
            async with running_bot(fake, core, corpus_settings) as frontend:
                asked = await fake.user_message(fake.channel_id("general"), TECH_Q)
                await replies(fake, frontend, 1)
        finally:
            await core.aclose()
    [message] = fake.messages_in(int(asked["id"]), from_bot=True)
    assert "@everyone" in message["content"] and f"<@{alice}>" in message["content"]
    assert message["mentions"] == []
    assert_never_pings(fake)


# ---- errors, start-up, shutdown ------------------------------------------------------------------------------------


async def test_a_core_error_ends_the_message_with_a_readable_error(corpus_settings) -> None:
    async with FakeOpenAI() as llm, FakeDiscord() as fake:
        llm.faults.extend(Fault(status=500) for _ in range(10))
        core = await llm_core(corpus_settings, llm)
        errors_before = metrics.ERRORS.labels("discord", "llm_unavailable")._value.get()
        try:
            async with running_bot(fake, core, corpus_settings) as frontend:
                asked = await fake.user_message(fake.channel_id("general"), TECH_Q)
                [(_, outcome)] = await replies(fake, frontend, 1)
        finally:
            await core.aclose()
    [message] = fake.messages_in(int(asked["id"]), from_bot=True)
    assert message["content"].startswith(f"⚠️ {USER_MESSAGES['llm_unavailable']}")
    assert MARKER not in message["content"] and "500" not in message["content"]
    assert outcome.status == "error" and outcome.delivered
    assert metrics.ERRORS.labels("discord", "llm_unavailable")._value.get() == errors_before + 1


class RaisingCore:
    """An orchestrator whose `respond` blows up when called."""

    def respond(self, session_key: str, text: str, user: str | None = None) -> Any:
        raise RuntimeError("the database is on fire")


async def test_an_orchestrator_that_raises_still_gets_a_readable_message(corpus_settings) -> None:
    async with FakeDiscord() as fake:
        async with running_bot(fake, RaisingCore(), corpus_settings) as frontend:
            dm = int(fake.dm_channel()["id"])
            await fake.user_message(dm, "anything")
            [(_, outcome)] = await replies(fake, frontend, 1)
    [message] = fake.messages_in(dm, from_bot=True)
    assert message["content"] == f"⚠️ {USER_MESSAGES['internal']}" and outcome.delivered


async def test_missing_message_content_intent_stops_start_up_saying_what_to_enable(corpus_settings) -> None:
    async with FakeDiscord(privileged_intents_enabled=False) as fake:
        frontend = DiscordFrontend(make_settings(corpus_settings.data_dir, discord_token=fake.token), None,
                                   guild_ready_timeout=0.05, ready_timeout_s=10)
        with pytest.raises(StartupError) as error:
            await frontend.start()
        await fake.wait_for(lambda: fake.gateway_connections == 0)
    assert str(error.value) == MISSING_INTENT
    assert "Developer Portal" in MISSING_INTENT and "MESSAGE CONTENT INTENT" in MISSING_INTENT


async def test_a_bad_token_stops_start_up_saying_where_to_get_a_new_one(corpus_settings) -> None:
    async with FakeDiscord() as fake:
        frontend = DiscordFrontend(make_settings(corpus_settings.data_dir, discord_token="not-the-token"), None,
                                   guild_ready_timeout=0.05, ready_timeout_s=10)
        with pytest.raises(StartupError, match="Reset Token") as error:
            await frontend.start()
    assert "DISCORD_TOKEN" in str(error.value) and fake.gateway_connections == 0


async def test_stop_marks_a_reply_in_flight_as_interrupted_and_disconnects(corpus_settings) -> None:
    async with FakeOpenAI() as llm, FakeDiscord() as fake:
        llm.responder = lambda body: Reply(text="word " * 400, tokens_per_s=40)
        core = await llm_core(corpus_settings, llm)
        try:
            async with running_bot(fake, core, corpus_settings, drain_timeout_s=0) as frontend:  # cut at once
                asked = await fake.user_message(fake.channel_id("general"), TECH_Q)
                thread_id = int(asked["id"])
                await fake.wait_for(lambda: any("word" in m["content"] for m in fake.messages_in(thread_id)))
                await frontend.stop()
                assert fake.gateway_connections == 0 or await fake.wait_for(lambda: fake.gateway_connections == 0)
                [(_, outcome)] = list(frontend.recent)
        finally:
            await core.aclose()
    [message] = fake.messages_in(thread_id, from_bot=True)
    assert message["content"].startswith("word") and MARKER not in message["content"]
    assert f"⚠️ {USER_MESSAGES['interrupted']}" in message["content"]
    assert outcome.status == "interrupted" and outcome.delivered

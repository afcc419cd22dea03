"""Per-workspace settings and daily quotas: the store, the counters, and the refusals on Slack, Discord and the
web, each driven through its real client (slack_sdk/bolt, discord.py, aiohttp) against the loopback fakes with
the fake OpenAI server counting model calls; and `switchboard workspaces` through typer's CliRunner."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from typer.testing import CliRunner

from bots.admission import DISABLED
from bots.metrics import REGISTRY
from bots.slack.app import SlackFrontend
from bots.slack.surface import SlackLimits
from bots.web.server import create_app
from coordination.quotas import Limit, LocalQuotas, RedisQuotas, day_of, refusal_sentence
from core.orchestrator import build_orchestrator
from core.retry import RetryPolicy
from core.workspaces import Workspaces, narrow_agents, parse_value, workspaces_for
from tests.conftest import make_settings
from tests.fakes.discord import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI, Reply, default_responder, requested_schema
from tests.fakes.slack import CHANNEL, TEAM_ID, FakeSlack, RateLimit

ANSWER = "The Pro plan costs $49 per user per month, billed monthly or yearly."
TECH_Q = "My API integration keeps timing out. How do I fix this?"


def refusals(frontend: str, scope: str) -> float:
    return REGISTRY.get_sample_value("switchboard_quota_refusals_total", {"frontend": frontend, "scope": scope}) or 0.0


def answer_with(text: str):
    def responder(body: dict) -> Reply:
        return default_responder(body) if requested_schema(body) or body.get("tools") else Reply(text=text)
    return responder


@pytest.fixture
async def llm():
    async with FakeOpenAI(tokens_per_s=500) as fake:
        fake.responder = answer_with(ANSWER)
        yield fake


def with_llm(settings, llm: FakeOpenAI, **overrides):
    return settings.model_copy(update={"llm_provider": "openai", "openai_base_url": llm.base_url,
                                       "openai_api_key": SecretStr("sk-test"), **overrides})


# --- the counters and the store -------------------------------------------------------------------------------
async def test_local_quotas_count_all_or_nothing_per_utc_day_and_say_when_to_come_back() -> None:
    now = [dt.datetime(2026, 12, 2, 21, 30, tzinfo=dt.timezone.utc).timestamp()]
    quotas = LocalQuotas(clock=lambda: now[0])
    user, channel = Limit("user", "slack:T:U1", 2), Limit("channel", "slack:C1", 3)
    assert await quotas.take([user, channel]) is None
    assert await quotas.take([user, channel]) is None
    refused = await quotas.take([user, channel])
    assert refused is not None and refused.limit == user and refused.resets_at == day_of(now[0])[1]
    # nothing was counted for the refused question: another user in the channel still has one question left
    assert await quotas.take([Limit("user", "slack:T:U2", 2), channel]) is None
    assert (await quotas.take([Limit("user", "slack:T:U3", 2), channel])).limit == channel
    sentence = refusal_sentence(refused, now=now[0])
    assert sentence == ("You've reached today's limit of 2 questions for you; you can ask again in 2 h 30 min "
                        "(at 00:00 UTC).")
    assert await quotas.take([Limit("user", "x", 0)]) is None  # 0 = no limit
    now[0] += 3 * 3600  # past midnight UTC: a new day
    assert await quotas.take([user, channel]) is None


async def test_redis_quotas_are_shared_by_replicas_and_checked_atomically() -> None:
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    client = Redis.from_url("redis://127.0.0.1:6379/0", decode_responses=True)
    prefix = f"test-quotas-{uuid.uuid4().hex}"
    try:
        await client.ping()
    except RedisError:
        await client.aclose()
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    try:
        one, two = RedisQuotas(client, prefix=prefix), RedisQuotas(client, prefix=prefix)
        limit = Limit("workspace", "discord:42", 5)
        results = await asyncio.gather(*(q.take([limit]) for q in (one, two) * 4))
        assert sum(r is None for r in results) == 5 and all(r.limit == limit for r in results if r is not None)
        keys = [k async for k in client.scan_iter(f"{prefix}:*")]
        assert len(keys) == 1 and 0 < await client.ttl(keys[0]) <= 2 * 86_400
    finally:
        keys = [k async for k in client.scan_iter(f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_workspace_settings_default_from_the_environment_and_keep_only_what_was_set(tmp_path) -> None:
    settings = make_settings(tmp_path, workspace_daily_quota=50, slack_handoff_channel="C0STAFF001",
                             openai_model="gpt-4o-mini")
    store = Workspaces(settings)
    try:
        unknown = await store.get("slack", "T0NEVER001")
        assert (unknown.enabled, unknown.agents, unknown.daily_quota, unknown.handoff_channel, unknown.model,
                unknown.configured) == (True, None, 50, "C0STAFF001", "gpt-4o-mini", ())
        changed = await store.set("slack", "T0CLIENT01", {"agents": ["billing"], "daily_quota": 5, "model": "gpt-4o"})
        assert changed.agents == ("billing",) and changed.daily_quota == 5 and changed.handoff_channel == "C0STAFF001"
        back = await store.set("slack", "T0CLIENT01", {"daily_quota": None})  # `default`
        assert back.daily_quota == 50 and back.configured == ("agents", "model")
        assert [w.workspace_id for w in await store.all()] == ["T0CLIENT01"]
    finally:
        await store.aclose()
    assert parse_value("enabled", "no") is False and parse_value("daily_quota", "default") is None
    with pytest.raises(ValueError, match="whole number"):
        parse_value("daily_quota", "lots")
    with pytest.raises(ValueError, match="billing, technical"):
        parse_value("agents", "sales", ["billing", "technical"])
    assert narrow_agents(None, ("billing",)) == ("billing",) and narrow_agents(("policy",), None) == ("policy",)
    assert narrow_agents(("billing", "policy"), ("policy",)) == ("policy",)
    assert narrow_agents(("technical",), ("billing",)) == ("billing",)  # the workspace's contract wins


# --- Slack: the workspace's agents, its daily quota, and turned off ------------------------------------------
async def test_slack_workspace_agents_and_model_then_its_quota_refuses_without_calling_the_model(corpus_settings,
                                                                                            llm) -> None:
    async with FakeSlack(limits={"chat.update": RateLimit(per_minute=1200, burst=20)}) as slack:
        settings = with_llm(corpus_settings, llm, slack_bot_token=SecretStr(slack.bot_token),
                            slack_app_token=SecretStr(slack.app_token), slack_api_url=slack.api_url,
                            slack_edit_interval_s=0.05)
        orchestrator = await build_orchestrator(settings)
        frontend = SlackFrontend(settings, orchestrator, limits=SlackLimits(updates_per_window=20, window_s=1.0))
        try:
            await workspaces_for(orchestrator).set("slack", TEAM_ID, {"agents": ["billing"], "daily_quota": 1,
                                                                      "model": "gpt-client-a"})
            await frontend.start()
            await slack.wait_for_connection()
            first = slack.app_mention(TECH_Q)  # technical, but this workspace only has billing
            await slack.send_event(first)
            await slack.wait_for(lambda: frontend.outcomes, timeout=30)
            assert frontend.outcomes[-1].agent == "billing"
            assert slack.bot_messages(CHANNEL, first["ts"])[-1].text.startswith("*Billing*")
            answering = [r.body for r in llm.chat_requests if not requested_schema(r.body) and not r.body.get("tools")]
            assert answering and {b["model"] for b in answering} == {"gpt-client-a"}  # the workspace's model
            calls, refused_before = len(llm.chat_requests), refusals("slack", "workspace")

            second = slack.app_mention("How much is the Pro plan?")
            await slack.send_event(second)
            [reply] = await slack.wait_for(lambda: slack.bot_messages(CHANNEL, second["ts"]), timeout=10)
            await frontend.idle()
            assert reply.text.startswith("You've reached today's limit of 1 questions here; you can ask again in")
            assert len(llm.chat_requests) == calls and refusals("slack", "workspace") == refused_before + 1

            await workspaces_for(orchestrator).set("slack", TEAM_ID, {"enabled": False})
            third = slack.app_mention("How much is the Pro plan?")
            await slack.send_event(third)
            [off] = await slack.wait_for(lambda: slack.bot_messages(CHANNEL, third["ts"]), timeout=10)
            assert off.text == DISABLED and len(llm.chat_requests) == calls
        finally:
            await frontend.stop()
            await orchestrator.aclose()


# --- Discord: a per-user quota through the same pipeline ------------------------------------------------------
async def test_discord_user_quota_refuses_the_second_question_without_calling_the_model(corpus_settings,
                                                                                      llm) -> None:
    from bots.discord.bot import DiscordFrontend

    async with FakeDiscord() as fake:
        settings = make_settings(corpus_settings.data_dir, llm_provider="openai", openai_base_url=llm.base_url,
                                 openai_api_key="sk-test", quota_user_per_day=1)
        core = await build_orchestrator(settings, retry_policy=RetryPolicy(max_retries=1, base_delay_s=0.01))
        frontend = DiscordFrontend(make_settings(corpus_settings.data_dir, discord_token=fake.token,
                                                 discord_guild_id=fake.guild_id,
                                                 discord_edit_window_s=fake.limiter.window_s),
                                   core, guild_ready_timeout=0.05, ready_timeout_s=10)
        await frontend.start()
        try:
            general = fake.channel_id("general")
            await fake.user_message(general, "How much is the Pro plan?")
            await fake.wait_for(lambda: len(frontend.recent) >= 1, timeout=30)
            calls, refused_before = len(llm.chat_requests), refusals("discord", "user")
            await fake.user_message(general, "And the Enterprise plan?")
            said = await fake.wait_for(lambda: [r for r in fake.requests if isinstance(r.body, dict) and
                                                "today's limit" in str(r.body.get("content", ""))], timeout=10)
            assert "limit of 1 questions for you; you can ask again in" in said[0].body["content"]
            assert len(llm.chat_requests) == calls and refusals("discord", "user") == refused_before + 1
        finally:
            await frontend.stop()
            await core.aclose()


# --- the web: per IP address ------------------------------------------------------------------------------------
async def test_web_ip_quota_answers_429_with_retry_after_and_a_sentence(corpus_settings, llm) -> None:
    orchestrator = await build_orchestrator(with_llm(corpus_settings, llm, quota_ip_per_day=1))
    try:
        async with TestClient(TestServer(create_app(orchestrator))) as client:
            first = await client.post("/chat", json={"message": "How much is the Pro plan?"})
            assert first.status == 200 and "complete" in await first.text()
            calls, refused_before = len(llm.chat_requests), refusals("web", "ip")
            second = await client.post("/chat", json={"message": "And Enterprise?"})
            body = await second.json()
            assert second.status == 429 and 0 < int(second.headers["Retry-After"]) <= 86_400
            assert body["error"].startswith("You've reached today's limit of 1 questions from your address")
            assert len(llm.chat_requests) == calls and refusals("web", "ip") == refused_before + 1
    finally:
        await orchestrator.aclose()


# --- the CLI ---------------------------------------------------------------------------------------------------
def test_switchboard_workspaces_set_show_list_and_key(tmp_path, monkeypatch) -> None:
    from cryptography.fernet import Fernet

    from switchboard.cli import app

    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("WORKSPACE_DAILY_QUOTA", "100")
    runner = CliRunner()
    empty = runner.invoke(app, ["workspaces", "list"])
    assert empty.exit_code == 0 and "No workspace is configured" in empty.output
    changed = runner.invoke(app, ["workspaces", "set", "discord", "123456789012345678", "--agents", "billing,policy",
                                  "--daily-quota", "20", "--enabled", "no", "--name", "Trial server"])
    assert changed.exit_code == 0, changed.output
    shown = runner.invoke(app, ["workspaces", "show", "discord", "123456789012345678"])
    lines = {line.split("│")[1].strip(): line for line in shown.output.splitlines() if line.count("│") >= 3}
    assert "billing, policy" in lines["agents"] and "set" in lines["agents"]
    assert " 20 " in lines["daily_quota"] and " no " in lines["enabled"] and "default" in lines["model"]
    listed = runner.invoke(app, ["workspaces", "list"])
    assert "123456789012345678" in listed.output and "Trial server" in listed.output
    other = runner.invoke(app, ["workspaces", "show", "slack", "T0UNKNOWN1"])
    assert "100" in other.output and "no limit" not in other.output  # the environment's default
    bad = runner.invoke(app, ["workspaces", "set", "slack", "T1", "--agents", "sales"])
    assert bad.exit_code == 2 and "Unknown agent" in bad.output and "Traceback" not in bad.output
    nothing = runner.invoke(app, ["workspaces", "set", "slack", "T1"])
    assert nothing.exit_code == 2
    key = runner.invoke(app, ["workspaces", "key"]).output.strip()
    Fernet(key.encode())  # a usable ENCRYPTION_KEY


async def test_migrate_creates_the_installations_oauth_states_and_workspaces_tables(tmp_path) -> None:
    import sqlite3

    from bots.slack.installations import SQLITE_FILE as INSTALLS_FILE, STATES, TABLE as INSTALLS
    from core.workspaces import SQLITE_FILE as WORKSPACES_FILE, TABLE as WORKSPACES
    from switchboard.cli import _migrate

    settings = make_settings(tmp_path)
    lines = await _migrate(settings)
    assert any(line.startswith("slack installations: ") for line in lines)
    assert any(line.startswith("workspaces: ") for line in lines)
    for file, wanted in ((INSTALLS_FILE, {INSTALLS, STATES}), (WORKSPACES_FILE, {WORKSPACES})):
        with sqlite3.connect(settings.data_dir / file) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert wanted <= tables, file


async def test_a_guild_handoff_place_applies_to_discord_handoffs_unless_the_channel_has_its_own(corpus_settings,
                                                                                              tmp_path) -> None:
    """The desk is platform-neutral: a guild's `handoff_channel`/`handoff_mention` replace DISCORD_HANDOFF_CHANNEL
    and its role; a channel listed in channels.yml keeps its own place. (Discord's staff place is recorded here;
    the Slack side is driven end to end in tests/test_oauth.py.)"""
    from bots.support.desk import ASKED_HERE, HandoffRequest, SupportDesk
    from bots.support.store import support_store

    class Place:
        platform, default_channel, default_mention = "discord", "100000000000000001", "200000000000000001"

        def __init__(self) -> None:
            self.posted: list[tuple[str, str | None]] = []

        async def thread_link(self, where): return ""
        async def user_label(self, user): return user or "someone"
        async def show_status(self, record, line): return None
        async def tell_thread(self, where, text): return None

        async def post_ticket(self, channel, mention, ticket):
            self.posted.append((channel, mention))
            return {"platform": "discord", "channel": channel, "message_id": "1", "mention": mention}

    channels = tmp_path / "channels.yml"
    channels.write_text("channels:\n  - platform: discord\n    channel: '300000000000000003'\n"
                        "    handoff_channel: '400000000000000004'\n")
    orchestrator = await build_orchestrator(corpus_settings.model_copy(update={"channels_file": channels}))
    desk = SupportDesk(orchestrator, support_store(orchestrator.settings))
    place = Place()
    desk.register(place)
    try:
        await workspaces_for(orchestrator).set("discord", "42", {"handoff_channel": "500000000000000005",
                                                                 "handoff_mention": "600000000000000006"})
        asks = [("discord:42:a", "42", "700000000000000007"), ("discord:42:b", "42", "300000000000000003"),
                ("discord:43:c", "43", "700000000000000007")]
        for key, guild, channel in asks:
            request = HandoffRequest("discord", key, "9", channel, {"guild_id": int(guild), "channel_id": 1}, "words")
            assert await desk.request(request) == ASKED_HERE
    finally:
        await desk.aclose()
        await orchestrator.aclose()
    assert place.posted == [("500000000000000005", "600000000000000006"),  # the guild's place and role
                            ("400000000000000004", "600000000000000006"),  # the channel's own place wins
                            ("100000000000000001", "200000000000000001")]  # another guild: the defaults

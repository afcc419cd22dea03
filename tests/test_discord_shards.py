"""Discord sharding: shard leases spread over processes (`bots.discord.shards`), the sharded front-end on
discord.py's `AutoShardedClient`, and the fake Discord's sharded gateway.

"Replicas" here are two `DiscordFrontend`s in one test, each with its own `Coordination` (its own Redis client
and replica id) on one key prefix, against one fake Discord with two shards and a guild on each. Leases and
rounds are shortened (a 1.5 s lease, 0.25 s rounds) so hand-overs happen in seconds; the logic is the same as
with the defaults. Redis tests skip, saying so, when `SWITCHBOARD_TEST_REDIS_URL` (default
redis://127.0.0.1:6379/0) does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import discord
import pytest

import coordination
from bots.discord.bot import MISSING_INTENT, DiscordFrontend, ShardedSwitchboardClient, SwitchboardClient
from bots.discord.conversation import thread_key
from bots.discord.feedback import THANKS, custom_id
from bots.discord.shards import ShardKeeper, fair_share, lease_name, shard_of
from bots.startup import StartupError
from coordination import LocalLeases, RedisLeases
from core.orchestrator import build_orchestrator
from tests.conftest import make_settings
from tests.fakes.discord import FakeDiscord, Json, connected_client

REDIS_URL = os.environ.get("SWITCHBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
QUESTION = "Do you comply with GDPR?"
LEASE_S = 3.0
FAST = {"shard_lease_s": LEASE_S, "shard_round_s": 0.5, "shard_settle_s": 0.3, "identify_interval_s": 0.2}


def _redis_missing() -> str | None:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means the Redis tests cannot run here
        return f"Redis at {REDIS_URL} is not reachable ({type(exc).__name__}); start redis-server to run these"
    return None


MISSING = _redis_missing()
needs_redis = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


# ---- harness ---------------------------------------------------------------------------------------------------


@pytest.fixture
async def offline_core(corpus_settings: Any) -> AsyncIterator[Any]:
    core = await build_orchestrator(corpus_settings)
    yield core
    await core.aclose()


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own, removed afterwards."""
    if MISSING:
        pytest.skip(MISSING)
    prefix = f"sbtest:{uuid.uuid4().hex[:10]}"
    yield prefix
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(REDIS_URL)
    names = [name async for name in client.scan_iter(f"{prefix}:*")]
    if names:
        await client.delete(*names)
    await client.aclose()


def two_shard_fake(**options: Any) -> tuple[FakeDiscord, int]:
    """A fake Discord recommending 2 shards, with its default guild on shard 0; and a second guild, on shard 1."""
    fake = FakeDiscord(shards=2, **options)
    return fake, int(fake.add_guild("Second Guild", channels=("general",), shard=1)["id"])


def frontend_for(fake: FakeDiscord, core: Any, base: Any, coord: Any | None = None,
                 **overrides: Any) -> DiscordFrontend:
    settings = make_settings(base.data_dir, discord_token=fake.token, discord_guild_id=fake.guild_id,
                             discord_shard_count=2, **overrides)
    return DiscordFrontend(settings, core, coordination=coord, guild_ready_timeout=0.05, ready_timeout_s=10, **FAST)


@contextlib.asynccontextmanager
async def replicas(fake: FakeDiscord, core: Any, base: Any, prefix: str,
                   count: int = 2) -> AsyncIterator[list[DiscordFrontend]]:
    """`count` replicas started together (as the workers of one `switchboard run` are), stopped on exit."""
    coords = [coordination.connect(REDIS_URL, prefix=prefix) for _ in range(count)]
    frontends = [frontend_for(fake, core, base, coord) for coord in coords]
    try:
        await asyncio.gather(*(frontend.start() for frontend in frontends))
        yield frontends
    finally:
        for frontend in frontends:
            with contextlib.suppress(Exception):
                await frontend.stop()
        for coord in coords:
            await coord.aclose()


async def ready_on(fake: FakeDiscord, frontend: DiscordFrontend, shard_id: int, timeout: float = 10) -> float:
    """Wait until `frontend` holds `shard_id` and its READY and guilds arrived; the seconds it took."""
    started = time.monotonic()
    await fake.wait_for(lambda: frontend.shards is not None and frontend.shards.holds(shard_id)
                        and shard_id in frontend.shards_ready, timeout=timeout)
    return time.monotonic() - started


async def mention_in(fake: FakeDiscord, guild_id: int) -> Json:
    return await fake.user_message(fake.channel_id("general", guild_id), QUESTION)


def answered(frontend: DiscordFrontend) -> list[str]:
    return [key for key, outcome in frontend.recent if outcome.status == "done"]


# ---- pure pieces -------------------------------------------------------------------------------------------------


def test_shard_routing_share_and_lease_names() -> None:
    assert shard_of(None, 4) == 0  # DMs are on shard 0
    guild = (1234 << 22) | 99
    assert shard_of(guild, 4) == 1234 % 4 and shard_of(guild, 1) == 0
    assert [fair_share(4, live) for live in (0, 1, 2, 3, 4, 5)] == [4, 4, 2, 2, 1, 1]
    assert lease_name(3, 8) == "discord:shard:8:3"


async def test_local_leases_claim_renew_release_and_expire() -> None:
    now = [0.0]
    a = LocalLeases("a", clock=lambda: now[0])
    b = a.as_owner("b")

    async def wait(seconds: float) -> None:
        now[0] += seconds

    await _leases_behave(a, b, wait)


@needs_redis
async def test_redis_leases_claim_renew_release_and_expire(redis_prefix: str) -> None:
    coord = coordination.connect(REDIS_URL, prefix=redis_prefix)
    try:
        assert isinstance(coord.leases, RedisLeases)
        a = coord.leases
        b = a.as_owner("someone-else")
        await _leases_behave(a, b, asyncio.sleep, ttl=0.2)
    finally:
        await coord.aclose()


async def _leases_behave(a: Any, b: Any, wait: Any, ttl: float = 1.0) -> None:
    assert await a.claim("r", ttl) and await a.claim("r", ttl)  # re-entrant for its holder
    assert not await b.claim("r", ttl) and await a.holder("r") == a.owner
    assert not await b.renew("r", ttl) and not await b.release("r")  # compare-and-delete: not b's to free
    assert await a.renew("r", ttl) and await a.release("r") and await a.holder("r") is None
    assert await b.claim("r", ttl) and not await a.renew("r", ttl)
    await wait(ttl * 1.5)  # b "died": its lease expires by itself
    assert await a.holder("r") is None and await a.claim("r", ttl)
    assert await a.heartbeat("g", ttl) == 1 and await b.heartbeat("g", ttl) == 2
    await b.leave("g")
    assert await a.heartbeat("g", ttl) == 1
    await b.heartbeat("g", ttl)
    await wait(ttl * 0.6)
    assert await a.heartbeat("g", ttl) == 2
    await wait(ttl * 0.6)  # b stopped beating: it drops out after its ttl
    assert await a.heartbeat("g", ttl) == 1


async def test_the_keeper_takes_its_fair_share_and_hands_the_rest_over() -> None:
    """Two keepers on 3 shards: alone, one takes all 3; when a second joins, the first hands one over (never
    more: 3 over 2 processes is 2 and 1), and when it stops, the other takes everything."""
    now = [0.0]
    connected: dict[str, set[int]] = {"a": set(), "b": set()}

    def keeper(leases: Any, name: str) -> ShardKeeper:
        async def gained(ids: list[int]) -> None:
            assert not connected[name] & set(ids)
            connected[name] |= set(ids)

        async def lost(ids: list[int]) -> None:
            connected[name] -= set(ids)

        return ShardKeeper(leases, 3, lease_s=3.0, every_s=1.0, settle_s=0, on_gained=gained, on_lost=lost,
                           clock=lambda: now[0])

    a_leases = LocalLeases("a", clock=lambda: now[0])
    a, b = keeper(a_leases, "a"), keeper(a_leases.as_owner("b"), "b")
    await a.round()
    assert a.held == [0, 1, 2] and connected["a"] == {0, 1, 2}
    await b.round()  # b joins: nothing free yet
    assert b.held == [] and b.share == 2
    await a.round()  # a sees 2 processes: its share is 2, it hands shard 2 over
    assert a.held == [0, 1] and connected["a"] == {0, 1}
    await b.round()
    assert b.held == [2] and connected["b"] == {2}
    for _ in range(3):  # settled: nobody sheds below its share
        now[0] += 1
        await a.round()
        await b.round()
    assert (a.held, b.held) == ([0, 1], [2])
    assert not connected["a"] & connected["b"]
    await a.stop()
    assert connected["a"] == set() and not a.holds(0)
    await b.round()
    assert b.held == [0, 1, 2] and connected["b"] == {0, 1, 2}
    now[0] += 10  # b froze (no rounds): holds() turns False once the lease may have lapsed, socket or not
    assert not b.holds(0)


# ---- the fake's sharded gateway ----------------------------------------------------------------------------------


class NoPause(discord.AutoShardedClient):
    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        pass  # discord.py waits 5 s before every IDENTIFY but the first; the fake has no session-start limit


async def test_fake_honours_sharded_identify_ready_and_guild_routing() -> None:
    """discord.py's own AutoShardedClient against the fake: GET /gateway/bot recommends 2 shards; a client
    identifying as shard 1 of 2 sees only shard 1's guild, and gets that guild's messages and nothing of shard
    0's; DMs go to shard 0; an invalid shard is refused with 4010."""
    fake, second = two_shard_fake()
    async with fake:
        assert fake.shard_of(fake.guild_id) == 0 and fake.shard_of(second) == 1
        intents = discord.Intents.default()
        intents.message_content = True
        seen: list[int] = []
        client = NoPause(intents=intents, guild_ready_timeout=0.05)  # the shard count comes from the fake

        @client.event
        async def on_message(message: discord.Message) -> None:
            seen.append(message.guild.id if message.guild else 0)

        async with connected_client(client, fake):
            assert client.shard_count == 2 and sorted(client.shards) == [0, 1]
            assert fake.identified_shards == [(0, 2), (1, 2)]
            assert {g.id: g.shard_id for g in client.guilds} == {fake.guild_id: 0, second: 1}
        only_one = NoPause(intents=intents, shard_count=2, shard_ids=[1], guild_ready_timeout=0.05)

        @only_one.event
        async def on_message(message: discord.Message) -> None:  # noqa: F811 - this client's own handler
            seen.append(message.guild.id if message.guild else 0)

        seen.clear()
        async with connected_client(only_one, fake):
            assert fake.identified_shards == [(1, 2)]
            assert [g.id for g in only_one.guilds] == [second]
            await mention_in(fake, fake.guild_id)  # shard 0's guild: not for this client
            await fake.user_message(fake.dm_channel()["id"], "hello")  # a DM: shard 0
            await mention_in(fake, second)
            await fake.wait_for(lambda: seen, timeout=5)
            await asyncio.sleep(0.2)
        assert seen == [second]
        bad = NoPause(intents=intents, shard_count=2, shard_ids=[2], guild_ready_timeout=0.05)
        with pytest.raises(discord.ConnectionClosed) as closed:
            async with connected_client(bad, fake, timeout=5):
                pass
        assert closed.value.code == 4010


# ---- the front-end, one process ----------------------------------------------------------------------------------


async def test_one_process_with_two_shards_holds_both_and_answers_everywhere(corpus_settings, offline_core) -> None:
    """DISCORD_SHARD_COUNT=2 without Redis: the sharded client on both shards; a mention in each guild, a DM,
    /ask and a feedback click (dynamic items on the sharded client) are all answered."""
    fake, second = two_shard_fake()
    async with fake:
        frontend = frontend_for(fake, offline_core, corpus_settings)
        await frontend.start()
        try:
            assert isinstance(frontend.client, ShardedSwitchboardClient)
            assert frontend.shards is not None and frontend.shards.held == [0, 1]
            assert fake.identified_shards == [(0, 2), (1, 2)]
            assert "shard(s) 0, 1 of 2" in frontend.describe()
            await fake.wait_for(lambda: {c["name"] for c in fake.commands(fake.guild_id)} == {"ask", "reset", "help"})
            first, other = await mention_in(fake, fake.guild_id), await mention_in(fake, second)
            await fake.user_message(fake.dm_channel()["id"], QUESTION)
            interaction = await fake.slash_command("ask", {"question": QUESTION},
                                                   channel_id=fake.channel_id("general", second))
            await fake.wait_for(lambda: len(answered(frontend)) >= 4, timeout=30)
            final = fake.messages_in(int(other["id"]), from_bot=True)[-1]
            click = await fake.click_button(final, custom_id("up", thread_key(int(other["id"]))))
            [thanks] = await fake.wait_for(lambda: fake.replies_to(click), timeout=5)
        finally:
            await frontend.stop()
    assert sorted(answered(frontend)) == sorted([thread_key(int(first["id"])), thread_key(int(other["id"])),
                                                 f"discord:dm:{fake.dm_channel()['id']}",
                                                 f"discord:{second}:{fake.channel_id('general', second)}:ask:"
                                                 f"{interaction['id']}"])
    assert thanks.data["content"] == THANKS["up"]
    assert fake.gateway_connections == 0


async def test_sharded_start_up_errors_are_the_same_sentences(corpus_settings, offline_core) -> None:
    """The Message Content intent switched off: the sharded client fails to start with the same sentence as the
    plain one, and leaves no shard lease or connection behind."""
    fake, _ = two_shard_fake(privileged_intents_enabled=False)
    async with fake:
        frontend = frontend_for(fake, offline_core, corpus_settings)
        with pytest.raises(StartupError) as refused:
            await frontend.start()
        leases = frontend.coordination.leases
        assert str(refused.value) == MISSING_INTENT
        assert [await leases.holder(lease_name(k, 2)) for k in (0, 1)] == [None, None]
        assert fake.gateway_connections == 0


async def test_one_shard_and_no_redis_is_the_plain_client_as_before(corpus_settings, offline_core) -> None:
    async with FakeDiscord() as fake:
        settings = make_settings(corpus_settings.data_dir, discord_token=fake.token, discord_guild_id=fake.guild_id)
        frontend = DiscordFrontend(settings, offline_core, guild_ready_timeout=0.05, ready_timeout_s=10)
        await frontend.start()
        try:
            assert type(frontend.client) is SwitchboardClient and frontend.shards is None
            assert not frontend.sharded and fake.identified_shards == [(0, 1)]
        finally:
            await frontend.stop()


# ---- replicas on Redis ------------------------------------------------------------------------------------------


@needs_redis
async def test_two_replicas_each_hold_a_shard_and_answer_their_guild_once(corpus_settings, offline_core,
                                                                          redis_prefix) -> None:
    fake, second = two_shard_fake()
    async with fake:
        async with replicas(fake, offline_core, corpus_settings, redis_prefix) as (a, b):
            for frontend in (a, b):
                assert frontend.shards is not None and len(frontend.shards.held) == 1
            holder = {shard: next(f for f in (a, b) if f.shards and f.shards.held == [shard]) for shard in (0, 1)}
            await ready_on(fake, holder[0], 0)
            await ready_on(fake, holder[1], 1)
            assert fake.identified_shards == [(0, 2), (1, 2)]
            first, other = await mention_in(fake, fake.guild_id), await mention_in(fake, second)
            dm = fake.dm_channel()["id"]
            await fake.user_message(dm, QUESTION)
            await fake.wait_for(lambda: len(answered(a)) + len(answered(b)) >= 3, timeout=30)
            await asyncio.sleep(0.5)  # room for a duplicate answer to show itself
    assert sorted(answered(holder[0])) == sorted([thread_key(int(first["id"])), f"discord:dm:{dm}"])
    assert answered(holder[1]) == [thread_key(int(other["id"]))]
    for asked in (first, other):
        assert len([t for t in fake.threads if t["id"] == asked["id"]]) == 1
        assert len(fake.messages_in(int(asked["id"]), from_bot=True)) == 1


@needs_redis
async def test_a_replica_that_stops_hands_its_shard_over_at_once(corpus_settings, offline_core,
                                                                 redis_prefix) -> None:
    fake, second = two_shard_fake()
    async with fake:
        async with replicas(fake, offline_core, corpus_settings, redis_prefix) as (a, b):
            assert a.shards is not None and b.shards is not None
            [leaving] = a.shards.held
            [staying] = b.shards.held
            await ready_on(fake, a, leaving)
            await ready_on(fake, b, staying)
            started = time.monotonic()
            await a.stop()  # SIGTERM: a releases its shard before draining
            assert fake.identified_shards == [(staying, 2)]
            await ready_on(fake, b, leaving)
            took = time.monotonic() - started
            guild = fake.guild_id if leaving == 0 else second
            asked = await mention_in(fake, guild)
            await fake.wait_for(lambda: answered(b), timeout=30)
            await asyncio.sleep(0.3)
            assert sorted(b.shards.held) == [0, 1] and "shard(s) 0, 1 of 2" in b.describe()
    assert took < 3.0, f"the hand-over took {took:.1f}s"
    assert answered(b) == [thread_key(int(asked["id"]))] and answered(a) == []
    assert len(fake.messages_in(int(asked["id"]), from_bot=True)) == 1


@needs_redis
async def test_a_replica_that_stops_renewing_loses_its_shard_within_the_lease(corpus_settings, offline_core,
                                                                              redis_prefix) -> None:
    """A replica that dies (here: its keeper frozen, so no renewal and no heartbeat, and its gateway socket
    left OPEN, which is worse than a SIGKILL) loses its shard to the other within the lease; the zombie's socket
    still receives that guild's messages, but it answers none: only the new holder does, once."""
    fake, second = two_shard_fake()
    async with fake:
        async with replicas(fake, offline_core, corpus_settings, redis_prefix) as (a, b):
            assert a.shards is not None and b.shards is not None and a.shards.task is not None
            [dying] = a.shards.held
            await ready_on(fake, a, dying)
            started = time.monotonic()
            a.shards.task.cancel()  # no more rounds: the lease and the membership lapse, nothing is released
            await ready_on(fake, b, dying, timeout=LEASE_S + 8)
            took = time.monotonic() - started
            assert fake.identified_shards.count((dying, 2)) == 2  # the zombie's socket is still there
            assert not a.shards.holds(dying)  # ... but it knows its lease may have lapsed
            asked = await mention_in(fake, fake.guild_id if dying == 0 else second)
            await fake.wait_for(lambda: answered(b), timeout=30)
            await asyncio.sleep(0.5)
    assert took < LEASE_S + 2.5, f"the take-over took {took:.1f}s (lease {LEASE_S}s)"
    assert answered(b) == [thread_key(int(asked["id"]))] and answered(a) == []
    assert len(fake.messages_in(int(asked["id"]), from_bot=True)) == 1


@needs_redis
async def test_a_replica_joining_later_gets_its_share_handed_over(corpus_settings, offline_core,
                                                                   redis_prefix) -> None:
    """The first replica alone holds both shards; a second one joining takes one over (the first hands it
    back), and every shard stays held by exactly one replica."""
    fake, _ = two_shard_fake()
    async with fake:
        async with replicas(fake, offline_core, corpus_settings, redis_prefix, count=1) as (a,):
            assert a.shards is not None and a.shards.held == [0, 1]
            coord = coordination.connect(REDIS_URL, prefix=redis_prefix)
            b = frontend_for(fake, offline_core, corpus_settings, coord)
            try:
                await b.start()
                await fake.wait_for(lambda: b.shards is not None and len(b.shards.held) == 1, timeout=10)
                assert b.shards is not None
                [moved] = b.shards.held
                await ready_on(fake, b, moved)
                assert a.shards.held == [1 - moved]
                assert sorted(fake.identified_shards) == [(0, 2), (1, 2)]
            finally:
                await b.stop()
                await coord.aclose()


# A replica in its own process, for a real SIGKILL: discord.py pointed at the fake by the two values the fake
# patches in-process, a stub orchestrator (this replica is killed before anyone asks it anything).
REPLICA = """
import asyncio, os, sys, types
import discord.gateway, discord.http, yarl
discord.http.Route.BASE = os.environ["FAKE_API"]
discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(os.environ["FAKE_GATEWAY"])
import coordination
from bots.discord.bot import DiscordFrontend
from core.settings import Settings

async def main():
    settings = Settings(_env_file=None, data_dir=sys.argv[1], discord_token=os.environ["FAKE_TOKEN"],
                        discord_shard_count=2, llm_provider="offline")
    coord = coordination.connect(os.environ["REDIS"], prefix=os.environ["PREFIX"])
    frontend = DiscordFrontend(settings, types.SimpleNamespace(agents=None), coordination=coord,
                               guild_ready_timeout=0.05, ready_timeout_s=10, **{FAST})
    await frontend.start()
    await asyncio.Event().wait()

asyncio.run(main())
""".replace("{FAST}", repr(FAST))


@needs_redis
async def test_a_replica_killed_with_sigkill_loses_its_shard_within_the_lease(corpus_settings, offline_core,
                                                                              redis_prefix, tmp_path) -> None:
    """A real SIGKILL: replica A in its own process holds a shard (B, in this process, handed it over when A
    joined); A is killed, nothing is released, and B takes the shard back within the lease and answers there."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    fake, second = two_shard_fake()
    async with fake:
        coord = coordination.connect(REDIS_URL, prefix=redis_prefix)
        b = frontend_for(fake, offline_core, corpus_settings, coord)
        await b.start()
        env = dict(os.environ, FAKE_API=fake.api_base, FAKE_GATEWAY=fake.gateway_url, FAKE_TOKEN=fake.token,
                   REDIS=REDIS_URL, PREFIX=redis_prefix, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        replica = subprocess.Popen([sys.executable, "-c", REPLICA, str(tmp_path)], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert b.shards is not None and b.shards.held == [0, 1]
            await fake.wait_for(lambda: b.shards is not None and len(b.shards.held) == 1
                                and len(fake.identified_shards) == 2, timeout=20)
            [killed] = {0, 1} - set(b.shards.held)
            assert fake.identified_shards == [(0, 2), (1, 2)]
            started = time.monotonic()
            replica.send_signal(signal.SIGKILL)
            replica.wait(5)
            await ready_on(fake, b, killed, timeout=LEASE_S + 8)
            took = time.monotonic() - started
            asked = await mention_in(fake, fake.guild_id if killed == 0 else second)
            await fake.wait_for(lambda: answered(b), timeout=30)
            await asyncio.sleep(0.3)
        finally:
            if replica.poll() is None:
                replica.kill()
                replica.wait(5)
            await b.stop()
            await coord.aclose()
    assert took < LEASE_S + 2.5, f"the take-over took {took:.1f}s (lease {LEASE_S}s)"
    assert answered(b) == [thread_key(int(asked["id"]))]
    assert len(fake.messages_in(int(asked["id"]), from_bot=True)) == 1

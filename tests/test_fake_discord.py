"""The fake Discord is faithful enough: the REAL discord.py client logs in, connects, hears users and answers.

Every test drives `discord.Client` against `FakeDiscord` over loopback; only `Route.BASE` and the default gateway
are patched. The rate limiter's arithmetic is also tested on its own with a fake clock.
"""

from __future__ import annotations

import asyncio
import io
import json

import discord
import discord.gateway
import discord.http
import pytest
from discord import app_commands

from tests.fakes.discord import ChannelRateLimiter, FakeDiscord, connected_client, patched_discord


def make_client(*, message_content: bool = True, members: bool = False, **kwargs) -> discord.Client:
    intents = discord.Intents.default()
    intents.message_content = message_content
    intents.members = members
    return discord.Client(intents=intents, guild_ready_timeout=0.05, **kwargs)


def record_messages(client: discord.Client) -> asyncio.Queue[discord.Message]:
    """Queue every on_message the client sees from someone other than itself."""
    queue: asyncio.Queue[discord.Message] = asyncio.Queue()

    @client.event
    async def on_message(message: discord.Message) -> None:
        if message.author != client.user:
            queue.put_nowait(message)

    return queue


async def next_message(queue: asyncio.Queue[discord.Message]) -> discord.Message:
    return await asyncio.wait_for(queue.get(), timeout=5)


# ---- connection ----------------------------------------------------------------------------------------------


async def test_client_is_ready_with_the_guild_and_its_channels() -> None:
    async with FakeDiscord() as fake:
        client = make_client()
        async with connected_client(client, fake):
            guild = client.get_guild(fake.guild_id)
            assert guild is not None and guild.name == "Switchboard Test"
            assert sorted(c.name for c in guild.text_channels) == ["general", "support"]
            assert client.user.id == fake.app_id and client.user.bot
            assert client.application_id == fake.app_id
            assert guild.me is not None  # the bot's own member arrived in GUILD_CREATE
            assert fake.gateway_connections == 1
        await fake.wait_for(lambda: fake.gateway_connections == 0)
        # discord.py asked for transport compression and the fake answered in kind
        assert fake.gateway_compressions == [discord.utils._ActiveDecompressionContext.COMPRESSION_TYPE]
        assert fake.unhandled == []


async def test_patch_points_discordpy_at_the_fake_and_restores_it() -> None:
    before = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
    async with FakeDiscord(patch=False) as fake:
        assert discord.http.Route.BASE == before[0]
        with patched_discord(fake):
            assert discord.http.Route.BASE == f"http://127.0.0.1:{fake.port}/api/v10"
            assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == f"ws://127.0.0.1:{fake.port}/"
    assert (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == before


async def test_bad_token_is_a_login_failure() -> None:
    async with FakeDiscord() as fake:
        client = make_client()
        try:
            with pytest.raises(discord.LoginFailure):
                await client.login("not-the-token")
        finally:
            await client.close()
        assert fake.requests[-1].path == "/api/v10/users/@me" and fake.requests[-1].status == 401


async def test_privileged_intent_not_enabled_raises_privileged_intents_required() -> None:
    async with FakeDiscord(privileged_intents_enabled=False) as fake:
        with pytest.raises(discord.PrivilegedIntentsRequired):
            async with connected_client(make_client(message_content=True), fake):
                pass


async def test_gateway_sequence_numbers_increase_and_heartbeats_are_acknowledged() -> None:
    async with FakeDiscord() as fake:
        client = make_client(enable_debug_events=True)
        frames: list[dict] = []

        @client.event
        async def on_socket_raw_receive(raw: str) -> None:
            frames.append(json.loads(raw))

        async with connected_client(client, fake):
            for _ in range(3):
                await fake.user_message(fake.channel_id("general"), "hello")
            await fake.wait_for(lambda: sum(f.get("t") == "MESSAGE_CREATE" for f in frames) == 3)
            await fake.wait_for(lambda: any(f["op"] == 11 for f in frames))
        seqs = [f["s"] for f in frames if f["op"] == 0]
        assert seqs == list(range(1, len(seqs) + 1))
        assert [f["t"] for f in frames if f["op"] == 0][:2] == ["READY", "GUILD_CREATE"]


async def test_zlib_stream_transport_compression_frames_end_in_sync_flush() -> None:
    import zlib

    import aiohttp

    async with FakeDiscord() as fake:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(f"{fake.gateway_url}?v=10&encoding=json&compress=zlib-stream") as ws:
                inflate = zlib.decompressobj()
                hello = await ws.receive_bytes(timeout=5)
                assert hello.endswith(b"\x00\x00\xff\xff")
                assert json.loads(inflate.decompress(hello))["op"] == 10
                await ws.send_json({"op": 2, "d": {"token": fake.token, "intents": 0, "properties": {}}})
                ready = json.loads(inflate.decompress(await ws.receive_bytes(timeout=5)))
        assert ready["t"] == "READY" and ready["d"]["user"]["id"] == str(fake.app_id)
        assert fake.gateway_compressions == ["zlib-stream"]


async def test_dropped_socket_resumes_and_replays_missed_events() -> None:
    async with FakeDiscord() as fake:
        client = make_client()
        queue = record_messages(client)
        resumed = asyncio.Event()
        client.event(_setter("on_resumed", resumed))
        async with connected_client(client, fake):
            await fake.drop_connections(code=4000)
            await fake.user_message(fake.channel_id("general"), "sent while disconnected")
            await asyncio.wait_for(resumed.wait(), timeout=5)
            assert (await next_message(queue)).content.endswith("sent while disconnected")


def _setter(name: str, event: asyncio.Event):
    async def handler() -> None:
        event.set()

    handler.__name__ = name
    return handler


# ---- messages, edits, threads --------------------------------------------------------------------------------------


async def test_on_message_sees_content_and_bot_replies_edits_and_continues_in_a_thread() -> None:
    async with FakeDiscord() as fake:
        client = make_client()
        queue = record_messages(client)
        general = fake.channel_id("general")
        async with connected_client(client, fake):
            sent = await fake.user_message(general, "what does the pro plan cost?")
            incoming = await next_message(queue)
            assert incoming.content == f"<@{fake.app_id}> what does the pro plan cost?"
            assert client.user in incoming.mentions and incoming.guild.id == fake.guild_id
            assert incoming.id == int(sent["id"])

            reply = await incoming.reply("thinking…", mention_author=False)
            await reply.edit(content="The Pro plan is $20 per seat.")
            thread = await incoming.create_thread(name="pro plan")
            await thread.send("Anything else?")
            await fake.wait_for(lambda: client.get_channel(thread.id))  # THREAD_CREATE reached the client

        bot_messages = fake.messages_in(general, from_bot=True)
        assert [m["content"] for m in bot_messages] == ["The Pro plan is $20 per seat."]
        assert bot_messages[0]["message_reference"]["message_id"] == sent["id"]
        assert [e["content"] for e in fake.edits_of(reply.id)] == ["The Pro plan is $20 per seat."]
        assert fake.threads[0]["id"] == sent["id"] and fake.threads[0]["parent_id"] == str(general)
        assert [m["content"] for m in fake.messages_in(thread.id)] == ["Anything else?"]


async def test_user_reply_to_the_bot_mentions_it_and_references_its_message() -> None:
    async with FakeDiscord() as fake:
        client = make_client()
        queue = record_messages(client)
        general = fake.channel_id("general")
        async with connected_client(client, fake):
            answer = await client.get_channel(general).send("first answer")
            await fake.user_message(general, "and the enterprise plan?", mentions_bot=False,
                                    message_reference=answer.id)
            incoming = await next_message(queue)
        assert incoming.reference.message_id == answer.id
        assert client.user in incoming.mentions and incoming.content == "and the enterprise plan?"


async def test_thread_creation_without_permission_is_forbidden_with_code_50013() -> None:
    async with FakeDiscord() as fake:
        general = fake.channel_id("general")
        fake.deny_thread_creation(general)
        client = make_client()
        queue = record_messages(client)
        async with connected_client(client, fake):
            await fake.user_message(general, "help")
            incoming = await next_message(queue)
            with pytest.raises(discord.Forbidden) as caught:
                await incoming.create_thread(name="help")
            await incoming.reply("answered inline instead")
        assert caught.value.code == 50013
        assert fake.threads == []
        assert fake.messages_in(general, from_bot=True)[0]["content"] == "answered inline instead"


async def test_content_over_2000_characters_is_rejected_with_50035() -> None:
    async with FakeDiscord() as fake:
        client = make_client()
        async with connected_client(client, fake):
            channel = client.get_channel(fake.channel_id("general"))
            with pytest.raises(discord.HTTPException) as caught:
                await channel.send("x" * 2001)
            await channel.send("x" * 2000)
        assert caught.value.status == 400 and caught.value.code == 50035
        assert "Must be 2000 or fewer in length." in caught.value.text


async def test_empty_message_is_rejected_with_50006() -> None:
    async with FakeDiscord() as fake:
        client = make_client()
        async with connected_client(client, fake):
            with pytest.raises(discord.HTTPException) as caught:
                await client.get_channel(fake.channel_id("general")).send("")
        assert caught.value.code == 50006


async def test_without_message_content_intent_unmentioned_messages_arrive_empty() -> None:
    async with FakeDiscord() as fake:
        client = make_client(message_content=False)
        queue = record_messages(client)
        async with connected_client(client, fake):
            await fake.user_message(fake.channel_id("general"), "chatter", mentions_bot=False)
            await fake.user_message(fake.channel_id("general"), "question for the bot")
            unmentioned, mentioned = await next_message(queue), await next_message(queue)
        assert unmentioned.content == ""
        assert mentioned.content.endswith("question for the bot")


async def test_direct_message_reaches_the_client_and_the_reply_lands_in_the_dm() -> None:
    async with FakeDiscord() as fake:
        dm = fake.dm_channel(fake.default_user)
        client = make_client()
        queue = record_messages(client)
        async with connected_client(client, fake):
            await fake.user_message(int(dm["id"]), "private question")
            incoming = await next_message(queue)
            assert isinstance(incoming.channel, discord.DMChannel) and incoming.content == "private question"
            await incoming.channel.send("private answer")
            opened = await (await client.fetch_user(int(fake.default_user["id"]))).create_dm()
        assert opened.id == int(dm["id"])
        assert [m["content"] for m in fake.messages_in(int(dm["id"]), from_bot=True)] == ["private answer"]


async def test_file_upload_is_parsed_from_multipart_into_an_attachment() -> None:
    async with FakeDiscord() as fake:
        client = make_client()
        async with connected_client(client, fake):
            sent = await client.get_channel(fake.channel_id("general")).send(
                file=discord.File(io.BytesIO(b"a,b\n1,2\n"), filename="usage.csv"))
        stored = fake.message(sent.id)
        assert [(a["filename"], a["size"]) for a in stored["attachments"]] == [("usage.csv", 8)]
        assert sent.attachments[0].filename == "usage.csv"


async def test_typing_is_recorded() -> None:
    async with FakeDiscord() as fake:
        client = make_client()
        async with connected_client(client, fake):
            channel = client.get_channel(fake.channel_id("support"))
            async with channel.typing():
                pass
        assert [t.channel_id for t in fake.typing_calls] == [channel.id]


# ---- rate limits ---------------------------------------------------------------------------------------------------


async def test_write_over_the_channel_budget_gets_a_429_and_discordpy_retries_until_it_lands() -> None:
    # 1 create + 5 edits in one window of a 5-writes budget: the 6th write is refused once, then lands.
    async with FakeDiscord(rate_window_s=1.0) as fake:
        client = make_client()
        async with connected_client(client, fake):
            message = await client.get_channel(fake.channel_id("general")).send("v0")
            for version in range(1, 6):
                await message.edit(content=f"v{version}")
        assert fake.rate_limited_count == 1
        assert [e["content"] for e in fake.edits_of(message.id)] == ["v1", "v2", "v3", "v4", "v5"]
        statuses = [r.status for r in fake.requests if r.method == "PATCH"]
        assert statuses == [200, 200, 200, 200, 429, 200]


async def test_429_carries_discords_headers_and_body() -> None:
    import aiohttp

    async with FakeDiscord(rate_limit=1, rate_window_s=30) as fake:
        url = f"{fake.api_base}/channels/{fake.channel_id('general')}/messages"
        headers = {"Authorization": f"Bot {fake.token}"}
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json={"content": "one"}, headers=headers) as ok:
                assert ok.headers["Content-Type"] == "application/json"
                assert ok.headers["X-RateLimit-Remaining"] == "0" and "X-RateLimit-Bucket" in ok.headers
            async with http.post(url, json={"content": "two"}, headers=headers) as limited:
                body = await limited.json()
                assert limited.status == 429
                assert limited.headers["Via"] == "1.1 google"
                assert limited.headers["X-RateLimit-Scope"] == "user"
                assert int(limited.headers["Retry-After"]) >= 1
                for name in ("Limit", "Remaining", "Reset", "Reset-After", "Bucket"):
                    assert f"X-RateLimit-{name}" in limited.headers
        assert body["message"] == "You are being rate limited." and body["global"] is False
        assert 0 < body["retry_after"] <= 30
        assert fake.rate_limited_count == 1


async def test_injected_global_429_is_waited_out_by_discordpy() -> None:
    async with FakeDiscord() as fake:
        client = make_client()
        async with connected_client(client, fake):
            fake.inject_429(retry_after=0.05, is_global=True)
            await client.get_channel(fake.channel_id("general")).send("lands after the global limit")
        assert fake.rate_limited_count == 1
        assert [r.status for r in fake.requests if r.method == "POST"] == [429, 200]
        assert fake.messages_in(fake.channel_id("general"))[0]["content"] == "lands after the global limit"


def test_bucket_limiter_refills_whole_window_and_reports_per_route_headers() -> None:
    now = [100.0]
    limiter = ChannelRateLimiter(limit=5, window_s=5.0, mode="bucket", clock=lambda: now[0])
    assert limiter.acquire(1, "POST").remaining == 4
    for _ in range(4):
        decision = limiter.acquire(1, "PATCH")
    assert decision.allowed and decision.remaining == 1  # the PATCH bucket itself still looks open
    now[0] = 102.0
    refused = limiter.acquire(1, "PATCH")
    assert not refused.allowed and refused.retry_after == pytest.approx(3.0)
    assert limiter.acquire(2, "POST").allowed  # another channel has its own budget
    now[0] = 105.0
    assert limiter.acquire(1, "PATCH").allowed and limiter.acquire(1, "PATCH").remaining == 3


def test_sliding_limiter_frees_one_slot_as_the_oldest_write_ages_out() -> None:
    now = [0.0]
    limiter = ChannelRateLimiter(limit=2, window_s=5.0, mode="sliding", clock=lambda: now[0])
    limiter.acquire(1, "POST")
    now[0] = 3.0
    limiter.acquire(1, "POST")
    refused = limiter.acquire(1, "POST")
    assert not refused.allowed and refused.retry_after == pytest.approx(2.0)
    now[0] = 5.5
    assert limiter.acquire(1, "POST").allowed
    assert not limiter.acquire(1, "POST").allowed


# ---- application commands and interactions ---------------------------------------------------------------------


async def test_command_tree_synced_to_a_guild_hits_the_bulk_overwrite_endpoint() -> None:
    async with FakeDiscord() as fake:
        client = make_client()
        tree = app_commands.CommandTree(client)

        @tree.command(name="ask", description="Ask the support bot")
        async def ask(interaction: discord.Interaction, question: str) -> None:
            pass

        async with connected_client(client, fake):
            guild = discord.Object(id=fake.guild_id)
            tree.copy_global_to(guild=guild)
            synced = await tree.sync(guild=guild)
        assert [c.name for c in synced] == ["ask"] and synced[0].guild_id == fake.guild_id
        put = [r for r in fake.requests if r.method == "PUT"]
        assert [r.path for r in put] == [f"/api/v10/applications/{fake.app_id}/guilds/{fake.guild_id}/commands"]
        assert fake.command_syncs[0].guild_id == fake.guild_id
        assert fake.command_syncs[0].commands[0]["options"][0]["name"] == "question"


async def test_slash_command_can_be_deferred_then_followed_up_and_edited() -> None:
    async with FakeDiscord() as fake:
        client = make_client()
        tree = app_commands.CommandTree(client)
        done = asyncio.Event()
        followups: list[discord.WebhookMessage] = []

        @tree.command(name="ask", description="Ask the support bot")
        async def ask(interaction: discord.Interaction, question: str) -> None:
            await interaction.response.defer(thinking=True)
            await interaction.edit_original_response(content=f"Answering: {question}")
            await interaction.edit_original_response(content="The Pro plan is $20 per seat.")
            followups.append(await interaction.followup.send("Sources: pricing.md", wait=True))
            done.set()

        async with connected_client(client, fake):
            tree.copy_global_to(guild=discord.Object(id=fake.guild_id))
            await tree.sync(guild=discord.Object(id=fake.guild_id))
            interaction = await fake.slash_command("ask", {"question": "pro price?"},
                                                   channel_id=fake.channel_id("support"))
            await asyncio.wait_for(done.wait(), timeout=5)

        assert [(r.type, r.interaction_id) for r in fake.interaction_responses] == [(5, int(interaction["id"]))]
        original = fake.original_response(interaction)
        assert original["content"] == "The Pro plan is $20 per seat." and not original["flags"] & 128
        assert [e["content"] for e in fake.edits_of(int(original["id"]))] == [
            "Answering: pro price?", "The Pro plan is $20 per seat."]
        support = [m["content"] for m in fake.messages_in(fake.channel_id("support"), from_bot=True)]
        assert support == ["The Pro plan is $20 per seat.", "Sources: pricing.md"]
        assert followups[0].content == "Sources: pricing.md"


async def test_immediate_interaction_reply_creates_the_original_message() -> None:
    async with FakeDiscord() as fake:
        client = make_client()
        tree = app_commands.CommandTree(client)
        done = asyncio.Event()

        @tree.command(name="ping", description="Ping")
        async def ping(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("pong")
            with pytest.raises(discord.InteractionResponded):
                await interaction.response.send_message("again")
            done.set()

        async with connected_client(client, fake):
            await tree.sync()
            interaction = await fake.slash_command("ping")
            await asyncio.wait_for(done.wait(), timeout=5)
        assert fake.interaction_responses[0].type == 4
        assert fake.original_response(interaction)["content"] == "pong"
        assert fake.command_syncs[0].guild_id is None


# ---- thread mode (benchmarks) --------------------------------------------------------------------------------------


async def test_fake_served_from_a_background_thread_talks_to_a_client_in_this_loop() -> None:
    fake = FakeDiscord().start_in_thread()
    try:
        client = make_client()
        queue = record_messages(client)
        async with connected_client(client, fake):
            await asyncio.to_thread(fake.run, fake.user_message(fake.channel_id("general"), "from a thread"))
            incoming = await next_message(queue)
            await incoming.channel.send("answered")
            await fake.wait_for(lambda: fake.messages_in(incoming.channel.id, from_bot=True))
    finally:
        fake.stop_thread()
    assert discord.http.Route.BASE == "https://discord.com/api/v10"

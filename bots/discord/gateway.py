"""The Discord front-end's connection: log in, connect (one client, or the shards this process holds under a
lease), report start-up failures as sentences, count 429s, sync slash commands, and stop cleanly. A mixin of
`DiscordFrontend`, which keeps the answering; see `bots.discord.bot` for the whole picture."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

import aiohttp
import discord
from discord import app_commands

from bots import metrics
from bots.discord.clients import ShardedSwitchboardClient, SwitchboardClient, _startup_error
from bots.discord.inbound import PLATFORM
from bots.discord.shards import ShardKeeper, shard_of
from bots.pacing import EditBudget, retry_after_of

log = logging.getLogger(__name__)

CHANNEL_ROUTE = re.compile(r"/channels/(\d+)/")
BAD_TOKEN = ("Discord refused DISCORD_TOKEN. In the Developer Portal (https://discord.com/developers/applications) "
             "open your application → Bot → Reset Token, and put the new token in DISCORD_TOKEN in .env.")
MISSING_INTENT = ("Discord refused the connection because the Message Content intent is not enabled. In the "
                  "Developer Portal open your application → Bot → Privileged Gateway Intents, switch on "
                  "MESSAGE CONTENT INTENT, save, and start again.")


class GatewayConnection:
    """Connecting, sharding and stopping, for `DiscordFrontend` (which sets the attributes used here)."""

    settings: Any
    client: SwitchboardClient | ShardedSwitchboardClient | None

    # --- lifecycle ---------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Log in, connect, and return once Discord says the bot is ready; a clear StartupError otherwise.
        Sharded, it connects the shards it could claim (none is fine: it takes some over later)."""
        token = self.settings.discord_token.get_secret_value() if self.settings.discord_token else ""
        if not token:
            raise _startup_error("DISCORD_TOKEN is not set. Copy the bot token from the Developer Portal → "
                                 "your application → Bot, into DISCORD_TOKEN in .env.")
        self._stopping = self._started = False
        client: SwitchboardClient | ShardedSwitchboardClient
        if self.sharded:
            client = ShardedSwitchboardClient(self, http_trace=self._count_429s(), shard_count=self.shard_count,
                                              shard_ids=[], **self.client_options)
        else:
            client = SwitchboardClient(self, http_trace=self._count_429s(), **self.client_options)
        self.client = client
        try:
            await client.login(token)
        except discord.LoginFailure as exc:
            await client.close()
            raise _startup_error(BAD_TOKEN) from exc
        except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            await client.close()
            raise _startup_error(f"Discord could not be reached ({exc}). Check the network, then start again.") \
                from exc
        if self.sharded:
            await self._start_shards()
            if self._connection is None:  # every shard is held elsewhere: wait for one to be freed
                log.info("discord: logged in as %s; all %d shard(s) are held by other processes for now",
                         client.user, self.shard_count)
                self.pipeline.texts = self._texts()
                self._started = True
                return
        else:
            self._connection = asyncio.create_task(client.connect(reconnect=True), name="discord-gateway")
        ready = asyncio.create_task(client.wait_until_ready())
        # Sharded, `ready` waits for every shard claimed, and their IDENTIFYs are spaced by the identify budget.
        spaced = self._identify_interval_s * (len(self.shards.held) - 1) if self.shards is not None else 0.0
        done, _ = await asyncio.wait({self._connection, ready}, timeout=self.ready_timeout_s + spaced,
                                     return_when=asyncio.FIRST_COMPLETED)
        if ready in done:
            log.info("discord: ready as %s in %d guild(s)", client.user, len(client.guilds))
            self.pipeline.texts = self._texts()  # the usage text names the bot as this server shows it
            self._started = True
            return
        ready.cancel()
        error = self._connect_failure(self._connection if self._connection in done else None)
        await self._close_client()
        raise error

    def _connect_failure(self, connection: asyncio.Task[None] | None) -> RuntimeError:
        if connection is None:
            return _startup_error(f"Discord did not confirm the connection within {self.ready_timeout_s:.0f}s. "
                                  "Check the network and https://discordstatus.com, then start again.")
        exc = None if connection.cancelled() else connection.exception()
        if isinstance(exc, discord.PrivilegedIntentsRequired):
            return _startup_error(MISSING_INTENT)
        if isinstance(exc, discord.LoginFailure) or (isinstance(exc, discord.ConnectionClosed) and exc.code == 4004):
            return _startup_error(BAD_TOKEN)
        return _startup_error(f"The Discord connection closed before it was ready ({exc!r}). See the log above.")

    async def stop(self) -> None:
        """Stop taking questions, let replies in flight finish for up to DRAIN_TIMEOUT_S, cut the rest with an
        "interrupted" note, then disconnect. Sharded, the shards are disconnected and their leases released
        first, so other replicas take them over while this one drains."""
        self._stopping = True
        if self.shards is not None:
            await self.shards.stop()
        await self.pipeline.inflight.drain(self.stop_timeout_s, grace_s=self.settings.drain_timeout_s)
        await self._close_client()

    async def _close_client(self) -> None:
        if self.shards is not None:
            await self.shards.stop()
            self.shards = None
        for task in [*self._launches.values(), *self._chores]:
            task.cancel()
        await asyncio.gather(*self._launches.values(), *self._chores, return_exceptions=True)
        self._launches.clear()
        if self.client is not None:
            await self.client.close()
        if self._connection is not None:
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError, Exception):
                await asyncio.wait_for(self._connection, timeout=5)
            self._connection = None

    def describe(self) -> str:
        client = self.client
        if client is None or client.user is None:
            return "not connected"
        if self.shards is not None:
            held = self.shards.held
            if not held:
                return (f"logged in as {client.user}; all {self.shard_count} shard(s) are held by other processes, "
                        "this one takes over any that are freed")
            guilds = sum(1 for guild in client.guilds if self.shards.holds_guild(guild.id))
            return (f"logged in as {client.user}, shard(s) {', '.join(map(str, held))} of {self.shard_count} "
                    f"here ({guilds} server(s)); mention it, DM it or use /ask ({self.commands_note})")
        return (f"logged in as {client.user} in {len(client.guilds)} server(s); mention it, DM it or use /ask "
                f"({self.commands_note})")

    # --- shards (see bots.discord.shards and the module doc) ---------------------------------------------------------
    async def _start_shards(self) -> None:
        self._identify_budget = self.coordination.budget("discord:identify", 1, self._identify_interval_s,
                                                         local=EditBudget)
        self.shards = ShardKeeper(self.coordination.leases, self.shard_count, lease_s=self._shard_lease_s,
                                  every_s=self._shard_round_s, settle_s=self._shard_settle_s,
                                  on_gained=self._gain_shards, on_lost=self._lose_shards,
                                  on_round=self._close_unheld)
        await self.shards.start()

    async def before_identify(self, shard_id: int | None) -> None:
        """Before each IDENTIFY (discord.py's hook): wait for the shared identify budget, so processes starting
        or taking shards over together stay within Discord's session-start rate."""
        if self._identify_budget is not None:
            await self._identify_budget.acquire()

    async def _gain_shards(self, shard_ids: list[int]) -> None:
        """Connect shards just claimed: the first ones start the client, later ones join the running client."""
        client = self.client
        if not isinstance(client, ShardedSwitchboardClient) or client.is_closed():
            raise RuntimeError("the Discord client is closed")
        if 0 in shard_ids and not self._commands_synced:
            self._commands_synced = True
            self._chore(self.sync_commands(client.tree))
        if self._connection is None:
            # A list of its own: connect() launches these one by one (IDENTIFYs are spaced), and a shard gained
            # meanwhile is launched below, so it must not join the list being launched. `shard_ids` is not read
            # after the launch (only to count READYs for on_ready, which this bot does not use).
            client.shard_ids = sorted(shard_ids)
            self._connection = asyncio.create_task(client.connect(reconnect=True), name="discord-gateway")
            self._connection.add_done_callback(self._gateway_ended)
            return
        for shard_id in shard_ids:
            info = client.get_shard(shard_id)
            launch = (info.connect() if info is not None else
                      client.launch_shard(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY, shard_id))
            task = asyncio.create_task(launch, name=f"discord-shard-{shard_id}")
            self._launches[shard_id] = task
            task.add_done_callback(lambda done, k=shard_id: self._launch_ended(k, done))

    def _launch_ended(self, shard_id: int, task: asyncio.Task[None]) -> None:
        if self._launches.get(shard_id) is task:
            del self._launches[shard_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("discord: connecting shard %d failed: %r", shard_id, task.exception())

    async def _lose_shards(self, shard_ids: list[int]) -> None:
        """Disconnect shards given up (handed over, lease lost, stopping); replies in flight keep writing."""
        for shard_id in shard_ids:
            self.shards_ready.discard(shard_id)
            launch = self._launches.pop(shard_id, None)
            if launch is not None:
                launch.cancel()
                await asyncio.gather(launch, return_exceptions=True)
        await self._close_unheld(set(self.shards.held) if self.shards is not None else set(), quiet=True)

    async def _close_unheld(self, held: set[int], *, quiet: bool = False) -> None:
        """Close any shard connection this process has no lease for: those just given up, and (each round) any
        that discord.py reconnected by itself after it was given up."""
        client = self.client
        if not isinstance(client, ShardedSwitchboardClient):
            return
        for shard_id, info in client.shards.items():
            if shard_id not in held and not info.is_closed():
                (log.debug if quiet else log.warning)("discord: disconnecting shard %d (not held here)", shard_id)
                self.shards_ready.discard(shard_id)
                await info.disconnect()

    def _gateway_ended(self, task: asyncio.Task[None]) -> None:
        """The sharded client stopped for good (a refused token or intent, say): give the shards back."""
        if self._stopping or not self._started or self.shards is None:
            return  # stopping, or start() reports it
        error = None if task.cancelled() else task.exception()
        log.error("discord: the gateway connection ended (%r); releasing this process's shards", error)
        self._chore(self.shards.stop())

    def _chore(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    def _holds(self, guild_id: int | None) -> bool:
        """Sharded: is this process the one answering in that guild (DMs: shard 0) right now?"""
        return self.shards is None or self.shards.holds(shard_of(guild_id, self.shard_count))

    async def _first_delivery(self, kind: str, event_id: int) -> bool:
        """Sharded: True the first time any replica sees this message or interaction."""
        return self._seen is None or await self._seen.first_time(f"{kind}:{event_id}")

    async def sync_commands(self, tree: app_commands.CommandTree) -> None:
        """Register /ask, /reset, /help: in DISCORD_GUILD_ID only when set (instant), else globally."""
        guild_id = self.settings.discord_guild_id
        try:
            if guild_id:
                guild = discord.Object(id=guild_id)
                tree.copy_global_to(guild=guild)
                synced = await tree.sync(guild=guild)
                where = f"to server {guild_id}"
            else:
                synced = await tree.sync()
                where = "globally"
        except discord.HTTPException as exc:
            self.commands_note = "slash commands NOT synced, see the log"
            log.warning("discord: syncing slash commands failed (%s). If DISCORD_GUILD_ID is right, re-invite the "
                        "bot with the applications.commands scope (README, 'Discord').", exc)
            return
        self.commands_note = f"{', '.join('/' + c.name for c in synced)} synced {where}"

    def _count_429s(self) -> aiohttp.TraceConfig:
        """Every 429 Discord answers, including the ones discord.py waits out and retries on its own: counted,
        and fed to the channel's budget so the other replies there hold back as well."""
        trace = aiohttp.TraceConfig()

        async def on_request_end(session: Any, context: Any, params: aiohttp.TraceRequestEndParams) -> None:
            if params.response.status != 429:
                return
            self.platform_429s += 1
            metrics.RATE_LIMITED.labels(PLATFORM).inc()
            channel = CHANNEL_ROUTE.search(params.url.path + "/")
            if channel is not None:
                self.budgets.note_rate_limited(int(channel.group(1)), retry_after_of(params.response.headers))

        trace.on_request_end.append(on_request_end)
        return trace

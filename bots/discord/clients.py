"""discord.py's clients as the bot needs them: the intents, the no-ping default, the slash commands and the
feedback buttons, on the plain client (one connection) or the sharded one (the shards this process holds)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bots.discord import commands, feedback, handoff
from bots.discord.surface import NO_MENTIONS
from bots.feedback import feedback_store
from bots.startup import StartupError

if TYPE_CHECKING:
    from bots.discord.bot import DiscordFrontend


def _startup_error(message: str) -> RuntimeError:
    return StartupError(message)


def _intents() -> discord.Intents:
    intents = discord.Intents.default()
    intents.message_content = True  # privileged: switched on in the Developer Portal (see README)
    return intents


def _wire(client: Any, frontend: DiscordFrontend) -> None:
    """What both clients add to discord.py's: the front-end, the slash commands and the feedback buttons."""
    client.frontend = frontend
    client.tree = app_commands.CommandTree(client)
    commands.register(client.tree, frontend)
    # 👍/👎 under answers, also those sent before a restart; into feedback.jsonl, or Postgres with DATABASE_URL
    feedback.install(client, feedback_store(frontend.settings))
    handoff.install(client, frontend)  # "Talk to a person" and the staff buttons, also after a restart


class SwitchboardClient(discord.Client):
    """discord.py's client with the intents, the no-ping default and the slash commands the bot needs."""

    def __init__(self, frontend: DiscordFrontend, **options: Any) -> None:
        super().__init__(intents=_intents(), allowed_mentions=NO_MENTIONS, **options)
        self.frontend = frontend
        self.tree: app_commands.CommandTree[SwitchboardClient]
        _wire(self, frontend)

    async def setup_hook(self) -> None:
        await self.frontend.sync_commands(self.tree)

    async def on_message(self, message: discord.Message) -> None:
        self.frontend.on_message(message)


class ShardedSwitchboardClient(discord.AutoShardedClient):
    """The same bot on discord.py's sharded client, for the shards this process holds (`shard_ids` are the
    first ones; the front-end launches the shards it gains later on the running client)."""

    def __init__(self, frontend: DiscordFrontend, **options: Any) -> None:
        super().__init__(intents=_intents(), allowed_mentions=NO_MENTIONS, **options)
        self.frontend = frontend
        self.tree: app_commands.CommandTree[ShardedSwitchboardClient]
        _wire(self, frontend)

    async def setup_hook(self) -> None:
        pass  # slash commands are synced by whichever process holds shard 0 (DiscordFrontend._gain_shards)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        await self.frontend.before_identify(shard_id)

    async def on_message(self, message: discord.Message) -> None:
        self.frontend.on_message(message)

    async def on_shard_ready(self, shard_id: int) -> None:
        self.frontend.shards_ready.add(shard_id)

"""The slash commands: `/ask question:`, `/reset`, `/help`. Declared here, handled by `DiscordFrontend`.

`register(tree, handler)` only wires names, descriptions and options to the handler's methods, so the commands
users see are readable in one place.
"""

from __future__ import annotations

from typing import Protocol

import discord
from discord import app_commands

COMMAND_NAMES = ("ask", "reset", "help")


class CommandHandler(Protocol):
    async def ask(self, interaction: discord.Interaction, question: str) -> None: ...

    async def reset(self, interaction: discord.Interaction) -> None: ...

    async def help(self, interaction: discord.Interaction) -> None: ...


def register(tree: app_commands.CommandTree, handler: CommandHandler) -> None:
    @tree.command(name="ask", description="Ask Switchboard about billing, the API or our policies")
    @app_commands.describe(question="Your question, in a sentence or two")
    async def ask(interaction: discord.Interaction, question: str) -> None:
        await handler.ask(interaction, question)

    @tree.command(name="reset", description="Forget this thread's conversation and start afresh")
    async def reset(interaction: discord.Interaction) -> None:
        await handler.reset(interaction)

    @tree.command(name="help", description="How to ask Switchboard a question")
    async def help_command(interaction: discord.Interaction) -> None:
        await handler.help(interaction)

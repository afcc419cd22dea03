"""The slash commands: `/ask question:`, `/reset`, `/help`. Declared here, handled by `DiscordFrontend`.

`register(tree, handler)` only wires names, descriptions and options to the handler's methods, so the commands
users see are readable in one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import discord
from discord import app_commands

if TYPE_CHECKING:
    from knowledge.agents import AgentRegistry

COMMAND_NAMES = ("ask", "reset", "help")
DESCRIPTION_MAX = 100  # Discord refuses a longer command description


class CommandHandler(Protocol):
    async def ask(self, interaction: discord.Interaction, question: str) -> None: ...

    async def reset(self, interaction: discord.Interaction) -> None: ...

    async def help(self, interaction: discord.Interaction) -> None: ...


def ask_description(agents: AgentRegistry | None) -> str:
    """`/ask`'s description: the agents' topics from the agents file, or a generic line when they do not fit."""
    if agents:
        text = f"Ask Switchboard about {agents.topics_sentence()}"
        if len(text) <= DESCRIPTION_MAX:
            return text
    return "Ask Switchboard a support question"


def register(tree: app_commands.CommandTree, handler: CommandHandler, agents: AgentRegistry | None = None) -> None:
    """Declare the commands. `agents` (default: `handler.orchestrator.agents` when the handler has one) name the
    topics in `/ask`'s description."""
    if agents is None:
        orchestrator: Any = getattr(handler, "orchestrator", None)
        agents = getattr(orchestrator, "agents", None)

    @tree.command(name="ask", description=ask_description(agents))
    @app_commands.describe(question="Your question, in a sentence or two")
    async def ask(interaction: discord.Interaction, question: str) -> None:
        await handler.ask(interaction, question)

    @tree.command(name="reset", description="Forget this thread's conversation and start afresh")
    async def reset(interaction: discord.Interaction) -> None:
        await handler.reset(interaction)

    @tree.command(name="help", description="How to ask Switchboard a question")
    async def help_command(interaction: discord.Interaction) -> None:
        await handler.help(interaction)

"""The thread the bot was called into, as context messages (issue 17: to be built)."""

from __future__ import annotations

from langchain_core.messages import BaseMessage

from core.turn_input import TurnInput


def context_messages(extras: TurnInput) -> list[BaseMessage]:
    """Earlier thread messages as attributed context for the model."""
    return []

"""Files attached to a question, as parts of the question's message (issue 17: to be built)."""

from __future__ import annotations

from langchain_core.messages import HumanMessage

from core.turn_input import TurnInput


def human_message(question: str, extras: TurnInput) -> HumanMessage:
    """The question, with the text of its attachments and, for a model with vision, its images."""
    return HumanMessage(question)

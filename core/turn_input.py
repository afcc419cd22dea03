"""What a turn carries besides the question's text, and how it becomes the messages the graph receives.

Front-ends fill a `TurnInput` (the thread the bot was called into, files people attached) and pass it through
`Inbound.extras` to `Orchestrator.respond(..., extras=...)`. The core turns it into LangChain messages here,
in one place: the earlier thread messages as attributed context (`core.thread_context`), then the question
with its attachments (`core.attachments`). The router sees the question's text only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage


@dataclass(frozen=True, slots=True)
class PriorMessage:
    """One message of the thread before the bot was called in, attributed to its author.

    `from_bot` marks this bot's own earlier words (never mistaken for a user's, and vice versa)."""

    author: str
    text: str
    from_bot: bool = False


@dataclass(frozen=True, slots=True)
class TurnInput:
    """Everything a front-end hands the core with a question, beyond its text."""

    earlier: tuple[PriorMessage, ...] = ()
    earlier_dropped: int = 0  # older thread messages left out to stay within the budget
    attachments: tuple[Any, ...] = ()  # prepared attachments (see `core.attachments`)
    notes: tuple[str, ...] = field(default_factory=tuple)  # sentences the reply must carry (e.g. a file refused)


def input_messages(question: str, extras: TurnInput | None) -> list[BaseMessage]:
    """The messages a turn adds to the conversation: context first, then the question."""
    if extras is None:
        return [HumanMessage(question)]
    from core.attachments import human_message
    from core.thread_context import context_messages

    return [*context_messages(extras), human_message(question, extras)]

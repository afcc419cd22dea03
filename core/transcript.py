"""A conversation as turns: each question with what the bot answered, read from the checkpointed messages.

The agent nodes keep, with each answer, who answered, how sure the bot was and what it cited
(`AIMessage.response_metadata`, `core.graph._turn_metadata`); a request for a person is a question marked
`handoff` (`core.graph._marked_handoff`). A handoff's ticket and `switchboard draft-article` read the
conversation through here, so neither knows LangGraph's message types. The earlier messages of a thread the
bot was called into (`core.thread_context`) are context, not turns, and are left out. Pure: messages in, turns
out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage

from core.thread_context import is_context


@dataclass(frozen=True, slots=True)
class Turn:
    """One question and the bot's answer to it ("" when it gave none: a failed turn, a request for a person)."""

    question: str
    answer: str = ""
    agent: str | None = None
    confidence: float | None = None
    declined: bool = False
    asked_for_person: bool = False
    sources: tuple[dict[str, str], ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question, "answer": self.answer, "agent": self.agent,
                "confidence": self.confidence, "declined": self.declined,
                "asked_for_person": self.asked_for_person, "sources": [dict(s) for s in self.sources]}


def turns_of(messages: Sequence[Any]) -> list[Turn]:
    """The conversation's turns, oldest first."""
    turns: list[Turn] = []
    for message in messages:
        if is_context(message):
            continue  # the thread the bot was called into: context, never a question it was asked
        if isinstance(message, HumanMessage):
            asked = bool((message.additional_kwargs or {}).get("handoff"))
            turns.append(Turn(question=str(message.content), asked_for_person=asked))
        elif isinstance(message, AIMessage) and turns and not turns[-1].answer:
            meta = message.response_metadata or {}
            last = turns[-1]
            turns[-1] = Turn(question=last.question, answer=str(message.content), agent=meta.get("agent"),
                             confidence=meta.get("confidence"), declined=bool(meta.get("declined")),
                             asked_for_person=last.asked_for_person,
                             sources=tuple(dict(s) for s in meta.get("sources") or ()))
    return turns


def questions_of(turns: Sequence[Turn]) -> list[str]:
    """The questions the bot was asked (requests for a person left out)."""
    return [turn.question for turn in turns if not turn.asked_for_person]


def last_answered(turns: Sequence[Turn]) -> Turn | None:
    """The latest turn the bot answered (or declined), for a ticket's "what the bot said"."""
    return next((turn for turn in reversed(turns) if turn.answer), None)

"""Grounded or honest: whether a turn's passages can support an answer, and what the bot says when they cannot.

A support bot that answers from weak passages invents policy; one that says "I don't know, here is a person"
keeps its users' trust. Two signals decide:

- **Retrieval.** The turn's confidence is the best cosine similarity (`Passage.score`) among the passages the
  answering agent would use. Below `Settings.confidence_threshold` (calibrated on `eval/routing.tsv`, see
  README "Grounded or honest") nothing in the knowledge base is about the question, so the bot declines before
  spending a model call. With a model and an earlier turn in the thread the gate is left to the model: a
  follow-up ("and for 12 seats?") retrieves poorly on its own words yet is answerable from the conversation.
- **The model's own statement.** The prompt asks the model to answer with exactly `NO_ANSWER_MARKER` when the
  documents do not contain the answer. `MarkerGate` holds streamed pieces back only while they could still be
  that marker (one or two pieces at most), so an answer streams as before and a refusal never reaches a user.

A declined turn streams `decline_text`: that the bot does not know, what it searched, and how to reach a person.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from knowledge.agents import join_words
from knowledge.types import Passage

NO_ANSWER_MARKER = "NO_ANSWER"
HANDOFF_HINT = "Press **Talk to a person** below, or just say “talk to a person”, and someone from the team will pick it up."


@dataclass(frozen=True, slots=True)
class Grounding:
    """The confidence check of one turn. `confidence` is None when the agent had no passages at all."""

    confidence: float | None
    grounded: bool


def confidence_of(passages: Iterable[Passage]) -> float | None:
    """The best cosine similarity among `passages` (None for none): how close the knowledge base came."""
    scores = [p.score for p in passages]
    return max(scores) if scores else None


def assess(passages: Sequence[Passage], threshold: float, *, defer_to_model: bool = False) -> Grounding:
    """Grounded when the best passage reaches `threshold`; `defer_to_model` (a follow-up with a model) lets the
    model judge instead of the retrieval scores."""
    confidence = confidence_of(passages)
    grounded = defer_to_model or (confidence is not None and confidence >= threshold)
    return Grounding(confidence, grounded)


def decline_text(searched: Sequence[str], *, support_email: str) -> str:
    """The honest answer: no answer found, where the bot looked (agents' labels), and the way to a person."""
    where = f"our {join_words(list(searched), 'and')} documentation" if searched else "our knowledge base"
    return (
        f"I don't know the answer to that. I searched {where} and found nothing that answers it, "
        "and I'd rather not guess.\n\n"
        f"{HANDOFF_HINT} You can also write to {support_email}."
    )


class MarkerGate:
    """Streams a model's pieces through, unless the whole answer is `NO_ANSWER_MARKER`.

    `feed(piece)` returns the text that may be shown now: nothing while what arrived so far (whitespace and
    punctuation aside) is still a prefix of the marker, everything held back once it no longer is. `declined`
    is True once the answer starts with the marker (an explanation after it is swallowed too); `close()` returns
    whatever is still held (an answer that was only a prefix of the marker, such as "NO").
    """

    def __init__(self, marker: str = NO_ANSWER_MARKER) -> None:
        self.marker = marker
        self._held: list[str] = []
        self._open = False  # the answer is not the marker: pass everything through
        self.declined = False  # the answer starts with the marker: swallow it and whatever follows

    @staticmethod
    def _core(text: str) -> str:
        return text.strip().strip("`*_.\"'").strip()

    def feed(self, piece: str) -> str:
        if self._open:
            return piece
        if self.declined:
            return ""
        self._held.append(piece)
        core = self._core("".join(self._held))
        if core.startswith(self.marker):
            self.declined = True
            return ""
        if self.marker.startswith(core):
            return ""
        self._open = True
        return self.close()

    def close(self) -> str:
        """What is still held back, released (empty when the answer was the marker)."""
        if self.declined:
            return ""
        held, self._held = "".join(self._held), []
        return held

"""Which part of a long conversation goes to the model whole, and which part is folded into the summary.

A thread can run for hundreds of turns; sending all of it overflows the model's context, and silently dropping
the oldest turns loses what the user said at the start (their plan, their account, the error they saw). So the
conversation sent to the model is: the system prompt, a running summary of the older turns, the recent turns
whole, and this turn's question. Pure: messages and budgets in, a plan out; `core.graph` carries it out and
`core.summary` writes the summary.

Budgets (`Settings`):
- `MAX_CONTEXT_TOKENS` caps the whole request except the cached reference documents of a CAG agent (those have
  `CAG_TOKEN_BUDGET`): system prompt + summary + recent turns + the question with its passages;
- `HISTORY_TOKEN_BUDGET` is how much of the recent conversation is kept whole at most.
When the unfolded history outgrows its room, the oldest whole turns are folded until it fills about half of
it, so the summary is rewritten every few turns, not on every one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from langchain_core.messages import BaseMessage, HumanMessage

from core.tokens import count_message_tokens

FOLD_TO = 0.5  # after folding, the recent turns fill this share of their room
MIN_SUMMARY_TOKENS = 150
MIN_RECENT_TOKENS = 200


@dataclass(frozen=True, slots=True)
class Window:
    """The plan for one request: fold `to_fold` into the summary, send `recent` whole."""

    to_fold: list[BaseMessage]
    recent: list[BaseMessage]


def summary_budget(max_context_tokens: int) -> int:
    """How long the running summary may grow: a fifth of the context, at least a paragraph."""
    return max(MIN_SUMMARY_TOKENS, max_context_tokens // 5)


def recent_room(max_context_tokens: int, history_budget: int, fixed_tokens: int) -> int:
    """Tokens the recent turns may use, given what the system prompt and the question already take."""
    room = max_context_tokens - fixed_tokens - summary_budget(max_context_tokens)
    return max(MIN_RECENT_TOKENS, min(history_budget, room))


def turn_starts(messages: Sequence[BaseMessage]) -> list[int]:
    """Where each turn begins: a user-role message (a question, or the thread context before one) that does not
    follow another user-role message."""
    starts = []
    for index, message in enumerate(messages):
        if isinstance(message, HumanMessage) and (index == 0 or not isinstance(messages[index - 1], HumanMessage)):
            starts.append(index)
    return starts


def plan(history: Sequence[BaseMessage], room: int) -> Window:
    """Keep the history whole when it fits `room`; else fold the oldest turns until what is left fits about half
    of it, cutting at a turn's start (or, when one turn alone is too big, between its messages)."""
    history = list(history)
    if count_message_tokens(history) <= room:
        return Window(to_fold=[], recent=history)
    target = int(room * FOLD_TO)
    cut = len(history)  # the first message kept: walk back while the suffix fits the target
    used = 0
    for index in range(len(history) - 1, -1, -1):
        cost = count_message_tokens([history[index]])
        if used + cost > target:
            break
        used += cost
        cut = index
    starts = [s for s in turn_starts(history) if s >= cut]
    if starts:
        cut = starts[0]  # whole turns only
    return Window(to_fold=history[:cut], recent=history[cut:])

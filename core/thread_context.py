"""The thread the bot was called into, as context messages for the model.

When someone mentions the bot in a thread people were already discussing, the front-end fetches the earlier
messages (`bots/slack/thread_history.py`, `bots/discord/history.py`) and hands them over as `PriorMessage`s in
a `TurnInput`. Here they become LangChain messages that:

- are attributed to their authors in their text ("Alice wrote: …"), so the model knows who said what;
- are never the bot's own words: even the bot's earlier messages in the thread arrive as quoted context in a
  user-role message (marked "your own earlier message"), never as an `AIMessage`;
- never count as a question: each carries `additional_kwargs["thread_context"]`, which `core.transcript`
  (tickets, turn counts) and `Orchestrator.session_info` skip, and which the context window folds like any
  other part of the conversation.

`bounded()` is the one budget both front-ends apply before handing messages over: at most a number of messages
and of tokens, the oldest dropped first, with how many were dropped (the prompt says so).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from langchain_core.messages import BaseMessage, HumanMessage

from core.tokens import count_text_tokens
from core.turn_input import PriorMessage, TurnInput

CONTEXT_KEY = "thread_context"  # marks a context message in `additional_kwargs`
HEADER = ("Context: the messages below were posted in this thread before you were asked to help. They are "
          "background for the question that follows, not questions to you.")
MAX_MESSAGE_CHARS = 2_000  # one long paste must not crowd out the rest of the thread


def is_context(message: BaseMessage) -> bool:
    """True for a message that is thread context, not a question the bot was asked."""
    return bool((message.additional_kwargs or {}).get(CONTEXT_KEY))


def context_messages(extras: TurnInput) -> list[BaseMessage]:
    """Earlier thread messages as attributed context for the model, oldest first, after a header saying what
    they are (and how many older ones were left out). Nothing when there were none."""
    if not extras.earlier:
        return []
    header = HEADER
    if extras.earlier_dropped:
        header += (f" {extras.earlier_dropped} earlier message{'s were' if extras.earlier_dropped != 1 else ' was'}"
                   " left out to keep this short.")
    messages: list[BaseMessage] = [HumanMessage(header, additional_kwargs={CONTEXT_KEY: True, "header": True})]
    for prior in extras.earlier:
        messages.append(HumanMessage(
            attributed(prior),
            additional_kwargs={CONTEXT_KEY: True, "author": prior.author, "from_bot": prior.from_bot},
        ))
    return messages


def attributed(prior: PriorMessage) -> str:
    """"Alice wrote: …", or the bot's own earlier words marked as such (context, never a reply of this turn)."""
    text = prior.text.strip()
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[:MAX_MESSAGE_CHARS].rstrip() + " […]"
    if prior.from_bot:
        return f"[earlier in the thread] You (this assistant) wrote earlier: {text}"
    return f"[earlier in the thread] {prior.author} wrote: {text}"


def bounded(earlier: Sequence[PriorMessage], *, max_messages: int, max_tokens: int,
            already_dropped: int = 0) -> TurnInput:
    """The newest earlier messages within a message count and a token budget (oldest dropped first), as a
    `TurnInput` that says how many were left out. `already_dropped`: older ones the fetch itself skipped."""
    kept: list[PriorMessage] = []
    used = 0
    for prior in reversed(earlier):
        if len(kept) >= max_messages:
            break
        cost = count_text_tokens(attributed(prior)) + 4
        if used + cost > max_tokens:
            break
        kept.append(prior)
        used += cost
    kept.reverse()
    return TurnInput(earlier=tuple(kept), earlier_dropped=already_dropped + len(earlier) - len(kept))


def merged(extras: TurnInput | None, earlier: TurnInput) -> TurnInput:
    """A front-end's extras with the thread so far (and its notes) added; files already attached are kept."""
    if extras is None:
        return earlier
    return replace(extras, earlier=earlier.earlier, earlier_dropped=earlier.earlier_dropped,
                   notes=(*extras.notes, *earlier.notes))


def masked(extras: TurnInput | None, redact: Callable[[str], str]) -> TurnInput | None:
    """The earlier messages with `REDACT` applied (cards, secrets…), like the question, before anything keeps
    or sends them."""
    if extras is None or not extras.earlier:
        return extras
    return replace(extras, earlier=tuple(replace(p, text=redact(p.text)) for p in extras.earlier))

"""The running summary of a long conversation's older turns (see `core.context_window`).

Kept in the graph state (`ConversationState.summary`), so it is checkpointed with the conversation and
survives restarts. Written by the language model when one is configured (a `nostream` call: a summary never
reaches a user), a batch of folded messages at a time so no summarising request outgrows the context either;
extractive without a model, or when the model fails: one line per message, the user's own statements and
anything that looks like a fact (numbers, identifiers, addresses, names) kept before the bot's answers, which
the knowledge base can give again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from core.thread_context import is_context
from core.tokens import count_text_tokens

log = logging.getLogger(__name__)

LINE_CHARS = 240  # an extractive line quotes at most this much of a message
SUMMARY_PROMPT = (
    "You maintain the running summary of a customer-support conversation whose older messages no longer fit "
    "the assistant's context. Rewrite the summary so far to include the new messages. Keep every fact the "
    "user stated (names, plans, account or order identifiers, versions, numbers, dates, error messages), what "
    "they asked, what was answered, and anything still open. Drop greetings and repetition. Write plain "
    "sentences or short bullet lines, at most {words} words. Reply with the summary only."
)
_FACT = re.compile(r"\b\w*\d[\w-]*|\S+@\S+|\b[A-Z]{2,}\b|\b[A-Z][a-z]+\b|\b(?:my|our|we|I)\b")


def render(messages: Sequence[BaseMessage]) -> list[str]:
    """The messages as transcript lines, attributed: the user, the thread's people, the assistant."""
    lines = []
    for message in messages:
        text = " ".join(str(message.content if isinstance(message.content, str) else
                            " ".join(p.get("text", "") for p in message.content if isinstance(p, dict))).split())
        if not text:
            continue
        if isinstance(message, AIMessage):
            lines.append(f"Assistant: {text}")
        elif is_context(message):
            if (message.additional_kwargs or {}).get("header"):
                continue
            lines.append(f"Thread context: {text.removeprefix('[earlier in the thread] ')}")
        elif isinstance(message, HumanMessage):
            lines.append(f"User: {text}")
    return lines


def _clip(line: str, limit: int = LINE_CHARS) -> str:
    if len(line) <= limit:
        return line
    cut = line[:limit]
    sentence_end = max(cut.rfind(". "), cut.rfind("? "), cut.rfind("! "))
    if sentence_end > limit // 2:
        return cut[: sentence_end + 1]
    return cut.rsplit(" ", 1)[0] + " …"


def _weight(line: str) -> int:
    """What a line is worth keeping: the user's words over the assistant's; facts over chatter."""
    base = 0 if line.startswith("- Assistant:") else 2
    return base + min(3, len(_FACT.findall(line)) // 2)


def extractive(summary: str, messages: Sequence[BaseMessage], budget: int) -> str:
    """The summary with the messages added as clipped lines, then trimmed to `budget` tokens by dropping the
    least informative lines, oldest first among equals (order kept)."""
    lines = [line for line in summary.splitlines() if line.strip()]
    lines += [f"- {_clip(line)}" for line in render(messages)]
    return fit_lines(lines, budget)


def fit_lines(lines: list[str], budget: int) -> str:
    """Drop the lowest-weighted lines (the oldest of equal weight first) until the text fits `budget`."""
    costs = [count_text_tokens(line) + 1 for line in lines]
    total = sum(costs)
    if total <= budget:
        return "\n".join(lines)
    order = sorted(range(len(lines)), key=lambda i: (_weight(lines[i]), i))
    dropped: set[int] = set()
    for index in order:
        if total <= budget:
            break
        dropped.add(index)
        total -= costs[index]
    return "\n".join(line for i, line in enumerate(lines) if i not in dropped)


def batches(messages: Sequence[BaseMessage], budget: int) -> list[list[BaseMessage]]:
    """The messages in consecutive groups whose rendered lines fit `budget` tokens each (a message longer than
    that goes alone, clipped when rendered)."""
    groups: list[list[BaseMessage]] = [[]]
    used = 0
    for message in messages:
        cost = sum(count_text_tokens(line) + 1 for line in render([message]))
        if groups[-1] and used + cost > budget:
            groups.append([])
            used = 0
        groups[-1].append(message)
        used += cost
    return [g for g in groups if g]


Invoke = Callable[[list[BaseMessage]], Awaitable[Any]]


async def summarize(summary: str, messages: Sequence[BaseMessage], *, budget: int, batch_tokens: int,
                    invoke: Invoke | None) -> str:
    """The running summary with `messages` folded in: by the model (`invoke`, a batch at a time) when given,
    else extractive. A batch the model fails on is folded extractively, so a turn never fails for its summary."""
    if invoke is None:
        return extractive(summary, messages, budget)
    words = max(40, int(budget * 0.6))
    for batch in batches(messages, batch_tokens):
        lines = "\n".join(_clip(line, batch_tokens * 4) for line in render(batch))
        request = [SystemMessage(SUMMARY_PROMPT.format(words=words)),
                   HumanMessage(f"Summary so far:\n{summary or '(none yet)'}\n\nNew messages:\n{lines}")]
        try:
            reply = await invoke(request)
            written = str(getattr(reply, "content", reply) or "").strip()
        except Exception:  # noqa: BLE001 - the extractive summary is always possible
            log.warning("the model could not summarise older turns; folding them extractively", exc_info=True)
            written = ""
        if not written:
            summary = extractive(summary, batch, budget)
            continue
        summary = written if count_text_tokens(written) <= budget else _shortened(written, budget)
    return summary


def _shortened(text: str, budget: int) -> str:
    """A model's summary that came out too long: its least informative lines dropped, or (one long paragraph)
    cut at a sentence end near the budget."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > 1:
        fitted = fit_lines(lines, budget)
        if fitted:
            return fitted
    return _clip(" ".join(lines), budget * 3)

"""Recognising a request for a person ("can I talk to a human?", "agent please") before routing.

Such a message must not go to a specialist: a billing agent that answers "agent please" with the pricing page
is the bot refusing to let go. Two cheap signals, both run by the router (`SemanticRouter.wants_person`):

- `asks_for_person(text)`: phrasings no support question uses ("talk to a human", "real person", "agent
  please", a bare "operator");
- similarity to `PERSON_EXAMPLES` with the router's own embedding of the question (no extra model call) at or
  above `PERSON_SIMILARITY`. Measured on `eval/routing.tsv`, `eval/routing_holdout.tsv` and the `none`
  questions: no question scores above 0.37, while the requests for a person in `tests/test_handoff_intent.py`
  score 0.45–1.0, so 0.5 keeps every question routed as before.
"""

from __future__ import annotations

import re

PERSON_SIMILARITY = 0.5
PERSON_EXAMPLES = (
    "I want to talk to a human",
    "can I speak to a real person",
    "agent please",
    "connect me with someone from your support team",
    "transfer me to a live agent",
    "I need a human, not a bot",
    "let me talk to a person",
    "escalate this to a human",
    "I want to speak to a representative",
    "put me through to customer service",
)

_WHO = r"(?:a |an |some |the |your |real |live |actual )*(?:human|person|people|someone|somebody|agent|representative|rep|operator|staff|support team|team member)"
_PATTERNS = (
    re.compile(rf"\b(?:talk|speak|chat|get in touch)\s+(?:to|with)\s+{_WHO}\b"),
    re.compile(rf"\b(?:connect|transfer|put)\s+me\s+(?:to|with|through to)\s+{_WHO}\b"),
    re.compile(r"\b(?:real|live|actual)\s+(?:human|person|agent)\b"),
    re.compile(r"\b(?:human|agent|person|operator|representative)\s+(?:please|pls|plz)\b"),
    re.compile(r"^\s*(?:a\s+)?(?:human|agent|person|operator|representative)\s*[.!?]*\s*$"),
    re.compile(r"\b(?:escalate|hand)\s+(?:this|me|it)?\s*(?:over\s+)?to\s+" + _WHO + r"\b"),
)


def asks_for_person(text: str) -> bool:
    """Whether the words themselves ask for a person (case-insensitive)."""
    lowered = " ".join(text.lower().split())
    return any(pattern.search(lowered) for pattern in _PATTERNS)

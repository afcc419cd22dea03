"""The support loop's counters, in the registry `GET /metrics` renders (`bots.metrics.REGISTRY`).

By platform and agent, so a team sees where people give up on the bot: handoffs (and what triggered them),
questions the bot could not answer, and how handoffs ended.
"""

from __future__ import annotations

from prometheus_client import Counter

from bots.metrics import REGISTRY

HANDOFFS = Counter(
    "switchboard_handoffs_total", "Handoffs to a person, by platform, agent and trigger (button or words)",
    ["platform", "agent", "trigger"], registry=REGISTRY,
)
UNANSWERED = Counter(
    "switchboard_unanswered_total", "Questions the bot declined (not grounded in the knowledge base), by platform "
    "and agent", ["platform", "agent"], registry=REGISTRY,
)
RESOLUTIONS = Counter(
    "switchboard_resolutions_total", "Handoffs ended by staff, by platform, agent and how (resolved, handed_back)",
    ["platform", "agent", "how"], registry=REGISTRY,
)
DELIVERY_FAILURES = Counter(
    "switchboard_handoff_delivery_failures_total", "Handoff notices that could not be delivered, by target "
    "(staff channel or webhook)", ["target"], registry=REGISTRY,
)

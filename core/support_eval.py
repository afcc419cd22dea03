"""One labelled question through the orchestrator, as `switchboard eval` scores it (`core.evaluation`).

By default a question is routed and its retrieval assessed as a first turn would be (`Orchestrator.assess`):
fast, no model call, and the same decision the retrieval half of the confidence check takes. With `answer=True`
the question is answered in full in a throwaway session, so a model's own "the documents do not answer this"
counts as a decline too; the session is forgotten afterwards.
"""

from __future__ import annotations

import uuid
from typing import Any

from core.evaluation import NONE, LabelledQuestion, Prediction
from core.events import Agent, Complete


async def predict(orchestrator: Any, item: LabelledQuestion, *, answer: bool = False) -> Prediction:
    """The prediction for one question: the routed agent, or "none" when the bot declines."""
    decision = await orchestrator.route(item.question) if answer else None
    if answer:
        key = f"eval:{uuid.uuid4()}"
        routed, declined, confidence = decision.agent, False, None
        try:
            async for event in orchestrator.respond(key, item.question, user="eval"):
                if isinstance(event, Agent):
                    routed = event.name
                elif isinstance(event, Complete):
                    declined, confidence = event.declined, event.confidence
        finally:
            await orchestrator.reset(key)
    else:
        decision, confidence, declined = await orchestrator.assess(item.question)
        routed = decision.agent
    return Prediction(item.question, item.label, NONE if declined else routed, round(decision.confidence, 4),
                      routed=routed if declined else None,
                      grounding=None if confidence is None else round(confidence, 4))

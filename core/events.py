"""The typed event stream every front-end consumes.

`Orchestrator.respond()` yields these in order: `Start`, then `Agent` once routed, any number of `Token`s, at
most one `Sources`, and exactly one terminal `Complete` or `Error`. A message asking for a person yields
`Handoff` (and no `Agent` or `Token`) before its `Complete`: the front-end hands the thread to a person and
tells the user so. Front-ends switch on the class (or on
`type` when the event crossed a wire as JSON).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Union


@dataclass(frozen=True, slots=True)
class SourceRef:
    """A document an answer drew on, as a user would want it cited."""

    title: str
    source: str  # path relative to the corpus root, e.g. "technical/timeouts-and-retries.md"
    heading: str = ""
    score: float | None = None


@dataclass(frozen=True, slots=True)
class Start:
    type: ClassVar[str] = "start"
    session_key: str


@dataclass(frozen=True, slots=True)
class Agent:
    type: ClassVar[str] = "agent"
    name: str  # billing | technical | policy
    label: str  # "Billing", shown to users
    reason: str = ""  # why the router chose it (semantic score or LLM decision)


@dataclass(frozen=True, slots=True)
class Token:
    type: ClassVar[str] = "token"
    text: str


@dataclass(frozen=True, slots=True)
class Sources:
    type: ClassVar[str] = "sources"
    items: tuple[SourceRef, ...] = ()


@dataclass(frozen=True, slots=True)
class Complete:
    type: ClassVar[str] = "complete"
    agent: str
    duration_ms: float
    first_token_ms: float | None = None
    route_ms: float = 0.0
    retrieval_ms: float = 0.0
    tokens: int = 0
    text: str = ""  # the whole answer, so a front-end that missed tokens can still land it
    confidence: float | None = None  # the best passage's cosine similarity (`core.grounding`); None: no passages
    declined: bool = False  # the bot said it does not know (and offered a person) instead of answering


@dataclass(frozen=True, slots=True)
class Handoff:
    """The user asked for a person ("can I talk to a human?"); no agent answered. The front-end requests the
    handoff (`bots.support`) and streams what happens next."""

    type: ClassVar[str] = "handoff"
    reason: str = "asked"


@dataclass(frozen=True, slots=True)
class Error:
    type: ClassVar[str] = "error"
    code: str  # llm_unavailable | rate_limited | timeout | internal | bad_input
    user_message: str
    partial_text: str = ""  # what had been streamed before the failure, kept for the user


Event = Union[Start, Agent, Token, Sources, Handoff, Complete, Error]
TERMINAL = (Complete, Error)


def event_to_dict(event: Event) -> dict[str, Any]:
    """JSON-ready form, `{"type": ..., **fields}`; used by `switchboard ask --json` and the SSE API."""
    data = asdict(event)
    return {"type": event.type, **data}

"""Choosing the agent for a question without spending a model call when the answer is clear.

Two signals, both from the local embedding model and both cheap:
- how close the question is to each agent's description and example utterances (the mean of its best three
  matches, so one lucky example cannot win alone);
- how well each agent's own knowledge base answers it (the best passage's similarity in that agent's
  collection). This one generalises with the team's documents: a question about something only the policy
  documents mention goes to policy even if no example utterance looks like it.
The blend is normalised per question; the margin between the best and second-best agent is the confidence.
A follow-up stays with the thread's agent unless another agent wins clearly.

A message asking for a person ("can I talk to a human?") is recognised first (`core.handoff_intent`, with the
same embedding of the question) and routed to no agent: the decision says `handoff`. A channel limited to some
agents (`core.channels`) routes among those only (`allowed`).

One retrieval per turn: a knowledge probe is the agent's own retrieval (the same call, `probe_k` passages), and
the decision carries what each probe found, so the agent that wins answers from its probe instead of embedding
and searching the same question a second time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from core.handoff_intent import PERSON_EXAMPLES, PERSON_SIMILARITY, asks_for_person
from knowledge.agents import AgentSpec
from knowledge.types import Passage

log = logging.getLogger(__name__)

UTTERANCE_WEIGHT = 0.5
TOP_UTTERANCES = 3
PROBE_K = 4  # passages per probe: the agent's retrieval depth, so a winning probe is the agent's retrieval
PROBED_AGENTS = 2


@dataclass(frozen=True, slots=True)
class RouteDecision:
    agent: str
    confidence: float  # margin between the best and second-best blended score
    confident: bool
    reason: str
    scores: Mapping[str, float] = field(default_factory=dict)
    probes: Mapping[str, tuple[Passage, ...]] = field(default_factory=dict)  # each probed agent's retrieval
    handoff: bool = False  # the message asks for a person: no agent answers it


class SemanticRouter:
    """Routes by embedding similarity; see the module docstring for the two signals."""

    def __init__(
        self,
        agents: Mapping[str, AgentSpec],
        embed_texts: Callable[[Sequence[str]], np.ndarray],
        embed_query: Callable[[str], np.ndarray],
        probe: Callable[[str, str, int], list[Passage]] | None = None,
        *,
        min_margin: float = 0.05,
        switch_margin: float = 0.08,
        probe_k: int = PROBE_K,
    ) -> None:
        self._agents = dict(agents)
        self._names = list(self._agents)
        self._embed_query = embed_query
        self._probe = probe
        self.probe_k = probe_k  # the graph reuses a probe as the agent's retrieval when it is at least as deep
        self.min_margin = min_margin
        self.switch_margin = switch_margin
        # Prototype matrix per agent: its description plus every example utterance, embedded once.
        self._prototypes: dict[str, np.ndarray] = {}
        for name, spec in self._agents.items():
            texts = [spec.description, *spec.examples]
            self._prototypes[name] = np.asarray(embed_texts(texts), dtype=np.float32)
        self._person = np.asarray(embed_texts(list(PERSON_EXAMPLES)), dtype=np.float32)

    def wants_person(self, query: str, vector: np.ndarray) -> bool:
        """Whether the message asks for a person rather than an answer (`core.handoff_intent`)."""
        return asks_for_person(query) or float((self._person @ vector).max()) >= PERSON_SIMILARITY

    def utterance_scores(self, query_vector: np.ndarray) -> dict[str, float]:
        scores: dict[str, float] = {}
        for name, matrix in self._prototypes.items():
            sims = matrix @ query_vector
            top = np.sort(sims)[-TOP_UTTERANCES:]
            scores[name] = float(top.mean())
        return scores

    def knowledge_scores(self, query: str, names: Sequence[str] | None = None
                         ) -> tuple[dict[str, float], dict[str, tuple[Passage, ...]]]:
        if self._probe is None:
            return {}, {}
        scores: dict[str, float] = {}
        probes: dict[str, tuple[Passage, ...]] = {}
        for name in names or self._names:
            try:
                passages = self._probe(name, query, self.probe_k)
            except Exception:  # noqa: BLE001 - an empty or missing collection must not break routing
                log.exception("knowledge probe failed for agent %s", name)
                passages = []
            probes[name] = tuple(passages)
            scores[name] = max((p.score for p in passages), default=0.0)
        return scores, probes

    def scores(self, query: str, previous_agent: str | None = None, *, vector: np.ndarray | None = None,
               allowed: Sequence[str] | None = None) -> tuple[dict[str, float], dict[str, tuple[Passage, ...]]]:
        if vector is None:
            vector = np.asarray(self._embed_query(query), dtype=np.float32)
        utterance = self.utterance_scores(vector)
        if allowed:
            utterance = {name: score for name, score in utterance.items() if name in allowed}
        # Only the agents the utterances rank highest are probed: the last one would need both signals to turn
        # round to win, and each probe is a vector search plus a re-rank (a fifth of a routing decision). A
        # thread's current agent is always probed, so a follow-up is weighed on both signals before it switches.
        contenders = sorted(utterance, key=utterance.__getitem__, reverse=True)[:PROBED_AGENTS]
        if previous_agent in utterance and previous_agent not in contenders:
            contenders.append(previous_agent)
        knowledge, probes = self.knowledge_scores(query, contenders)
        if not knowledge or not any(knowledge.values()):
            return utterance, probes
        blended = {
            name: UTTERANCE_WEIGHT * utterance[name] + (1 - UTTERANCE_WEIGHT) * knowledge.get(name, 0.0)
            for name in utterance
        }
        return blended, probes

    def embed(self, query: str) -> np.ndarray:
        """The question's vector, as `route` computes it (for embedding a question ahead of its turn)."""
        return np.asarray(self._embed_query(query), dtype=np.float32)

    def route(self, query: str, previous_agent: str | None = None, *,
              allowed: Sequence[str] | None = None, vector: np.ndarray | None = None) -> RouteDecision:
        """The agent for `query` (among `allowed`, when given), or a handoff when it asks for a person. `vector`:
        the question's vector when it was embedded ahead (`embed`), else it is embedded here."""
        allowed = [name for name in allowed if name in self._agents] if allowed else None
        if allowed and previous_agent not in allowed:
            previous_agent = None
        vector = self.embed(query) if vector is None else np.asarray(vector, dtype=np.float32)
        if self.wants_person(query, vector):
            agent = previous_agent or (allowed or self._names)[0]
            return RouteDecision(agent, 0.0, True, "asked for a person", handoff=True)
        scores, probes = self.scores(query, previous_agent, vector=vector, allowed=allowed)
        ranked = sorted(scores.items(), key=lambda item: item[1], reverse=True)
        best, best_score = ranked[0]
        second_score = ranked[1][1] if len(ranked) > 1 else 0.0  # an agents file may define a single agent
        margin = best_score - second_score
        if previous_agent in scores and best != previous_agent:
            lead = best_score - scores[previous_agent]
            if lead < self.switch_margin:
                return RouteDecision(
                    agent=previous_agent,
                    confidence=margin,
                    confident=True,
                    reason=f"follow-up stays with {previous_agent} ({best} leads by only {lead:.2f})",
                    scores=scores,
                    probes=probes,
                )
        confident = margin >= self.min_margin or best == previous_agent
        reason = f"semantic match {best_score:.2f}, margin {margin:.2f} over the next agent"
        return RouteDecision(best, margin, confident, reason, scores, probes)

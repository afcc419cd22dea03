"""The semantic router's mechanics on hand-made vectors: blending, probing only the contenders, stickiness."""

from __future__ import annotations

import numpy as np

from knowledge.agents import AgentSpec
from core.router import SemanticRouter
from knowledge.types import Passage

AXES = {"billing": 0, "technical": 1, "policy": 2}


def spec(name: str) -> AgentSpec:
    return AgentSpec(name=name, label=name.title(), strategy="rag", description=name, lane="", examples=(name,))


def unit(*weights: float) -> np.ndarray:
    vector = np.asarray(weights, dtype=np.float32)
    return vector / np.linalg.norm(vector)


class Probe:
    """A knowledge probe answering fixed best-passage scores, recording which agents were asked."""

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores
        self.asked: list[str] = []

    def __call__(self, agent: str, query: str, k: int) -> list[Passage]:
        self.asked.append(agent)
        return [Passage(text="t", source=f"{agent}/a.md", title="A", heading="", agent=agent,
                        score=self.scores[agent])]


def router(query_vector: np.ndarray, probe: Probe) -> SemanticRouter:
    def embed_texts(texts):  # an agent's texts lie on its axis; any other text (the requests for a person) on none
        return np.stack([np.eye(3, dtype=np.float32)[AXES[t]] if t in AXES else np.zeros(3, np.float32)
                         for t in texts])

    return SemanticRouter({n: spec(n) for n in AXES}, embed_texts, lambda q: query_vector, probe,
                          min_margin=0.05, switch_margin=0.08)


def test_only_the_two_best_agents_by_utterance_are_probed() -> None:
    probe = Probe({"billing": 0.6, "technical": 0.5, "policy": 0.9})
    decision = router(unit(0.8, 0.5, 0.1), probe).route("q")
    assert sorted(probe.asked) == ["billing", "technical"]
    assert decision.agent == "billing" and set(decision.probes) == {"billing", "technical"}


def test_knowledge_can_overturn_the_utterance_ranking_between_contenders() -> None:
    probe = Probe({"billing": 0.2, "technical": 0.9, "policy": 0.1})
    decision = router(unit(0.7, 0.6, 0.1), probe).route("q")
    assert decision.agent == "technical" and decision.confident


def test_a_follow_up_probes_the_threads_agent_too_and_stays_when_the_lead_is_small() -> None:
    probe = Probe({"billing": 0.50, "technical": 0.50, "policy": 0.49})
    query = unit(0.60, 0.55, 0.50)
    decision = router(query, probe).route("q", previous_agent="policy")
    assert "policy" in probe.asked  # weighed on both signals, not on utterances alone
    assert decision.agent == "policy" and "stays with policy" in decision.reason


def test_a_follow_up_switches_when_another_agent_clearly_wins() -> None:
    probe = Probe({"billing": 0.9, "technical": 0.2, "policy": 0.1})
    decision = router(unit(0.95, 0.2, 0.1), probe).route("q", previous_agent="policy")
    assert decision.agent == "billing"

"""Retrieval quality on the shipped corpus, with the real local embeddings."""

from __future__ import annotations

import csv
from pathlib import Path

CASES = list(csv.DictReader((Path(__file__).parent / "data" / "retrieval_cases.tsv").open(encoding="utf-8"),
                            delimiter="\t"))
REQUIRED = {
    "What does the Enterprise plan cost?": "billing/plans-and-pricing.md",
    "Can I upgrade from the Basic plan?": "billing/upgrading-your-plan.md",
    "My API integration keeps timing out. How do I fix this?": "technical/timeouts-and-retries.md",
    "Do you comply with GDPR?": "policy/gdpr.md",
}


def _top(store, source: str, question: str, k: int = 3) -> list[str]:
    return [p.source for p in store.retrieve(source.split("/")[0], question, k)]


def test_the_four_reference_questions_retrieve_their_document_first(shared_store) -> None:
    for question, source in REQUIRED.items():
        assert _top(shared_store, source, question)[0] == source, question


def test_retrieval_puts_the_expected_document_first_for_most_questions(shared_store) -> None:
    assert len(CASES) >= 24
    misses = [c["question"] for c in CASES if _top(shared_store, c["source"], c["question"])[0] != c["source"]]
    # Measured: 25 of 28 first; the misses are questions that two articles genuinely share.
    assert len(misses) <= 3, misses


def test_the_expected_document_is_always_in_the_top_three(shared_store) -> None:
    for case in CASES:
        assert case["source"] in _top(shared_store, case["source"], case["question"]), case["question"]


def test_passages_carry_source_title_heading_and_a_cosine_score(shared_store) -> None:
    passages = shared_store.retrieve("technical", "What does error E1008 mean?", 3)
    assert passages[0].source == "technical/sdk-errors.md"
    assert passages[0].title == "SDK error codes" and passages[0].agent == "technical"
    assert "E1008" in passages[0].text
    assert all(0.0 < p.score <= 1.0 for p in passages)


def test_search_all_ranks_across_agents(shared_store) -> None:
    best = shared_store.search_all("Are you SOC 2 certified?", 3)
    assert best[0].agent == "policy" and best[0].source == "policy/security-and-encryption.md"

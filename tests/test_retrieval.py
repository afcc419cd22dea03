"""Retrieval quality on the shipped corpus, with the real local embeddings (all-MiniLM-L6-v2 on numpy).

The corpus is ingested once per test session (`shared_store` in conftest). The questions are the retrieval eval
(`eval/retrieval.tsv`, the set the fusion weights were calibrated on, which includes the 36 cases that used to
live in tests/data; `eval/retrieval_holdout.tsv` and `eval/retrieval_holdout2.tsv`, each written after the
calibration it holds out from). Every question of the tuning set and the first hold-out must find its passage
within the top three, but for the known misses listed below, and each set must keep the figures it was measured
at (floors a little under them, so one question turning is a failure to look at, not noise); see the README for
the figures. The second hold-out is held to its figures only: a quarter of it is not in the top three.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core.retrieval_eval import evaluate, load_cases, rank_of
from knowledge import hybrid

EVAL = Path(__file__).resolve().parent.parent / "eval"
TUNING = load_cases(EVAL / "retrieval.tsv")
HOLDOUT = load_cases(EVAL / "retrieval_holdout.tsv")
HOLDOUT2 = load_cases(EVAL / "retrieval_holdout2.tsv")
KNOWN_MISSES = {  # question -> why its passage is not in the top three
    "what are your RPO and RTO": (
        "the corpus says 'recovery point' and 'recovery time' and never defines the acronyms"),
    "can we start another free trial with a diferent email address": (
        "'Extending a trial' and the trial overview are closer by every measure"),
    "can a third party app get access to our workspace without us giving it an api key": (
        "the question names API keys, the answer (OAuth 2.0) does not: rank 4"),
}


@pytest.fixture(scope="module")
def agent_of(shared_store) -> dict[str, str]:
    return {source: agent for source, (agent, _, _) in shared_store.file_hashes().items()}


def test_the_eval_covers_every_agent_and_keeps_a_quarter_as_hold_out() -> None:
    held_out = len(HOLDOUT) + len(HOLDOUT2)
    assert len(TUNING) + held_out >= 80
    assert held_out >= (len(TUNING) + held_out) // 4
    for cases in (TUNING, HOLDOUT, HOLDOUT2):
        assert {c.source.split("/")[0] for c in cases} == {"billing", "technical", "policy"}


@pytest.mark.parametrize("case", TUNING + HOLDOUT, ids=[c.question[:40] for c in TUNING + HOLDOUT])
def test_the_expected_passage_is_in_the_top_three(shared_store, agent_of, case) -> None:
    passages = shared_store.retrieve(agent_of[case.source], case.question, 5)
    rank = rank_of(case, passages)
    if case.question in KNOWN_MISSES and (rank is None or rank > 3):
        pytest.xfail(KNOWN_MISSES[case.question])
    assert rank is not None and rank <= 3, [f"{p.source}#{p.heading}" for p in passages]


def test_the_tuning_set_keeps_its_measured_figures(shared_store, agent_of) -> None:
    report = evaluate(TUNING, agent_of, shared_store.retrieve)
    assert report.overall.top1 >= 0.86 and report.overall.top3 >= 0.98 and report.overall.mrr >= 0.915


def test_the_hold_out_set_keeps_its_measured_figures(shared_store, agent_of) -> None:
    report = evaluate(HOLDOUT, agent_of, shared_store.retrieve)
    assert report.overall.top1 >= 0.80 and report.overall.top3 >= 0.96 and report.overall.mrr >= 0.88


def test_the_second_hold_out_set_keeps_its_measured_figures(shared_store, agent_of) -> None:
    report = evaluate(HOLDOUT2, agent_of, shared_store.retrieve)
    assert report.overall.top1 >= 0.65 and report.overall.top3 >= 0.75 and report.overall.mrr >= 0.70


def test_an_error_code_is_found_by_its_exact_term_where_vectors_alone_rank_it_lower(shared_store) -> None:
    """MiniLM reads "E1008" as a few word pieces: by cosine alone, the section named after it is not first."""
    question = "E1008"
    by_vector = shared_store.search("technical", shared_store.embedder.embed_query(question), 5)
    assert not by_vector[0].heading.endswith('E1008 "SDK used before init()"')
    hybrid = shared_store.retrieve("technical", question, 3)
    assert hybrid[0].heading == 'SDK error codes > E1008 "SDK used before init()"'


def test_a_rare_word_lifts_the_chunk_that_has_it(shared_store) -> None:
    """"religion" is in the acceptable-use policy's list of data not to send: by cosine that chunk is only 12th
    of the policy agent's, by BM25 it is first, and the fusion puts it in the top three."""
    question = "can we send our users' religion as an event property"
    vector = shared_store.embedder.embed_query(question)
    pool = shared_store.search("policy", vector, 12)
    assert all(p.heading != "Acceptable use policy > Data you must not send" for p in pool[:3])
    top = [p.heading for p in shared_store.retrieve("policy", question, 3)]
    assert "Acceptable use policy > Data you must not send" in top


def test_score_stays_the_cosine_and_relevance_orders_the_passages(shared_store) -> None:
    question = "how do I verify webhook signatures"
    vector = shared_store.embedder.embed_query(question)
    cosines = {(p.source, p.text): p.score for p in shared_store.search("technical", vector, 30)}
    passages = shared_store.retrieve("technical", question, 4)
    for passage in passages:
        assert passage.score == pytest.approx(cosines[(passage.source, passage.text)], abs=1e-5)
        # BM25 and the section view move it by at most their weights; a lead loses its handicap
        assert passage.score - hybrid.LEAD_HANDICAP - hybrid.VIEW_WEIGHT <= passage.relevance <= \
            passage.score + hybrid.IDENTIFIER_WEIGHT + hybrid.VIEW_WEIGHT
    assert [p.relevance for p in passages] == sorted((p.relevance for p in passages), reverse=True)


def _first(store, agent: str, question: str) -> str:
    return store.retrieve(agent, question, 3)[0].heading


def test_the_section_view_puts_the_section_named_by_the_question_first(shared_store, monkeypatch) -> None:
    """"After cancellation" is what the question asks about; by its chunk's vector and words, the trial's
    "What happens when the trial is over" is closer."""
    question = "what happens to our dashboards once we cancel"
    assert _first(shared_store, "billing", question) == "Cancelling your subscription > After cancellation"
    monkeypatch.setattr(hybrid, "VIEW_WEIGHT", 0.0)
    assert _first(shared_store, "billing", question) != "Cancelling your subscription > After cancellation"


def test_a_documents_overview_gives_way_to_the_section_that_answers(shared_store, monkeypatch) -> None:
    """The discounts article opens by naming nonprofits and education; the answer is its Education section."""
    question = "do teachers or universities get a discount"
    assert _first(shared_store, "billing", question) == "Discounts for nonprofits and education > Education"
    monkeypatch.setattr(hybrid, "LEAD_HANDICAP", 0.0)
    assert _first(shared_store, "billing", question) == "Discounts for nonprofits and education"


def test_passages_carry_source_title_heading_and_a_cosine_score(shared_store) -> None:
    passages = shared_store.retrieve("technical", "What does error E1008 mean?", 3)
    assert passages[0].source == "technical/sdk-errors.md"
    assert passages[0].title == "SDK error codes" and passages[0].agent == "technical"
    assert passages[0].heading.startswith("SDK error codes") and "E1008" in passages[0].heading + passages[0].text
    assert len(passages) == 3 and all(0.0 < p.score <= 1.0 for p in passages)


def test_a_subsection_hit_carries_its_section_when_it_fits(shared_store) -> None:
    okta = shared_store.retrieve("technical", "set up SAML in Okta", 3)[0]
    assert okta.heading == "Single sign-on (SAML) and SCIM > Setting up SAML > Okta"
    assert okta.section is not None and okta.section.heading == "Single sign-on (SAML) and SCIM > Setting up SAML"
    assert okta.text in okta.section.text and "Upload the provider's metadata XML" in okta.section.text


def test_search_all_ranks_across_agents_by_relevance(shared_store) -> None:
    best = shared_store.search_all("Are you SOC 2 certified?", 3)
    assert best[0].agent == "policy" and best[0].source == "policy/security-and-encryption.md"
    assert [p.relevance for p in best] == sorted((p.relevance for p in best), reverse=True)
    sepa = shared_store.search_all("SEPA", 1)[0]
    assert (sepa.agent, sepa.heading) == ("billing", "Payment methods > Paying by SEPA Direct Debit")


def test_counts_cover_every_agent(shared_store) -> None:
    counts = shared_store.counts()
    assert set(counts) == {"billing", "technical", "policy"} and all(n > 20 for n in counts.values())
    assert not shared_store.is_empty()

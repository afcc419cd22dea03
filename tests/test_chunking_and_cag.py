"""Chunking by heading, and cached documents (CAG) for the agents that keep them in their prompt."""

from __future__ import annotations

import pytest

from knowledge.cag import CacheBudgetExceeded, CachedDocumentSet
from knowledge.chunking import MAX_CHARS, chunk_document
from knowledge.loaders import Document


def test_chunks_follow_headings_and_keep_their_path() -> None:
    text = "# Guide\nIntro.\n\n## Setup\nStep one.\n\n### Okta\nOkta steps.\n\n## Errors\nE1 means x."
    chunks = chunk_document(Document("technical/g.md", "Guide", "technical", text, "h"))
    assert [c.heading for c in chunks] == ["Guide", "Guide > Setup", "Guide > Setup > Okta", "Guide > Errors"]
    assert chunks[2].embed_text.startswith("Guide — Guide > Setup > Okta")
    assert chunks[2].text == "Okta steps."


def test_long_sections_are_split_with_overlap_and_code_fences_stay_whole() -> None:
    code = "```python\n# not a heading\n" + "\n".join(f"x{i} = {i}" for i in range(30)) + "\n```"
    body = "\n\n".join(f"Paragraph {i} " + "words " * 40 for i in range(12))
    text = f"# Doc\n\n## Long\n{body}\n\n{code}\n"
    chunks = chunk_document(Document("technical/d.md", "Doc", "technical", text, "h"))
    assert len(chunks) > 3 and all(len(c.text) <= MAX_CHARS + 200 for c in chunks)
    assert all(c.text.count("```") % 2 == 0 for c in chunks)
    assert any("# not a heading" in c.text for c in chunks)
    # consecutive windows share some words (overlap)
    assert chunks[1].text.split()[0] in chunks[0].text


def test_policy_keeps_every_policy_document_and_technical_none(shared_store) -> None:
    cached = CachedDocumentSet(shared_store, budget_tokens=16_000)
    policy = cached.cached_documents("policy")
    assert policy is not None and len(policy.sources) == 9
    assert "Standard Contractual Clauses" in policy.text and policy.tokens > 2000
    assert cached.cached_documents("technical") is None


def test_billing_caches_exactly_the_whole_pricing_sheet(shared_store) -> None:
    billing = CachedDocumentSet(shared_store, budget_tokens=16_000).cached_documents("billing")
    assert billing is not None and billing.sources == ("billing/plans-and-pricing.md",)
    for fact in ("$1,200 per month", "$199 per month", "$39 per month", "$40 per additional 1 million"):
        assert fact in billing.text


def test_cached_text_is_byte_identical_across_calls(shared_store) -> None:
    first = CachedDocumentSet(shared_store, 16_000).cached_documents("policy")
    second = CachedDocumentSet(shared_store, 16_000).cached_documents("policy")
    assert first is not None and second is not None and first.text == second.text


def test_over_budget_is_refused_politely(shared_store) -> None:
    with pytest.raises(CacheBudgetExceeded, match=r"policy agent.*over the budget of 500.*CAG_TOKEN_BUDGET"):
        CachedDocumentSet(shared_store, budget_tokens=500).cached_documents("policy")

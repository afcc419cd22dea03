"""Cached documents (CAG): which documents each agent keeps whole, a stable text, memoisation, the budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from knowledge.cag import (
    CacheBudgetExceeded,
    CachedDocumentSet,
    approximate_tokens,
    count_tokens,
)
from knowledge.ingest import ingest
from tests.conftest import DOCS
from tests.fakes.embedder import HashEmbedder

def _open(data_dir: Path):
    from knowledge.store import KnowledgeStore, open_chroma_client
    from tests.conftest import make_settings

    return KnowledgeStore(open_chroma_client(make_settings(data_dir)), HashEmbedder())


POLICY_DOCS = sorted(f"policy/{p.name}" for p in (DOCS / "policy").glob("*.md"))


def test_policy_keeps_every_policy_document_whole(shared_store) -> None:
    policy = CachedDocumentSet(shared_store, budget_tokens=16_000).cached_documents("policy")
    assert policy is not None and list(policy.sources) == POLICY_DOCS
    for source in POLICY_DOCS:
        body = (DOCS / source).read_text("utf-8").split("---\n", 2)[2].strip()
        assert body in policy.text  # whole, not chunks
    assert policy.tokens == count_tokens(policy.text) > 2_000


def test_billing_caches_exactly_the_whole_pricing_sheet(shared_store) -> None:
    billing = CachedDocumentSet(shared_store, budget_tokens=16_000).cached_documents("billing")
    assert billing is not None and billing.sources == ("billing/plans-and-pricing.md",)
    sheet = (DOCS / "billing" / "plans-and-pricing.md").read_text("utf-8").split("---\n", 2)[2].strip()
    assert billing.text == f"### Source: billing/plans-and-pricing.md — Plans and pricing\n\n{sheet}"


def test_technical_keeps_nothing(shared_store) -> None:
    assert CachedDocumentSet(shared_store, budget_tokens=16_000).cached_documents("technical") is None


def test_the_text_is_byte_identical_across_calls_and_instances(shared_store) -> None:
    cached = CachedDocumentSet(shared_store, 16_000)
    first, again = cached.cached_documents("policy"), cached.cached_documents("policy")
    fresh = CachedDocumentSet(shared_store, 16_000).cached_documents("policy")
    assert first is again  # memoised
    assert first is not None and fresh is not None and first.text.encode() == fresh.text.encode()
    separators = [line for line in first.text.splitlines() if line.startswith("### Source: ")]
    assert [s.split(" ")[2] for s in separators] == POLICY_DOCS  # stable order: by path


def test_over_budget_is_refused_politely_naming_agent_size_and_budget(shared_store) -> None:
    with pytest.raises(CacheBudgetExceeded, match=r"policy agent.*[\d,]+ tokens, over the budget of 500.*"
                                                   r"CAG_TOKEN_BUDGET.*cache: true"):
        CachedDocumentSet(shared_store, budget_tokens=500).cached_documents("policy")


def _tiny_corpus(root: Path) -> None:
    (root / "policy").mkdir(parents=True)
    for name in ("b-terms", "a-privacy"):
        (root / "policy" / f"{name}.md").write_text(
            f"---\ntitle: {name.title()}\ncache: true\n---\n# {name}\nThe {name} text.\n", "utf-8")
    (root / "policy" / "c-not-cached.md").write_text("---\ntitle: C\n---\n# C\nRetrieved only.\n", "utf-8")


def test_an_edited_and_reingested_document_rebuilds_the_cache(tmp_path: Path) -> None:
    _tiny_corpus(tmp_path / "docs")
    store = _open(tmp_path / "data")
    ingest([tmp_path / "docs"], store)
    cached = CachedDocumentSet(store, 1_000)
    before = cached.cached_documents("policy")
    assert before is not None and before.sources == ("policy/a-privacy.md", "policy/b-terms.md")
    assert "Retrieved only" not in before.text
    path = tmp_path / "docs" / "policy" / "b-terms.md"
    path.write_text(path.read_text("utf-8").replace("text.", "text, revised and longer."), "utf-8")
    ingest([tmp_path / "docs"], store)
    after = cached.cached_documents("policy")
    assert after is not None and "revised and longer" in after.text and after.tokens > before.tokens


def test_a_document_no_longer_marked_cache_leaves_the_cache(tmp_path: Path) -> None:
    _tiny_corpus(tmp_path / "docs")
    store = _open(tmp_path / "data")
    ingest([tmp_path / "docs"], store)
    cached = CachedDocumentSet(store, 1_000)
    assert cached.cached_documents("policy") is not None
    for path in (tmp_path / "docs" / "policy").glob("*.md"):
        path.write_text(path.read_text("utf-8").replace("cache: true\n", ""), "utf-8")
    ingest([tmp_path / "docs"], store)
    assert cached.cached_documents("policy") is None


def test_tokens_are_counted_with_the_local_wordpiece_tokenizer() -> None:
    assert count_tokens("") == 0
    assert count_tokens("hello world") == 2
    assert count_tokens("unbelievable tokenization") > 2  # word pieces, not words
    assert approximate_tokens("abcdefgh") == 2


def test_a_burst_of_questions_builds_an_agents_cached_documents_once(shared_store) -> None:
    """Questions arriving together all find the memo empty; one reads and counts the documents, the rest wait."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    counted: list[int] = []
    start = threading.Barrier(8)

    def count(text: str) -> int:
        counted.append(len(text))
        return count_tokens(text)

    cached = CachedDocumentSet(shared_store, budget_tokens=16_000, count_tokens=count)

    def ask() -> object:
        start.wait(10)
        return cached.cached_documents("policy")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: ask(), range(8)))
    assert len(counted) == 1 and all(result is results[0] for result in results)

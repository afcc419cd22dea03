"""Section views and document leads: what they are, how they rank, and that they are embedded once, kept with the
lexical index and reused by an incremental sync. `HashEmbedder` and synthetic vectors: milliseconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from knowledge import hybrid
from knowledge.ingest import ingest
from knowledge.lexical import ChunkRecord, LexicalSnapshot
from knowledge.store import KnowledgeStore, open_chroma_client
from knowledge.types import Passage
from knowledge.views import leads, view_text, view_vectors
from tests.conftest import make_settings
from tests.fakes.embedder import HashEmbedder


def test_a_view_is_the_title_and_the_innermost_heading() -> None:
    assert view_text("Discounts", "Discounts > Education") == "Discounts: Education"
    assert view_text("SSO", "SSO > Setting up SAML > Okta") == "SSO: Okta"
    assert view_text("Discounts", "Discounts") == "Discounts" and view_text("Notes", "") == "Notes"


def test_a_lead_is_the_top_level_text_of_a_document_that_has_sections() -> None:
    sources = ["a.md", "a.md", "a.md", "b.md", "b.md"]
    headings = ["A", "A > Setup", "A > Setup > Okta", "B", "B"]  # b.md has no sections: no lead
    assert leads(sources, headings).tolist() == [True, False, False, False, False]


def test_view_vectors_embed_each_new_text_once_and_reuse_known_ones() -> None:
    calls: list[list[str]] = []

    def embed(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        return np.ones((len(texts), 2), dtype=np.float32)

    known = {"A: Setup": np.array([0.0, 1.0], dtype=np.float32)}
    rows = view_vectors(["A: Setup", "A: Okta", "A: Okta"], known, embed, 2)
    assert calls == [["A: Okta"]]
    assert rows.tolist() == [[0.0, 1.0], [1.0, 1.0], [1.0, 1.0]]
    assert not view_vectors(["A: New"], {}, None, 2).any()  # no embedder: zero rows, no effect


def _snapshot(views: np.ndarray) -> tuple[LexicalSnapshot, list[Passage]]:
    meta = {"source": "billing/discounts.md", "title": "Discounts", "content_hash": "h"}
    records = [ChunkRecord.of("billing/discounts.md#0", "Discounts for nonprofits and education.",
                              {**meta, "heading": "Discounts", "index": 0}),
               ChunkRecord.of("billing/discounts.md#1", "Half price for accredited schools.",
                              {**meta, "heading": "Discounts > Education", "index": 1})]
    snapshot = LexicalSnapshot(records, np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32), views=views)
    found = [Passage(r.text, r.source, r.title, r.heading, "billing", 0.6) for r in records]
    return snapshot, found


def _ranked(snapshot: LexicalSnapshot, found: list[Passage], query: np.ndarray) -> list[str]:
    pool = hybrid.candidates("billing", "teachers", query, found, snapshot)
    return [p.heading for p in hybrid.fuse(pool, 2, hybrid.lexical_weight("teachers"))]


def test_the_section_whose_view_matches_the_question_ranks_first(monkeypatch) -> None:
    """Equal cosines, no shared word: the section view decides (the lead handicap is off here)."""
    monkeypatch.setattr(hybrid, "LEAD_HANDICAP", 0.0)
    snapshot, found = _snapshot(np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32))
    query = np.array([1.0, 0.0], dtype=np.float32)
    assert _ranked(snapshot, found, query) == ["Discounts > Education", "Discounts"]
    monkeypatch.setattr(hybrid, "VIEW_WEIGHT", 0.0)
    assert _ranked(snapshot, found, query) == ["Discounts", "Discounts > Education"]


def test_a_documents_lead_gives_way_to_its_own_section_at_equal_scores(monkeypatch) -> None:
    snapshot, found = _snapshot(np.zeros((2, 2), dtype=np.float32))
    query = np.array([1.0, 0.0], dtype=np.float32)
    assert snapshot.leads.tolist() == [True, False]
    assert _ranked(snapshot, found, query) == ["Discounts > Education", "Discounts"]
    passages = hybrid.fuse(hybrid.candidates("billing", "teachers", query, found, snapshot), 2)
    assert passages[1].relevance == pytest.approx(0.6 - hybrid.LEAD_HANDICAP)
    assert passages[1].score == pytest.approx(0.6)  # the cosine, untouched
    monkeypatch.setattr(hybrid, "LEAD_HANDICAP", 0.0)
    assert _ranked(snapshot, found, query) == ["Discounts", "Discounts > Education"]


class _CountingEmbedder(HashEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.documents: list[str] = []

    def embed_documents(self, texts):
        self.documents.extend(texts)
        return super().embed_documents(texts)


def test_views_are_saved_loaded_and_only_new_headings_embedded(tmp_path: Path) -> None:
    docs, data = tmp_path / "docs", tmp_path / "data"
    article = "---\ntitle: API keys\n---\n# API keys\n\nAbout keys.\n\n## Rotating\n{body}\n"
    (docs / "technical").mkdir(parents=True)
    (docs / "technical" / "keys.md").write_text(article.format(body="Create a new key."), encoding="utf-8")
    embedder = _CountingEmbedder()
    store = KnowledgeStore(open_chroma_client(make_settings(data)), embedder, lexical_dir=data / "lexical")
    ingest([docs], store)
    assert {"API keys", "API keys: Rotating"} <= set(embedder.documents)
    views = store.lexical("technical").views
    assert views.shape == store.lexical("technical").vectors.shape and np.linalg.norm(views, axis=1).min() > 0.99

    embedder.documents.clear()
    (docs / "technical" / "keys.md").write_text(article.format(body="Revoke the old key."), encoding="utf-8")
    ingest([docs], store)
    assert "API keys: Rotating" not in embedder.documents  # the body changed, the heading did not

    reopened = KnowledgeStore(open_chroma_client(make_settings(data)), HashEmbedder(), lexical_dir=data / "lexical")
    assert reopened.lexical("technical").views.tolist() == store.lexical("technical").views.tolist()
    assert reopened._lexical.last_sync["technical"].origin == "disk"

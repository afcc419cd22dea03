"""The lexical index: terms, persistence in the data directory, rebuilt when missing or foreign, and kept in step
with the store incrementally. Uses `HashEmbedder` (no model) and a three-article corpus: milliseconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from knowledge.analysis import query_terms, terms
from knowledge.ingest import ingest
from knowledge.store import KnowledgeStore, open_chroma_client
from tests.conftest import make_settings
from tests.fakes.embedder import HashEmbedder

ARTICLE = "---\ntitle: {title}\n---\n# {title}\n\n## Overview\n{body}\n\n## Limits\nLimits of {title}, in detail.\n"


def _write(root: Path, rel: str, title: str, body: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(ARTICLE.format(title=title, body=body), encoding="utf-8")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    _write(root, "technical/errors.md", "SDK errors", "E1008 means the SDK was used before init() was called.")
    _write(root, "technical/keys.md", "API keys", "Rotate a key by creating a new one, then revoking the old.")
    _write(root, "billing/sepa.md", "Payment methods", "Customers billed in euros can pay by SEPA Direct Debit.")
    return root


def _open(data_dir: Path, embedder: HashEmbedder | None = None, **kwargs: bool) -> KnowledgeStore:
    return KnowledgeStore(open_chroma_client(make_settings(data_dir)), embedder or HashEmbedder(),
                          lexical_dir=data_dir / "lexical", **kwargs)


def test_terms_keep_identifiers_whole_and_stem_words() -> None:
    found = terms("Charged twice? Use lum_test_ keys, the Lumenly-Version header and error E1008 on v1.")
    assert {"charg", "twice", "key", "e1008", "v1", "lum_test", "lumenly-version", "version"} <= set(found)
    assert "the" not in found and "use" in found
    assert query_terms("keys key KEYS") == ("key",)


def test_ingest_saves_the_index_and_a_new_process_loads_it_without_retokenising(corpus: Path, tmp_path) -> None:
    data = tmp_path / "data"
    ingest([corpus], _open(data))
    assert (data / "lexical" / "technical" / "records.json").exists()
    reopened = _open(data)
    hit = reopened.retrieve("technical", "E1008", 1)[0]
    assert hit.source == "technical/errors.md"
    sync = reopened._lexical.last_sync["technical"]
    assert (sync.origin, sync.tokenized, sync.removed) == ("disk", 0, 0)


def test_a_missing_index_is_rebuilt_from_the_store_and_saved_again(corpus: Path, tmp_path) -> None:
    data = tmp_path / "data"
    ingest([corpus], _open(data))
    before = [(p.source, p.heading) for p in _open(data).retrieve("technical", "E1008 init", 2)]
    for path in sorted((data / "lexical").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    rebuilt = _open(data)
    assert [(p.source, p.heading) for p in rebuilt.retrieve("technical", "E1008 init", 2)] == before
    sync = rebuilt._lexical.last_sync["technical"]
    assert sync.origin == "empty" and sync.tokenized == rebuilt.count("technical") and sync.saved
    assert (data / "lexical" / "technical" / "records.json").exists()


def test_an_unreadable_or_foreign_index_is_rebuilt_not_trusted(corpus: Path, tmp_path) -> None:
    data = tmp_path / "data"
    ingest([corpus], _open(data))
    (data / "lexical" / "billing" / "records.json").write_text("{not json", encoding="utf-8")
    store = _open(data)
    assert store.retrieve("billing", "SEPA", 1)[0].source == "billing/sepa.md"
    assert store._lexical.last_sync["billing"].origin == "empty"
    other_model = _open(data, HashEmbedder("test:another-model"), check_embedder=False)  # as `ingest --rebuild`
    other_model.lexical("technical")  # saved with test:hash vectors: not loaded
    assert other_model._lexical.last_sync["technical"].origin == "empty"
    assert json.loads((data / "lexical" / "technical" / "records.json").read_text())["model"] == "test:another-model"


def test_a_changed_document_is_retokenised_alone_and_found_by_its_new_words(corpus: Path, tmp_path) -> None:
    data = tmp_path / "data"
    store = _open(data)
    ingest([corpus], store)
    assert store.lexical("technical") is store.lexical("technical")  # no write, no sync
    _write(corpus, "technical/keys.md", "API keys", "Keys expire after a year; a zeppelin-shaped badge marks them.")
    report = ingest([corpus], store)
    assert report.files_updated == 1
    sync = store._lexical.last_sync["technical"]
    changed = store.count("technical") - sync.kept
    assert sync.tokenized == changed == 2 and sync.removed == 2  # the two chunks of keys.md, nothing else
    assert store.retrieve("technical", "zeppelin badge", 1)[0].source == "technical/keys.md"
    assert store._lexical.last_sync["billing"].tokenized == 0


def test_removed_documents_leave_the_index(corpus: Path, tmp_path) -> None:
    data = tmp_path / "data"
    store = _open(data)
    ingest([corpus], store)
    (corpus / "technical" / "errors.md").unlink()
    ingest([corpus], store)
    assert all(r.source != "technical/errors.md" for r in store.lexical("technical").records)
    assert all(p.source != "technical/errors.md" for p in _open(data).retrieve("technical", "E1008", 3))


def test_a_store_without_a_lexical_directory_builds_the_index_in_memory(corpus: Path, tmp_path) -> None:
    data = tmp_path / "data"
    store = KnowledgeStore(open_chroma_client(make_settings(data)), HashEmbedder())
    ingest([corpus], store)
    assert store.retrieve("billing", "SEPA", 1)[0].source == "billing/sepa.md"
    assert not (data / "lexical").exists()


def test_a_chunk_only_bm25_finds_joins_the_candidates_with_its_own_cosine() -> None:
    """The vector search returned two chunks; the one naming E1008 was not among them. It competes anyway,
    scored with the cosine of its stored vector, and its exact match puts it first."""
    import numpy as np

    from knowledge import hybrid
    from knowledge.lexical import ChunkRecord, LexicalSnapshot
    from knowledge.types import Passage

    texts = {"a": "Retries use exponential backoff.", "b": "Timeouts: set a read timeout of 30 seconds.",
             "c": "E1008 means the SDK was used before init()."}
    records = [ChunkRecord.of(f"technical/{k}.md#0", t, {"source": f"technical/{k}.md", "title": k.upper(),
                                                          "heading": k.upper(), "content_hash": "h"})
               for k, t in texts.items()]
    vectors = np.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8]], dtype=np.float32)
    snapshot = LexicalSnapshot(records, vectors)
    query = np.array([1.0, 0.0], dtype=np.float32)
    found = [Passage(texts["a"], "technical/a.md", "A", "A", "technical", 1.0),
             Passage(texts["b"], "technical/b.md", "B", "B", "technical", 0.8)]
    pool = hybrid.candidates("technical", "what is E1008", query, found, snapshot)
    assert [c.passage.source for c in pool] == ["technical/a.md", "technical/b.md", "technical/c.md"]
    assert pool[2].passage.score == pytest.approx(0.6) and pool[2].lexical > 0 and pool[0].lexical == 0
    ranked = hybrid.fuse(pool, 2, hybrid.lexical_weight("what is E1008"))
    assert hybrid.lexical_weight("what is E1008") == hybrid.IDENTIFIER_WEIGHT
    assert [p.source for p in ranked] == ["technical/a.md", "technical/c.md"]
    assert ranked[1].relevance == pytest.approx(0.6 + hybrid.IDENTIFIER_WEIGHT)
    assert ranked[1].score == pytest.approx(0.6)  # its cosine, not the fused value


def test_field_scores_equal_bm25s_own_for_every_query_shape() -> None:
    """`_Field.scores` sums the query terms' postings in one `np.bincount`; bm25s adds them term by term."""
    import numpy as np

    from knowledge.lexical import _Field

    documents = [terms(text) for text in [
        "Rotate a key by creating a new one, then revoking the old key.",
        "Customers billed in euros can pay by SEPA Direct Debit.",
        "E1008 means the SDK was used before init() was called.",
        "A key, a key and a key: repeated terms score higher.",
    ]]
    field = _Field.build(documents)
    assert field is not None
    for query in [query_terms("rotate key"), query_terms("key key sepa"), query_terms("E1008 init"),
                  query_terms("key"), query_terms("unknown words only")]:
        ids = [field.vocab[t] for t in query if t in field.vocab]
        ours = field.scores(query)
        if not ids:
            assert ours is None
            continue
        theirs = field.model.get_scores_from_ids(ids)
        assert ours is not None and ours.dtype == theirs.dtype and ours.shape == theirs.shape
        assert np.allclose(ours, theirs, rtol=1e-6, atol=1e-6) and ours.any()

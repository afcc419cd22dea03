"""Ingestion: idempotent, incremental, deletions, bad files, loaders, store reopen, embedder mismatch, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from knowledge.base import open_store
from knowledge.embeddings import local_model
from knowledge.ingest import ingest
from knowledge.store import EmbeddingMismatchError
from tests.conftest import make_settings

ARTICLE = """---
title: {title}
---
# {title}

## Overview
{body}

## Details
More details about {title}: limits, steps and examples that a support article would give.
"""


def _write(root: Path, rel: str, title: str, body: str = "Some helpful text.") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(ARTICLE.format(title=title, body=body), encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    _write(root, "billing/refunds.md", "Refunds", "Annual plans can be refunded within 30 days.")
    _write(root, "technical/keys.md", "API keys", "Rotate keys by creating a new one first.")
    _write(root, "policy/gdpr.md", "GDPR", "We are a processor under GDPR.")
    return root


@pytest.fixture
def store(tmp_path: Path):
    return open_store(make_settings(tmp_path / "data"), local_model())


def _snapshot(store) -> dict[str, list[str]]:
    return {agent: sorted(store.chunk_ids(agent)) for agent in store.agents}


def test_second_run_changes_nothing(corpus: Path, store) -> None:
    first = ingest([corpus], store)
    before = _snapshot(store)
    second = ingest([corpus], store)
    assert first.files_added == 3 and first.chunks_added > 0
    assert (second.files_added, second.files_updated, second.files_removed) == (0, 0, 0)
    assert second.files_unchanged == 3 and second.chunks_added == second.chunks_updated == 0
    assert _snapshot(store) == before


def test_a_changed_file_replaces_only_its_chunks(corpus: Path, store) -> None:
    ingest([corpus], store)
    untouched = store.chunk_ids("technical")
    _write(corpus, "billing/refunds.md", "Refunds", "Refunds now take 3 days. " * 60)
    report = ingest([corpus], store)
    assert report.files_updated == 1 and report.files_unchanged == 2
    assert store.chunk_ids("technical") == untouched
    assert "3 days" in store.retrieve("billing", "how long do refunds take", 1)[0].text


def test_a_deleted_file_loses_its_chunks(corpus: Path, store) -> None:
    ingest([corpus], store)
    (corpus / "policy" / "gdpr.md").unlink()
    report = ingest([corpus], store)
    assert report.files_removed == 1 and report.chunks_removed > 0
    assert store.count("policy") == 0 and store.count("billing") > 0


def test_bad_files_warn_by_name_and_the_rest_goes_on(corpus: Path, store) -> None:
    (corpus / "billing" / "blob.md").write_bytes(b"\x00\x01\x02binary")
    (corpus / "billing" / "empty.md").write_text("   \n", encoding="utf-8")
    (corpus / "billing" / "latin.md").write_bytes("Caf\xe9 price list".encode("latin-1"))
    (corpus / "stray.md").write_text("# No agent here\ntext", encoding="utf-8")
    report = ingest([corpus], store)
    assert report.files_added == 3 and report.files_failed == 4
    joined = "\n".join(report.warnings)
    for name in ("blob.md: binary", "empty.md: empty", "latin.md: not UTF-8", "stray.md: no agent"):
        assert name in joined
    assert all(len(w.splitlines()) == 1 for w in report.warnings)


def test_text_and_html_files_are_read_with_their_headings(tmp_path: Path, store) -> None:
    root = tmp_path / "docs"
    (root / "technical").mkdir(parents=True)
    (root / "technical" / "notes.txt").write_text("Proxy settings\n\nSet HTTPS_PROXY for the SDK.", "utf-8")
    (root / "technical" / "page.html").write_text(
        "<html><head><title>Webhook retries</title></head><body><h1>Webhook retries</h1>"
        "<h2>Schedule</h2><p>Deliveries are retried 8 times.</p><script>evil()</script></body></html>", "utf-8")
    report = ingest([root], store)
    assert report.files_added == 2
    top = store.retrieve("technical", "how often are webhooks retried", 1)[0]
    assert top.source == "technical/page.html" and top.title == "Webhook retries"
    assert top.heading.endswith("Schedule") and "evil" not in top.text


def test_store_survives_reopen(corpus: Path, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    ingest([corpus], open_store(settings, local_model()))
    reopened = open_store(settings, local_model())
    assert reopened.count() > 0
    assert reopened.retrieve("policy", "processor", 1)[0].source == "policy/gdpr.md"


class _OtherEmbedder:
    name = "openai:text-embedding-3-small"
    dim = 384

    def embed_documents(self, texts):
        return np.ones((len(texts), 384), dtype=np.float32) / np.sqrt(384)

    def embed_query(self, text):
        return self.embed_documents([text])[0]


def test_reopening_with_another_embedding_model_is_a_clear_error(corpus: Path, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    ingest([corpus], open_store(settings, local_model()))
    with pytest.raises(EmbeddingMismatchError, match="ingest --rebuild"):
        open_store(settings, _OtherEmbedder())


def test_cli_ingest_exit_codes_and_if_empty(corpus: Path, tmp_path: Path, monkeypatch) -> None:
    from core.cli import app

    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    result = runner.invoke(app, ["ingest", str(corpus)])
    assert result.exit_code == 0, result.output
    assert "3 added" in result.output.replace("│", " ") or "chunks:" in result.output
    again = runner.invoke(app, ["ingest", "--if-empty"])
    assert again.exit_code == 0 and "ready" in again.output
    junk = tmp_path / "junk"
    (junk / "billing").mkdir(parents=True)
    (junk / "billing" / "x.md").write_bytes(b"\x00\x00")
    failed = runner.invoke(app, ["ingest", str(junk)])
    assert failed.exit_code == 1 and "x.md: binary" in failed.output


def test_cli_search_prints_sources(corpus: Path, tmp_path: Path, monkeypatch) -> None:
    from core.cli import app

    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    runner.invoke(app, ["ingest", str(corpus)])
    result = runner.invoke(app, ["search", "rotate keys", "--agent", "technical", "-k", "2"], terminal_width=200)
    assert result.exit_code == 0 and "technical/keys.md" in result.output
    bad = runner.invoke(app, ["search", "x", "--agent", "sales"])
    assert bad.exit_code == 2 and "Unknown agent" in bad.output

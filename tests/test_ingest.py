"""Ingestion: idempotent, incremental, deletions, bad files, loaders, store reopen, embedder mismatch, CLI.

Bookkeeping tests use `HashEmbedder`, a tiny deterministic bag-of-words embedder, so they do not depend on the
model wheel and run in milliseconds; the CLI tests go through the real `make_embedder` (the local MiniLM).
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from knowledge.chunking import Chunk
from knowledge.ingest import ingest
from knowledge.loaders import discover, load_document
from knowledge.store import EmbeddingMismatchError, KnowledgeStore, open_chroma_client
from tests.conftest import make_settings
from tests.fakes.embedder import HashEmbedder


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


def _open(data_dir: Path, embedder=None, **kwargs) -> KnowledgeStore:
    return KnowledgeStore(open_chroma_client(make_settings(data_dir)), embedder or HashEmbedder(), **kwargs)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    _write(root, "billing/refunds.md", "Refunds", "Annual plans can be refunded within 30 days.")
    _write(root, "technical/keys.md", "API keys", "Rotate keys by creating a new one first.")
    _write(root, "policy/gdpr.md", "GDPR", "We are a processor under GDPR.")
    return root


@pytest.fixture
def store(tmp_path: Path) -> KnowledgeStore:
    return _open(tmp_path / "data")


def _snapshot(store: KnowledgeStore) -> dict[str, list[str]]:
    return {agent: sorted(store.chunk_ids(agent)) for agent in store.agents}


# --- incremental and idempotent ----------------------------------------------------------------------------------
def test_second_run_changes_nothing(corpus: Path, store: KnowledgeStore) -> None:
    first = ingest([corpus], store)
    before, hashes = _snapshot(store), store.file_hashes()
    second = ingest([corpus], store)
    assert first.files_added == 3 and first.chunks_added == store.count() > 0
    assert (second.files_added, second.files_updated, second.files_removed) == (0, 0, 0)
    assert (second.chunks_added, second.chunks_updated, second.chunks_removed) == (0, 0, 0)
    assert second.files_skipped == 3 and not second.changed
    assert _snapshot(store) == before and store.file_hashes() == hashes


def test_a_changed_file_replaces_only_its_chunks(corpus: Path, store: KnowledgeStore) -> None:
    ingest([corpus], store)
    untouched = _snapshot(store)
    _write(corpus, "billing/refunds.md", "Refunds", "Refunds now take 3 days. " * 60)
    report = ingest([corpus], store)
    assert (report.files_updated, report.files_skipped, report.files_added) == (1, 2, 0)
    assert report.chunks_updated == store.count("billing") > 2  # the longer section now spans several chunks
    assert store.chunk_ids("technical") == untouched["technical"]
    assert store.chunk_ids("policy") == untouched["policy"]
    texts = [p.text for p in store.retrieve("billing", "refunds take days", 10)]
    assert any("3 days" in t for t in texts) and not any("within 30 days" in t for t in texts)


def test_a_deleted_file_loses_its_chunks(corpus: Path, store: KnowledgeStore) -> None:
    ingest([corpus], store)
    (corpus / "policy" / "gdpr.md").unlink()
    report = ingest([corpus], store)
    assert report.files_removed == 1 and report.chunks_removed > 0
    assert store.count("policy") == 0 and store.count("billing") > 0
    assert "policy/gdpr.md" not in store.file_hashes()


def test_a_file_marked_ingest_false_loses_its_chunks(corpus: Path, store: KnowledgeStore) -> None:
    ingest([corpus], store)
    gdpr = corpus / "policy" / "gdpr.md"
    gdpr.write_text(gdpr.read_text("utf-8").replace("title: GDPR", "title: GDPR\ningest: false"), "utf-8")
    report = ingest([corpus], store)
    assert report.files_removed == 1 and report.files_excluded == 1 and store.count("policy") == 0


def test_files_under_a_folder_not_given_this_time_are_kept(corpus: Path, tmp_path: Path, store) -> None:
    other = tmp_path / "more"
    _write(other, "technical/proxy.md", "Proxies", "Set HTTPS_PROXY.")
    ingest([corpus], store)
    ingest([other], store)
    assert {"billing/refunds.md", "technical/proxy.md"} <= set(store.file_hashes())


def test_a_file_that_turns_unreadable_keeps_its_earlier_chunks(corpus: Path, store: KnowledgeStore) -> None:
    ingest([corpus], store)
    before = store.chunk_ids("policy")
    (corpus / "policy" / "gdpr.md").write_bytes("Caf\xe9".encode("latin-1"))
    report = ingest([corpus], store)
    assert report.files_failed == 1 and report.files_removed == 0
    assert store.chunk_ids("policy") == before


def test_front_matter_agent_overrides_the_folder_and_a_change_moves_the_chunks(corpus, store) -> None:
    ingest([corpus], store)
    path = corpus / "billing" / "refunds.md"
    path.write_text(path.read_text("utf-8").replace("title: Refunds", "title: Refunds\nagent: policy"), "utf-8")
    report = ingest([corpus], store)
    assert report.files_updated == 1
    assert store.count("billing") == 0 and store.file_hashes()["billing/refunds.md"][0] == "policy"


def test_ingest_refuses_an_embedder_other_than_the_stores(corpus: Path, store: KnowledgeStore) -> None:
    with pytest.raises(EmbeddingMismatchError):
        ingest([corpus], store, HashEmbedder("test:other"))


def test_the_same_path_from_two_folders_is_ingested_once(corpus: Path, tmp_path: Path, store) -> None:
    twin = tmp_path / "twin"
    _write(twin, "billing/refunds.md", "Refunds", "A different refund text.")
    report = ingest([corpus, twin], store)
    assert report.files_added == 3 and "same path (billing/refunds.md)" in "\n".join(report.warnings)
    assert not ingest([corpus, twin], store).changed  # still idempotent


# --- bad files and loaders ---------------------------------------------------------------------------------------
def test_bad_files_warn_by_name_and_the_rest_goes_on(corpus: Path, store: KnowledgeStore) -> None:
    (corpus / "billing" / "blob.md").write_bytes(b"\x00\x01\x02binary")
    (corpus / "billing" / "empty.md").write_text("   \n", encoding="utf-8")
    (corpus / "billing" / "latin.md").write_bytes("Caf\xe9 price list".encode("latin-1"))
    (corpus / "billing" / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    (corpus / "stray.md").write_text("# No agent here\ntext", encoding="utf-8")
    report = ingest([corpus], store)
    assert report.files_added == 3 and report.files_failed == 5
    joined = "\n".join(report.warnings)
    for name in ("blob.md: binary", "empty.md: empty", "latin.md: not UTF-8", "broken.pdf: ", "stray.md: no agent"):
        assert name in joined
    assert len(report.warnings) == 5 and all(len(w.splitlines()) == 1 for w in report.warnings)


def test_markdown_front_matter_gives_title_agent_and_cache(tmp_path: Path) -> None:
    path = tmp_path / "misc" / "prices.md"
    path.parent.mkdir()
    path.write_text("---\ntitle: Price sheet\nagent: billing\ncache: true\n---\n# Prices\nPro is $39.", "utf-8")
    document = load_document(path, tmp_path)
    assert document is not None
    assert (document.source, document.title, document.agent, document.cache) == (
        "misc/prices.md", "Price sheet", "billing", True)
    assert document.text.startswith("# Prices") and "title:" not in document.text


def test_text_html_and_pdf_files_are_read_with_titles_and_headings(tmp_path: Path, store) -> None:
    root = tmp_path / "docs"
    (root / "technical").mkdir(parents=True)
    (root / "technical" / "notes.txt").write_text("Proxy settings\n\nSet HTTPS_PROXY for the SDK.", "utf-8")
    (root / "technical" / "page.html").write_text(
        "<html><head><title>Webhook retries</title></head><body><h1>Webhook retries</h1>"
        "<h2>Schedule</h2><p>Deliveries are retried 8 times.</p><script>evil()</script></body></html>", "utf-8")
    (root / "technical" / "exports.pdf").write_bytes(_minimal_pdf(["Exports run nightly.", "CSV and Parquet."]))
    report = ingest([root], store)
    assert report.files_added == 3, report.warnings
    html = store.retrieve("technical", "webhook deliveries retried times", 1)[0]
    assert html.source == "technical/page.html" and html.title == "Webhook retries"
    assert html.heading == "Webhook retries > Schedule" and "evil" not in html.text
    pdf = store.retrieve("technical", "exports nightly parquet", 1)[0]
    assert (pdf.source, pdf.title) == ("technical/exports.pdf", "Exports") and "CSV and Parquet" in pdf.text
    text = store.retrieve("technical", "proxy settings sdk", 1)[0]
    assert text.source == "technical/notes.txt" and "HTTPS_PROXY" in text.text


def test_html_without_title_takes_its_first_h1(tmp_path: Path) -> None:
    path = tmp_path / "policy" / "p.html"
    path.parent.mkdir()
    path.write_text("<body><h1>Cookie notice</h1><h3>Analytics</h3><p>We set one cookie.</p></body>", "utf-8")
    document = load_document(path, tmp_path)
    assert document is not None and document.title == "Cookie notice"
    assert "### Analytics" in document.text


def test_a_single_file_is_named_and_routed_as_under_its_folder(corpus: Path) -> None:
    [(file, root)] = discover([corpus / "billing" / "refunds.md"])
    document = load_document(file, root)
    assert document is not None and (document.source, document.agent) == ("billing/refunds.md", "billing")


def _minimal_pdf(lines: list[str], title: str = "Exports") -> bytes:
    """A one-page PDF with real text objects (pypdf cannot write text, so it is written by hand)."""
    content = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({line}) Tj T*" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Title ({title}) >>",
    ]
    out, offsets = "%PDF-1.4\n", []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n" + "".join(f"{o:010d} 00000 n \n" for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info 6 0 R >>\nstartxref\n{xref}\n%%EOF\n"
    return out.encode("latin-1")


# --- the store ---------------------------------------------------------------------------------------------------
def test_store_survives_reopen(corpus: Path, tmp_path: Path) -> None:
    ingest([corpus], _open(tmp_path / "data"))
    reopened = _open(tmp_path / "data")
    assert reopened.counts() == {"billing": 2, "technical": 2, "policy": 2}
    assert reopened.retrieve("policy", "processor under gdpr", 1)[0].source == "policy/gdpr.md"
    assert not ingest([corpus], reopened).changed


def test_reopening_with_another_embedding_model_is_a_clear_error(corpus: Path, tmp_path: Path) -> None:
    ingest([corpus], _open(tmp_path / "data"))
    with pytest.raises(EmbeddingMismatchError, match=r"test:hash.*test:other.*ingest --rebuild.*EMBEDDING_PROVIDER"):
        _open(tmp_path / "data", HashEmbedder("test:other"))


def test_rebuild_moves_the_store_to_the_new_model(corpus: Path, tmp_path: Path) -> None:
    ingest([corpus], _open(tmp_path / "data"))
    other = _open(tmp_path / "data", HashEmbedder("test:other"), check_embedder=False)
    report = ingest([corpus], other, rebuild=True)
    assert report.files_added == 3
    assert _open(tmp_path / "data", HashEmbedder("test:other")).count() == 6  # no mismatch any more


def test_an_empty_store_adopts_the_configured_model(tmp_path: Path, corpus: Path) -> None:
    _open(tmp_path / "data")  # creates empty collections recorded for test:hash
    ingest([corpus], _open(tmp_path / "data", HashEmbedder("test:other")))
    assert _open(tmp_path / "data", HashEmbedder("test:other")).count() == 6


def test_a_vector_of_another_dimension_is_refused(store: KnowledgeStore) -> None:
    chunk = Chunk("billing/a.md#0", "text", "text", "billing/a.md", "A", "", "billing", 0, "h")
    store.add_chunks([chunk], np.eye(1, 384, dtype=np.float32))
    with pytest.raises(EmbeddingMismatchError, match="384"):
        store.add_chunks([chunk], np.eye(1, 8, dtype=np.float32))


def test_scores_are_cosine_similarity_best_first(store: KnowledgeStore) -> None:
    chunks = [Chunk(f"billing/{i}.md#0", f"t{i}", f"t{i}", f"billing/{i}.md", "T", "", "billing", 0, "h")
              for i in range(3)]
    store.add_chunks(chunks, np.eye(3, 384, dtype=np.float32))
    query = np.zeros(384, dtype=np.float32)
    query[:2] = [np.sqrt(3) / 2, 0.5]  # cos 0.866 with chunk 0, 0.5 with chunk 1, 0 with chunk 2
    found = store.search("billing", query, 3)
    assert [p.source for p in found] == ["billing/0.md", "billing/1.md", "billing/2.md"]
    assert [round(p.score, 3) for p in found] == [0.866, 0.5, 0.0]


def test_retrieval_from_threads_while_ingesting_is_safe(corpus: Path, store: KnowledgeStore) -> None:
    ingest([corpus], store)
    for i in range(20):
        _write(corpus, f"technical/extra-{i}.md", f"Extra {i}", f"Extra article number {i}.")
    done = threading.Event()

    def query(_: int) -> int:
        count = 0
        while not done.is_set() or count < 5:
            assert store.retrieve("technical", "rotate keys", 2)
            count += 1
        return count

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(query, i) for i in range(3)]
        report = ingest([corpus], store)
        done.set()
        assert all(f.result(timeout=30) >= 5 for f in futures)
    assert report.files_added == 20


# --- the CLI -----------------------------------------------------------------------------------------------------
@pytest.fixture
def cli(tmp_path: Path, monkeypatch):
    from switchboard.cli import app

    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path / "data"))
    for name in ("CHROMA_HOST", "EMBEDDING_PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args), terminal_width=200)


def test_cli_ingest_prints_a_summary_and_succeeds(corpus: Path, cli) -> None:
    result = cli("ingest", str(corpus))
    assert result.exit_code == 0, result.output
    rows = {cells[0]: cells[1:] for cells in (
        [c.strip() for c in line.split("│")[1:-1]] for line in result.output.splitlines() if "│" in line)}
    assert rows["files"] == ["3", "3", "0", "0", "0", "0"]  # seen, added, updated, unchanged, removed, failed
    assert rows["chunks"] == ["", "6", "0", "", "0", ""]
    assert "store now 6 chunks" in result.output


def test_cli_if_empty_does_nothing_when_the_store_has_chunks(corpus: Path, cli) -> None:
    cli("ingest", str(corpus))
    again = cli("ingest", "--if-empty", str(corpus / "nowhere"))
    assert again.exit_code == 0 and "ready: 6 chunks" in again.output


def test_cli_exits_non_zero_only_when_nothing_could_be_read(corpus: Path, tmp_path: Path, cli) -> None:
    junk = tmp_path / "junk"
    (junk / "billing").mkdir(parents=True)
    (junk / "billing" / "x.md").write_bytes(b"\x00\x00")
    failed = cli("ingest", str(junk))
    assert failed.exit_code == 1 and "x.md: binary" in failed.output and "Nothing could be read" in failed.output
    assert cli("ingest", str(tmp_path / "missing")).exit_code == 1
    (corpus / "billing" / "y.md").write_bytes(b"\x00\x00")
    partial = cli("ingest", str(corpus))
    assert partial.exit_code == 0 and "y.md: binary" in partial.output


def test_cli_reports_a_model_mismatch_and_rebuild_fixes_it(corpus: Path, tmp_path: Path, cli) -> None:
    ingest([corpus], _open(tmp_path / "data", HashEmbedder("test:old-model")))
    refused = cli("ingest", str(corpus))
    assert refused.exit_code == 1 and "test:old-model" in refused.output and "--rebuild" in refused.output
    rebuilt = cli("ingest", "--rebuild", str(corpus))
    assert rebuilt.exit_code == 0, rebuilt.output
    assert cli("search", "rotate keys").exit_code == 0


def test_cli_search_prints_scores_and_sources(corpus: Path, cli) -> None:
    cli("ingest", str(corpus))
    result = cli("search", "rotate keys", "--agent", "technical", "-k", "2")
    assert result.exit_code == 0 and "technical/keys.md" in result.output
    assert re.search(r"0\.\d{3}", result.output)
    everywhere = cli("search", "processor under GDPR")
    assert everywhere.exit_code == 0 and "policy/gdpr.md" in everywhere.output
    bad = cli("search", "x", "--agent", "sales")
    assert bad.exit_code == 2 and "Unknown agent" in bad.output


def test_cli_search_on_an_empty_store_says_to_ingest(cli) -> None:
    result = cli("search", "anything")
    assert result.exit_code == 1 and "switchboard ingest" in result.output

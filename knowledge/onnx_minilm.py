"""MiniLM's forward pass as one ONNX Runtime call, built in memory from the weights LocalMiniLM already prepared.

Why: the numpy pass makes ~100 numpy calls per batch and takes the GIL back after each one. In the server the
event loop's thread holds the GIL most of the time, so a pass in a worker thread waited for it ~100 times: a batch
of 14 questions took 2.7 s instead of 83 ms beside a busy thread. `InferenceSession.run` releases the GIL once for
the whole pass, so the same batch takes about its idle time whatever the event loop does.

The graph is the one `LocalMiniLM._encode_numpy` computes (BERT encoder, mean pooling over real tokens, L2
normalisation) and takes the same prepared arrays: Q, K and V as one projection with the attention scale folded
into the query weights, position and token-type embeddings summed. It uses plain opset-17 operators
(LayerNormalization, exact GELU via Erf, written in the order ORT's optimiser fuses into one BiasGelu node).

Build time: the weights are not serialised into the model. Each is a placeholder marked as external data and
handed to ORT as an `OrtValue` over the numpy array itself (`add_external_initializers`), so the serialised model
is ~140 kB and the session builds in ~0.1 s, against ~1.1 s and a 230 MB transient peak with the 90 MB of weights
serialised into it (measured here). ORT copies them while it builds the session (wiping the arrays afterwards
changes no vector; `tests/test_onnx_minilm.py` checks it), so the caller may drop its arrays then. If an ORT version refuses
external initializers for a model given as bytes, the weights are serialised inline instead. No file is written
either way. Importing `onnx` costs ~1 s once per process, mostly its `ml_dtypes` dependency.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from knowledge.cpu_features import has_vnni

OPSET = 17  # the first with LayerNormalization
_PAD_SCORE = 1e9  # subtracted from the attention scores of padding keys, as the numpy pass does
_IN_MEMORY = "in-memory OrtValue"  # a placeholder's external-data location, never read: ORT gets the array
WEIGHT_ZERO = 128  # uint8 weights' zero point: symmetric around it (`_Graph._linear_int8`)

log = logging.getLogger(__name__)


class LayerWeights(Protocol):
    """One encoder layer as `knowledge.embeddings._Layer` holds it (matmul weights as (in, out))."""

    qkv_w: np.ndarray
    qkv_b: np.ndarray
    out_w: np.ndarray
    out_b: np.ndarray
    ln1: tuple[np.ndarray, np.ndarray]
    in_w: np.ndarray
    in_b: np.ndarray
    ff_w: np.ndarray
    ff_b: np.ndarray
    ln2: tuple[np.ndarray, np.ndarray]


class EncoderWeights(Protocol):
    """The whole encoder as `knowledge.embeddings._Weights` holds it."""

    word: np.ndarray  # (vocabulary, dim)
    position_type: np.ndarray  # (positions, dim): position + token-type-0 embeddings
    ln: tuple[np.ndarray, np.ndarray]  # the embeddings' LayerNorm
    layers: Sequence[LayerWeights]


class _Graph:
    """Collects nodes and initializers under unique names, so that `build_model` reads like the numpy pass."""

    def __init__(self, external_weights: bool, quantized: bool = False, signed_weights: bool = False) -> None:
        self.quantized = quantized  # the linear layers' products in int8 (`_linear_int8`)
        self.signed_weights = signed_weights  # their weights as int8 rather than uint8 (`_linear_int8`)
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.external: dict[str, np.ndarray] = {}  # weights left out of the model: name -> array
        self._external_weights = external_weights
        self._count = 0

    def const(self, name: str, value: float | Sequence[int]) -> str:
        """A small constant inside the model: a float32 scalar, or an int64 vector (shapes, axes)."""
        from onnx import numpy_helper

        array = np.array(value, dtype=np.float32 if isinstance(value, float) else np.int64)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def weight(self, name: str, value: np.ndarray) -> str:
        """A float32 (or uint8, or int8) weight: a placeholder that ORT fills from the array itself, or (not
        external) inline."""
        from onnx import TensorProto, numpy_helper

        dtype = value.dtype if value.dtype in (np.uint8, np.int8) else np.dtype(np.float32)
        array = np.ascontiguousarray(value, dtype=dtype)  # no copy: the prepared arrays already are
        if not self._external_weights:
            self.initializers.append(numpy_helper.from_array(array, name))
            return name
        kind = {np.uint8: TensorProto.UINT8, np.int8: TensorProto.INT8}.get(dtype.type, TensorProto.FLOAT)
        tensor = TensorProto(name=name, data_type=kind, dims=array.shape, data_location=TensorProto.EXTERNAL)
        for key, entry in (("location", _IN_MEMORY), ("offset", "0"), ("length", str(array.nbytes))):
            tensor.external_data.add(key=key, value=entry)
        self.initializers.append(tensor)
        self.external[name] = array
        return name

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        from onnx import helper

        self._count += 1
        out = f"{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def linear(self, x: str, prefix: str, weight: np.ndarray, bias: np.ndarray) -> str:
        if self.quantized:
            return self._linear_int8(x, prefix, weight, bias)
        product = self.op("MatMul", x, self.weight(f"{prefix}.w", weight))
        return self.op("Add", product, self.weight(f"{prefix}.b", bias))

    def _linear_int8(self, x: str, prefix: str, weight: np.ndarray, bias: np.ndarray) -> str:
        """x @ weight + bias with 8-bit integer arithmetic: the weight quantised once per output column
        (symmetric: 255 levels, -127..127), the activations per call (`DynamicQuantizeLinear`, uint8). The node
        pattern is the one ORT's own `quantize_dynamic` writes, which its optimiser fuses into one
        `MatMulIntegerToFloat`.

        The same levels are stored as int8 on CPUs with VNNI and as uint8 (shifted by WEIGHT_ZERO) elsewhere;
        the integer products are the same, so are the vectors, and the type only picks ORT's kernel:
        - With VNNI, uint8 x int8 is `vpdpbusd`, which sums four products straight into an int32: exact, and
          2.3x faster than uint8 x uint8 there (1.2 against 2.7 ms of CPU per question, measured on a Xeon).
        - Without VNNI (AVX2 only, e.g. many AMD EPYC hosts), ORT multiplies uint8 by int8 with `vpmaddubsw`,
          which adds two products into an int16 and saturates: a question's vector drifted there to cosine
          0.971 of the float32 one, and the retrieval tuning set lost top-1 questions. uint8 by uint8 widens
          before adding and never saturates (0.980 at worst, as on a VNNI machine), for ~10 % more time than
          the saturating kernel. 7-bit int8 weights (`reduce_range`) avoid saturation too, but ranked worse on
          the tuning set (top-1 0.840)."""
        from onnx import helper

        scale = np.maximum(np.abs(weight).max(axis=0), 1e-12).astype(np.float32) / 127.0  # (out,)
        dtype, offset = (np.int8, 0) if self.signed_weights else (np.uint8, WEIGHT_ZERO)
        quantized = (np.clip(np.rint(weight / scale), -127, 127) + offset).astype(dtype)
        zero_point = np.full(weight.shape[1], offset, dtype=dtype)
        self._count += 1
        xq, xs, xzp = (f"{x}.q{self._count}", f"{x}.scale{self._count}", f"{x}.zero{self._count}")
        self.nodes.append(helper.make_node("DynamicQuantizeLinear", [x], [xq, xs, xzp], name=xq))
        scales = self.op("Mul", xs, self.weight(f"{prefix}.w_scale", scale))
        zero = self.weight(f"{prefix}.w_zero", zero_point)
        product = self.op("MatMulInteger", xq, self.weight(f"{prefix}.w_int", quantized), xzp, zero)
        product = self.op("Mul", self.op("Cast", product, to=1), scales)  # to=1: float32
        return self.op("Add", product, self.weight(f"{prefix}.b", bias))

    def layer_norm(self, x: str, prefix: str, weights: tuple[np.ndarray, np.ndarray]) -> str:
        gamma, beta = self.weight(f"{prefix}.gamma", weights[0]), self.weight(f"{prefix}.beta", weights[1])
        return self.op("LayerNormalization", x, gamma, beta, axis=-1, epsilon=1e-12)  # BERT's eps


def build_model(
    weights: EncoderWeights, heads: int, *, external_weights: bool = True, quantized: bool = False,
    signed_weights: bool = False,
) -> tuple[Any, dict[str, np.ndarray]]:
    """The encoder as an `onnx.ModelProto`, and the weights left out of it (name -> array; none when
    `external_weights` is False). Inputs `input_ids` and `attention_mask`, int64 (n, L), the mask 1 on real
    tokens; output `embeddings`, float32 (n, dim), rows L2-normalised. `quantized`: the linear layers in 8-bit
    integers, their weights int8 when `signed_weights`, else uint8 (`_Graph._linear_int8`)."""
    from onnx import TensorProto, helper

    dim = weights.word.shape[1]
    g = _Graph(external_weights, quantized, signed_weights)
    heads_shape = g.const("heads_shape", [0, 0, heads, dim // heads])  # Reshape's 0 keeps n and L
    dim_shape = g.const("dim_shape", [0, 0, dim])
    split = g.const("qkv_split", [dim, dim, dim])
    one, sqrt2, half = g.const("one", 1.0), g.const("sqrt2", math.sqrt(2.0)), g.const("half", 0.5)

    # Embeddings: word + (position + token type 0), then LayerNorm.
    tokens = g.op("Gather", g.weight("word_embeddings", weights.word), "input_ids", axis=0)  # (n, L, dim)
    length = g.op("Shape", "input_ids", start=1, end=2)
    positions = g.op("Slice", g.weight("position_type", weights.position_type), g.const("zero", [0]), length,
                     g.const("axis0", [0]))  # (L, dim)
    x = g.layer_norm(g.op("Add", tokens, positions), "embeddings.ln", weights.ln)

    # Padding: the mask as float for pooling, and a key bias (n, 1, 1, L) of 0 on real tokens, -1e9 on padding.
    mask = g.op("Cast", "attention_mask", to=TensorProto.FLOAT)
    key_bias = g.op("Unsqueeze", g.op("Mul", g.op("Sub", mask, one), g.const("pad_score", _PAD_SCORE)),
                    g.const("axes12", [1, 2]))

    for i, layer in enumerate(weights.layers):
        p = f"layer{i}"
        qkv = g.linear(x, f"{p}.qkv", layer.qkv_w, layer.qkv_b)  # (n, L, 3 dim)
        q, k, v = (f"{p}.{name}" for name in "qkv")
        g.nodes.append(helper.make_node("Split", [qkv, split], [q, k, v], name=f"{p}.split", axis=2))
        q = g.op("Transpose", g.op("Reshape", q, heads_shape), perm=[0, 2, 1, 3])  # (n, heads, L, d)
        k = g.op("Transpose", g.op("Reshape", k, heads_shape), perm=[0, 2, 3, 1])  # (n, heads, d, L)
        v = g.op("Transpose", g.op("Reshape", v, heads_shape), perm=[0, 2, 1, 3])
        scores = g.op("Add", g.op("MatMul", q, k), key_bias)  # already scaled via the query weights
        context = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)
        context = g.op("Reshape", g.op("Transpose", context, perm=[0, 2, 1, 3]), dim_shape)  # (n, L, dim)
        attended = g.linear(context, f"{p}.out", layer.out_w, layer.out_b)
        x = g.layer_norm(g.op("Add", attended, x), f"{p}.ln1", layer.ln1)
        hidden = g.linear(x, f"{p}.in", layer.in_w, layer.in_b)
        # exact GELU, x (1 + erf(x / sqrt 2)) / 2
        erf = g.op("Add", g.op("Erf", g.op("Div", hidden, sqrt2)), one)
        hidden = g.op("Mul", g.op("Mul", hidden, erf), half)
        out = g.linear(hidden, f"{p}.ff", layer.ff_w, layer.ff_b)
        x = g.layer_norm(g.op("Add", out, x), f"{p}.ln2", layer.ln2)

    # Mean over real tokens, then L2 normalisation.
    axis1 = g.const("axis1", [1])
    summed = g.op("ReduceSum", g.op("Mul", x, g.op("Unsqueeze", mask, g.const("axis2", [2]))), axis1,
                  keepdims=0)  # (n, dim)
    mean = g.op("Div", summed, g.op("ReduceSum", mask, axis1, keepdims=1))
    norm = g.op("Max", g.op("ReduceL2", mean, axes=[1], keepdims=1), g.const("eps", 1e-12))
    g.nodes.append(helper.make_node("Div", [mean, norm], ["embeddings"], name="normalise"))

    graph = helper.make_graph(
        g.nodes,
        "all-MiniLM-L6-v2",
        [helper.make_tensor_value_info(name, TensorProto.INT64, ["n", "L"])
         for name in ("input_ids", "attention_mask")],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["n", dim])],
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="switchboard")
    return model, g.external


class OnnxMiniLM:
    """An ORT session over `build_model`'s graph: one `run` per batch, with the GIL released for all of it.

    One intra-op thread per call, like BLAS in the numpy pass: the cores are used by calls running side by side
    (an ORT session may be run from several threads at once), not by one call spreading over them.
    """

    def __init__(self, weights: EncoderWeights, heads: int, *, external_weights: bool = True,
                 quantized: bool = False, signed_weights: bool | None = None) -> None:
        """Build the session; `external_weights=False` serialises the weights into the model (slower, see above);
        `quantized` computes the linear layers in int8 (see `_Graph._linear_int8`), with int8 weights when
        `signed_weights` (None: when this CPU has VNNI, `knowledge.cpu_features`), else uint8."""
        self.external_weights = external_weights
        self.quantized = quantized
        self.signed_weights = quantized and (has_vnni() if signed_weights is None else signed_weights)
        options = {"quantized": quantized, "signed_weights": self.signed_weights}
        if external_weights:
            try:
                self._session = self._build(weights, heads, external_weights=True, **options)
                return
            except Exception as exc:  # noqa: BLE001 - whatever the refusal, the inline model is the same graph
                log.debug("ORT refused in-memory external initializers (%s); serialising the weights", exc)
                self.external_weights = False
        self._session = self._build(weights, heads, external_weights=False, **options)

    @staticmethod
    def _build(weights: EncoderWeights, heads: int, *, external_weights: bool, quantized: bool,
               signed_weights: bool) -> Any:
        """The session (the OrtValues over external weights need to live only while it is built)."""
        import onnxruntime as ort

        model, external = build_model(weights, heads, external_weights=external_weights, quantized=quantized,
                                      signed_weights=signed_weights)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: its warnings would go to stderr, not to our log
        values = [ort.OrtValue.ortvalue_from_numpy(array) for array in external.values()]
        if external:
            options.add_external_initializers(list(external), values)
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(n, L) int64 token ids and mask (1 on real tokens) -> (n, dim) float32 normalised sentence vectors."""
        return self._session.run(["embeddings"], {"input_ids": ids, "attention_mask": mask})[0]

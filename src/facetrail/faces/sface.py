"""The SFace embedder (OpenCV Zoo's ``face_recognition_sface_2021dec``) on ONNX Runtime.

SFace is a MobileFaceNet trained with the SFace loss (arXiv 2205.12010). It takes the 112x112
ArcFace chip (``align.ARCFACE_112``) as float32 NCHW RGB with raw 0-255 values (the graph does
its own ``(x - 127.5) / 128``) and returns a 128-d feature, compared by cosine similarity; we
L2-normalise it. ``align`` agrees with OpenCV 5.0's ``FaceRecognizerSF.alignCrop`` to within
one pixel level, and the vectors with its ``feature`` to a cosine of 0.99999 or more.

The shipped file is int8 block-quantised: 29 ``DequantizeLinear`` and 27 weight ``Reshape``
nodes rebuild the float32 weights on every call, and its batch dimension is fixed at 1.
``load`` derives an equivalent graph (``derive``), which ran 3.2 times as fast on one thread
(10 ms per face against 33 ms; ``bench/embedder_speed.py``):

- those nodes are evaluated in NumPy into float32 initialisers, bit for bit as ONNX Runtime
  evaluates them (36 ms -> 25 ms in the shipped models' README);
- each ``PRelu`` is rewritten as elementwise ops with identical results, because ONNX
  Runtime's PRelu kernel took 65 % of the folded graph's time;
- the batch dimension is made symbolic (batches beyond a few chips turned out slower).

Its outputs are within 1e-5 of the shipped graph's (``tests/test_sface.py``).

The derived graph is kept under ``<home>/models`` (``cache.derived_graph``, 39 MB, with its
sha256 beside it) once built: building it needs the ``onnx`` package, whose import alone takes
about 1.1 s of CPU, in every ingest worker and every CLI search; opening the kept copy takes
0.1-0.17 s with its digest checked.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facetrail.errors import ConfigError
from facetrail.faces import align as alignment
from facetrail.faces import shipped
from facetrail.faces.base import Detection, EmbedderInfo
from facetrail.faces.cache import derived_graph
from facetrail.faces.onnx_session import import_onnx, onnx_session, require_onnxruntime

if TYPE_CHECKING:
    from onnx import ModelProto

INPUT = "data"
OUTPUT = "fc1"
DIM = 128
SIZE = alignment.ARCFACE_SIZE
MAX_BATCH = 2
"""Chips per call to the runtime. bench/embedder_speed.py: 1, 2 and 4 chips per call tie;
8 take 15 % and 32 take 40 % longer per face (the activations outgrow the CPU's caches)."""
FOLDED_OPS = ("DequantizeLinear", "Reshape")
DERIVATION = 1
"""Version of ``derive``: a kept derived graph of another version is never read."""


class SFaceEmbedder:
    """SFace on ONNX Runtime: ArcFace 112 px chips -> unit 128-d vectors (cosine metric).

    ``model`` and ``sha256`` default to the shipped file and its digest; ``threads`` is
    ONNX Runtime's intra-op thread count. ``models_dir`` (``<home>/models``) keeps the derived
    graph (the module docstring says why); None derives it in memory at every load.
    Nothing is read until ``load``, which the first ``embed`` calls.
    """

    runtime = "onnx"

    def __init__(
        self,
        model: Path | None = None,
        sha256: str | None = None,
        *,
        threads: int = 1,
        models_dir: Path | None = None,
    ) -> None:
        if threads < 1:
            raise ConfigError(f"embedder threads must be at least 1, not {threads}")
        self.model = model if model is not None else shipped.path(shipped.SFACE)
        self.sha256 = sha256 if sha256 is not None else shipped.DIGESTS[shipped.SFACE]
        self.threads = threads
        self.models_dir = models_dir
        self._session: Any = None
        self._loading = threading.Lock()

    @property
    def info(self) -> EmbedderInfo:
        return EmbedderInfo(
            name="sface", version=self.sha256[:16], dim=DIM, alignment="arcface5-112",
            normalisation="l2", metric="cosine", landmarks="five",
        )

    def load(self) -> None:
        """Verify the model file, derive the faster graph (or read the kept copy) and open its
        session.

        Raises ConfigError when the file is unreadable, its sha256 is not ``sha256`` or it is
        not an SFace-like graph, and MissingExtraError when onnx or onnxruntime is missing.
        Threads calling it together load once; the session then runs for all of them at once.
        """
        if self._session is not None:
            return
        with self._loading:
            if self._session is not None:
                return
            data = shipped.read_verified(self.model, self.sha256)
            require_onnxruntime()

            def build() -> bytes:
                onnx = import_onnx()
                try:
                    return bytes(derive(onnx.load_from_string(data)).SerializeToString())
                except Exception as exc:  # protobuf's errors are untyped
                    raise ConfigError(
                        f"the face model {self.model} is not an SFace graph: {exc}"
                    ) from exc

            derived = derived_graph(self.models_dir,
                                    f"sface-{self.sha256[:16]}-d{DERIVATION}.onnx", build)
            self._session = onnx_session(derived, self.threads, f"the face model {self.model}")

    def align(self, pixels: np.ndarray, detections: Sequence[Detection]) -> list[np.ndarray]:
        """The 112x112 uint8 RGB ArcFace chip of each detection (``five`` landmarks), in order.
        ``pixels``: uint8 (height, width, 3) RGB."""
        return [
            alignment.warp(pixels, alignment.similarity(d.landmarks), SIZE) for d in detections
        ]

    def embed(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """float32 (len(chips), 128), unit length, of uint8 RGB chips (112, 112, 3) as
        ``align`` returns them."""
        if len(chips) == 0:
            return np.zeros((0, DIM), dtype=np.float32)
        self.load()
        out = []
        for start in range(0, len(chips), MAX_BATCH):
            batch = np.stack(chips[start : start + MAX_BATCH])
            if batch.shape[1:] != (SIZE, SIZE, 3):
                raise ValueError(f"SFace takes (112, 112, 3) chips, not {batch.shape[1:]}")
            out.append(self._session.run([OUTPUT], {INPUT: to_blob(batch)})[0])
        return normalise(np.concatenate(out))


def to_blob(chips: np.ndarray) -> np.ndarray:
    """uint8 (n, 112, 112, 3) RGB chips -> float32 (n, 3, 112, 112), raw 0-255 values."""
    return np.ascontiguousarray(chips.transpose(0, 3, 1, 2), dtype=np.float32)


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero): float32 (n, dim)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, np.finfo(np.float32).tiny)


def derive(model: ModelProto) -> ModelProto:
    """The faster equivalent of the shipped graph that ``load`` runs: constants folded
    (``fold``), ``PRelu`` rewritten (``unfuse_prelu``), batch dimension symbolic
    (``symbolic_batch``). Returns a new model; ``model`` is not changed."""
    import onnx

    derived = onnx.ModelProto()
    derived.CopyFrom(model)
    fold(derived)
    unfuse_prelu(derived)
    symbolic_batch(derived)
    return derived


def fold(model: ModelProto) -> None:
    """Evaluate, in place, every ``DequantizeLinear`` and ``Reshape`` node whose inputs are
    all initialisers into a float32 initialiser (the int8 weights become float32 ones)."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    kept = []
    for node in graph.node:
        if node.op_type in FOLDED_OPS and all(name in consts for name in node.input if name):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            inputs = [consts[name] if name else None for name in node.input]
            consts[node.output[0]] = _evaluate(node.op_type, inputs, attrs)
        else:
            kept.append(node)
    used = {name for node in kept for name in node.input} | {o.name for o in graph.output}
    initializers = [
        numpy_helper.from_array(np.ascontiguousarray(array), name)
        for name, array in consts.items()
        if name in used
    ]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def unfuse_prelu(model: ModelProto) -> None:
    """Replace, in place, each ``PRelu(x, slope)`` with a constant slope by elementwise ops
    that give bit-identical results: ``Max(x, x * slope)`` when every slope is <= 1, else
    ``Relu(x) + Min(x, 0) * slope``.

    ONNX Runtime 1.32's PRelu kernel takes ~1 ms per 200k elements on one thread, 10-15 times
    its Mul + Max, and was 65 % of SFace's time."""
    from onnx import helper, numpy_helper

    graph = model.graph
    slopes = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    zero = "prelu_zero"
    needs_zero = False
    nodes = []
    for node in graph.node:
        slope = slopes.get(node.input[1]) if node.op_type == "PRelu" else None
        if slope is None:
            nodes.append(node)
            continue
        x, a, y, stem = node.input[0], node.input[1], node.output[0], node.name or node.output[0]
        if float(slope.max()) <= 1.0:
            # x >= 0: x * a <= x; x < 0: x * a >= x; so the larger is PRelu's value.
            nodes += [
                helper.make_node("Mul", [x, a], [f"{stem}_xa"], name=f"{stem}_xa"),
                helper.make_node("Max", [x, f"{stem}_xa"], [y], name=stem),
            ]
        else:
            needs_zero = True
            nodes += [
                helper.make_node("Relu", [x], [f"{stem}_pos"], name=f"{stem}_pos"),
                helper.make_node("Min", [x, zero], [f"{stem}_neg"], name=f"{stem}_neg"),
                helper.make_node("Mul", [f"{stem}_neg", a], [f"{stem}_aneg"],
                                 name=f"{stem}_aneg"),
                helper.make_node("Add", [f"{stem}_pos", f"{stem}_aneg"], [y], name=stem),
            ]
    del graph.node[:]
    graph.node.extend(nodes)
    if needs_zero:
        graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), zero))


def symbolic_batch(model: ModelProto) -> None:
    """Name, in place, the first dimension of the graph's inputs and outputs ``batch``."""
    graph = model.graph
    for value in (*graph.input, *graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = "batch"
    del graph.value_info[:]  # shapes recorded for batch 1; ONNX Runtime infers its own


def _evaluate(op: str, inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> np.ndarray:
    if op == "Reshape":
        data, shape = inputs[0], inputs[1]
        assert data is not None and shape is not None
        dims = [int(d) for d in shape]
        if not attrs.get("allowzero", 0):  # ONNX: a 0 copies the input's dimension
            dims = [data.shape[i] if d == 0 else d for i, d in enumerate(dims)]
        return data.reshape(dims)
    return dequantize(inputs[0], inputs[1], inputs[2], int(attrs.get("axis", 1)),
                      int(attrs.get("block_size", 0)))


def dequantize(
    x: np.ndarray | None, scale: np.ndarray | None, zero_point: np.ndarray | None,
    axis: int = 1, block_size: int = 0,
) -> np.ndarray:
    """ONNX ``DequantizeLinear`` (opset 21): ``(x - zero_point) * scale`` in ``scale``'s type,
    per tensor (scalar scale), per axis (1-D scale along ``axis``) or per block of
    ``block_size`` elements along ``axis`` (scale of ``x``'s rank)."""
    assert x is not None and scale is not None
    zp = np.zeros((), dtype=x.dtype) if zero_point is None else zero_point
    axis = axis % max(x.ndim, 1)
    if scale.ndim and block_size:
        # View x as (..., blocks, block_size, ...) so each block broadcasts against its scale.
        n, blocks = x.shape[axis], scale.shape[axis]
        padded = list(x.shape)
        padded[axis] = blocks * block_size
        if padded[axis] != n:
            x = np.pad(x, [(0, padded[axis] - n if i == axis else 0) for i in range(x.ndim)])
        x = x.reshape(*padded[:axis], blocks, block_size, *padded[axis + 1 :])
        scale, zp = np.expand_dims(scale, axis + 1), np.expand_dims(zp, axis + 1)
    elif scale.ndim == 1 and x.ndim > 1:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    # Integers of 8 or 16 bits and their differences are exact in float32.
    y = np.subtract(x, zp, dtype=scale.dtype)
    y *= scale
    if scale.ndim and block_size:
        y = y.reshape(padded).take(range(n), axis=axis) if padded[axis] != n else y.reshape(padded)
    return y

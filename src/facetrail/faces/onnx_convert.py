"""Convert dlib's ResNet face descriptor into an equivalent ONNX graph, cached by content hash.

The graph takes a batch of aligned chips exactly as ``dlib.get_face_chip`` returns them
(uint8, shape (batch, 150, 150, 3), RGB) and returns the 128-d descriptors, float32, shape
(batch, 128). It includes dlib's input normalisation, (pixel - channel mean) / 256.

The converted model is written once to ``<home>/models/dlib_resnet_<sha12>.onnx``, where sha12
is the first 12 hex digits of the sha256 of the ``.dat`` file; a different weights file gets
a different name, so a stale conversion is never used.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facetrail.errors import MissingExtraError
from facetrail.faces import dlib_dat
from facetrail.faces.cache import write_atomically
from facetrail.faces.dlib_dat import (
    AddPrev,
    Affine,
    Conv,
    FullyConnected,
    Network,
    Pool,
    Relu,
    Skip,
    Tag,
)

if TYPE_CHECKING:
    from onnx import ModelProto, NodeProto, TensorProto

INPUT = "chips"
OUTPUT = "descriptors"
OPSET = 17
IR_VERSION = 8
DIM = 128


def cached_model(dat: Path, directory: Path) -> Path:
    """The ONNX model converted from ``dat``, in ``directory``, converting it if needed."""
    digest = file_sha256(dat)
    target = directory / f"dlib_resnet_{digest[:12]}.onnx"
    if target.exists():
        return target
    model = build_model(dlib_dat.read_network(dat), source=digest)
    return write_atomically(target, lambda path: path.write_bytes(model.SerializeToString()))


def file_sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@dataclass
class _Value:
    name: str
    shape: tuple[int, int, int]
    """(channels, rows, columns) of one sample."""


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.count = 0

    def fresh(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def const(self, stem: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.fresh(stem)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], stem: str, **attrs: Any) -> str:
        from onnx import helper

        out = self.fresh(stem)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out


def build_model(net: Network, source: str = "") -> ModelProto:
    """The ONNX ``ModelProto`` computing ``net``; ``source`` is recorded in its metadata."""
    try:
        import onnx
        from onnx import TensorProto, helper
    except ImportError as exc:
        raise MissingExtraError("onnx", "onnx") from exc

    b = _Builder()
    mean = np.asarray(net.input.mean_rgb, dtype=np.float32).reshape(1, 3, 1, 1)
    x = b.node("Cast", [INPUT], "float", to=TensorProto.FLOAT)
    x = b.node("Transpose", [x], "nchw", perm=[0, 3, 1, 2])
    x = b.node("Sub", [x, b.const("mean", mean)], "centred")
    x = b.node("Mul", [x, b.const("scale", np.asarray(1 / 256, dtype=np.float32))], "input")
    value = _Value(x, (3, net.input.rows, net.input.columns))
    tags: dict[int, _Value] = {}
    for layer in net.layers:
        value = _emit(b, layer, value, tags)
    model_graph = helper.make_graph(
        b.nodes,
        "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info(INPUT, TensorProto.UINT8, ["batch", 150, 150, 3])],
        [helper.make_tensor_value_info(value.name, TensorProto.FLOAT, ["batch", DIM])],
        initializer=b.initializers,
    )
    model = helper.make_model(
        model_graph,
        producer_name="facetrail",
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {"source_sha256": source})
    # The last node's output gets the stable name the runtime asks for.
    model.graph.node[-1].output[0] = OUTPUT
    model.graph.output[0].name = OUTPUT
    onnx.checker.check_model(model)
    return model


def _emit(b: _Builder, layer: object, v: _Value, tags: dict[int, _Value]) -> _Value:
    channels, rows, columns = v.shape
    match layer:
        case Conv(weights=w, bias=bias, stride=s, padding=p):
            name = b.node(
                "Conv", [v.name, b.const("w", w), b.const("b", bias)], "conv",
                kernel_shape=list(w.shape[2:]), strides=[s, s], pads=[p, p, p, p],
            )
            k = w.shape[2]
            return _Value(name, (w.shape[0], _out(rows, k, s, p), _out(columns, k, s, p)))
        case Affine(gamma=g, beta=beta):
            scaled = b.node("Mul", [v.name, b.const("gamma", g.reshape(1, -1, 1, 1))], "scale")
            name = b.node("Add", [scaled, b.const("beta", beta.reshape(1, -1, 1, 1))], "affine")
            return _Value(name, v.shape)
        case Relu():
            return _Value(b.node("Relu", [v.name], "relu"), v.shape)
        case Pool(kind=kind, size=0):
            assert kind == "avg"
            return _Value(b.node("GlobalAveragePool", [v.name], "gap"), (channels, 1, 1))
        case Pool(kind=kind, size=k, stride=s, padding=p):
            op = "MaxPool" if kind == "max" else "AveragePool"
            name = b.node(op, [v.name], "pool", kernel_shape=[k, k], strides=[s, s],
                          pads=[p, p, p, p])
            return _Value(name, (channels, _out(rows, k, s, p), _out(columns, k, s, p)))
        case Tag(tag=t):
            tags[t] = v
            return v
        case Skip(tag=t):
            return tags[t]
        case AddPrev(tag=t):
            other = tags[t]
            shape = tuple(max(a, c) for a, c in zip(v.shape, other.shape, strict=True))
            left, right = _pad_to(b, v, shape), _pad_to(b, other, shape)
            return _Value(b.node("Add", [left, right], "add"), shape)  # type: ignore[arg-type]
        case FullyConnected(weights=w):
            flat = b.node("Flatten", [v.name], "flat", axis=1)
            return _Value(b.node("MatMul", [flat, b.const("fc", w)], "fc"), (w.shape[1], 1, 1))
    raise AssertionError(f"no ONNX form for {layer!r}")


def _out(size: int, kernel: int, stride: int, padding: int) -> int:
    return 1 + (size + 2 * padding - kernel) // stride


def _pad_to(b: _Builder, v: _Value, shape: tuple[int, ...]) -> str:
    """``v`` padded with zeros after its last channel, row and column up to ``shape``.

    dlib's ``add_prev`` adds tensors of different shapes by treating the missing elements as
    zero: the shortcut of a down-sampling block has fewer channels than the block, and at
    odd sizes the strided convolution yields one row and column fewer than the pooling.
    """
    extra = [want - have for want, have in zip(shape, v.shape, strict=True)]
    if not any(extra):
        return v.name
    pads = np.asarray([0, 0, 0, 0, 0, *extra], dtype=np.int64)
    return b.node("Pad", [v.name, b.const("pads", pads)], "pad", mode="constant")

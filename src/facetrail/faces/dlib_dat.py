"""Reader of dlib's serialised ResNet face descriptor (``dlib_face_recognition_resnet_model_v1``).

dlib stores a network as its C++ type dictates: each layer writes a version number, then the
layers beneath it, then its own parameters. So the file holds, in order, the loss layer, one
version number per layer from the top down, the input layer, and then every computational
layer's parameters from the bottom up. Tag and skip layers write only their version number:
which tag a skip or an ``add_prev`` refers to lives in the C++ type, not in the file, so the
reader follows the published network definition (``ARCHITECTURE``) and checks every version
number, layer name and hyper-parameter in the file against it.

Encodings (dlib ``serialize.h``):

* integer: one control byte (bit 7 = negative, low 4 bits = number of bytes), then that many
  bytes of the magnitude, little-endian;
* float: an integer mantissa and an integer exponent, value = mantissa * 2**exponent;
* string: its length as an integer, then the bytes;
* bool: one byte, ``'1'`` or ``'0'``;
* tensor: version 2, then num_samples, k, nr, nc as integers, then the values as
  little-endian IEEE float32 in (n, k, row, column) order.

``read_network`` returns the layers bottom-up (the order data flows), as typed records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facetrail.errors import ConfigError

CHIP_SIZE = 150


@dataclass(frozen=True)
class InputLayer:
    """``input_rgb_image_sized``: pixel value p becomes (p - mean) / 256, per channel."""

    mean_rgb: tuple[float, float, float]
    rows: int
    columns: int


@dataclass(frozen=True)
class Conv:
    weights: np.ndarray
    """Shape (filters, channels, rows, columns)."""
    bias: np.ndarray
    stride: int
    padding: int


@dataclass(frozen=True)
class Affine:
    """Frozen batch normalisation: x * gamma + beta, per channel."""

    gamma: np.ndarray
    beta: np.ndarray


@dataclass(frozen=True)
class Relu:
    pass


@dataclass(frozen=True)
class Pool:
    """Max or average pooling; size 0 means the whole image (``avg_pool_everything``)."""

    kind: str
    size: int
    stride: int
    padding: int


@dataclass(frozen=True)
class Tag:
    """Marks its input so that a later ``Skip`` or ``AddPrev`` with the same id can use it."""

    tag: int


@dataclass(frozen=True)
class Skip:
    """Output = the output of the most recent ``Tag`` with this id."""

    tag: int


@dataclass(frozen=True)
class AddPrev:
    """Output = input + output of the most recent ``Tag`` with this id.

    When the two differ in shape, dlib adds over the union of their shapes and counts
    missing elements as zero: the result has the larger channel count, rows and columns.
    """

    tag: int


@dataclass(frozen=True)
class FullyConnected:
    weights: np.ndarray
    """Shape (inputs, outputs); no bias."""


Layer = InputLayer | Conv | Affine | Relu | Pool | Tag | Skip | AddPrev | FullyConnected


@dataclass(frozen=True)
class Network:
    input: InputLayer
    layers: tuple[Layer, ...]
    """Bottom-up, in the order data flows, excluding the input."""


# -- the published network definition, top-down, as in dlib's dnn_face_recognition_ex.cpp ---

@dataclass(frozen=True)
class _Expect:
    kind: str
    """con, affine, relu, max_pool, avg_pool, add_prev, tag, skip or fc."""
    args: tuple[int, ...] = ()


def _block(filters: int, stride: int) -> list[_Expect]:
    return [
        _Expect("affine"),
        _Expect("con", (filters, 3, 1)),
        _Expect("relu"),
        _Expect("affine"),
        _Expect("con", (filters, 3, stride)),
    ]


def _ares(filters: int) -> list[_Expect]:
    return [_Expect("relu"), _Expect("add_prev", (1,)), *_block(filters, 1), _Expect("tag", (1,))]


def _ares_down(filters: int) -> list[_Expect]:
    return [
        _Expect("relu"),
        _Expect("add_prev", (2,)),
        _Expect("avg_pool", (2, 2, 0)),
        _Expect("skip", (1,)),
        _Expect("tag", (2,)),
        *_block(filters, 2),
        _Expect("tag", (1,)),
    ]


def _architecture() -> list[_Expect]:
    levels = [
        _ares_down(256),
        *(_ares(256) for _ in range(2)), _ares_down(256),
        *(_ares(128) for _ in range(2)), _ares_down(128),
        *(_ares(64) for _ in range(3)), _ares_down(64),
        *(_ares(32) for _ in range(3)),
    ]
    return [
        _Expect("fc", (128,)),
        _Expect("avg_pool", (0, 1, 0)),
        *(e for level in levels for e in level),
        _Expect("max_pool", (3, 2, 0)),
        _Expect("relu"),
        _Expect("affine"),
        _Expect("con", (32, 7, 2)),
    ]


ARCHITECTURE = tuple(_architecture())
"""Layers below the loss, top-down: loss_metric<fc_no_bias<128, avg_pool_everything<...>>>."""


# -- the reader -------------------------------------------------------------------------------

class _Reader:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.pos = 0
        self.path = path

    def fail(self, what: str) -> ConfigError:
        return ConfigError(
            f"{self.path} is not the dlib ResNet face descriptor facetrail knows: "
            f"{what} (at byte {self.pos})"
        )

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise self.fail("the file ends early")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def integer(self) -> int:
        control = self.take(1)[0]
        size = control & 0x0F
        if size > 8:
            raise self.fail(f"integer of {size} bytes")
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def real(self) -> float:
        mantissa = self.integer()
        exponent = self.integer()
        return math.ldexp(mantissa, exponent)

    def string(self) -> str:
        n = self.integer()
        if not 0 <= n <= 256:
            raise self.fail(f"string of length {n}")
        return self.take(n).decode("ascii", errors="replace")

    def flag(self) -> bool:
        byte = self.take(1)
        if byte not in (b"0", b"1"):
            raise self.fail(f"boolean byte {byte!r}")
        return byte == b"1"

    def expect_int(self, value: int, what: str) -> None:
        got = self.integer()
        if got != value:
            raise self.fail(f"{what} is {got}, expected {value}")

    def expect_string(self, value: str) -> None:
        got = self.string()
        if got != value:
            raise self.fail(f"layer {got!r} where {value!r} was expected")

    def tensor(self) -> np.ndarray:
        """A tensor as an array of shape (num_samples, k, nr, nc)."""
        self.expect_int(2, "tensor version")
        shape = tuple(self.integer() for _ in range(4))
        if min(shape) < 0:
            raise self.fail(f"tensor shape {shape}")
        count = math.prod(shape)
        values = np.frombuffer(self.take(4 * count), dtype="<f4")
        return values.reshape(shape).astype(np.float32)

    def alias(self) -> tuple[int, int, int, int]:
        """An ``alias_tensor``: a view into a layer's parameters, (n, k, nr, nc)."""
        self.expect_int(1, "alias tensor version")
        n, k, nr, nc = (self.integer() for _ in range(4))
        return (n, k, nr, nc)

    def empty_tensor(self, what: str) -> None:
        if self.tensor().size:
            raise self.fail(f"non-empty {what}")


def read_network(path: Path) -> Network:
    """Parse ``path`` and check it against ``ARCHITECTURE``; raise ``ConfigError`` if not."""
    r = _Reader(path.read_bytes(), path)
    r.expect_int(1, "network version")
    r.expect_string("loss_metric_2")
    _margin, _threshold = r.real(), r.real()  # of the training loss; unused here
    layers: list[Layer] = []
    source = _read_layer(r, 0, layers)
    if r.pos != len(r.data):
        raise r.fail(f"{len(r.data) - r.pos} bytes left over after the network")
    return Network(input=source, layers=tuple(layers))


def _read_layer(r: _Reader, i: int, out: list[Layer]) -> InputLayer:
    """Read layer ``i`` of ``ARCHITECTURE`` and everything below it, appending the layers to
    ``out`` bottom-up; return the input layer found at the bottom."""
    spec = ARCHITECTURE[i]
    bottom = i == len(ARCHITECTURE) - 1
    if spec.kind in ("tag", "skip"):
        r.expect_int(1, f"{spec.kind} layer version")
        source = _read_layer(r, i + 1, out)
        out.append(Tag(spec.args[0]) if spec.kind == "tag" else Skip(spec.args[0]))
        return source
    r.expect_int(3 if bottom else 2, "layer version")
    source = _read_input(r) if bottom else _read_layer(r, i + 1, out)
    out.append(_read_details(r, spec))
    # Training state: set-up flags, gradients and cached outputs, all empty in a saved model.
    r.flag(), r.flag(), r.flag()
    for what in ("input gradient", "cached output", "parameter gradient"):
        r.empty_tensor(what)
    if bottom:
        r.expect_int(1, "sample expansion factor")
    return source


def _read_input(r: _Reader) -> InputLayer:
    r.expect_string("input_rgb_image_sized")
    mean = (r.real(), r.real(), r.real())
    rows, columns = r.integer(), r.integer()
    if (rows, columns) != (CHIP_SIZE, CHIP_SIZE):
        raise r.fail(f"input of {rows}x{columns}, expected {CHIP_SIZE}x{CHIP_SIZE}")
    return InputLayer(mean_rgb=mean, rows=rows, columns=columns)


def _read_details(r: _Reader, spec: _Expect) -> Layer:
    match spec.kind:
        case "con":
            return _read_con(r, *spec.args)
        case "affine":
            return _read_affine(r)
        case "relu":
            r.expect_string("relu_")
            return Relu()
        case "max_pool" | "avg_pool":
            return _read_pool(r, spec.kind, *spec.args)
        case "add_prev":
            r.expect_string("add_prev_")
            return AddPrev(spec.args[0])
        case "fc":
            return _read_fc(r, spec.args[0])
    raise AssertionError(spec.kind)


def _read_con(r: _Reader, filters: int, size: int, stride: int) -> Conv:
    r.expect_string("con_4")
    params = r.tensor().ravel()
    got = tuple(r.integer() for _ in range(7))
    # dlib pads by half the kernel only when the stride is 1.
    padding = size // 2 if stride == 1 else 0
    want = (filters, size, size, stride, stride, padding, padding)
    if got != want:
        raise r.fail(f"convolution (filters, rows, columns, strides, paddings) {got}, not {want}")
    wshape, bshape = r.alias(), r.alias()
    if wshape[0] != filters or wshape[2:] != (size, size) or bshape != (1, filters, 1, 1):
        raise r.fail(f"convolution parameter shapes {wshape} and {bshape}")
    for _ in range(4):
        r.real()  # learning-rate and weight-decay multipliers
    n_weights = math.prod(wshape)
    if params.size != n_weights + filters:
        raise r.fail(f"{params.size} convolution parameters, expected {n_weights + filters}")
    return Conv(
        weights=params[:n_weights].reshape(wshape),
        bias=params[n_weights:].copy(),
        stride=stride,
        padding=padding,
    )


def _read_affine(r: _Reader) -> Affine:
    r.expect_string("affine_")
    params = r.tensor().ravel()
    gshape, bshape = r.alias(), r.alias()
    mode = r.integer()
    channels = gshape[1]
    if gshape != (1, channels, 1, 1) or bshape != gshape or mode != 0:
        raise r.fail(f"affine layer of shape {gshape}/{bshape}, mode {mode}: not per channel")
    if params.size != 2 * channels:
        raise r.fail(f"{params.size} affine parameters for {channels} channels")
    return Affine(gamma=params[:channels].copy(), beta=params[channels:].copy())


def _read_pool(r: _Reader, kind: str, size: int, stride: int, padding: int) -> Pool:
    r.expect_string(f"{kind}_2")
    got = tuple(r.integer() for _ in range(6))
    want = (size, size, stride, stride, padding, padding)
    if got != want:
        raise r.fail(f"{kind} (rows, columns, strides, paddings) {got}, not {want}")
    return Pool(kind=kind.removesuffix("_pool"), size=size, stride=stride, padding=padding)


def _read_fc(r: _Reader, outputs: int) -> FullyConnected:
    r.expect_string("fc_2")
    n_out, n_in = r.integer(), r.integer()
    params = r.tensor().ravel()
    if n_out != outputs:
        raise r.fail(f"fully connected layer with {n_out} outputs, expected {outputs}")
    wshape, bshape = r.alias(), r.alias()
    mode = r.integer()  # 1: no bias
    if wshape != (n_in, n_out, 1, 1) or math.prod(bshape) != 0 or mode != 1:
        raise r.fail(f"fully connected layer of shapes {wshape}/{bshape}, bias mode {mode}")
    for _ in range(4):
        r.real()
    if params.size != n_in * n_out:
        raise r.fail(f"{params.size} fully connected parameters, expected {n_in * n_out}")
    return FullyConnected(weights=params.reshape(n_in, n_out))

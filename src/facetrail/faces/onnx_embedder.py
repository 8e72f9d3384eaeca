"""An embedder of aligned face chips from any ONNX graph, declared with what it needs.

The graph takes a batch of square chips, NCHW or NHWC, float32 or uint8, and returns one
vector per chip. The declaration says the chip's side, the alignment template that makes it
(``faces/align.py``), the channel order, ``(pixel - mean) / std`` for float inputs, and the
metric. ``check`` runs the graph once and says plainly what does not fit.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facetrail.errors import ConfigError
from facetrail.faces import align as alignment
from facetrail.faces.base import METRICS, Detection, EmbedderInfo
from facetrail.faces.onnx_session import import_onnx, onnx_session, require_onnxruntime
from facetrail.faces.shipped import read_verified

MAX_BATCH = 8
MAX_DIM = 4096


class OnnxChipEmbedder:
    runtime = "onnx"

    def __init__(
        self, model: Path, sha256: str, *, name: str, input_size: int, mean: float, std: float,
        channels: str, template: str, metric: str, threads: int = 1,
    ) -> None:
        if metric not in METRICS:
            raise ConfigError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
        if channels not in ("rgb", "bgr"):
            raise ConfigError(f"channels must be 'rgb' or 'bgr', not {channels!r}")
        if not 16 <= input_size <= 1024:
            raise ConfigError(f"input size {input_size} is not a plausible chip side")
        if std == 0:
            raise ConfigError("std must not be 0")
        self.template = alignment.template(template, input_size)  # refuses unknown names
        self.model, self.sha256, self.name = model, sha256, name
        self.input_size, self.mean, self.std = input_size, mean, std
        self.channels, self.template_name, self.metric = channels, template, metric
        self.threads = threads
        self._session: Any = None
        self._input = ""
        self._nhwc = False
        self._float = True
        self._batch = 1
        self._dim = 0
        self._loading = threading.Lock()

    @property
    def info(self) -> EmbedderInfo:
        self.load()
        return EmbedderInfo(
            name=self.name, version=self.sha256[:16], dim=self._dim,
            alignment=f"{self.template_name}5-{self.input_size}",
            normalisation="l2" if self.metric == "cosine" else "none",
            metric=self.metric, landmarks="five",
        )

    def load(self) -> None:
        """Read and verify the file, open it, and check its input and output shapes. Threads
        calling it together load once; the session is in use only once it passed the checks."""
        if self._session is not None:
            return
        with self._loading:
            if self._session is None:
                self._load()

    def _load(self) -> None:
        data = read_verified(self.model, self.sha256)
        require_onnxruntime()
        onnx = import_onnx()
        try:
            graph = onnx.load_from_string(data).graph
        except Exception as exc:  # protobuf raises its own DecodeError
            raise ConfigError(f"{self.model} is not an ONNX model: {exc}") from exc
        initialised = {i.name for i in graph.initializer}
        inputs = [i for i in graph.input if i.name not in initialised]
        if len(inputs) != 1:
            raise ConfigError(f"{self.model}: an embedder takes one input (the chips), this "
                              f"graph takes {len(inputs)}")
        self._shape(inputs[0])
        session = onnx_session(data, self.threads, str(self.model))
        out = self._run([np.zeros((self.input_size, self.input_size, 3), np.uint8)], session)
        if out.ndim != 2 or out.shape[0] != 1 or not 2 <= out.shape[1] <= MAX_DIM:
            raise ConfigError(f"{self.model}: an embedder gives one vector per chip, shape "
                              f"(1, dim); this graph gives {tuple(out.shape)}")
        self._dim = int(out.shape[1])
        self._session = session

    def _shape(self, value: Any) -> None:
        """Layout, element type and batch size from the graph's input, or a ConfigError."""
        t = value.type.tensor_type
        dims: list[int | str] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                                 for d in t.shape.dim]
        side = self.input_size
        if len(dims) != 4:
            raise ConfigError(f"{self.model}: the input should be (N, 3, {side}, {side}) or "
                              f"(N, {side}, {side}, 3), not {tuple(dims)}")
        fits = [d == want or isinstance(d, str) for d, want in zip(dims[1:], (3, side, side),
                                                                      strict=True)]
        fits_nhwc = [d == want or isinstance(d, str) for d, want in zip(dims[1:], (side, side, 3),
                                                                           strict=True)]
        if not all(fits) and not all(fits_nhwc):
            raise ConfigError(f"{self.model}: the input should be (N, 3, {side}, {side}) or "
                              f"(N, {side}, {side}, 3) for the declared input size {side}, "
                              f"not {tuple(dims)}")
        self._nhwc = not all(fits)
        elem = t.elem_type  # onnx.TensorProto: 1 = float, 2 = uint8
        if elem not in (1, 2):
            raise ConfigError(f"{self.model}: the input should be float32 or uint8 chips")
        self._float = elem == 1
        self._batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else MAX_BATCH
        self._input = value.name

    def _run(self, chips: Sequence[np.ndarray], session: Any = None) -> np.ndarray:
        batch = np.stack(chips)
        if self.channels == "bgr":
            batch = batch[..., ::-1]
        if not self._nhwc:
            batch = batch.transpose(0, 3, 1, 2)
        if self._float:
            blob = (np.ascontiguousarray(batch, dtype=np.float32) - self.mean) / self.std
        else:
            blob = np.ascontiguousarray(batch, dtype=np.uint8)
        run = (session or self._session).run
        out = np.asarray(run(None, {self._input: blob})[0], dtype=np.float32)
        if out.ndim > 2 and int(np.prod(out.shape[2:])) == 1:
            out = out.reshape(len(chips), -1)  # (N, dim, 1, 1) from a final convolution
        return out

    def align(self, pixels: np.ndarray, detections: Sequence[Detection]) -> list[np.ndarray]:
        return [alignment.warp(pixels, alignment.similarity(d.landmarks, self.template),
                               self.input_size) for d in detections]

    def embed(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        if len(chips) == 0:
            return np.zeros((0, self.info.dim), dtype=np.float32)
        self.load()
        out = np.concatenate([self._run(chips[i : i + self._batch])
                              for i in range(0, len(chips), self._batch)]).astype(np.float32)
        if self.metric == "cosine":
            out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

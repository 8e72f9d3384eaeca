"""Runtimes of the ResNet face descriptor: ONNX Runtime (default when installed) or dlib.

Both compute the same network on the same chips and give the same vectors (to within 1e-4;
docs/runtime.md). dlib's own build runs the network on one thread without BLAS; ONNX Runtime
runs the converted graph (``onnx_convert``) with vectorised kernels on the threads it is given.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facetrail.errors import ConfigError, MissingExtraError
from facetrail.faces import dlib_dat, onnx_convert
from facetrail.faces.onnx_session import onnx_session, require_onnxruntime

RUNTIMES = ("auto", "onnx", "dlib")
MAX_BATCH = 32
"""Chips per call to the runtime; larger batches gain nothing and cost memory."""


def onnx_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def resolve_runtime(requested: str) -> str:
    """'onnx' or 'dlib': ``auto`` picks ONNX Runtime when it is installed."""
    if requested not in RUNTIMES:
        raise ConfigError(
            f"unknown descriptor runtime {requested!r}; use one of {', '.join(RUNTIMES)}"
        )
    if requested == "dlib":
        return "dlib"
    if onnx_available():
        return "onnx"
    if requested == "onnx":
        raise MissingExtraError("onnxruntime", "onnx")
    return "dlib"


class OnnxDescriptor:
    """Computes descriptors of aligned 150 px chips with ONNX Runtime on ``threads`` threads."""

    runtime = "onnx"

    def __init__(self, dat: Path, models_dir: Path, threads: int = 1) -> None:
        if threads < 1:
            raise ConfigError(f"descriptor threads must be at least 1, not {threads}")
        require_onnxruntime()
        try:
            model: str | bytes = str(onnx_convert.cached_model(dat, models_dir))
        except OSError:
            # The data directory cannot be written (read-only, full): convert in memory.
            model = onnx_convert.build_model(dlib_dat.read_network(dat)).SerializeToString()
        self.threads = threads
        self._session: Any = onnx_session(model, threads, f"the converted descriptor of {dat}")

    def describe(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """Descriptors of uint8 RGB chips of shape (150, 150, 3): float32, (len(chips), 128)."""
        if not chips:
            return np.zeros((0, onnx_convert.DIM), dtype=np.float32)
        out = []
        for start in range(0, len(chips), MAX_BATCH):
            batch = np.ascontiguousarray(np.stack(chips[start : start + MAX_BATCH]), np.uint8)
            out.append(self._session.run([onnx_convert.OUTPUT], {onnx_convert.INPUT: batch})[0])
        return np.concatenate(out).astype(np.float32, copy=False)


class DlibDescriptor:
    """dlib's own ``compute_face_descriptor``: single-threaded, the reference. The network
    keeps its layers' outputs in itself, so it computes for one thread at a time."""

    runtime = "dlib"

    def __init__(self, dat: Path) -> None:
        import dlib

        self._model = dlib.face_recognition_model_v1(str(dat))
        self._computing = threading.Lock()

    def describe(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        if not chips:
            return np.zeros((0, onnx_convert.DIM), dtype=np.float32)
        with self._computing:
            vectors = self._model.compute_face_descriptor(list(chips))
        return np.asarray([np.asarray(v) for v in vectors], dtype=np.float32)


def make_descriptor(
    runtime: str, dat: Path, models_dir: Path, threads: int
) -> OnnxDescriptor | DlibDescriptor:
    """The descriptor for a resolved runtime name ('onnx' or 'dlib')."""
    if runtime == "onnx":
        return OnnxDescriptor(dat, models_dir, threads)
    return DlibDescriptor(dat)

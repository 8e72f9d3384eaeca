"""How every face model runs on ONNX Runtime: one session setup for all of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from facetrail.errors import ConfigError, MissingExtraError


def require_onnxruntime() -> None:
    """Say plainly, before any work, that onnxruntime is missing."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(exc.name or "onnxruntime", "onnx") from exc


def import_onnx() -> Any:
    """The ``onnx`` package (needed only to derive or inspect a graph, not to run one)."""
    try:
        import onnx
    except ImportError as exc:
        raise MissingExtraError(exc.name or "onnx", "onnx") from exc
    return onnx


def session_options(threads: int) -> Any:
    """``threads`` intra-op threads, sequential, without spinning, quiet, with every graph
    optimisation (level 'all' ran SFace 20-25 % faster than 'basic' or 'extended': its NCHWc
    layouts suit the convolutions; bench/embedder_speed.py)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle threads would otherwise spin between images, taking cores from the other stages.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def onnx_session(model: bytes | str, threads: int, what: Path | str) -> Any:
    """An ONNX Runtime CPU session of ``model`` (the graph's bytes or a path) with
    ``session_options(threads)``. A graph ONNX Runtime refuses is a ConfigError naming
    ``what``."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(model, session_options(threads),
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's errors share no public base class
        raise ConfigError(f"ONNX Runtime cannot load {what}: {exc}") from exc

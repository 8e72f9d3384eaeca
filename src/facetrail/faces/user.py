"""Face models built from ONNX files the user supplies, declared with what the files need.

An embedder is any ONNX graph taking aligned chips (N or 1, 3, size, size) and giving one
vector per chip, for example an ArcFace-family model an organisation has licensed. It is
declared with its input size, the normalisation of its input ((pixel - mean) / std, in RGB or
BGR order), the alignment template (``faces/align.py``) and its metric. A detector is an ONNX
graph with YuNet's outputs (cls/obj/bbox/kps at strides 8, 16, 32), or one of the shipped
detectors by name.

``facetrail models add`` checks the files (ONNX, input shape, output shape, a test run) and
keeps the declaration, with each file's sha256, in the store; the files are copied under
``<home>/models/user/`` so the declaration cannot drift from what was checked.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from facetrail.errors import ConfigError

if TYPE_CHECKING:
    from facetrail.faces.base import Detector, Embedder
    from facetrail.settings import Settings

CHANNELS = ("rgb", "bgr")


@dataclass(frozen=True)
class UserModel:
    name: str
    embedder: Path
    embedder_sha256: str
    input_size: int
    """Side of the square aligned chip, in pixels (112 for ArcFace-family models)."""
    mean: float
    """Subtracted from every 0-255 channel value before ``std`` divides it."""
    std: float
    channels: str
    """'rgb' or 'bgr': the channel order the embedder expects."""
    template: str
    """Alignment template name (``faces/align.py``), e.g. 'arcface'."""
    metric: str
    """'cosine' (vectors are made unit length) or 'l2'."""
    detector: str = "yunet"
    """A shipped detector name, or 'onnx' for ``detector_file``."""
    detector_file: Path | None = None
    detector_sha256: str | None = None

    def to_json(self) -> str:
        data = asdict(self)
        for key in ("embedder", "detector_file"):
            data[key] = None if data[key] is None else str(data[key])
        return json.dumps(data, sort_keys=True)


def user_model_from_json(text: str) -> UserModel:
    try:
        data = json.loads(text)
        data["embedder"] = Path(data["embedder"])
        if data.get("detector_file") is not None:
            data["detector_file"] = Path(data["detector_file"])
        return UserModel(**data)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"a declared face model is unreadable: {exc}") from exc


def detector(user: UserModel, settings: Settings) -> Detector:
    from facetrail.faces import make_detector, model_threads

    if user.detector != "onnx":
        return make_detector(user.detector, settings)
    from facetrail.faces.yunet import YuNetDetector

    if user.detector_file is None or user.detector_sha256 is None:
        raise ConfigError(f"face model {user.name!r} declares an ONNX detector without its file")
    return YuNetDetector(user.detector_file, user.detector_sha256,
                         score_threshold=settings.yunet_threshold,
                         threads=model_threads(settings))


def embedder(user: UserModel, settings: Settings) -> Embedder:
    from facetrail.faces import model_threads
    from facetrail.faces.onnx_embedder import OnnxChipEmbedder

    return OnnxChipEmbedder(
        user.embedder, user.embedder_sha256, name=f"user-{user.name}",
        input_size=user.input_size, mean=user.mean, std=user.std, channels=user.channels,
        template=user.template, metric=user.metric, threads=model_threads(settings),
    )

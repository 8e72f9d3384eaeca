"""The face model files shipped inside the package (``faces/models/``), checked when loaded."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

from facetrail.errors import ConfigError

YUNET = "face_detection_yunet_2023mar.onnx"
SFACE = "face_recognition_sface_2021dec_int8bq_clean.onnx"

DIGESTS = {
    YUNET: "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
    SFACE: "487a139eb85ccd5ff30aef7d0add7f12d2bb7abb90c5f08a7f481b452a660e00",
}


def path(name: str) -> Path:
    """Where a shipped model file is installed."""
    if name not in DIGESTS:
        raise ConfigError(f"{name!r} is not a model shipped with facetrail")
    return Path(str(resources.files("facetrail.faces") / "models" / name))


def read_verified(file: Path, sha256: str) -> bytes:
    """The bytes of ``file`` if their sha256 is ``sha256``; a ConfigError otherwise."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the face model {file}: {exc.strerror or exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ConfigError(
            f"the face model {file} is damaged or was replaced: sha256 {digest[:16]}…, "
            f"expected {sha256[:16]}…; reinstall facetrail"
        )
    return data


def read(name: str) -> bytes:
    """A shipped model file's bytes, verified against the digest facetrail was built with."""
    return read_verified(path(name), DIGESTS[name])

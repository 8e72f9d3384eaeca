"""The derived YuNet and SFace graphs kept under <home>/models: reused, checked, rebuilt."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import PEOPLE
from facetrail.faces import make_model
from facetrail.imaging import decode
from facetrail.pipeline.analyze import Analyzer
from facetrail.settings import Settings

PHOTO = PEOPLE / "Barack_Obama" / "Barack_Obama_0001.jpg"
LOAD = """
import sys
from facetrail.faces import make_model
from facetrail.settings import Settings
make_model("yunet-sface", Settings(home=sys.argv[1])).load()
print("onnx" in sys.modules)
"""


def _vectors(home: Path) -> np.ndarray:
    settings = Settings(home=home)
    analyzer = Analyzer(settings, make_model("yunet-sface", settings))
    return np.stack([f.embedding for f in analyzer.faces(decode(PHOTO.read_bytes(), settings))])


def _loads_onnx(home: Path) -> bool:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACETRAIL_")}
    out = subprocess.run([sys.executable, "-c", LOAD, str(home)], capture_output=True,
                         text=True, env=env, check=True, timeout=120).stdout
    return out.strip() == "True"


def test_kept_graphs_are_reused_checked_and_rebuilt(tmp_path: Path) -> None:
    assert _loads_onnx(tmp_path)  # the first load derives, with the onnx package
    kept = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert kept == ["sface-487a139eb85ccd5f-d1.onnx", "sface-487a139eb85ccd5f-d1.onnx.sha256",
                    "yunet-8f2383e4dd3cfbb4-d1.onnx", "yunet-8f2383e4dd3cfbb4-d1.onnx.sha256"]
    assert not _loads_onnx(tmp_path)  # later ones read the kept copies
    reference = _vectors(tmp_path)

    damaged = tmp_path / "models" / "sface-487a139eb85ccd5f-d1.onnx"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    assert _loads_onnx(tmp_path)  # a copy that fails its digest is derived again ...
    assert not _loads_onnx(tmp_path)  # ... and kept again
    np.testing.assert_array_equal(_vectors(tmp_path), reference)


def test_an_unwritable_data_directory_derives_in_memory(tmp_path: Path) -> None:
    (tmp_path / "models").write_text("a file where the models folder would go")
    reference = _vectors(tmp_path / "elsewhere")
    np.testing.assert_array_equal(_vectors(tmp_path), reference)
    assert (tmp_path / "models").is_file()

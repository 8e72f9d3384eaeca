"""Face models from the user's own ONNX files: declared, checked, and used like shipped ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import facetrail
from conftest import PEOPLE, cli_json
from facetrail.errors import ConfigError, ConflictError, PolicyError
from facetrail.faces import shipped

SFACE = shipped.path(shipped.SFACE)
YUNET = shipped.path(shipped.YUNET)
CASE = {"case_ref": "T-1", "purpose": "testing"}
SFACE_AS_USER = {"input_size": 112, "mean": 0.0, "std": 1.0, "channels": "rgb",
                 "template": "arcface", "metric": "cosine"}


def _identity_graph(path: Path) -> Path:
    """A valid ONNX graph with a chip-shaped input whose output is the chip itself."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 112, 112])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, 112, 112])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_the_shipped_sface_declared_as_a_user_model_gives_the_same_gallery(
    tmp_path: Path,
) -> None:
    with facetrail.open(tmp_path) as ft:
        ft.add_source("p", "folder", PEOPLE / "Barack_Obama", lawful_basis="test",
                      purpose="testing", retention_days=1)
        ft.ingest("p")
        shipped_vectors = np.concatenate([v for _, v in ft.store.iter_embeddings(ft.model_id)])
        model = ft.add_user_model("mine", SFACE, detector=YUNET, **SFACE_AS_USER)
        assert model.model.key.startswith("yunet@8f2383e4dd3cfbb4+user-mine@487a139eb85ccd5f/")
        assert (tmp_path / "models" / "user" / f"{shipped.DIGESTS[shipped.SFACE]}.onnx").exists()
        report = ft.reembed("mine")
        assert report.complete and report.moved == 4
        ft.use_model("mine")
        assert ft.model_name == "mine" and ft.model.metric == "cosine"
        mine = np.concatenate([v for _, v in ft.store.iter_embeddings(ft.model_id)])
        # The same faces (the shipped graph is folded, the user's is not; the order in which
        # the workers finished may differ).
        assert mine.shape == shipped_vectors.shape
        assert float((mine @ shipped_vectors.T).max(axis=1).min()) > 1 - 1e-5
        result = ft.search(PEOPLE / "Barack_Obama" / "Barack_Obama_0001.jpg", **CASE)
        assert result.candidates[0].score == 1.0 and len(result.candidates) == 4
        assert {m.name for m in ft.model_statuses()} >= {"yunet-sface", "dlib", "mine"}
    with facetrail.open(tmp_path) as ft:  # the declaration is kept in the store
        assert ft.model_name == "mine"
        assert ft.search(PEOPLE / "Barack_Obama" / "Barack_Obama_0001.jpg",
                         **CASE).calibration is None  # a declared model starts uncalibrated

    # It can be calibrated like a shipped model; then its searches are.
    people = tmp_path / "people"
    for who in ("Barack_Obama", "Angelina_Jolie", "Ashanti", "Jesse_Jackson", "Oprah_Winfrey"):
        shutil.copytree(PEOPLE / who, people / who)
    out = cli_json(tmp_path, "calibrate", str(people))
    assert isinstance(out, dict) and out["model"].startswith("yunet@8f2383e4dd3cfbb4+user-mine")
    with facetrail.open(tmp_path) as ft:
        result = ft.search(PEOPLE / "Barack_Obama" / "Barack_Obama_0001.jpg", **CASE)
        assert result.calibration is not None and result.threshold_rule in ("calibrated", "floor")


def test_files_that_do_not_fit_are_refused_with_the_reason(tmp_path: Path) -> None:
    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    with facetrail.open(tmp_path / "home") as ft:
        with pytest.raises(ConfigError, match="is not an ONNX model"):
            ft.add_user_model("a", text, **SFACE_AS_USER)
        with pytest.raises(ConfigError, match=r"input should be \(N, 3, 112, 112\)"):
            ft.add_user_model("b", YUNET, **SFACE_AS_USER)
        with pytest.raises(ConfigError, match=r"one vector per chip.*\(1, 3, 112, 112\)"):
            ft.add_user_model("c", _identity_graph(tmp_path / "identity.onnx"), **SFACE_AS_USER)
        with pytest.raises(ConfigError, match="unknown alignment template"):
            ft.add_user_model("d", SFACE, **{**SFACE_AS_USER, "template": "dlib"})
        with pytest.raises(ConfigError, match="cannot load|not an ONNX model|YuNet"):
            ft.add_user_model("e", SFACE, detector=text, **SFACE_AS_USER)
        with pytest.raises(ConflictError):
            ft.add_user_model("dlib", SFACE, **SFACE_AS_USER)
        with pytest.raises(PolicyError, match="model name"):
            ft.add_user_model("My Model", SFACE, **SFACE_AS_USER)
        assert ft.store.user_models() == {}  # nothing refused was recorded

"""The reader of dlib's serialised ResNet, on the real weights file."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from facetrail.errors import ConfigError
from facetrail.faces import dlib_dat
from facetrail.faces.dlib_backend import weights_path


@pytest.fixture(scope="module")
def network() -> dlib_dat.Network:
    return dlib_dat.read_network(weights_path("resnet"))


def test_reads_every_layer_of_the_published_network(network: dlib_dat.Network) -> None:
    kinds = Counter(type(layer).__name__ for layer in network.layers)
    assert kinds == {
        "Conv": 29, "Affine": 29, "Relu": 29, "Tag": 18, "AddPrev": 14, "Pool": 6,
        "Skip": 4, "FullyConnected": 1,
    }
    assert network.input.rows == network.input.columns == 150
    np.testing.assert_allclose(network.input.mean_rgb, (122.782, 117.001, 104.298), atol=1e-4)
    first = network.layers[0]
    assert isinstance(first, dlib_dat.Conv)
    assert first.weights.shape == (32, 3, 7, 7) and first.stride == 2 and first.padding == 0
    last = network.layers[-1]
    assert isinstance(last, dlib_dat.FullyConnected) and last.weights.shape == (256, 128)
    convs = [layer for layer in network.layers if isinstance(layer, dlib_dat.Conv)]
    assert [c.weights.shape[0] for c in convs].count(256) == 8
    assert all(np.isfinite(c.weights).all() and np.isfinite(c.bias).all() for c in convs)


@pytest.mark.parametrize("cut", [5, 1000, -10])
def test_damaged_file_is_a_clear_error(tmp_path: Path, cut: int) -> None:
    data = weights_path("resnet").read_bytes()
    damaged = tmp_path / "damaged.dat"
    damaged.write_bytes(data[:cut])
    with pytest.raises(ConfigError, match="not the dlib ResNet face descriptor"):
        dlib_dat.read_network(damaged)


def test_trailing_bytes_are_an_error(tmp_path: Path) -> None:
    padded = tmp_path / "padded.dat"
    padded.write_bytes(weights_path("resnet").read_bytes() + b"\0")
    with pytest.raises(ConfigError, match="1 bytes left over"):
        dlib_dat.read_network(padded)


def test_other_dlib_model_is_rejected() -> None:
    with pytest.raises(ConfigError, match="not the dlib ResNet"):
        dlib_dat.read_network(weights_path("landmarks5"))

"""Shared fixtures: small real volumes on disk and a tiny model configuration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from wnet_zoo.io.example import example_volume

TINY_CHANNELS = [4, 8, 16, 32]


@pytest.fixture(autouse=True)
def _two_threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def example() -> np.ndarray:
    """The bundled light-sheet example volume (124, 86, 94), float32."""
    return tifffile.imread(example_volume())


@pytest.fixture
def small_tiff(tmp_path: Path, example: np.ndarray) -> Path:
    """A 32 x 48 x 40 crop of the example, stored as uint16 like most microscopy stacks."""
    path = tmp_path / "crop.tif"
    tifffile.imwrite(path, example[40:72, 20:68, 30:70].astype(np.uint16))
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """A tiny WNet3D (channels 4, 8, 16, 32) with fixed random weights (seed 0), exported to ONNX."""
    from wnet_zoo.export.onnx import export_onnx
    from wnet_zoo.model.wnet import WNet3D
    from wnet_zoo.prediction.metadata import ModelMetadata

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    export_onnx(WNet3D(channels=tuple(TINY_CHANNELS)).eval(), path, ModelMetadata(num_classes=2, name="tiny"))
    return path

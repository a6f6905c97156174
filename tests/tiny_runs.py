"""A tiny WNet3D trained for one epoch, the weights the export and zoo tests start from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch

from wnet_zoo.io.example import example_volume
from wnet_zoo.training.config import TrainConfig
from wnet_zoo.training.runs import train


def train_tiny(folder: Path, **settings: Any) -> Path:
    """Train channels 4,8,16,32 for one epoch on a 32 x 48 x 40 crop of the example volume (written to
    ``folder/crop.tif``), with ``settings`` over the tiny defaults; the run folder ``folder/run``."""
    torch.set_num_threads(2)
    volume = tifffile.imread(example_volume())
    tifffile.imwrite(folder / "crop.tif", volume[40:72, 20:68, 30:70].astype(np.uint16))
    tiny: dict[str, Any] = {"channels": [4, 8, 16, 32], "patch": [16, 24, 24], "epochs": 1, "samples_per_epoch": 2}
    config = TrainConfig(images=[str(folder / "crop.tif")], batch=2, device="cpu", **{**tiny, **settings})
    train(config, folder / "run", progress=False)
    return folder / "run"

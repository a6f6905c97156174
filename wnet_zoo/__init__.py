"""wnet-zoo: CellSeg3D's WNet3D, from self-supervised training to the BioImage Model Zoo and ONNX inference.

The public names below load their module on first use, so that ``wnet-zoo predict`` (ONNX Runtime) starts
without importing torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .version import __version__

_MODULES = {
    "LoadedWeights": "checkpoints",
    "load_weights": "checkpoints",
    "save_checkpoint": "checkpoints",
    "TrainConfig": "config",
    "read_volume": "data",
    "remap": "data",
    "UserError": "errors",
    "SoftNCutLoss": "losses",
    "WNetLoss": "losses",
    "reconstruction_loss": "losses",
    "WNet3D": "model",
    "Instances": "nuclei",
    "NucleiOptions": "nuclei",
    "instances": "nuclei",
    "Predictor": "predictor",
    "predict": "predictor",
    "TilePlan": "tiling",
    "TrainResult": "training",
    "finetune": "training",
    "resume": "training",
    "train": "training",
}

__all__ = [
    "Instances",
    "LoadedWeights",
    "NucleiOptions",
    "Predictor",
    "SoftNCutLoss",
    "TilePlan",
    "TrainConfig",
    "TrainResult",
    "UserError",
    "WNet3D",
    "WNetLoss",
    "__version__",
    "finetune",
    "instances",
    "load_weights",
    "predict",
    "read_volume",
    "reconstruction_loss",
    "remap",
    "resume",
    "save_checkpoint",
    "train",
]


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'wnet_zoo' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULES})


if TYPE_CHECKING:
    from .checkpoints import LoadedWeights, load_weights, save_checkpoint
    from .config import TrainConfig
    from .data import read_volume, remap
    from .errors import UserError
    from .losses import SoftNCutLoss, WNetLoss, reconstruction_loss
    from .model import WNet3D
    from .nuclei import Instances, NucleiOptions, instances
    from .predictor import Predictor, predict
    from .tiling import TilePlan
    from .training import TrainResult, finetune, resume, train

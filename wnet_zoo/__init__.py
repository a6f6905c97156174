"""wnet-zoo: CellSeg3D's WNet3D, from self-supervised training to the BioImage Model Zoo and ONNX inference.

The public names below load their module on first use, so that ``wnet-zoo predict`` (ONNX Runtime) starts
without importing torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from wnet_zoo.version import __version__

_MODULES = {
    "export_model": "export.exporter",
    "run_report": "training.report",
    "LoadedWeights": "model.checkpoints",
    "load_weights": "model.checkpoints",
    "save_checkpoint": "model.checkpoints",
    "TrainConfig": "training.config",
    "read_volume": "io.volumes",
    "remap": "io.intensity",
    "UserError": "errors",
    "SoftNCutLoss": "model.losses",
    "WNetLoss": "model.losses",
    "reconstruction_loss": "model.losses",
    "WNet3D": "model.wnet",
    "Instances": "segment.nuclei",
    "NucleiOptions": "segment.options",
    "instances": "segment.nuclei",
    "Predictor": "prediction.predictor",
    "predict": "prediction.predictor",
    "TilePlan": "prediction.tiling",
    "Tiling": "prediction.settings",
    "EngineSettings": "prediction.settings",
    "TrainResult": "training.loop",
    "finetune": "training.runs",
    "resume": "training.runs",
    "train": "training.runs",
}

__all__ = [
    "EngineSettings",
    "Instances",
    "LoadedWeights",
    "NucleiOptions",
    "Predictor",
    "SoftNCutLoss",
    "TilePlan",
    "Tiling",
    "TrainConfig",
    "TrainResult",
    "UserError",
    "WNet3D",
    "WNetLoss",
    "__version__",
    "export_model",
    "finetune",
    "instances",
    "load_weights",
    "predict",
    "read_volume",
    "reconstruction_loss",
    "remap",
    "resume",
    "run_report",
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
    from wnet_zoo.errors import UserError
    from wnet_zoo.export.exporter import export_model
    from wnet_zoo.io.intensity import remap
    from wnet_zoo.io.volumes import read_volume
    from wnet_zoo.model.checkpoints import LoadedWeights, load_weights, save_checkpoint
    from wnet_zoo.model.losses import SoftNCutLoss, WNetLoss, reconstruction_loss
    from wnet_zoo.model.wnet import WNet3D
    from wnet_zoo.prediction.predictor import Predictor, predict
    from wnet_zoo.prediction.settings import EngineSettings, Tiling
    from wnet_zoo.prediction.tiling import TilePlan
    from wnet_zoo.segment.nuclei import Instances, instances
    from wnet_zoo.segment.options import NucleiOptions
    from wnet_zoo.training.config import TrainConfig
    from wnet_zoo.training.loop import TrainResult
    from wnet_zoo.training.report import run_report
    from wnet_zoo.training.runs import finetune, resume, train

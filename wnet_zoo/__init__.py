"""wnet-zoo: CellSeg3D's WNet3D, from self-supervised training to the BioImage Model Zoo and ONNX inference."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wnet-zoo")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from .checkpoints import LoadedWeights, load_weights, save_checkpoint
from .config import TrainConfig
from .data import read_volume, remap
from .errors import UserError
from .instances import Instances, instances
from .losses import SoftNCutLoss, WNetLoss, reconstruction_loss
from .model import WNet3D
from .predict import Predictor, predict
from .tiling import TilePlan
from .train import TrainResult, finetune, resume, train

__all__ = [
    "Instances",
    "LoadedWeights",
    "Predictor",
    "SoftNCutLoss",
    "TrainConfig",
    "TilePlan",
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

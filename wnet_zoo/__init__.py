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
from .losses import SoftNCutLoss, WNetLoss, reconstruction_loss
from .model import WNet3D
from .train import TrainResult, train

__all__ = [
    "LoadedWeights",
    "SoftNCutLoss",
    "TrainConfig",
    "TrainResult",
    "UserError",
    "WNet3D",
    "WNetLoss",
    "__version__",
    "load_weights",
    "read_volume",
    "reconstruction_loss",
    "remap",
    "save_checkpoint",
    "train",
]

"""CellSeg3D's own WNet3D code, loaded for comparisons (tests and benchmarks), never for production.

Install it without its GUI: ``pip install --no-deps napari-cellseg3d==0.2.4``. Its model file imports on
its own; its ``soft_Ncuts.py`` imports the package logger (which pulls in napari and Qt), so that file's
source is loaded with that single import replaced by a standard-library logger.
"""

from __future__ import annotations

import importlib.util
import logging
import types
from pathlib import Path

from wnet_zoo.errors import UserError

_INSTALL_HINT = "install CellSeg3D's reference code: pip install --no-deps napari-cellseg3d==0.2.4"
_LOGGER_IMPORT = "from napari_cellseg3d.utils import LOGGER as logger"


def _wnet_dir() -> Path:
    spec = importlib.util.find_spec("napari_cellseg3d")
    if spec is None or spec.origin is None:
        raise UserError(f"CellSeg3D is not installed; {_INSTALL_HINT}")
    return Path(spec.origin).parent / "code_models" / "models" / "wnet"


def cellseg3d_wnet_class() -> type:
    """CellSeg3D's ``WNet`` class (``WNet(in_channels, out_channels, num_classes, dropout)``)."""
    from napari_cellseg3d.code_models.models.wnet.model import WNet

    _wnet_dir()
    return WNet


def cellseg3d_softncut_class() -> type:
    """CellSeg3D's ``SoftNCutsLoss`` class, ``SoftNCutsLoss(data_shape, device, intensity_sigma,
    spatial_sigma, radius)``, called as ``loss(probabilities, image)``."""
    path = _wnet_dir() / "soft_Ncuts.py"
    source = path.read_text()
    if _LOGGER_IMPORT not in source:
        raise UserError(f"unexpected CellSeg3D version at {path}; {_INSTALL_HINT}")
    source = source.replace(_LOGGER_IMPORT, "logger = __import__('logging').getLogger('cellseg3d')")
    module = types.ModuleType("cellseg3d_soft_ncuts")
    module.__file__ = str(path)
    exec(compile(source, str(path), "exec"), module.__dict__)  # noqa: S102 - CellSeg3D's own file
    logging.getLogger("cellseg3d").setLevel(logging.WARNING)
    return module.SoftNCutsLoss

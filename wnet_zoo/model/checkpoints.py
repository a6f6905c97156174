"""Checkpoints: atomic writing, and the one loader every command that takes weights uses.

The loader accepts the bundled pretrained model (``"bundled"``, :mod:`wnet_zoo.model.pretrained`), a run
directory (its ``best.pt``, else ``last.pt``), one of our checkpoints, any dict with a ``model`` state dict, a bare
state dict such as CellSeg3D's ``.pth`` (or a ``.tar.gz`` holding one), or a bioimage.io package exported by
wnet-zoo (see :mod:`wnet_zoo.model.weight_files`). The architecture is read from the weight shapes. Files are
read with ``torch.load(weights_only=True)``: weights from others cannot run code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from wnet_zoo.errors import UserError, shorten
from wnet_zoo.io.atomic import atomic_path
from wnet_zoo.model.pretrained import bundled_weights, is_bundled
from wnet_zoo.model.weight_files import EXPECTED, weights_file
from wnet_zoo.model.wnet import WNet3D

_PREFIXES = ("module.", "_orig_mod.")
_EXPECTED = EXPECTED


@dataclass
class LoadedWeights:
    """A WNet3D state dict and what came with it."""

    state_dict: dict[str, torch.Tensor]
    architecture: dict[str, Any]
    source: Path
    config: dict[str, Any] = field(default_factory=dict)
    epoch: int | None = None
    checkpoint: dict[str, Any] = field(default_factory=dict)

    def build_model(self) -> WNet3D:
        """A WNet3D with this architecture and these weights (dropout from the config, else 0.65)."""
        model = WNet3D(**self.architecture, dropout=float(self.config.get("dropout", 0.65)))
        model.load_state_dict(self.state_dict, strict=True)
        return model


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` to a temporary name in the same folder, then rename: a kill never leaves a torn file."""
    with atomic_path(path) as part:
        torch.save(payload, part)


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove ``module.`` (DataParallel) and ``_orig_mod.`` (torch.compile) key prefixes."""
    cleaned = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        cleaned[key] = value
    return cleaned


def infer_architecture(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Read in/out channels, classes and level widths of a WNet3D from its weight shapes, and its input
    transform from the ``encoder.compress.input_log``, ``encoder.flatten.input_background`` and
    ``encoder.smooth.input_sigma`` buffers (none without them, as in CellSeg3D's weights)."""
    try:
        first = state["encoder.in_b.module.0.weight"]
        sigma = state.get("encoder.smooth.input_sigma")
        log = state.get("encoder.compress.input_log")
        background = state.get("encoder.flatten.input_background")
        return {
            "in_channels": int(first.shape[1]),
            "out_channels": int(state["decoder.out_b.module.8.weight"].shape[0]),
            "num_classes": int(state["encoder.out_b.module.8.weight"].shape[0]),
            "channels": [
                int(first.shape[0]),
                int(state["encoder.conv1.module.1.weight"].shape[0]),
                int(state["encoder.conv2.module.1.weight"].shape[0]),
                int(state["encoder.bot.module.1.weight"].shape[0]),
            ],
            "input_sigma": [0.0, 0.0, 0.0] if sigma is None else [float(v) for v in sigma.tolist()],
            "input_log": 0.0 if log is None else float(log),
            "input_background": [0, 0, 0] if background is None else [int(v) for v in background.tolist()],
        }
    except (KeyError, AttributeError, IndexError, TypeError, ValueError):
        raise UserError(f"not a WNet3D state dict: {_EXPECTED}") from None


def load_weights(source: str | Path) -> LoadedWeights:
    """Load WNet3D weights from any supported source (``"bundled"``: the pretrained model that ships with
    wnet-zoo); raises ``UserError`` naming what was expected."""
    if is_bundled(source):
        source = bundled_weights()
    with weights_file(source) as found:
        # name the file in messages, but never a temporary one extracted from an archive
        path = found if found.parent == Path(source) else Path(source)
        try:
            raw = torch.load(found, map_location="cpu", weights_only=True)
        except Exception as error:  # pickle, zip and unsafe-global errors all mean: not loadable weights
            reason = shorten(str(error).splitlines()[0], 80) if str(error) else type(error).__name__
            raise UserError(f"{path}: cannot be read as PyTorch weights ({reason}); {_EXPECTED}") from None
    checkpoint: dict[str, Any] = {}
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        checkpoint, raw = raw, raw["model"]
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise UserError(f"{path}: holds no state dict; {_EXPECTED}")
    state = strip_prefixes(raw)
    architecture = infer_architecture(state)
    loaded = LoadedWeights(
        state_dict=state,
        architecture=architecture,
        source=path,
        config=dict(checkpoint.get("config") or {}),
        epoch=checkpoint.get("epoch"),
        checkpoint=checkpoint,
    )
    if not _fits(state, architecture):
        raise UserError(f"{path}: weights do not fit a WNet3D of the shapes they imply; {_EXPECTED}")
    return loaded


def _fits(state: dict[str, torch.Tensor], architecture: dict[str, Any]) -> bool:
    try:
        with torch.device("meta"):
            expected = WNet3D(**architecture).state_dict()
    except ValueError:
        return False
    return expected.keys() == state.keys() and all(expected[k].shape == state[k].shape for k in expected)

"""The pretrained WNet3D that ships with wnet-zoo: the starting point of ``wnet-zoo finetune`` and of the demo.

A compact WNet3D (channels 16, 32, 64, 128) trained by ``benchmarks/pretrain.py`` on CellSeg3D's example
volumes (MIT) and on phantoms no benchmark scores on. ``bundled/wnet3d.pt`` holds its float32 state dict and
nothing else (read with ``weights_only=True`` like every other source), ``bundled/wnet3d.yaml`` its card: what it
was trained on, how, where and for how long. Light to import (the command line reads :data:`BUNDLED`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from wnet_zoo.errors import UserError

BUNDLED = "bundled"
"""The ``--from`` value that names the bundled pretrained WNet3D."""
WEIGHTS_NAME = "wnet3d.pt"
CARD_NAME = "wnet3d.yaml"


def bundled_folder() -> Path:
    """The folder of the bundled weights and their card, inside the installed package."""
    return Path(str(resources.files("wnet_zoo.model") / "bundled"))


def bundled_weights() -> Path:
    """The path of the bundled pretrained weights (``UserError`` when this install lacks them)."""
    path = bundled_folder() / WEIGHTS_NAME
    if not path.is_file():
        raise UserError(f"this wnet-zoo install has no bundled pretrained model ({path}); reinstall wnet-zoo")
    return path


def bundled_card() -> dict[str, Any]:
    """The bundled model's card (plain data: what it was trained on, how, where)."""
    return yaml.safe_load((bundled_folder() / CARD_NAME).read_text(encoding="utf-8"))


def describe_bundled() -> str:
    """One line naming the bundled model, as logs and ``config.yaml`` record it."""
    card = bundled_card()
    channels = ",".join(str(c) for c in card["channels"])
    return f"bundled pretrained WNet3D (channels {channels}; trained {card['trained']} by {card['recipe']})"


def is_bundled(source: str | Path) -> bool:
    """Whether ``source`` names the bundled model (``--from bundled``)."""
    return str(source).strip().lower() == BUNDLED

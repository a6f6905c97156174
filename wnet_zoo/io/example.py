"""The example volume that ships with wnet-zoo (the demo's input, and the test input of exported packages)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

EXAMPLE_NAME = "c5image.tif"


def example_volume() -> Path:
    """Path of the bundled example: a 124 x 86 x 94 light-sheet volume of nuclei from CellSeg3D (MIT)."""
    return Path(str(resources.files("wnet_zoo") / "examples" / EXAMPLE_NAME))

"""What `wnet-zoo train` chooses for the model's input on each phantom setting and on CellSeg3D's example volumes.

    python benchmarks/input_choices.py [--out JSON]

For every setting of ``benchmarks/phantoms.py`` and each volume in ``../shared/data`` (when present), the readings
behind the data-driven input transform, as training takes them on the 0..100 volume: the voxel-to-voxel noise,
the nuclei's brightness spread (log compression from 2.5), the background's unevenness (background subtraction
from 0.7) and the nuclei's radius, and the transform chosen (``choose_input_transform``, the function training
calls). Nothing is trained; a run takes about a minute. Results go to ``benchmarks/results/input_choices.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from wnet_zoo.io.intensity import compress_intensities, remap  # noqa: E402
from wnet_zoo.segment.geometry import relative_spacing  # noqa: E402
from wnet_zoo.training.config import TrainConfig  # noqa: E402
from wnet_zoo.training.input_choices import (  # noqa: E402
    auto_input_background,
    brightness_spread,
    choose_input_transform,
    noise_level,
)

from phantoms import HELD_OUT, SETTINGS, make_phantom  # noqa: E402
from quality import machine  # noqa: E402

RESULTS = HERE / "results" / "input_choices.json"
REAL = HERE.parent.parent / "shared" / "data"


def readings(volume: np.ndarray, spacing: tuple[float, float, float]) -> dict[str, Any]:
    """The readings and the choice for one raw volume of voxel ``spacing`` (relative)."""
    remapped = remap(volume)
    chosen = choose_input_transform(TrainConfig(), [remapped], spacing)
    compressed = compress_intensities(remapped, chosen.input_log or 0.0)
    _, unevenness, nucleus = auto_input_background([compressed], spacing)
    return {
        "noise": round(noise_level(remapped), 2),
        "brightness_spread": round(brightness_spread(remapped), 2),
        "nucleus_radius": round(nucleus, 2),
        "unevenness": round(unevenness[0], 2) if unevenness else None,  # None: nuclei too large to judge
        "input_log": round(chosen.input_log or 0.0, 3),
        "input_background": chosen.input_background,
        "input_smoothing": chosen.input_smoothing,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    volumes: dict[str, Any] = {}
    for name, settings in SETTINGS.items():
        image, _ = make_phantom(name)
        volumes[name] = {"held_out": name in HELD_OUT, **readings(image, relative_spacing(settings.voxel_size))}
    for path in sorted(REAL.glob("*.tif")):
        volumes[path.name] = {"real": True, **readings(tifffile.imread(path), (1.0, 1.0, 1.0))}
    print("| volume | noise | spread | nucleus radius | unevenness | input-log | input-background | input-smoothing |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, found in volumes.items():
        print(
            f"| {name} | {found['noise']} | {found['brightness_spread']} | {found['nucleus_radius']} | "
            f"{found['unevenness']} | {found['input_log']:g} | {found['input_background']} | "
            f"{found['input_smoothing']:g} |"
        )
    results = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "what": "the data-driven input transform training chooses, and the readings behind it",
        "machine": machine(None),
        "volumes": volumes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""TIFF files the tests of several stages share: damaged ones the readers must refuse, and a noisy stack."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile


def truncated_tiffs(folder: Path) -> dict[str, Path]:
    """Real TIFF files cut short: a BigTIFF whose header claims 2 GiB of uncompressed pixels cut to 1 MiB (written
    without data, as a sparse file); a compressed stack missing the end of its last plane's strips; a compressed
    stack cut in half, its chain of pages breaking off."""
    claimed = folder / "claimed.tif"
    tifffile.imwrite(claimed, shape=(64, 4096, 4096), dtype="uint16", bigtiff=True)
    os.truncate(claimed, 2**20)
    planes = np.random.default_rng(0).integers(0, 60000, (16, 64, 64), dtype=np.uint16)
    strips, half = folder / "strips.tif", folder / "half.tif"
    for path, keep in ((strips, -100), (half, None)):
        tifffile.imwrite(path, planes, compression="zlib", rowsperstrip=8)
        size = path.stat().st_size
        os.truncate(path, size + keep if keep else size // 2)
    return {"claimed": claimed, "strips": strips, "half": half}


def noisy_nuclei(path: Path, seed: int, nucleus: float = 700.0) -> Path:
    """Four spheres of radius 5 at ``nucleus`` on a background of 100, under Gaussian noise of SD 80 (training
    chooses to smooth it), as float32 TIFF at ``path``."""
    z, y, x = np.indices((32, 48, 48))
    volume = np.full((32, 48, 48), 100.0)
    for centre in ((10, 12, 12), (20, 30, 34), (16, 36, 10), (22, 12, 30)):
        volume[(z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= 25] = nucleus
    noise = np.random.default_rng(seed).normal(0, 80, volume.shape)
    tifffile.imwrite(path, (volume + noise).clip(0).astype(np.float32))
    return path

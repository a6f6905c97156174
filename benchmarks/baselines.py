"""Classical nuclei segmentations that wnet-zoo's pipeline must beat, and their scores on the phantoms.

    python benchmarks/baselines.py [--settings sparse touching ...]

Three baselines, each from the raw image alone and with fixed parameters (no ground truth, no tuning per
volume). Lengths are in units of the finest voxel side and follow the voxel size on the other axes:

- ``otsu_cc``: Gaussian smoothing (sigma 1), Otsu's threshold, connected components (faces only).
- ``otsu_watershed``: the same foreground, split by a watershed on its Euclidean distance to the background
  (smoothed, sigma 1), seeded at the distance's local maxima at least ``min_distance`` (3) apart.
- ``voronoi_otsu``: the behaviour of clEsperanto's Voronoi-Otsu labelling, which CellSeg3D offers for
  instances: seeds at the local maxima (3 x 3 x 3) of the image smoothed by ``spot_sigma``, the foreground
  by Otsu's threshold on the image smoothed by ``outline_sigma``, and each foreground voxel given to its
  nearest seed within the foreground (a masked Voronoi partition; foreground without a seed stays
  background). CellSeg3D's widget defaults (0.65 and 0.65) are meant for the model's probabilities; on a raw
  image they seed every noise peak, so here ``spot_sigma`` is 2 and ``outline_sigma`` 1, the usual values for
  nuclei about ten voxels wide.

All three drop objects under ``min_size`` (10) voxels, as ``wnet-zoo predict`` does by default.
:func:`run_baselines` is the API the quality benchmark calls; run as a script, this file scores the three on
every phantom setting of ``benchmarks/phantoms.py`` with :func:`wnet_zoo.segment.evaluate.evaluate` and prints
the table.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.segmentation import watershed

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # the source tree this script belongs to, and phantoms.py beside it

from wnet_zoo.segment.evaluate import evaluate  # noqa: E402

from phantoms import HELD_OUT, SETTINGS, make_phantom  # noqa: E402

MIN_SIZE = 10
Baseline = Callable[[np.ndarray, Sequence[float]], np.ndarray]


def otsu_cc(image: np.ndarray, voxel_size: Sequence[float], smooth_sigma: float = 1.0) -> np.ndarray:
    """Connected components (faces only) of the Otsu foreground of the smoothed image."""
    labels, _ = ndimage.label(otsu_foreground(image, voxel_size, smooth_sigma))
    return remove_small(labels)


def otsu_watershed(
    image: np.ndarray, voxel_size: Sequence[float], smooth_sigma: float = 1.0, min_distance: float = 3.0
) -> np.ndarray:
    """The Otsu foreground split by a watershed on its distance transform, seeded at the distance's maxima."""
    spacing = relative_spacing(voxel_size)
    foreground = otsu_foreground(image, voxel_size, smooth_sigma)
    distance = ndimage.distance_transform_edt(foreground, sampling=spacing)
    distance = ndimage.gaussian_filter(distance, smooth_sigma / spacing)
    half = np.floor(min_distance / spacing).astype(int)
    grid = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    footprint = sum((g * s) ** 2 for g, s in zip(grid, spacing, strict=True)) <= min_distance**2
    peaks = peak_local_max(distance, footprint=footprint, labels=foreground.astype(np.int32), exclude_border=False)
    markers = np.zeros(image.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return remove_small(watershed(-distance, markers, mask=foreground))


def voronoi_otsu(
    image: np.ndarray, voxel_size: Sequence[float], spot_sigma: float = 2.0, outline_sigma: float = 1.0
) -> np.ndarray:
    """Voronoi-Otsu labelling: maxima of the spot-smoothed image, grown to fill the Otsu foreground."""
    spacing = relative_spacing(voxel_size)
    spots = ndimage.gaussian_filter(image.astype(np.float32), spot_sigma / spacing)
    foreground = otsu_foreground(image, voxel_size, outline_sigma)
    seeds = (spots == ndimage.maximum_filter(spots, size=3)) & foreground
    markers, _ = ndimage.label(seeds, structure=np.ones((3, 3, 3)))  # a plateau's voxels form one seed
    to_seed = ndimage.distance_transform_edt(~seeds, sampling=spacing)
    return remove_small(watershed(to_seed, markers, mask=foreground))  # flooding by distance: a Voronoi partition


BASELINES: dict[str, Baseline] = {"otsu_cc": otsu_cc, "otsu_watershed": otsu_watershed, "voronoi_otsu": voronoi_otsu}


def run_baselines(image: np.ndarray, voxel_size: Sequence[float] = (1.0, 1.0, 1.0)) -> dict[str, np.ndarray]:
    """Every baseline's labels for a (z, y, x) image: name -> label image (0 background, 1..N, uint16/uint32)."""
    return {name: baseline(image, voxel_size) for name, baseline in BASELINES.items()}


def otsu_foreground(image: np.ndarray, voxel_size: Sequence[float], sigma: float) -> np.ndarray:
    """Voxels of the image smoothed by ``sigma`` above Otsu's threshold of it."""
    smoothed = ndimage.gaussian_filter(image.astype(np.float32), sigma / relative_spacing(voxel_size))
    return smoothed > threshold_otsu(smoothed)


def relative_spacing(voxel_size: Sequence[float]) -> np.ndarray:
    """The voxel size in units of its finest side."""
    sizes = np.asarray(voxel_size, dtype=np.float64)
    return sizes / sizes.min()


def remove_small(labels: np.ndarray, min_size: int = MIN_SIZE) -> np.ndarray:
    """Labels of at least ``min_size`` voxels, renumbered 1..N (uint16, or uint32 beyond 65535)."""
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    lookup = np.zeros(sizes.size, dtype=np.uint16 if keep.sum() <= np.iinfo(np.uint16).max else np.uint32)
    lookup[keep] = np.arange(1, int(keep.sum()) + 1)
    return lookup[labels]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    args = parser.parse_args(argv)
    print(f"{'setting':13s} {'method':15s} {'fg Dice':>7s} {'F1@0.5':>7s} {'mean F1':>7s} {'time s':>7s}")
    for name in args.settings:
        image, truth = make_phantom(name)
        for method, baseline in BASELINES.items():
            start = time.perf_counter()
            labels = baseline(image, SETTINGS[name].voxel_size)
            seconds = time.perf_counter() - start
            score = evaluate(labels, truth)
            setting = f"{name}*" if name in HELD_OUT else name
            print(
                f"{setting:13s} {method:15s} {score.foreground_dice:7.3f} {score.f1_at_05:7.3f} "
                f"{score.mean_f1:7.3f} {seconds:7.2f}"
            )
    print(f"* held out of tuning: {', '.join(HELD_OUT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

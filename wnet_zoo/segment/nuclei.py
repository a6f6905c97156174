"""Nuclei instances from the foreground probability: threshold, split touching nuclei, measure each one.

CellSeg3D's reference is Voronoi-Otsu labelling (seeds at the maxima of a smoothed image, labels grown
from them inside a thresholded mask). Here the seeds are the maxima of the smoothed Euclidean distance to
the background, which do not depend on how saturated the probabilities are, and the labels grow by a
watershed on that distance inside the mask, so touching nuclei part at their neck. Distances and
smoothing are in physical units (the voxel size), so anisotropic stacks split like isotropic ones. An
elongated nucleus can hold two distance maxima and be cut in two along its length: two touching labels whose
union is as convex as the two apart (:func:`merge_convex`) are merged back, while two touching nuclei, whose
union has a waist, stay apart.

Two refinements take the image into account (both on by default, as ``wnet-zoo predict`` runs them; what they
add on the phantoms is in ``benchmarks/README.md``), and within the first the convex merge reads it too (small
pressed nuclei keep little waist once blurred, but rarely share a brightness):

- ``boundary="half_max"`` (the default when the image is given): the model's mask tends to cover the blurred rim of
  each nucleus (its nuclei class takes almost everything above the flat background). The edge of a blurred object
  lies where its intensity is halfway between the object and its surroundings, so each nucleus of the mask, with its
  surroundings, keeps the voxels whose smoothed intensity reaches halfway from its local background (the 10th
  percentile just outside the mask around it: its darkest part, as where nuclei are packed most voxels around one
  belong to the blurred rims of its neighbours) to its own peak (90th percentile), and the result is split again.
  Where nuclei are packed the model calls their rims background instead (their neighbours' light), and the boundary
  moves out, up to the surroundings' width. The level is each nucleus's own, so dim nuclei beside bright ones,
  uneven illumination and clipped nuclei keep their true size, where one global threshold fails. A piece of the
  model's mask can hold several packed nuclei of unequal brightness, which share one level: the levels are read
  again once the pieces are split, per nucleus, over the same surroundings, and the result split once more.
- ``relative_min_size`` (default 0.1): also drop objects smaller than this fraction of the typical nucleus (the
  volume of the nucleus that holds the median foreground voxel), such as isolated hot pixels blurred into small
  blobs, whatever the nuclei's size in voxels.

After the convex merge, a label much larger than the labels it touches, with a waist, holds packed nuclei and is
cut into them (:func:`~wnet_zoo.segment.oversized.split_oversized`).

:class:`NucleiOptions` holds these settings for the prediction pipeline. scipy and scikit-image are imported
where they are used, so a prediction without instances starts without them.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from wnet_zoo.errors import UserError
from wnet_zoo.segment import parallel
from wnet_zoo.segment.convex import CONVEX_MERGE, merge_convex
from wnet_zoo.segment.geometry import _ellipsoid, relative_spacing
from wnet_zoo.segment.half_max import half_max_foreground
from wnet_zoo.segment.measure import measure, typical_volume
from wnet_zoo.segment.options import (
    DEFAULT_MIN_DISTANCE,
    DEFAULT_MIN_SIZE,
    DEFAULT_RELATIVE_MIN_SIZE,
    DEFAULT_SPOT_SIGMA,
    NucleiOptions,
)
from wnet_zoo.segment.oversized import split_oversized
from wnet_zoo.segment.peaks import local_maxima

if TYPE_CHECKING:
    import pandas as pd


# what the stages import where they are used (a prediction without instances starts without them): about 0.4 s
LIBRARIES = ("scipy.ndimage", "scipy.spatial", "skimage.segmentation", "pandas")
_loading: list[threading.Thread] = []  # the thread importing them, until a stage waits for it


def import_libraries_in_background() -> None:
    """Start importing :data:`LIBRARIES` on a thread of its own, for a caller with other work first (the network's,
    which leaves the GIL while it runs). The stages wait for it before they start: the same modules imported by two
    threads at once could meet half initialised. A failed import is left for the stage that needs it to report."""

    def load() -> None:
        for name in LIBRARIES:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - reported where the stage imports it
                return

    thread = threading.Thread(target=load, name="wnet-zoo-imports")
    thread.start()
    _loading.append(thread)


def _libraries_loaded() -> None:
    """Wait for :func:`import_libraries_in_background`, if it ran."""
    while _loading:
        _loading.pop().join()


class Instances(NamedTuple):
    """Labelled nuclei and one row of measurements per label.

    Attributes:
        labels: (z, y, x) label image, 0 for background, 1..N for the nuclei; uint16, or uint32 beyond 65535.
        table: one row per label: ``label``, ``voxels``, ``centroid_z/y/x`` (voxel coordinates),
            ``bbox_*_start``/``bbox_*_stop`` (half-open voxel ranges) and ``mean_intensity`` (of the
            image given, else of the probability).
    """

    labels: np.ndarray
    table: pd.DataFrame


def instances(
    probability: np.ndarray,
    intensity: np.ndarray | None = None,
    *,
    mask: np.ndarray | None = None,
    threshold: float = 0.5,
    min_size: int = DEFAULT_MIN_SIZE,
    voxel_size: Sequence[float] | None = None,
    spot_sigma: float = DEFAULT_SPOT_SIGMA,
    min_distance: float = DEFAULT_MIN_DISTANCE,
    boundary: str = "auto",
    relative_min_size: float = DEFAULT_RELATIVE_MIN_SIZE,
    boundary_intensity: np.ndarray | None = None,
    step: Callable[[str], None] | None = None,
    threads: int = 1,
) -> Instances:
    """Split the foreground into nuclei and measure them.

    Args:
        probability: (z, y, x) foreground probability.
        intensity: (z, y, x) image: its mean per nucleus goes to the table (default: ``probability``); the
            half-max boundary reads it, and within that boundary the convex merge compares pieces' brightness.
        mask: foreground voxels (default: ``probability > threshold``).
        threshold: foreground threshold, when no ``mask`` is given.
        min_size: nuclei with fewer voxels are removed.
        voxel_size: (z, y, x) voxel size; only the ratios matter (default isotropic).
        spot_sigma: smoothing of the distance map before seeding, in units of the finest voxel side.
        min_distance: seeds closer than this (in units of the finest voxel side) merge.
        boundary: ``"mask"`` keeps the foreground as given; ``"half_max"`` moves each nucleus's boundary to
            where the smoothed ``intensity`` (required) is halfway between its local background and its peak;
            ``"auto"``: half-max when ``intensity`` is given, else the mask.
        relative_min_size: nuclei under this fraction of the typical nucleus volume are removed too (0: off).
        boundary_intensity: the image the half-max boundary and the convex merge read instead of ``intensity``
            (the predictor passes the image less its background where the model subtracts one,
            :func:`~wnet_zoo.io.intensity.boundary_view`; the table still reads ``intensity``).
        step: called with each stage's name as it starts (:func:`stage_count` of them), e.g. to move a progress
            bar on a large volume.
        threads: CPU threads the stages may use (0 or 1: this one; the labels are the same for any number).
    """
    probability = np.asarray(probability)
    if probability.ndim != 3:
        raise UserError(f"instances need a 3-D (z, y, x) probability, got shape {probability.shape}")
    options = NucleiOptions(min_size, relative_min_size, boundary, spot_sigma, min_distance)
    options.validate()
    if boundary == "half_max" and intensity is None:
        raise UserError("boundary 'half_max' reads the image: pass the intensity volume")
    foreground = probability > threshold if mask is None else np.asarray(mask, dtype=bool)
    spacing = relative_spacing(voxel_size)
    labels = nuclei_labels(
        foreground, intensity if boundary_intensity is None else boundary_intensity, spacing, options, step, threads
    )
    if step is not None:
        step("measure")
    labels = _remove_small(labels, options.min_size_for(typical_volume(labels)))
    values = probability if intensity is None else np.asarray(intensity)
    return Instances(labels, measure(labels, values))


def nuclei_labels(
    foreground: np.ndarray,
    intensity: np.ndarray | None,
    spacing: tuple[float, float, float],
    options: NucleiOptions,
    step: Callable[[str], None] | None = None,
    threads: int = 1,
) -> np.ndarray:
    """Nuclei of ``foreground`` (int32 labels, small ones kept): split, and with the half-max boundary (or
    ``"auto"`` with an ``intensity``) moved to the half maximum of ``intensity`` and split again, then moved to each
    nucleus's own half maximum and split once more; split pieces of one convex nucleus (of one brightness, within
    half-max boundaries) merged; labels holding packed nuclei cut into them
    (:func:`~wnet_zoo.segment.oversized.split_oversized`). ``step`` is called with each stage's name as it starts (a
    progress bar's); ``threads``: CPU threads the stages may use."""
    step = step or (lambda name: None)
    labels = split_and_merge(foreground, intensity, spacing, options, step, threads)
    step("split oversized")
    return split_oversized(labels, spacing)


def split_and_merge(
    foreground: np.ndarray,
    intensity: np.ndarray | None,
    spacing: tuple[float, float, float],
    options: NucleiOptions,
    step: Callable[[str], None],
    threads: int = 1,
) -> np.ndarray:
    """:func:`nuclei_labels`'s stages up to and including the convex merge (all but the last)."""
    _libraries_loaded()
    step("split")
    labels = split_nuclei(foreground, spacing, options.spot_sigma, options.min_distance, threads)
    # the convex merge compares the pieces' brightness only within the nuclei's half-max boundaries: a piece of the
    # model's own mask can be mostly the halo around a nucleus, dimmer than the piece holding its core
    image = np.asarray(intensity) if half_max_applies(options, intensity) else None
    if image is not None:
        step("half-max boundaries")
        reach = np.empty(foreground.shape, dtype=bool)
        refined = half_max_foreground(labels, image, spacing, threads=threads, reach=reach)
        del labels  # not held through the second split: this is the label phase's memory peak when streaming
        step("split again")
        labels = split_nuclei(refined, spacing, options.spot_sigma, options.min_distance, threads)
        # Those levels were read per piece of the model's mask, which in packed tissue holds several nuclei of
        # unequal brightness under one level: read them again per nucleus. Each nucleus first spreads over the mask
        # and the first boundaries, so that its surroundings lie where the first pass read them: read outside its
        # own half-max boundary, they would be brighter and shrink every nucleus once more.
        step("half-max per nucleus")
        region = np.logical_or(foreground, refined)
        del refined
        labels = spread_labels(labels, region, spacing, threads)
        del region
        # no further than the first boundaries could reach: where --boundary promises they stop
        refined = half_max_foreground(labels, image, spacing, threads=threads, within=reach)
        del labels, reach
        step("split per nucleus")
        labels = split_nuclei(refined, spacing, options.spot_sigma, options.min_distance, threads)
    step("convex merge")
    return merge_convex(labels, spacing, CONVEX_MERGE, image, threads=threads)


def half_max_applies(options: NucleiOptions, intensity: np.ndarray | None) -> bool:
    """Whether the boundaries move to the half maximum: ``"half_max"``, or ``"auto"`` with an image."""
    return options.boundary == "half_max" or (options.boundary == "auto" and intensity is not None)


def stage_count(options: NucleiOptions, intensity: np.ndarray | None) -> int:
    """How many times :func:`instances` calls its ``step``."""
    return 8 if half_max_applies(options, intensity) else 4


def split_nuclei(
    foreground: np.ndarray,
    spacing: tuple[float, float, float],
    spot_sigma: float,
    min_distance: float,
    threads: int = 1,
) -> np.ndarray:
    """Watershed labels of ``foreground`` seeded at the maxima of its smoothed distance map (int32), its filters
    on up to ``threads`` threads.

    A component left without a seed (its maximum suppressed by a nearby larger one) keeps a label of its own.
    """
    from scipy import ndimage
    from skimage.segmentation import watershed  # scikit-image loads in ~0.1 s: only when nuclei are split

    if not foreground.any():
        return np.zeros(foreground.shape, dtype=np.int32)
    distance = parallel.distance(foreground, spacing, threads)
    if spot_sigma > 0:
        distance = parallel.gaussian(distance, [spot_sigma / s for s in spacing], threads)
    seeds = local_maxima(distance, _ellipsoid(min_distance, spacing))
    seeds &= foreground
    markers, count = ndimage.label(seeds)
    del seeds
    labels = watershed(np.negative(distance, out=distance), markers, mask=foreground).astype(np.int32, copy=False)
    del distance, markers
    unseeded, _ = ndimage.label(foreground & (labels == 0))
    labels[unseeded > 0] = unseeded[unseeded > 0] + count
    return labels


def spread_labels(
    labels: np.ndarray, region: np.ndarray, spacing: tuple[float, float, float], threads: int = 1
) -> np.ndarray:
    """``labels`` grown over ``region``: in each piece of ``region`` (connected by faces) that holds a label, every
    unlabelled voxel takes the label of the nearest labelled voxel (by physical distance). Pieces holding none (a
    blob of the model's mask that the first boundaries dropped whole) and voxels outside ``region`` stay 0. On up to
    ``threads`` threads."""
    from scipy import ndimage

    outside = labels == 0
    empty = region & outside
    if outside.all() or not empty.any():
        return labels
    pieces, _ = ndimage.label(region | ~outside)
    empty &= np.isin(pieces, np.unique(pieces[~outside]))
    del pieces
    if not empty.any():
        return labels
    grown = labels.copy()
    grown[empty] = parallel.nearest_labels(labels, spacing, threads, where=empty)[empty]
    return grown


def _remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Drop labels under ``min_size`` voxels, number the rest 1..N, in the smallest fitting dtype."""
    sizes = np.bincount(labels.ravel())
    keep = sizes >= max(min_size, 1)
    keep[0] = False
    lookup = np.zeros(sizes.size, dtype=np.int64)
    lookup[keep] = np.arange(1, int(keep.sum()) + 1)
    dtype = np.uint16 if keep.sum() <= np.iinfo(np.uint16).max else np.uint32
    return lookup.astype(dtype)[labels]

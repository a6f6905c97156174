"""Nuclei instances from the foreground probability: threshold, split touching nuclei, measure each one.

CellSeg3D's reference is Voronoi-Otsu labelling (seeds at the maxima of a smoothed image, labels grown
from them inside a thresholded mask). Here the seeds are the maxima of the smoothed Euclidean distance to
the background, which do not depend on how saturated the probabilities are, and the labels grow by a
watershed on that distance inside the mask, so touching nuclei part at their neck. Distances and
smoothing are in physical units (the voxel size), so anisotropic stacks split like isotropic ones. An
elongated nucleus can hold two distance maxima and be cut in two along its length: two touching labels whose
union is as convex as the two apart (:func:`merge_convex`) are merged back, while two touching nuclei, whose
union has a waist, stay apart.

Two refinements take the image into account (both on by default, as ``wnet-zoo predict`` runs them; on the
phantoms of ``benchmarks/phantoms.py`` they lift the mean instance F1 from 0.43 to 0.75):

- ``boundary="half_max"`` (the default when the image is given): the model's mask tends to cover the blurred
  rim of each nucleus (its nuclei class takes almost everything above the flat background: on the phantoms one
  to two voxels beyond the true edge, more after short training). The edge of a blurred object lies where its
  intensity is halfway between the object and its surroundings, so each nucleus of the mask, with its
  surroundings, keeps the voxels whose smoothed intensity reaches halfway from its local background (the 10th
  percentile just outside the mask around it: its darkest part, as where nuclei are packed most voxels around one
  belong to the blurred rims of its neighbours) to its own peak (90th percentile), and the result is split again.
  Where nuclei are packed the model calls their rims background instead (their neighbours' light), and the
  boundary moves out, up to the surroundings' width. The level is each nucleus's own, so dim nuclei beside bright
  ones, uneven illumination and clipped nuclei keep their true size, where one global threshold fails.
- ``relative_min_size`` (default 0.1): also drop objects smaller than this fraction of the typical nucleus (the
  volume of the nucleus that holds the median foreground voxel), such as isolated hot pixels blurred into small
  blobs, whatever the nuclei's size in voxels.

:class:`NucleiOptions` holds these settings for the prediction pipeline. scipy and scikit-image are imported
where they are used, so a prediction without instances starts without them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from .errors import UserError

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_MIN_SIZE = 10
DEFAULT_SPOT_SIGMA = 1.0
DEFAULT_MIN_DISTANCE = 3.0
DEFAULT_RELATIVE_MIN_SIZE = 0.1
BOUNDARIES = ("auto", "mask", "half_max")
HALF_MAX_SIGMA = 1.0  # smoothing of the image before levels are read, in units of the finest voxel side
HALF_MAX_SHELL = 3.0  # a nucleus's surroundings, where its boundary may move out to: outside the mask within this
HALF_MAX_BACKGROUND = 10.0  # a nucleus's background level: this percentile of its smoothed surroundings
HALF_MAX_PEAK = 90.0  # a nucleus's own level: this percentile of its smoothed intensity
HALF_MAX_GROWTH_CONTRAST = 1.0  # a boundary moves out only where peak - background is this x the shell's noise
CONVEX_MERGE = 1.01  # touching labels merge when the convex hull of their union is at most this x their hulls' sum
_DOUBLED_CORNERS = 2 * np.indices((2, 2, 2)).reshape(3, -1).T - 1  # a voxel's 8 corners around its centre, x2
_SLAB_VOXELS = 1 << 20  # voxels per slab of euclidean_distance's temporaries
COLUMNS = (
    "label",
    "voxels",
    "centroid_z",
    "centroid_y",
    "centroid_x",
    "bbox_z_start",
    "bbox_y_start",
    "bbox_x_start",
    "bbox_z_stop",
    "bbox_y_stop",
    "bbox_x_stop",
    "mean_intensity",
)


@dataclass(frozen=True)
class NucleiOptions:
    """How the prediction pipeline turns the foreground class into nuclei (see :func:`instances`).

    Attributes:
        min_size: nuclei with fewer voxels are removed.
        relative_min_size: nuclei under this fraction of the typical nucleus volume are removed too (0: off).
        boundary: ``"half_max"`` (each nucleus's edge where its smoothed intensity is halfway up from its
            surroundings) or ``"mask"`` (the model's foreground as it is).
        spot_sigma: smoothing of the distance map before seeding, in units of the finest voxel side.
        min_distance: seeds closer than this (in units of the finest voxel side) merge.
    """

    min_size: int = DEFAULT_MIN_SIZE
    relative_min_size: float = DEFAULT_RELATIVE_MIN_SIZE
    boundary: str = "half_max"
    spot_sigma: float = DEFAULT_SPOT_SIGMA
    min_distance: float = DEFAULT_MIN_DISTANCE

    def validate(self) -> None:
        """Raise ``UserError`` for settings that cannot split nuclei."""
        if self.boundary not in BOUNDARIES:
            raise UserError(f"boundary {self.boundary!r}: choose one of {', '.join(BOUNDARIES)}")
        if not 0 <= self.relative_min_size < 1:
            raise UserError(f"relative_min_size {self.relative_min_size}: give a fraction in [0, 1), e.g. 0.1")
        if self.min_size < 0:
            raise UserError(f"min_size {self.min_size}: give a number of voxels >= 0")

    def min_size_for(self, typical: float) -> int:
        """The smallest nucleus kept, given the typical nucleus volume (see :func:`typical_volume`)."""
        return max(self.min_size, int(self.relative_min_size * typical))


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
) -> Instances:
    """Split the foreground into nuclei and measure them.

    Args:
        probability: (z, y, x) foreground probability.
        intensity: (z, y, x) image: its mean per nucleus goes to the table (default: ``probability``) and the
            half-max boundary reads it.
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
        boundary_intensity: the image the half-max boundary reads instead of ``intensity`` (the predictor passes
            the image as a model that compresses its input sees it; the table still reads ``intensity``).
        step: called with each stage's name as it starts (:func:`stage_count` of them), e.g. to move a progress
            bar on a large volume.
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
        foreground, intensity if boundary_intensity is None else boundary_intensity, spacing, options, step
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
) -> np.ndarray:
    """Nuclei of ``foreground`` (int32 labels, small ones kept): split, and with the half-max boundary (or
    ``"auto"`` with an ``intensity``) moved to the half maximum of ``intensity`` and split again; split pieces
    of one convex nucleus merged. ``step`` is called with each stage's name as it starts (a progress bar's)."""
    step = step or (lambda name: None)
    step("split")
    labels = split_nuclei(foreground, spacing, options.spot_sigma, options.min_distance)
    if half_max_applies(options, intensity):
        step("half-max boundaries")
        foreground = half_max_foreground(labels, np.asarray(intensity), spacing)
        del labels  # not held through the second split: this is the label phase's memory peak when streaming
        step("split again")
        labels = split_nuclei(foreground, spacing, options.spot_sigma, options.min_distance)
    step("convex merge")
    return merge_convex(labels, spacing, CONVEX_MERGE)


def half_max_applies(options: NucleiOptions, intensity: np.ndarray | None) -> bool:
    """Whether the boundaries move to the half maximum: ``"half_max"``, or ``"auto"`` with an image."""
    return options.boundary == "half_max" or (options.boundary == "auto" and intensity is not None)


def stage_count(options: NucleiOptions, intensity: np.ndarray | None) -> int:
    """How many times :func:`instances` calls its ``step``."""
    return 5 if half_max_applies(options, intensity) else 3


def merge_convex(labels: np.ndarray, spacing: tuple[float, float, float], ratio: float = CONVEX_MERGE) -> np.ndarray:
    """Merge each pair of touching labels whose union's convex hull is at most ``ratio`` times the sum of their
    own hulls' volumes (in ``labels``' dtype, numbered 1..n again; labels are only merged).

    A watershed cuts a convex nucleus in two along an uneven surface (across a plateau of the distance map), so
    the two parts' hulls overlap and their sum exceeds the union's hull; two touching nuclei leave a waist that
    their union's hull adds (two balls of 8 voxels radius: 20 % touching, 6.5 % pressed to 0.8 of their diameter
    apart). A flat cut through a voxelised nucleus adds 1 to 3 % and is left alone: on the phantoms a ratio of
    1.02 already merges pressed nuclei of the touching setting, while 1.0 and 1.01 mend every split sparse nucleus
    and change dense (held out) by 0.001 mean F1. Decisions are taken on the labels as given, pair by pair, and
    merged pairs joined transitively. Labels whose voxels span no volume (flat) are left alone.
    """
    from scipy import ndimage
    from scipy.spatial import ConvexHull, QhullError

    count = int(labels.max(initial=0))
    if count < 2:
        return labels
    keys = []
    for axis in range(3):
        ahead = [slice(None)] * 3
        behind = [slice(None)] * 3
        ahead[axis], behind[axis] = slice(1, None), slice(None, -1)
        first, second = labels[tuple(behind)], labels[tuple(ahead)]
        touching = (first != second) & (first > 0) & (second > 0)
        low = np.minimum(first[touching], second[touching]).astype(np.int64)
        high = np.maximum(first[touching], second[touching]).astype(np.int64)
        keys.append(np.unique(low * (count + 1) + high))
    pairs = np.unique(np.concatenate(keys))
    if pairs.size == 0:
        return labels
    boxes = ndimage.find_objects(labels)
    scale = np.asarray(spacing, dtype=np.float64)

    sides = 2 * np.asarray(labels.shape, dtype=np.int64) + 3  # doubled corner coordinates, shifted by 1, fit

    def surface(label: int) -> np.ndarray:
        """The corners of the label's surface voxels (the hull of the voxels is the hull of those), in order,
        from the corner of its box: the same numbers wherever the label lies, in a streamed block too."""
        box = boxes[label - 1]
        inside = labels[box] == label
        edge = np.argwhere(inside & ~ndimage.binary_erosion(inside))
        doubled = (2 * edge[:, None, :] + _DOUBLED_CORNERS + 1).reshape(-1, 3)  # integers: unique as one key
        keys = np.unique((doubled[:, 0] * sides[1] + doubled[:, 1]) * sides[2] + doubled[:, 2])
        rest, x = np.divmod(keys, sides[2])
        z, y = np.divmod(rest, sides[1])
        return (np.stack([z, y, x], axis=1) - 1) / 2 * scale

    def hull(points: np.ndarray) -> tuple[float, np.ndarray]:
        """The hull's volume and its vertices (the union's hull is the hull of its parts' vertices)."""
        try:
            found = ConvexHull(points)
        except (QhullError, ValueError):
            return 0.0, points
        return float(found.volume), points[found.vertices]

    points: dict[int, np.ndarray] = {}
    hulls: dict[int, float] = {}
    parent = np.arange(count + 1)

    def root(label: int) -> int:
        while parent[label] != label:
            parent[label] = parent[parent[label]]
            label = int(parent[label])
        return label

    corners = np.array([[s.start for s in box] if box else [0, 0, 0] for box in boxes], dtype=np.int64)
    for key in pairs.tolist():
        a, b = divmod(key, count + 1)
        for label in (a, b):
            if label not in points:
                hulls[label], points[label] = hull(surface(label))
        if not (hulls[a] and hulls[b]):
            continue
        origin = np.minimum(corners[a - 1], corners[b - 1])
        union = np.vstack(
            [points[a] + (corners[a - 1] - origin) * scale, points[b] + (corners[b - 1] - origin) * scale]
        )
        # hull volumes of voxel corners are exact fractions and can equal the limit: ties merge, whatever rounding
        if hull(union)[0] <= ratio * (hulls[a] + hulls[b]) * (1 + 1e-9):
            parent[root(b)] = root(a)
    roots = np.array([root(label) for label in range(count + 1)])
    if np.array_equal(roots, np.arange(count + 1)):
        return labels
    _, numbers = np.unique(roots, return_inverse=True)
    return numbers.astype(labels.dtype)[labels]


def split_nuclei(
    foreground: np.ndarray, spacing: tuple[float, float, float], spot_sigma: float, min_distance: float
) -> np.ndarray:
    """Watershed labels of ``foreground`` seeded at the maxima of its smoothed distance map (int32).

    A component left without a seed (its maximum suppressed by a nearby larger one) keeps a label of its own.
    """
    from scipy import ndimage
    from skimage.feature import peak_local_max  # scikit-image loads in ~0.5 s: only when nuclei are split
    from skimage.segmentation import watershed

    if not foreground.any():
        return np.zeros(foreground.shape, dtype=np.int32)
    distance = euclidean_distance(foreground, spacing)[0].astype(np.float32)
    if spot_sigma > 0:
        distance = ndimage.gaussian_filter(distance, [spot_sigma / s for s in spacing])
    peaks = peak_local_max(distance, footprint=_ellipsoid(min_distance, spacing), threshold_abs=0, exclude_border=False)
    seeds = np.zeros(foreground.shape, dtype=bool)
    seeds[tuple(peaks.T)] = True
    seeds &= foreground
    markers, count = ndimage.label(seeds)
    del seeds, peaks
    labels = watershed(np.negative(distance, out=distance), markers, mask=foreground).astype(np.int32, copy=False)
    del distance, markers
    unseeded, _ = ndimage.label(foreground & (labels == 0))
    labels[unseeded > 0] = unseeded[unseeded > 0] + count
    return labels


def half_max_foreground(labels: np.ndarray, intensity: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """The voxels of each labelled nucleus and of its surroundings whose smoothed intensity is at least halfway
    from those surroundings to the nucleus's peak (bool): each boundary moves in, or out by up to
    :data:`HALF_MAX_SHELL`, to where the intensity crosses half its maximum.

    A nucleus's surroundings are the unlabelled voxels within :data:`HALF_MAX_SHELL` of it and nearer to it than to
    any other nucleus; its background is their :data:`HALF_MAX_BACKGROUND` percentile (the median of all
    unlabelled voxels when it has none), its peak the :data:`HALF_MAX_PEAK` percentile of its own voxels; the image
    is smoothed by :data:`HALF_MAX_SIGMA` first, against noise. A mask drawn too tight (packed nuclei, whose
    neighbours' light makes the model call their rims background) grows back; one drawn too wide shrinks. Only
    labels whose peak stands :data:`HALF_MAX_GROWTH_CONTRAST` noise deviations above their background grow: for a
    label on plain background (a false positive) half its shell would pass at random.
    """
    from scipy import ndimage

    count = int(labels.max(initial=0))
    if count == 0:
        return labels > 0
    smoothed = ndimage.gaussian_filter(np.asarray(intensity, dtype=np.float32), [HALF_MAX_SIGMA / s for s in spacing])
    outside = labels == 0
    if not outside.any():  # one nucleus fills the volume: nothing to compare it with
        return ~outside
    distance, nearest = euclidean_distance(outside, spacing, indices=True)
    shell = outside & (distance <= HALF_MAX_SHELL)
    owners = np.zeros_like(labels)
    owners[shell] = labels[tuple(index[shell] for index in nearest)]
    del distance, nearest
    (background,) = _percentiles_per_label(smoothed, owners, count, [HALF_MAX_BACKGROUND])
    background[np.isnan(background)] = np.median(smoothed[outside])
    (peak,) = _percentiles_per_label(smoothed, labels, count, [HALF_MAX_PEAK])
    level = np.concatenate([[np.inf], background + 0.5 * (peak - background)]).astype(np.float32)
    noise = _shell_noise(np.asarray(intensity, dtype=np.float32) - smoothed, owners, count)
    grows = np.concatenate([[False], peak - background >= HALF_MAX_GROWTH_CONTRAST * noise])
    owners[~grows[owners]] = 0  # a label no brighter than the noise around it (no nucleus) only shrinks
    owners += labels  # each nucleus with its shell
    return smoothed >= level[owners]


def _shell_noise(residual: np.ndarray, owners: np.ndarray, count: int) -> np.ndarray:
    """Per label, the robust standard deviation (interquartile range / 1.349) of the image minus its smoothed
    self over its shell: the voxel-to-voxel noise there, whatever the illumination (NaN without a shell)."""
    low, high = _percentiles_per_label(residual, owners, count, [25.0, 75.0])
    return (high - low) / 1.349


def euclidean_distance(
    mask: np.ndarray, spacing: tuple[float, float, float], *, indices: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Distance of each voxel of ``mask`` to the nearest voxel outside it (float64) and, with ``indices``, that
    voxel's (3, z, y, x) coordinates (int32): :func:`scipy.ndimage.distance_transform_edt`, bit for bit, at
    about 20 bytes per voxel where scipy's peaks at about 50 (it holds three int32 and three float64 copies of
    the offsets at once); this is the peak of nucleus splitting, so of a streamed prediction's label phase."""
    from scipy import ndimage

    nearest = ndimage.distance_transform_edt(mask, sampling=spacing, return_distances=False, return_indices=True)
    squared = np.empty(mask.shape, dtype=np.float64)
    step = max(1, _SLAB_VOXELS // max(1, int(np.prod(mask.shape[1:]))))
    for start in range(0, mask.shape[0], step):
        part = slice(start, min(start + step, mask.shape[0]))
        grid = np.ogrid[part, : mask.shape[1], : mask.shape[2]]
        for axis in range(3):
            offset = (nearest[axis, part] - grid[axis].astype(np.int32)).astype(np.float64)
            offset *= spacing[axis]
            offset *= offset
            if axis == 0:
                squared[part] = offset
            else:
                squared[part] += offset
    return np.sqrt(squared, out=squared), (nearest if indices else None)


def typical_volume(labels: np.ndarray) -> float:
    """The voxel count of the label holding the median labelled voxel (0 without labels).

    Small fragments, however many, hold few voxels, so they barely move it; the median label would follow them.
    """
    sizes = np.bincount(labels.ravel())[1:]
    return typical_volume_of(*size_counts(sizes))


def size_counts(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct nucleus sizes (voxels, > 0) and how many nuclei have each: a compact histogram."""
    sizes = np.asarray(sizes, dtype=np.int64)
    return np.unique(sizes[sizes > 0], return_counts=True)


def typical_volume_of(sizes: np.ndarray, counts: np.ndarray) -> float:
    """:func:`typical_volume` from a histogram of nucleus sizes (which may hold a size more than once)."""
    sizes, counts = np.asarray(sizes, dtype=np.int64), np.asarray(counts, dtype=np.int64)
    if sizes.size == 0:
        return 0.0
    order = np.argsort(sizes, kind="stable")
    sizes, counts = sizes[order], counts[order]
    cumulative = np.cumsum(sizes * counts)
    return float(sizes[np.searchsorted(cumulative, cumulative[-1] / 2)])


def table_rows(labels: np.ndarray, totals: dict[str, np.ndarray]) -> np.ndarray:
    """Table rows (float, :data:`COLUMNS` order) from per-nucleus totals, one entry per label: ``voxels``,
    coordinate sums ``sum_z/y/x``, box ``start_z/y/x`` and ``stop_z/y/x``, and summed ``intensity``."""
    voxels = totals["voxels"]
    safe = np.maximum(voxels, 1)
    columns = {"label": labels, "voxels": voxels, "mean_intensity": totals["intensity"] / safe}
    for name in "zyx":
        columns[f"centroid_{name}"] = totals[f"sum_{name}"] / safe
        columns[f"bbox_{name}_start"] = totals[f"start_{name}"]
        columns[f"bbox_{name}_stop"] = totals[f"stop_{name}"]
    return np.stack([np.asarray(columns[c], dtype=np.float64) for c in COLUMNS], axis=1)


def measure(labels: np.ndarray, intensity: np.ndarray) -> pd.DataFrame:
    """The table of :class:`Instances` for a label image with labels 1..N and an intensity image."""
    import pandas as pd
    from scipy import ndimage

    count = int(labels.max(initial=0))
    flat = labels.ravel()
    voxels = np.bincount(flat, minlength=count + 1)[1:]
    rows: dict[str, np.ndarray] = {"label": np.arange(1, count + 1), "voxels": voxels}
    for axis, name in enumerate("zyx"):
        coordinate = np.indices(labels.shape, sparse=True)[axis]
        sums = np.bincount(flat, weights=np.broadcast_to(coordinate, labels.shape).ravel(), minlength=count + 1)
        rows[f"centroid_{name}"] = sums[1:] / np.maximum(voxels, 1)
    boxes = ndimage.find_objects(labels, max_label=count)
    for axis, name in enumerate("zyx"):
        rows[f"bbox_{name}_start"] = np.array([box[axis].start for box in boxes], dtype=np.int64)
    for axis, name in enumerate("zyx"):
        rows[f"bbox_{name}_stop"] = np.array([box[axis].stop for box in boxes], dtype=np.int64)
    sums = np.bincount(flat, weights=intensity.ravel().astype(np.float64), minlength=count + 1)
    rows["mean_intensity"] = sums[1:] / np.maximum(voxels, 1)
    return pd.DataFrame({column: rows[column] for column in COLUMNS})


def _remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Drop labels under ``min_size`` voxels, number the rest 1..N, in the smallest fitting dtype."""
    sizes = np.bincount(labels.ravel())
    keep = sizes >= max(min_size, 1)
    keep[0] = False
    lookup = np.zeros(sizes.size, dtype=np.int64)
    lookup[keep] = np.arange(1, int(keep.sum()) + 1)
    dtype = np.uint16 if keep.sum() <= np.iinfo(np.uint16).max else np.uint32
    return lookup.astype(dtype)[labels]


def _percentiles_per_label(
    values: np.ndarray, labels: np.ndarray, count: int, percentiles: Sequence[float]
) -> list[np.ndarray]:
    """Each of ``percentiles`` of ``values`` over each label 1..count (the lower nearest rank), from one sort;
    NaN for an absent label."""
    inside = labels > 0
    owners = labels[inside]
    ordered = values[inside][np.lexsort((values[inside], owners))]
    sizes = np.bincount(owners, minlength=count + 1)[1:]
    present = sizes > 0
    found = []
    for percentile in percentiles:
        ranks = np.cumsum(sizes) - sizes + np.floor(percentile / 100 * np.maximum(sizes - 1, 0)).astype(np.int64)
        result = np.full(count, np.nan)
        result[present] = ordered[ranks[present]]
        found.append(result)
    return found


def relative_spacing(voxel_size: Sequence[float] | None) -> tuple[float, float, float]:
    """A (z, y, x) voxel size in units of its finest side ((1, 1, 1) for None): what splitting and smoothing
    scale by, since only the ratios matter."""
    if voxel_size is None:
        return (1.0, 1.0, 1.0)
    sizes = [float(v) for v in voxel_size]
    if len(sizes) != 3 or not all(np.isfinite(v) and v > 0 for v in sizes):
        raise UserError(f"voxel size {tuple(voxel_size)}: give three positive numbers (z, y, x)")
    finest = min(sizes)
    return (sizes[0] / finest, sizes[1] / finest, sizes[2] / finest)


def _ellipsoid(radius: float, spacing: tuple[float, float, float]) -> np.ndarray:
    """A footprint holding the voxels within ``radius`` (physical units of the finest side) of its centre."""
    half = [max(int(radius / s), 0) for s in spacing]
    grid = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    return sum((g * s) ** 2 for g, s in zip(grid, spacing, strict=True)) <= radius**2 + 1e-9

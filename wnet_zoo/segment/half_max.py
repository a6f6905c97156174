"""The half-max boundary: each nucleus's extent where its smoothed intensity is halfway between its
background and its peak.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np

from wnet_zoo.segment import parallel

HALF_MAX_SIGMA = 1.0  # smoothing of the image before levels are read, in units of the finest voxel side
HALF_MAX_EDGE_SIGMAS = (0.5, 0.75, 1.0)  # smoothings an edge may be read at (none above HALF_MAX_SIGMA)
HALF_MAX_EDGE_CONTRAST = 10.0  # an edge is read at the least smoothing leaving peak - background this x its noise
HALF_MAX_SHELL = 3.0  # a nucleus's surroundings, where its boundary may move out to: outside the mask within this
HALF_MAX_BACKGROUND = 10.0  # a nucleus's background level: this percentile of its smoothed surroundings
HALF_MAX_PEAK = 90.0  # a nucleus's own level: this percentile of its smoothed intensity
HALF_MAX_GROWTH_CONTRAST = 1.0  # a boundary moves out only where peak - background is this x the shell's noise


def half_max_foreground(
    labels: np.ndarray,
    intensity: np.ndarray,
    spacing: tuple[float, float, float],
    edge_sigmas: Sequence[float] = HALF_MAX_EDGE_SIGMAS,
    threads: int = 1,
    within: np.ndarray | None = None,
    reach: np.ndarray | None = None,
) -> np.ndarray:
    """The voxels of each labelled nucleus and of its surroundings whose smoothed intensity is at least halfway
    from those surroundings to the nucleus's peak (bool): each boundary moves in, or out by up to
    :data:`HALF_MAX_SHELL`, to where the intensity crosses half its maximum.

    A nucleus's surroundings are the unlabelled voxels within :data:`HALF_MAX_SHELL` of it and nearer to it than to
    any other nucleus; its background is their :data:`HALF_MAX_BACKGROUND` percentile (the median of all
    unlabelled voxels when it has none), its peak the :data:`HALF_MAX_PEAK` percentile of its own voxels, both read
    on the image smoothed by :data:`HALF_MAX_SIGMA`, against noise. Its edge is then read on the least smoothed of
    ``edge_sigmas`` (none above :data:`HALF_MAX_SIGMA`) whose remaining noise leaves peak - background
    :data:`HALF_MAX_EDGE_CONTRAST` times above it: smoothing moves the half-max surface of a small convex nucleus
    inwards (by a voxel for a radius of 3 to 4 at a sigma of 1) and fills the necks between packed ones, so a
    nucleus that stands well above the noise is smoothed less, a noisy one as much as before. A mask drawn too tight
    (packed nuclei, whose neighbours' light makes the model call their rims background) grows back; one drawn too
    wide shrinks. Only labels whose peak stands :data:`HALF_MAX_GROWTH_CONTRAST` noise deviations above their
    background grow: for a label on plain background (a false positive) half its shell would pass at random.
    The smoothings and the search for each voxel's nearest nucleus run on up to ``threads`` threads. With
    ``within`` (bool), no boundary moves beyond it; a bool ``reach`` of the labels' shape is filled with where the
    boundaries could lie (every nucleus and its surroundings).
    """
    count = int(labels.max(initial=0))
    if count == 0:
        if reach is not None:
            reach[...] = False
        return np.zeros(labels.shape, dtype=bool)
    intensity = np.asarray(intensity, dtype=np.float32)
    smoothed = parallel.gaussian(intensity, [HALF_MAX_SIGMA / s for s in spacing], threads)
    outside = labels == 0
    if not outside.any():  # one nucleus fills the volume: nothing to compare it with
        if reach is not None:
            reach[...] = True
        return ~outside if within is None else within.copy()
    owners = parallel.nearest_labels(labels, spacing, threads, reach=HALF_MAX_SHELL)
    shell = owners > 0
    if reach is not None:
        np.logical_or(shell, ~outside, out=reach)
    (background,) = _percentiles_per_label(smoothed, owners, count, [HALF_MAX_BACKGROUND])
    background[np.isnan(background)] = np.median(smoothed[outside])
    (peak,) = _percentiles_per_label(smoothed, labels, count, [HALF_MAX_PEAK])
    level = np.concatenate([[np.inf], background + 0.5 * (peak - background)]).astype(np.float32)
    noise = _shell_noise(intensity - smoothed, owners, count)
    grows = np.concatenate([[False], peak - background >= HALF_MAX_GROWTH_CONTRAST * noise])
    owners[~grows[owners]] = 0  # a label no brighter than the noise around it (no nucleus) only shrinks
    owners += labels  # each nucleus with its shell
    edge_sigma = np.concatenate([[HALF_MAX_SIGMA], _edge_sigmas(peak - background, noise, spacing, edge_sigmas)])
    foreground = smoothed >= level[owners]
    del smoothed
    for sigma in edge_sigmas:
        if sigma == HALF_MAX_SIGMA or not (edge_sigma == sigma).any():
            continue
        region = (edge_sigma == sigma)[owners]
        edge = parallel.gaussian(intensity, [sigma / s for s in spacing], threads)
        foreground[region] = edge[region] >= level[owners[region]]
        del edge, region
    if within is not None:
        foreground &= within
    return foreground


def _edge_sigmas(
    contrast: np.ndarray, noise: np.ndarray, spacing: tuple[float, float, float], sigmas: Sequence[float]
) -> np.ndarray:
    """Per label, the least of ``sigmas`` at which ``contrast`` is at least
    :data:`HALF_MAX_EDGE_CONTRAST` x the ``noise`` left by that smoothing; :data:`HALF_MAX_SIGMA` where none is
    (or the noise is unknown)."""
    chosen = np.full(contrast.shape, HALF_MAX_SIGMA)
    with np.errstate(invalid="ignore", divide="ignore"):
        for sigma in sorted((s for s in sigmas if s <= HALF_MAX_SIGMA), reverse=True):
            clear = contrast >= HALF_MAX_EDGE_CONTRAST * noise * _noise_left(sigma, tuple(map(float, spacing)))
            chosen[clear] = sigma
    return chosen


@cache
def _noise_left(sigma: float, spacing: tuple[float, ...]) -> float:
    """The standard deviation of unit white noise after the Gaussian smoothing ``sigma`` (in units of the finest
    voxel side) as scipy applies it: the root of the sum of the squared kernel weights, axis by axis."""
    from scipy import ndimage

    left = 1.0
    for side in spacing:
        impulse = np.zeros(8 * int(np.ceil(sigma / side)) + 1)
        impulse[impulse.size // 2] = 1.0
        left *= float(np.sqrt(np.sum(ndimage.gaussian_filter1d(impulse, sigma / side) ** 2)))
    return left


def _shell_noise(residual: np.ndarray, owners: np.ndarray, count: int) -> np.ndarray:
    """Per label, the robust standard deviation (interquartile range / 1.349) of the image minus its smoothed
    self over its shell: the voxel-to-voxel noise there, whatever the illumination (NaN without a shell)."""
    low, high = _percentiles_per_label(residual, owners, count, [25.0, 75.0])
    return (high - low) / 1.349


def _percentiles_per_label(
    values: np.ndarray, labels: np.ndarray, count: int, percentiles: Sequence[float]
) -> list[np.ndarray]:
    """Each of ``percentiles`` of ``values`` over each label 1..count (the lower nearest rank), from one sort;
    NaN for an absent label."""
    inside = labels > 0
    owners = labels[inside]
    ordered = _sorted_within_labels(values[inside], owners)
    sizes = np.bincount(owners, minlength=count + 1)[1:]
    present = sizes > 0
    found = []
    for percentile in percentiles:
        ranks = np.cumsum(sizes) - sizes + np.floor(percentile / 100 * np.maximum(sizes - 1, 0)).astype(np.int64)
        result = np.full(count, np.nan)
        result[present] = ordered[ranks[present]]
        found.append(result)
    return found


def _sorted_within_labels(values: np.ndarray, owners: np.ndarray) -> np.ndarray:
    """``values`` ordered by owner, then by value: ``values[np.lexsort((values, owners))]``.

    float32 values (the images here) go as one sort of 64-bit keys, the owner above the value's bits made to sort
    as unsigned integers (3 to 4 times faster than the two-key sort); other types take the two-key sort.
    """
    if values.dtype != np.float32 or owners.size == 0 or int(owners.max()) >= 1 << 32:
        return values[np.lexsort((values, owners))]
    bits = values.view(np.uint32)
    nan = np.isnan(values)
    if nan.any():  # every NaN as the positive one: after +inf, as lexsort puts them
        bits = np.where(nan, np.float32(np.nan).view(np.uint32), bits)
    sign = np.uint32(1 << 31)
    keys = np.where(bits & sign, ~bits, bits | sign).astype(np.uint64)  # negatives reversed, below positives
    keys |= owners.astype(np.uint64) << np.uint64(32)
    keys.sort()
    low = keys.astype(np.uint32)  # the value's bits (the owner is cut off)
    return np.where(low & sign, low & ~sign, ~low).view(np.float32)

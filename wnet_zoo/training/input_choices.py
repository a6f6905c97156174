"""The data-driven choices of the model's input transform: log compression from the nuclei's brightness
spread, background subtraction from how much the background varies, smoothing from the noise.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence

import numpy as np

from wnet_zoo.errors import setting
from wnet_zoo.io.intensity import compress_intensities, subtract_background
from wnet_zoo.training.config import TrainConfig

NOISY = 4.0  # voxel-to-voxel noise on the 0..100 scale from which training smooths the model's input by default
NOISY_SIGMA = 1.0  # that smoothing's sigma, in voxels along the finest axis; doubled for each doubling of the noise
MAX_NOISY_SIGMA = 4.0  # up to this sigma


LOG = logging.getLogger("wnet_zoo")


def noise_level(volume: np.ndarray, samples: int = 1 << 24) -> float:
    """The voxel-to-voxel noise of a volume in its own units: the robust standard deviation (1.4826 x the
    median absolute deviation) of the differences between neighbours along x, over sqrt(2).

    Nuclei edges are a small share of all neighbour pairs, so the median reads the noise, not the content. On
    the 0..100 scale: 8.5 on the low-SNR phantom of ``benchmarks/phantoms.py``, 4 to 6.5 on its packed,
    low-contrast and tissue settings, 0.2 to 2.8 on the others, 0.7 and 0.9 on CellSeg3D's example volumes
    (``benchmarks/results/input_choices.json``). Reads every n-th z plane for at most ``samples``
    differences.
    """
    if volume.ndim != 3 or volume.shape[2] < 2 or volume.size == 0:
        return 0.0
    per_plane = volume.shape[1] * (volume.shape[2] - 1)
    step = max(1, -(-volume.shape[0] * per_plane // samples))
    differences = np.diff(np.asarray(volume[::step], dtype=np.float32), axis=2).ravel()
    deviation = np.median(np.abs(differences - np.median(differences)))
    return float(1.4826 * deviation / np.sqrt(2))


def auto_input_smoothing(noise: Sequence[float]) -> float:
    """The input smoothing training uses by default: :data:`NOISY_SIGMA` when the median volume's noise (on
    the 0..100 scale, see :func:`noise_level`) reaches :data:`NOISY`, twice that from twice :data:`NOISY`, and
    so on up to :data:`MAX_NOISY_SIGMA`; else 0.

    Why: SoftNCut weighs a voxel by ``exp(-(I - mean)^4 / intensity_sigma^2)``, so at CellSeg3D's intensity
    sigma of 1 only voxels within about one unit of their class's mean count; in noise of several units almost
    none do, and the encoder learns to follow the noise. On clean stacks smoothing costs edge detail. (The phantom
    runs that set these levels: ``benchmarks/README.md``.)
    """
    level = float(np.median(noise)) if noise else 0.0
    if level < NOISY:
        return 0.0
    return min(NOISY_SIGMA * 2.0 ** math.floor(math.log2(level / NOISY)), MAX_NOISY_SIGMA)


SPREAD = 2.5  # nuclei brightness spread (see brightness_spread) from which training compresses the model's input
MIN_OFFSET = 0.1  # the smallest log offset auto_input_log chooses, on the 0..100 scale
_MIN_OBJECTS = 5  # brightness_spread needs at least this many objects to tell a spread
_MIN_OBJECT_VOXELS = 27
_OBJECT_NOISE = 5.0  # objects stand this many noise standard deviations above the background


def otsu_split(values: np.ndarray) -> tuple[float, float] | None:
    """The level of a two-class (Otsu) split of ``values`` and how far apart the two classes' means lie; None for
    a constant array, or one whose range spans only a few float steps (nothing to split)."""
    from skimage.filters import threshold_otsu

    if float(values.max()) <= float(values.min()):
        return None
    try:
        level = float(threshold_otsu(values))
    except ValueError:  # a range of a few float steps, too narrow for its 256 bins: as good as constant
        return None
    above = values > level
    return level, float(values[above].mean() - values[~above].mean())


def background_level(volume: np.ndarray) -> float:
    """The intensity of the space between the nuclei: the median of the voxels below an Otsu split of the volume
    smoothed by one voxel.

    Why not the volume's median: where nuclei fill a third to a half of the volume (packed tissue) the median
    lies on the nuclei's dim rims, and nuclei only a few noise deviations above their surroundings do not stand
    above it. Where nuclei are sparse both read the same.
    """
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(np.asarray(volume, dtype=np.float32), 1.0)
    split = otsu_split(smooth)
    if split is None:
        return float(np.median(volume))
    return float(np.median(np.asarray(volume)[smooth <= split[0]]))


def brightness_spread(volume: np.ndarray) -> float:
    """How widely the brightness of the objects in a volume varies: the ratio of the 95th to the 25th
    percentile, over the objects, of their median intensity above the background (:func:`background_level`).

    Objects are the connected components of at least 27 voxels more than 5 noise standard deviations
    (:func:`noise_level`) above the background, so that nuclei count however dim beside bright ones; 1.0 when
    fewer than 5 are found (nothing to compare). On the 0..100 phantoms of ``benchmarks/phantoms.py``: 1.1 to
    1.8 where nuclei are alike (sparse, touching, anisotropic, dense and the tissue-like settings; low_snr has
    none that clear), 3.5 with uneven illumination, 7.0 with dim nuclei beside 8x brighter ones, 14.5 with
    over-exposed ones; 1.3 on CellSeg3D's example volumes.
    """
    from scipy import ndimage

    volume = np.asarray(volume, dtype=np.float32)
    background = background_level(volume)
    labels, _ = ndimage.label(volume > background + _OBJECT_NOISE * noise_level(volume))
    sizes = np.bincount(labels.ravel())
    objects = np.flatnonzero(sizes[1:] >= _MIN_OBJECT_VOXELS) + 1
    if objects.size < _MIN_OBJECTS:
        return 1.0
    levels = np.asarray(ndimage.median(volume - np.float32(background), labels, objects))
    levels = levels[levels > 0]
    if levels.size < _MIN_OBJECTS:
        return 1.0
    low, high = np.percentile(levels, [25, 95])
    return float(high / low)


def auto_input_log(volumes: Sequence[np.ndarray]) -> tuple[float, list[float]]:
    """The input compression training uses by default, and each volume's :func:`brightness_spread`.

    The offset is the median of the volumes' medians (their background level, at least :data:`MIN_OFFSET`)
    when the median spread reaches :data:`SPREAD`, else 0 (off).

    Why: SoftNCut weighs a voxel by ``exp(-(I - mean)^4 / intensity_sigma^2)`` with a class's mean over the
    patch, so nuclei far dimmer than the foreground's mean carry no weight in either class, and the encoder
    leaves them in the background (over-exposed nuclei leave the others at 5 on the 0..100 scale). A logarithm
    puts nuclei 10x apart in brightness within a few tens of units of each other, all clear of the background.
    (The phantom runs behind it: ``benchmarks/README.md``.)
    """
    spreads = [brightness_spread(v) for v in volumes]
    if not spreads or float(np.median(spreads)) < SPREAD:
        return 0.0, spreads
    background = float(np.median([np.median(v) for v in volumes]))
    return max(background, MIN_OFFSET), spreads


UNEVEN = 0.7  # background spread, in units of the nuclei's contrast, from which training subtracts the background
MIN_BACKGROUND_RADIUS = 2  # the subtraction's box radius, in voxels along the finest axis, is chosen in this range
MAX_BACKGROUND_RADIUS = 8
_SAMPLE = (96, 256, 256)  # the background is judged on a central block of at most this size of each volume


def nucleus_radius(volume: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """The radius (voxels along the finest axis) of the larger nuclei: the 90th percentile, over the objects of
    at least 27 voxels of an Otsu split of the volume flattened at the largest radius, of each object's largest
    inscribed distance (so that touching nuclei merged by the split still read as one nucleus's radius). 0 when
    nothing splits."""
    from scipy import ndimage

    flat, _ = subtract_background(volume, background_radius_for(MAX_BACKGROUND_RADIUS, spacing))
    split = otsu_split(flat)
    if split is None:
        return 0.0
    inside = flat > split[0]
    labels, count = ndimage.label(inside)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    depth = ndimage.distance_transform_edt(inside, sampling=np.asarray(spacing) / min(spacing))
    deepest = np.asarray(ndimage.maximum(depth, labels, np.arange(1, count + 1)))[sizes >= _MIN_OBJECT_VOXELS]
    return float(np.percentile(deepest, 90)) if deepest.size else 0.0


def background_unevenness(volume: np.ndarray, radius: Sequence[int]) -> float:
    """How much the background varies against how far the nuclei stand above it: the 5th-95th percentile range of
    the background :func:`~wnet_zoo.io.intensity.subtract_background` finds, over the difference of the class
    means of an Otsu split of the volume less that background. 0.0 to 0.5 on the phantoms of
    ``benchmarks/phantoms.py`` whose background is flat (illumination that fades scales the nuclei, not the
    background), 0.2 on CellSeg3D's example volumes, 0.8 with autofluorescence as strong as the nuclei's contrast.
    """
    flat, background = subtract_background(volume, radius)
    split = otsu_split(flat)
    if split is None:
        return 0.0
    contrast = split[1]
    low, high = np.percentile(background, [5, 95])
    return float((high - low) / contrast) if contrast > 0 else 0.0


def auto_input_background(
    volumes: Sequence[np.ndarray], spacing: tuple[float, float, float]
) -> tuple[int, list[float], float]:
    """The background subtraction training uses by default: its box radius (voxels along the finest axis, 0: off),
    each volume's :func:`background_unevenness` and the nuclei's radius (:func:`nucleus_radius`, the median over
    the volumes), each judged on a central block of at most 96 x 256 x 256 voxels.

    On where the median unevenness reaches :data:`UNEVEN`, with a radius of the nuclei's rounded up (a box wider
    than 90 % of them removes them wholly from the background it finds), at least :data:`MIN_BACKGROUND_RADIUS`;
    off where that radius would exceed :data:`MAX_BACKGROUND_RADIUS` (nuclei too large for a patch to hold the
    box), and off on a flat background.

    Why: SoftNCut and the reconstruction group voxels by intensity, so where autofluorescence or cytoplasm varies
    as much as the nuclei stand above it, the encoder learns the background's bright regions as foreground. The
    opening is the background a nucleus-sized box sees, so subtracting it leaves the nuclei on a flat floor.
    (The phantom runs behind it: ``benchmarks/README.md``.)
    """
    samples = [_central(v) for v in volumes]
    if not samples:
        return 0, [], 0.0
    nucleus = float(np.median([nucleus_radius(v, spacing) for v in samples]))
    radius = max(MIN_BACKGROUND_RADIUS, math.ceil(nucleus))
    if radius > MAX_BACKGROUND_RADIUS:
        return 0, [], nucleus
    unevenness = [background_unevenness(v, background_radius_for(radius, spacing)) for v in samples]
    return (radius if float(np.median(unevenness)) >= UNEVEN else 0), unevenness, nucleus


def background_radius_for(radius: int | None, spacing: tuple[float, float, float]) -> tuple[int, int, int]:
    """The model's (z, y, x) background box radius in voxels for ``radius`` finest-axis voxels, rounded up (a box
    at least as wide as the nuclei on every axis)."""
    if not radius:
        return (0, 0, 0)
    finest = min(spacing)
    return tuple(max(1, math.ceil(radius * finest / s - 1e-9)) for s in spacing)  # type: ignore[return-value]


def _central(volume: np.ndarray) -> np.ndarray:
    start = [max(0, (n - m) // 2) for n, m in zip(volume.shape, _SAMPLE, strict=True)]
    return np.asarray(volume[tuple(slice(s, s + m) for s, m in zip(start, _SAMPLE, strict=True))], dtype=np.float32)


def input_sigma_for(smoothing: float | None, spacing: tuple[float, float, float]) -> tuple[float, float, float]:
    """The model's (z, y, x) input smoothing in voxels for a sigma of ``smoothing`` finest-axis voxels."""
    return (
        (0.0, 0.0, 0.0) if not smoothing else (smoothing / spacing[0], smoothing / spacing[1], smoothing / spacing[2])
    )


def choose_input_transform(
    config: TrainConfig, volumes: list[np.ndarray], spacing: tuple[float, float, float]
) -> TrainConfig:
    """``config`` with ``input_log``, ``input_background`` and then ``input_smoothing`` resolved where they are
    None (auto), from the 0..100 ``volumes`` of voxel ``spacing``: the compression from the nuclei's brightness
    spread (:func:`auto_input_log`), the background subtraction from the compressed volumes' background
    (:func:`auto_input_background`), the smoothing from the noise of the volumes as compressed
    (:func:`auto_input_smoothing`). ``config`` itself is left as it is."""
    input_log, input_smoothing = config.input_log, config.input_smoothing
    input_background = config.input_background
    if input_log is None:
        input_log, spreads = auto_input_log(volumes)
        if input_log:
            LOG.info(
                "nuclei differ widely in brightness (spread %s, see %s): the model compresses its input with a "
                "logarithm of offset %.3g (%s turns this off)",
                ", ".join(f"{v:.1f}" for v in spreads),
                setting("input_log"),
                input_log,
                setting("input_log", 0),
            )
    if input_background is None:
        compressed = [compress_intensities(_central(v), input_log) for v in volumes]
        input_background, unevenness, nucleus = auto_input_background(compressed, spacing)
        if input_background:
            LOG.info(
                "uneven background (%s x the nuclei's contrast, see %s): the model subtracts the background a box "
                "of radius %d voxels sees, nuclei being up to %.1f voxels in radius (%s turns this off)",
                ", ".join(f"{v:.2f}" for v in unevenness),
                setting("input_background"),
                input_background,
                nucleus,
                setting("input_background", 0),
            )
        elif not unevenness and nucleus:
            LOG.info(
                "nuclei of %.1f voxels in radius are too large for the default background subtraction; set %s "
                "if the background is uneven",
                nucleus,
                setting("input_background"),
            )
    if input_smoothing is None:
        noise = [noise_level(compress_intensities(v, input_log)) for v in volumes]
        input_smoothing = auto_input_smoothing(noise)
        if input_smoothing:
            LOG.info(
                "noisy images (voxel-to-voxel noise %s on the 0..100 scale): the model smooths its input by sigma "
                "%g voxel (%s turns this off)",
                ", ".join(f"{n:.1f}" for n in noise),
                input_smoothing,
                setting("input_smoothing", 0),
            )
    return dataclasses.replace(
        config, input_log=input_log, input_smoothing=input_smoothing, input_background=input_background
    )

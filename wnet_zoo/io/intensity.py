"""Intensity transforms shared by training and prediction: the 0..100 remap, the log compression and the
background subtraction, in numpy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def remap(volume: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """CellSeg3D's normalisation: ``(v - min) / (max - min) * 100`` over the whole volume, as float32.

    ``low`` and ``high`` override the minimum and maximum (for statistics computed elsewhere).
    """
    volume = np.asarray(volume, dtype=np.float32)
    low = float(volume.min()) if low is None else low
    high = float(volume.max()) if high is None else high
    return ((volume - np.float32(low)) / np.float32(high - low) * np.float32(100.0)).astype(np.float32, copy=False)


def compress_intensities(volume: np.ndarray, offset: float) -> np.ndarray:
    """The model's logarithmic input compression (:class:`wnet_zoo.model.wnet.InputCompression`) in numpy:
    ``100 * log1p(v / offset) / log1p(100 / offset)`` of a 0..100 volume, values below 0 counted as 0;
    the volume itself (as float32) at offset 0."""
    volume = np.asarray(volume, dtype=np.float32)
    if not offset:
        return volume
    scale = np.float32(100.0 / np.log1p(100.0 / offset))
    return np.log1p(np.maximum(volume, 0) * np.float32(1.0 / offset)) * scale


def subtract_background(volume: np.ndarray, radius: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The model's background subtraction (:class:`wnet_zoo.model.wnet.InputFlattening`) in numpy: the volume
    less its background, and that background, the opening by a box of ``2 * radius + 1`` voxels (z, y, x) of
    the volume smoothed by ``radius / max(radius)``, smoothed by ``radius / 2``. Each value depends on the
    voxels within :func:`background_reach` of it only."""
    from scipy import ndimage

    volume = np.asarray(volume, dtype=np.float32)
    finest = max(radius)
    smooth = ndimage.gaussian_filter(volume, [r / finest for r in radius], mode="nearest")
    box = [2 * r + 1 for r in radius]
    opened = ndimage.maximum_filter(ndimage.minimum_filter(smooth, size=box), size=box)
    background = ndimage.gaussian_filter(opened, [r / 2 for r in radius], mode="nearest")
    return volume - background, background


def background_reach(radius: Sequence[int]) -> tuple[int, int, int]:
    """How far (z, y, x voxels) :func:`subtract_background` reads around a voxel: the two Gaussians' kernel
    radii (scipy's ``int(4 * sigma + 0.5)``) and the opening's two box radii."""
    if not any(radius):
        return (0, 0, 0)
    finest = max(radius)
    return tuple(int(4 * r / finest + 0.5) + 2 * r + int(4 * r / 2 + 0.5) for r in radius)  # type: ignore[return-value]


def boundary_view(volume: np.ndarray, background: Sequence[int] | None = None) -> np.ndarray:
    """The image the half-max boundaries of a model's nuclei read: ``volume`` less its background where the model
    subtracts one with a box of radius ``background`` (:func:`subtract_background`), else ``volume`` itself.

    In linear intensity, also for a model that compresses its input: a blurred edge lies halfway up in linear
    intensity, while halfway up the log-compressed image lies lower and drew nuclei too wide once edges were read
    at less smoothing (``benchmarks/README.md``). The boundaries are the same under any increasing linear map of
    the intensities, and so is the subtraction, so the volume is not remapped to 0..100."""
    if background is not None and any(background):
        return subtract_background(volume, background)[0]
    return volume

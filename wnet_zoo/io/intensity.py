"""Intensity transforms shared by training and prediction: the 0..100 remap and the log compression."""

from __future__ import annotations

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


def compressed_view(
    volume: np.ndarray, offset: float, low: float | None = None, high: float | None = None
) -> np.ndarray:
    """The volume as a model compressing its input with ``offset`` sees it (:func:`compress_intensities` of
    :func:`remap`, ``low`` and ``high`` overriding the volume's own minimum and maximum), for the half-max
    boundaries of its nuclei; the volume itself at offset 0 (those boundaries are the same under any
    increasing linear map of the intensities, such as the remap)."""
    if not offset:
        return volume
    return compress_intensities(remap(volume, low, high), offset)

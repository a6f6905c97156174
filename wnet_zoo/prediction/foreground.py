"""Which output class holds the nuclei: the model's metadata, else the brightest class."""

from __future__ import annotations

import numpy as np

from wnet_zoo.errors import UserError, setting
from wnet_zoo.prediction.metadata import ModelMetadata

# How far a probability, and the sum of a voxel's, may stray from [0, 1] and 1: bf16 engines keep ~3 digits
PROBABILITY_TOLERANCE = 0.05


def choose_foreground(
    probabilities: np.ndarray, volume: np.ndarray, metadata: ModelMetadata, override: int | None = None
) -> tuple[int, str]:
    """The nuclei class and where it came from: ``override`` (``"user"``), the exporter's ``"metadata"``, or
    ``"intensity"``: the class whose voxels (by arg-max) have the highest mean input intensity."""
    classes = probabilities.shape[0]
    voxels = sums = np.zeros(classes)
    if override is None and _metadata_class(metadata, classes) is None:
        winner = probabilities.argmax(axis=0).ravel()
        voxels = np.bincount(winner, minlength=classes)
        sums = np.bincount(winner, weights=np.asarray(volume, dtype=np.float64).ravel(), minlength=classes)
    return foreground_from_totals(voxels, sums, metadata, override)


def foreground_from_totals(
    voxels: np.ndarray, sums: np.ndarray, metadata: ModelMetadata, override: int | None = None
) -> tuple[int, str]:
    """:func:`choose_foreground` from per-class totals: voxels won by each class (arg-max) and their summed
    input intensity (the streaming executor adds these up block by block)."""
    classes = len(voxels)
    if override is not None:
        if not 0 <= override < classes:
            raise UserError(f"{setting('foreground_class', override)}: the model has classes 0..{classes - 1}")
        return override, "user"
    known = _metadata_class(metadata, classes)
    if known is not None:
        return known, "metadata"
    means = np.where(voxels > 0, sums / np.maximum(voxels, 1), -np.inf)
    return int(np.argmax(means)), "intensity"


def _metadata_class(metadata: ModelMetadata, classes: int) -> int | None:
    known = metadata.foreground_class
    return known if known is not None and 0 <= known < classes else None

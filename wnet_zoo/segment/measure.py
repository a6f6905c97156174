"""Per-nucleus measurements (volume, centroid, intensity) in one table layout for both prediction paths."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

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


def label_totals(labels: np.ndarray, intensity: np.ndarray, offset: Sequence[int] = (0, 0, 0)) -> dict[str, np.ndarray]:
    """Per label 1..n of ``labels``: ``voxels``, coordinate sums ``sum_z/y/x``, box ``start_z/y/x`` and
    ``stop_z/y/x`` (0 for a label absent here) and summed ``intensity``; coordinates shifted by ``offset`` (a
    block's corner in the volume). Totals of the blocks of one nucleus add up to the whole nucleus's."""
    from scipy import ndimage

    count = int(labels.max(initial=0))
    flat = labels.ravel()
    totals = {"voxels": np.bincount(flat, minlength=count + 1)[1:].astype(np.int64)}
    grids = np.indices(labels.shape, sparse=True)
    for axis, name in enumerate("zyx"):
        coordinate = np.broadcast_to(grids[axis] + offset[axis], labels.shape).ravel()
        totals[f"sum_{name}"] = np.bincount(flat, weights=coordinate, minlength=count + 1)[1:]
    boxes = ndimage.find_objects(labels, max_label=count)
    for axis, name in enumerate("zyx"):
        totals[f"start_{name}"] = np.array([b[axis].start + offset[axis] if b else 0 for b in boxes], dtype=np.int64)
        totals[f"stop_{name}"] = np.array([b[axis].stop + offset[axis] if b else 0 for b in boxes], dtype=np.int64)
    weights = intensity.ravel().astype(np.float64)
    totals["intensity"] = np.bincount(flat, weights=weights, minlength=count + 1)[1:]
    return totals


def measure(labels: np.ndarray, intensity: np.ndarray) -> pd.DataFrame:
    """The table of :class:`~wnet_zoo.segment.nuclei.Instances` for a label image with labels 1..N and an
    intensity image (counts and boxes as integers)."""
    import pandas as pd

    totals = label_totals(labels, intensity)
    voxels = totals["voxels"]
    safe = np.maximum(voxels, 1)
    rows: dict[str, np.ndarray] = {"label": np.arange(1, len(voxels) + 1), "voxels": voxels}
    for name in "zyx":
        rows[f"centroid_{name}"] = totals[f"sum_{name}"] / safe
        rows[f"bbox_{name}_start"] = totals[f"start_{name}"]
        rows[f"bbox_{name}_stop"] = totals[f"stop_{name}"]
    rows["mean_intensity"] = totals["intensity"] / safe
    return pd.DataFrame({column: rows[column] for column in COLUMNS})

"""Per-nucleus measurements (volume, centroid, intensity) in one table layout for both prediction paths."""

from __future__ import annotations

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

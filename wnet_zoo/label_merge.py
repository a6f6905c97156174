"""One label per nucleus across block borders: merge the blocks' own labels, then renumber.

Each block labels its nuclei inside itself plus an instance halo, so near its faces it sees the same
nuclei its neighbours see. At a face shared with the next block it records the voxels where its own label
continues into the next block's first plane (same label on both sides, by its own reckoning); the label the
next block gave those voxels is then read from the work store. Every such pair is one nucleus: pairs are
joined into connected components, whose sizes decide which are kept (``min_size``), numbered 1..N in
block order. Touching nuclei stay apart: across their contact the block already sees two labels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .blocks import FACE_AXES, BlockGrid
from .instances import COLUMNS

if TYPE_CHECKING:
    import pandas as pd

Summary = dict[str, np.ndarray]


@dataclass
class MergedLabels:
    """The merge's outcome: per block, a lookup from its own labels (0..n) to the final ones, and the table."""

    lookups: list[np.ndarray]
    table: pd.DataFrame
    dtype: np.dtype

    @property
    def count(self) -> int:
        """Nuclei kept."""
        return len(self.table)


def merge_labels(
    grid: BlockGrid, summaries: Sequence[Summary], first_plane: Callable[[int, int], np.ndarray], min_size: int
) -> MergedLabels:
    """Join labels that continue across block faces and drop nuclei under ``min_size`` voxels.

    Args:
        grid: the labelling blocks.
        summaries: per block, what :func:`wnet_zoo.blocks.label` returned.
        first_plane: ``(block, axis)`` -> the block's own labels on its first plane along ``axis``.
        min_size: smallest nucleus kept, in voxels.
    """
    import pandas as pd
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    counts = np.array([int(s["count"]) for s in summaries], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    total = int(counts.sum())
    sources, targets = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for index, summary in enumerate(summaries):
        for axis in FACE_AXES:
            after = grid.neighbour(index, axis)
            if after is None or f"face{axis}_labels" not in summary or not summary[f"face{axis}_labels"].size:
                continue
            theirs = first_plane(after, axis).ravel()[summary[f"face{axis}_positions"]].astype(np.int64)
            joined = theirs > 0
            sources.append(offsets[index] + summary[f"face{axis}_labels"].astype(np.int64)[joined])
            targets.append(offsets[after] + theirs[joined])
    rows, columns = np.concatenate(sources), np.concatenate(targets)
    graph = coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, columns)), shape=(total + 1, total + 1))
    _, component = connected_components(graph, directed=False)  # node 0 (background) stays alone

    def per_component(name: str) -> np.ndarray:
        return np.concatenate([np.zeros(1), *(s[name] for s in summaries)]) if total else np.zeros(1)

    nodes = component.size
    voxels = np.bincount(component, weights=per_component("voxels"), minlength=nodes)
    keep = voxels >= max(min_size, 1)
    keep[component[0]] = False
    final = np.zeros(nodes, dtype=np.int64)
    final[keep] = np.arange(1, int(keep.sum()) + 1)
    label_of_node = final[component]
    lookups = [
        np.concatenate([[0], label_of_node[offsets[i] + 1 : offsets[i] + counts[i] + 1]]) for i in range(len(summaries))
    ]
    rows_out: dict[str, np.ndarray] = {
        "label": np.arange(1, int(keep.sum()) + 1),
        "voxels": voxels[keep].astype(np.int64),
    }
    for name in "zyx":
        sums = np.bincount(component, weights=per_component(f"sum_{name}"), minlength=nodes)
        rows_out[f"centroid_{name}"] = sums[keep] / voxels[keep]
    for name in "zyx":
        starts = np.full(nodes, np.iinfo(np.int64).max)
        np.minimum.at(starts, component, per_component(f"start_{name}").astype(np.int64) if total else [0])
        rows_out[f"bbox_{name}_start"] = starts[keep]
    for name in "zyx":
        stops = np.zeros(nodes, dtype=np.int64)
        np.maximum.at(stops, component, per_component(f"stop_{name}").astype(np.int64) if total else [0])
        rows_out[f"bbox_{name}_stop"] = stops[keep]
    intensity = np.bincount(component, weights=per_component("intensity"), minlength=nodes)
    rows_out["mean_intensity"] = intensity[keep] / voxels[keep]
    dtype = np.dtype(np.uint16 if keep.sum() <= np.iinfo(np.uint16).max else np.uint32)
    return MergedLabels(lookups, pd.DataFrame({column: rows_out[column] for column in COLUMNS}), dtype)

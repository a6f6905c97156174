"""One label per nucleus across block borders: merge the blocks' edge labels, then number every nucleus.

Each block labels its nuclei inside itself plus an instance halo, so near its faces it sees the same nuclei
its neighbours see. At a face shared with the next block it records where its own labels continue into the
next block's first plane (same label on both sides, by its own reckoning); pairing those with the labels the
next block gave the same voxels joins the two halves of a nucleus. Touching nuclei stay apart: across their
contact the block already sees two labels.

Only labels touching a shared face (``edge`` labels) take part, so the merge holds data in proportion to the
blocks' surfaces, not to the volume or to the number of nuclei. Nuclei are numbered in block order: first a
block's own inner nuclei (numbered by the block itself), then the merged nuclei that start in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from wnet_zoo.prediction.stream.jobs import FACE_AXES, BlockGrid
from wnet_zoo.segment.measure import table_rows, typical_volume_of
from wnet_zoo.segment.options import NucleiOptions

Summary = dict[str, np.ndarray]


@dataclass
class MergedLabels:
    """Per block, what its relabelling needs (see :func:`wnet_zoo.prediction.stream.blocks.relabel`); the nuclei
    kept."""

    extras: list[dict[str, Any]]
    count: int
    min_size: int

    @property
    def dtype(self) -> np.dtype:
        """The smallest label type that holds every nucleus: uint16, or uint32 beyond 65535."""
        return np.dtype(np.uint16 if self.count <= np.iinfo(np.uint16).max else np.uint32)


def merge_labels(
    grid: BlockGrid, labelled: Sequence[Summary], paired: Sequence[Summary], nuclei: NucleiOptions
) -> MergedLabels:
    """Join edge labels that continue across block faces; number all nuclei that are not too small.

    The smallest nucleus kept follows ``nuclei`` (its ``min_size``, and its ``relative_min_size`` of the typical
    nucleus volume over the whole volume: the blocks' inner nuclei and the merged ones).

    Args:
        grid: the labelling blocks.
        labelled: per block, what :func:`wnet_zoo.prediction.stream.blocks.label` returned.
        paired: per block, what :func:`wnet_zoo.prediction.stream.blocks.pairs` returned.
        nuclei: the splitting settings.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    counts = np.array([int(s["count"]) for s in labelled], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    edges = [s["edge"].astype(np.int64) for s in labelled]
    nodes = np.concatenate([offsets[i] + e for i, e in enumerate(edges)]) if edges else np.zeros(0, np.int64)
    home = np.repeat(np.arange(len(labelled)), [e.size for e in edges])

    def edge_values(name: str) -> np.ndarray:
        return np.concatenate([s[f"edge_{name}"] for s in labelled]).astype(np.float64)

    sources, targets = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for index, found in enumerate(paired):
        for axis in FACE_AXES:
            after = grid.neighbour(index, axis)
            if after is None or f"pairs{axis}" not in found:
                continue
            pairs = found[f"pairs{axis}"].reshape(-1, 2)
            sources.append(np.searchsorted(nodes, offsets[index] + pairs[:, 0]))
            targets.append(np.searchsorted(nodes, offsets[after] + pairs[:, 1]))
    rows, columns = np.concatenate(sources), np.concatenate(targets)
    graph = coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, columns)), shape=(nodes.size, nodes.size))
    _, component = connected_components(graph, directed=False)
    groups = int(component.max(initial=-1)) + 1
    voxels = np.bincount(component, weights=edge_values("voxels"), minlength=groups)
    first_node = np.full(groups, nodes.size)
    np.minimum.at(first_node, component, np.arange(nodes.size))
    starts_in = home[first_node] if groups else np.zeros(0, np.int64)
    sizes = np.concatenate([voxels.astype(np.int64), *(s["inner_sizes"] for s in labelled)])
    counts = np.concatenate([np.ones(groups, np.int64), *(s["inner_counts"] for s in labelled)])
    min_size = max(nuclei.min_size_for(typical_volume_of(sizes, counts)), 1)
    kept = voxels >= min_size

    table = _table(component, groups, voxels, edge_values)
    final = np.zeros(groups, dtype=np.int64)
    extras: list[dict[str, Any]] = []
    numbered = 0
    for index, summary in enumerate(labelled):
        mine = np.flatnonzero(kept & (starts_in == index))
        mine = mine[np.argsort(first_node[mine], kind="stable")]
        inside = int(summary["inner_counts"][summary["inner_sizes"] >= min_size].sum())
        final[mine] = numbered + inside + np.arange(1, mine.size + 1)
        rows = table[mine].copy()
        rows[:, 0] = final[mine]
        extras.append({"first": numbered, "rows": rows, "min_size": min_size})
        numbered += inside + mine.size
    edge_final = np.where(kept[component], final[component], 0) if groups else np.zeros(0, np.int64)
    for index, extra in enumerate(extras):
        extra["edge"] = edges[index]
        extra["edge_final"] = edge_final[home == index]
    return MergedLabels(extras, numbered, min_size)


def _table(component: np.ndarray, groups: int, voxels: np.ndarray, edge_values: Any) -> np.ndarray:
    """One row per merged nucleus in :data:`~wnet_zoo.segment.measure.COLUMNS` order (the label column left 0)."""
    totals = {"voxels": voxels}
    for name in ("sum_z", "sum_y", "sum_x", "intensity"):
        totals[name] = np.bincount(component, weights=edge_values(name), minlength=groups)
    for name in "zyx":
        totals[f"start_{name}"] = np.full(groups, np.inf)
        np.minimum.at(totals[f"start_{name}"], component, edge_values(f"start_{name}"))
        totals[f"stop_{name}"] = np.zeros(groups)
        np.maximum.at(totals[f"stop_{name}"], component, edge_values(f"stop_{name}"))
    return table_rows(np.zeros(groups), totals)

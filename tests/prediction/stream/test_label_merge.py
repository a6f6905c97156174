"""Merging nuclei cut by block borders, on a hand-built pair of blocks."""

from __future__ import annotations

import numpy as np

from wnet_zoo.prediction.stream.jobs import BlockGrid
from wnet_zoo.prediction.stream.label_merge import merge_labels
from wnet_zoo.segment.measure import COLUMNS
from wnet_zoo.segment.options import NucleiOptions


def _labelled(count, inner, edge, voxels, xs):
    summary = {"count": np.int64(count), "edge": np.array(edge, np.int64)}
    sizes, counts = np.unique(np.array(inner, np.int64), return_counts=True)
    summary |= {"inner_sizes": sizes, "inner_counts": counts}
    summary |= {"edge_voxels": np.array(voxels, np.int64), "edge_intensity": np.array(voxels, float) * 10}
    summary |= {f"edge_sum_{a}": np.zeros(len(edge)) for a in "zy"} | {
        "edge_sum_x": np.array([sum(x) for x in xs], float)
    }
    summary |= {f"edge_start_{a}": np.zeros(len(edge), np.int64) for a in "zy"}
    summary |= {f"edge_stop_{a}": np.ones(len(edge), np.int64) for a in "zy"}
    summary |= {"edge_start_x": np.array([min(x) for x in xs]), "edge_stop_x": np.array([max(x) + 1 for x in xs])}
    return summary


def test_a_nucleus_across_the_border_gets_one_label_and_touching_ones_stay_apart():
    # Two blocks of 2 voxels along x. Nucleus A lies over x 0..3 (cut by the border); nucleus B (x 0, 1) touches
    # nucleus C (x 2, 3) at the border. The right block also holds 2 inner nuclei of its own.
    grid = BlockGrid((1, 2, 4), (1, 2, 2))
    left = _labelled(2, [], [1, 2], [2, 2], [[0, 1], [0, 1]])  # A is its 1, B its 2
    right = _labelled(4, [3, 3], [1, 2], [2, 2], [[2, 3], [2, 3]])  # A is its 1, C its 2; 3 and 4 inside
    paired = [{"pairs2": np.array([[1, 1]])}, {}]  # only A continues across the face

    merged = merge_labels(grid, [left, right], paired, NucleiOptions(min_size=1, relative_min_size=0))
    assert merged.count == 5 and merged.min_size == 1 and merged.dtype == np.uint16
    first, second = merged.extras
    assert (first["first"], second["first"]) == (0, 2)  # the right block numbers its inner nuclei 3 and 4
    np.testing.assert_array_equal(first["edge_final"], [1, 2])
    np.testing.assert_array_equal(second["edge_final"], [1, 5])  # A joined to 1; C after the inner ones
    rows = {int(r[0]): dict(zip(COLUMNS, r, strict=True)) for r in np.concatenate([first["rows"], second["rows"]])}
    assert sorted(rows) == [1, 2, 5]
    assert rows[1]["voxels"] == 4 and rows[1]["centroid_x"] == 1.5 and rows[1]["mean_intensity"] == 10
    assert (rows[1]["bbox_x_start"], rows[1]["bbox_x_stop"]) == (0, 4)

    only_a = merge_labels(grid, [left, right], paired, NucleiOptions(min_size=3, relative_min_size=0))
    assert only_a.count == 3  # A (4 voxels, merged) and the 2 inner nuclei of 3
    np.testing.assert_array_equal(only_a.extras[0]["edge_final"], [1, 0])
    np.testing.assert_array_equal(only_a.extras[1]["edge_final"], [1, 0])

    # sizes 4 (A), 2 (B), 2 (C), 3, 3: the median voxel lies in a nucleus of 3, so 0.9 x 3 keeps sizes >= 2 ...
    relative = merge_labels(grid, [left, right], paired, NucleiOptions(min_size=1, relative_min_size=0.9))
    assert relative.min_size == 2 and relative.count == 5
    # ... and the inner nuclei are dropped with the rest when the volume's minimum rises above them
    only_a = merge_labels(grid, [left, right], paired, NucleiOptions(min_size=4, relative_min_size=0.5))
    assert only_a.min_size == 4 and only_a.count == 1
    assert [e["min_size"] for e in only_a.extras] == [4, 4]


def test_no_nuclei_at_all():
    grid = BlockGrid((2, 2, 2), (1, 2, 2))
    empty = _labelled(0, 0, [], [], [])
    merged = merge_labels(grid, [empty, empty], [{}, {}], NucleiOptions())
    assert merged.count == 0 and [e["first"] for e in merged.extras] == [0, 0]

"""Merging nuclei cut by block borders, on a hand-built pair of blocks."""

from __future__ import annotations

import numpy as np

from wnet_zoo.blocks import BlockGrid
from wnet_zoo.label_merge import merge_labels


def _summary(voxels, xs, face_labels, face_positions):
    count = len(voxels)
    summary = {"count": np.int64(count), "voxels": np.array(voxels, dtype=np.int64)}
    summary |= {f"sum_{a}": np.zeros(count) for a in "zy"} | {"sum_x": np.array([sum(x) for x in xs], float)}
    summary |= {f"start_{a}": np.zeros(count, np.int64) for a in "zy"} | {
        f"stop_{a}": np.ones(count, np.int64) for a in "zy"
    }
    summary |= {"start_x": np.array([min(x) for x in xs]), "stop_x": np.array([max(x) + 1 for x in xs])}
    summary["intensity"] = np.array(voxels, float) * 10
    if face_labels is not None:
        summary["face2_labels"] = np.array(face_labels, np.uint32)
        summary["face2_positions"] = np.array(face_positions, np.int64)
    return summary


def test_a_nucleus_across_the_border_gets_one_label_and_touching_ones_stay_apart():
    # One row of 4 voxels per y, two blocks of 2 along x. y=0: nucleus A over x 0..3 (cut by the border);
    # y=1: nucleus B (x 0, 1) touching nucleus C (x 2, 3) at the border.
    grid = BlockGrid((1, 2, 4), (1, 2, 2))
    left = _summary([2, 2], [[0, 1], [0, 1]], face_labels=[1], face_positions=[0])  # A continues, B does not
    right = _summary([2, 2], [[2, 3], [2, 3]], face_labels=None, face_positions=None)
    first_plane_of_right = np.array([[[1], [2]]])  # (z, y, 1): A is the right block's 1, C its 2

    merged = merge_labels(grid, [left, right], lambda block, axis: first_plane_of_right, min_size=1)
    assert merged.count == 3
    np.testing.assert_array_equal(merged.lookups[0], [0, 1, 2])
    np.testing.assert_array_equal(merged.lookups[1], [0, 1, 3])  # A joined to label 1, C is new
    table = merged.table.set_index("label")
    assert table.loc[1, "voxels"] == 4 and table.loc[1, "centroid_x"] == 1.5
    assert (table.loc[1, "bbox_x_start"], table.loc[1, "bbox_x_stop"]) == (0, 4)
    assert table.loc[1, "mean_intensity"] == 10 and merged.dtype == np.uint16

    only_a = merge_labels(grid, [left, right], lambda block, axis: first_plane_of_right, min_size=3)
    assert only_a.count == 1
    np.testing.assert_array_equal(only_a.lookups[0], [0, 1, 0])
    np.testing.assert_array_equal(only_a.lookups[1], [0, 1, 0])


def test_no_nuclei_at_all():
    grid = BlockGrid((2, 2, 2), (1, 2, 2))
    empty = {"count": np.int64(0)} | {k: np.zeros(0) for k in ("voxels", "intensity")}
    empty |= {f"{p}_{a}": np.zeros(0) for p in ("sum", "start", "stop") for a in "zyx"}
    merged = merge_labels(grid, [empty, empty], lambda block, axis: np.zeros((1, 2, 2)), min_size=10)
    assert merged.count == 0 and [list(lookup) for lookup in merged.lookups] == [[0], [0]]

"""The nucleus stages on several threads give the values of one thread, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from wnet_zoo.segment import parallel
from wnet_zoo.segment.geometry import euclidean_distance


def test_slabs_cover_the_depth_once_and_only_when_thick_enough():
    cores = parallel.slab_cores(100, 3, 4)
    assert [(c.start, c.stop) for c in cores] == [(0, 33), (33, 67), (67, 100)]
    assert len(parallel.slab_cores(20, 4, 4)) == 1  # two slabs of 10 planes: thinner than MIN_SLAB_DEPTH
    assert len(parallel.slab_cores(100, 8, 12)) == 2  # a deep halo: fewer, thicker slabs (4x the halo)


@pytest.mark.parametrize("sigmas", [(1.0, 1.0, 1.0), (0.4, 1.0, 1.3), (2.5, 0.5, 0.5)])
def test_gaussian_on_slabs_is_scipys_bit_for_bit(sigmas):
    volume = np.random.default_rng(0).normal(10.0, 3.0, (67, 20, 24)).astype(np.float32)
    theirs = ndimage.gaussian_filter(volume, sigmas)
    for threads in (1, 2, 3):
        ours = parallel.gaussian(volume, sigmas, threads)
        assert ours.dtype == np.float32 and np.array_equal(ours, theirs), threads


def _masks(shape: tuple[int, int, int]) -> list[np.ndarray]:
    """Blobs, one ball filling most of the volume, and a volume without background."""
    blobs = ndimage.gaussian_filter(np.random.default_rng(1).random(shape), 2) > 0.5
    z, y, x = np.indices(shape)
    ball = (z - shape[0] / 2) ** 2 + (y - shape[1] / 2) ** 2 / 4 + (x - shape[2] / 2) ** 2 / 4 < (shape[0] / 3) ** 2
    return [blobs, ball, np.ones(shape, dtype=bool)]


@pytest.mark.parametrize(
    "spacing",
    [(1.0, 1.0, 1.0), (2.0, 1.0, 1.0), (2.5, 1.0, 1.0), (1.0, 1.25, 1.5), (1.0, 4 / 3, 4 / 3), (1.7, 1.0, 1.3)],
)
def test_distance_is_scipys_in_float32_bit_for_bit(spacing):
    levels = np.random.default_rng(3)
    for mask in [*_masks((60, 30, 34)), _long_runs()]:
        theirs = euclidean_distance(mask, spacing)[0].astype(np.float32)
        as_counts = (mask * levels.integers(1, 4, mask.shape)).astype(np.uint8)  # any non-zero value is inside
        for threads in (1, 2, 3):
            ours = parallel.distance(as_counts, spacing, threads)
            assert ours.dtype == np.float32 and np.array_equal(ours, theirs), threads


def _long_runs() -> np.ndarray:
    """A mask whose lines run 300 voxels without background, along the last axis too: sums of sides that are not
    exact in float32 drift along them."""
    mask = np.ones((6, 20, 310), dtype=bool)
    mask[:, :, [0, -1]] = False
    mask[:, [0, -1], :] = False
    return mask


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 1.0, 1.0), (1.5, 1.0, 1.3)])
def test_nearest_labels_on_slabs_are_the_whole_volumes_where_they_are_wanted(spacing):
    rng = np.random.default_rng(2)
    shape = (120, 22, 26)
    # scattered labelled voxels on a grid: many voxels lie equally near two or more labels (ties)
    labels = np.where(rng.random(shape) < 0.01, rng.integers(1, 40, shape), 0).astype(np.int32)
    labels[:30] = 0  # none in the first 30 planes: far nearest labels, and a slab without any
    for plane in (57, 77):  # half planes 3 planes before slab edges (60 for 2 threads, 80 for 3): a halo of 3 needed
        labels[plane - 5 : plane + 8] = 0
        labels[plane, :, :13] = rng.integers(1, 40, (22, 13))
    distance, nearest = euclidean_distance(labels == 0, spacing, indices=True)
    theirs = np.where(labels == 0, labels[tuple(nearest)], 0)
    far = np.indices(shape)[0] < 12  # voxels whose nearest label lies 18 planes away or more
    middle = (np.indices(shape)[0] >= 30) & (distance <= 6.0)
    for threads in (1, 2, 3):
        assert len(parallel.slab_cores(shape[0], threads, 3)) == threads
        near = distance <= 3.0
        assert np.array_equal(parallel.nearest_labels(labels, spacing, threads, reach=3.0), np.where(near, theirs, 0))
        for where in (far, middle):
            assert np.array_equal(
                parallel.nearest_labels(labels, spacing, threads, where=where), np.where(where, theirs, 0)
            )
        assert np.array_equal(parallel.nearest_labels(labels, spacing, threads), theirs)
    assert not parallel.nearest_labels(np.zeros(shape, dtype=np.int32), spacing, 2).any()


def test_thread_map_keeps_the_order_of_the_items():
    items = list(range(103))
    assert parallel.thread_map(lambda i: i * i, items, 3) == [i * i for i in items]
    assert parallel.thread_map(lambda i: i, [], 3) == []

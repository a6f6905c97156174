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


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 1.0, 1.3)])
def test_distance_on_slabs_is_the_whole_volumes_where_the_background_is_near_or_far(spacing):
    rng = np.random.default_rng(1)
    shape = (100, 30, 34)
    blobs = ndimage.gaussian_filter(rng.random(shape), 2) > 0.5
    z, y, x = np.indices(shape)
    ball = (z - 50) ** 2 + (y - 15) ** 2 / 4 + (x - 17) ** 2 / 4 < 30**2  # nearest background beyond the halo
    solid = np.ones(shape, dtype=bool)
    solid[-1] = False  # the first slab holds no background at all
    for mask in (blobs, ball, solid):
        whole = euclidean_distance(mask, spacing)[0].astype(np.float32)
        for threads in (2, 3):
            assert len(parallel.slab_cores(shape[0], threads, parallel.DISTANCE_HALO)) == 2
            assert np.array_equal(parallel.distance(mask, spacing, threads), whole)
    assert euclidean_distance(ball, spacing)[0].max() > parallel.DISTANCE_HALO * spacing[0]


def test_thread_map_keeps_the_order_of_the_items():
    items = list(range(103))
    assert parallel.thread_map(lambda i: i * i, items, 3) == [i * i for i in items]
    assert parallel.thread_map(lambda i: i, [], 3) == []

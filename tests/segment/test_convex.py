"""The convex merge decides as its definition does: Qhull's defaults on every voxel corner of each label and pair."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.spatial
from scipy import ndimage
from skimage.segmentation import watershed

from wnet_zoo.segment.convex import CONVEX_MERGE, merge_convex

_CORNERS = np.indices((2, 2, 2)).reshape(3, -1).T


def _labyrinth(seed: int) -> np.ndarray:
    """Touching pieces of smoothed noise, cut by a watershed: pairs on both sides of the merge limit."""
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.normal(size=(36, 40, 40)), 2.5)
    mask = smooth > np.percentile(smooth, 45)
    peaks = (smooth == ndimage.maximum_filter(smooth, 5)) & mask
    markers, _ = ndimage.label(peaks)
    return watershed(-smooth, markers, mask=mask).astype(np.int32)


def _by_definition(labels: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    def volume(mask: np.ndarray) -> float:
        corners = (np.argwhere(mask)[:, None, :] + _CORNERS).reshape(-1, 3) * np.asarray(spacing)
        return scipy.spatial.ConvexHull(np.unique(corners, axis=0)).volume

    count = int(labels.max())
    parent = list(range(count + 1))

    def root(label: int) -> int:
        while parent[label] != label:
            label = parent[label]
        return label

    pairs = set()
    for axis in range(3):
        first = np.moveaxis(labels, axis, 0)[:-1]
        second = np.moveaxis(labels, axis, 0)[1:]
        touching = (first != second) & (first > 0) & (second > 0)
        low, high = np.minimum(first, second)[touching], np.maximum(first, second)[touching]
        pairs |= set(zip(low.tolist(), high.tolist(), strict=True))
    hulls = {label: volume(labels == label) for label in range(1, count + 1)}
    for a, b in sorted(pairs):
        if volume((labels == a) | (labels == b)) <= CONVEX_MERGE * (hulls[a] + hulls[b]) * (1 + 1e-9):
            parent[root(b)] = root(a)
    return np.array([root(label) for label in range(count + 1)])[labels]


def _same_partition(first: np.ndarray, second: np.ndarray) -> bool:
    pairs = np.unique(np.stack([first.ravel(), second.ravel()]), axis=1)
    return pairs.shape[1] == np.unique(first).size == np.unique(second).size


@pytest.mark.parametrize(("seed", "spacing"), [(3, (1.0, 1.0, 1.0)), (4, (1.1, 0.9, 0.7))])
def test_merge_decides_as_qhulls_defaults_on_every_corner(seed, spacing, monkeypatch):
    labels = _labyrinth(seed)
    expected = _by_definition(labels, spacing)
    fast_hulls_refused = []
    hull = scipy.spatial.ConvexHull

    def counting(points, qhull_options=None):
        try:
            return hull(points, qhull_options=qhull_options)
        except scipy.spatial.QhullError:
            fast_hulls_refused.append(qhull_options)
            raise

    monkeypatch.setattr(scipy.spatial, "ConvexHull", counting)
    for threads in (1, 2):
        merged = merge_convex(labels, spacing, threads=threads)
        assert merged.max() < labels.max()  # some pairs merged, and not all
        assert len(np.unique(expected)) > 2
        assert _same_partition(merged, expected), threads
    if seed == 4:  # coordinates with rounding: Qhull without merging gives up on a few sets, the defaults take them
        assert "Q0" in fast_hulls_refused

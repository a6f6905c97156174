"""Merging labels that one convex nucleus was cut into."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from wnet_zoo.segment import parallel

if TYPE_CHECKING:
    from scipy.spatial import ConvexHull

CONVEX_MERGE = 1.01  # touching labels merge when the convex hull of their union is at most this x their hulls' sum
CONVEX_MERGE_BRIGHTNESS = 0.1  # ... and their median intensities differ by at most this x the brighter one's contrast
CONVEX_MERGE_SURROUNDINGS = 3.0  # that contrast is over the unlabelled voxels within this of the pair's box


def merge_convex(
    labels: np.ndarray,
    spacing: tuple[float, float, float],
    ratio: float = CONVEX_MERGE,
    intensity: np.ndarray | None = None,
    brightness: float = CONVEX_MERGE_BRIGHTNESS,
    threads: int = 1,
) -> np.ndarray:
    """Merge each pair of touching labels whose union's convex hull is at most ``ratio`` times the sum of their
    own hulls' volumes (in ``labels``' dtype, numbered 1..n again; labels are only merged); with an
    ``intensity``, only where the two are alike in brightness too.

    A watershed cuts a convex nucleus in two along an uneven surface (across a plateau of the distance map), so
    the two parts' hulls overlap and their sum exceeds the union's hull; two touching nuclei leave a waist that
    their union's hull adds (two balls of 8 voxels radius: 20 % touching, 6.5 % pressed to 0.8 of their diameter
    apart). A flat cut through a voxelised nucleus adds 1 to 3 % and is left alone (how the ratio was chosen:
    ``benchmarks/README.md``). Decisions are taken on the labels as given, pair by pair, and
    merged pairs joined transitively. Labels whose voxels span no volume (flat) are left alone.

    Small nuclei pressed together keep little of their waist once blurred (the half-max boundary fills part of it),
    and their union can look as convex as one nucleus cut in two. Two nuclei rarely share a brightness, while the
    pieces of one do: with ``intensity``, a pair whose median intensities differ by more than
    :data:`CONVEX_MERGE_BRIGHTNESS` of the brighter one's contrast (over the median of the unlabelled voxels within
    :data:`CONVEX_MERGE_SURROUNDINGS` of the pair's bounding box) stays apart.

    The hulls are computed on up to ``threads`` threads; the decisions do not depend on their order.
    """
    from scipy import ndimage

    count = int(labels.max(initial=0))
    if count < 2:
        return labels
    firsts, seconds = touching_pairs(labels)
    if firsts.size == 0:
        return labels
    boxes = ndimage.find_objects(labels)
    scale = np.asarray(spacing, dtype=np.float64)

    def own_hull(label: int) -> tuple[float, np.ndarray]:
        """The label's hull volume and its vertices (the union's hull is the hull of its parts' vertices)."""
        box = boxes[label - 1]
        points = corner_points(labels[box] == label, scale)
        found = convex_hull(points)
        return (0.0, points) if found is None else (float(found.volume), points[found.vertices])

    points: dict[int, np.ndarray] = {}
    hulls: dict[int, float] = {}
    parent = np.arange(count + 1)

    def root(label: int) -> int:
        while parent[label] != label:
            parent[label] = parent[parent[label]]
            label = int(parent[label])
        return label

    corners = np.array([[s.start for s in box] if box else [0, 0, 0] for box in boxes], dtype=np.int64)
    medians: dict[int, float] = {}
    reach = [int(np.ceil(CONVEX_MERGE_SURROUNDINGS / side)) for side in spacing]

    def alike(a: int, b: int) -> bool:
        """Whether the two labels' brightness is one nucleus's (always, without an intensity)."""
        if intensity is None:
            return True
        for label in (a, b):
            if label not in medians:
                box = boxes[label - 1]
                medians[label] = float(np.median(intensity[box][labels[box] == label]))
        box = tuple(
            slice(max(min(p.start, q.start) - pad, 0), max(p.stop, q.stop) + pad)
            for p, q, pad in zip(boxes[a - 1], boxes[b - 1], reach, strict=True)
        )
        around = intensity[box][labels[box] == 0]
        bright, dim = max(medians[a], medians[b]), min(medians[a], medians[b])
        contrast = bright - float(np.median(around)) if around.size else 0.0
        # no surroundings (packed solid) or none darker: nothing to measure the difference against, the shape decides
        return contrast <= 0 or bright - dim <= brightness * contrast

    needed = np.unique(np.concatenate([firsts, seconds])).tolist()
    for label, (volume, vertices) in zip(needed, parallel.thread_map(own_hull, needed, threads), strict=True):
        hulls[label], points[label] = volume, vertices
    candidates = [(a, b) for a, b in zip(firsts.tolist(), seconds.tolist(), strict=True) if hulls[a] and hulls[b]]

    def union_hull(pair: tuple[int, int]) -> float:
        a, b = pair
        origin = np.minimum(corners[a - 1], corners[b - 1])
        union = np.vstack(
            [points[a] + (corners[a - 1] - origin) * scale, points[b] + (corners[b - 1] - origin) * scale]
        )
        found = convex_hull(union)  # its volume only: scipy lists a hull's vertices by sorting every facet's corners
        return 0.0 if found is None else float(found.volume)

    for (a, b), volume in zip(candidates, parallel.thread_map(union_hull, candidates, threads), strict=True):
        # hull volumes of voxel corners are exact fractions and can equal the limit: ties merge, whatever rounding
        if volume <= ratio * (hulls[a] + hulls[b]) * (1 + 1e-9) and alike(a, b):
            parent[root(b)] = root(a)
    roots = np.array([root(label) for label in range(count + 1)])
    if np.array_equal(roots, np.arange(count + 1)):
        return labels
    _, numbers = np.unique(roots, return_inverse=True)
    return numbers.astype(labels.dtype)[labels]


def touching_pairs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pairs of labels that share a voxel face, each once: (smaller labels, larger labels), int64, in order."""
    count = int(labels.max(initial=0))
    keys = []
    for axis in range(3):
        ahead = [slice(None)] * 3
        behind = [slice(None)] * 3
        ahead[axis], behind[axis] = slice(1, None), slice(None, -1)
        first, second = labels[tuple(behind)], labels[tuple(ahead)]
        touching = (first != second) & (first > 0) & (second > 0)
        low = np.minimum(first[touching], second[touching]).astype(np.int64)
        high = np.maximum(first[touching], second[touching]).astype(np.int64)
        keys.append(np.unique(low * (count + 1) + high))
    return np.divmod(np.unique(np.concatenate(keys)), count + 1)


def corner_points(inside: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The voxel corners of the bool box ``inside`` that end each line of corners along x (the hull of the voxels is
    the hull of those), in (z, y, x) order and physical units (``scale``: the voxel sides), from the corner of the
    box: the same numbers wherever the box lies, in a streamed block too. A corner line at (z, y) runs along the
    voxel rows z-1..z, y-1..y: it ends at their first voxel's near face and their last voxel's far face."""
    depth, height, width = inside.shape
    filled = inside.any(axis=2)
    first = np.where(filled, inside.argmax(axis=2), width + 1)
    last = np.where(filled, width - inside[:, :, ::-1].argmax(axis=2), -1)  # the far face of the last voxel
    low = np.full((depth + 2, height + 2), width + 1)
    high = np.full((depth + 2, height + 2), -1)
    low[1:-1, 1:-1], high[1:-1, 1:-1] = first, last
    low = np.minimum(np.minimum(low[:-1, :-1], low[1:, :-1]), np.minimum(low[:-1, 1:], low[1:, 1:]))
    high = np.maximum(np.maximum(high[:-1, :-1], high[1:, :-1]), np.maximum(high[:-1, 1:], high[1:, 1:]))
    z, y = np.nonzero(high >= 0)
    ends = np.stack([low[z, y], high[z, y]], axis=1).ravel()
    corners = np.stack([np.repeat(z, 2), np.repeat(y, 2), ends], axis=1)
    return (corners - 0.5) * scale


def convex_hull(points: np.ndarray) -> ConvexHull | None:
    """The hull of ``points`` (None where they span no volume).

    Voxel corners lie on many common planes, and Qhull's default merges the facets they make: Q0 skips that and
    takes half the time, with the same volume to 1e-15 and the same vertices (and more) on every hull tried
    (benchmarks/README.md); where it gives up on a set, the default takes it."""
    from scipy.spatial import ConvexHull, QhullError

    for options in ("Q0", ""):
        try:
            return ConvexHull(points, qhull_options=options)
        except QhullError:
            continue
        except ValueError:
            return None
    return None

"""Labels holding packed nuclei are cut into them; one large convex nucleus, or a pair with no neighbours, is not."""

from __future__ import annotations

import numpy as np
import pytest

from wnet_zoo.segment import oversized
from wnet_zoo.segment.oversized import split_oversized

RADIUS = 5.0


def _balls(
    centres: list[tuple[float, float, float]], radii: list[float], shape=(24, 40, 80), spacing=(1.0, 1.0, 1.0)
) -> np.ndarray:
    """One label per ball, in order; where balls overlap, the nearer centre's. Centres and radii are physical
    (voxel sides ``spacing``)."""
    grid = np.indices(shape).transpose(1, 2, 3, 0).astype(np.float64) * np.asarray(spacing)
    scaled = [((grid - centre) ** 2).sum(axis=3) / radius**2 for centre, radius in zip(centres, radii, strict=True)]
    nearest = np.argmin(scaled, axis=0)
    inside = np.min(scaled, axis=0) <= 1.0
    return np.where(inside, nearest + 1, 0).astype(np.int32)


def _touching_row(count: int = 6) -> tuple[list[tuple[float, float, float]], list[float]]:
    """A row of touching balls along x: the nuclei around the one under test."""
    centres = [(12.0, 20.0, 8.0 + 9.0 * k) for k in range(count)]
    return centres, [RADIUS] * len(centres)


def test_a_label_holding_two_packed_nuclei_is_cut_between_them():
    centres, radii = _touching_row()
    truth = _balls(centres, radii)
    labels = truth.copy()
    labels[labels == 4] = 3  # the split stages left two pressed nuclei in one label
    cut = split_oversized(labels, (1.0, 1.0, 1.0))
    assert cut.max() == labels.max() + 1
    for nucleus in (3, 4):
        found = np.bincount(cut[truth == nucleus]).argmax()
        overlap = (
            np.logical_and(cut == found, truth == nucleus).sum() / np.logical_or(cut == found, truth == nucleus).sum()
        )
        assert overlap > 0.85
    unchanged = (truth != 3) & (truth != 4)
    assert np.array_equal(cut[unchanged], labels[unchanged])


def test_a_pair_is_cut_along_its_physical_length_in_anisotropic_voxels():
    """A column of balls along z in voxels 3x as deep as wide: two merged ones are about 18 long along z and 9 across,
    but in voxels 6 deep and 9 across. Cut along z, they show their waist; read as cubic voxels, the label would be cut
    across (x or y), two pieces with no waist between them, and refused."""
    spacing = (3.0, 1.0, 1.0)
    truth = _balls([(7.0 + 9.0 * k, 20.0, 20.0) for k in range(6)], [RADIUS] * 6, (21, 40, 40), spacing)
    labels = truth.copy()
    labels[labels == 4] = 3
    cut = split_oversized(labels, spacing)
    assert cut.max() == labels.max() + 1
    assert len(np.unique(cut[truth == 3])) == len(np.unique(cut[truth == 4])) == 1
    assert cut[truth == 3][0] != cut[truth == 4][0]
    assert split_oversized(labels, (1.0, 1.0, 1.0)).max() == labels.max()


def test_a_run_of_pairs_is_cut_once_its_neighbours_are():
    centres, radii = _touching_row(8)
    truth = _balls(centres, radii)
    labels = truth.copy()
    for first in (2, 4, 6):  # three pairs in a row between two single nuclei: the middle pair's neighbours are pairs
        labels[labels == first + 1] = first
    cut = split_oversized(labels, (1.0, 1.0, 1.0))
    assert cut.max() == labels.max() + 3
    for nucleus in range(1, 9):
        assert len(np.unique(cut[truth == nucleus])) == 1  # every nucleus in one piece ...
    assert len(np.unique(cut[truth > 0])) == 8  # ... of its own


@pytest.mark.parametrize("seed", [11, 16, 24])  # volumes with labels refused, then cut against new neighbours
def test_labels_refused_once_are_judged_as_a_fresh_try_would(seed):
    """The passes after the first skip a refused label only where trying it again could not change the verdict."""
    rng = np.random.default_rng(seed)
    centres = [(8.0 + 8.5 * z, 8.0 + 8.5 * y, 8.0 + 8.5 * x) for z in range(2) for y in range(4) for x in range(8)]
    centres = [tuple(np.add(c, rng.uniform(-1.5, 1.5, 3))) for c in centres]
    radii = list(rng.uniform(3.5, 6.0, len(centres)))
    labels = _balls(centres, radii, (26, 44, 78))
    for first in rng.choice(len(centres) - 1, 24, replace=False):  # merged with the next
        labels[labels == first + 2] = first + 1
    fresh = labels
    for _ in range(oversized.OVERSIZED_PASSES):
        fresh, _ = oversized._split_pass(fresh, fresh is not labels, (1.0, 1.0, 1.0), {})
    assert np.array_equal(split_oversized(labels, (1.0, 1.0, 1.0)), fresh)


def test_a_large_convex_nucleus_stays_whole():
    centres, radii = _touching_row()
    centres[3], radii[3] = (12.0, 20.0, 35.0), RADIUS * 2 ** (1 / 3)  # twice its neighbours' volume, no waist
    labels = _balls(centres, radii)
    assert np.array_equal(split_oversized(labels, (1.0, 1.0, 1.0)), labels)


def test_a_pair_is_judged_against_at_least_two_neighbours():
    centres, radii = _touching_row()
    labels = _balls(centres[:4], radii[:4])
    labels[labels == 4] = 3  # a pair at the row's end, with a single neighbour: no measure of a nucleus's size
    assert np.array_equal(split_oversized(labels, (1.0, 1.0, 1.0)), labels)


def test_two_merged_pairs_each_between_single_nuclei_are_both_cut():
    centres, radii = _touching_row(8)
    labels = _balls(centres, radii)
    labels[labels == 3] = 2
    labels[labels == 7] = 6
    assert split_oversized(labels, (1.0, 1.0, 1.0)).max() == labels.max() + 2

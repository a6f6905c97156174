"""Instances from foreground probabilities: splitting touching nuclei, small objects, voxel size, the table."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from wnet_zoo.errors import UserError
from wnet_zoo.segment.measure import COLUMNS
from wnet_zoo.segment.nuclei import instances


def spheres(shape, centres, radius, voxel_size=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Balls of a physical ``radius`` around physical-voxel ``centres`` (given in voxel indices)."""
    grid = np.indices(shape).astype(np.float64)
    found = np.zeros(shape, dtype=bool)
    for centre in centres:
        found |= sum(((g - c) * v) ** 2 for g, c, v in zip(grid, centre, voxel_size, strict=True)) <= radius**2
    return found


def test_touching_nuclei_are_split_and_a_single_one_is_not():
    touching = spheres((40, 40, 50), [(20, 20, 15), (20, 20, 27)], 7).astype(np.float32)
    result = instances(touching)
    assert result.labels.max() == 2 and len(result.table) == 2
    assert result.table["centroid_x"].tolist() == pytest.approx([15, 27], abs=0.5)
    assert (result.labels > 0).sum() == touching.astype(bool).sum()

    elongated = np.indices((40, 40, 60)) - np.array([20, 20, 30])[:, None, None, None]
    ellipsoid = ((elongated[0] / 6.0) ** 2 + (elongated[1] / 6.0) ** 2 + (elongated[2] / 20.0) ** 2 <= 1).astype(float)
    assert instances(ellipsoid).labels.max() == 1


def test_anisotropic_stack_splits_with_its_voxel_size():
    size = (3.0, 1.0, 1.0)
    side_by_side = spheres((16, 40, 50), [(8, 20, 15), (8, 20, 27)], 7, size)
    stacked = spheres((24, 30, 30), [(7, 15, 15), (15, 15, 15)], 7, size)
    single = spheres((14, 40, 40), [(7, 20, 20)], 9, size)
    assert instances(side_by_side.astype(np.float32), voxel_size=size).labels.max() == 2
    assert instances(stacked.astype(np.float32), voxel_size=size).labels.max() == 2
    assert instances(single.astype(np.float32), voxel_size=size).labels.max() == 1
    with pytest.raises(UserError, match="voxel size"):
        instances(single.astype(np.float32), voxel_size=(1.0, 0.0, 1.0))


def test_table_measures_each_nucleus_and_small_ones_are_removed():
    probability = np.zeros((20, 30, 30), dtype=np.float32)
    probability[2:6, 3:7, 4:8] = 0.9  # 64 voxels
    probability[10:13, 20:23, 20:23] = 0.8  # 27 voxels
    probability[16, 1, 1] = 0.99  # a single voxel: removed at min_size 2
    intensity = np.arange(probability.size, dtype=np.float32).reshape(probability.shape)
    result = instances(probability, intensity, min_size=2, boundary="mask")  # the ramp is no image of nuclei
    assert list(result.table.columns) == list(COLUMNS)
    assert result.labels.dtype == np.uint16
    assert result.table["label"].tolist() == [1, 2]
    assert result.table["voxels"].tolist() == [64, 27]
    first, second = result.table.iloc[0], result.table.iloc[1]
    assert (first["centroid_z"], first["centroid_y"], first["centroid_x"]) == pytest.approx((3.5, 4.5, 5.5))
    assert (second["centroid_z"], second["centroid_y"], second["centroid_x"]) == pytest.approx((11, 21, 21))
    box = [int(first[f"bbox_{a}_{e}"]) for e in ("start", "stop") for a in "zyx"]
    assert box == [2, 3, 4, 6, 7, 8]
    assert first["mean_intensity"] == pytest.approx(intensity[2:6, 3:7, 4:8].mean())
    assert second["mean_intensity"] == pytest.approx(intensity[10:13, 20:23, 20:23].mean())
    assert instances(probability, min_size=1, relative_min_size=0).labels.max() == 3
    assert instances(probability, min_size=1).labels.max() == 2  # by default under a tenth of 64 voxels goes too
    assert instances(probability, threshold=0.85, min_size=1, relative_min_size=0).labels.max() == 2


def test_mask_decides_the_foreground_and_empty_input_gives_an_empty_table():
    probability = np.zeros((10, 10, 10), dtype=np.float32)
    mask = np.zeros_like(probability, dtype=bool)
    mask[2:5, 2:5, 2:5] = True
    assert instances(probability, mask=mask).labels.max() == 1
    empty = instances(probability)
    assert empty.labels.max() == 0 and len(empty.table) == 0 and list(empty.table.columns) == list(COLUMNS)


def test_more_than_65535_nuclei_get_uint32_labels():
    probability = np.zeros((82, 82, 82), dtype=np.float32)
    probability[::2, ::2, ::2] = 1.0
    result = instances(probability, min_size=1)
    assert result.labels.dtype == np.uint32
    assert result.labels.max() == 41**3 == len(result.table)


def blurred_nuclei() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bright and a 5x dimmer nucleus, touching, blurred and noisy; the mask a model gives them (everything
    above the background: 2 to 3 voxels too wide); an over-exposed speckle in the background with the small
    blob such a mask puts around it. Returns (image, truth labels, mask)."""
    truth = spheres((36, 40, 60), [(18, 20, 22)], 6).astype(np.uint8)
    truth[spheres((36, 40, 60), [(18, 20, 35)], 6) & (truth == 0)] = 2
    image = ndimage.gaussian_filter(np.array([10.0, 300.0, 60.0])[truth], 1.2)
    image += np.random.default_rng(0).normal(0.0, 2.0, image.shape)
    mask = ndimage.gaussian_filter(image, 1.0) > 13.0
    image[6, 6, 52] = 60000.0
    mask[5:8, 5:8, 51:54] = True
    return image, truth, mask


def dice_of_nucleus(labels: np.ndarray, nucleus: np.ndarray) -> float:
    """Dice between a true nucleus and the label covering most of it."""
    found = labels == np.bincount(labels[nucleus], minlength=2)[1:].argmax() + 1
    return 2 * (found & nucleus).sum() / (found.sum() + nucleus.sum())


def test_packed_nuclei_read_their_background_in_the_darkest_part_of_their_surroundings(monkeypatch):
    """27 nuclei 1 voxel apart, blurred, under a mask tighter than their blur: most unlabelled voxels around the
    central one are its neighbours' bright rims, so the median of its surroundings would shrink it."""
    from wnet_zoo.segment import half_max

    shape = (40, 40, 40)
    truth = np.zeros(shape, np.uint16)
    for i, centre in enumerate([(z, y, x) for z in (8, 20, 32) for y in (8, 20, 32) for x in (8, 20, 32)]):
        truth[spheres(shape, [centre], 5.5) & (truth == 0)] = i + 1
    image = ndimage.gaussian_filter(np.where(truth > 0, 300.0, 10.0), 1.5)
    image += np.random.default_rng(0).normal(0, 2.0, shape)
    mask = ndimage.gaussian_filter(image, 1.0) > 150.0

    def scores() -> tuple[float, float]:
        labels = instances(mask.astype(np.float32), image, mask=mask, relative_min_size=0).labels
        assert labels.max() == 27
        found = labels > 0
        return dice_of_nucleus(labels, truth == 14), 2 * (found & (truth > 0)).sum() / (found.sum() + (truth > 0).sum())

    assert min(scores()) > 0.92
    monkeypatch.setattr(half_max, "HALF_MAX_BACKGROUND", 50.0)
    assert max(scores()) < 0.85


def test_half_max_reads_a_clear_edge_with_less_smoothing_and_a_noisy_one_as_before():
    """Small blurred nuclei: smoothing by 1 voxel moves their half-max surface inwards, so where they stand far
    above the noise their edge is read at a smoothing of 0.5 (truer size); in heavy noise, at 1 as before."""
    from wnet_zoo.segment.half_max import half_max_foreground

    shape = (32, 32, 32)
    centres = [(z, y, x) for z in (8, 23) for y in (8, 23) for x in (8, 23)]
    truth = np.zeros(shape, np.int32)
    for i, centre in enumerate(centres):
        truth[spheres(shape, [centre], 3.5)] = i + 1
    blurred = ndimage.gaussian_filter(np.where(truth > 0, 100.0, 0.0), 1.0)
    labels = np.where(blurred > 50.0, truth, 0)

    def dice(noise: float, sigmas: tuple[float, ...]) -> float:
        image = blurred + np.random.default_rng(1).normal(0, noise, shape)
        found = half_max_foreground(labels, image, (1.0, 1.0, 1.0), sigmas)
        return 2 * (found & (truth > 0)).sum() / (found.sum() + (truth > 0).sum())

    assert dice(1.0, (0.5, 0.75, 1.0)) > 0.95 and dice(1.0, (0.5, 0.75, 1.0)) > dice(1.0, (1.0,)) + 0.05
    assert dice(80.0, (0.5, 0.75, 1.0)) == dice(80.0, (1.0,))


def test_an_edge_is_read_at_the_least_smoothing_leaving_its_contrast_ten_times_the_noise_left():
    from wnet_zoo.segment.half_max import _edge_sigmas, _noise_left

    field = ndimage.gaussian_filter(np.random.default_rng(0).normal(0, 1, (64, 96, 96)), (0.75 / 2, 0.75, 0.75))
    assert _noise_left(0.75, (2.0, 1.0, 1.0)) == pytest.approx(field[8:-8, 8:-8, 8:-8].std(), rel=0.03)
    limits = {sigma: 100 / (10 * _noise_left(sigma, (1.0, 1.0, 1.0))) for sigma in (0.5, 0.75)}  # 19.5, 42.9
    noise = np.array([0.98 * limits[0.5], 1.02 * limits[0.5], 0.98 * limits[0.75], 1.02 * limits[0.75], np.nan])
    chosen = _edge_sigmas(np.full(5, 100.0), noise, [1, 1, 1], (0.5, 0.75, 1.0, 2.0))
    np.testing.assert_array_equal(chosen, [0.5, 0.75, 0.75, 1.0, 1.0])  # never above the levels' smoothing


def test_half_max_boundary_gives_blurred_nuclei_their_true_size_and_relative_min_size_drops_speckles():
    image, truth, mask = blurred_nuclei()
    probability = mask.astype(np.float32)
    as_mask = instances(probability, image, mask=mask, boundary="mask", relative_min_size=0)
    relative = instances(probability, image, mask=mask, boundary="mask")  # relative_min_size 0.1
    found = instances(probability, image, mask=mask)  # the defaults: half-max, relative_min_size 0.1
    assert as_mask.labels.max() == 3  # two nuclei and the speckle's blob (>= 10 voxels)
    assert relative.labels.max() == 2  # the blob is under a tenth of a typical nucleus
    assert found.labels.max() == 2  # with half-max boundaries the blob shrinks to the hot voxel itself, too
    for nucleus in (truth == 1, truth == 2):
        assert dice_of_nucleus(as_mask.labels, nucleus) < 0.75  # the mask's rim
        assert dice_of_nucleus(found.labels, nucleus) > 0.9  # the dim one too: each nucleus has its own level
    with pytest.raises(UserError, match="intensity"):
        instances(probability, mask=mask, boundary="half_max")
    with pytest.raises(UserError, match="boundary"):
        instances(probability, image, boundary="otsu")
    with pytest.raises(UserError, match="relative_min_size"):
        instances(probability, image, relative_min_size=1.5)


def test_a_false_positive_on_plain_background_does_not_grow(monkeypatch):
    """Half its shell passes a level halfway between two noise percentiles: only labels standing above the
    noise grow, so a blob the model put on the background still shrinks and goes with the small ones."""
    from wnet_zoo.segment import half_max, oversized

    shape = (48, 64, 64)
    truth = spheres(shape, [(24, 16, 16), (24, 16, 48), (24, 48, 16)], 6)
    image = ndimage.gaussian_filter(np.where(truth, 300.0, 10.0), 1.2)
    image += np.random.default_rng(0).normal(0, 3.0, shape)
    mask = truth.copy()
    mask[22:27, 44:49, 44:49] = True  # 125 voxels of background

    def sizes() -> list[int]:
        return instances(mask.astype(np.float32), image, mask=mask).table["voxels"].tolist()

    assert len(sizes()) == 3 and min(sizes()) > 0.8 * truth.sum() / 3
    monkeypatch.setattr(half_max, "HALF_MAX_GROWTH_CONTRAST", 0.0)
    monkeypatch.setattr(oversized, "OVERSIZED", np.inf)  # it would cut the grown blob into pieces too small to keep
    grown = sizes()  # every label grows: the blob spreads into the noise around it, far beyond its 125 voxels
    assert len(grown) >= 4 and sum(grown) - sum(sorted(grown)[-3:]) > 2 * 125


def test_instances_name_each_stage_as_it_starts():
    from wnet_zoo.segment.nuclei import stage_count
    from wnet_zoo.segment.options import NucleiOptions

    image, _, mask = blurred_nuclei()
    names: list[str] = []
    instances(mask.astype(np.float32), image, mask=mask, step=names.append)
    assert names == [
        "split",
        "half-max boundaries",
        "split again",
        "half-max per nucleus",
        "split per nucleus",
        "convex merge",
        "split oversized",
        "measure",
    ]
    assert len(names) == stage_count(NucleiOptions(), image)
    names.clear()
    instances(mask.astype(np.float32), mask=mask, step=names.append)
    assert names == ["split", "convex merge", "split oversized", "measure"] and len(names) == stage_count(
        NucleiOptions(boundary="auto"), None
    )


def test_half_max_boundary_grows_a_mask_drawn_too_tight_within_the_shell():
    """Packed nuclei light each other's rims and a model calls those rims background: the boundary moves out to
    where the intensity crosses half its maximum, never further than the shell."""
    from wnet_zoo.segment.half_max import HALF_MAX_SHELL

    shape = (30, 30, 30)
    truth = spheres(shape, [(15, 15, 15)], 7)
    image = ndimage.gaussian_filter(np.where(truth, 300.0, 10.0), 1.2)
    image += np.random.default_rng(0).normal(0, 2.0, shape)

    def found(radius: float, boundary: str = "half_max") -> np.ndarray:
        mask = spheres(shape, [(15, 15, 15)], radius)
        labels = instances(mask.astype(np.float32), image, mask=mask, boundary=boundary, relative_min_size=0).labels
        assert labels.max() == 1
        return labels

    tight = spheres(shape, [(15, 15, 15)], 6)  # a voxel too tight all round
    assert dice_of_nucleus(found(6, "mask"), truth) < 0.8
    assert dice_of_nucleus(found(6), truth) > 0.88
    assert (found(6) & ~tight).sum() > 200  # grown, not only trimmed
    assert not (found(2) & ~spheres(shape, [(15, 15, 15)], 2 + HALF_MAX_SHELL)).any()


def test_nuclei_in_one_piece_of_the_mask_end_at_their_own_half_maximum():
    """Packed nuclei of unequal brightness can lie in one piece of the model's mask, under one half-max level: the dim
    one ends inside its edge until the levels are read again per nucleus."""
    from scipy.spatial import ConvexHull, Delaunay

    from wnet_zoo.segment.half_max import half_max_foreground
    from wnet_zoo.segment.nuclei import split_nuclei
    from wnet_zoo.segment.options import DEFAULT_MIN_DISTANCE, DEFAULT_SPOT_SIGMA

    shape, spacing, seeding = (30, 30, 44), (1.0, 1.0, 1.0), (DEFAULT_SPOT_SIGMA, DEFAULT_MIN_DISTANCE)
    bright = spheres(shape, [(15, 15, 15)], 6)
    dim = spheres(shape, [(15, 15, 27)], 6) & ~bright
    image = ndimage.gaussian_filter(np.where(bright, 300.0, np.where(dim, 180.0, 10.0)), 1.2)
    image += np.random.default_rng(0).normal(0, 2.0, shape)
    corners = np.argwhere(ndimage.binary_dilation(bright | dim))
    blob = Delaunay(corners[ConvexHull(corners).vertices])  # the mask: one convex blob round both, a voxel wider
    mask = blob.find_simplex(np.indices(shape).reshape(3, -1).T).reshape(shape) >= 0
    assert split_nuclei(mask, spacing, *seeding).max() == 1

    labels = instances(mask.astype(np.float32), image, mask=mask, relative_min_size=0).labels
    assert labels.max() == 2 and dice_of_nucleus(labels, bright) > 0.95 and dice_of_nucleus(labels, dim) > 0.93
    first_pass = split_nuclei(
        half_max_foreground(split_nuclei(mask, spacing, *seeding), image, spacing), spacing, *seeding
    )
    assert dice_of_nucleus(first_pass, dim) < 0.85  # one level for both: the dim nucleus ends far inside its edge


def test_labels_spread_to_the_nearest_nucleus_within_their_pieces_of_the_region():
    from wnet_zoo.segment.nuclei import spread_labels

    labels = np.zeros((1, 3, 12), dtype=np.int32)
    labels[0, 1, 1], labels[0, 1, 6] = 1, 2
    region = np.zeros(labels.shape, dtype=bool)
    region[0, :, :8] = True  # one piece holding both labels
    region[0, 1, 10:] = True  # a piece apart, holding none: no nucleus spreads there
    grown = spread_labels(labels, region, (1.0, 1.0, 1.0))
    assert grown[0, 1, :8].tolist() == [1, 1, 1, 1, 2, 2, 2, 2] and (grown[0, :, :3] == 1).all()
    assert not grown[0, :, 8:].any() and labels[0, 1, 0] == 0  # nothing beyond its pieces, the input left alone
    assert spread_labels(np.zeros_like(labels), region, (1.0, 1.0, 1.0)).max() == 0
    assert spread_labels(labels, labels > 0, (1.0, 1.0, 1.0)) is labels  # nothing to fill


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 1.0, 1.3)])
def test_euclidean_distance_is_scipys_bit_for_bit_at_less_than_half_its_memory(monkeypatch, spacing):
    import tracemalloc

    from wnet_zoo.segment import geometry

    rng = np.random.default_rng(0)
    mask = ndimage.gaussian_filter(rng.random((24, 40, 36)), 2) > 0.5
    monkeypatch.setattr(geometry, "_SLAB_VOXELS", 500)  # several slabs, one of them partial
    ours, nearest = geometry.euclidean_distance(mask, spacing, indices=True)
    theirs, their_nearest = ndimage.distance_transform_edt(mask, sampling=spacing, return_indices=True)
    assert ours.dtype == np.float64 and np.array_equal(ours, theirs)
    assert nearest.dtype == np.int32 and np.array_equal(nearest, their_nearest)
    assert geometry.euclidean_distance(mask, spacing)[1] is None

    peaks = []
    for distance in (lambda: geometry.euclidean_distance(mask, spacing), lambda: ndimage.distance_transform_edt(mask)):
        tracemalloc.start()
        distance()
        peaks.append(tracemalloc.get_traced_memory()[1] / mask.size)
        tracemalloc.stop()
    assert peaks[0] < 24 and peaks[1] > 45, peaks  # bytes per voxel


def test_a_nucleus_cut_in_two_is_merged_back_and_touching_nuclei_are_not():
    from wnet_zoo.segment.convex import merge_convex

    z, y, x = np.indices((30, 30, 60))
    elongated = ((z - 15) / 6.0) ** 2 + ((y - 15) / 6.0) ** 2 + ((x - 30) / 14.5) ** 2 <= 1  # 2.4 : 1
    uneven = x >= 30 + 2 * np.sin(y / 2.0) * np.cos(z / 2.0)  # a watershed's cut across a distance plateau
    halves = np.where(elongated, 1 + uneven, 0).astype(np.int32)
    assert merge_convex(halves, (1.0, 1.0, 1.0)).max() == 1
    flat = np.where(elongated, 1 + (x >= 30), 0).astype(np.int32)
    assert merge_convex(flat, (1.0, 1.0, 1.0)).max() == 2 and merge_convex(flat, (1.0, 1.0, 1.0), 1.03).max() == 1
    pair = spheres((30, 30, 40), [(15, 15, 12)], 7).astype(np.int32)
    pair[spheres((30, 30, 40), [(15, 15, 26)], 7) & (pair == 0)] = 2
    assert np.array_equal(merge_convex(pair, (1.0, 1.0, 1.0)), pair)  # their union has a waist
    thin = halves.copy()
    thin[0, 0, :3] = 3  # no volume: left alone, and the others renumbered 1..n
    merged = merge_convex(thin, (1.0, 1.0, 1.0))
    assert merged.max() == 2 and (merged[0, 0, :3] == 2).all() and merged.dtype == np.int32


def test_pieces_of_unequal_brightness_are_two_nuclei_however_convex_their_union():
    """Two small nuclei pressed together, blurred, keep little waist: the shape alone would merge them. One
    nucleus cut in two is one brightness; two nuclei are two."""
    from wnet_zoo.segment.convex import merge_convex

    z, y, x = np.indices((30, 30, 60))
    elongated = ((z - 15) / 6.0) ** 2 + ((y - 15) / 6.0) ** 2 + ((x - 30) / 14.5) ** 2 <= 1
    uneven = x >= 30 + 2 * np.sin(y / 2.0) * np.cos(z / 2.0)
    halves = np.where(elongated, 1 + uneven, 0).astype(np.int32)
    noise = np.random.default_rng(0).normal(0.0, 3.0, halves.shape)
    one = np.where(elongated, 100.0, 10.0) + noise
    two = np.where(elongated, np.where(uneven, 100.0, 70.0), 10.0) + noise  # 0.33 of the contrast apart
    assert merge_convex(halves, (1.0, 1.0, 1.0), intensity=one).max() == 1
    assert merge_convex(halves, (1.0, 1.0, 1.0), intensity=two).max() == 2
    textured = np.where(elongated, np.where(uneven, 100.0, 93.0), 10.0) + noise  # within a tenth: one nucleus
    assert merge_convex(halves, (1.0, 1.0, 1.0), intensity=textured).max() == 1
    # the contrast is over the surroundings, not over zero: 3 % apart on a bright haze are a third of the contrast
    hazy = np.where(elongated, np.where(uneven, 1100.0, 1070.0), 1000.0) + noise
    assert merge_convex(halves, (1.0, 1.0, 1.0), intensity=hazy).max() == 2
    darker = np.where(elongated, np.where(uneven, 100.0, 70.0), 500.0) + noise  # darker than around: shape decides
    assert merge_convex(halves, (1.0, 1.0, 1.0), intensity=darker).max() == 1


def test_the_nuclei_stages_compare_brightness_within_half_max_boundaries_only():
    """Two small pressed nuclei, blurred: their half-max union is as convex as one nucleus, so of equal brightness
    they merge, and one a third dimmer they stay two. With the model's own mask (whose pieces may be mostly halo)
    the shape alone decides, whatever their brightness."""
    shape = (24, 24, 40)

    def found(radius: float, dim: float, boundary: str = "auto") -> int:
        left = spheres(shape, [(12, 12, 17.5)], radius)
        right = spheres(shape, [(12, 12, 22.5)], radius) & ~left
        image = ndimage.gaussian_filter(np.where(left, 300.0, np.where(right, dim, 10.0)), 1.0)
        image += np.random.default_rng(0).normal(0.0, 2.0, shape)
        mask = left | right
        return int(instances(mask.astype(np.float32), image, mask=mask, boundary=boundary).labels.max())

    assert found(3.5, 300.0) == 1 and found(3.5, 200.0) == 2
    assert found(4.0, 150.0, "mask") == 1  # merged by shape: the brightness test would keep them apart


def test_convex_merge_decides_the_same_wherever_the_labels_lie():
    """Hull volumes of voxel corners are exact fractions that can equal the merge limit (this random field holds
    such a pair): the decision must not hang on rounding that depends on the position, or a streamed block
    would merge what the whole volume keeps apart."""
    from wnet_zoo.segment.convex import merge_convex
    from wnet_zoo.segment.nuclei import split_nuclei

    rng = np.random.default_rng(1)
    for _ in range(2):
        shape = tuple(rng.integers(20, 48, 3))
        field = ndimage.gaussian_filter(rng.random(shape), 2.5)
        foreground = field > np.quantile(field, rng.uniform(0.4, 0.7))
    spacing = (2.5, 1.0, 1.3)
    labels = split_nuclei(foreground, spacing, 1.0, 2.0)
    merged = merge_convex(labels, spacing)
    assert 0 < merged.max() < labels.max()
    for shift in [(5, 13, 7), (100, 3, 250), (1, 1, 1), (37, 0, 411)]:
        moved = merge_convex(np.pad(labels, [(s, 0) for s in shift]), spacing)
        np.testing.assert_array_equal(moved[shift[0] :, shift[1] :, shift[2] :], merged)


def test_labels_are_the_same_on_any_number_of_threads():
    """Packed, noisy, blurred nuclei deep enough for slabs: every stage (split, half-max, split again, convex
    merge) runs its threaded parts, and the labels match one thread's."""
    rng = np.random.default_rng(3)
    shape = (64, 48, 48)
    centres = rng.uniform([4, 4, 4], np.array(shape) - 4, (60, 3))
    truth = spheres(shape, centres, 5.5)
    image = ndimage.gaussian_filter(np.where(truth, 100.0, 10.0), 1.2) + rng.normal(0.0, 3.0, shape)
    probability = ndimage.gaussian_filter(truth.astype(np.float32), 1.0)
    one = instances(probability, image, voxel_size=(1.5, 1.0, 1.0))
    assert one.labels.max() > 20
    for threads in (2, 3):
        many = instances(probability, image, voxel_size=(1.5, 1.0, 1.0), threads=threads)
        assert np.array_equal(many.labels, one.labels) and many.table.equals(one.table)


def test_values_sorted_within_labels_are_lexsorts():
    from wnet_zoo.segment.half_max import _sorted_within_labels

    rng = np.random.default_rng(0)
    values = rng.normal(0.0, 5.0, 5000).astype(np.float32)
    values[::7], values[::11] = 0.0, -0.0
    values[::13], values[::17], values[::19] = np.inf, -np.inf, np.nan
    values[::23] = -np.float32(np.nan)  # a NaN with its sign bit set
    owners = rng.integers(1, 40, 5000)
    expected = values[np.lexsort((values, owners))]
    ours = _sorted_within_labels(values, owners)
    assert np.array_equal(ours, expected, equal_nan=True)  # -0.0 and 0.0 may swap: equal values
    wide = _sorted_within_labels(values.astype(np.float64), owners)
    assert np.array_equal(wide, expected.astype(np.float64), equal_nan=True)

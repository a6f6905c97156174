"""The tiling plan against MONAI's sliding_window_inference: window positions, padding, weights, blending."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data.utils import compute_importance_map, dense_patch_slices
from monai.inferers import sliding_window_inference
from monai.inferers.utils import _get_scan_interval

from wnet_zoo.errors import UserError
from wnet_zoo.prediction.tiling import Blender, TilePlan, importance_map

CASES = [
    ((124, 86, 94), (64, 64, 64), 0.25),  # the bundled example at CellSeg3D's settings
    ((20, 50, 44), (32, 32, 32), 0.25),  # z shorter than the tile: padded
    ((21, 32, 70), (32, 32, 16), 0.5),  # odd padding, an axis equal to the tile, anisotropic tile
    ((64, 65, 130), (64, 64, 64), 0.0),  # no overlap, one voxel past a tile
    ((40, 40, 40), (16, 24, 8), 0.9),  # large overlap
]


def _monai_windows(shape, tile, overlap):
    padded = tuple(max(s, t) for s, t in zip(shape, tile, strict=True))
    interval = _get_scan_interval(padded, tile, 3, (overlap,) * 3)
    return [tuple((s.start, s.stop) for s in window) for window in dense_patch_slices(padded, tile, interval)]


@pytest.mark.parametrize(("shape", "tile", "overlap"), CASES)
def test_windows_and_padding_are_monais(shape, tile, overlap):
    plan = TilePlan.create(shape, tile, overlap)
    assert [tuple((s.start, s.stop) for s in window) for window in plan.tiles] == _monai_windows(shape, tile, overlap)
    for size, t, (before, after) in zip(shape, tile, plan.pad, strict=True):
        diff = max(t - size, 0)
        assert (before, after) == (diff // 2, diff - diff // 2)
    assert plan.padded_shape == tuple(max(s, t) for s, t in zip(shape, tile, strict=True))


def test_example_volume_gets_twelve_windows_flush_with_the_end():
    plan = TilePlan.create((124, 86, 94), (64, 64, 64), 0.25)
    assert len(plan.tiles) == 12
    assert sorted({w[0].start for w in plan.tiles}) == [0, 48, 60]
    assert max(w[2].stop for w in plan.tiles) == 94


@pytest.mark.parametrize("tile", [(64, 64, 64), (24, 32, 40), (8, 16, 8)])
def test_importance_maps_match_monai(tile):
    gaussian = compute_importance_map(tile, mode="gaussian", sigma_scale=0.125).numpy()
    np.testing.assert_allclose(importance_map(tile, "gaussian"), gaussian, rtol=2e-6, atol=1e-7)
    assert importance_map(tile, "gaussian").dtype == np.float32
    np.testing.assert_array_equal(importance_map(tile, "constant"), np.ones(tile, dtype=np.float32))


def _toy_model(x: np.ndarray) -> np.ndarray:
    """A deterministic position-independent stand-in for a network: 2 channels from 1."""
    return np.concatenate([np.sin(x / 7.0), np.cos(x / 11.0) * x / 100.0], axis=1).astype(np.float32)


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize(("shape", "tile", "overlap"), CASES[:3])
def test_blender_matches_monai_sliding_window_inference(shape, tile, overlap, blend):
    volume = np.random.default_rng(0).uniform(0, 100, shape).astype(np.float32)
    reference = sliding_window_inference(
        torch.from_numpy(volume)[None, None],
        tile,
        1,
        lambda x: torch.from_numpy(_toy_model(x.numpy())),
        overlap=overlap,
        mode=blend,
    )[0].numpy()
    plan = TilePlan.create(shape, tile, overlap, blend)
    padded = plan.pad_volume(volume)
    blender = Blender(plan, 2)
    for index, window in enumerate(plan.tiles):
        blender.add(index, _toy_model(padded[window][None, None])[0])
    result = blender.result()
    assert result.shape == (2, *shape)
    np.testing.assert_allclose(result, reference, rtol=1e-5, atol=1e-6)


def test_any_block_blends_bit_for_bit_like_the_whole_volume():
    shape, tile = (50, 45, 70), (16, 24, 32)
    plan = TilePlan.create(shape, tile, 0.25)
    padded = plan.pad_volume(np.random.default_rng(1).uniform(0, 100, shape).astype(np.float32))
    outputs = {i: _toy_model(padded[window][None, None])[0] for i, window in enumerate(plan.tiles)}
    blender = Blender(plan, 2)
    for index in range(len(plan.tiles)):
        blender.add(index, outputs[index])
    whole = blender.result()
    asked: list[int] = []

    def lookup(index: int) -> np.ndarray:
        asked.append(index)
        return outputs[index]

    rng = np.random.default_rng(2)
    for _ in range(6):
        starts = [int(rng.integers(0, s - 1)) for s in shape]
        region = tuple(slice(a, int(rng.integers(a + 1, s + 1))) for a, s in zip(starts, shape, strict=True))
        asked.clear()
        block = plan.blend_region(region, lookup)
        np.testing.assert_array_equal(block, whole[(slice(None), *region)])
        assert asked == plan.tiles_covering(region)
        source = plan.source_region(region)
        for index in asked:
            window = plan.tiles[index]
            assert all(s.start <= w.start and w.stop <= s.stop for s, w in zip(source, window, strict=True))


def test_short_axis_is_cropped_back_and_padding_uses_the_value():
    plan = TilePlan.create((5, 8, 8), (8, 8, 8), 0.25)
    assert plan.pad == ((1, 2), (0, 0), (0, 0))
    padded = plan.pad_volume(np.ones((5, 8, 8), np.float32), value=-3.0)
    assert padded.shape == (8, 8, 8) and padded[0].min() == -3.0 and padded[-2:].max() == -3.0
    assert plan.crop(padded).shape == (5, 8, 8) and plan.crop(padded).min() == 1.0
    assert len(plan.tiles) == 1
    ramp = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 8, 8), np.float32)
    edged = plan.pad_volume(ramp, value=-3.0, edge=True)  # for a model that subtracts its background
    assert edged[:, 0, 0].tolist() == [0, 0, 1, 2, 3, 4, 4, 4]


def test_bad_settings_are_user_errors():
    with pytest.raises(UserError, match="overlap"):
        TilePlan.create((10, 10, 10), (8, 8, 8), 1.0)
    with pytest.raises(UserError, match="blend"):
        TilePlan.create((10, 10, 10), (8, 8, 8), 0.25, "median")
    with pytest.raises(ValueError, match="inside the volume"):
        TilePlan.create((10, 10, 10), (8, 8, 8), 0.25).blend_region((slice(0, 11), slice(0, 2), slice(0, 2)), {})

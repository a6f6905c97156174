"""The numpy twins of the model's input transforms."""

import numpy as np
import pytest

from wnet_zoo.io.intensity import background_reach, boundary_view, subtract_background

from closeness import assert_close, scaled_error


@pytest.mark.parametrize("radius", [(2, 3, 3), (1, 4, 4), (3, 3, 3)])
def test_the_background_of_a_block_read_with_its_reach_is_the_whole_volume_s(radius):
    """What lets streaming blocks subtract the background as the in-memory path does: a voxel's value depends on
    the voxels within background_reach of it only."""
    volume = np.random.default_rng(0).random((48, 64, 64), dtype=np.float32) * 100
    whole = subtract_background(volume, radius)[0]
    block = (slice(18, 30), slice(24, 40), slice(24, 40))
    reach = background_reach(radius)
    wide = tuple(slice(b.start - r, b.stop + r) for b, r in zip(block, reach, strict=True))
    assert all(w.start >= 0 and w.stop <= n for w, n in zip(wide, volume.shape, strict=True))
    inner = tuple(slice(r, r + b.stop - b.start) for b, r in zip(block, reach, strict=True))
    assert_close(subtract_background(volume[wide], radius)[0][inner], whole[block], rel=1e-6, what="block")
    less = tuple(r // 2 for r in reach)  # half the reach changes the block's values
    wide = tuple(slice(b.start - r, b.stop + r) for b, r in zip(block, less, strict=True))
    inner = tuple(slice(r, r + b.stop - b.start) for b, r in zip(block, less, strict=True))
    assert scaled_error(subtract_background(volume[wide], radius)[0][inner], whole[block]) > 1e-3


def test_the_boundary_view_is_the_volume_less_its_background_in_linear_intensity():
    volume = np.random.default_rng(1).random((16, 24, 24), dtype=np.float32) * 1000 + 50
    assert boundary_view(volume) is volume and boundary_view(volume, (0, 0, 0)) is volume
    assert_close(boundary_view(volume, (1, 2, 2)), subtract_background(volume, (1, 2, 2))[0], rel=1e-6)
    # an increasing linear map (the 0..100 remap a model applies first) scales the view and moves no boundary
    assert_close(boundary_view(volume * 0.1 - 5, (1, 2, 2)), boundary_view(volume, (1, 2, 2)) * 0.1, rel=1e-5)
    assert background_reach((0, 0, 0)) == (0, 0, 0)

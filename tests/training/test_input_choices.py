"""The data-driven choices of the model's input transform, each on built volumes."""

import numpy as np
import pytest

from wnet_zoo.io.intensity import remap
from wnet_zoo.training.input_choices import (
    MAX_BACKGROUND_RADIUS,
    UNEVEN,
    auto_input_background,
    background_radius_for,
    background_unevenness,
    nucleus_radius,
)


def test_noise_level_reads_the_noise_not_the_content(example: np.ndarray):
    from wnet_zoo.training.input_choices import NOISY, auto_input_smoothing, noise_level

    rng = np.random.default_rng(0)
    assert noise_level(rng.normal(0, 3.0, (20, 40, 50))) == pytest.approx(3.0, rel=0.05)
    content = remap(example)  # real nuclei: edges are a small share of neighbour pairs
    assert noise_level(content) < 1.5
    assert noise_level(content + rng.normal(0, 6.0, content.shape)) == pytest.approx(6.0, rel=0.15)
    assert noise_level(rng.normal(0, 3.0, (40, 40, 50)), samples=5000) == pytest.approx(3.0, rel=0.15)  # planes
    assert noise_level(np.zeros((4, 4, 1))) == 0.0
    assert auto_input_smoothing([NOISY + 1, 0.5, NOISY + 2]) == 1.0
    assert auto_input_smoothing([2 * NOISY + 0.5]) == 2.0 and auto_input_smoothing([4 * NOISY]) == 4.0
    assert auto_input_smoothing([2 * NOISY - 0.1]) == 1.0 and auto_input_smoothing([100 * NOISY]) == 4.0
    assert auto_input_smoothing([NOISY - 1, 9.0, 0.5]) == 0.0 and auto_input_smoothing([]) == 0.0


def _spheres(brightness: list[float], background: float = 100.0) -> np.ndarray:
    """A 0..100 volume of 4 x 5 spheres of radius 4 on a grid, each at its given brightness above ``background``
    (camera counts), blurred a little."""
    from scipy import ndimage

    volume = np.full((16, 48, 60), background, np.float32)
    z, y, x = np.ogrid[:16, :48, :60]
    for i, level in enumerate(brightness):
        cy, cx = 6 + 12 * (i // 5), 6 + 12 * (i % 5)
        volume[(z - 8) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= 16] += level
    noise = np.random.default_rng(0).normal(0, 5.0, volume.shape)
    return remap(ndimage.gaussian_filter(volume, 0.7) + noise)


def test_brightness_spread_tells_nuclei_of_widely_varying_brightness():
    from wnet_zoo.training.input_choices import MIN_OFFSET, SPREAD, auto_input_log, brightness_spread

    alike = _spheres([900, 1000, 1100, 950, 1050] * 4)
    mixed = _spheres([100, 1000, 120, 900, 800, 110, 1100, 95, 1000, 105] * 2)  # half the nuclei 9x dimmer
    assert brightness_spread(alike) < 1.3
    assert brightness_spread(mixed) > SPREAD + 1
    assert brightness_spread(_spheres([1000, 100, 1000])) == 1.0  # too few objects to tell
    assert brightness_spread(np.zeros((8, 8, 8), np.float32)) == 1.0
    assert auto_input_log([alike]) == (0.0, [brightness_spread(alike)])
    offset, spreads = auto_input_log([mixed, mixed, alike])  # the median volume decides
    assert offset == pytest.approx(float(np.median(mixed))) and min(spreads[:2]) >= SPREAD
    assert auto_input_log([np.maximum(mixed - np.median(mixed), 0)])[0] == MIN_OFFSET  # a zero background


def _nuclei_on(background: str, radius: float = 4.0, shape: tuple[int, int, int] = (32, 96, 96)) -> np.ndarray:
    """A 0..100 volume of about 150 jittered spheres of ``radius`` (camera counts 60 above the background), on a
    ``"flat"`` background of 70 or on an ``"uneven"`` one that swings between 10 and 130 over tens of voxels."""
    from scipy import ndimage

    rng = np.random.default_rng(1)
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    volume = np.full(shape, 70.0, np.float32)
    if background == "uneven":
        volume += 60 * np.sin(x / 7 + 1) * np.cos(y / 9)
    step = int(3 * radius)
    for cz in range(step // 2, shape[0], step):
        for cy in range(step // 2, shape[1], step):
            for cx in range(step // 2, shape[2], step):
                jz, jy, jx = rng.uniform(-radius / 3, radius / 3, 3)
                volume[(z - cz - jz) ** 2 + (y - cy - jy) ** 2 + (x - cx - jx) ** 2 <= radius**2] += 60
    noise = rng.normal(0, 3.0, shape)
    return remap(ndimage.gaussian_filter(volume, 0.7) + noise)


def test_the_background_is_subtracted_where_it_varies_as_much_as_the_nuclei_stand_above_it():
    flat, uneven = _nuclei_on("flat"), _nuclei_on("uneven")
    assert nucleus_radius(flat, (1.0, 1.0, 1.0)) == pytest.approx(4.0, abs=1.0)
    assert background_unevenness(flat, (4, 4, 4)) < 0.3
    assert background_unevenness(uneven, (4, 4, 4)) > 1.5 * UNEVEN
    radius, unevenness, nucleus = auto_input_background([uneven], (1.0, 1.0, 1.0))
    assert radius == 4 and radius >= nucleus and unevenness[0] > UNEVEN
    assert auto_input_background([flat], (1.0, 1.0, 1.0))[0] == 0
    assert auto_input_background([flat, uneven, flat], (1.0, 1.0, 1.0))[0] == 0  # the median volume decides
    assert auto_input_background([], (1.0, 1.0, 1.0)) == (0, [], 0.0)


def test_a_constant_volume_and_nuclei_too_large_for_the_box_leave_the_background_alone():
    assert background_unevenness(np.full((16, 32, 32), 7.0, np.float32), (4, 4, 4)) == 0.0
    assert nucleus_radius(np.full((16, 32, 32), 7.0, np.float32), (1.0, 1.0, 1.0)) == 0.0
    large = _nuclei_on("uneven", radius=11.0, shape=(48, 112, 112))
    radius, unevenness, nucleus = auto_input_background([large], (1.0, 1.0, 1.0))
    assert radius == 0 and unevenness == [] and nucleus > MAX_BACKGROUND_RADIUS


def test_the_background_box_follows_the_voxel_size():
    assert background_radius_for(None, (2.0, 1.0, 1.0)) == (0, 0, 0) == background_radius_for(0, (1.0, 1.0, 1.0))
    assert background_radius_for(5, (2.0, 1.0, 1.0)) == (3, 5, 5)  # rounded up: at least as wide as the nuclei
    assert background_radius_for(4, (2.0, 1.0, 1.0)) == (2, 4, 4)
    assert background_radius_for(3, (8.0, 1.0, 1.0)) == (1, 3, 3)  # at least one voxel on every axis


def test_the_brightness_spread_of_packed_nuclei_is_read_above_the_space_between_them():
    import dataclasses

    from wnet_zoo.training.input_choices import SPREAD, background_level, brightness_spread

    from phantoms import SETTINGS, make_phantom

    packed = remap(make_phantom("packed")[0])  # nuclei fill 46 % of the volume: the median is no background ...
    assert background_level(packed) < np.median(packed) - 5  # ... the space between the nuclei is
    assert brightness_spread(packed) < 1.5
    SETTINGS["packed_bright"] = dataclasses.replace(SETTINGS["packed"], bright_fraction=0.15, bright_factor=8)
    try:
        bright = remap(make_phantom("packed_bright")[0])  # 15 % of the nuclei 8x brighter
    finally:
        del SETTINGS["packed_bright"]
    assert brightness_spread(bright) > SPREAD  # 4.4; read above the volume's median it was 1.8
    assert background_level(np.full((8, 8, 8), 3.0, np.float32)) == 3.0

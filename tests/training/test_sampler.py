import numpy as np
import pytest

from wnet_zoo.errors import UserError
from wnet_zoo.training.config import TrainConfig
from wnet_zoo.training.sampler import PatchSampler


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    """A 0..100 volume with structure in every patch (a jitter must not be mistaken for another position)."""
    return np.random.default_rng(1).uniform(0, 100, (20, 30, 30)).astype(np.float32)


def test_contrast_jitter_blends_each_plain_patch_with_a_grey(volume: np.ndarray):
    plain = np.concatenate(list(PatchSampler([volume], (8, 16, 16), 24, 4, seed=2).epoch(3)))
    jittered = np.concatenate(list(PatchSampler([volume], (8, 16, 16), 24, 4, seed=2, contrast_jitter=0.75).epoch(3)))
    contrasts = []
    for before, after in zip(plain, jittered, strict=True):
        # the same position, flips and turn: the jittered patch is a * plain + (1 - a) * grey
        slope, intercept = np.polyfit(before.ravel(), after.ravel(), 1)
        assert np.allclose(after, slope * before + intercept, atol=1e-3 * 100)
        assert 0.25 - 1e-4 <= slope <= 1 + 1e-4
        if slope < 1 - 1e-6:
            assert -1e-3 <= intercept / (1 - slope) <= 50 + 1e-3  # the grey
        contrasts.append(slope)
    assert 8 <= sum(c == 1 for c in np.round(contrasts, 6)) <= 16  # half the patches keep their contrast
    assert min(contrasts) < 0.4 and max(c for c in contrasts if c < 1) > 0.8  # the others: log-uniform on [0.25, 1]
    again = np.concatenate(list(PatchSampler([volume], (8, 16, 16), 24, 4, seed=2, contrast_jitter=0.75).epoch(3)))
    assert np.array_equal(again, jittered)  # seeded: a resumed run sees the same patches


def test_contrast_jitter_must_leave_some_contrast():
    assert TrainConfig(contrast_jitter=0.75).contrast_jitter == 0.75
    with pytest.raises(UserError, match=r"contrast_jitter must be in \[0, 1\)"):
        TrainConfig.from_dict({"contrast-jitter": 1.0})

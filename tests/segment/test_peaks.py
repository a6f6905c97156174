"""Seeds: local maxima under a footprint, as scikit-image finds them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.feature import peak_local_max

from wnet_zoo.segment.geometry import _ellipsoid
from wnet_zoo.segment.peaks import local_maxima


def scikit_image_peaks(image: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    found = np.zeros(image.shape, dtype=bool)
    found[tuple(peak_local_max(image, footprint=footprint, threshold_abs=0, exclude_border=False).T)] = True
    return found


@pytest.mark.parametrize(
    ("radius", "spacing"),
    [
        (3.0, (1.0, 1.0, 1.0)),
        (3.0, (2.0, 1.0, 1.0)),
        (2.0, (1.3, 1.0, 1.0)),
        (3.0, (3.5, 1.0, 1.0)),  # one plane thick: no neighbour along z
        (1.5, (1.0, 1.0, 1.0)),  # no 3 x 3 x 3 box inside: the whole footprint's filter
        (0.9, (1.0, 1.0, 1.0)),  # one voxel
    ],
)
def test_local_maxima_are_scikit_images_peaks(radius, spacing):
    rng = np.random.default_rng(0)
    image = ndimage.gaussian_filter(rng.random((30, 40, 36)), 1.5).astype(np.float32) - 0.5
    image[image < 0] = 0  # a background of zeros, as a distance map's
    image[5, 5:9, 5] = image.max()  # a plateau: every voxel of it a peak
    footprint = _ellipsoid(radius, spacing)
    found = local_maxima(image, footprint)
    assert found.any() and np.array_equal(found, scikit_image_peaks(image, footprint))


@pytest.mark.parametrize("radius", [3.0, 1.5])
def test_a_constant_image_has_no_peak(radius):
    footprint = _ellipsoid(radius, (1.0, 1.0, 1.0))
    for value in (0.0, 2.0):
        assert not local_maxima(np.full((10, 12, 14), value, dtype=np.float32), footprint).any()

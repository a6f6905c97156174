"""Local maxima under a footprint: the seeds of nucleus splitting."""

from __future__ import annotations

import numpy as np

_CANDIDATES_AT_ONCE = 1 << 16  # candidates compared per pass over the footprint: bounds the temporaries (~10 MB)


def local_maxima(image: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """The voxels of ``image`` above 0 that are the maximum of the footprint centred on them (edges repeated), as
    a bool mask: the peaks of scikit-image's ``peak_local_max(image, footprint=footprint, threshold_abs=0,
    exclude_border=False)``, none for a constant image (unless the footprint is one voxel).

    scikit-image runs a maximum filter with the whole footprint over every voxel (a 7 x 7 x 7 ball: about 120
    comparisons a voxel). A maximum of the footprint is a maximum of the box of 3 voxels a side inside it, a
    separable filter of 3 comparisons a voxel along each axis; those few candidates are then compared with the rest
    of the footprint. A footprint without that box (a radius under one voxel side) takes the whole filter.
    """
    from scipy import ndimage

    if footprint.size == 1 or image.size == 1:  # every voxel is its own footprint's maximum
        return image > 0
    half = np.asarray(footprint.shape) // 2
    box_half = np.minimum(half, 1)
    box = tuple(slice(h - b, h + b + 1) for h, b in zip(half, box_half, strict=True))
    if not footprint[box].all():
        peaks = image == ndimage.maximum_filter(image, footprint=footprint, mode="nearest")
        return peaks & (image > 0) if not peaks.all() else np.zeros(image.shape, dtype=bool)
    peaks = image == ndimage.maximum_filter(image, size=footprint[box].shape, mode="nearest")
    if peaks.all():  # a constant image (every voxel its box's maximum): no peak, as scikit-image
        return np.zeros(image.shape, dtype=bool)
    peaks &= image > 0
    candidates = np.flatnonzero(peaks)
    offsets = np.argwhere(footprint) - half
    offsets = offsets[(np.abs(offsets) > box_half).any(axis=1)]  # the box is compared already
    flat = image.ravel()
    kept = np.ones(candidates.size, dtype=bool)
    for start in range(0, candidates.size, _CANDIDATES_AT_ONCE):
        chunk = candidates[start : start + _CANDIDATES_AT_ONCE]
        coordinates = np.unravel_index(chunk, image.shape)
        values = flat[chunk]
        # each axis's neighbour coordinate, clipped at the edge ('nearest'), for each offset along it
        shifted = [
            {o: np.clip(c + o, 0, n - 1) for o in np.unique(offsets[:, axis]).tolist()}
            for axis, (c, n) in enumerate(zip(coordinates, image.shape, strict=True))
        ]
        for dz, dy, dx in offsets.tolist():
            around = np.ravel_multi_index((shifted[0][dz], shifted[1][dy], shifted[2][dx]), image.shape)
            kept[start : start + chunk.size] &= values >= flat[around]
    peaks.ravel()[candidates[~kept]] = False
    return peaks

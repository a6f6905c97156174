"""Local maxima under a footprint: the seeds of nucleus splitting."""

from __future__ import annotations

import numpy as np

_OFFSETS_AT_ONCE = 16  # footprint offsets compared per numpy call: bounds the temporaries to 16 x the candidates


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
    candidates = np.argwhere(peaks)
    offsets = np.argwhere(footprint) - half
    offsets = offsets[(np.abs(offsets) > box_half).any(axis=1)]  # the box is compared already
    values = image[tuple(candidates.T)]
    top = np.asarray(image.shape) - 1
    kept = np.ones(len(candidates), dtype=bool)
    for start in range(0, len(offsets), _OFFSETS_AT_ONCE):
        around = np.clip(candidates[:, None, :] + offsets[None, start : start + _OFFSETS_AT_ONCE], 0, top)
        kept &= (values[:, None] >= image[around[..., 0], around[..., 1], around[..., 2]]).all(axis=1)
    peaks[tuple(candidates[~kept].T)] = False
    return peaks

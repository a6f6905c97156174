"""Reading and screening the training volumes once, at the start of a run."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from wnet_zoo.io.intensity import remap
from wnet_zoo.io.volumes import check_volume, collect_images, read_stack
from wnet_zoo.io.voxels import read_voxel_size
from wnet_zoo.segment.geometry import relative_spacing
from wnet_zoo.training.checks.screening import VolumeScreen, check_usable, screen_volume, smoothed, usable_corners
from wnet_zoo.training.config import TrainConfig
from wnet_zoo.training.sampler import resolve_patch
from wnet_zoo.triples import parse_triple


class TrainingData(NamedTuple):
    """The training volumes (remapped to 0..100), their files and patch size, and their screening (when on):
    one :class:`~wnet_zoo.training.checks.screening.VolumeScreen` and one array of usable patch positions per
    volume; the voxel size relative to its finest side (of the first volume that records one, else isotropic)."""

    paths: list[Path]
    volumes: list[np.ndarray]
    patch: tuple[int, int, int]
    screens: list[VolumeScreen]
    usable: list[np.ndarray] | None
    spacing: tuple[float, float, float]


def prepare_data(config: TrainConfig) -> TrainingData:
    """Read, screen and remap the training volumes and resolve the patch size; every check before anything
    is written (a volume without a usable patch is a ``UserError`` when ``config.screen``)."""
    paths = collect_images(config.images)
    volumes, screens, foregrounds = [], [], []
    for path in paths:
        raw = read_stack(path, config.channel)
        volume = check_volume(raw.astype(np.float32, copy=False), str(path))
        if config.screen:
            smooth = smoothed(raw)
            screens.append(screen_volume(raw, str(path), smooth))
            foregrounds.append(smooth > screens[-1].cut)
            del smooth
        volumes.append(remap(volume))
    sizes = [size for size in map(read_voxel_size, paths) if size is not None]
    spacing = relative_spacing(sizes[0][:3] if sizes else None)
    patch = resolve_patch(parse_triple(config.patch, "patch"), [v.shape for v in volumes])
    usable = None
    if config.screen:
        usable = []
        for foreground, screen in zip(foregrounds, screens, strict=True):
            usable.append(usable_corners(foreground, patch, config.min_foreground))
            check_usable(screen, usable[-1], patch)
    return TrainingData(paths, volumes, patch, screens, usable, spacing)

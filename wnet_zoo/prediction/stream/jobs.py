"""The description of a streaming prediction that every block's work reads: its grid and its settings."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wnet_zoo.errors import Naming, current_naming
from wnet_zoo.io.sources import Region, SourceSpec
from wnet_zoo.prediction.stream.options import DEFAULT_INSTANCE_HALO
from wnet_zoo.segment.options import NucleiOptions

FACE_AXES = (0, 1, 2)


@dataclass(frozen=True)
class BlockGrid:
    """Blocks of ``block`` voxels per axis (the last ones shorter) in raster order, x fastest."""

    shape: tuple[int, int, int]
    block: tuple[int, int, int]

    @property
    def counts(self) -> tuple[int, int, int]:
        """Blocks along z, y and x."""
        return tuple(-(-s // b) for s, b in zip(self.shape, self.block, strict=True))  # type: ignore[return-value]

    def __len__(self) -> int:
        return int(np.prod(self.counts))

    def corner(self, index: int) -> tuple[int, int, int]:
        """The block's position in the grid."""
        return tuple(int(i) for i in np.unravel_index(index, self.counts))  # type: ignore[return-value]

    def region(self, index: int) -> Region:
        """The block's voxels."""
        slices = [
            slice(c * b, min((c + 1) * b, s))
            for c, b, s in zip(self.corner(index), self.block, self.shape, strict=True)
        ]
        return (slices[0], slices[1], slices[2])

    def neighbour(self, index: int, axis: int) -> int | None:
        """The next block along ``axis``, if any."""
        corner = list(self.corner(index))
        corner[axis] += 1
        if corner[axis] >= self.counts[axis]:
            return None
        return int(np.ravel_multi_index(corner, self.counts))


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to do a phase of one image: plain data, sent once per task.

    ``work`` is the work folder holding the stores (on storage every worker sees); ``naming`` how messages
    name settings (the caller's, so a worker's error reads as the caller's would); ``input_background``
    the model's background subtraction (:class:`wnet_zoo.prediction.metadata.ModelMetadata`), which the half-max
    boundaries read the image through, as in memory.
    """

    source: SourceSpec
    model: Path
    work: Path
    shape: tuple[int, int, int]
    block: tuple[int, int, int]
    label_block: tuple[int, int, int]
    predictor: dict[str, Any]
    outputs: tuple[str, ...]
    chunk: int = 64
    low: float = 0.0
    high: float = 1.0
    foreground: int = 0
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    instance_halo: int = DEFAULT_INSTANCE_HALO
    nuclei: NucleiOptions = NucleiOptions()
    input_background: tuple[int, int, int] = (0, 0, 0)
    cache_bytes: int = 128 * 2**20
    naming: Naming = field(default_factory=current_naming)

    @property
    def grid(self) -> BlockGrid:
        """Blocks of the probability phase."""
        return BlockGrid(self.shape, self.block)

    @property
    def label_grid(self) -> BlockGrid:
        """Blocks of the labelling phases."""
        return BlockGrid(self.shape, self.label_block)

    def store(self, name: str) -> Path:
        """A work store: ``probabilities``, ``classes``, ``mask``, ``raw_labels`` or ``instances``."""
        return self.work / f"{name}.zarr"

    def done(self, phase: str, index: int) -> Path:
        """Where a finished block's summary is kept."""
        return self.work / "done" / phase / f"{index}.npz"

    def key(self) -> str:
        """Identifies this prediction (its work folder, input, model and tiling), for reusing tile outputs."""
        return json.dumps([str(self.work), str(self.source), _predictor_key(self), self.low, self.high], default=str)


def _predictor_key(job: Job) -> str:
    model = job.model.stat()
    return json.dumps([str(job.model), model.st_size, model.st_mtime_ns, job.predictor], default=str)

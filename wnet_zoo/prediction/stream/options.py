"""How streaming prediction cuts the work, light to import (the command line reads its defaults)."""

from __future__ import annotations

from dataclasses import dataclass

from wnet_zoo.errors import UserError, setting

FORMATS = ("zarr", "tiff")
DEFAULT_BLOCK = 192
DEFAULT_LABEL_BLOCK = 128
DEFAULT_CHUNK = 64
# Each block's nuclei stages see this far beyond it: the half-max levels are read twice (per piece of the mask,
# then per nucleus), and at 24 one voxel of the test suite's streamed labels differed from the in-memory ones.
DEFAULT_INSTANCE_HALO = 32


@dataclass(frozen=True)
class StreamOptions:
    """How streaming prediction cuts the work.

    Attributes:
        block: output block edge of the probability phase (a multiple of ``chunk``).
        label_block: block edge of the mask and instance phases (a multiple of ``chunk``).
        chunk: zarr chunk edge of the results.
        instance_halo: voxels added around a block when splitting nuclei; nuclei (and clumps of them)
            smaller than this get the labels in-memory prediction gives.
        cache_mb: tile outputs kept for the next block, in MiB.
    """

    block: int = DEFAULT_BLOCK
    label_block: int = DEFAULT_LABEL_BLOCK
    chunk: int = DEFAULT_CHUNK
    instance_halo: int = DEFAULT_INSTANCE_HALO
    cache_mb: int = 128

    def __post_init__(self) -> None:
        if self.chunk < 1:
            raise UserError(f"{setting('chunk', self.chunk)}: give a positive chunk edge, e.g. 64")
        for name, value in (("block", self.block), ("label_block", self.label_block)):
            if value < self.chunk or value % self.chunk:
                wrong = setting(name, value)
                raise UserError(f"{wrong}: give a positive multiple of the chunk size {self.chunk}, e.g. 192")
        if self.instance_halo < 1:
            raise UserError(f"{setting('instance_halo', self.instance_halo)}: give at least 1 voxel, e.g. 32")

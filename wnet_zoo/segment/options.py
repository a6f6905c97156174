"""How the foreground becomes nuclei: the settings of :func:`~wnet_zoo.segment.nuclei.instances`, light to import."""

from __future__ import annotations

from dataclasses import dataclass

from wnet_zoo.errors import UserError, setting

DEFAULT_MIN_SIZE = 10
# Half a voxel of smoothing: by 1, the seeds of packed nuclei 3 to 5 voxels in radius run together. Seeds stay 3
# apart: at 2, streamed labels differed from in-memory ones on a labyrinthine mask (benchmarks/README.md).
DEFAULT_SPOT_SIGMA = 0.5
DEFAULT_MIN_DISTANCE = 3.0
DEFAULT_RELATIVE_MIN_SIZE = 0.1
BOUNDARIES = ("auto", "mask", "half_max")


@dataclass(frozen=True)
class NucleiOptions:
    """How the prediction pipeline turns the foreground class into nuclei (see
    :func:`~wnet_zoo.segment.nuclei.instances`).

    Attributes:
        min_size: nuclei with fewer voxels are removed.
        relative_min_size: nuclei under this fraction of the typical nucleus volume are removed too (0: off).
        boundary: ``"half_max"`` (each nucleus's edge where its smoothed intensity is halfway up from its
            surroundings) or ``"mask"`` (the model's foreground as it is).
        spot_sigma: smoothing of the distance map before seeding, in units of the finest voxel side.
        min_distance: seeds closer than this (in units of the finest voxel side) merge.
    """

    min_size: int = DEFAULT_MIN_SIZE
    relative_min_size: float = DEFAULT_RELATIVE_MIN_SIZE
    boundary: str = "half_max"
    spot_sigma: float = DEFAULT_SPOT_SIGMA
    min_distance: float = DEFAULT_MIN_DISTANCE

    def validate(self) -> None:
        """Raise ``UserError`` for settings that cannot split nuclei."""
        if self.boundary not in BOUNDARIES:
            raise UserError(f"{setting('boundary', self.boundary)}: choose one of {', '.join(BOUNDARIES)}")
        if not 0 <= self.relative_min_size < 1:
            wrong = setting("relative_min_size", self.relative_min_size)
            raise UserError(f"{wrong}: give a fraction in [0, 1), e.g. 0.1")
        if self.min_size < 0:
            raise UserError(f"{setting('min_size', self.min_size)}: give a number of voxels >= 0")

    def min_size_for(self, typical: float) -> int:
        """The smallest nucleus kept, given the typical nucleus volume (see
        :func:`~wnet_zoo.segment.measure.typical_volume`)."""
        return max(self.min_size, int(self.relative_min_size * typical))

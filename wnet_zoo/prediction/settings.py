"""The settings of prediction, as frozen objects built once (by the CLI, or by a Python caller) and passed down.

:class:`Tiling` says how a volume is cut into windows and stitched back, :class:`EngineSettings` where and how
the windows run. Both check their values when made, so that a bad value is refused before any work.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from wnet_zoo.errors import UserError, setting
from wnet_zoo.triples import parse_triple

NORMS = ("global", "tile")
DEVICES = ("auto", "cuda", "tensorrt", "openvino", "cpu")
BLEND_MODES = ("gaussian", "constant")
DEFAULT_TILE = (64, 64, 64)
"""The window when neither the caller nor the model (its training patch) gives one: CellSeg3D's 64^3."""
GPU_BATCH = 4
OUTPUTS = ("probabilities", "mask", "raw_mask", "instances")
"""``mask`` is the foreground the instances describe (``instances > 0``: refined boundaries, small nuclei
dropped), so the two agree voxel for voxel; ``raw_mask`` is the model's nuclei class as it is (arg-max)."""
DEFAULT_OUTPUTS = ("mask", "instances")
NEEDS_NUCLEI = ("mask", "instances")
"""The outputs made from the nuclei (and so from the instance pipeline)."""


def needs_nuclei(outputs: Iterable[str]) -> bool:
    """Whether any of ``outputs`` is made from the nuclei (see :data:`NEEDS_NUCLEI`)."""
    return any(name in NEEDS_NUCLEI for name in outputs)


@dataclass(frozen=True)
class Tiling:
    """How a volume is cut into windows and stitched back.

    Attributes:
        tile: (z, y, x) window, multiples of the model's spatial multiple (8); one size or ``"z,y,x"`` are
            accepted too. None: the training patch recorded in the model, else :data:`DEFAULT_TILE`.
        overlap: fraction of a window shared with its neighbour, in [0, 1).
        blend: ``gaussian`` (MONAI's importance map at sigma 0.125 of the window) or ``constant``.
        norm: ``global`` (the whole volume to 0..100 once, as the model was trained) or ``tile`` (each window
            on its own; for comparison only).
    """

    tile: tuple[int, int, int] | None = None
    overlap: float = 0.25
    blend: str = "gaussian"
    norm: str = "global"

    def __post_init__(self) -> None:
        object.__setattr__(self, "tile", parse_triple(self.tile, "tile"))
        object.__setattr__(self, "overlap", float(self.overlap))
        if self.blend not in BLEND_MODES:
            raise UserError(f"{setting('blend', self.blend)}: choose one of {', '.join(BLEND_MODES)}")
        if self.norm not in NORMS:
            raise UserError(f"{setting('norm', self.norm)}: choose one of {', '.join(NORMS)}")
        if not 0 <= self.overlap < 1:
            raise UserError(f"{setting('overlap', self.overlap)}: give a fraction in [0, 1), e.g. 0.25")


@dataclass(frozen=True)
class EngineSettings:
    """Where and how the windows run.

    Attributes:
        device: ``auto``, ``cuda``, ``tensorrt``, ``openvino`` or ``cpu`` (see
            :func:`wnet_zoo.prediction.runtime.open_engine`).
        threads: CPU threads (None or 0: all cores).
        batch: windows per engine run (None: 4 on GPUs, 1 on CPUs); halved when too large for the device.
    """

    device: str = "auto"
    threads: int | None = None
    batch: int | None = None

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise UserError(f"{setting('device', self.device)}: choose one of {', '.join(DEVICES)}")
        if self.threads is not None and self.threads < 0:
            raise UserError(f"{setting('threads', self.threads)}: give a number of threads, or 0 for all cores")
        if self.batch is not None and self.batch < 1:
            raise UserError(f"{setting('batch', self.batch)}: give a positive number of tiles")


def settings_from(
    tiling: Tiling | None, engine: EngineSettings | None, keywords: dict[str, Any]
) -> tuple[Tiling, EngineSettings]:
    """The settings objects, from the objects given or from their fields given as keywords (``tile=32``)."""
    tiling_keys = {field.name for field in fields(Tiling)}
    engine_keys = {field.name for field in fields(EngineSettings)}
    unknown = sorted(set(keywords) - tiling_keys - engine_keys)
    if unknown:
        raise TypeError(f"unexpected keyword argument {unknown[0]!r}")
    for given, keys in ((tiling, tiling_keys), (engine, engine_keys)):
        if given is not None and keys & set(keywords):
            raise TypeError(f"give {type(given).__name__} or its fields as keywords, not both")
    tiling = tiling or Tiling(**{k: v for k, v in keywords.items() if k in tiling_keys})
    engine = engine or EngineSettings(**{k: v for k, v in keywords.items() if k in engine_keys})
    return tiling, engine


def settings_record(tiling: Tiling, engine: EngineSettings) -> dict[str, Any]:
    """Both as one plain dict (the record of a streaming run, whose resume checks it is unchanged)."""
    tile = None if tiling.tile is None else list(tiling.tile)
    return {
        "device": engine.device,
        "threads": engine.threads,
        "tile": tile,
        "overlap": tiling.overlap,
        "blend": tiling.blend,
        "norm": tiling.norm,
        "batch": engine.batch,
    }

"""One tiling plan for sliding-window inference: MONAI's window positions and importance maps.

A :class:`TilePlan` fixes, for a volume shape, a tile size and an overlap, everything
``monai.inferers.sliding_window_inference`` would do:

* an axis shorter than the tile is padded to the tile (``diff // 2`` before, the rest after, constant value)
  and cropped back afterwards; no other axis is padded;
* windows start at multiples of the scan interval ``int(tile * (1 - overlap))`` (at least 1; the whole
  axis when the tile equals it), the last one moved back to end flush with the axis;
* each window's output is weighted by the importance map (MONAI's Gaussian at ``sigma_scale`` 0.125, or
  ones), summed, and divided by the summed weights.

Tile outputs can be blended in two ways that give bitwise the same numbers: :class:`Blender` adds tiles
into whole-volume buffers as they arrive, and :meth:`TilePlan.blend_region` computes any output block from
only the tiles covering it (for a streaming or Dask executor: a block needs the tiles of
:meth:`TilePlan.tiles_covering`, which read :meth:`TilePlan.source_region`: the block plus at most a tile of
halo).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from wnet_zoo.errors import UserError, setting
from wnet_zoo.io.sources import Region
from wnet_zoo.prediction.settings import BLEND_MODES

SIGMA_SCALE = 0.125
_MIN_WEIGHT = 1e-3  # MONAI clamps the importance map to at least this (or its own minimum if larger)


def importance_map(tile: Sequence[int], blend: str = "gaussian", sigma_scale: float = SIGMA_SCALE) -> np.ndarray:
    """MONAI's ``compute_importance_map`` for a 3-D tile, float32: a separable Gaussian or ones."""
    if blend == "constant":
        return np.ones(tuple(tile), dtype=np.float32)
    if blend != "gaussian":
        raise UserError(f"{setting('blend', blend)}: choose one of {', '.join(BLEND_MODES)}")
    weights: np.ndarray | None = None
    for axis, size in enumerate(tile):
        x = np.arange(-(size - 1) / 2.0, (size - 1) / 2.0 + 1, dtype=np.float32)
        sigma = np.float32(size * sigma_scale)
        curve = np.exp(x**2 / (np.float32(-2) * sigma**2)).astype(np.float32)
        weights = curve if axis == 0 else weights[..., None] * curve[(None,) * axis]  # type: ignore[index]
    assert weights is not None
    floor = max(float(weights.min()), _MIN_WEIGHT)
    return np.maximum(weights, np.float32(floor)).astype(np.float32)


def scan_starts(size: int, tile: int, overlap: float) -> tuple[int, ...]:
    """Window starts along one (padded) axis, as MONAI's ``_get_scan_interval`` and ``dense_patch_slices``."""
    interval = tile if tile == size else max(int(tile * (1 - overlap)), 1)
    count = math.ceil(size / interval)
    windows = next((d + 1 for d in range(count) if d * interval + tile >= size), 1)
    return tuple(i * interval - max(i * interval + tile - size, 0) for i in range(windows))


@dataclass(frozen=True, eq=False)
class TilePlan:
    """Where the tiles of a volume go and how their outputs are weighted.

    Attributes:
        shape: the volume's (z, y, x) shape.
        tile: the (z, y, x) tile shape, the shape of every model input.
        overlap: fraction of a tile shared with the next one, per axis, in [0, 1).
        blend: ``"gaussian"`` (MONAI's importance map, sigma = 0.125 * tile) or ``"constant"``.
    """

    shape: tuple[int, int, int]
    tile: tuple[int, int, int]
    overlap: tuple[float, float, float]
    blend: str = "gaussian"
    pad: tuple[tuple[int, int], ...] = field(init=False)
    tiles: tuple[Region, ...] = field(init=False)
    weight: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if any(not 0 <= o < 1 for o in self.overlap):
            raise UserError(f"{setting('overlap', self.overlap[0])}: give a fraction in [0, 1), e.g. 0.25")
        missing = [max(t - s, 0) for s, t in zip(self.shape, self.tile, strict=True)]
        pad = tuple((m // 2, m - m // 2) for m in missing)
        padded = tuple(s + m for s, m in zip(self.shape, missing, strict=True))
        starts = [scan_starts(p, t, o) for p, t, o in zip(padded, self.tile, self.overlap, strict=True)]
        tiles = tuple(
            tuple(slice(s, s + t) for s, t in zip(corner, self.tile, strict=True))
            for corner in itertools.product(*starts)
        )
        object.__setattr__(self, "pad", pad)
        object.__setattr__(self, "tiles", tiles)
        object.__setattr__(self, "weight", importance_map(self.tile, self.blend))

    @classmethod
    def create(
        cls, shape: Sequence[int], tile: Sequence[int], overlap: float | Sequence[float], blend: str = "gaussian"
    ) -> TilePlan:
        """A plan from plain sequences; a single overlap applies to every axis."""
        overlaps = (float(overlap),) * 3 if isinstance(overlap, int | float) else tuple(float(o) for o in overlap)
        return cls(tuple(int(s) for s in shape), tuple(int(t) for t in tile), overlaps, blend)  # type: ignore[arg-type]

    @property
    def padded_shape(self) -> tuple[int, int, int]:
        """The shape the tiles are laid on: the volume with short axes padded to the tile."""
        return tuple(s + b + a for s, (b, a) in zip(self.shape, self.pad, strict=True))  # type: ignore[return-value]

    def pad_volume(self, volume: np.ndarray, value: float = 0.0, edge: bool = False) -> np.ndarray:
        """``volume`` (z, y, x) padded like MONAI pads it (a constant ``value``), or with its edge voxels repeated
        (``edge``); itself if nothing to pad."""
        if not any(b or a for b, a in self.pad):
            return volume
        if edge:
            return np.pad(volume, self.pad, mode="edge")
        return np.pad(volume, self.pad, mode="constant", constant_values=value)

    def crop(self, array: np.ndarray) -> np.ndarray:
        """The volume part of an array laid on the padded shape (its last three axes)."""
        region = tuple(slice(b, b + s) for s, (b, _) in zip(self.shape, self.pad, strict=True))
        return array[(..., *region)]

    def tiles_covering(self, region: Region) -> list[int]:
        """Indices (in plan order) of the tiles that overlap ``region``, given in volume coordinates."""
        padded = self._to_padded(region)
        return [
            i
            for i, tile in enumerate(self.tiles)
            if all(t.start < r.stop and r.start < t.stop for t, r in zip(tile, padded, strict=True))
        ]

    def source_region(self, region: Region) -> Region:
        """The part of the padded volume the tiles covering ``region`` read: the block plus its halo."""
        covering = [self.tiles[i] for i in self.tiles_covering(region)]
        starts = [min(tile[axis].start for tile in covering) for axis in range(3)]
        stops = [max(tile[axis].stop for tile in covering) for axis in range(3)]
        return (slice(starts[0], stops[0]), slice(starts[1], stops[1]), slice(starts[2], stops[2]))

    def blend_region(
        self, region: Region, outputs: Mapping[int, np.ndarray] | Callable[[int], np.ndarray]
    ) -> np.ndarray:
        """The blended output (K, *block) of one block of the volume from the tiles covering it.

        Args:
            region: the block, three slices with explicit bounds in volume coordinates.
            outputs: tile index -> that tile's output (K, *tile); only the covering tiles are asked for.

        Equal, bit for bit, to the same block of :meth:`Blender.result` fed every tile.
        """
        get = outputs if callable(outputs) else outputs.__getitem__
        padded = self._to_padded(region)
        block = tuple(r.stop - r.start for r in padded)
        total: np.ndarray | None = None
        count = np.zeros(block, dtype=np.float32)
        for index in self.tiles_covering(region):
            tile = self.tiles[index]
            pairs = list(zip(tile, padded, strict=True))
            inside = [(max(t.start, r.start), min(t.stop, r.stop)) for t, r in pairs]
            in_tile = tuple(slice(a - t.start, b - t.start) for (a, b), (t, _) in zip(inside, pairs, strict=True))
            in_block = tuple(slice(a - r.start, b - r.start) for (a, b), (_, r) in zip(inside, pairs, strict=True))
            output = np.asarray(get(index))
            if total is None:
                total = np.zeros((output.shape[0], *block), dtype=np.float32)
            total[(slice(None), *in_block)] += output[(slice(None), *in_tile)] * self.weight[in_tile]
            count[in_block] += self.weight[in_tile]
        assert total is not None, "a region inside the volume is always covered"
        return total / count

    def _to_padded(self, region: Region) -> Region:
        for r, s in zip(region, self.shape, strict=True):
            if r.start is None or r.stop is None or not 0 <= r.start < r.stop <= s:
                raise ValueError(f"region {region} is not a non-empty block inside the volume {self.shape}")
        shifted = [slice(r.start + b, r.stop + b) for r, (b, _) in zip(region, self.pad, strict=True)]
        return (shifted[0], shifted[1], shifted[2])


class Blender:
    """Whole-volume accumulation of tile outputs, in the order MONAI does it (sum of weighted outputs,
    divided by the summed weights of all tiles)."""

    def __init__(self, plan: TilePlan, channels: int) -> None:
        self.plan = plan
        self.total = np.zeros((channels, *plan.padded_shape), dtype=np.float32)
        self.count = np.zeros(plan.padded_shape, dtype=np.float32)
        for tile in plan.tiles:
            self.count[tile] += plan.weight

    def add(self, index: int, output: np.ndarray) -> None:
        """Add the output (K, *tile) of tile ``index``."""
        self.total[(slice(None), *self.plan.tiles[index])] += output * self.plan.weight

    def result(self) -> np.ndarray:
        """The blended output (K, z, y, x) on the volume's own shape; call once (it divides in place)."""
        self.total /= self.count
        return np.ascontiguousarray(self.plan.crop(self.total))

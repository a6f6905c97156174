"""Reading volumes, CellSeg3D's 0..100 remap, and the seeded random patch sampler used for training."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from .errors import UserError
from .model import SPATIAL_MULTIPLE

TIFF_SUFFIXES = (".tif", ".tiff")
DEFAULT_PATCH = 64


def collect_images(paths: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders into a sorted list of TIFF files; a folder contributes its ``*.tif[f]``."""
    if not paths:
        raise UserError("no images given: pass one or more TIFF files or folders")
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            tiffs = sorted(p for p in path.iterdir() if p.suffix.lower() in TIFF_SUFFIXES and p.is_file())
            if not tiffs:
                raise UserError(f"{path}: folder holds no .tif/.tiff files; point to a folder of 3-D TIFF stacks")
            found += tiffs
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"{path}: no such file or folder; check the path")
    return found


def read_volume(path: str | Path, channel: int | None = None) -> np.ndarray:
    """Read a 3-D (Z, Y, X) volume from a TIFF file as float32, checked for use.

    Args:
        path: a TIFF file (any integer or float dtype).
        channel: for 4-D (C, Z, Y, X) stacks, the channel to use.

    Raises:
        UserError: not a TIFF, wrong dimensionality, NaN/Inf voxels, or a constant image.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; check the path")
    try:
        data = tifffile.imread(path)
    except Exception as error:  # tifffile raises several types for non-TIFF input
        raise UserError(f"{path}: not a readable TIFF file ({type(error).__name__}); give a 3-D TIFF stack") from None
    data = np.asarray(data)
    data = _select_channel(path, data, channel)
    volume = data.astype(np.float32, copy=False)
    if not np.isfinite(volume).all():
        raise UserError(f"{path}: contains NaN or Inf voxels; replace them (e.g. with 0) before use")
    if volume.min() == volume.max():
        raise UserError(
            f"{path}: every voxel has the value {volume.min():g}; a constant image holds nothing to segment"
        )
    return volume


def _select_channel(path: Path, data: np.ndarray, channel: int | None) -> np.ndarray:
    squeezed = np.squeeze(data) if data.ndim > 3 else data
    if channel is None:
        if squeezed.ndim == 3:
            return squeezed
        if squeezed.ndim == 4:
            raise UserError(f"{path}: 4-D stack of shape {data.shape} (C, Z, Y, X); choose a channel with --channel N")
        raise UserError(f"{path}: {data.ndim}-D image of shape {data.shape}; a 3-D (Z, Y, X) stack is needed")
    if squeezed.ndim != 4:
        raise UserError(f"{path}: --channel needs a 4-D (C, Z, Y, X) stack, this one has shape {data.shape}")
    if not 0 <= channel < squeezed.shape[0]:
        raise UserError(f"{path}: --channel {channel} out of range; the stack has {squeezed.shape[0]} channels")
    return squeezed[channel]


def remap(volume: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """CellSeg3D's normalisation: ``(v - min) / (max - min) * 100`` over the whole volume, as float32.

    ``low`` and ``high`` override the minimum and maximum (for statistics computed elsewhere).
    """
    volume = np.asarray(volume, dtype=np.float32)
    low = float(volume.min()) if low is None else low
    high = float(volume.max()) if high is None else high
    return ((volume - np.float32(low)) / np.float32(high - low) * np.float32(100.0)).astype(np.float32, copy=False)


def parse_triple(text: str | int | Sequence[int] | None, name: str) -> tuple[int, int, int] | None:
    """Parse ``"64"`` or ``"32,64,64"`` (or an int / sequence) into a (z, y, x) tuple of positive ints."""
    if text is None:
        return None
    if isinstance(text, int):
        values = [text]
    elif isinstance(text, str):
        try:
            values = [int(part) for part in text.replace("x", ",").split(",") if part.strip()]
        except ValueError:
            raise UserError(f"--{name} {text!r}: give one size or z,y,x, e.g. 64 or 32,64,64") from None
    else:
        values = [int(v) for v in text]
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or any(v <= 0 for v in values):
        raise UserError(f"--{name} {text!r}: give one size or z,y,x of positive integers, e.g. 64 or 32,64,64")
    return (values[0], values[1], values[2])


def resolve_patch(patch: tuple[int, int, int] | None, shapes: Sequence[tuple[int, ...]]) -> tuple[int, int, int]:
    """The training patch: the user's (checked) or 64 per axis clipped to what the smallest volume allows."""
    smallest = tuple(min(shape[axis] for shape in shapes) for axis in range(3))
    if patch is None:
        fitted = tuple(min(DEFAULT_PATCH, size // SPATIAL_MULTIPLE * SPATIAL_MULTIPLE) for size in smallest)
        if min(fitted) == 0:
            raise UserError(
                f"a volume of shape {smallest} is smaller than {SPATIAL_MULTIPLE} voxels along an axis; "
                f"WNet3D needs at least {SPATIAL_MULTIPLE} per axis"
            )
        return fitted  # type: ignore[return-value]
    if any(p % SPATIAL_MULTIPLE for p in patch):
        raise UserError(
            f"--patch {_fmt(patch)}: each size must be a multiple of {SPATIAL_MULTIPLE}, e.g. 64 or 32,64,64"
        )
    if any(p > s for p, s in zip(patch, smallest, strict=True)):
        raise UserError(
            f"--patch {_fmt(patch)} is larger than the smallest volume {_fmt(smallest)}; choose a smaller patch"
        )
    return patch


def _fmt(values: Sequence[int]) -> str:
    return ",".join(str(v) for v in values)


@dataclass
class PatchSampler:
    """Seeded random patches with flips and 90° rotations, the same sequence for the same seed and epoch.

    Each epoch draws ``samples_per_epoch`` patches from every volume (volumes already remapped) and yields
    them shuffled in batches of ``batch`` as float32 arrays (B, 1, Z, Y, X). The random stream of epoch
    ``e`` depends only on ``(seed, e)``, so a resumed run samples exactly what an uninterrupted one does.
    """

    volumes: Sequence[np.ndarray]
    patch: tuple[int, int, int]
    samples_per_epoch: int
    batch: int
    seed: int

    def steps_per_epoch(self) -> int:
        """Number of batches in one epoch."""
        return -(-len(self.volumes) * self.samples_per_epoch // self.batch)

    def epoch(self, epoch: int) -> Iterator[np.ndarray]:
        """The batches of one (0-based) epoch."""
        rng = np.random.default_rng([self.seed, epoch])
        picks = [(v, rng) for v in range(len(self.volumes)) for _ in range(self.samples_per_epoch)]
        patches = [self._sample(self.volumes[v], r) for v, r in picks]
        order = rng.permutation(len(patches))
        for start in range(0, len(order), self.batch):
            chosen = [patches[i] for i in order[start : start + self.batch]]
            yield np.stack(chosen)[:, None]

    def _sample(self, volume: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        corner = [int(rng.integers(0, size - p + 1)) for size, p in zip(volume.shape, self.patch, strict=True)]
        region = volume[tuple(slice(c, c + p) for c, p in zip(corner, self.patch, strict=True))]
        for axis in range(3):
            if rng.random() < 0.5:
                region = np.flip(region, axis)
        turns = int(rng.integers(4))
        if self.patch[1] != self.patch[2]:
            turns = 2 * (turns % 2)  # a quarter turn would change the patch shape: half turns only
        region = np.rot90(region, turns, axes=(1, 2))
        return np.ascontiguousarray(region, dtype=np.float32)

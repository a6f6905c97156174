"""Reading volumes, CellSeg3D's 0..100 remap, and the seeded random patch sampler used for training."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wnet_zoo.errors import UserError, setting
from wnet_zoo.io.tiff import open_tiff, quiet_tifffile

TIFF_SUFFIXES = (".tif", ".tiff")


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
    return check_volume(read_stack(path, channel).astype(np.float32, copy=False), str(path))


def read_stack(path: str | Path, channel: int | None = None) -> np.ndarray:
    """Read a 3-D (Z, Y, X) volume from a TIFF file in its stored dtype (for checks that need it, such as
    voxels at the dtype's maximum); not yet checked for NaN/Inf or constant values (see :func:`read_volume`).

    Raises:
        UserError: not a TIFF, or a stack that is not 3-D (4-D with ``channel``).
    """
    path = Path(path)
    tif = open_tiff(path)
    try:
        series = tif.series[0]
        index, _ = select_axes(path, series.axes, series.shape, channel)
        with quiet_tifffile():
            data = series.asarray()
    except UserError:
        raise
    except Exception as error:  # tifffile raises several types for damaged input
        raise UserError(f"{path}: not a readable TIFF file ({type(error).__name__}); give a 3-D TIFF stack") from None
    finally:
        tif.close()
    return np.asarray(data[index])


def select_axes(
    name: str | Path, axes: str, shape: Sequence[int], channel: int | None
) -> tuple[tuple[int | slice, ...], tuple[int, int, int]]:
    """Where the 3-D (Z, Y, X) volume lies in an N-D array with named ``axes`` (tifffile's letters, or OME-Zarr's).

    Axes of length 1 are dropped, and one remaining axis besides Y and X is Z whatever its name (tifffile names
    axes it cannot tell Q, I, S or even C). Of two, the channel axis, which needs ``channel``, is the one named
    C (or samples S after X), else the first, as in (C, Z, Y, X). Returns the index
    that takes the volume (ints for dropped axes and the channel, full slices for Z, Y and X, in that order
    in the array) and the volume's shape.
    """
    axes, shape = axes.upper(), tuple(int(s) for s in shape)
    if len(axes) != len(shape) or "Y" not in axes or "X" not in axes or len(shape) < 3:
        raise UserError(f"{name}: {len(shape)}-D image of shape {shape}; a 3-D (Z, Y, X) stack is needed")
    last = len(axes) - 1
    others = [i for i, a in enumerate(axes) if a not in "YX" and shape[i] > 1]
    channels: list[int] = []
    if len(others) == 2:  # a channel axis: named C (or samples S after X), else the first, as in (C, Z, Y, X)
        named = [i for i in others if axes[i] == "C" or (axes[i] == "S" and i == last)]
        channels = named[:1] if len(named) == 1 else [next(i for i in others if axes[i] != "Z")]
    depth = [i for i in others if i not in channels]
    if not depth:  # a single plane, or less: no axis but Y and X holds more than one voxel
        check_extent((1, shape[axes.index("Y")], shape[axes.index("X")]), name, shape)
    if len(depth) != 1:
        raise UserError(f"{name}: {len(shape)}-D image of shape {shape}; a 3-D (Z, Y, X) stack is needed")
    if channels and channel is None:
        count = shape[channels[0]]
        raise UserError(
            f"{name}: {len(shape)}-D stack of shape {shape} holds {count} channels; "
            f"choose one with {setting('channel', _Placeholder('N'))}"
        )
    if not channels and channel is not None:
        raise UserError(
            f"{setting('channel', channel)}: the stack of shape {shape} has one channel in {name}; "
            f"drop {setting('channel')}"
        )
    if channels and not 0 <= channel < shape[channels[0]]:  # type: ignore[operator]
        raise UserError(
            f"{name}: {setting('channel', channel)} out of range; the stack has {shape[channels[0]]} channels"
        )
    spatial = (depth[0], axes.index("Y"), axes.index("X"))
    if sorted(spatial) != list(spatial):
        raise UserError(f"{name}: axes {axes} hold Z, Y and X out of order; save the stack as (Z, Y, X)")
    index = tuple(slice(None) if i in spatial else (channel if i in channels else 0) for i in range(len(shape)))
    extent = (shape[spatial[0]], shape[spatial[1]], shape[spatial[2]])
    check_extent(extent, name)
    return index, extent  # type: ignore[return-value]


MIN_EXTENT = 3
"""The fewest voxels along any axis of a volume to segment: a nucleus must have a plane of its own with a plane of
background on either side. Thin confocal stacks of 3 to 6 planes are ordinary data and segment well enough."""


def check_extent(shape: Sequence[int], name: str | Path, shown: Sequence[int] | None = None) -> None:
    """Raise ``UserError`` for a (Z, Y, X) shape too small to hold a nucleus, every axis alike (``shown``: the
    file's own shape, for the message)."""
    shape = tuple(int(s) for s in shape)
    shown = tuple(int(s) for s in shown) if shown is not None else shape
    if shape.count(1) == 1 and min(s for s in shape if s != 1) >= MIN_EXTENT:
        raise UserError(f"{name}: shape {shown} is a single 2-D plane; a 3-D (Z, Y, X) stack is needed")
    if min(shape) < MIN_EXTENT:
        raise UserError(
            f"{name}: shape {shown} is too small: every axis needs at least {MIN_EXTENT} voxels (a nucleus must "
            "fit); give a larger 3-D stack"
        )


def check_volume(volume: np.ndarray, name: str = "image") -> np.ndarray:
    """``volume`` itself if it is usable: 3-D, finite and not constant; else a ``UserError`` naming ``name``."""
    if volume.ndim != 3:
        raise UserError(f"{name}: {volume.ndim}-D array of shape {volume.shape}; a 3-D (Z, Y, X) volume is needed")
    check_extent(volume.shape, name)
    if not np.isfinite(volume).all():
        raise UserError(f"{name}: contains NaN or Inf voxels; replace them (e.g. with 0) before use")
    if volume.min() == volume.max():
        raise UserError(
            f"{name}: every voxel has the value {volume.min():g}; a constant image holds nothing to segment"
        )
    return volume


class _Placeholder:
    """A value the user chooses, shown as its name (``channel=N``, ``--channel N``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name

    __str__ = __repr__

"""Reading volumes, CellSeg3D's 0..100 remap, and the seeded random patch sampler used for training."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import tifffile

from .architecture import SPATIAL_MULTIPLE
from .errors import UserError

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


@contextlib.contextmanager
def quiet_tifffile() -> Iterator[list[logging.LogRecord]]:
    """Keep tifffile's log messages (one per damaged page or strip, thousands for a damaged stack)
    off the user's terminal; yield this thread's log records, which tell a damaged file from a whole one."""
    logger = logging.getLogger("tifffile")
    drop = _Drop(threading.get_ident())
    logger.addFilter(drop)
    try:
        yield drop.records
    finally:
        logger.removeFilter(drop)


class _Drop(logging.Filter):
    """Drops every tifffile record; keeps those of one thread (other threads may read other files meanwhile)."""

    def __init__(self, thread: int) -> None:
        super().__init__()
        self.thread = thread
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if threading.get_ident() == self.thread:  # a filter runs on the logging thread (record.thread may be off)
            self.records.append(record)
        return False


def open_tiff(path: str | Path) -> tifffile.TiffFile:
    """Open a TIFF file (the caller closes it) whose pixels are all in the file.

    A header can claim far more than the file holds (a copy cut short, a disk that filled up): reading it
    block by block would then run over data that is not there, so the claim is checked against the file's size
    before any pixel is read.

    Raises:
        UserError: no such file, not a TIFF, or a truncated one.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; check the path")
    with quiet_tifffile() as records:
        try:
            tif = tifffile.TiffFile(path)
            series = tif.series[0]
        except Exception as error:  # tifffile raises several types for non-TIFF input
            raise UserError(
                f"{path}: not a readable TIFF file ({type(error).__name__}); give a 3-D TIFF stack"
            ) from None
        try:
            _check_complete(path, series, records)
        except BaseException:
            tif.close()
            raise
    return tif


_DAMAGE = ("invalid page offset", "missing data")  # tifffile's words for a page chain cut short, absent planes


def _check_complete(path: Path, series: Any, records: list[logging.LogRecord]) -> None:
    fix = "copy it again, or save it anew"
    size = path.stat().st_size
    one_file = all(page is not None and page.parent is series.pages[0].parent for page in series.pages)
    if series.dataoffset is not None and one_file:  # contiguous pixels in this file: the claim is exact
        end = int(series.dataoffset) + int(series.nbytes)
        if end > size:
            raise UserError(
                f"{path}: truncated: its header describes {_bytes(series.nbytes)} of pixels but the file holds "
                f"{_bytes(size, end)}; {fix}"
            )
    damaged = any(word in r.getMessage().lower() for r in records for word in _DAMAGE)
    if damaged or any(page is None for page in series.pages):  # tifffile falls back to what it found, or zeroes
        raise UserError(
            f"{path}: truncated: planes of the stack are missing (from this {_bytes(size)} file, or a file of its "
            f"set); {fix}"
        )
    for page in series.pages:
        held = page.parent.filehandle.size  # a page of a multi-file OME set lies in its own file
        ends = [int(o) + int(c) for o, c in zip(page.dataoffsets, page.databytecounts, strict=False) if c]
        if ends and max(ends) > held:
            raise UserError(
                f"{page.parent.filehandle.path}: truncated: its pixel data runs to {_bytes(max(ends), held)} but the "
                f"file holds {_bytes(held, max(ends))}; {fix}"
            )


def _bytes(count: int, other: int | None = None) -> str:
    """``count`` bytes for a person; exact where rounding would make it look equal to ``other``."""
    for unit, factor in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= factor:
            shown = f"{count / factor:.3g} {unit}"
            if other is not None and shown == _bytes(other):
                return f"{count:,} bytes"
            return shown
    return f"{count} bytes"


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
            f"{name}: {len(shape)}-D stack of shape {shape} holds {count} channels; choose one with --channel N"
        )
    if not channels and channel is not None:
        raise UserError(f"--channel {channel}: the stack of shape {shape} has one channel in {name}; drop --channel")
    if channels and not 0 <= channel < shape[channels[0]]:  # type: ignore[operator]
        raise UserError(f"{name}: --channel {channel} out of range; the stack has {shape[channels[0]]} channels")
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


def remap(volume: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """CellSeg3D's normalisation: ``(v - min) / (max - min) * 100`` over the whole volume, as float32.

    ``low`` and ``high`` override the minimum and maximum (for statistics computed elsewhere).
    """
    volume = np.asarray(volume, dtype=np.float32)
    low = float(volume.min()) if low is None else low
    high = float(volume.max()) if high is None else high
    return ((volume - np.float32(low)) / np.float32(high - low) * np.float32(100.0)).astype(np.float32, copy=False)


NOISY = 4.0  # voxel-to-voxel noise on the 0..100 scale from which training smooths the model's input by default
NOISY_SIGMA = 1.0  # that smoothing's sigma, in voxels along the finest axis; doubled for each doubling of the noise
MAX_NOISY_SIGMA = 4.0  # up to this sigma


def noise_level(volume: np.ndarray, samples: int = 1 << 24) -> float:
    """The voxel-to-voxel noise of a volume in its own units: the robust standard deviation (1.4826 x the
    median absolute deviation) of the differences between neighbours along x, over sqrt(2).

    Nuclei edges are a small share of all neighbour pairs, so the median reads the noise, not the content. On
    the 0..100 scale: 8.5 on the low-SNR phantom of ``benchmarks/phantoms.py``, 0.2 to 2.8 on its other
    settings, 0.7 and 0.9 on CellSeg3D's example volumes. Reads every n-th z plane for at most ``samples``
    differences.
    """
    if volume.ndim != 3 or volume.shape[2] < 2 or volume.size == 0:
        return 0.0
    per_plane = volume.shape[1] * (volume.shape[2] - 1)
    step = max(1, -(-volume.shape[0] * per_plane // samples))
    differences = np.diff(np.asarray(volume[::step], dtype=np.float32), axis=2).ravel()
    deviation = np.median(np.abs(differences - np.median(differences)))
    return float(1.4826 * deviation / np.sqrt(2))


def auto_input_smoothing(noise: Sequence[float]) -> float:
    """The input smoothing training uses by default: :data:`NOISY_SIGMA` when the median volume's noise (on
    the 0..100 scale, see :func:`noise_level`) reaches :data:`NOISY`, twice that from twice :data:`NOISY`, and
    so on up to :data:`MAX_NOISY_SIGMA`; else 0.

    Why: SoftNCut weighs a voxel by ``exp(-(I - mean)^4 / intensity_sigma^2)``, so at CellSeg3D's intensity
    sigma of 1 only voxels within about one unit of their class's mean count; in noise of several units almost
    none do, and the encoder learns to follow the noise (on the low-SNR phantom: foreground Dice 0.49 -> 0.89
    with a sigma of 1; mean F1 0.79 -> 0.84 with 2, as its noise of 8.5 asks). On clean stacks smoothing costs
    edge detail (touching nuclei: mean F1 0.85 -> 0.80).
    """
    level = float(np.median(noise)) if noise else 0.0
    if level < NOISY:
        return 0.0
    return min(NOISY_SIGMA * 2.0 ** math.floor(math.log2(level / NOISY)), MAX_NOISY_SIGMA)


SPREAD = 2.5  # nuclei brightness spread (see brightness_spread) from which training compresses the model's input
MIN_OFFSET = 0.1  # the smallest log offset auto_input_log chooses, on the 0..100 scale
_MIN_OBJECTS = 5  # brightness_spread needs at least this many objects to tell a spread
_MIN_OBJECT_VOXELS = 27
_OBJECT_NOISE = 5.0  # objects stand this many noise standard deviations above the background


def compress_intensities(volume: np.ndarray, offset: float) -> np.ndarray:
    """The model's logarithmic input compression (:class:`wnet_zoo.model.InputCompression`) in numpy:
    ``100 * log1p(v / offset) / log1p(100 / offset)`` of a 0..100 volume, values below 0 counted as 0;
    the volume itself (as float32) at offset 0."""
    volume = np.asarray(volume, dtype=np.float32)
    if not offset:
        return volume
    scale = np.float32(100.0 / np.log1p(100.0 / offset))
    return np.log1p(np.maximum(volume, 0) * np.float32(1.0 / offset)) * scale


def compressed_view(
    volume: np.ndarray, offset: float, low: float | None = None, high: float | None = None
) -> np.ndarray:
    """The volume as a model compressing its input with ``offset`` sees it (:func:`compress_intensities` of
    :func:`remap`, ``low`` and ``high`` overriding the volume's own minimum and maximum), for the half-max
    boundaries of its nuclei; the volume itself at offset 0 (those boundaries are the same under any
    increasing linear map of the intensities, such as the remap)."""
    if not offset:
        return volume
    return compress_intensities(remap(volume, low, high), offset)


def brightness_spread(volume: np.ndarray) -> float:
    """How widely the brightness of the objects in a volume varies: the ratio of the 95th to the 25th
    percentile, over the objects, of their median intensity above the volume's median (its background).

    Objects are the connected components of at least 27 voxels more than 5 noise standard deviations
    (:func:`noise_level`) above the background, so that nuclei count however dim beside bright ones; 1.0 when
    fewer than 5 are found (nothing to compare). On the 0..100 phantoms of ``benchmarks/phantoms.py``: 1.5 to
    1.7 where nuclei are alike (sparse, touching, anisotropic, dense; low_snr has none that clear), 3.5 with
    uneven illumination, 7.1 with dim nuclei beside 8x brighter ones, 14.5 with over-exposed ones; 1.3 on
    CellSeg3D's example volumes.
    """
    from scipy import ndimage

    volume = np.asarray(volume, dtype=np.float32)
    background = float(np.median(volume))
    labels, _ = ndimage.label(volume > background + _OBJECT_NOISE * noise_level(volume))
    sizes = np.bincount(labels.ravel())
    objects = np.flatnonzero(sizes[1:] >= _MIN_OBJECT_VOXELS) + 1
    if objects.size < _MIN_OBJECTS:
        return 1.0
    levels = np.asarray(ndimage.median(volume - np.float32(background), labels, objects))
    levels = levels[levels > 0]
    if levels.size < _MIN_OBJECTS:
        return 1.0
    low, high = np.percentile(levels, [25, 95])
    return float(high / low)


def auto_input_log(volumes: Sequence[np.ndarray]) -> tuple[float, list[float]]:
    """The input compression training uses by default, and each volume's :func:`brightness_spread`.

    The offset is the median of the volumes' medians (their background level, at least :data:`MIN_OFFSET`)
    when the median spread reaches :data:`SPREAD`, else 0 (off).

    Why: SoftNCut weighs a voxel by ``exp(-(I - mean)^4 / intensity_sigma^2)`` with a class's mean over the
    patch, so nuclei far dimmer than the foreground's mean carry no weight in either class, and the encoder
    leaves them in the background (phantoms: foreground probability median 0.004 in the dimmest quarter of
    nuclei beside 8x brighter ones; over-exposed nuclei leave the others at 5 on the 0..100 scale). A
    logarithm puts nuclei 10x apart in brightness within a few tens of units of each other, all clear of the
    background (over-exposed phantom: foreground Dice 0.26 -> 0.91).
    """
    spreads = [brightness_spread(v) for v in volumes]
    if not spreads or float(np.median(spreads)) < SPREAD:
        return 0.0, spreads
    background = float(np.median([np.median(v) for v in volumes]))
    return max(background, MIN_OFFSET), spreads


class VoxelSize(NamedTuple):
    """Physical size of one voxel along z, y and x, in ``unit`` (``"µm"`` for microns)."""

    z: float
    y: float
    x: float
    unit: str = "µm"


def override_voxel_size(found: VoxelSize | None, override: Sequence[float] | None) -> VoxelSize | None:
    """``override`` (z, y, x) in the unit of the voxel size ``found`` in the file (µm when none), else ``found``."""
    if override is None:
        return found
    z, y, x = (float(v) for v in override)
    return VoxelSize(z, y, x, unit=found.unit if found else "µm")


_MICRON_NAMES = {"micron", "microns", "um", "µm", "\\u00b5m", "micrometer", "micrometre"}


def read_voxel_size(path: str | Path) -> VoxelSize | None:
    """The voxel size a TIFF file records: OME ``PhysicalSize*`` or ImageJ ``spacing`` plus resolution tags.

    Returns None when the file records none (plain TIFFs, or ImageJ files in pixel units).
    """
    try:
        with tifffile.TiffFile(path) as tif:
            if tif.is_ome and tif.ome_metadata:
                return _ome_voxel_size(tif.ome_metadata)
            if tif.is_imagej and tif.imagej_metadata is not None:
                return _imagej_voxel_size(tif.imagej_metadata, tif.pages[0].tags)
    except (OSError, ValueError, ET.ParseError, tifffile.TiffFileError):
        return None
    return None


def _unit(name: object) -> str:
    text = str(name or "").strip()
    return "µm" if text.lower() in _MICRON_NAMES else text


def _ome_voxel_size(xml: str) -> VoxelSize | None:
    pixels = next((el for el in ET.fromstring(xml).iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None or not any(f"PhysicalSize{a}" in pixels.attrib for a in "ZYX"):
        return None
    sizes = [float(pixels.attrib.get(f"PhysicalSize{a}", 1.0)) for a in "ZYX"]
    unit = _unit(pixels.attrib.get("PhysicalSizeXUnit", "µm"))
    return VoxelSize(sizes[0], sizes[1], sizes[2], unit)


def _imagej_voxel_size(metadata: dict, tags: tifffile.TiffTags) -> VoxelSize | None:
    unit = _unit(metadata.get("unit", ""))
    if not unit or unit.lower() in ("pixel", "pixels"):
        return None

    def from_tag(name: str) -> float:
        tag = tags.get(name)
        if tag is None:
            return 1.0
        numerator, denominator = tag.value
        return float(denominator) / float(numerator) if numerator else 1.0

    return VoxelSize(float(metadata.get("spacing", 1.0)), from_tag("YResolution"), from_tag("XResolution"), unit)


def parse_floats(text: str | Sequence[float] | None, name: str) -> tuple[float, float, float] | None:
    """Parse ``"2,0.5,0.5"`` (or one value, or a sequence) into a (z, y, x) tuple of positive floats."""
    if text is None:
        return None
    try:
        values = [float(p) for p in text.split(",") if p.strip()] if isinstance(text, str) else [float(v) for v in text]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not all(v > 0 and np.isfinite(v) for v in values):
        raise UserError(f"--{name} {text!r}: give one value or z,y,x of positive numbers, e.g. 2,0.5,0.5")
    return (values[0], values[1], values[2])


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


_REPLACEMENT_TRIES = 200
"""Random draws for a usable patch position before picking among the full list of them."""


@dataclass
class PatchSampler:
    """Seeded random patches with flips and 90° rotations, the same sequence for the same seed and epoch.

    Each epoch draws ``samples_per_epoch`` patches from every volume (volumes already remapped) and yields
    them shuffled in batches of ``batch`` as float32 arrays (B, 1, Z, Y, X). The random stream of epoch
    ``e`` depends only on ``(seed, e)``, so a resumed run samples exactly what an uninterrupted one does.

    ``usable`` (one boolean array per volume, indexed by patch corner; see
    :func:`wnet_zoo.checks.usable_corners`) marks the patch positions that hold foreground. A drawn position
    that is not usable counts as almost empty and, with ``skip_empty``, is replaced by a usable one drawn
    from a stream of its own (seeded by seed, epoch and the patch's index), so every other patch, its flips
    and its rotation stay those of the plain sequence. ``counts`` holds the last epoch's numbers:
    ``patches``, ``almost_empty`` (drawn) and ``skipped`` (replaced).
    """

    volumes: Sequence[np.ndarray]
    patch: tuple[int, int, int]
    samples_per_epoch: int
    batch: int
    seed: int
    usable: Sequence[np.ndarray] | None = None
    skip_empty: bool = True
    counts: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def steps_per_epoch(self) -> int:
        """Number of batches in one epoch."""
        return -(-len(self.volumes) * self.samples_per_epoch // self.batch)

    def epoch(self, epoch: int) -> Iterator[np.ndarray]:
        """The batches of one (0-based) epoch."""
        rng = np.random.default_rng([self.seed, epoch])
        picks = [v for v in range(len(self.volumes)) for _ in range(self.samples_per_epoch)]
        self.counts = {"patches": len(picks), "almost_empty": 0, "skipped": 0}
        patches = [self._sample(v, rng, (epoch, index)) for index, v in enumerate(picks)]
        order = rng.permutation(len(patches))
        for start in range(0, len(order), self.batch):
            chosen = [patches[i] for i in order[start : start + self.batch]]
            yield np.stack(chosen)[:, None]

    def _sample(self, index: int, rng: np.random.Generator, key: tuple[int, int]) -> np.ndarray:
        volume = self.volumes[index]
        corner = tuple(int(rng.integers(0, size - p + 1)) for size, p in zip(volume.shape, self.patch, strict=True))
        if self.usable is not None and not self.usable[index][corner]:
            self.counts["almost_empty"] += 1
            replacement = self._usable_corner(index, key) if self.skip_empty else None
            if replacement is not None:
                corner = replacement
                self.counts["skipped"] += 1
        region = volume[tuple(slice(c, c + p) for c, p in zip(corner, self.patch, strict=True))]
        for axis in range(3):
            if rng.random() < 0.5:
                region = np.flip(region, axis)
        turns = int(rng.integers(4))
        if self.patch[1] != self.patch[2]:
            turns = 2 * (turns % 2)  # a quarter turn would change the patch shape: half turns only
        region = np.rot90(region, turns, axes=(1, 2))
        return np.ascontiguousarray(region, dtype=np.float32)

    def _usable_corner(self, index: int, key: tuple[int, int]) -> tuple[int, ...] | None:
        usable = self.usable[index]  # type: ignore[index]
        side = np.random.default_rng([self.seed, *key])
        for _ in range(_REPLACEMENT_TRIES):
            corner = tuple(int(side.integers(size)) for size in usable.shape)
            if usable[corner]:
                return corner
        found = np.flatnonzero(usable)  # few usable positions: pick among all of them
        if found.size == 0:
            return None
        return tuple(int(i) for i in np.unravel_index(found[side.integers(found.size)], usable.shape))

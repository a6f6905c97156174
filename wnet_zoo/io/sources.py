"""Volumes read block by block, never whole: TIFF stacks, zarr arrays and OME-Zarr images.

A :class:`SourceSpec` names a volume (a path, a channel of a 4-D stack, an OME-Zarr resolution level) and is
small enough to send to Dask workers; :meth:`SourceSpec.open` gives a :class:`VolumeSource` whose
:meth:`~VolumeSource.read` returns one region as float32.

* Uncompressed TIFF stacks (what acquisition software writes) are read with positioned file reads of just
  the rows a region needs, so a block of a 20k x 20k plane costs what a block of a 1k x 1k plane does.
  Compressed or tiled TIFFs are read through tifffile's zarr view, strip or tile at a time.
* zarr arrays (v2 or v3) and OME-Zarr images (0.4 or 0.5; ``level`` picks a resolution level) are read
  chunk-wise by zarr. Leading axes of length 1 (OME-Zarr's t and c) are dropped; a 4-D array needs a channel.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from wnet_zoo.errors import UserError, setting
from wnet_zoo.io.tiff import open_tiff
from wnet_zoo.io.volumes import TIFF_SUFFIXES, select_axes
from wnet_zoo.io.voxels import VoxelSize, read_voxel_size

Region = tuple[slice, slice, slice]
_ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")
_UNITS = {"micrometer": "µm", "nanometer": "nm", "millimeter": "mm", "meter": "m"}


def is_zarr(path: str | Path) -> bool:
    """Whether ``path`` is a zarr store or a node inside one (a folder holding zarr metadata, or named *.zarr)."""
    path = Path(path)
    return path.is_dir() and (path.suffix.lower() == ".zarr" or any((path / m).is_file() for m in _ZARR_MARKERS))


def collect_sources(
    paths: Sequence[str | Path], channel: int | None = None, level: int | None = None
) -> list[SourceSpec]:
    """Expand TIFF files, zarr stores and folders (their TIFF files and zarr stores) into volumes to read."""
    if not paths:
        raise UserError("no images given: pass TIFF files, zarr stores or folders of them")
    found: list[SourceSpec] = []
    for raw in paths:
        path = Path(raw)
        if is_zarr(path) or path.is_file():
            found.append(SourceSpec(path, channel, level))
        elif path.is_dir():
            inside = sorted(
                p for p in path.iterdir() if is_zarr(p) or (p.is_file() and p.suffix.lower() in TIFF_SUFFIXES)
            )
            if not inside:
                raise UserError(f"{path}: folder holds no .tif/.tiff files or zarr stores; point to 3-D volumes")
            found += [SourceSpec(p, channel, level) for p in inside]
        else:
            raise UserError(f"{path}: no such file, folder or store; check the path")
    return found


@dataclass(frozen=True)
class OmeImage:
    """What an OME-Zarr input says about its level: the version and the spatial (z, y, x) scale and unit."""

    version: str
    scale: tuple[float, float, float]
    unit: str | None


@dataclass(frozen=True)
class SourceSpec:
    """A volume to read: a TIFF file or a zarr array / OME-Zarr image, with its channel and level."""

    path: Path
    channel: int | None = None
    level: int | None = None

    @property
    def stem(self) -> str:
        """The name results are written under: the file or store name without its suffixes."""
        name = self.path.name
        for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr", *TIFF_SUFFIXES, ".zarr"):
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
        return self.path.stem

    @property
    def is_zarr(self) -> bool:
        """Whether the volume is a zarr store."""
        return is_zarr(self.path)

    def open(self) -> VolumeSource:
        """Open the volume for reading (raises ``UserError`` when it cannot be used)."""
        if not self.path.exists():
            raise UserError(f"{self.path}: no such file or store; check the path")
        if self.is_zarr:
            return ZarrSource(self)
        if self.level not in (None, 0):
            level = setting("level")
            raise UserError(f"{self.path}: {level} applies to OME-Zarr images; a TIFF has one level, drop {level}")
        return TiffSource(self)


class VolumeSource:
    """A 3-D volume read region by region; ``shape``, ``dtype`` and ``voxel_size`` are known without reading."""

    spec: SourceSpec
    shape: tuple[int, int, int]
    dtype: np.dtype
    voxel_size: VoxelSize | None = None
    ome: OmeImage | None = None

    def read(self, region: Region) -> np.ndarray:
        """The voxels of ``region`` (three slices with explicit bounds) as float32."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the file."""

    def __enter__(self) -> VolumeSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def nbytes(self) -> int:
        """Size of the volume in its stored dtype."""
        return int(np.prod(self.shape)) * self.dtype.itemsize


_MAX_CHUNK_BYTES = 64 * 2**20


def _plain_axes(ndim: int) -> str:
    """Axis names for an array without any: (Z, Y, X), (C, Z, Y, X) or (T, C, Z, Y, X)."""
    return {3: "ZYX", 4: "CZYX", 5: "TCZYX"}.get(ndim, "Q" * max(ndim - 2, 0) + "YX"[: min(ndim, 2)])


class TiffSource(VolumeSource):
    """A TIFF stack read by positioned reads (uncompressed, contiguous) or through tifffile's zarr view."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self._tif = open_tiff(spec.path)
        series = self._tif.series[0]
        try:
            self._index, self.shape = select_axes(spec.path, series.axes, series.shape, spec.channel)
            self._open(series)
        except BaseException:
            self._tif.close()
            raise
        self.voxel_size = read_voxel_size(spec.path)
        self._lock = threading.Lock()

    def _open(self, series: Any) -> None:
        self.dtype = np.dtype(series.dtype).newbyteorder("=")
        self._stored = np.dtype(series.dtype).newbyteorder(self._tif.byteorder)
        self._offset = series.dataoffset
        self._series: Any = None  # read through tifffile's zarr view, opened at the first read
        self._zarr: Any = None
        full = tuple(int(s) for s in series.shape)
        if self._offset is not None and series.axes.upper().endswith("YX"):
            strides = np.cumprod((1, *full[::-1]))[:-1][::-1]  # items, C order
            self._base = sum(int(i) * int(st) for i, st in zip(self._index, strides, strict=True) if isinstance(i, int))
            self._strides = [int(st) for i, st in zip(self._index, strides, strict=True) if not isinstance(i, int)]
            return
        page = series.pages[0]
        rows = page.tilelength if page.is_tiled else min(page.rowsperstrip or page.imagelength, page.imagelength)
        chunk = rows * (page.tilewidth if page.is_tiled else page.imagewidth) * self.dtype.itemsize
        if chunk > _MAX_CHUNK_BYTES:
            raise UserError(
                f"{self.spec.path}: compressed in strips of {chunk / 2**20:.0f} MiB, decoded again for every block;"
                "\nsave it uncompressed, or as zarr, to stream it"
            )
        self._series = series

    def read(self, region: Region) -> np.ndarray:
        """See :meth:`VolumeSource.read`."""
        if self._series is not None:
            if self._zarr is None:
                import zarr  # 0.3 s: not for a look at the shape before an in-memory prediction

                self._zarr = zarr.open_array(self._series.aszarr(chunkmode=tifffile.CHUNKMODE.STRILE), mode="r")
            return np.asarray(self._zarr[_place(self._index, region)], dtype=np.float32)
        (z0, z1), (y0, y1), (x0, x1) = ((r.start, r.stop) for r in region)
        width = self.shape[2]
        out = np.empty((z1 - z0, y1 - y0, x1 - x0), dtype=self._stored)
        item = self._stored.itemsize
        step_z, step_y, _ = self._strides
        handle = self._tif.filehandle
        whole_rows = x0 == 0 and x1 == width and step_y == width
        with self._lock:
            for z in range(z0, z1):
                if whole_rows:
                    handle.seek(self._offset + (self._base + z * step_z + y0 * step_y) * item)
                    handle.readinto(out[z - z0])  # type: ignore[arg-type]
                    continue
                for y in range(y0, y1):
                    handle.seek(self._offset + (self._base + z * step_z + y * step_y + x0) * item)
                    handle.readinto(out[z - z0, y - y0])  # type: ignore[arg-type]
        return out.astype(np.float32)

    def close(self) -> None:
        """See :meth:`VolumeSource.close`."""
        self._tif.close()


class ZarrSource(VolumeSource):
    """A zarr array, or one resolution level of an OME-Zarr image."""

    def __init__(self, spec: SourceSpec) -> None:
        import zarr

        self.spec = spec
        try:
            node = zarr.open(str(spec.path), mode="r")
        except Exception as error:  # zarr raises several types for folders that are not stores
            raise UserError(f"{spec.path}: not a zarr array or OME-Zarr image ({type(error).__name__})") from None
        if isinstance(node, zarr.Array):
            if spec.level not in (None, 0):
                raise UserError(f"{spec.path}: a plain zarr array has one level; drop {setting('level', spec.level)}")
            self._array = node
        else:
            self._array, self.ome, self._axes = _ome_level(spec, node)
        shape = tuple(int(s) for s in self._array.shape)
        axes = self._axes if self.ome is not None else _plain_axes(len(shape))
        self._index, self.shape = select_axes(spec.path, axes, shape, spec.channel)
        self.dtype = np.dtype(self._array.dtype)
        if self.ome is not None:
            self.voxel_size = VoxelSize(*self.ome.scale, unit=self.ome.unit or "µm")

    def read(self, region: Region) -> np.ndarray:
        """See :meth:`VolumeSource.read`."""
        return np.asarray(self._array[_place(self._index, region)], dtype=np.float32)


def _place(index: tuple[int | slice, ...], region: Region) -> tuple[int | slice, ...]:
    """``index`` with its three full slices (Z, Y, X) replaced by ``region``."""
    spatial = iter(region)
    return tuple(next(spatial) if isinstance(i, slice) else i for i in index)


def ome_multiscales(attributes: dict[str, Any]) -> tuple[str, list[dict[str, Any]]] | None:
    """The OME-Zarr version and ``multiscales`` list of a group's attributes (0.4 at the top, 0.5 under "ome")."""
    if isinstance(attributes.get("ome"), dict) and "multiscales" in attributes["ome"]:
        return str(attributes["ome"].get("version", "0.5")), attributes["ome"]["multiscales"]
    if "multiscales" in attributes:
        scales = attributes["multiscales"]
        return str(scales[0].get("version", "0.4")) if scales else "0.4", scales
    return None


def _ome_level(spec: SourceSpec, group: Any) -> tuple[Any, OmeImage, str]:
    found = ome_multiscales(dict(group.attrs))
    if found is None or not found[1]:
        raise UserError(f"{spec.path}: a zarr group that is not an OME-Zarr image; give the path of an array inside")
    version, multiscales = found
    datasets = multiscales[0].get("datasets", [])
    level = spec.level or 0
    if not 0 <= level < len(datasets):
        raise UserError(
            f"{spec.path}: {setting('level', level)} does not exist; the image has levels 0..{len(datasets) - 1}"
        )
    dataset = datasets[level]
    try:
        array = group[dataset["path"]]
    except KeyError:
        raise UserError(f"{spec.path}: level {level}'s array {dataset['path']!r} is missing from the image") from None
    scale = [1.0, 1.0, 1.0]
    for transform in multiscales[0].get("coordinateTransformations", []) + dataset.get("coordinateTransformations", []):
        if transform.get("type") == "scale":
            scale = [a * b for a, b in zip(scale, transform["scale"][-3:], strict=True)]
    axes = multiscales[0].get("axes", [])
    unit = axes[-1].get("unit") if axes and isinstance(axes[-1], dict) else None
    names = "".join(str(a.get("name", "?") if isinstance(a, dict) else a)[:1] for a in axes)
    if len(names) != len(array.shape):
        names = _plain_axes(len(array.shape))
    return array, OmeImage(version, (scale[0], scale[1], scale[2]), _UNITS.get(unit, unit) if unit else None), names

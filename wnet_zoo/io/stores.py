"""Result stores written block by block: zarr arrays or OME-Zarr images, and TIFF files filled in place.

Zarr results are chunked so that every block of the streaming executor owns whole chunks (Dask tasks write
their blocks at the same time without touching each other's). An OME-Zarr result is an image group with
one level, ``0``, carrying the input's voxel size, in the input's OME-Zarr version (0.4 on zarr v2, 0.5 on
zarr v3); the input had no OME metadata but a voxel size -> OME-Zarr 0.4; neither -> a plain array.

TIFF results are written without holding the volume: an empty uncompressed (Big)TIFF with OME metadata is
laid out first, then every block's rows are written at their place in the file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from wnet_zoo.io.sources import OmeImage, Region
from wnet_zoo.io.voxels import VoxelSize

_OME_UNITS = {"µm": "micrometer", "um": "micrometer", "nm": "nanometer", "mm": "millimeter", "m": "meter"}
_BIGTIFF_BYTES = 2**31


def create_zarr(
    path: Path,
    shape: tuple[int, ...],
    dtype: np.dtype | str,
    chunks: tuple[int, ...],
    voxel_size: VoxelSize | None = None,
    ome: OmeImage | None = None,
) -> Any:
    """Create the result store ``path`` and return its (level-0) array.

    Args:
        shape: (z, y, x), or (c, z, y, x) for probabilities.
        chunks: chunk shape, same length as ``shape``.
        voxel_size: written as OME-Zarr scale when known.
        ome: the input's OME-Zarr description, whose version is kept.
    """
    import zarr

    nested = {"name": "v2", "separator": "/"}  # chunk files in nested folders, not all in one
    if voxel_size is None and ome is None:
        return zarr.create_array(
            str(path), shape=shape, chunks=chunks, dtype=dtype, fill_value=0, zarr_format=2, chunk_key_encoding=nested
        )
    version = ome.version if ome is not None else "0.4"
    zarr_format = 3 if version.startswith("0.5") else 2
    names = (["c"] if len(shape) == 4 else []) + ["z", "y", "x"]
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    if zarr_format == 3:  # OME-Zarr 0.5 asks for dimension names matching the axes
        array = group.create_array("0", shape=shape, chunks=chunks, dtype=dtype, fill_value=0, dimension_names=names)
    else:
        array = group.create_array(
            "0", shape=shape, chunks=chunks, dtype=dtype, fill_value=0, chunk_key_encoding=nested
        )
    scale = list(voxel_size[:3]) if voxel_size is not None else list(ome.scale)  # type: ignore[union-attr]
    unit = voxel_size.unit if voxel_size is not None else (ome.unit if ome is not None else None)
    axes: list[dict[str, str]] = [{"name": "c", "type": "channel"}] if len(shape) == 4 else []
    for name in "zyx":
        axis = {"name": name, "type": "space"}
        if unit:
            axis["unit"] = _OME_UNITS.get(unit, unit)
        axes.append(axis)
    multiscales = [
        {
            "version": version,
            "axes": axes,
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [{"type": "scale", "scale": [1.0] * (len(shape) - 3) + scale}],
                }
            ],
        }
    ]
    if zarr_format == 3:
        multiscales[0].pop("version")
        group.attrs["ome"] = {"version": version, "multiscales": multiscales}
    else:
        group.attrs["multiscales"] = multiscales
    return array


def open_zarr(path: Path, mode: str = "r+") -> Any:
    """The level-0 array of a store made by :func:`create_zarr`."""
    import zarr

    node = zarr.open(str(path), mode=mode)
    return node if isinstance(node, zarr.Array) else node["0"]


def write_tiff_blocks(
    path: Path,
    shape: tuple[int, ...],
    dtype: np.dtype | str,
    regions: Iterable[Region],
    array: Any,
    voxel_size: VoxelSize | None = None,
) -> None:
    """Write a TIFF file of ``shape`` ((z, y, x) or (c, z, y, x)) from blocks, holding one block at a time.

    Args:
        regions: spatial blocks that together cover the volume.
        array: the data, indexed as ``array[..., z, y, x]`` block by block (a zarr array, for one).
    """
    dtype = np.dtype(dtype)
    axes = "CZYX" if len(shape) == 4 else "ZYX"
    metadata: dict[str, object] = {"axes": axes}
    if voxel_size is not None:
        for axis, size in zip("ZYX", voxel_size[:3], strict=True):
            metadata[f"PhysicalSize{axis}"] = float(size)
            metadata[f"PhysicalSize{axis}Unit"] = voxel_size.unit
    nbytes = int(np.prod(shape)) * dtype.itemsize
    tifffile.imwrite(
        path,
        shape=shape,
        dtype=dtype,
        ome=True,
        metadata=metadata,
        photometric="minisblack",
        bigtiff=nbytes > _BIGTIFF_BYTES,
    )
    with tifffile.TiffFile(path) as tif:
        offset = tif.series[0].dataoffset
    assert offset is not None, "an uncompressed TIFF written by tifffile is contiguous"
    channels = shape[0] if len(shape) == 4 else 1
    depth, height, width = shape[-3:]
    with open(path, "r+b") as handle:
        for region in regions:
            block = np.ascontiguousarray(array[(Ellipsis, *region)], dtype=dtype.newbyteorder("<")).reshape(
                (channels, *(r.stop - r.start for r in region))
            )
            (z0, _), (y0, _), (x0, _) = ((r.start, r.stop) for r in region)
            rows = [(dy, 1) for dy in range(block.shape[2])] if block.shape[3] < width else [(0, block.shape[2])]
            for c in range(channels):
                for dz in range(block.shape[1]):
                    for dy, count in rows:  # one write per row, or per plane when the block spans the width
                        index = ((c * depth + z0 + dz) * height + y0 + dy) * width + x0
                        handle.seek(offset + index * dtype.itemsize)
                        handle.write(block[c, dz, dy : dy + count].tobytes())

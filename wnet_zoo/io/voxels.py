"""Voxel sizes read from TIFF metadata (ImageJ and OME), in micrometres."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import tifffile


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

"""The result files of one image: their paths, and writing them all or none."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np
import tifffile

from wnet_zoo.errors import UserError, setting
from wnet_zoo.io.atomic import part_path
from wnet_zoo.io.voxels import VoxelSize
from wnet_zoo.prediction.settings import DEFAULT_OUTPUTS, OUTPUTS

if TYPE_CHECKING:
    import pandas as pd


SUFFIXES = {"zarr": ".zarr", "tiff": ".tif"}


def output_paths(out: Path, stem: str, outputs: Iterable[str], fmt: str = "tiff") -> dict[str, Path]:
    """The files written for an image ``stem``: ``<stem>_<output>.tif`` (or ``.zarr``) plus
    ``<stem>_labels.csv`` with instances."""
    paths = {name: out / f"{stem}_{name}{SUFFIXES[fmt]}" for name in outputs}
    if "instances" in paths:
        paths["labels"] = out / f"{stem}_labels.csv"
    return paths


def check_free(paths: Iterable[Path], overwrite: bool) -> None:
    """Raise ``UserError`` when a result file exists and ``overwrite`` is off."""
    if overwrite:
        return
    existing = [path for path in paths if path.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise UserError(
            f"{existing[0]} already exists{more}; pass {setting('overwrite', True)} or choose another {setting('out')}"
        )


def write_tiff(path: Path, array: np.ndarray, axes: str, voxel_size: VoxelSize | None = None) -> None:
    """Write ``array`` (axes such as ``"ZYX"`` or ``"CZYX"``) as OME-TIFF, with the physical voxel size if known."""
    metadata: dict[str, object] = {"axes": axes}
    if voxel_size is not None:
        for axis, size in zip("ZYX", voxel_size[:3], strict=True):
            metadata[f"PhysicalSize{axis}"] = float(size)
            metadata[f"PhysicalSize{axis}Unit"] = voxel_size.unit
    tifffile.imwrite(path, array, ome=True, metadata=metadata, photometric="minisblack")


class OutputSet:
    """The result files of one image, published together.

    Use as a context manager; :meth:`tiff` and :meth:`csv` write to temporary names, and leaving the block
    without an exception renames them all into place (replacing older files). Any exception, including
    ``KeyboardInterrupt``, removes the temporary files and leaves the destinations untouched.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        pending, self._pending = self._pending, []
        try:
            if kind is None:
                for temporary, final in pending:
                    os.replace(temporary, final)
        finally:
            for temporary, _ in pending:  # after a failed rename too: no part is left behind
                temporary.unlink(missing_ok=True)

    def tiff(self, path: Path, array: np.ndarray, axes: str, voxel_size: VoxelSize | None = None) -> None:
        """Stage a TIFF file (see :func:`write_tiff`)."""
        write_tiff(self._stage(path), array, axes, voxel_size)

    def csv(self, path: Path, table: pd.DataFrame, float_format: str = "%.6g") -> None:
        """Stage a CSV table."""
        table.to_csv(self._stage(path), index=False, float_format=float_format)

    def _stage(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = part_path(path)
        self._pending.append((temporary, path))
        return temporary


def names(outputs: Sequence[str] | None) -> tuple[str, ...]:
    """The requested outputs, checked and de-duplicated in order; the default ones when none are given."""
    chosen = tuple(dict.fromkeys(name.replace("-", "_") for name in outputs or DEFAULT_OUTPUTS))
    unknown = [name for name in chosen if name not in OUTPUTS]
    if unknown:
        raise UserError(f"{setting('outputs', unknown[0])}: choose from {', '.join(OUTPUTS)}")
    return chosen


@dataclass
class ImageResult:
    """What was written for one image."""

    image: Path
    paths: dict[str, Path]
    foreground_class: int
    foreground_from: str
    nuclei: int | None

    def summary(self) -> str:
        """One line for the console."""
        nuclei = "" if self.nuclei is None else f", {self.nuclei} nuclei"
        written = ", ".join(path.name for path in self.paths.values())
        chosen = f"foreground class {self.foreground_class} ({self.foreground_from})"
        return f"{self.image.name}: {chosen}{nuclei} -> {written}"

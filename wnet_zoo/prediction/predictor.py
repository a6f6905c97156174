"""Sliding-window prediction with an exported WNet3D encoder on ONNX Runtime.

By default this reproduces CellSeg3D's path (MONAI ``sliding_window_inference`` with 64^3 windows,
overlap 0.25 and Gaussian blending, on the volume remapped globally to 0..100): same windows, same
weights, same blending order; only the engine differs. See :mod:`wnet_zoo.prediction.tiling` for the plan.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from wnet_zoo.errors import UserError, setting
from wnet_zoo.io.intensity import remap
from wnet_zoo.io.volumes import check_volume, read_volume
from wnet_zoo.io.voxels import VoxelSize, read_voxel_size
from wnet_zoo.prediction.foreground import PROBABILITY_TOLERANCE, choose_foreground
from wnet_zoo.prediction.metadata import INPUT_SCALES, ModelMetadata, one_channel, read_metadata, refusal
from wnet_zoo.prediction.model_files import onnx_file, shown_name
from wnet_zoo.prediction.runtime import Engine, open_engine, short_message
from wnet_zoo.prediction.settings import DEFAULT_TILE, GPU_BATCH, EngineSettings, Tiling, settings_from, settings_record
from wnet_zoo.prediction.tiling import Blender, TilePlan

if TYPE_CHECKING:
    import xarray as xr

LOG = logging.getLogger("wnet_zoo")


def input_transform(metadata: ModelMetadata) -> str:
    """What the model does to its input before segmenting, as the end of :meth:`Predictor.describe`'s line."""
    steps = []
    if metadata.input_log:
        steps.append(f"compresses its input's intensities (log, offset {metadata.input_log:.3g})")
    if metadata.input_background:
        what = "the result's" if steps else "its input's"
        steps.append(f"subtracts {what} background (box radius {','.join(map(str, metadata.input_background))} voxels)")
    if metadata.input_sigma:
        what = "the result" if steps else "its input"
        steps.append(f"smooths {what} (sigma {','.join(f'{v:g}' for v in metadata.input_sigma)} voxels)")
    if len(steps) > 2:
        steps = [", ".join(steps[:-1]), steps[-1]]
    return f"; the model {' and '.join(steps)}" if steps else ""


class Predictor:
    """An exported WNet3D opened on ONNX Runtime, with its tiling settings; reuse it across images.

    Args:
        model: an ``.onnx`` file from ``wnet-zoo export`` or a bioimage.io package with onnx weights.
        tiling: windows and stitching (default :class:`~wnet_zoo.prediction.settings.Tiling`: the training patch
            recorded in the model, else 64^3, overlap 0.25, Gaussian blending, global normalisation).
        engine: device, threads and batch (default :class:`~wnet_zoo.prediction.settings.EngineSettings`).
        **fields: the fields of either, as keywords, instead of the objects (``Predictor(model, tile=32)``).

    Attributes:
        tiling: the settings in use, the tile resolved.
        engine_settings: as given.
        engine: the open ONNX Runtime session.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        tiling: Tiling | None = None,
        engine: EngineSettings | None = None,
        **fields: Any,
    ) -> None:
        tiling, engine = settings_from(tiling, engine, fields)
        with onnx_file(model) as path:
            shown = shown_name(path)
            self.metadata: ModelMetadata = read_metadata(path, shown)
            if self.metadata.normalization not in INPUT_SCALES:
                raise UserError(f"{shown}: unknown input normalisation {self.metadata.normalization!r}")
            # windows are remapped to 0..100 (the instance stages read that scale too); the graph may take 0..1
            self._input_factor = np.float32(INPUT_SCALES[self.metadata.normalization] / 100.0)
            tile = self._check_tile(tiling.tile or self.metadata.train_patch or DEFAULT_TILE)
            self.tiling = replace(tiling, tile=tile)
            self.engine_settings = engine
            self.engine: Engine = open_engine(
                path, engine.device, engine.threads, tile, engine.batch or GPU_BATCH, shown
            )
            self._check_output(shown)
        self.batch = engine.batch or (GPU_BATCH if self.engine.on_gpu else 1)

    @property
    def tile(self) -> tuple[int, int, int]:
        """The (z, y, x) window in use."""
        assert self.tiling.tile is not None
        return self.tiling.tile

    @property
    def overlap(self) -> float:
        """The fraction of a window shared with its neighbour."""
        return self.tiling.overlap

    @property
    def blend(self) -> str:
        """How overlapping windows are weighted: ``gaussian`` or ``constant``."""
        return self.tiling.blend

    @property
    def norm(self) -> str:
        """How windows are scaled to 0..100: ``global`` or ``tile``."""
        return self.tiling.norm

    @property
    def settings(self) -> dict[str, Any]:
        """The settings as one plain dict (see :func:`~wnet_zoo.prediction.settings.settings_record`)."""
        return settings_record(self.tiling, self.engine_settings)

    @property
    def provider(self) -> str:
        """The execution provider the session really uses."""
        return self.engine.provider

    @property
    def classes(self) -> int:
        """K, the number of output classes (from the metadata, else from a run on an empty tile)."""
        if not self.metadata.num_classes:
            empty = np.zeros((1, 1, *self.tile), dtype=np.float32)
            self.metadata = replace(self.metadata, num_classes=int(self._run(empty).shape[1]))
        return self.metadata.num_classes

    def describe(self) -> str:
        """One line: provider, threads, precision, tiling."""
        tile = ",".join(map(str, self.tile))
        threads = f"{self.engine.threads} thread{'s' * (self.engine.threads != 1)}"
        return (
            f"provider {self.provider} ({threads}, {self.engine.precision}); "
            f"tile {tile}, overlap {self.tiling.overlap:g}, {self.tiling.blend} blend, {self.tiling.norm} norm, "
            f"batch {self.batch}"
            f"{input_transform(self.metadata)}"
        )

    @property
    def pads_edges(self) -> bool:
        """Whether axes shorter than the tile are padded with their edge voxels rather than a constant: for a
        model that subtracts its input's background, whose opening would take a constant pad for background."""
        return bool(self.metadata.input_background and any(self.metadata.input_background))

    def probabilities(self, volume: np.ndarray, progress: bool = False, label: str | None = None) -> np.ndarray:
        """Class probabilities (K, Z, Y, X) of a checked float32 volume (Z, Y, X), blended over the tiles."""
        plan = TilePlan.create(volume.shape, self.tile, self.tiling.overlap, self.tiling.blend)
        edge = self.pads_edges
        if self.tiling.norm == "global":
            source = plan.pad_volume(remap(volume), 0.0, edge)
        else:
            source = plan.pad_volume(np.asarray(volume, dtype=np.float32), float(volume.min()), edge)
        blender: Blender | None = None
        done = 0
        with tqdm(total=len(plan.tiles), desc=label, unit="tile", disable=not progress, leave=False) as bar:
            while done < len(plan.tiles):
                indices = range(done, min(done + self.batch, len(plan.tiles)))
                outputs = self.tile_outputs(source, [plan.tiles[i] for i in indices])
                blender = blender or Blender(plan, outputs.shape[1])
                for index, output in zip(indices, outputs, strict=True):
                    blender.add(index, output)
                done = indices.stop
                bar.update(len(indices))
        assert blender is not None
        return blender.result()

    def predict(
        self,
        image: str | Path | np.ndarray,
        *,
        channel: int | None = None,
        foreground_class: int | None = None,
        voxel_size: VoxelSize | None = None,
        progress: bool = False,
    ) -> xr.DataArray:
        """See :func:`predict`."""
        import xarray as xr  # only the Python API returns a DataArray: the command line does not load xarray

        if isinstance(image, str | Path):
            volume = read_volume(image, channel)
            voxel_size = voxel_size or read_voxel_size(image)
            label: str | None = Path(image).name
        else:
            volume = check_volume(np.asarray(image, dtype=np.float32))
            label = None
        probabilities = self.probabilities(volume, progress=progress, label=label)
        foreground, reason = choose_foreground(probabilities, volume, self.metadata, foreground_class)
        attrs: dict[str, Any] = {
            "provider": self.provider,
            "precision": self.engine.precision,
            "threads": self.engine.threads,
            "tile": list(self.tile),
            "overlap": self.tiling.overlap,
            "blend": self.tiling.blend,
            "norm": self.tiling.norm,
            "batch": self.batch,
            "model": self.metadata.name,
            "model_version": self.metadata.version,
            "foreground_class": foreground,
            "foreground_from": reason,
        }
        if voxel_size is not None:
            attrs["voxel_size"] = [voxel_size.z, voxel_size.y, voxel_size.x]
            attrs["voxel_unit"] = voxel_size.unit
        if label is not None:
            attrs["source"] = str(image)
        classes = np.arange(probabilities.shape[0])
        return xr.DataArray(
            probabilities, dims=("c", "z", "y", "x"), coords={"c": classes}, name="probabilities", attrs=attrs
        )

    def tile_outputs(self, source: np.ndarray, tiles: Sequence[tuple[slice, ...]]) -> np.ndarray:
        """Model outputs (n, K, *tile) for the windows ``tiles`` of ``source``, run as one batch.

        ``source`` is the padded volume (or a part of it, ``tiles`` given in its coordinates), remapped to
        0..100 for ``global`` normalisation and raw for ``tile`` normalisation.
        """
        batch = np.stack([self._window(source, tile) for tile in tiles])[:, None]
        if self._input_factor != 1:
            batch *= self._input_factor
        return self._run(batch)

    def _check_output(self, shown: str) -> None:
        """Run one tile through a graph wnet-zoo did not export, or whose declared shapes leave its output open,
        and refuse what is not class probabilities of that tile: it would fail mid-volume, or segment nothing.

        A foreign graph that passes is used, with a warning that it has no wnet-zoo metadata.
        """
        ours = self.metadata.from_wnet_zoo
        if ours and self.metadata.layout_declared:
            return
        tile = np.random.default_rng(0).uniform(0, 100, (1, 1, *self.tile)).astype(np.float32) * self._input_factor
        shape = f"(1, 1, {', '.join(map(str, self.tile))})"
        try:
            output = np.asarray(self.engine.run(tile))
        except Exception as error:  # onnxruntime raises its own exception types
            raise refusal(shown, ours, f"the model fails on a {shape} float32 tile ({short_message(error)})") from None
        if output.ndim != 5 or output.shape[0] != 1 or output.shape[2:] != tile.shape[2:]:
            wanted = f"(1, K, {', '.join(map(str, self.tile))})"
            raise refusal(shown, ours, f"the model turns a {shape} tile into {tuple(output.shape)}, not {wanted}")
        if output.dtype != np.float32:
            raise refusal(shown, ours, f"the model's output is {output.dtype}, not float32")
        classes = output.shape[1]
        if classes < 2:
            raise refusal(shown, ours, one_channel(classes))
        sums = output.sum(axis=1, dtype=np.float64)
        low, high = float(output.min()), float(output.max())
        tolerance = PROBABILITY_TOLERANCE
        if not (-tolerance <= low and high <= 1 + tolerance and np.abs(sums - 1).max() <= tolerance):  # NaN too
            values = f"values {low:.3g} to {high:.3g}, class sums {sums.min():.3g} to {sums.max():.3g}"
            raise refusal(shown, ours, f"its output is not class probabilities ({values}, not 0 to 1 summing to 1)")
        if not self.metadata.num_classes:
            self.metadata = replace(self.metadata, num_classes=classes)
        if not ours:
            LOG.warning(
                "%s: no wnet-zoo metadata (not exported by wnet-zoo); its output looks like %d-class probabilities, "
                "so it is used as one WNet3D would be (input scaled to 0..100, nuclei class by intensity)",
                shown,
                classes,
            )

    def _check_tile(self, tile: tuple[int, int, int]) -> tuple[int, int, int]:
        multiple = self.metadata.spatial_multiple
        if any(t % multiple for t in tile):
            raise UserError(f"{setting('tile', tile)}: each size must be a multiple of {multiple}, e.g. 64")
        return tile

    def _window(self, source: np.ndarray, tile: tuple[slice, ...]) -> np.ndarray:
        window = source[tile]
        if self.tiling.norm == "global":
            return window
        low, high = float(window.min()), float(window.max())
        return remap(window, low, high) if high > low else np.zeros_like(window)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Run a batch; when it is too large for the device, halve the batch for this and every later run."""
        try:
            return self.engine.run(batch)
        except Exception as error:  # onnxruntime raises its own exception types
            if len(batch) == 1 or not _too_large(error):
                raise
        half = len(batch) // 2
        self.batch = min(self.batch, half)
        LOG.warning("%d tiles per run are too many for the device; continuing with %d", len(batch), half)
        return np.concatenate([self._run(batch[:half]), self._run(batch[half:])])


BATCH_TOO_LARGE = (
    "out of memory",
    "failed to allocate",
    "bad_alloc",
    "cudaerrormemoryallocation",
    # cuDNN describes tensors with 32-bit sizes: 1331 windows of 64^3 on an H200 gave this, not an allocation error
    "cudnn_status_not_supported",
)


def _too_large(error: Exception) -> bool:
    """Whether a failed run says its batch was too large: out of memory, or over cuDNN's tensor size."""
    text = str(error).lower()
    return any(sign in text for sign in BATCH_TOO_LARGE)


def predict(
    model: str | Path | Predictor,
    image: str | Path | np.ndarray,
    *,
    channel: int | None = None,
    foreground_class: int | None = None,
    voxel_size: VoxelSize | None = None,
    progress: bool = False,
    tiling: Tiling | None = None,
    engine: EngineSettings | None = None,
    **fields: Any,
) -> xr.DataArray:
    """Class probabilities of one 3-D image, stitched from tiles run on ONNX Runtime.

    Args:
        model: an exported ``.onnx`` file, a bioimage.io package with onnx weights, or a :class:`Predictor`.
        image: a 3-D TIFF file (``channel`` picks one of a 4-D stack) or a 3-D array.
        channel: channel of a 4-D (C, Z, Y, X) TIFF stack.
        foreground_class: the nuclei class, overriding the model's metadata and the intensity rule.
        voxel_size: recorded in the attributes (default: the TIFF file's, if any).
        progress: show a progress bar over tiles.
        tiling: windows and stitching, when ``model`` is a path (see :class:`Predictor`).
        engine: device, threads and batch, when ``model`` is a path.
        **fields: the fields of either as keywords (``device="cpu"``, ``tile=32``).

    Returns:
        float32 ``DataArray`` with dims (c, z, y, x), the input's spatial shape, class coordinates, and
        attributes: provider, precision, threads, tile, overlap, blend, norm, batch, model, model_version,
        foreground_class (and foreground_from), voxel_size/voxel_unit when known, source for files.
    """
    predictor = model if isinstance(model, Predictor) else Predictor(model, tiling=tiling, engine=engine, **fields)
    return predictor.predict(
        image, channel=channel, foreground_class=foreground_class, voxel_size=voxel_size, progress=progress
    )

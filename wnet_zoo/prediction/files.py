"""``wnet-zoo predict`` on files: result TIFFs that keep the input's voxel size, and the labels table.

Every file of one image is first written under a hidden temporary name next to its destination; only
when all are complete are they renamed into place, so an error or Ctrl-C leaves no partial output.
Existing results stop the run before any work unless ``overwrite`` is given.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from wnet_zoo.errors import UserError, setting
from wnet_zoo.io.atomic import check_can_create, removed_if_left_empty, sweep_stale_parts
from wnet_zoo.io.intensity import boundary_view
from wnet_zoo.io.sources import SourceSpec, collect_sources
from wnet_zoo.io.volumes import read_volume
from wnet_zoo.io.voxels import VoxelSize, override_voxel_size, read_voxel_size
from wnet_zoo.prediction.foreground import choose_foreground
from wnet_zoo.prediction.model_files import onnx_file
from wnet_zoo.prediction.outputs import ImageResult, OutputSet, check_free, names, output_paths
from wnet_zoo.prediction.predictor import Predictor
from wnet_zoo.prediction.settings import EngineSettings, Tiling, needs_nuclei, settings_from
from wnet_zoo.prediction.stream.executors import Executor, check_scheduler, open_executor
from wnet_zoo.prediction.stream.options import FORMATS, StreamOptions
from wnet_zoo.prediction.stream.streaming import predict_stream, work_folder
from wnet_zoo.segment.nuclei import import_libraries_in_background, instances, stage_count
from wnet_zoo.segment.options import NucleiOptions
from wnet_zoo.triples import parse_floats


@dataclass(frozen=True)
class Request:
    """What to make of every image of one call: which results, in which format, how nuclei are split."""

    outputs: tuple[str, ...]
    fmt: str | None
    overwrite: bool
    resume: bool
    foreground_class: int | None
    nuclei: NucleiOptions
    voxel_size: tuple[float, float, float] | None
    stream_options: StreamOptions | None
    progress: bool


def predict_files(
    model: str | Path,
    images: Sequence[str | Path],
    out: str | Path,
    *,
    outputs: Sequence[str] | None = None,
    overwrite: bool = False,
    channel: int | None = None,
    level: int | None = None,
    foreground_class: int | None = None,
    nuclei: NucleiOptions | None = None,
    voxel_size: str | Sequence[float] | None = None,
    fmt: str | None = None,
    stream: bool | None = None,
    resume: bool = False,
    scheduler: str | None = None,
    stream_options: StreamOptions | None = None,
    progress: bool = False,
    report: Callable[[str], Any] = print,
    tiling: Tiling | None = None,
    engine: EngineSettings | None = None,
    **fields: Any,
) -> list[ImageResult]:
    """Predict every image and write the requested results into ``out``.

    Args:
        model: an exported ``.onnx`` file or a bioimage.io package with onnx weights.
        images: 3-D TIFF files, zarr arrays, OME-Zarr images, or folders of them.
        out: folder for the results (created when the first result is written).
        outputs: any of ``probabilities`` (K, Z, Y, X float32), ``mask`` (uint8 0/1: the nuclei's foreground,
            equal to ``instances > 0``), ``raw_mask`` (uint8 0/1: the model's nuclei class as it is) and
            ``instances`` (uint16/uint32 labels plus ``<stem>_labels.csv``); default mask and instances.
        overwrite: replace existing results; without it they stop the run before any work.
        channel: channel of 4-D volumes.
        level: resolution level of OME-Zarr images (default 0, the full resolution).
        foreground_class: the nuclei class, overriding the model's metadata and the intensity rule.
        nuclei: how the foreground becomes nuclei (default :class:`~wnet_zoo.segment.options.NucleiOptions`: half-max
            boundaries, nuclei under 10 voxels or a tenth of the typical nucleus removed).
        voxel_size: (z, y, x) voxel size overriding the files' metadata (``"2,0.5,0.5"`` or a sequence).
        fmt: ``zarr`` or ``tiff`` results (default: zarr for zarr inputs, TIFF otherwise).
        stream: predict block by block with bounded memory (default: for zarr inputs, zarr results, Dask,
            ``resume``, and volumes whose in-memory working set would take over half the free memory).
        resume: continue interrupted streaming predictions, skipping their finished blocks.
        scheduler: ``local:N`` or ``tcp://HOST:PORT`` to run the blocks on Dask (implies streaming).
        stream_options: block sizes and halos of streaming prediction.
        progress: show progress bars.
        report: called with one line per event (settings used, each image written).
        tiling: windows and stitching (see :class:`~wnet_zoo.prediction.settings.Tiling`).
        engine: device, threads and batch (see :class:`~wnet_zoo.prediction.settings.EngineSettings`).
        **fields: the fields of either as keywords (``device="cpu"``, ``tile=32``).
    """
    tiling, engine = settings_from(tiling, engine, fields)
    nuclei = nuclei or NucleiOptions()
    nuclei.validate()
    if fmt is not None and fmt not in FORMATS:
        raise UserError(f"{setting('fmt', fmt)}: choose zarr or tiff")
    request = Request(
        names(outputs),
        fmt,
        overwrite,
        resume,
        foreground_class,
        nuclei,
        parse_floats(voxel_size, "voxel_size"),
        stream_options,
        progress,
    )
    specs = collect_sources(images, channel, level)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{setting('out', out)} is a file; give a folder")
    if scheduler is not None:
        check_scheduler(scheduler)
    check_can_create(out, setting("out"))
    sweep_stale_parts(out)
    with removed_if_left_empty(out):
        stems = [spec.stem for spec in specs]
        if len(set(stems)) < len(stems):
            twice = next(stem for stem in stems if stems.count(stem) > 1)
            raise UserError(f"two images are named {twice!r}; their results would collide: predict them separately")
        streamed = {spec: _streams(spec, stream, fmt, resume, scheduler) for spec in specs}
        planned = {spec: _paths(out, spec, request.outputs, fmt, streamed[spec]) for spec in specs}
        todo = [spec for spec in specs if not _complete(out, spec, planned[spec], resume)]
        for spec in specs:
            if spec not in todo:
                report(f"{spec.path.name}: results complete, nothing to resume")
        _check_outputs(out, todo, planned, overwrite, resume)
        ready = _check_inputs(todo, streamed, channel)
        if not todo:
            return []
        if needs_nuclei(request.outputs) and not all(streamed[spec] for spec in todo):  # while the network runs
            import_libraries_in_background()  # (streamed, they load once in a long run: not held from its start)
        with onnx_file(model) as onnx_path:
            predictor = Predictor(onnx_path, tiling=tiling, engine=engine)
            classes = predictor.metadata.num_classes
            if foreground_class is not None and classes and not 0 <= foreground_class < classes:
                wrong = setting("foreground_class", foreground_class)
                raise UserError(f"{wrong}: the model has classes 0..{classes - 1}")
            report(predictor.describe())
            needs_executor = any(streamed[spec] for spec in todo)
            with open_executor(scheduler if needs_executor else None, predictor.engine.threads) as executor:
                if needs_executor:
                    report(f"streaming blocks on {executor.description}")
                results = []
                for spec in todo:
                    if streamed[spec]:
                        result = _stream_one(predictor, onnx_path, spec, planned[spec], executor, request)
                    else:
                        volume = ready.pop(spec) if spec in ready else read_volume(spec.path, channel)
                        result = _predict_one(predictor, spec, planned[spec], volume, request)
                    report(result.summary())
                    results.append(result)
        return results


def _streams(spec: SourceSpec, stream: bool | None, fmt: str | None, resume: bool, scheduler: str | None) -> bool:
    if stream is not None:
        if not stream and (scheduler or resume or spec.is_zarr or fmt == "zarr"):
            needs = f"zarr volumes, zarr results, {setting('resume')} and {setting('scheduler')} need streaming"
            raise UserError(f"{setting('stream', False)}: {needs}")
        return stream
    if spec.is_zarr or fmt == "zarr" or resume or scheduler:
        return True
    with spec.open() as source:
        working_set = int(np.prod(source.shape)) * 4 * 6  # the volume, its remap, K = 2 probabilities, weights
    return working_set > _free_memory() // 2


def _free_memory() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not on Linux: assume 8 GiB
        return 8 * 2**30


def _paths(out: Path, spec: SourceSpec, chosen: Sequence[str], fmt: str | None, streamed: bool) -> dict[str, Path]:
    if streamed:
        return output_paths(out, spec.stem, chosen, fmt or ("zarr" if spec.is_zarr else "tiff"))
    return output_paths(out, spec.stem, chosen)


def _complete(out: Path, spec: SourceSpec, paths: dict[str, Path], resume: bool) -> bool:
    """With ``resume``: whether an image's results all exist and no interrupted work is left."""
    return resume and not work_folder(out, spec.stem).exists() and all(path.exists() for path in paths.values())


def _check_outputs(
    out: Path, specs: Sequence[SourceSpec], planned: dict[SourceSpec, dict[str, Path]], overwrite: bool, resume: bool
) -> None:
    fresh = [spec for spec in specs if not (resume and work_folder(out, spec.stem).exists())]
    check_free((path for spec in fresh for path in planned[spec].values()), overwrite)
    if overwrite or resume:
        return
    left = [work_folder(out, spec.stem) for spec in specs if work_folder(out, spec.stem).exists()]
    if left:
        raise UserError(
            f"{left[0]} holds an interrupted prediction; pass {setting('resume', True)} to continue it "
            f"or {setting('overwrite', True)}"
        )


def _check_inputs(
    specs: Sequence[SourceSpec], streamed: dict[SourceSpec, bool], channel: int | None
) -> dict[SourceSpec, np.ndarray]:
    """Check every input before any work; the first in-memory volume is kept, read."""
    ready: dict[SourceSpec, np.ndarray] = {}
    for spec in specs:
        if streamed[spec]:
            spec.open().close()
        elif spec.level not in (None, 0):
            level = setting("level")
            raise UserError(f"{spec.path}: {level} applies to OME-Zarr images; a TIFF has one level, drop {level}")
        elif not ready:
            ready[spec] = read_volume(spec.path, channel)
        else:
            read_volume(spec.path, channel)
    return ready


def _predict_one(
    predictor: Predictor, spec: SourceSpec, paths: dict[str, Path], volume: np.ndarray, request: Request
) -> ImageResult:
    size = override_voxel_size(read_voxel_size(spec.path), request.voxel_size)
    probabilities = predictor.probabilities(volume, progress=request.progress, label=spec.path.name)
    foreground, reason = choose_foreground(probabilities, volume, predictor.metadata, request.foreground_class)
    result = ImageResult(spec.path, paths, foreground, reason, None)
    _write(result, probabilities, volume, size, request.nuclei, predictor, request.progress)
    return result


def _stream_one(
    predictor: Predictor,
    onnx_path: Path,
    spec: SourceSpec,
    paths: dict[str, Path],
    executor: Executor,
    request: Request,
) -> ImageResult:
    out = next(iter(paths.values())).parent
    out.mkdir(parents=True, exist_ok=True)
    work = work_folder(out, spec.stem)
    if request.overwrite and work.exists():
        shutil.rmtree(work)
    found = predict_stream(
        predictor,
        onnx_path,
        spec,
        paths,
        outputs=request.outputs,
        fmt=request.fmt or ("zarr" if spec.is_zarr else "tiff"),
        executor=executor,
        resume=request.resume,
        foreground_class=request.foreground_class,
        nuclei=request.nuclei,
        voxel_size=request.voxel_size,
        options=request.stream_options,
        progress=request.progress,
    )
    return ImageResult(spec.path, paths, found.foreground_class, found.foreground_from, found.nuclei)


def _write(
    result: ImageResult,
    probabilities: np.ndarray,
    volume: np.ndarray,
    size: VoxelSize | None,
    nuclei: NucleiOptions,
    predictor: Predictor,
    progress: bool = False,
) -> None:
    paths = result.paths
    mask = probabilities.argmax(axis=0) == result.foreground_class
    with OutputSet() as staged:
        if "probabilities" in paths:
            staged.tiff(paths["probabilities"], probabilities, "CZYX", size)
        if "raw_mask" in paths:
            staged.tiff(paths["raw_mask"], mask.astype(np.uint8), "ZYX", size)
        if needs_nuclei(paths):
            spacing = None if size is None else size[:3]
            label = f"{result.image.name}: nuclei"
            with _stage_progress(label, stage_count(nuclei, volume), progress) as step:
                found = instances(
                    probabilities[result.foreground_class],
                    volume,
                    mask=mask,
                    voxel_size=spacing,
                    boundary_intensity=boundary_view(volume, predictor.metadata.input_background),
                    step=step,
                    threads=predictor.engine.threads,  # --threads, as ONNX Runtime's
                    **asdict(nuclei),
                )
            if "mask" in paths:
                staged.tiff(paths["mask"], (found.labels > 0).astype(np.uint8), "ZYX", size)
            if "instances" in paths:
                staged.tiff(paths["instances"], found.labels, "ZYX", size)
                staged.csv(paths["labels"], found.table)
            result.nuclei = len(found.table)


@contextlib.contextmanager
def _stage_progress(label: str, total: int, enabled: bool) -> Iterator[Callable[[str], None]]:
    """A progress bar over named stages: the callable starts the next one, the block's end finishes the last."""
    started: list[str] = []
    with tqdm(total=total, desc=label, unit="stage", disable=not enabled, leave=False) as bar:

        def step(name: str) -> None:
            if started:
                bar.update(1)
            started.append(name)
            bar.set_postfix_str(name)

        yield step
        bar.update(min(len(started), 1))

"""Prediction on volumes of any size with bounded memory, in this process or on Dask.

The volume is never loaded whole. A first pass over blocks finds its minimum and maximum (the global
0..100 remap); then every output block is blended from the tiles that cover it, read with their halo, by
the same :class:`~wnet_zoo.prediction.tiling.TilePlan` as in-memory prediction, so the probabilities are the same
numbers. Masks and nuclei are made block by block with an instance halo, and nuclei cut by a block border
are merged into one label (:mod:`wnet_zoo.prediction.stream.label_merge`). Memory is set by the block sizes,
not the volume.

All of it happens in a hidden work folder next to the results (``.<stem>.wnet-zoo-work``), which records
each finished block: an interrupted run continues with ``resume=True``. When every phase is complete the
results are moved (zarr) or written (TIFF, block by block) to their names and the work folder is removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from wnet_zoo.errors import UserError, setting
from wnet_zoo.io.atomic import atomic_path
from wnet_zoo.io.intensity import background_reach
from wnet_zoo.io.sources import SourceSpec, VolumeSource
from wnet_zoo.io.stores import create_zarr, open_zarr, write_tiff_blocks
from wnet_zoo.io.voxels import VoxelSize, override_voxel_size
from wnet_zoo.prediction.foreground import foreground_from_totals
from wnet_zoo.prediction.predictor import Predictor
from wnet_zoo.prediction.settings import OUTPUTS, needs_nuclei
from wnet_zoo.prediction.stream import blocks
from wnet_zoo.prediction.stream.executors import DaskExecutor, Executor
from wnet_zoo.prediction.stream.jobs import BlockGrid, Job
from wnet_zoo.prediction.stream.label_merge import merge_labels
from wnet_zoo.prediction.stream.options import StreamOptions
from wnet_zoo.prediction.stream.worker import STATE
from wnet_zoo.segment.geometry import relative_spacing
from wnet_zoo.segment.options import NucleiOptions


def fit_block(shape: Sequence[int], edge: int, chunk: int, halo: int) -> tuple[int, int, int]:
    """Block edges (multiples of ``chunk``) whose block plus ``halo`` holds about as many voxels as an
    ``edge``-sided cube plus halo: an axis shorter than ``edge`` is covered whole and the others grow, so a thin
    volume costs the same memory per block as a thick one (and fewer, larger blocks recompute less halo)."""
    target = float(edge + 2 * halo) ** 3
    whole = [-(-int(s) // chunk) * chunk for s in shape]
    block = [min(edge, w) for w in whole]
    for _ in range(3):
        growing = [i for i in range(3) if block[i] < whole[i]]
        if not growing:
            break
        fixed = float(np.prod([min(block[i] + 2 * halo, shape[i]) for i in range(3) if i not in growing]))
        side = (target / fixed) ** (1 / len(growing)) - 2 * halo
        grown = max(chunk, int(round(side / chunk)) * chunk)
        block = [min(grown, whole[i]) if i in growing else block[i] for i in range(3)]
    return (block[0], block[1], block[2])


def work_folder(out: Path, stem: str) -> Path:
    """The hidden folder an image's streaming prediction works (and resumes) in."""
    return out / f".{stem}.wnet-zoo-work"


@dataclass
class StreamResult:
    """What a streaming prediction wrote."""

    paths: dict[str, Path]
    foreground_class: int
    foreground_from: str
    nuclei: int | None
    blocks: int


def predict_stream(
    predictor: Predictor,
    model: Path,
    spec: SourceSpec,
    paths: dict[str, Path],
    *,
    outputs: Sequence[str],
    fmt: str,
    executor: Executor,
    resume: bool = False,
    foreground_class: int | None = None,
    nuclei: NucleiOptions | None = None,
    voxel_size: Sequence[float] | None = None,
    options: StreamOptions | None = None,
    progress: bool = False,
) -> StreamResult:
    """Predict one volume block by block and write ``paths`` (see :func:`~wnet_zoo.prediction.outputs.output_paths`).

    Args:
        predictor: the open model and its tiling settings.
        model: the ``.onnx`` file (workers open it themselves).
        spec: the input volume.
        outputs: ``probabilities``, ``mask`` and/or ``instances``.
        fmt: ``zarr`` or ``tiff``.
        executor: where blocks run (see :mod:`wnet_zoo.prediction.stream.executors`).
        resume: continue the work folder an interrupted run left; without it such a folder is an error.
        foreground_class: the nuclei class (default: metadata, else the brightest class).
        nuclei: how the foreground becomes nuclei (default :class:`~wnet_zoo.segment.options.NucleiOptions`).
        voxel_size: (z, y, x) overriding the input's voxel size (in its unit).
        options: block sizes and halos.
    """
    options = options or StreamOptions()
    nuclei = nuclei or NucleiOptions()
    spec = replace(spec, path=spec.path.resolve())  # workers may run in other folders
    model = model.resolve()
    paths = {name: path.resolve() for name, path in paths.items()}
    out = next(iter(paths.values())).parent
    work = work_folder(out, spec.stem)
    with spec.open() as source:
        size = override_voxel_size(source.voxel_size, voxel_size)
        job = _job(predictor, model, spec, source, work, outputs, options, size, executor)
        job = replace(job, nuclei=nuclei)
        fingerprint = _fingerprint(job, fmt, foreground_class)
        created = _prepare(work, fingerprint, resume)
        try:
            result = _run(job, source, executor, paths, fmt, foreground_class, size, progress)
        except UserError:
            if created:
                shutil.rmtree(work, ignore_errors=True)
            raise
    shutil.rmtree(work, ignore_errors=True)
    return result


def _job(
    predictor: Predictor,
    model: Path,
    spec: SourceSpec,
    source: VolumeSource,
    work: Path,
    outputs: Sequence[str],
    options: StreamOptions,
    size: VoxelSize | None,
    executor: Executor,
) -> Job:
    settings = dict(predictor.settings)
    distributed = isinstance(executor, DaskExecutor)
    if distributed:
        settings["threads"] = executor.worker_threads or settings["threads"]
    else:
        settings["threads"] = predictor.engine.threads
    spacing = relative_spacing(None if size is None else size[:3])
    background = predictor.metadata.input_background or (0, 0, 0)
    job = Job(
        source=spec,
        model=model,
        work=work,
        shape=source.shape,
        block=fit_block(source.shape, options.block, options.chunk, max(predictor.tile) // 2),
        label_block=fit_block(
            source.shape,
            options.label_block,
            options.chunk,
            # a model that subtracts its background has its half-max boundaries read that much further
            options.instance_halo + max(background_reach(background)),
        ),
        predictor=settings,
        outputs=tuple(outputs),
        spacing=spacing,
        chunk=options.chunk,
        instance_halo=options.instance_halo,
        input_background=background,
        cache_bytes=options.cache_mb * 2**20,
    )
    if not distributed:
        STATE.adopt(job, predictor)
    return job


def _fingerprint(job: Job, fmt: str, foreground: int | None) -> str:
    model = job.model.stat()
    path = job.source.path
    marker = next((path / m for m in ("zarr.json", ".zarray", ".zattrs") if (path / m).is_file()), path)
    text = json.dumps(
        [
            str(job.source),
            marker.stat().st_mtime_ns,
            marker.stat().st_size,
            list(job.shape),
            str(job.model.resolve()),
            model.st_size,
            model.st_mtime_ns,
            {k: v for k, v in job.predictor.items() if k != "threads"},
            list(job.outputs),
            fmt,
            foreground,
            list(job.spacing),
            job.block,
            job.label_block,
            job.instance_halo,
            asdict(job.nuclei),
            # the mask became the nuclei's foreground (instances > 0): work of an older mask does not resume
            *(["mask: instances > 0"] if "mask" in job.outputs else []),
            # nor labels of the nuclei stages before edges read at less smoothing, brightness in the merge, levels
            # read again per nucleus and oversized labels split (in passes)
            *(
                [
                    "nuclei: edge smoothing, brightness merge, linear intensity, levels per nucleus, "
                    "oversized split in passes"
                ]
                if needs_nuclei(job.outputs)
                else []
            ),
        ],
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _prepare(work: Path, fingerprint: str, resume: bool) -> bool:
    """Create the work folder, or check that the one found belongs to this prediction; True if created."""
    record = work / "settings.sha256"
    if work.exists():
        if not resume:
            raise UserError(
                f"{work} holds an interrupted prediction; pass {setting('resume', True)} to continue it "
                f"or {setting('overwrite', True)} to start over"
            )
        if not record.is_file() or record.read_text().strip() != fingerprint:
            raise UserError(
                f"{work}: {setting('resume', True)} with other settings, model or input than the interrupted run; "
                f"use {setting('overwrite', True)}"
            )
        return False
    for phase in blocks.PHASES:
        (work / "done" / phase).mkdir(parents=True)
    (work / "table").mkdir()
    record.write_text(fingerprint + "\n")
    return True


def _run(
    job: Job,
    source: VolumeSource,
    executor: Executor,
    paths: dict[str, Path],
    fmt: str,
    foreground_class: int | None,
    size: VoxelSize | None,
    progress: bool,
) -> StreamResult:
    """Every phase (unless a resumed run finished them all), then publish the results."""
    complete = job.work / "complete.json"
    if not complete.is_file():
        outcome = _compute(job, source, executor, paths, foreground_class, size, progress)
        complete.write_text(json.dumps(outcome) + "\n")
    outcome = json.loads(complete.read_text())
    _publish(job, paths, fmt, size, job.label_grid)
    return StreamResult(paths, outcome["foreground"], outcome["reason"], outcome["nuclei"], len(job.grid))


def _compute(
    job: Job,
    source: VolumeSource,
    executor: Executor,
    paths: dict[str, Path],
    foreground_class: int | None,
    size: VoxelSize | None,
    progress: bool,
) -> dict[str, Any]:
    """The four phases over the blocks, into the work stores; the foreground class and the nuclei count."""
    name = job.source.stem

    def label(phase: str) -> str:
        return f"{name}: {phase}" if progress else ""

    grid, label_grid = job.grid, job.label_grid
    everything = range(len(grid))
    statistics = executor.map("statistics", job, everything, label=label("statistics"))
    if not all(bool(s["finite"]) for s in statistics):
        raise UserError(f"{job.source.path}: contains NaN or Inf voxels; replace them (e.g. with 0) before use")
    low = min(float(s["low"]) for s in statistics)
    high = max(float(s["high"]) for s in statistics)
    if low == high:
        raise UserError(
            f"{job.source.path}: every voxel has the value {low:g}; a constant image holds nothing to segment"
        )
    job = replace(job, low=low, high=high)
    _make_stores(job, size, source)
    summaries = executor.map("probabilities", job, everything, label=label("tiles"))
    executor.release_tiles()
    voxels = np.sum([s["voxels"] for s in summaries], axis=0)
    sums = np.sum([s["sums"] for s in summaries], axis=0)
    foreground, reason = foreground_from_totals(voxels, sums, STATE.predictor_for(job).metadata, foreground_class)
    job = replace(job, foreground=foreground)
    nuclei = None
    nuclei_wanted = needs_nuclei(job.outputs)
    if nuclei_wanted or "raw_mask" in job.outputs:
        labelled = executor.map("label", job, range(len(label_grid)), label=label("nuclei"))
        if nuclei_wanted:
            paired = executor.map("pairs", job, range(len(label_grid)), label=label("borders"))
            merged = merge_labels(label_grid, labelled, paired, job.nuclei)
            if "instances" in job.outputs and not job.store("instances").exists():  # resumed: keep its blocks
                create_zarr(job.store("instances"), job.shape, merged.dtype, _chunks(job), size, source.ome)
            executor.map("relabel", job, range(len(label_grid)), merged.extras, label=label("labels"))
            nuclei = merged.count
    return {"foreground": foreground, "reason": reason, "nuclei": nuclei}


def _chunks(job: Job) -> tuple[int, int, int]:
    return tuple(min(job.chunk, s) for s in job.shape)  # type: ignore[return-value]


def _make_stores(job: Job, size: VoxelSize | None, source: VolumeSource) -> None:
    """Create the work stores (unless a resumed run made them)."""
    chunks = _chunks(job)
    count = STATE.predictor_for(job).classes
    wanted: dict[str, tuple[tuple[int, ...], Any, VoxelSize | None]] = {"classes": (job.shape, np.uint8, None)}
    if "probabilities" in job.outputs:
        wanted["probabilities"] = ((count, *job.shape), np.float32, size)
    for name in ("mask", "raw_mask"):
        if name in job.outputs:
            wanted[name] = (job.shape, np.uint8, size)
    if needs_nuclei(job.outputs):
        wanted["raw_labels"] = (job.shape, np.uint32, None)
    for name, (shape, dtype, voxel_size) in wanted.items():
        store = job.store(name)
        if not store.exists():
            block_chunks = (shape[0], *chunks) if len(shape) == 4 else chunks
            ome = source.ome if voxel_size is not None else None
            create_zarr(store, shape, dtype, block_chunks, voxel_size, ome)


def _publish(job: Job, paths: dict[str, Path], fmt: str, size: VoxelSize | None, grid: BlockGrid) -> None:
    """Write the labels table from the blocks' parts, then move (zarr) or write (TIFF) each result to its name."""
    if "labels" in paths and (job.work / "table").is_dir():
        with atomic_path(paths["labels"]) as staged:
            write_table(sorted((job.work / "table").glob("*.npy")), staged)
        shutil.rmtree(job.work / "table")
    for name in OUTPUTS:
        if name not in paths:
            continue
        final = paths[name]
        if not job.store(name).exists():  # moved into place before an interruption: published already
            continue
        if fmt == "zarr":
            if final.exists():
                shutil.rmtree(final) if final.is_dir() else final.unlink()
            os.replace(job.store(name), final)
            continue
        array = open_zarr(job.store(name), "r")
        with atomic_path(final) as staged:
            regions = [grid.region(i) for i in range(len(grid))]
            write_tiff_blocks(staged, array.shape, array.dtype, regions, array, size)


def write_table(parts: Sequence[Path], path: Path) -> None:
    """Concatenate the blocks' table parts (float rows in :data:`~wnet_zoo.segment.measure.COLUMNS` order) into a CSV
    file, one part at a time."""
    import pandas as pd

    from wnet_zoo.segment.measure import COLUMNS

    integers = [c for c in COLUMNS if c != "mean_intensity" and not c.startswith("centroid")]
    with open(path, "w", newline="") as handle:
        handle.write(",".join(COLUMNS) + "\n")
        for part in parts:
            table = pd.DataFrame(np.load(part), columns=list(COLUMNS))
            table[integers] = table[integers].astype(np.int64)
            table.to_csv(handle, index=False, header=False, float_format="%.6g")

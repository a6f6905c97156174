"""The work of one output block, the same on one machine and on a Dask worker.

Streaming prediction (:mod:`wnet_zoo.prediction.stream.streaming`) cuts the volume into blocks of whole zarr
chunks and runs four phases over them; every function here does one phase for one block, reads what it needs from the
input and the work stores, writes its block, and returns a small summary that is also saved under
``done/`` in the work folder (which is how ``--resume`` knows the block is finished):

1. :func:`statistics`: minimum, maximum and finiteness of the block (for the global 0..100 remap).
2. :func:`probabilities`: the covering tiles plus their halo, blended exactly as the in-memory path does;
   writes the probabilities (when asked for) and the arg-max class; returns voxels and summed intensity
   per class (for choosing the foreground class).
3. :func:`label`: the mask of the foreground class and, for instances, the nuclei found inside the block
   plus an instance halo (:func:`wnet_zoo.segment.nuclei.nuclei_labels`); keeps the block's own labels (numbered
   1..n) and records, at each face shared with the next block, which of its labels continue across (see
   :mod:`wnet_zoo.prediction.stream.label_merge`).
4. :func:`relabel`: the block's labels mapped to the final, merged and renumbered labels.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from wnet_zoo.errors import naming
from wnet_zoo.io.intensity import background_reach, boundary_view, remap
from wnet_zoo.io.sources import Region, VolumeSource
from wnet_zoo.io.stores import open_zarr
from wnet_zoo.prediction.runtime import default_threads
from wnet_zoo.prediction.settings import needs_nuclei
from wnet_zoo.prediction.stream.jobs import FACE_AXES, Job
from wnet_zoo.prediction.stream.worker import STATE, map_large_allocations, trim_memory
from wnet_zoo.prediction.tiling import TilePlan
from wnet_zoo.segment.measure import label_totals, size_counts, table_rows
from wnet_zoo.segment.nuclei import nuclei_labels

PHASES = ("statistics", "probabilities", "label", "pairs", "relabel")


def run(phase: str, job: Job, index: int, extra: Any = None) -> dict[str, np.ndarray]:
    """Do ``phase`` for block ``index`` unless it is recorded as done; record its summary, and return the part
    of it the client needs (keys starting with ``_`` stay on disk for later phases of the same block)."""
    record = job.done(phase, index)
    if not record.is_file():
        map_large_allocations()
        work: Callable[..., dict[str, np.ndarray]] = _PHASE_FUNCTIONS[phase]
        with naming(job.naming):
            summary = work(job, index) if extra is None else work(job, index, extra)
        partial = record.with_name(f".{record.stem}.{os.getpid()}.{threading.get_ident()}.npz")
        np.savez(partial, **summary)
        os.replace(partial, record)
        del summary
        trim_memory()
    with np.load(record) as saved:
        return {name: saved[name] for name in saved.files if not name.startswith("_")}


def statistics(job: Job, index: int) -> dict[str, np.ndarray]:
    """Phase 1: minimum, maximum and whether every voxel is finite."""
    with job.source.open() as source:
        values = source.read(job.grid.region(index))
    finite = bool(np.isfinite(values).all())
    shown = values[np.isfinite(values)] if not finite else values
    low = float(shown.min()) if shown.size else np.inf
    high = float(shown.max()) if shown.size else -np.inf
    return {"low": np.float64(low), "high": np.float64(high), "finite": np.bool_(finite)}


def probabilities(job: Job, index: int) -> dict[str, np.ndarray]:
    """Phase 2: blend the block from its covering tiles; write probabilities and the arg-max class."""
    predictor = STATE.predictor_for(job)
    plan = TilePlan.create(job.shape, predictor.tile, predictor.tiling.overlap, predictor.tiling.blend)
    region = job.grid.region(index)
    with job.source.open() as source:
        window = plan.source_region(region)
        raw = read_padded(source, plan, window, edge=predictor.pads_edges)
    inner = tuple(
        slice(r.start + b - w.start, r.stop + b - w.start)
        for r, (b, _), w in zip(region, plan.pad, window, strict=True)
    )
    intensity = raw[inner].copy()
    if predictor.tiling.norm == "global":
        data, pad_value = remap(raw, job.low, job.high), 0.0
    else:
        data, pad_value = raw, job.low
    if not predictor.pads_edges:  # the constant pad the in-memory path gives (MONAI's)
        data[_pad_mask(plan, window, data.shape)] = pad_value
    del raw
    outputs = _TileOutputs(job, predictor, plan, data, window, plan.tiles_covering(region))
    blended = plan.blend_region(region, outputs)
    del data, outputs
    if "probabilities" in job.outputs:
        open_zarr(job.store("probabilities"))[(slice(None), *region)] = blended
    classes = blended.argmax(axis=0).astype(np.uint8)
    open_zarr(job.store("classes"))[region] = classes
    count = blended.shape[0]
    return {
        "voxels": np.bincount(classes.ravel(), minlength=count).astype(np.int64),
        "sums": np.bincount(classes.ravel(), weights=intensity.ravel().astype(np.float64), minlength=count),
    }


def label(job: Job, index: int) -> dict[str, np.ndarray]:
    """Phase 3: the block's mask and (for instances) its nuclei.

    Writes the block's own labels 1..n. Returns the labels touching a face shared with another block
    (``edge``, with their measurements) and the sizes of the others (``inner_sizes`` and ``inner_counts``, a
    histogram); keeps on disk (``_``-keys) every
    label's measurements and, for each face shared with the next block, the block's labels on that
    block's first plane where they continue across the face (0 elsewhere).
    """
    grid = job.label_grid
    region = grid.region(index)
    nuclei = needs_nuclei(job.outputs)
    halo = job.instance_halo if nuclei else 0
    extended = tuple(
        slice(max(r.start - halo, 0), min(r.stop + halo, s)) for r, s in zip(region, job.shape, strict=True)
    )
    core = tuple(slice(r.start - e.start, r.stop - e.start) for r, e in zip(region, extended, strict=True))
    foreground = open_zarr(job.store("classes"), "r")[extended] == job.foreground
    if "raw_mask" in job.outputs:
        open_zarr(job.store("raw_mask"))[region] = foreground[core].astype(np.uint8)
    if not nuclei:
        return {}
    # the half-max boundaries read the image less its background where the model subtracts one; the subtraction
    # reads further around each voxel, so that margin is read too and cut off after, for the in-memory values
    reach = background_reach(job.input_background)
    read = tuple(
        slice(max(e.start - m, 0), min(e.stop + m, s)) for e, m, s in zip(extended, reach, job.shape, strict=True)
    )
    inner = tuple(slice(e.start - r.start, e.stop - r.start) for e, r in zip(extended, read, strict=True))
    with job.source.open() as source:
        wide = source.read(read)
    intensity = wide[inner].copy() if any(reach) else wide  # a copy lets the wider read go
    seen = boundary_view(wide, job.input_background)[inner]
    del wide
    # the threads this worker's ONNX Runtime session has: --threads, a local cluster's share of it, or (None, on a
    # cluster the command did not start) all the worker's cores
    threads = job.predictor["threads"] or default_threads()
    labels = nuclei_labels(foreground, seen, job.spacing, job.nuclei, threads=threads)
    del seen
    own, compact = np.unique(labels[core], return_inverse=True)
    first = 0 if own.size and own[0] == 0 else 1
    numbers = compact.reshape(labels[core].shape).astype(np.uint32) + first
    open_zarr(job.store("raw_labels"))[region] = numbers
    measured = label_totals(numbers, intensity[core], [axis.start for axis in region])
    count = int(measured["voxels"].size)
    summary: dict[str, np.ndarray] = {f"_{name}": values for name, values in measured.items()}
    on_edge = np.zeros(count + 1, dtype=bool)
    for axis in FACE_AXES:
        for side, shared in ((0, region[axis].start > 0), (-1, region[axis].stop < job.shape[axis])):
            if shared:
                on_edge[np.take(numbers, [side], axis=axis)] = True
        if region[axis].stop < job.shape[axis]:
            here = np.take(labels[core], [-1], axis=axis)
            beyond = [slice(c.start, c.stop) for c in core]
            beyond[axis] = slice(core[axis].stop, core[axis].stop + 1)
            there = labels[tuple(beyond)]
            same = (here == there) & (here > 0)
            face = np.zeros(here.shape, dtype=np.uint32)
            face[same] = (np.searchsorted(own, here[same]) + first).astype(np.uint32)
            summary[f"_face{axis}"] = face
    on_edge[0] = False
    edge = np.flatnonzero(on_edge)
    inner_sizes, inner_counts = size_counts(measured["voxels"][~on_edge[1:]])
    summary |= {"count": np.int64(count), "edge": edge.astype(np.int64)}
    summary |= {"inner_sizes": inner_sizes, "inner_counts": inner_counts}
    summary |= {f"edge_{name}": values[edge - 1] for name, values in measured.items()}
    return summary


def pairs(job: Job, index: int) -> dict[str, np.ndarray]:
    """Phase 3b: per face shared with the next block, the (own label, next block's label) pairs of nuclei
    that continue across it."""
    grid = job.label_grid
    found: dict[str, np.ndarray] = {}
    with np.load(job.done("label", index)) as record:
        faces = {axis: record[f"_face{axis}"] for axis in FACE_AXES if f"_face{axis}" in record.files}
    raw = open_zarr(job.store("raw_labels"), "r")
    for axis, face in faces.items():
        after = grid.neighbour(index, axis)
        assert after is not None, "a face is recorded only where a next block exists"
        plane = list(grid.region(after))
        plane[axis] = slice(plane[axis].start, plane[axis].start + 1)
        theirs = np.asarray(raw[tuple(plane)])
        joined = (face > 0) & (theirs > 0)
        found[f"pairs{axis}"] = np.unique(np.stack([face[joined], theirs[joined]], axis=1).astype(np.int64), axis=0)
    return found


def relabel(job: Job, index: int, extra: dict[str, Any]) -> dict[str, np.ndarray]:
    """Phase 4: the block's labels renumbered and written, and its rows of the labels table.

    ``extra``: ``first`` (the block's first final label, less one), ``edge`` and ``edge_final`` (final labels
    of its edge labels, 0 when dropped), ``rows`` (table rows of merged nuclei numbered in this block) and
    ``min_size`` (the smallest nucleus kept, in voxels).
    """
    region = job.label_grid.region(index)
    with np.load(job.done("label", index)) as record:
        voxels = record["_voxels"]
        measured = {name[1:]: record[name] for name in record.files if name.startswith("_") and "face" not in name}
    lookup = np.zeros(voxels.size + 1, dtype=np.int64)
    inside = np.ones(voxels.size + 1, dtype=bool)
    inside[0] = False
    inside[extra["edge"]] = False
    kept = np.flatnonzero(inside[1:] & (voxels >= max(int(extra["min_size"]), 1))) + 1
    lookup[kept] = extra["first"] + np.arange(1, kept.size + 1)
    lookup[extra["edge"]] = extra["edge_final"]
    numbers = np.asarray(open_zarr(job.store("raw_labels"), "r")[region])
    final = lookup[numbers]
    if "instances" in job.outputs:
        result = open_zarr(job.store("instances"))
        result[region] = final.astype(result.dtype)
    if "mask" in job.outputs:
        open_zarr(job.store("mask"))[region] = (final > 0).astype(np.uint8)
    own = table_rows(lookup[kept], {name: values[kept - 1] for name, values in measured.items()})
    table = np.concatenate([own, np.asarray(extra["rows"]).reshape(-1, own.shape[1])])
    part = job.work / "table" / f"{index:08d}.npy"
    staged = part.with_name(f".{part.stem}.{os.getpid()}.{threading.get_ident()}.npy")
    np.save(staged, table[np.argsort(table[:, 0], kind="stable")])
    os.replace(staged, part)
    return {}


def read_padded(source: VolumeSource, plan: TilePlan, window: Region, edge: bool = False) -> np.ndarray:
    """The part ``window`` (padded coordinates) of the volume, zeros where it lies in the padding (the nearest
    edge voxel with ``edge``, as :meth:`TilePlan.pad_volume` pads)."""
    shape = tuple(w.stop - w.start for w in window)
    inside = [
        (max(w.start - b, 0), min(w.stop - b, s)) for w, (b, _), s in zip(window, plan.pad, plan.shape, strict=True)
    ]
    values = source.read(tuple(slice(a, z) for a, z in inside))  # type: ignore[arg-type]
    if values.shape == shape:
        return values
    place = tuple(
        slice(a + b - w.start, z + b - w.start) for (a, z), (b, _), w in zip(inside, plan.pad, window, strict=True)
    )
    if edge:
        widths = [(p.start, n - p.stop) for p, n in zip(place, shape, strict=True)]
        return np.pad(np.asarray(values, dtype=np.float32), widths, mode="edge")
    out = np.zeros(shape, dtype=np.float32)
    out[place] = values
    return out


def _pad_mask(plan: TilePlan, window: Region, shape: tuple[int, ...]) -> tuple[Any, ...] | np.ndarray:
    """Where ``window`` lies in the plan's padding (as a boolean array; all False when nothing is padded)."""
    padded = np.zeros(shape, dtype=bool)
    if not any(b or a for b, a in plan.pad):
        return padded
    for axis, ((before, _), size, w) in enumerate(zip(plan.pad, plan.shape, window, strict=True)):
        index = np.arange(w.start, w.stop) - before
        outside = (index < 0) | (index >= size)
        padded |= outside.reshape([-1 if a == axis else 1 for a in range(3)])
    return padded


class _TileOutputs:
    """Tile index -> model output, run on demand in batches and kept in a per-process cache of bounded size
    (blocks are done x fastest, so a block reuses the tiles it shares with the one before)."""

    def __init__(
        self, job: Job, predictor: Any, plan: TilePlan, data: np.ndarray, window: Region, wanted: Sequence[int]
    ) -> None:
        self.predictor = predictor
        self.plan = plan
        self.data = data
        self.window = window
        self.wanted = list(wanted)
        self.limit = job.cache_bytes
        self.cache = STATE.tile_cache(job.key())

    def __call__(self, index: int) -> np.ndarray:
        with STATE.lock:
            if index in self.cache:
                self.cache.move_to_end(index)
                return self.cache[index]
        start = self.wanted.index(index)
        batch = [index, *(i for i in self.wanted[start + 1 :] if i not in self.cache)][: self.predictor.batch]
        tiles = [
            tuple(
                slice(t.start - w.start, t.stop - w.start) for t, w in zip(self.plan.tiles[i], self.window, strict=True)
            )
            for i in batch
        ]
        outputs = self.predictor.tile_outputs(self.data, tiles)
        with STATE.lock:
            for i, output in zip(batch, outputs, strict=True):
                self.cache[i] = output
            while len(self.cache) > 1 and sum(o.nbytes for o in self.cache.values()) > self.limit:
                self.cache.popitem(last=False)
        return outputs[0]


_PHASE_FUNCTIONS: dict[str, Callable[..., dict[str, np.ndarray]]] = {
    "statistics": statistics,
    "probabilities": probabilities,
    "label": label,
    "pairs": pairs,
    "relabel": relabel,
}

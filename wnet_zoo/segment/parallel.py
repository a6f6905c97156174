"""How the nucleus stages use several threads, with the results of one thread.

scipy.ndimage and Qhull release the GIL, so threads share the work without a copy of the volume per process.
Whole-volume filters are cut into z-slabs, each read with a halo as deep as the filter reaches along z, so every
voxel of a slab's core sees what it sees in the whole volume and is computed by the same arithmetic; independent
items (one convex hull each) are shared out in chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from wnet_zoo.segment.geometry import euclidean_distance

MIN_SLAB_DEPTH = 16  # a slab's core, in planes: thinner slabs cost more in halo than a thread saves
SLAB_HALO_RATIO = 4  # ... and at least this x its halo: the halos add at most half of the volume's memory
DISTANCE_HALO = 12  # planes read around a slab for distances; a slab whose background lies farther is read wider
GAUSSIAN_TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default: the kernel's reach in standard deviations
CHUNKS_PER_THREAD = 4  # items are shared out in this many chunks per thread: uneven items still balance

Item = TypeVar("Item")
Result = TypeVar("Result")


def thread_map(function: Callable[[Item], Result], items: Sequence[Item], threads: int) -> list[Result]:
    """``[function(item) for item in items]``, on up to ``threads`` threads."""
    if threads <= 1 or len(items) < 2:
        return [function(item) for item in items]
    size = -(-len(items) // (threads * CHUNKS_PER_THREAD))
    chunks = [items[start : start + size] for start in range(0, len(items), size)]
    with ThreadPoolExecutor(min(threads, len(chunks))) as pool:
        done = pool.map(lambda chunk: [function(item) for item in chunk], chunks)
        return [result for chunk in done for result in chunk]


def slab_cores(depth: int, threads: int, halo: int) -> list[slice]:
    """The z-ranges of up to ``threads`` slabs of ``depth`` planes (fewer where slabs would be too thin to pay)."""
    parts = max(1, min(threads, depth // max(MIN_SLAB_DEPTH, SLAB_HALO_RATIO * halo)))
    edges = np.linspace(0, depth, parts + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def fill_slabs(function: Callable[[slice], np.ndarray], out: np.ndarray, threads: int, halo: int) -> np.ndarray:
    """Fill ``out`` slab by slab with ``function(core)`` (the slab's values, ``core`` a z-range of ``out``), on up
    to ``threads`` threads; slabs are at least :data:`SLAB_HALO_RATIO` x ``halo`` planes deep."""
    cores = slab_cores(out.shape[0], threads, halo)

    def one(core: slice) -> None:
        out[core] = function(core)

    with ThreadPoolExecutor(len(cores)) as pool:
        list(pool.map(one, cores))
    return out


def read_around(volume: np.ndarray, core: slice, halo: int) -> tuple[np.ndarray, slice]:
    """The planes of ``volume`` within ``halo`` of the z-range ``core``, and where ``core`` lies in them."""
    start, stop = max(core.start - halo, 0), min(core.stop + halo, volume.shape[0])
    return volume[start:stop], slice(core.start - start, core.stop - start)


def gaussian(volume: np.ndarray, sigmas: Sequence[float], threads: int = 1) -> np.ndarray:
    """:func:`scipy.ndimage.gaussian_filter` of ``volume`` by per-axis ``sigmas`` (in voxels), on up to
    ``threads`` threads: the same values (later axes need no halo: a slab holds whole y and x lines)."""
    from scipy import ndimage

    halo = int(GAUSSIAN_TRUNCATE * float(sigmas[0]) + 0.5)  # scipy's kernel radius along z
    if len(slab_cores(volume.shape[0], threads, halo)) == 1:
        return ndimage.gaussian_filter(volume, sigmas)

    def slab(core: slice) -> np.ndarray:
        planes, inner = read_around(volume, core, halo)
        return ndimage.gaussian_filter(planes, sigmas)[inner]

    return fill_slabs(slab, np.empty(volume.shape, dtype=volume.dtype), threads, halo)


def distance(mask: np.ndarray, spacing: tuple[float, float, float], threads: int = 1) -> np.ndarray:
    """Each voxel's distance to the nearest voxel outside ``mask`` (float32, physical units of ``spacing``), the
    values of :func:`~wnet_zoo.segment.geometry.euclidean_distance`, on up to ``threads`` threads.

    A slab sees less background than the volume, so its distances are at least the true ones, and equal wherever
    the nearest background lies within the halo, which any distance up to the halo's depth proves (scipy measures a
    slab without background to a phantom voxel just outside it: farther than the halo too). A slab with a greater
    distance is read again with a halo that deep, up to the whole volume.
    """

    def whole(planes: np.ndarray) -> np.ndarray:
        return euclidean_distance(planes, spacing)[0].astype(np.float32)

    if len(slab_cores(mask.shape[0], threads, DISTANCE_HALO)) == 1:
        return whole(mask)

    def slab(core: slice) -> np.ndarray:
        halo = DISTANCE_HALO
        while True:
            planes, inner = read_around(mask, core, halo)
            found = whole(planes)[inner]
            farthest = float(found.max(initial=0.0))
            if farthest <= halo * spacing[0] or len(planes) == len(mask):
                return found
            del found
            halo = int(np.ceil(farthest / spacing[0])) + 1

    return fill_slabs(slab, np.empty(mask.shape, dtype=np.float32), threads, DISTANCE_HALO)

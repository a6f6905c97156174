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
DISTANCE_HALO = 12  # planes read around a slab for distances; a farther nearest background is computed whole
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
    """The z-ranges of up to ``threads`` slabs of ``depth`` planes (one when slabs would be too thin to pay)."""
    parts = max(1, min(threads, depth // max(MIN_SLAB_DEPTH, halo)))
    edges = np.linspace(0, depth, parts + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def map_slabs(
    function: Callable[[np.ndarray], np.ndarray], volume: np.ndarray, halo: int, threads: int
) -> list[np.ndarray]:
    """``function`` of each z-slab of ``volume`` read with ``halo`` planes around it, cut back to the slab's core;
    the slabs in z order, on up to ``threads`` threads."""
    depth = volume.shape[0]
    cores = slab_cores(depth, threads, halo)

    def one(core: slice) -> np.ndarray:
        start, stop = max(core.start - halo, 0), min(core.stop + halo, depth)
        return function(volume[start:stop])[core.start - start : core.stop - start]

    if len(cores) == 1:
        return [function(volume)]
    with ThreadPoolExecutor(len(cores)) as pool:
        return list(pool.map(one, cores))


def gaussian(volume: np.ndarray, sigmas: Sequence[float], threads: int = 1) -> np.ndarray:
    """:func:`scipy.ndimage.gaussian_filter` of ``volume`` by per-axis ``sigmas`` (in voxels), on up to
    ``threads`` threads: the same values."""
    from scipy import ndimage

    halo = int(GAUSSIAN_TRUNCATE * float(sigmas[0]) + 0.5)  # scipy's kernel radius along z
    parts = map_slabs(lambda slab: ndimage.gaussian_filter(slab, sigmas), volume, halo, threads)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def distance(mask: np.ndarray, spacing: tuple[float, float, float], threads: int = 1) -> np.ndarray:
    """Each voxel's distance to the nearest voxel outside ``mask`` (float32, physical units of ``spacing``), the
    values of :func:`~wnet_zoo.segment.geometry.euclidean_distance`, on up to ``threads`` threads.

    A slab misses only background farther than its halo, and then reads a distance beyond the halo's depth, which
    proves it; such a volume is computed whole instead.
    """

    def part(slab: np.ndarray) -> np.ndarray:
        return euclidean_distance(slab, spacing)[0].astype(np.float32)

    parts = map_slabs(part, mask, DISTANCE_HALO, threads)
    if len(parts) == 1:
        return parts[0]
    if max(float(p.max(initial=0.0)) for p in parts) > DISTANCE_HALO * spacing[0]:
        return part(mask)
    return np.concatenate(parts)

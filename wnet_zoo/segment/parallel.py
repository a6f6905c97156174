"""How the nucleus stages use several threads, with the results of one thread.

scipy.ndimage and Qhull release the GIL, so threads share the work without a copy of the volume per process.
Gaussian filters and the search for each voxel's nearest label are cut into z-slabs, each read with a halo as deep as
the filter, or the search, reaches along z, so every voxel of a slab's core gets what the whole volume gives it;
distance maps come from the ``edt`` package, which shares its lines out itself; independent items (one convex hull
each) are shared out in chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from wnet_zoo.segment.geometry import euclidean_distance

MIN_SLAB_DEPTH = 16  # a slab's core, in planes: thinner slabs cost more in halo than a thread saves
SLAB_HALO_RATIO = 4  # ... and at least this x its halo: the halos add at most half of the volume's memory
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


def each_slab(function: Callable[[slice], None], depth: int, threads: int, halo: int) -> None:
    """Call ``function(core)`` for each z-range ``core`` of :func:`slab_cores`, on up to ``threads`` threads; slabs
    are at least :data:`SLAB_HALO_RATIO` x ``halo`` planes deep."""
    cores = slab_cores(depth, threads, halo)
    with ThreadPoolExecutor(len(cores)) as pool:
        list(pool.map(function, cores))


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

    out = np.empty(volume.shape, dtype=volume.dtype)

    def slab(core: slice) -> None:
        planes, inner = read_around(volume, core, halo)
        out[core] = ndimage.gaussian_filter(planes, sigmas)[inner]

    each_slab(slab, volume.shape[0], threads, halo)
    return out


def distance(mask: np.ndarray, spacing: tuple[float, float, float], threads: int = 1) -> np.ndarray:
    """Each voxel's distance to the nearest voxel outside ``mask`` (float32, physical units of ``spacing``): the
    values of :func:`~wnet_zoo.segment.geometry.euclidean_distance` rounded to float32, bit for bit.

    Where every voxel side is a multiple of 1/16 (isotropic voxels, z sides of 2 or 2.5 lateral ones: every phantom
    setting), the ``edt`` package's exact transform gives them on up to ``threads`` threads, several times faster
    than scipy's (``benchmarks/README.md``): its sums of such sides are exact. Other sides it adds up in float32,
    voxel by voxel along a line, and its values drift from scipy's by a few units in the last place, enough to move
    a watershed's tie: those, and masks without background (which scipy measures to a voxel just outside the
    volume), take scipy's transform on one thread.
    """
    import edt

    if mask.all() or not _sixteenths(spacing):
        return euclidean_distance(mask, spacing)[0].astype(np.float32)
    return edt.edt(
        np.ascontiguousarray(mask, dtype=bool), anisotropy=spacing, black_border=False, parallel=max(threads, 1)
    )


def _sixteenths(spacing: Sequence[float]) -> bool:
    """Whether every side is a whole number of sixteenths (exact sums in float32 over any line of a volume)."""
    return all(float(side * 16).is_integer() for side in spacing)


def nearest_labels(
    labels: np.ndarray,
    spacing: tuple[float, float, float],
    threads: int = 1,
    *,
    reach: float = np.inf,
    where: np.ndarray | None = None,
) -> np.ndarray:
    """For each unlabelled voxel (of ``where``, if given) within ``reach`` of a label, the label of its nearest
    labelled voxel, the one scipy's feature transform names (:func:`~wnet_zoo.segment.geometry.euclidean_distance`
    of ``labels == 0``); 0 for the other voxels. On up to ``threads`` z-slabs, with the labels of one.

    scipy finds the nearest voxel axis by axis (Maurer's algorithm: along z, then along y within each plane, then
    along x), keeping at each pass the first along the axis of the candidates that tie for nearest; a candidate that
    is not among the nearest never decides between those that are. A slab read with a halo of H planes holds, for
    each voxel of its core, every labelled voxel within H planes along z, so its first pass agrees with the whole
    volume's wherever that pass's nearest voxel lies within H planes, and the later passes run within whole planes:
    a voxel whose nearest label lies within H planes' thickness sees the same candidates tie, and keeps the same one.
    The halo is ``reach`` deep, or, without one, as deep as the farthest wanted voxel's nearest label (measured
    first by :func:`distance`, with a plane to spare for its float32 rounding; where :func:`distance` would run
    scipy's transform on the whole volume, that one transform answers instead).
    """
    from scipy import ndimage

    outside = labels == 0
    owners = np.zeros(labels.shape, dtype=labels.dtype)
    wanted_anywhere = outside if where is None else outside & where
    if outside.all() or not wanted_anywhere.any():
        return owners
    # one slab whatever the halo, or an unbounded halo that only scipy's whole transform could measure: read whole
    if len(slab_cores(len(labels), threads, 1)) == 1 or (np.isinf(reach) and not _sixteenths(spacing)):
        halo = len(labels)
    elif np.isinf(reach):
        halo = int(np.ceil(float(distance(outside, spacing, threads)[wanted_anywhere].max()) / spacing[0])) + 1
    else:
        halo = max(int(np.ceil(reach / spacing[0])), 1)
    del wanted_anywhere

    def slab(core: slice) -> None:
        planes, inner = read_around(outside, core, halo)
        wanted = outside[core] if where is None else outside[core] & where[core]
        if planes.all() or not wanted.any():  # no label within the halo: none within reach of the core
            return
        if np.isinf(reach):
            nearest = ndimage.distance_transform_edt(
                planes, sampling=spacing, return_distances=False, return_indices=True
            )
        else:
            found, nearest = euclidean_distance(planes, spacing, indices=True)
            wanted = wanted & (found[inner] <= reach)  # not in place: ``wanted`` may be a view of ``outside``
            del found
        z, y, x = (axis[inner][wanted] for axis in nearest)
        owners[core][wanted] = labels[z + (core.start - inner.start), y, x]

    each_slab(slab, labels.shape[0], threads, halo)
    return owners

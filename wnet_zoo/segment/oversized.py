"""Splitting labels that hold two or more packed nuclei: too large for their neighbours, and with a waist.

Where nuclei are packed, two pressed together can leave no second maximum in the distance map, and one label holds
both. Its volume gives it away, against the nuclei around it: it is compared with the median volume of the labels it
touches, so the judgement is local (a streamed block holds a nucleus's neighbours as it holds the nucleus) and holds
where nucleus sizes vary across the volume. A large label is cut into as many pieces as that volume suggests, each
the voxels nearest one of as many centres (k-means, from centres spread along its longest axis), and the cut is kept
only where the pieces are more convex than the whole: the hull of the whole exceeds their hulls' sum by
:data:`OVERSIZED_WAIST`, the test of :func:`~wnet_zoo.segment.convex.merge_convex` turned round. One large nucleus
cut across leaves no waist (its halves' hulls fill its own) and stays whole.

Where packed nuclei merged in runs, a label's neighbours are themselves oversized, their median too large, and the
label is cut only once they are: the labels are judged once more against the new neighbours
(:data:`OVERSIZED_PASSES`). Not until no cut is made: among irregular labels (noise, dim fragments) each cut makes
the next label look large, and the cuts spread pass after pass (``benchmarks/README.md``). k-means cuts a label the
same way each time it is asked for as many pieces: a refused label is tried again only where its neighbours now ask
for another number, or where its smallest piece was the reason and the neighbours have shrunk.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from wnet_zoo.segment.convex import convex_hull, corner_points, touching_pairs

OVERSIZED = 1.1  # a label is cut when its volume exceeds this x the median volume of the labels it touches ...
OVERSIZED_NEIGHBOURS = 2  # ... of which there are at least this many (one neighbour is no measure of the rest)
OVERSIZED_PARTS = 4  # neighbours under 1 / this of the label are not counted (fragments): it is cut in at most this
OVERSIZED_WAIST = 1.03  # ... and its hull exceeds this x its pieces' hulls' sum (merge_convex merges below 1.01)
OVERSIZED_SMALLEST_PIECE = 0.3  # ... and every piece holds at least this x that median volume
OVERSIZED_PASSES = 2  # the first, and the one that judges against the pieces it cut
KMEANS_ROUNDS = 20  # k-means stops earlier where the pieces no longer change


def split_oversized(labels: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """``labels`` with each label that holds several packed nuclei cut into them (see the module's text): new
    labels after the highest, pass by pass in the order of the labels cut, in a signed type of at least 32 bits;
    ``labels`` itself where none is cut. Physical distances (``spacing``, the voxel sides) throughout; the
    candidates are tried one after the other: their k-means is numpy arithmetic on small arrays, which holds the
    GIL, and on two threads the stage took longer (``benchmarks/README.md``)."""
    refused: dict[int, _Refusal] = {}
    cut = labels
    for _ in range(OVERSIZED_PASSES):  # the first pass copies at its first cut, the later ones cut that copy
        cut, more = _split_pass(cut, cut is not labels, spacing, refused)
        if not more:
            break
    return cut


class _Refusal(NamedTuple):
    """Why a label was not cut into ``parts`` pieces: k-means gives the same pieces each time it is tried so."""

    parts: int
    smallest: int  # voxels of the smallest piece
    no_waist: bool  # the hulls were compared and showed no waist


def _split_pass(
    labels: np.ndarray,
    in_place: bool,
    spacing: tuple[float, float, float],
    refused: dict[int, _Refusal],
) -> tuple[np.ndarray, bool]:
    """One pass of :func:`split_oversized`: the labels after it (``labels`` itself where none is cut or where
    ``in_place``, else a copy) and whether any was cut. ``refused`` holds the labels refused in earlier passes,
    which are not tried again where the verdict would be the same, and gets this pass's."""
    from scipy import ndimage

    count = int(labels.max(initial=0))
    if count < 3:
        return labels, False
    firsts, seconds = touching_pairs(labels)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    owners = np.concatenate([firsts, seconds])
    neighbour_sizes = np.concatenate([sizes[seconds], sizes[firsts]])
    counted = neighbour_sizes * OVERSIZED_PARTS >= sizes[owners]
    owners, neighbour_sizes = owners[counted], neighbour_sizes[counted]
    order = np.lexsort((neighbour_sizes, owners))
    owners, neighbour_sizes = owners[order], neighbour_sizes[order]
    starts = np.searchsorted(owners, np.arange(count + 2))
    numbers = np.diff(starts)[: count + 1]
    enough = np.flatnonzero(numbers >= OVERSIZED_NEIGHBOURS)
    low = neighbour_sizes[starts[enough] + (numbers[enough] - 1) // 2]
    high = neighbour_sizes[starts[enough] + numbers[enough] // 2]
    reference = (low + high) / 2.0
    large = sizes[enough] > OVERSIZED * reference

    def parts_of(label: int, typical: float) -> int:
        return max(2, int(np.floor(int(sizes[label]) / typical + 0.5)))

    def settled(label: int, typical: float) -> bool:
        known = refused.get(label)
        return (
            known is not None
            and known.parts == parts_of(label, typical)
            and (known.no_waist or known.smallest < OVERSIZED_SMALLEST_PIECE * typical)
        )

    candidates = [
        (label, typical)
        for label, typical in zip(enough[large].tolist(), reference[large].tolist(), strict=True)
        if not settled(label, typical)
    ]
    if not candidates:
        return labels, False
    boxes = ndimage.find_objects(labels)
    scale = np.asarray(spacing, dtype=np.float64)

    def pieces(label: int, typical: float) -> np.ndarray | _Refusal:
        inside = labels[boxes[label - 1]] == label
        parts = parts_of(label, typical)
        nearest = _kmeans(np.argwhere(inside) * scale, parts)
        split = np.zeros(inside.shape, dtype=np.int32)
        split[inside] = nearest + 1
        smallest = int(np.bincount(nearest, minlength=parts).min())
        if smallest < OVERSIZED_SMALLEST_PIECE * typical:
            return _Refusal(parts, smallest, no_waist=False)
        whole = convex_hull(corner_points(inside, scale))
        found = [convex_hull(corner_points(split == part, scale)) for part in range(1, parts + 1)]
        if whole is None or any(hull is None for hull in found):
            return _Refusal(parts, smallest, no_waist=True)
        waist = whole.volume > OVERSIZED_WAIST * sum(hull.volume for hull in found)
        return split if waist else _Refusal(parts, smallest, no_waist=True)

    cut = labels if in_place else None  # else copied at the first cut: where none is, the volume is not held twice
    following = count + 1
    for label, typical in candidates:
        split = pieces(label, typical)
        if isinstance(split, _Refusal):
            refused[label] = split
            continue
        refused.pop(label, None)  # its voxels change
        if cut is None:
            cut = labels.astype(np.promote_types(labels.dtype, np.int32))
        box = cut[boxes[label - 1]]
        for part in range(2, int(split.max()) + 1):
            box[split == part] = following
            following += 1
    return (labels, False) if cut is None else (cut, following > count + 1)


def _kmeans(points: np.ndarray, parts: int) -> np.ndarray:
    """Which of ``parts`` centres each of ``points`` is nearest to, after Lloyd's k-means rounds from centres
    spread evenly along the points' longest axis (deterministic: no random start).

    Voxel coordinates tie often along an axis: the projections are rounded before they are ordered, so that the last
    bits of another CPU's arithmetic do not reorder ties and move a starting centre."""
    offsets = points - points.mean(axis=0)
    _, vectors = np.linalg.eigh(offsets.T @ offsets)
    axis = vectors[:, -1] if vectors[np.argmax(np.abs(vectors[:, -1])), -1] > 0 else -vectors[:, -1]  # sign fixed
    order = np.argsort(np.round(offsets @ axis, 6), kind="stable")
    centres = points[order[((np.arange(parts) + 0.5) / parts * len(points)).astype(np.int64)]]
    distances = np.empty((len(points), parts))
    nearest = None
    for _ in range(KMEANS_ROUNDS):
        for part, at in enumerate(centres):  # one centre at a time: no (points x parts x 3) array
            away = points - at
            distances[:, part] = np.einsum("ij,ij->i", away, away)
        found = distances.argmin(axis=1)
        if nearest is not None and np.array_equal(found, nearest):
            break
        nearest = found
        for part in range(parts):
            mine = found == part
            if mine.any():  # a centre left without points stays where it was
                centres[part] = points[mine].mean(axis=0)
    return nearest

"""Segmentation quality against ground truth: foreground Dice and instance precision, recall and F1.

Both volumes are (z, y, x) label images (0 background, any positive integer one object) or binary masks. A
volume holding only the values 0 and 1 (or a bool array) is a mask: its connected components (6-connectivity,
faces only, so that nuclei touching at an edge or a corner stay apart) become its objects; so do those of a
label image whose only label is 1.

Objects are matched one-to-one by the Hungarian algorithm on their intersection over union (IoU), anew at each
threshold ``t``: the matching with the most pairs of IoU >= ``t`` (those pairs are the true positives), ties
broken by the largest summed IoU, as StarDist and Cellpose count. IoUs come from the voxels where both volumes
hold an object (one count per overlapping label pair), never from a dense prediction x truth table over the
volume, and each group of mutually overlapping objects is matched alone, so thousands of nuclei cost little
more than reading their voxels.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage, sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import connected_components

from wnet_zoo.errors import UserError, setting
from wnet_zoo.io.atomic import write_text

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 10))  # 0.1, 0.2, ..., 0.9


@dataclass(frozen=True)
class Evaluation:
    """Scores of a predicted segmentation against the ground truth.

    Attributes:
        foreground_dice: Dice of the foregrounds (``prediction > 0`` vs ``truth > 0``); 1.0 when both are empty.
        n_pred: number of predicted objects.
        n_true: number of ground-truth objects.
        thresholds: IoU thresholds, ascending.
        precision: ``tp / n_pred`` at each threshold.
        recall: ``tp / n_true`` at each threshold.
        f1: ``2 tp / (n_pred + n_true)`` at each threshold.
        tp: matched pairs with IoU >= the threshold.
        fp: predicted objects not counted in ``tp`` (``n_pred - tp``).
        fn: ground-truth objects not counted in ``tp`` (``n_true - tp``).
        f1_at_05: F1 at IoU 0.5 (computed whether or not 0.5 is among the thresholds).
        mean_f1: mean of ``f1`` over the thresholds.

    With no object on either side, precision, recall and F1 are 1.0; with objects on one side only, 0.0
    (:meth:`warnings` says so).
    """

    foreground_dice: float
    n_pred: int
    n_true: int
    thresholds: tuple[float, ...]
    precision: tuple[float, ...]
    recall: tuple[float, ...]
    f1: tuple[float, ...]
    tp: tuple[int, ...]
    fp: tuple[int, ...]
    fn: tuple[int, ...]
    f1_at_05: float
    mean_f1: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data: the summary scores, the counts and one list per column of :meth:`table`."""
        data = asdict(self)
        return {key: list(value) if isinstance(value, tuple) else value for key, value in data.items()}

    def table(self) -> pd.DataFrame:
        """One row per threshold: ``threshold, precision, recall, f1, tp, fp, fn``."""
        import pandas as pd

        return pd.DataFrame(
            {
                "threshold": self.thresholds,
                "precision": self.precision,
                "recall": self.recall,
                "f1": self.f1,
                "tp": self.tp,
                "fp": self.fp,
                "fn": self.fn,
            }
        )

    def summary(self) -> str:
        """A header line with the summary scores, then the per-threshold table as text."""
        header = (
            f"foreground Dice {self.foreground_dice:.3f}   F1@0.5 {self.f1_at_05:.3f}   mean F1 {self.mean_f1:.3f}"
            f"   ({self.n_pred} predicted, {self.n_true} true objects)"
        )
        lines = [header, f"{'IoU':>5} {'precision':>9} {'recall':>7} {'F1':>6} {'TP':>6} {'FP':>6} {'FN':>6}"]
        for row in zip(self.thresholds, self.precision, self.recall, self.f1, self.tp, self.fp, self.fn, strict=True):
            lines.append("{:>5.2f} {:>9.3f} {:>7.3f} {:>6.3f} {:>6d} {:>6d} {:>6d}".format(*row))
        return "\n".join([*lines, *self.warnings()])

    def warnings(self) -> list[str]:
        """Lines for the cases where the scores say little: a side without objects (empty, or the wrong file)."""
        if self.n_true == 0 and self.n_pred == 0:
            return ["warning: neither volume holds an object: the scores of 1 mean nothing; check the inputs"]
        if self.n_true == 0:
            counted = (
                "the 1 predicted object is a false positive"
                if self.n_pred == 1
                else f"all {self.n_pred} predicted objects are false positives"
            )
            return [
                f"warning: the ground truth holds no objects: recall is undefined (shown as 0) and {counted}; "
                "check that TRUTH is the labels volume"
            ]
        if self.n_pred == 0:
            return [
                "warning: the prediction holds no objects: every score is 0; check the model's output "
                f"({setting('outputs', ['instances'])})"
            ]
        return []

    def write_json(self, path: str | Path) -> None:
        """Write :meth:`to_dict` to ``path`` (under a temporary name, then renamed: never a partial file)."""
        path = Path(path)
        write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")


def evaluate(prediction: np.ndarray, truth: np.ndarray, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> Evaluation:
    """Score a predicted label image (or mask) against the ground truth.

    Args:
        prediction: (z, y, x) predicted labels, or a binary mask (see the module's documentation).
        truth: (z, y, x) ground-truth labels or mask, the same shape.
        thresholds: IoU thresholds for precision, recall and F1 (default 0.1, 0.2, ..., 0.9).

    Raises:
        UserError: the arrays are not 3-D, differ in shape, or hold negative or non-integer values.
    """
    prediction, truth = np.asarray(prediction), np.asarray(truth)
    for array, name in ((prediction, "prediction"), (truth, "ground truth")):
        if array.ndim != 3:
            raise UserError(f"the {name} must be a 3-D (z, y, x) volume, got shape {array.shape}")
    if prediction.shape != truth.shape:
        raise UserError(
            f"prediction shape {prediction.shape} differs from ground truth shape {truth.shape}: "
            "compare volumes on the same voxel grid (crop or resample one to the other)"
        )
    steps = np.array(sorted({round(float(t), 9) for t in thresholds}), dtype=np.float64)
    if steps.size == 0 or steps[0] <= 0 or steps[-1] > 1:
        raise UserError(f"IoU thresholds {tuple(thresholds)}: give at least one value in (0, 1]")
    predicted, true = _objects(prediction, "prediction"), _objects(truth, "ground truth")
    pred_labels, n_pred = predicted.labels, predicted.count
    true_labels, n_true = true.labels, true.count

    pred_fg, true_fg = pred_labels > 0, true_labels > 0
    both = pred_fg & true_fg
    fg_total = int(pred_fg.sum()) + int(true_fg.sum())
    dice = 1.0 if fg_total == 0 else 2.0 * int(both.sum()) / fg_total

    tp = true_positives(pred_labels[both], true_labels[both], predicted.sizes, true.sizes, (*steps, 0.5))
    precision, recall, f1 = _scores(tp, n_pred, n_true)
    return Evaluation(
        foreground_dice=float(dice),
        n_pred=n_pred,
        n_true=n_true,
        thresholds=tuple(float(t) for t in steps),
        precision=tuple(float(v) for v in precision[:-1]),
        recall=tuple(float(v) for v in recall[:-1]),
        f1=tuple(float(v) for v in f1[:-1]),
        tp=tuple(int(v) for v in tp[:-1]),
        fp=tuple(int(n_pred - v) for v in tp[:-1]),
        fn=tuple(int(n_true - v) for v in tp[:-1]),
        f1_at_05=float(f1[-1]),
        mean_f1=float(f1[:-1].mean()),
    )


def evaluate_files(
    prediction_path: str | Path, truth_path: str | Path, thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> Evaluation:
    """:func:`evaluate` on two volumes on disk: TIFF files or zarr arrays (a folder or a ``.zarr`` store).

    Leading axes of length 1 (e.g. a (1, z, y, x) TIFF) are dropped.

    Raises:
        UserError: a file is missing or unreadable, not 3-D, or the shapes differ.
    """
    return evaluate(read_volume(prediction_path), read_volume(truth_path), thresholds)


def read_volume(path: str | Path) -> np.ndarray:
    """A label or mask volume from a TIFF file or a zarr array, leading length-1 axes dropped."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    if path.is_dir() or path.suffix == ".zarr":
        import zarr

        try:
            node = zarr.open(str(path), mode="r")
        except Exception as error:  # zarr raises several types for folders that are not stores
            reason = type(error).__name__
            raise UserError(f"{path}: not a zarr array ({reason}); give a TIFF file or a zarr array") from None
        if isinstance(node, zarr.Group):
            names = ", ".join(sorted(node.array_keys())) or "none"
            raise UserError(f"{path} is a zarr group: give one of its arrays (arrays here: {names})")
        array = np.asarray(node[...])
    else:
        import tifffile

        try:
            array = tifffile.imread(path)
        except Exception as error:  # tifffile raises several types for files that are not TIFFs
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UserError(f"{path}: not a readable TIFF ({reason}); give a TIFF file or a zarr array") from None
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise UserError(f"{path}: a (z, y, x) volume is needed, got shape {array.shape}")
    return array


def true_positives(
    pred_overlap: np.ndarray,
    true_overlap: np.ndarray,
    pred_sizes: np.ndarray,
    true_sizes: np.ndarray,
    thresholds: Sequence[float],
) -> np.ndarray:
    """Matched pairs of IoU >= each threshold, under the best one-to-one matching for that threshold.

    Args:
        pred_overlap: predicted label (1..n_pred) of each voxel where both volumes hold an object.
        true_overlap: true label (1..n_true) of the same voxels.
        pred_sizes: voxels per predicted label, index 0 unused.
        true_sizes: voxels per true label, index 0 unused.
        thresholds: IoU thresholds.

    Returns:
        One count per threshold (int64).
    """
    steps = np.asarray(thresholds, dtype=np.float64)
    counts = np.zeros(steps.size, dtype=np.int64)
    if pred_overlap.size == 0:
        return counts
    n_pred, n_true = pred_sizes.size - 1, true_sizes.size - 1
    codes, intersection = np.unique(pred_overlap.astype(np.int64) * (n_true + 1) + true_overlap, return_counts=True)
    pred, true = codes // (n_true + 1), codes % (n_true + 1)
    iou = intersection / (pred_sizes[pred] + true_sizes[true] - intersection)
    # Objects with no overlap in common are independent assignment problems: solve each group alone.
    graph = sparse.coo_matrix((np.ones(pred.size), (pred - 1, n_pred + true - 1)), shape=(n_pred + n_true,) * 2)
    _, group = connected_components(graph, directed=False)
    edge_group = group[pred - 1]
    order = np.argsort(edge_group, kind="stable")
    starts = np.flatnonzero(np.diff(edge_group[order], prepend=-1))
    for edges in np.split(order, starts[1:]):
        if edges.size == 1:  # one predicted and one true object overlapping only each other
            counts += iou[edges[0]] >= steps
            continue
        rows, row_index = np.unique(pred[edges], return_inverse=True)
        columns, column_index = np.unique(true[edges], return_inverse=True)
        block = np.zeros((rows.size, columns.size))
        block[row_index, column_index] = iou[edges]
        tie_break = block / (2 * min(block.shape))  # sums to at most 0.5: never outweighs one more pair
        for index, step in enumerate(steps):
            hits = block >= step
            if hits.any():
                counts[index] += hits[linear_sum_assignment(hits + tie_break, maximize=True)].sum()
    return counts


@dataclass(frozen=True)
class _Objects:
    labels: np.ndarray  # labels 1..count, 0 background
    count: int
    sizes: np.ndarray  # voxels per label, index 0 the background


def _objects(volume: np.ndarray, name: str) -> _Objects:
    """Objects numbered 1..N: a mask's connected components, or a label image's labels renumbered."""
    array = volume
    if array.dtype == bool:
        array = array.view(np.uint8)
    elif not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.floating) or not np.array_equal(array, np.round(array)):
            raise UserError(f"the {name} holds non-integer values: give labels or a mask (threshold probabilities)")
        array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise UserError(f"the {name} holds negative values: give labels (0 background, 1..N objects) or a mask")
    top = int(array.max(initial=0))
    if top <= 1:
        labels, count = ndimage.label(array)
    elif top <= array.size:  # renumber through a lookup table
        present = np.bincount(array.ravel(), minlength=top + 1) > 0
        present[0] = False
        lookup = np.zeros(top + 1, dtype=np.int64)
        lookup[present] = np.arange(1, int(present.sum()) + 1)
        labels, count = lookup[array], int(present.sum())
    else:  # sparse huge label values: sort instead
        values, inverse = np.unique(array, return_inverse=True)
        labels = inverse.reshape(array.shape) + (0 if values[0] == 0 else 1)
        count = int(values.size - (values[0] == 0))
    return _Objects(labels, count, np.bincount(labels.ravel(), minlength=count + 1))


def _scores(tp: np.ndarray, n_pred: int, n_true: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 for true-positive counts ``tp``, with the empty cases defined."""
    if n_pred + n_true == 0:
        ones = np.ones(tp.shape)
        return ones, ones, ones
    precision = tp / n_pred if n_pred else np.zeros(tp.shape)
    recall = tp / n_true if n_true else np.zeros(tp.shape)
    return precision, recall, 2.0 * tp / (n_pred + n_true)

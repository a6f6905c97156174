"""wnet-zoo evaluate: foreground Dice and instance precision, recall and F1 on hand-built cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import sparse
from scipy.sparse.csgraph import maximum_bipartite_matching

from wnet_zoo.cli import main
from wnet_zoo.errors import UserError
from wnet_zoo.segment.evaluate import DEFAULT_THRESHOLDS, evaluate, evaluate_files

SHAPE = (8, 12, 48)


def boxes(*spans: tuple[int, int], shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """Labels 1, 2, ... for boxes z 2:6, y 2:6 and the given x ranges (so IoUs are ratios of x lengths)."""
    labels = np.zeros(shape, dtype=np.uint16)
    for label, (start, stop) in enumerate(spans, start=1):
        labels[2:6, 2:6, start:stop] = label
    return labels


def test_identical_labels_score_one():
    truth = boxes((2, 8), (10, 14), (20, 30))
    result = evaluate(truth, truth)
    assert result.foreground_dice == 1.0 and result.f1_at_05 == 1.0 and result.mean_f1 == 1.0
    assert result.precision == result.recall == result.f1 == (1.0,) * 9
    assert result.tp == (3,) * 9 and result.fp == result.fn == (0,) * 9
    assert result.thresholds == DEFAULT_THRESHOLDS


def test_shifted_object_with_known_iou_and_dice():
    truth, prediction = boxes((10, 14)), boxes((11, 15))  # 3 of 4 columns shared: IoU 3/5, Dice 3/4
    result = evaluate(prediction, truth, thresholds=np.arange(0.1, 0.91, 0.1))  # 0.6000000000000001 counts as 0.6
    assert result.foreground_dice == pytest.approx(0.75)
    assert result.tp == (1, 1, 1, 1, 1, 1, 0, 0, 0)
    assert result.f1 == (1.0,) * 6 + (0.0,) * 3
    assert result.f1_at_05 == 1.0 and result.mean_f1 == pytest.approx(6 / 9)
    table = result.table()
    assert list(table.columns) == ["threshold", "precision", "recall", "f1", "tp", "fp", "fn"]
    assert table.loc[table.threshold == 0.7, ["tp", "fp", "fn"]].values.tolist() == [[0, 1, 1]]


def test_split_and_merge():
    whole, halves = boxes((10, 18)), boxes((10, 14), (14, 18))  # each half: IoU 1/2 with the whole
    split = evaluate(halves, whole)
    assert split.foreground_dice == 1.0
    assert (split.n_pred, split.n_true, split.tp[4], split.tp[5]) == (2, 1, 1, 0)
    assert (split.precision[4], split.recall[4], split.f1[4]) == (0.5, 1.0, pytest.approx(2 / 3))
    merge = evaluate(whole, halves)
    assert (merge.precision[4], merge.recall[4], merge.f1_at_05) == (1.0, 0.5, pytest.approx(2 / 3))
    assert merge.f1[5:] == (0.0,) * 4


def test_empty_volumes():
    truth, empty = boxes((10, 14)), np.zeros(SHAPE, dtype=np.uint16)
    missed = evaluate(empty, truth)
    assert missed.foreground_dice == 0.0 and missed.mean_f1 == 0.0 and missed.precision == (0.0,) * 9
    assert missed.fn == (1,) * 9
    invented = evaluate(truth, empty)
    assert invented.recall == (0.0,) * 9 and invented.fp == (1,) * 9 and invented.f1_at_05 == 0.0
    nothing = evaluate(empty, empty)
    assert nothing.foreground_dice == 1.0 and nothing.f1 == (1.0,) * 9 and nothing.mean_f1 == 1.0


def test_label_values_and_dtypes_do_not_matter():
    rng = np.random.default_rng(0)
    truth = boxes((1, 6), (8, 12), (14, 20), (22, 30), (31, 40))
    prediction = boxes((2, 6), (8, 13), (15, 19), (23, 34), (36, 46))
    reference = evaluate(prediction, truth).to_dict()
    for values in (rng.permutation(6)[1:] + 1, np.array([70000, 5, 3_000_000, 17, 2])):
        lookup = np.concatenate([[0], values]).astype(np.int64)
        assert evaluate(lookup[prediction], truth).to_dict() == reference
        assert evaluate(prediction, lookup[truth].astype(np.float32)).to_dict() == reference


def test_hungarian_matches_one_to_one_for_the_most_pairs():
    # Y overlaps only A (IoU 0.3); X overlaps A best (7/15) but also B (5/17): pairing X with A leaves Y unmatched.
    truth = boxes((0, 10), (10, 20))  # A, B
    prediction = boxes((3, 15), (0, 3))  # X, Y
    result = evaluate(prediction, truth, thresholds=(0.25, 0.3, 0.4))
    assert result.tp == (2, 1, 1)
    # At IoU 0.5 the pair of IoU 0.55 counts, though two pairs of IoU 9/31 would sum to more.
    truth = boxes((0, 9), (9, 40))  # C = A minus B, B
    prediction = boxes((0, 31), (31, 40))  # A, D = B minus A
    assert evaluate(prediction, truth).f1_at_05 == 1.0 / 2


def test_matches_a_maximum_matching_on_random_labels():
    rng = np.random.default_rng(1)
    shape = (6, 20, 20)
    truth, prediction = (_random_labels(rng, shape, count) for count in (12, 16))
    thresholds = (0.1, 0.2, 0.3, 0.4, 0.5)
    result = evaluate(prediction, truth, thresholds)
    iou = np.array([[_iou(prediction == p, truth == t) for t in range(1, 13)] for p in range(1, 17)])
    for step, tp in zip(thresholds, result.tp, strict=True):
        pairs = maximum_bipartite_matching(sparse.csr_matrix(iou >= step), perm_type="column")
        assert tp == (pairs >= 0).sum()


def test_masks_are_split_into_face_connected_objects():
    mask = np.zeros((4, 6, 6), dtype=bool)
    mask[1, 1, 1] = mask[1, 2, 2] = True  # touching at an edge only: two objects
    mask[2:4, 4:6, 4:6] = True
    labels = np.zeros(mask.shape, dtype=np.uint8)
    labels[1, 1, 1], labels[1, 2, 2], labels[2:4, 4:6, 4:6] = 1, 2, 3
    result = evaluate(mask, labels)
    assert result.n_pred == 3 and result.mean_f1 == 1.0
    assert evaluate(mask.astype(np.float32), labels).to_dict() == result.to_dict()


def test_bad_input():
    truth = boxes((10, 14))
    with pytest.raises(UserError, match="differs from ground truth shape"):
        evaluate(truth[:, :, :40], truth)
    with pytest.raises(UserError, match="3-D"):
        evaluate(truth[0], truth[0])
    with pytest.raises(UserError, match="non-integer"):
        evaluate(truth * 0.5, truth)
    with pytest.raises(UserError, match="negative"):
        evaluate(truth.astype(np.int16) - 1, truth)


def test_files_tiff_and_zarr(tmp_path: Path):
    import zarr

    truth, prediction = boxes((10, 14)), boxes((11, 15))
    tifffile.imwrite(tmp_path / "truth.tif", truth[None])  # a leading axis of length 1 is dropped
    store = zarr.open_array(tmp_path / "prediction.zarr", mode="w", shape=SHAPE, dtype="uint16")
    store[...] = prediction
    result = evaluate_files(tmp_path / "prediction.zarr", tmp_path / "truth.tif")
    assert result.to_dict() == evaluate(prediction, truth).to_dict()
    with pytest.raises(UserError, match="no such file"):
        evaluate_files(tmp_path / "missing.tif", tmp_path / "truth.tif")
    zarr.open_group(tmp_path / "group.zarr", mode="w").create_array("labels", shape=SHAPE, dtype="uint16")
    with pytest.raises(UserError, match=r"zarr group: give one of its arrays \(arrays here: labels\)"):
        evaluate_files(tmp_path / "group.zarr", tmp_path / "truth.tif")


def test_cli_writes_json_and_rejects_mismatched_shapes(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    whole, halves = boxes((10, 18)), boxes((10, 14), (14, 18))
    tifffile.imwrite(tmp_path / "pred.tif", halves)
    tifffile.imwrite(tmp_path / "gt.tif", whole)
    out = tmp_path / "scores.json"
    assert main(["evaluate", str(tmp_path / "pred.tif"), str(tmp_path / "gt.tif"), "--json", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("foreground Dice 1.000   F1@0.5 0.667   mean F1 0.370")
    assert len(printed) == 2 + 9
    scores = json.loads(out.read_text())
    assert scores["f1_at_05"] == pytest.approx(2 / 3) and scores["mean_f1"] == pytest.approx(5 * (2 / 3) / 9)
    assert scores["tp"] == [1] * 5 + [0] * 4 and scores["n_pred"] == 2 and scores["n_true"] == 1
    assert not list(tmp_path.glob(".*.tmp"))

    tifffile.imwrite(tmp_path / "small.tif", whole[:, :, :40])
    assert main(["evaluate", str(tmp_path / "small.tif"), str(tmp_path / "gt.tif")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) <= 3 and "differs from ground truth shape" in error[0]
    tifffile.imwrite(tmp_path / "flat.tif", whole[0])
    assert main(["evaluate", str(tmp_path / "flat.tif"), str(tmp_path / "flat.tif")]) == 2
    assert main(["evaluate", str(tmp_path / "nope.tif"), str(tmp_path / "gt.tif")]) == 2
    assert main(["evaluate", str(tmp_path / "pred.tif"), str(tmp_path / "gt.tif"), "--json", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 3 and all(line.startswith("Error: ") for line in error)


def _random_labels(rng: np.random.Generator, shape: tuple[int, int, int], count: int) -> np.ndarray:
    """Labels 1..count: random boxes painted over each other (later ones on top)."""
    labels = np.zeros(shape, dtype=np.int32)
    for label in range(1, count + 1):
        low = [int(rng.integers(0, s - 2)) for s in shape]
        high = [int(lo + rng.integers(2, 8)) for lo in low]
        labels[tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True))] = label
    return labels


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 0.0


def test_an_empty_truth_or_prediction_is_warned_about(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    truth, empty = boxes((10, 14), (20, 30)), np.zeros(SHAPE, dtype=np.uint16)
    tifffile.imwrite(tmp_path / "pred.tif", truth)
    tifffile.imwrite(tmp_path / "empty.tif", empty)
    assert main(["evaluate", str(tmp_path / "pred.tif"), str(tmp_path / "empty.tif")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == (
        "warning: the ground truth holds no objects: recall is undefined (shown as 0) and all 2 predicted objects "
        "are false positives; check that TRUTH is the labels volume"
    )
    assert evaluate(empty, truth).summary().splitlines()[-1] == (
        "warning: the prediction holds no objects: every score is 0; check the model's output (outputs=['instances'])"
    )
    both = evaluate(empty, empty).summary().splitlines()
    assert both[-1] == "warning: neither volume holds an object: the scores of 1 mean nothing; check the inputs"
    assert len(evaluate(truth, truth).summary().splitlines()) == 2 + 9  # no warning

"""The four training checks: each fires on data or settings built for it and stays quiet on a healthy run."""

import csv
import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import torch

from wnet_zoo.cli import main
from wnet_zoo.cli.naming import CliNaming
from wnet_zoo.errors import UserError, naming
from wnet_zoo.io.intensity import remap
from wnet_zoo.model.checkpoints import load_weights
from wnet_zoo.training.checks.balance import BalanceCheck, segmentation_stats, suggested_rec_weight
from wnet_zoo.training.checks.base import NOTHING, SNAPSHOTS, Decision, EpochEnd, StepLosses
from wnet_zoo.training.checks.coordinator import checks_of
from wnet_zoo.training.checks.explosion import SNAPSHOT_EVERY, ExplosionGuard
from wnet_zoo.training.checks.plateau import PlateauCheck
from wnet_zoo.training.checks.screening import check_usable, screen_volume, smoothed, usable_corners
from wnet_zoo.training.config import TrainConfig
from wnet_zoo.training.events import read_events
from wnet_zoo.training.loop import _Run
from wnet_zoo.training.sampler import PatchSampler

# float32: bf16 autocast (the default where the CPU has it) is not bit-reproducible (oneDNN's bf16 backward)
TINY = ["--channels", "4,8,16,32", "--patch", "16,24,24", "--samples-per-epoch", "2", "--batch", "2", "--no-bf16"]
OFF = ["--no-screen", "--no-explosion-guard", "--no-balance-check", "--plateau-window", "0"]
BALANCE = ["--lr", "1e-2", "--plateau-window", "2", "--plateau-tolerance", "0.05"]


def _metrics(run: Path) -> list[dict]:
    with (run / "metrics.csv").open() as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def crop(example: np.ndarray) -> np.ndarray:
    """The 32 x 48 x 40 crop of the example volume that conftest's small_tiff holds, as uint16."""
    return example[40:72, 20:68, 30:70].astype(np.uint16)


# ---------------------------------------------------------------------------------------------- screening


def test_screening_numbers_of_healthy_and_faulty_volumes(crop: np.ndarray):
    healthy = screen_volume(crop, "crop")
    assert healthy.flags == []
    assert 0.02 < healthy.foreground < 0.08 and healthy.spread > 40 and healthy.saturated == 0

    saturated = crop.copy()
    saturated[crop >= np.quantile(crop, 0.98)] = np.iinfo(np.uint16).max
    screen = screen_volume(saturated, "saturated")
    assert screen.flags == ["over-exposed"] and screen.saturated == pytest.approx(0.02, abs=0.002)

    hot = crop.copy()
    hot[0, 0, 0] = np.iinfo(np.uint16).max  # one hot voxel squeezes the 0..100 remap
    screen = screen_volume(hot, "hot")
    assert screen.flags == ["low contrast"] and screen.spread < 5

    clipped = np.minimum(crop, np.quantile(crop, 0.99)).astype(np.float32)  # clipped below the dtype maximum
    assert "over-exposed" in screen_volume(clipped, "clipped").flags

    noise = np.random.default_rng(0).normal(400, 30, crop.shape).astype(np.uint16)
    screen = screen_volume(noise, "noise")
    assert screen.flags == ["almost empty"] and screen.foreground < 1e-4
    with pytest.raises(UserError, match="noise: unusable for training: no 16x24x24 patch holds foreground"):
        check_usable(screen, usable_corners(smoothed(noise) > screen.cut, (16, 24, 24), 1e-3), (16, 24, 24))

    # dim nuclei (+40) in that noise (sigma 30): each voxel is within the noise, the smoothed volume is not
    z, y, x = np.ogrid[: crop.shape[0], : crop.shape[1], : crop.shape[2]]
    nuclei = sum(((z - c) ** 2 + (y - 2 * c) ** 2 + (x - c) ** 2) <= 25 for c in (8, 16, 22))
    dim = (noise + 40 * nuclei).astype(np.uint16)
    assert np.mean(dim > 400 + 5 * 30) < 1e-3  # counted voxel by voxel, almost nothing stands out
    screen = screen_volume(dim, "dim")
    assert screen.flags == [] and 0.5 * nuclei.mean() < screen.foreground < 1.5 * nuclei.mean()


def test_usable_corners_count_foreground_exactly():
    rng = np.random.default_rng(1)
    volume = rng.random((9, 10, 11)) < 0.1
    usable = usable_corners(volume, (3, 4, 5), 4 / 60)
    assert usable.shape == (7, 7, 7)
    brute = np.array(
        [[[volume[z : z + 3, y : y + 4, x : x + 5].sum() >= 4 for x in range(7)] for y in range(7)] for z in range(7)]
    )
    assert np.array_equal(usable, brute) and 0 < usable.mean() < 1


def test_sampler_replaces_almost_empty_patches_and_keeps_the_others(crop: np.ndarray):
    flat = np.random.default_rng(2).normal(400, 20, crop.shape).clip(0).astype(np.uint16)
    raw = np.concatenate([crop, flat], axis=2)  # the right half holds noise only
    volume = remap(raw)
    screen = screen_volume(raw, "half")
    foreground = smoothed(raw) > screen.cut
    usable = usable_corners(foreground, (16, 24, 24), 1e-3)
    check_usable(screen, usable, (16, 24, 24))
    assert 0.25 < screen.empty_positions < 0.75 and "large empty regions" in screen.flags
    plain = PatchSampler([volume], (16, 24, 24), 40, 4, seed=3)
    skipping = PatchSampler([volume], (16, 24, 24), 40, 4, seed=3, usable=[usable])
    counting = PatchSampler([volume], (16, 24, 24), 40, 4, seed=3, usable=[usable], skip_empty=False)
    before = np.concatenate(list(plain.epoch(5)))
    after = np.concatenate(list(skipping.epoch(5)))
    kept = np.concatenate(list(counting.epoch(5)))
    changed = [i for i in range(40) if not np.array_equal(before[i], after[i])]
    assert skipping.counts["almost_empty"] == skipping.counts["skipped"] == len(changed) > 3
    assert counting.counts == {"patches": 40, "almost_empty": len(changed), "skipped": 0}
    assert np.array_equal(kept, before)
    needed = 1e-3 * 16 * 24 * 24  # the same draws from the foreground voxels count them
    marks = foreground.astype(np.float32)
    marks_before = np.concatenate(list(PatchSampler([marks], (16, 24, 24), 40, 4, seed=3).epoch(5)))
    marks_after = np.concatenate(list(PatchSampler([marks], (16, 24, 24), 40, 4, seed=3, usable=[usable]).epoch(5)))
    assert all(marks_after[i].sum() >= needed for i in range(40))
    assert all(marks_before[i].sum() < needed for i in changed)
    assert np.array_equal(np.concatenate(list(skipping.epoch(5))), after)  # seeded: the same again


def test_screening_stops_a_noise_only_volume_before_training(tmp_path: Path, crop: np.ndarray, capfd):
    noise = tmp_path / "noise.tif"
    tifffile.imwrite(noise, np.random.default_rng(0).normal(400, 30, crop.shape).astype(np.uint16))
    out = tmp_path / "run"
    assert main(["train", str(noise), "--out", str(out), "--epochs", "1", *TINY]) == 2
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {noise}: unusable for training")
    assert not out.exists()


def test_screening_records_an_over_exposed_volume(tmp_path: Path, crop: np.ndarray):
    saturated = crop.copy()
    saturated[crop >= np.quantile(crop, 0.97)] = np.iinfo(np.uint16).max
    path = tmp_path / "saturated.tif"
    tifffile.imwrite(path, saturated)
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--epochs", "1", *TINY]) == 0
    events = read_events(tmp_path / "run" / "events.csv")
    assert [(e.epoch, e.step, e.kind) for e in events] == [(0, 0, "screening"), (1, 1, "screening")]
    assert [e.code for e in events] == ["screening.volume", "screening.patches"]
    assert "over-exposed (3.0" in events[0].detail and events[0].action.startswith("avoid empty")
    assert events[0].values["saturated"] == pytest.approx(0.03, abs=0.003) and events[0].values["spread"] > 40
    assert events[1].detail == "2 of 2 sampled patches over-exposed"
    assert events[1].values == {"sampled": 2, "over_exposed": 2}


# ------------------------------------------------------------------------------------------------ plateau


def test_plateau_detector_on_loss_curves():
    def first_fire(values: list[float], window: int = 3, tolerance: float = 0.01) -> int | None:
        detector = PlateauCheck(window, tolerance, num_classes=2)
        for epoch in range(1, len(values) + 1):
            if detector.update(values[:epoch]):
                return epoch
        return None

    falling = [0.99, 0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.43, 0.42, 0.42, 0.42, 0.42, 0.42, 0.42]
    assert first_fire(falling) == 13  # means 0.4200 vs 0.4233 (epochs 8-10): the first fall under 0.01
    halving = [0.9 * 0.5**epoch for epoch in range(20)]  # heads for 0: each window 87% below the one before
    assert first_fire(halving) == 12  # means 0.0010 vs 0.0082: a relative tolerance would never fire
    assert first_fire([0.999] * 20) is None  # stuck at K - 1: the encoder has not split the volume yet
    assert first_fire([0.4] * 6) == 6  # flat from the start (pretrained weights)
    assert first_fire([0.4, math.nan, 0.4, 0.4, 0.4, 0.4, 0.4]) == 7  # rolled-back epochs do not count
    assert first_fire([0.4] * 30, window=0) is None
    detector = PlateauCheck(2, 0.01, num_classes=2)
    assert detector.update([0.5] * 4) and detector.update([0.5] * 5) is None  # fires once
    detector.rearm(5)
    assert detector.update([0.5] * 8) is None and detector.update([0.5] * 9)


def test_stop_at_plateau(tmp_path: Path, small_tiff: Path):
    run = tmp_path / "run"
    args = [*TINY, *BALANCE, "--epochs", "30", "--no-balance-check"]  # stopping at the plateau is the default
    assert main(["train", str(small_tiff), "--out", str(run), *args]) == 0
    rows = _metrics(run)
    events = [e for e in read_events(run / "events.csv") if e.kind == "plateau"]
    assert len(events) == 1 and events[0].epoch == len(rows) < 30 and events[0].code == "plateau.stopped"
    assert events[0].action.startswith("stopped training") and "2-epoch mean" in events[0].detail
    ncut = [float(r["ncut"]) for r in rows]
    recent, before = np.mean(ncut[-2:]), np.mean(ncut[-4:-2])
    assert recent < 0.98 and before - recent < 0.05
    values = events[0].values
    assert values["mean"] == pytest.approx(recent) and values["change"] == pytest.approx(recent - before)
    assert values["epoch"] == len(rows) and values["window"] == 2 and values["tolerance"] == 0.05
    best = min(rows, key=lambda r: float(r["total"]))
    assert load_weights(run / "best.pt").epoch == int(best["epoch"])


# ---------------------------------------------------------------------------------------------- explosion


def test_explosion_rules_rollback_and_snapshots():
    guard = ExplosionGuard(num_classes=2, max_in_a_row=2, lr=0.1)
    batch = np.zeros((1, 1, 2, 2, 2), np.float32)

    def step(ncut: float, rec: float, number: int, lr: float = 0.1, final: bool = False) -> Decision:
        return guard.accept(StepLosses(1, number, batch, ncut, rec, lr, final=final))

    assert SNAPSHOTS in guard.needs
    assert step(0.30, 50.0, 1) == NOTHING and step(1.00, 60.0, 2) == NOTHING  # a one-class batch (K - 1) passes
    assert "100x its recent best 50" in guard.explosion(0.35, 5001.0)
    assert "toward its bound K=2" in guard.explosion(1.30, 50.0)  # limit max(1.15, 1.25)
    assert "not finite" in guard.explosion(math.nan, 50.0)
    assert guard.explosion(1.20, 4999.0) is None
    assert step(1.20, 4999.0, 3) == NOTHING
    decision = step(math.nan, 50.0, 4)
    assert decision.rollback and decision.refuses and decision.lr == 0.05 and not decision.snapshot
    (event,) = decision.events
    assert (event.epoch, event.step, event.code) == (1, 4, "explosion.rollback") and "not finite" in event.detail
    assert event.action == "restored the last good weights (the initial ones, 3 update(s) undone), lr 0.1 -> 0.05"
    assert event.values["lr"] == 0.05 and event.values["previous_lr"] == 0.1 and event.values["undone"] == 3
    assert math.isnan(event.values["ncut"]) and event.values["rec"] == 50.0

    decisions = [step(0.3, 50.0, number, lr=0.05) for number in range(5, 6 + SNAPSHOT_EVERY)]
    assert [d.snapshot for d in decisions] == [False] * SNAPSHOT_EVERY + [True]  # every 10 good steps
    assert guard.in_a_row == 0  # 10 good steps: recovered
    decision = step(0.3, 50.0, 15, lr=0.05, final=True)  # the epoch's final weights pass: a snapshot of them
    assert decision == Decision(snapshot=True) and guard.snapshot_step == 15
    decision = step(0.3, 1e6, 15, lr=0.05, final=True)
    assert decision.rollback and decision.snapshot and decision.lr == 0.025  # restored, then kept again
    assert decision.events[0].detail.endswith("(evaluating the epoch's final weights)")
    assert "(those after step 15, 0 update(s) undone)" in decision.events[0].action

    decision = step(1.9, 50.0, 16, lr=0.025)  # the second in a row: no rollback, training ends
    assert not decision.rollback and decision.refuses and decision.events[0].code == "explosion.gave_up"
    assert (
        decision.diverged
        == "the loss exploded 2 times in a row; lower the learning rate by 10x (lr=0.01) and train again"
    )
    assert decision.events[0].action == "stopped: 2 in a row" and decision.events[0].values["suggested_lr"] == 0.01
    with naming(CliNaming()):
        assert "(--lr 0.01)" in ExplosionGuard(2, 1, 0.1).accept(StepLosses(1, 1, batch, math.nan, 1, 0.1)).diverged


def test_the_loop_rolls_back_weights_and_optimizer_state():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    run = SimpleNamespace(model=model, optimizer=optimizer, snapshot=None, step=SimpleNamespace(loss=SimpleNamespace()))
    run._snapshot = lambda: _Run._snapshot(run)
    run._snapshot()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(2):
        model(torch.ones(1, 3)).sum().backward()
        optimizer.step()
    assert not torch.equal(model.weight, start["weight"]) and optimizer.state
    _Run._apply(run, Decision(rollback=True, lr=0.05))
    assert all(torch.equal(start[k], v) for k, v in model.state_dict().items())
    assert optimizer.param_groups[0]["lr"] == 0.05 and not optimizer.state  # Adam's moments came back too
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    _Run._apply(run, Decision(rollback=True, lr=0.025))
    assert all(torch.equal(start[k], v) for k, v in model.state_dict().items())  # the snapshot was not touched
    assert optimizer.param_groups[0]["lr"] == 0.025
    _Run._apply(run, Decision(rec_weight=0.5))
    assert run.step.loss.rec_weight == 0.5


def test_explosion_guard_fires_at_lr_10_and_keeps_exploded_losses_out_of_metrics(tmp_path: Path, example):
    image = tmp_path / "example.tif"
    tifffile.imwrite(image, example)
    run = tmp_path / "run"
    args = ["--samples-per-epoch", "8", "--lr", "10", "--epochs", "3"]
    assert main(["train", str(image), "--out", str(run), *TINY[:4], "--no-bf16", *args]) == 0
    explosions = [e for e in read_events(run / "events.csv") if e.kind == "explosion"]
    assert [e.action.rsplit(", ", 1)[1] for e in explosions] == ["lr 10 -> 5", "lr 5 -> 2.5"]
    assert [(e.code, e.values["lr"]) for e in explosions] == [("explosion.rollback", 5), ("explosion.rollback", 2.5)]
    assert all("reconstruction loss jumped to" in e.detail for e in explosions)
    rows = _metrics(run)
    assert [float(r["lr"]) for r in rows] == [2.5, 2.5, 2.5] and {r["base_lr"] for r in rows} == {"10.0"}
    rec = [float(r["rec"]) for r in rows]
    assert math.isnan(rec[0])  # every step of epoch 1 was rolled back
    assert all(value < 1000 for value in rec[1:])  # the exploded values (about 1e4 to 1e5) are in events.csv only
    assert load_weights(run / "last.pt").checkpoint["checks"]["guard"]["in_a_row"] == 2


def test_explosion_guard_stops_after_explosions_in_a_row(tmp_path: Path, example, capfd):
    image = tmp_path / "example.tif"
    tifffile.imwrite(image, example)
    run = tmp_path / "run"
    args = ["--samples-per-epoch", "8", "--lr", "10", "--epochs", "3", "--max-explosions", "2"]
    assert main(["train", str(image), "--out", str(run), *TINY[:4], "--no-bf16", *args]) == 1
    lines = capfd.readouterr().err.strip().splitlines()
    assert lines[-1] == (
        "Error: the loss exploded 2 times in a row; lower the learning rate by 10x (--lr 1) and train again "
        "(no epoch finished)"
    )
    events = read_events(run / "events.csv")
    assert [e.kind for e in events] == ["explosion", "explosion"] and events[-1].action == "stopped: 2 in a row"
    assert [e.code for e in events] == ["explosion.rollback", "explosion.gave_up"]
    assert events[-1].values["in_a_row"] == 2 and events[-1].values["suggested_lr"] == 1
    assert not (run / "last.pt").exists()


# ------------------------------------------------------------------------------------------------ balance


def test_segmentation_stats_tell_nuclei_from_bright_and_dim_regions():
    shape = (2, 16, 32, 32)
    z, y, x = np.mgrid[0:16, 0:32, 0:32]
    nuclei = np.zeros(shape, bool)
    for cz, cy, cx in [(4, 6, 6), (8, 20, 8), (11, 8, 24), (5, 24, 25), (12, 26, 14)]:
        nuclei[:, (z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= 9] = True
    halves = np.broadcast_to(x < 14, shape)
    image = torch.from_numpy(np.where(nuclei, 80.0, np.where(x < 14, 30.0, 10.0)).astype(np.float32))[:, None]
    seen = torch.from_numpy(np.where(nuclei, 80.0, 10.0).astype(np.float32))[:, None]  # background subtracted
    for mask, collapsed in ((nuclei, False), (halves, True)):
        probabilities = np.stack([~mask, mask], axis=1).astype(np.float32) * 0.9 + 0.05
        stats = segmentation_stats(probabilities, seen.clone(), seen, "mse")
        assert stats.collapsed is collapsed
        assert stats.rec == 0 and not stats.poor_reconstruction
    assert stats.foreground == pytest.approx(14 / 32) and stats.largest == 1.0
    nuclei_stats = segmentation_stats(np.stack([~nuclei, nuclei], 1) * 1.0, seen, seen, "mse")
    assert 0.03 < nuclei_stats.foreground < 0.1 and nuclei_stats.largest < 0.25
    flat = segmentation_stats(np.stack([~nuclei, nuclei], 1) * 1.0, torch.zeros_like(seen), seen, "mse")
    assert flat.poor_reconstruction and flat.rec_baseline == pytest.approx(
        float(seen.var(dim=(2, 3, 4), correction=0).mean()), rel=1e-4
    )
    balance = BalanceCheck(ncut_weight=0.5, rec_weight=5e-3, rec_loss="mse", auto=False)
    balance.record(4, {"ncut": 0.9, "rec": 60.0, "total": 0.75}, (0.99, 0.01))
    falling = [{"ncut": 0.9, "rec": rec, "total": 0.75} for rec in (90, 85, 70, 60)]
    assert balance.judge(flat, falling, 2) == []  # poor, but improving: not "staying" poor
    staying = [{"ncut": 0.9, "rec": rec, "total": 0.75} for rec in (62, 58, 61, 60)]
    (code, detail, advice, values), *others = balance.judge(flat, staying, 2)
    assert not others and code == "balance.poor_reconstruction"
    assert detail.endswith("and 60.5 over the last 2 epochs against 60 over the first 2")
    assert advice == "raise rec_weight (e.g. 0.01), or switch to rec_loss='bce' rec_weight=0.5"
    assert values == {"rec_weight": 0.01, "rec": flat.rec, "rec_baseline": flat.rec_baseline, "first": 60.0,
                      "last": 60.5, "window": 2}  # fmt: skip
    with naming(CliNaming()):
        (_, _, advice, _), *others = balance.judge(flat, staying, 2)
    assert advice == "raise --rec-weight (e.g. 0.01), or switch to --rec-loss bce --rec-weight 0.5"
    config = TrainConfig(patch=[8, 8, 8], from_weights="bundled pretrained WNet3D")
    (fine_tuning,) = [
        check for check in checks_of(config, [np.zeros((8, 8, 8), np.float32)]) if check.name == "balance"
    ]
    fine_tuning.record(4, {"ncut": 0.9, "rec": 60.0, "total": 0.75}, (0.99, 0.01))
    assert fine_tuning.judge(flat, staying, 2) == []  # its decoder learnt before this run
    collapsed = segmentation_stats(np.stack([~halves, halves], 1) * 1.0, image, image, "mse")
    (code, detail, advice, values), *others = balance.judge(collapsed, staying, 2)
    assert not others and code == "balance.collapse"
    assert detail.startswith("NCut takes over (60% of the loss, 99% of the encoder gradient)")
    assert advice == "raise the reconstruction weight: rec_weight=0.01 (or auto_balance=True)"
    assert values == pytest.approx(
        {"rec_weight": 0.01, "loss_share": 0.6, "grad_share": 0.99, "foreground": 14 / 32, "largest": 1.0}
    )
    with naming(CliNaming()):
        (_, _, advice, _), *others = balance.judge(collapsed, staying, 2)
    assert advice == "raise the reconstruction weight: --rec-weight 0.01 (or --auto-balance)"
    collapsed = dataclasses.replace(collapsed, covered=0.1)  # a collapse that leaves nuclei out: both verdicts
    assert [code for code, *_ in fine_tuning.judge(collapsed, staying, 2)] == ["balance.collapse", "balance.poor_fit"]
    fine_tuning.auto = True  # the weight is raised and training goes on: the next plateau judges the fit
    assert [code for code, *_ in fine_tuning.judge(collapsed, staying, 2)] == ["balance.auto_balanced"]
    balance.record(5, {"ncut": 0.9, "rec": 60.0, "total": 0.75}, (0.8, 0.2))
    assert balance.judge(collapsed, staying, 2) == []  # NCut has 80% of the gradient only: no takeover
    assert suggested_rec_weight(0.5, 5e-3, 0.9, 60.0) == 0.01  # 0.0075 wanted, at least twice the weight
    assert suggested_rec_weight(0.5, 5e-3, 0.9, 10.0) == 0.05  # 0.045 rounded up
    assert suggested_rec_weight(0.5, 0.0, 0.97, 60.0) == 0.009


def test_a_fine_tuned_model_that_leaves_most_nuclei_out_is_told_its_start_may_not_fit():
    z, y, x = np.mgrid[0:16, 0:32, 0:32]
    nuclei = np.zeros((16, 32, 32), np.int32)
    for number, (cz, cy, cx) in enumerate([(4, 6, 6), (8, 20, 8), (11, 8, 24), (5, 24, 25), (12, 26, 14)], 1):
        nuclei[(z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= 9] = number
    # the encoder sees nuclei at 80 on 10; the raw centre patch has a bright left half besides (a background the
    # model's input transform removes), which would be half of a split of its own: the check splits what is seen
    seen = torch.from_numpy(np.where(nuclei > 0, 80.0, 10.0).astype(np.float32))[None, None]
    raw = torch.from_numpy(np.where(nuclei > 0, 90.0, np.where(x < 14, 60.0, 20.0)).astype(np.float32))[None, None]
    staying = [{"ncut": 0.9, "rec": 60.0, "total": 0.75}] * 4
    fine_tuning = BalanceCheck(ncut_weight=0.5, rec_weight=5e-3, rec_loss="mse", auto=False, window=2, pretrained=True)
    from_scratch = BalanceCheck(ncut_weight=0.5, rec_weight=5e-3, rec_loss="mse", auto=False)
    for check in (fine_tuning, from_scratch):
        check.record(4, staying[-1], (0.5, 0.5))
    for kept, covered in (((1, 2, 3, 4, 5), (0.8, 1.0)), ((1, 2, 3), (0.4, 0.6)), ((1,), (0.1, 0.3))):
        mask = np.isin(nuclei, kept)[None]
        stats = segmentation_stats(np.stack([~mask, mask], 1) * 1.0, seen, seen, "mse")
        assert covered[0] < stats.covered < covered[1], (kept, stats.covered)
        assert stats.poor_fit is (len(kept) < 5)
        assert from_scratch.judge(stats, staying, 2) == []  # a run from scratch has no pretrained start to blame
        found = fine_tuning.judge(stats, staying, 2)
        assert [code for code, *_ in found] == (["balance.poor_fit"] if stats.poor_fit else [])
    (_, detail, action, values), *_ = found
    assert detail == (
        f"the pretrained start may not fit these images: the nuclei class covers {stats.covered:.0%} of the bright "
        "class of a two-class split of the centre patches as the encoder sees them (fine-tunings as good as training "
        "from scratch cover 79 to 100 % of it on the benchmark phantoms)"
    )
    assert values == pytest.approx({"covered": stats.covered, "foreground": stats.foreground})
    with naming(CliNaming()):
        (_, _, action, _), *_ = fine_tuning.judge(stats, staying, 2)
    assert action == (
        "compare with a model trained from scratch on the same images (wnet-zoo train): on packed, textured "
        "nuclei it did much better"
    )
    # at a plateau: judged on what the model's evaluation gives, and the segmentation kept in the check's state
    probabilities = torch.from_numpy(np.stack([~mask, mask], 1) * 1.0)
    evaluation = {"probabilities": probabilities, "reconstruction": raw, "seen": seen}
    plateau = EpochEnd(6, 24, staying, None, {}, lambda centre: evaluation)
    fine_tuning.centre = raw.numpy()
    decision = fine_tuning.at_plateau(plateau)
    assert [event.code for event in decision.events] == ["balance.poor_fit"] and decision.rec_weight is None
    assert fine_tuning.segmentation == pytest.approx(
        {"epoch": 6, "foreground": stats.foreground, "largest": stats.largest, "covered": stats.covered}
    )
    restored = BalanceCheck(ncut_weight=0.5, rec_weight=5e-3, rec_loss="mse", auto=False, pretrained=True)
    restored.load_state_dict(fine_tuning.state_dict())
    assert restored.segmentation == fine_tuning.segmentation and restored.shares == fine_tuning.shares
    restored.load_state_dict({"rec_weight": 5e-3, "shares": []})  # last.pt from before the segmentation was kept
    assert restored.segmentation == {}
    for level, step in ((50.0, 0.0), (100.0, 100 / 65535)):  # constant, and one uint16 step below saturation
        flat_seen = torch.full_like(seen, level)
        flat_seen[0, 0, 8, 16, 16] -= step
        flat = segmentation_stats(np.stack([~mask, mask], 1) * 1.0, flat_seen, flat_seen, "mse")
        assert math.isnan(flat.covered) and not flat.poor_fit  # nothing to split: no verdict


@pytest.mark.slow
def test_auto_balance_raises_the_reconstruction_weight_when_ncut_takes_over(tmp_path: Path, small_tiff: Path):
    run = tmp_path / "run"
    args = [*TINY, *BALANCE, "--epochs", "8", "--rec-weight", "0", "--auto-balance"]
    assert main(["train", str(small_tiff), "--out", str(run), *args]) == 0
    events = read_events(run / "events.csv")
    takeover = next(e for e in events if e.code == "balance.auto_balanced")
    assert "(100% of the loss, 100% of the encoder gradient)" in takeover.detail
    weight = takeover.values["rec_weight"]
    assert takeover.action == f"--auto-balance: rec-weight 0 -> {weight:g}" and 0.001 < weight < 0.1
    assert takeover.values["previous_rec_weight"] == 0 and takeover.values["loss_share"] == 1
    plateau = next(e for e in events if e.kind == "plateau")
    assert plateau.epoch == takeover.epoch and plateau.code == "plateau.rearmed"
    assert plateau.action.startswith("the reconstruction weight changes")
    poor = next(e for e in events if e.code == "balance.poor_reconstruction")
    assert poor.epoch == takeover.epoch and poor.action.endswith("or switch to --rec-loss bce --rec-weight 0.5")
    assert events.index(plateau) < events.index(takeover)  # the plateau is what the balance check waits for
    checkpoint = load_weights(run / "last.pt").checkpoint
    checks = checkpoint["checks"]
    assert checks["balance"]["rec_weight"] == weight and checks["plateau"]["armed_from"] == takeover.epoch
    segmentation = checks["balance"]["segmentation"]  # of the last plateau's judgement
    assert segmentation["epoch"] >= takeover.epoch and 0 <= segmentation["covered"] <= 1
    assert checkpoint["rec_weight"] == weight
    for row in _metrics(run):
        used = weight if int(row["epoch"]) > takeover.epoch else 0.0
        assert float(row["total"]) == pytest.approx(0.5 * float(row["ncut"]) + used * float(row["rec"]), rel=1e-5)


# ---------------------------------------------------------------------------------------- healthy and resume


@pytest.mark.slow
def test_checks_stay_quiet_and_change_nothing_on_a_healthy_run(tmp_path: Path, small_tiff: Path):
    args = [*TINY, "--lr", "1e-2", "--epochs", "12"]
    assert main(["train", str(small_tiff), "--out", str(tmp_path / "on"), *args]) == 0
    assert main(["train", str(small_tiff), "--out", str(tmp_path / "off"), *args, *OFF]) == 0
    header = "epoch,step,kind,detail,action,code,values"
    assert (tmp_path / "on" / "events.csv").read_text().splitlines() == [header]
    assert _metrics(tmp_path / "on") == _metrics(tmp_path / "off")
    checks = load_weights(tmp_path / "on" / "last.pt").checkpoint["checks"]
    assert checks["screening"]["patches"] == {
        "patches": 24,
        "almost_empty": 0,
        "skipped": 0,
        "over_exposed": 0,
        "low_contrast": 0,
    }
    assert [share[0] for share in checks["balance"]["shares"]] == list(range(1, 13))
    assert all(0.3 < loss < 1 and 0.5 < grad <= 1 for _, loss, grad in checks["balance"]["shares"])


@pytest.mark.parametrize(
    ("case", "args", "epochs", "split"),
    [
        ("explosions", [*TINY[:4], "--no-bf16", "--samples-per-epoch", "8", "--lr", "10"], 3, 1),
        ("auto-balance", [*TINY, *BALANCE, "--rec-weight", "0", "--auto-balance"], 8, 7),
    ],
)
@pytest.mark.slow
def test_resume_with_check_state_equals_an_uninterrupted_run(tmp_path: Path, example, case, args, epochs, split):
    image = tmp_path / "example.tif"
    tifffile.imwrite(image, example if case == "explosions" else example[40:72, 20:68, 30:70].astype(np.uint16))
    straight, interrupted = tmp_path / "straight", tmp_path / "split"
    assert main(["train", str(image), "--out", str(straight), "--epochs", str(epochs), *args]) == 0
    assert main(["train", str(image), "--out", str(interrupted), "--epochs", str(split), *args]) == 0
    assert main(["train", "--resume", str(interrupted), "--epochs", str(epochs)]) == 0
    assert _metrics(interrupted) == _metrics(straight)
    assert (interrupted / "events.csv").read_text() == (straight / "events.csv").read_text()
    assert len(read_events(straight / "events.csv")) >= 2
    a, b = load_weights(interrupted / "last.pt"), load_weights(straight / "last.pt")
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    np.testing.assert_equal(a.checkpoint["checks"], b.checkpoint["checks"])  # NaN shares of rolled-back epochs too
    assert load_weights(interrupted / "best.pt").epoch == load_weights(straight / "best.pt").epoch


@pytest.mark.parametrize("setting", ["packed", "tissue", "confocal_offset", "dense", "low_contrast"])
def test_packed_low_contrast_tissue_passes_the_screen(setting):
    """Where nuclei fill a third to a half of the volume, its median is the nuclei's and nothing stands 5 robust
    deviations above it: the screen then splits the smoothed volume in two and keeps the split when it stands out
    of the noise, so tissue trains with no options, with most of its nuclei counted as foreground."""
    import phantoms

    image, labels = phantoms.make_phantom(setting)
    smooth = smoothed(image)
    screen = screen_volume(image, setting, smooth)
    usable = usable_corners(smooth > screen.cut, (24, 56, 56), 1e-3)
    check_usable(screen, usable, (24, 56, 56))
    assert "almost empty" not in screen.flags and usable.mean() > 0.9
    found = smooth > screen.cut
    assert (found & (labels > 0)).sum() / (labels > 0).sum() > 0.5  # most nuclei count as foreground


def test_noise_constant_and_nearly_empty_volumes_are_still_refused():
    rng = np.random.default_rng(0)
    nearly_empty = rng.normal(100, 5, (48, 96, 96)).astype(np.float32)
    nearly_empty[20, 40, 40] += 300  # one hot voxel: no patch holds 0.1% foreground
    volumes = {
        "gaussian": rng.normal(100, 10, (48, 96, 96)).astype(np.float32),
        "poisson": rng.poisson(20, (48, 96, 96)).astype(np.uint16),
        "constant": np.full((48, 96, 96), 7, np.uint16),
        "nearly_empty": nearly_empty,
    }
    for name, volume in volumes.items():
        smooth = smoothed(volume)
        screen = screen_volume(volume, name, smooth)
        with pytest.raises(UserError, match=f"^{name}: unusable for training: no 24x56x56 patch holds foreground"):
            check_usable(screen, usable_corners(smooth > screen.cut, (24, 56, 56), 1e-3), (24, 56, 56))
        assert "almost empty" in screen.flags, name

"""The training loop: epochs of sampled patches, metrics, plots, checkpoints, and the checks' decisions.

The checks (:mod:`wnet_zoo.training.checks`) only decide; the loop carries their decisions out: it keeps the
snapshots of the weights and rolls back to them, sets the learning rate and the reconstruction weight, stops at
the end of an epoch, and raises ``TrainingDiverged``.
"""

from __future__ import annotations

import copy
import csv
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from wnet_zoo.errors import TrainingDiverged
from wnet_zoo.io.atomic import atomic_path
from wnet_zoo.model.checkpoints import save_checkpoint
from wnet_zoo.training.checks.base import FINAL_LOSSES, GRADIENT_SHARES, SNAPSHOTS, Decision, EpochEnd, StepLosses
from wnet_zoo.training.checks.coordinator import TrainingChecks, checks_of
from wnet_zoo.training.config import TrainConfig
from wnet_zoo.training.data import TrainingData
from wnet_zoo.training.events import Event
from wnet_zoo.training.plotting import plot_losses
from wnet_zoo.training.sampler import PatchSampler
from wnet_zoo.training.seeding import _rng_state, _seed_everything, _set_rng_state
from wnet_zoo.training.step import TrainingStep

LOG = logging.getLogger("wnet_zoo")
METRIC_COLUMNS = ("epoch", "ncut", "rec", "total", "lr", "base_lr", "seconds")


class _Sums:
    """Loss sums and per-class sums over the steps of an epoch that count."""

    def __init__(self, num_classes: int) -> None:
        self.steps = 0
        self.losses = {"ncut": 0.0, "rec": 0.0, "total": 0.0}
        self.class_weight = torch.zeros(num_classes, dtype=torch.float64)
        self.class_intensity = torch.zeros(num_classes, dtype=torch.float64)

    def add(self, terms: dict[str, Any]) -> None:
        self.steps += 1
        for key in self.losses:
            self.losses[key] += terms[key]
        self.class_weight += terms["class_weight"]
        self.class_intensity += terms["class_intensity"]

    def merge(self, other: _Sums) -> None:
        self.steps += other.steps
        for key in self.losses:
            self.losses[key] += other.losses[key]
        self.class_weight += other.class_weight
        self.class_intensity += other.class_intensity

    def means(self) -> dict[str, float]:
        return {key: value / self.steps if self.steps else math.nan for key, value in self.losses.items()}


class _Run:
    """The state of one training run."""

    def __init__(
        self,
        config: TrainConfig,
        out: Path,
        data: TrainingData,
        device: torch.device,
        progress: bool,
        input_sigma: tuple[float, float, float],
        input_log: float = 0.0,
        input_background: tuple[int, int, int] = (0, 0, 0),
    ) -> None:
        self.config, self.out, self.device, self.progress = config, out, device, progress
        _seed_everything(config.seed)
        self.step = TrainingStep.from_config(config, device, input_sigma, input_log, input_background)
        self.model, self.optimizer = self.step.model, self.step.optimizer
        self.sampler = PatchSampler(
            data.volumes,
            tuple(config.patch),
            config.samples_per_epoch,
            config.batch,
            config.seed,  # type: ignore[arg-type]
            usable=data.usable,
            skip_empty=config.skip_empty_patches,
            contrast_jitter=config.contrast_jitter,
        )
        self.checks = TrainingChecks(checks_of(config, data.volumes), out)
        self.snapshot: tuple[dict[str, Any], dict[str, Any]] | None = None
        self.rows: list[dict[str, Any]] = []
        self.best_total = float("inf")
        self.best_epoch = 0

    def fit(self) -> TrainResult:
        log_file = logging.FileHandler(self.out / "train.log")
        log_file.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        LOG.addHandler(log_file)
        try:
            if self.config.from_weights:
                LOG.info(
                    "fine-tuning %s at learning rate %g (%g x %g)",
                    self.config.from_weights,
                    self.config.lr,
                    self.config.lr_factor,
                    self.config.base_lr,
                )
            LOG.info(
                "training WNet3D %s on %d volume(s), patch %s, %d steps/epoch, device %s%s",
                ",".join(map(str, self.config.channels)),
                len(self.sampler.volumes),
                self.config.patch,
                self.sampler.steps_per_epoch(),
                self.device,
                " (bf16)" if self.step.bf16 else "",
            )
            if self.model.input_log:
                LOG.info(
                    "the model compresses its input with a logarithm of offset %.3g, in training and in its exports",
                    self.model.input_log,
                )
            if any(self.model.input_background):
                LOG.info(
                    "the model subtracts its input's background (box radius %s voxels, z, y, x), in training and in "
                    "its exports",
                    ", ".join(map(str, self.model.input_background)),
                )
            if any(self.model.input_sigma):
                LOG.info(
                    "the model smooths its input by sigma %s voxels (z, y, x), in training and in its exports",
                    ", ".join(f"{s:g}" for s in self.model.input_sigma),
                )
            if self.checks.needs(SNAPSHOTS):
                self._snapshot()  # the initial weights, or those of a resumed run
            for epoch in range(len(self.rows), self.config.epochs):
                if self._epoch(epoch):
                    break
        finally:
            LOG.removeHandler(log_file)
            log_file.close()
        return TrainResult(self.out, self.rows, self.best_epoch, list(self.checks.events))

    def _epoch(self, epoch: int) -> bool:
        """Train one epoch; True when a check ends training. Steps rolled back by the explosion guard do not
        count in the epoch's row."""
        start = time.perf_counter()
        self.model.train()
        kept, pending = _Sums(self.config.num_classes), _Sums(self.config.num_classes)
        grads = None
        steps = self.sampler.steps_per_epoch()
        probe = self.checks.needs(GRADIENT_SHARES)
        bar = tqdm(
            self.sampler.epoch(epoch),
            total=steps,
            desc=f"epoch {epoch + 1}/{self.config.epochs}",
            disable=not self.progress,
            leave=False,
            unit="step",
        )
        for index, batch in enumerate(bar):
            decided: list[Decision] = []
            accept = self._accept(epoch + 1, epoch * steps + index + 1, batch, decided)
            terms = self.step(torch.from_numpy(batch), accept=accept, probe=probe and index == 0)
            if not terms["applied"]:
                pending = _Sums(self.config.num_classes)
                continue
            if decided[0].snapshot:  # the weights before this step: the steps so far count
                kept.merge(pending)
                pending = _Sums(self.config.num_classes)
            pending.add(terms)
            if "ncut_grad" in terms:
                grads = (terms["ncut_grad"], terms["rec_grad"])
            bar.set_postfix(ncut=f"{terms['ncut']:.4f}", rec=f"{terms['rec']:.4g}")
        if self._verify(epoch + 1, (epoch + 1) * steps, batch):
            kept.merge(pending)
        self.class_weight, self.class_intensity = kept.class_weight, kept.class_intensity
        row = {"epoch": epoch + 1, **kept.means()}
        row["lr"] = self._lr()
        row["base_lr"] = self.config.base_lr
        row["seconds"] = round(time.perf_counter() - start, 3)
        self.rows.append(row)
        ended = EpochEnd(
            epoch + 1, (epoch + 1) * steps, self.rows, grads, dict(self.sampler.counts), self.step.evaluate
        )
        decision = self.checks.end_epoch(ended)
        self._apply(decision)
        self._save(epoch + 1, row, reset_best=decision.rec_weight is not None)
        skipped = self.sampler.counts.get("skipped", 0)
        LOG.info(
            "epoch %d/%d  ncut %.5f  rec %.5g  total %.5g  (%.1f s%s)",
            epoch + 1,
            self.config.epochs,
            row["ncut"],
            row["rec"],
            row["total"],
            row["seconds"],
            f", {skipped} almost-empty patch(es) skipped" if skipped else "",
        )
        return decision.stop

    def _accept(
        self, epoch: int, number: int, batch: np.ndarray, decided: list[Decision]
    ) -> Callable[[dict[str, float]], bool]:
        """The test of step ``number``'s losses for :class:`~wnet_zoo.training.step.TrainingStep`: the checks'
        decision, applied before the step's update (a snapshot of the weights before it, or a rollback), kept
        in ``decided``; False refuses the update."""

        def accept(losses: dict[str, float]) -> bool:
            decision = self.checks.accept(StepLosses(epoch, number, batch, losses["ncut"], losses["rec"], self._lr()))
            decided.append(decision)
            self._apply(decision)
            return not decision.refuses

        return accept

    def _verify(self, epoch: int, number: int, batch: np.ndarray) -> bool:
        """Hand the losses of the epoch's final weights on its last batch to the checks that need them; False
        when they refuse them (the weights were rolled back)."""
        if not self.checks.needs(FINAL_LOSSES):
            return True
        evaluation = self.step.evaluate(torch.from_numpy(batch))
        final = StepLosses(epoch, number, batch, evaluation["ncut"], evaluation["rec"], self._lr(), final=True)
        decision = self.checks.accept(final)
        self._apply(decision)
        return not decision.refuses

    def _apply(self, decision: Decision) -> None:
        """Carry out the checks' decision (all but stopping after the epoch): give up, roll back, set the
        learning rate, snapshot, set the reconstruction weight, in that order."""
        if decision.diverged is not None:
            last = self.out / "last.pt"
            kept = f"the last good checkpoint is {last}" if last.is_file() else "no epoch finished"
            raise TrainingDiverged(f"{decision.diverged} ({kept})")
        if decision.rollback:
            assert self.snapshot is not None, "a check that rolls back needs snapshots"
            self.model.load_state_dict(self.snapshot[0])
            self.optimizer.load_state_dict(copy.deepcopy(self.snapshot[1]))  # Adam would update the copy in place
        if decision.lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = decision.lr
        if decision.snapshot:
            self._snapshot()
        if decision.rec_weight is not None:
            self.step.loss.rec_weight = decision.rec_weight

    def _snapshot(self) -> None:
        """Keep the current weights and optimizer state as the last good ones."""
        model_state = {key: value.detach().clone() for key, value in self.model.state_dict().items()}
        self.snapshot = (model_state, copy.deepcopy(self.optimizer.state_dict()))

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _save(self, epoch: int, row: dict[str, Any], reset_best: bool = False) -> None:
        _write_metrics(self.rows, self.out / "metrics.csv")
        plot_losses(self.rows, self.out / "loss.png")
        is_best = row["total"] < self.best_total
        if is_best:
            self.best_total, self.best_epoch = row["total"], epoch
        if reset_best:  # the reconstruction weight changed: later totals do not compare with earlier ones
            self.best_total = float("inf")
        payload = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": epoch,
            "config": self.config.to_dict(),
            "rng": _rng_state(),
            "best_total": self.best_total,
            "best_epoch": self.best_epoch,
            "rows": self.rows,
            "rec_weight": self.step.loss.rec_weight,
            "checks": self.checks.state_dict(),
            **self.class_summary(),
        }
        save_checkpoint(self.out / "last.pt", payload)
        if is_best:
            save_checkpoint(self.out / "best.pt", payload)

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a ``last.pt`` payload: weights, optimizer, metrics so far, best and RNG states."""
        self.model.load_state_dict(checkpoint["model"], strict=True)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.rows = [dict(row) for row in checkpoint["rows"]]
        self.best_total = float(checkpoint["best_total"])
        self.best_epoch = int(checkpoint["best_epoch"])
        _set_rng_state(checkpoint["rng"])
        _write_metrics(self.rows, self.out / "metrics.csv")  # drops rows written after the checkpoint
        self.checks.load_state_dict(checkpoint.get("checks"))  # and events
        balance = (checkpoint.get("checks") or {}).get("balance") or {}  # where last.pt kept it before
        rec_weight = checkpoint.get("rec_weight", balance.get("rec_weight"))
        if rec_weight is not None:
            self.step.loss.rec_weight = float(rec_weight)

    def class_summary(self) -> dict[str, Any]:
        """Mean image intensity (0..100) of each class over the last epoch, weighted by its probability,
        and the foreground class: the brightest one (nuclei are bright in fluorescence)."""
        means = (self.class_intensity / self.class_weight.clamp_min(1e-12)).tolist()
        return {"class_means": means, "foreground_class": int(max(range(len(means)), key=means.__getitem__))}


def _write_metrics(rows: list[dict[str, Any]], path: Path) -> None:
    with atomic_path(path) as part, part.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


@dataclass
class TrainResult:
    """Where a finished run lives and how it ended."""

    run_dir: Path
    rows: list[dict[str, Any]]
    best_epoch: int
    events: list[Event] = field(default_factory=list)

    @property
    def best_checkpoint(self) -> Path:
        return self.run_dir / "best.pt"

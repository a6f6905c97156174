"""The four checks of one run, as the training loop calls them, and the events they record."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from wnet_zoo.errors import TrainingDiverged
from wnet_zoo.train.checks.balance import EVALUATED_VOLUMES, BalanceCheck, _centre_patches, segmentation_stats
from wnet_zoo.train.checks.explosion import ExplosionGuard
from wnet_zoo.train.checks.plateau import PlateauDetector
from wnet_zoo.train.checks.screening import EMPTY_POSITIONS, PatchTotals, VolumeScreen, screen_patches
from wnet_zoo.train.events import Event, write_events

if TYPE_CHECKING:
    from wnet_zoo.train.config import TrainConfig
    from wnet_zoo.train.step import TrainingStep

LOG = logging.getLogger("wnet_zoo")


class TrainingChecks:
    """The four checks of one run, as the trainer calls them, with the run's events.

    Args:
        config: the run's configuration (which checks, their settings).
        step: the run's :class:`~wnet_zoo.train.step.TrainingStep` (model, optimizer, loss, evaluation).
        volumes: the remapped training volumes (their centre patches are segmented at a plateau).
        out: the run directory (``events.csv`` is rewritten at every event).
    """

    def __init__(self, config: TrainConfig, step: TrainingStep, volumes: Sequence[np.ndarray], out: Path) -> None:
        self.config, self.step, self.out = config, step, out
        self.events: list[Event] = []
        self.reported: list[str] = []
        self.patches = PatchTotals()
        self.epoch_patches = PatchTotals()
        self.guard = (
            ExplosionGuard(step.model, step.optimizer, config.num_classes, config.max_explosions)
            if config.explosion_guard
            else None
        )
        self.plateau = PlateauDetector(config.plateau_window, config.plateau_tolerance, config.num_classes)
        self.balance = (
            BalanceCheck(config.ncut_weight, config.rec_weight, config.rec_loss, config.auto_balance)
            if config.balance_check
            else None
        )
        self.centre = _centre_patches(volumes[:EVALUATED_VOLUMES], tuple(config.patch))  # type: ignore[arg-type]

    def start(self, screens: Sequence[VolumeScreen]) -> None:
        """Begin a new run: record the flagged volumes and take the first snapshot."""
        for screen in screens:
            if 0 < screen.empty_positions < EMPTY_POSITIONS:
                LOG.info(
                    "%s: %.1f%% of patch positions almost empty; skipped", screen.name, 100 * screen.empty_positions
                )
            if screen.flags:
                advice = []
                if set(screen.flags) - {"low contrast"}:
                    advice.append("avoid empty, almost-empty and over-exposed images")
                if "low contrast" in screen.flags:
                    advice.append("clip the brightest outliers (e.g. at the 99.9th percentile)")
                self._fire(Event(0, 0, "screening", screen.detail(), "; ".join([*advice, "training goes on"])))
        write_events(self.events, self.out / "events.csv")
        if self.guard is not None:
            self.guard.snapshot()

    def accept(self, step: int) -> Callable[[dict[str, float]], bool] | None:
        """The guard's test of step number ``step``, for :class:`~wnet_zoo.train.step.TrainingStep`; None when off."""
        if self.guard is None:
            return None
        self.guard.step = step
        return self.guard.accept

    def probe(self, index: int) -> bool:
        """Whether to measure the gradient shares on the epoch's ``index``-th step (the first one)."""
        return self.balance is not None and index == 0

    def screen_batch(self, batch: np.ndarray) -> None:
        """Count the batch's over-exposed and low-contrast patches."""
        if self.config.screen:
            self.epoch_patches.add(screen_patches(batch))

    def exploded(self, epoch: int, step: int) -> None:
        """The step's loss exploded: roll back and halve the learning rate, or give up (``TrainingDiverged``)."""
        assert self.guard is not None
        reason, action = self.guard.reason, self.guard.rollback()
        if self.guard.given_up:
            lr = self.config.lr / 10
            last = self.out / "last.pt"
            kept = f"the last good checkpoint is {last}" if last.is_file() else "no epoch finished"
            self._fire(Event(epoch, step, "explosion", reason, f"stopped: {self.guard.in_a_row} in a row"))
            raise TrainingDiverged(
                f"the loss exploded {self.guard.in_a_row} times in a row; lower the learning rate by 10x "
                f"(--lr {lr:.3g}) and train again ({kept})"
            )
        self._fire(Event(epoch, step, "explosion", reason, action))

    def verify_epoch(self, epoch: int, step: int, batch: np.ndarray) -> bool:
        """Evaluate the epoch's final weights on its last batch; False when they exploded and were rolled back."""
        if self.guard is None:
            return True
        evaluation = self.step.evaluate(torch.from_numpy(batch))
        reason = self.guard.explosion(evaluation["ncut"], evaluation["rec"])
        if reason is not None:
            self.guard.reason = f"{reason} (evaluating the epoch's final weights)"
            self.exploded(epoch, step)
        self.guard.snapshot()  # what last.pt will hold: a resumed run starts from the same snapshot
        return reason is None

    def end_epoch(
        self, epoch: int, step: int, rows: Sequence[dict[str, Any]], grads: tuple[float, float] | None
    ) -> tuple[bool, bool]:
        """After an epoch's row: patch counts, plateau, balance. Returns (stop training, rec weight changed)."""
        if self.config.screen:
            self._screen_epoch(epoch, step)
        if self.balance is not None:
            self.balance.record(epoch, rows[-1], grads)
        plateau = self.plateau.update([row["ncut"] for row in rows])
        if plateau is None:
            return False, False
        findings = self._balance(rows) if self.balance is not None else []
        weight = next((found[2] for found in findings if found[2] is not None), None)
        stop = self.config.stop_at_plateau and weight is None
        if weight is not None:
            self.plateau.rearm(epoch)
            action = "the reconstruction weight changes: watching for a new plateau"
        elif stop:
            action = "stopped training; best.pt holds the lowest total loss"
        else:
            action = "none (--no-stop-at-plateau: training goes on)"
        self._fire(Event(epoch, step, "plateau", plateau, action))
        for detail, advice, _ in findings:
            self._fire(Event(epoch, step, "balance", detail, advice))
        if weight is not None:
            self.balance.rec_weight = self.step.loss.rec_weight = weight  # type: ignore[union-attr]
        return stop, weight is not None

    def _screen_epoch(self, epoch: int, step: int) -> None:
        counts = self.epoch_patches
        self.patches.add(asdict(counts))
        self.epoch_patches = PatchTotals()
        flagged = {
            "almost empty (kept: no usable position found, or --keep-empty-patches)": counts.almost_empty
            - counts.skipped,
            "over-exposed": counts.over_exposed,
            "low contrast": counts.low_contrast,
        }
        for what, count in flagged.items():
            if count and what not in self.reported:
                self.reported.append(what)
                detail = f"{count} of {counts.patches} sampled patches {what}"
                self._fire(Event(epoch, step, "screening", detail, "trained on; counted from now on (wnet-zoo report)"))

    def add_sampler_counts(self, counts: dict[str, int]) -> None:
        """Add the sampler's numbers of the epoch (patches drawn, almost empty, skipped)."""
        if self.config.screen:
            self.epoch_patches.add(counts)

    def _balance(self, rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, float | None]]:
        """Segment the centre patches and judge the balance (see :meth:`BalanceCheck.judge`)."""
        assert self.balance is not None
        centre = torch.from_numpy(self.centre)
        evaluation = self.step.evaluate(centre)
        stats = segmentation_stats(
            evaluation["probabilities"].numpy(), evaluation["reconstruction"], centre, self.config.rec_loss
        )
        return self.balance.judge(stats, rows, self.config.plateau_window)

    def _fire(self, event: Event) -> None:
        self.events.append(event)
        LOG.warning("%s", event.line())
        write_events(self.events, self.out / "events.csv")

    def state_dict(self) -> dict[str, Any]:
        """Plain data for ``last.pt``: events, patch counts and each check's state."""
        return {
            "events": [event.as_dict() for event in self.events],
            "reported": self.reported,
            "patches": asdict(self.patches),
            "plateau": self.plateau.state_dict(),
            "guard": None if self.guard is None else self.guard.state_dict(),
            "balance": None if self.balance is None else self.balance.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue from :meth:`state_dict` (None: a checkpoint from before the checks) and rewrite events.csv."""
        if state is not None:
            self.events = [Event(**event) for event in state["events"]]
            self.reported = list(state["reported"])
            self.patches = PatchTotals(**state["patches"])
            self.plateau.load_state_dict(state["plateau"])
            if self.balance is not None and state.get("balance"):
                self.balance.load_state_dict(state["balance"])
                self.step.loss.rec_weight = self.balance.rec_weight
        if self.guard is not None:
            self.guard.load_state_dict((state or {}).get("guard") or {})
        write_events(self.events, self.out / "events.csv")

"""The plateau check: training ends when the SoftNCut loss stops improving."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from wnet_zoo.errors import setting
from wnet_zoo.training.checks.base import NOTHING, Decision, EpochEnd, Judge, RunStart, StepLosses
from wnet_zoo.training.events import Event

SPLIT_MARGIN = 0.02
"""No plateau while the SoftNCut loss is within this of K - 1, the value before the encoder splits."""


# ------------------------------------------------------------------------------------------------ plateau


@dataclass
class PlateauCheck:
    """Fires once when the SoftNCut loss stops improving; ends training there (``stop``) unless a judge (the
    balance check) changes the reconstruction weight, after which it watches for a new plateau.

    The loss is smoothed by a moving mean over ``window`` epochs; a plateau is a fall between the last two
    windows below ``tolerance`` (absolute: the loss heads for 0, where a relative change never settles), once
    the loss has left K - 1 (no plateau before the encoder splits the volume). ``window`` 0 turns the check off.
    """

    name: ClassVar[str] = "plateau"
    needs: ClassVar[frozenset[str]] = frozenset()

    window: int
    tolerance: float
    num_classes: int
    stop: bool = True
    judges: Sequence[Judge] = field(default=(), repr=False)
    armed_from: int = 0
    fired_at: int | None = None

    def update(self, ncut: Sequence[float]) -> dict[str, float] | None:
        """Look at the per-epoch SoftNCut losses so far; the plateau's numbers when it is reached (``epoch``,
        ``mean`` of the last window, ``change`` from the window before, ``window``, ``tolerance``)."""
        if self.window <= 0 or self.fired_at is not None:
            return None
        history = [value for value in ncut[self.armed_from :] if math.isfinite(value)]
        if len(history) < 2 * self.window:
            return None
        recent = float(np.mean(history[-self.window :]))
        before = float(np.mean(history[-2 * self.window : -self.window]))
        if recent > self.num_classes - 1 - SPLIT_MARGIN:
            return None
        fall = before - recent
        if fall >= self.tolerance:
            return None
        self.fired_at = len(ncut)
        return {
            "epoch": len(ncut),
            "mean": recent,
            "change": -fall,
            "window": self.window,
            "tolerance": self.tolerance,
        }

    def rearm(self, epoch: int) -> None:
        """Watch for a new plateau from ``epoch`` (1-based count of epochs done) on."""
        self.armed_from, self.fired_at = epoch, None

    def start(self, run: RunStart) -> Decision:
        """Nothing to do when a run begins."""
        return NOTHING

    def accept(self, step: StepLosses) -> Decision:
        """Steps do not matter: epochs do."""
        return NOTHING

    def end_epoch(self, epoch: EpochEnd) -> Decision:
        """At a plateau: the judges' verdict, then stop, go on, or (a new reconstruction weight) watch afresh.
        The plateau's event comes before the judges' ones."""
        plateau = self.update([row["ncut"] for row in epoch.rows])
        if plateau is None:
            return NOTHING
        found = Decision.merge([judge(epoch) for judge in self.judges])
        if found.rec_weight is not None:
            self.rearm(epoch.epoch)
            code, action = "plateau.rearmed", "the reconstruction weight changes: watching for a new plateau"
        elif self.stop:
            code, action = "plateau.stopped", "stopped training; best.pt holds the lowest total loss"
        else:
            code, action = "plateau.trained_on", f"none ({setting('stop_at_plateau', False)}: training goes on)"
        window = self.window
        detail = (
            f"the SoftNCut loss stopped improving at epoch {plateau['epoch']:.0f}: its {window}-epoch mean is "
            f"{plateau['mean']:.4f}, {plateau['change']:+.4f} on the {window} epochs before "
            f"(tolerance {self.tolerance:g})"
        )
        event = Event(epoch.epoch, epoch.step, code, detail, action, plateau)
        return Decision(events=(event, *found.events), rec_weight=found.rec_weight, stop=code == "plateau.stopped")

    def state_dict(self) -> dict[str, Any]:
        """Plain data for ``last.pt``."""
        return {"armed_from": self.armed_from, "fired_at": self.fired_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.armed_from, self.fired_at = int(state["armed_from"]), state["fired_at"]

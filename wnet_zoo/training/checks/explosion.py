"""The explosion check: NaN or blown-up losses roll the run back to its last good snapshot.

The check decides; the training loop keeps the snapshots, restores them and sets the learning rate.
"""

from __future__ import annotations

import math
from typing import Any

from wnet_zoo.errors import setting
from wnet_zoo.training.checks.base import (
    FINAL_LOSSES,
    NOTHING,
    SNAPSHOTS,
    Decision,
    EpochEnd,
    RunStart,
    StepLosses,
)
from wnet_zoo.training.events import Event, numbers

NCUT_JUMP = 0.5
"""The SoftNCut loss explodes when it covers this share of the way from its recent best up to K ..."""
ONE_CLASS_MARGIN = 0.25
"""... and ends above K - 1 (the loss of a one-class segmentation) by at least this much."""
REC_FACTOR = 100.0
"""The reconstruction loss explodes when it exceeds its recent best by this factor (two orders of magnitude)."""
RECENT_STEPS = 20
"""Steps whose losses make the "recent best"."""
SNAPSHOT_EVERY = 10
"""Good steps between two in-memory snapshots of the weights and optimizer state; also the good steps
after which a run that exploded counts as recovered."""


# ---------------------------------------------------------------------------------------------- explosion


class ExplosionGuard:
    """Checks every step's losses before its update, and has the run rolled back to the last good snapshot.

    The loop takes a snapshot (in-memory copies of the model's and the optimizer's state) when training starts
    or resumes; the guard asks for one every :data:`SNAPSHOT_EVERY` good steps (of weights whose loss just
    passed) and at the end of each epoch once the final weights pass an evaluation, so ``last.pt`` always
    holds a snapshot: the one a resumed run starts from. Each explosion rolls back and halves the learning
    rate; ``max_in_a_row`` of them in a row end training, with the advice to train again at a tenth of ``lr``.
    """

    name = "guard"
    needs = frozenset({SNAPSHOTS, FINAL_LOSSES})

    def __init__(self, num_classes: int, max_in_a_row: int, lr: float) -> None:
        self.num_classes, self.max_in_a_row, self.lr = num_classes, max_in_a_row, lr
        self.recent_ncut: list[float] = []
        self.recent_rec: list[float] = []
        self.in_a_row = 0
        self.good_since_event = SNAPSHOT_EVERY
        self.good_since_snapshot = 0
        self.snapshot_step = 0
        self.weights_step = 0

    def explosion(self, ncut: float, rec: float) -> str | None:
        """Why these losses count as an explosion, or None."""
        if not (math.isfinite(ncut) and math.isfinite(rec)):
            return f"the loss is not finite (SoftNCut {ncut:.4g}, reconstruction {rec:.4g})"
        if self.recent_ncut:
            best = min(self.recent_ncut)
            limit = max(best + NCUT_JUMP * (self.num_classes - best), self.num_classes - 1 + ONE_CLASS_MARGIN)
            if ncut > limit:
                return (
                    f"the SoftNCut loss jumped to {ncut:.3f}, toward its bound K={self.num_classes}, "
                    f"from its recent best {best:.3f}"
                )
        if self.recent_rec:
            best = min(self.recent_rec)
            if rec > REC_FACTOR * best:
                return f"the reconstruction loss jumped to {rec:.4g}, {rec / best:.0f}x its recent best {best:.4g}"
        return None

    def start(self, run: RunStart) -> Decision:
        """Nothing to do when a run begins (the loop snapshots the initial weights)."""
        return NOTHING

    def accept(self, step: StepLosses) -> Decision:
        """Whether a step's losses (computed, not yet applied) are sane, with a snapshot when one is due; for
        the epoch's final weights, a snapshot of them (of the restored ones when they exploded)."""
        reason = self.explosion(step.ncut, step.rec)
        if step.final:
            decision = NOTHING
            if reason is not None:
                decision = self._exploded(step, f"{reason} (evaluating the epoch's final weights)")
            self._snapshot_taken()  # what last.pt will hold: a resumed run starts from the same snapshot
            return Decision.merge([decision, Decision(snapshot=True)])
        if reason is not None:
            return self._exploded(step, reason)
        self.recent_ncut = [*self.recent_ncut, step.ncut][-RECENT_STEPS:]
        self.recent_rec = [*self.recent_rec, step.rec][-RECENT_STEPS:]
        self.good_since_event += 1
        if self.good_since_event >= SNAPSHOT_EVERY:
            self.in_a_row = 0
        due = self.good_since_snapshot >= SNAPSHOT_EVERY
        if due:
            self._snapshot_taken()
        self.good_since_snapshot += 1
        self.weights_step = step.step  # the step's update is applied next
        return Decision(snapshot=True) if due else NOTHING

    def end_epoch(self, epoch: EpochEnd) -> Decision:
        """Epochs do not matter beyond their final weights (see :meth:`accept`)."""
        return NOTHING

    def _snapshot_taken(self) -> None:
        self.snapshot_step, self.good_since_snapshot = self.weights_step, 0

    def _exploded(self, step: StepLosses, reason: str) -> Decision:
        """Roll back to the last good snapshot and halve the learning rate, or give up after too many in a row."""
        discarded = self.good_since_snapshot
        self.in_a_row += 1
        self.good_since_event = self.good_since_snapshot = 0
        self.weights_step = self.snapshot_step
        losses = numbers(ncut=step.ncut, rec=step.rec)
        if self.in_a_row >= self.max_in_a_row:
            lr = float(f"{self.lr / 10:.3g}")
            values = {**losses, "in_a_row": self.in_a_row, "suggested_lr": lr}
            event = Event(
                step.epoch, step.step, "explosion.gave_up", reason, f"stopped: {self.in_a_row} in a row", values
            )
            advice = (
                f"the loss exploded {self.in_a_row} times in a row; lower the learning rate by 10x "
                f"({setting('lr', lr)}) and train again"
            )
            return Decision(events=(event,), diverged=advice)
        lr = step.lr
        weights = f"those after step {self.snapshot_step}" if self.snapshot_step else "the initial ones"
        action = (
            f"restored the last good weights ({weights}, {discarded} update(s) undone), lr {lr:.3g} -> {lr / 2:.3g}"
        )
        values = {**losses, "restored_step": self.snapshot_step, "undone": discarded, "lr": lr / 2, "previous_lr": lr}
        event = Event(step.epoch, step.step, "explosion.rollback", reason, action, values)
        return Decision(events=(event,), rollback=True, lr=lr / 2)

    def state_dict(self) -> dict[str, Any]:
        """Plain data for ``last.pt`` (the snapshot itself is the checkpoint's weights)."""
        keys = ("recent_ncut", "recent_rec", "in_a_row", "good_since_event", "snapshot_step")
        return {key: getattr(self, key) for key in keys}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the loop snapshots the restored weights."""
        for key, value in state.items():
            setattr(self, key, value)
        self.weights_step = self.snapshot_step
        self.good_since_snapshot = 0

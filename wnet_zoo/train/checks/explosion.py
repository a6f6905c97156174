"""The explosion check: NaN or blown-up losses roll the run back to its last good snapshot."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

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
    """Checks every step's losses before its update, and rolls back to the last good snapshot.

    A snapshot (in-memory copies of the model's and the optimizer's state) is taken at the start, every
    :data:`SNAPSHOT_EVERY` good steps (of weights whose loss just passed) and at the end of each epoch once
    the final weights pass an evaluation, so ``last.pt`` always holds a snapshot: the one a resumed run
    starts from.
    """

    def __init__(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, num_classes: int, max_in_a_row: int
    ) -> None:
        self.model, self.optimizer = model, optimizer
        self.num_classes, self.max_in_a_row = num_classes, max_in_a_row
        self.recent_ncut: list[float] = []
        self.recent_rec: list[float] = []
        self.in_a_row = 0
        self.good_since_event = SNAPSHOT_EVERY
        self.good_since_snapshot = 0
        self.snapshot_step = 0
        self.weights_step = 0
        self.step = 0
        self.snapshot_taken = False
        self.reason = ""
        self._snapshot: tuple[dict[str, Any], dict[str, Any]] | None = None

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

    def accept(self, terms: dict[str, float]) -> bool:
        """Whether a step's losses (computed, not yet applied) are sane; snapshots the weights when due."""
        self.snapshot_taken = False
        reason = self.explosion(terms["ncut"], terms["rec"])
        if reason is not None:
            self.reason = reason
            return False
        self.recent_ncut = [*self.recent_ncut, terms["ncut"]][-RECENT_STEPS:]
        self.recent_rec = [*self.recent_rec, terms["rec"]][-RECENT_STEPS:]
        self.good_since_event += 1
        if self.good_since_event >= SNAPSHOT_EVERY:
            self.in_a_row = 0
        if self._snapshot is None or self.good_since_snapshot >= SNAPSHOT_EVERY:
            self.snapshot()
        self.good_since_snapshot += 1
        self.weights_step = self.step  # the step's update is applied next
        return True

    def snapshot(self) -> None:
        """Keep the current weights and optimizer state as the last good ones."""
        model_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self._snapshot = (model_state, copy.deepcopy(self.optimizer.state_dict()))
        self.snapshot_step, self.good_since_snapshot, self.snapshot_taken = self.weights_step, 0, True

    def rollback(self) -> str:
        """Restore the last good snapshot and halve the learning rate; return what was done."""
        assert self._snapshot is not None, "a snapshot is taken before the first step"
        lr = self.optimizer.param_groups[0]["lr"]
        self.model.load_state_dict(self._snapshot[0])
        self.optimizer.load_state_dict(copy.deepcopy(self._snapshot[1]))  # Adam would update the copy in place
        for group in self.optimizer.param_groups:
            group["lr"] = lr / 2
        discarded = self.good_since_snapshot
        self.in_a_row += 1
        self.good_since_event = self.good_since_snapshot = 0
        self.weights_step = self.snapshot_step
        weights = f"those after step {self.snapshot_step}" if self.snapshot_step else "the initial ones"
        return f"restored the last good weights ({weights}, {discarded} update(s) undone), lr {lr:.3g} -> {lr / 2:.3g}"

    @property
    def given_up(self) -> bool:
        """Whether the last explosions came too many in a row."""
        return self.in_a_row >= self.max_in_a_row

    def state_dict(self) -> dict[str, Any]:
        """Plain data for ``last.pt`` (the snapshot itself is the checkpoint's weights)."""
        keys = ("recent_ncut", "recent_rec", "in_a_row", "good_since_event", "snapshot_step")
        return {key: getattr(self, key) for key in keys}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` and take the snapshot of the restored weights."""
        for key, value in state.items():
            setattr(self, key, value)
        self.weights_step = self.snapshot_step
        self.snapshot()

"""The plateau check: training ends when the SoftNCut loss stops improving."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SPLIT_MARGIN = 0.02
"""No plateau while the SoftNCut loss is within this of K - 1, the value before the encoder splits."""


# ------------------------------------------------------------------------------------------------ plateau


@dataclass
class PlateauDetector:
    """Fires once when the SoftNCut loss stops improving; :meth:`rearm` starts watching afresh.

    The loss is smoothed by a moving mean over ``window`` epochs; a plateau is a fall between the last two
    windows below ``tolerance`` (absolute: the loss heads for 0, where a relative change never settles), once
    the loss has left K - 1 (no plateau before the encoder splits the volume). ``window`` 0 turns the check off.
    """

    window: int
    tolerance: float
    num_classes: int
    armed_from: int = 0
    fired_at: int | None = None

    def update(self, ncut: Sequence[float]) -> str | None:
        """Look at the per-epoch SoftNCut losses so far; return the event's detail when the plateau is reached."""
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
        return (
            f"the SoftNCut loss stopped improving at epoch {len(ncut)}: its {self.window}-epoch mean is {recent:.4f}, "
            f"{-fall:+.4f} on the {self.window} epochs before (tolerance {self.tolerance:g})"
        )

    def rearm(self, epoch: int) -> None:
        """Watch for a new plateau from ``epoch`` (1-based count of epochs done) on."""
        self.armed_from, self.fired_at = epoch, None

    def state_dict(self) -> dict[str, Any]:
        """Plain data for ``last.pt``."""
        return {"armed_from": self.armed_from, "fired_at": self.fired_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.armed_from, self.fired_at = int(state["armed_from"]), state["fired_at"]

"""The one protocol of the training checks, what the loop tells them, and the decisions they hand back.

A check watches and decides; it never touches the model, the optimiser or the loss. The training loop
(:mod:`wnet_zoo.training.loop`) calls every check at the same points and applies their merged :class:`Decision`:
it keeps the snapshots of the weights, rolls back, sets the learning rate and the reconstruction weight, stops,
and raises ``TrainingDiverged``. Each decision carries the check's events for ``events.csv``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from wnet_zoo.training.events import Event

SNAPSHOTS = "snapshots"
"""A need: the loop snapshots the weights and optimiser state before the first step (new or resumed run), so
that a :attr:`Decision.rollback` has weights to restore."""
FINAL_LOSSES = "final losses"
"""A need: after each epoch, the loop evaluates its final weights on its last batch and hands the losses to
:meth:`Check.accept` with ``final`` set."""
GRADIENT_SHARES = "gradient shares"
"""A need: the loop measures each loss term's gradient at the encoder's output on each epoch's first step and
hands them to :meth:`Check.end_epoch` (:attr:`EpochEnd.grads`)."""


@dataclass(frozen=True)
class Decision:
    """What the loop does after a check's call. The empty decision (:data:`NOTHING`) changes nothing.

    Attributes:
        events: what the check saw and did, in order, for ``events.csv`` and the log.
        rollback: the step's update is refused (the epoch's final weights, for a ``final`` step) and the
            weights and optimiser state of the last snapshot come back.
        lr: the learning rate from now on (after the rollback, when there is one).
        snapshot: keep the current weights and optimiser state (after the rollback, when there is one) as
            the last good ones; for a step that is not refused, before its update.
        rec_weight: the reconstruction loss's weight from the next epoch on (the best total starts afresh).
        stop: training ends after this epoch.
        diverged: training ends now: ``TrainingDiverged`` with this advice (the loop adds which checkpoint is
            left).
    """

    events: tuple[Event, ...] = ()
    rollback: bool = False
    lr: float | None = None
    snapshot: bool = False
    rec_weight: float | None = None
    stop: bool = False
    diverged: str | None = None

    @property
    def refuses(self) -> bool:
        """Whether the step's update must not be applied."""
        return self.rollback or self.diverged is not None

    @classmethod
    def merge(cls, decisions: Sequence[Decision]) -> Decision:
        """One decision for all: every event in order, any flag set, the last learning rate and weight given,
        the first reason to stop at once."""
        return cls(
            events=tuple(event for decision in decisions for event in decision.events),
            rollback=any(d.rollback for d in decisions),
            lr=next((d.lr for d in reversed(decisions) if d.lr is not None), None),
            snapshot=any(d.snapshot for d in decisions),
            rec_weight=next((d.rec_weight for d in reversed(decisions) if d.rec_weight is not None), None),
            stop=any(d.stop for d in decisions),
            diverged=next((d.diverged for d in decisions if d.diverged is not None), None),
        )


NOTHING = Decision()
"""The empty decision."""


@dataclass(frozen=True)
class RunStart:
    """A new run begins (a resumed one does not begin again).

    Attributes:
        screens: the :class:`~wnet_zoo.training.checks.screening.VolumeScreen` of each training volume (none when
            screening is off).
    """

    screens: Sequence[Any]


@dataclass(frozen=True)
class StepLosses:
    """A step's losses, computed and not yet applied, or (``final``) those of the epoch's final weights.

    Attributes:
        epoch: the 1-based epoch.
        step: the 1-based step number (every step taken counts, rolled-back ones too; the epoch's last one for
            ``final``).
        batch: the step's batch (B, 1, Z, Y, X) on the 0..100 scale.
        ncut: the SoftNCut loss.
        rec: the reconstruction loss.
        lr: the optimiser's learning rate.
        final: the losses of the epoch's final weights on its last batch, in eval mode; no update follows.
            Only checks that need :data:`FINAL_LOSSES` get these.
    """

    epoch: int
    step: int
    batch: np.ndarray
    ncut: float
    rec: float
    lr: float
    final: bool = False


@dataclass(frozen=True)
class EpochEnd:
    """An epoch is over and its row of metrics written.

    Attributes:
        epoch: the 1-based epoch.
        step: its last step number.
        rows: every epoch's metrics so far (``ncut``, ``rec``, ``total``: NaN for an epoch all rolled back).
        grads: the gradient norms of the weighted NCut and reconstruction terms at the encoder's output on the
            epoch's first step (None when not measured: no check needs :data:`GRADIENT_SHARES`, or the step was
            refused).
        sampled: the sampler's counts of the epoch (``patches``, ``almost_empty``, ``skipped``).
        evaluate: the model's losses, ``probabilities``, ``reconstruction`` and the batch as the encoder saw it
            (``seen``) on a batch (B, 1, Z, Y, X), in eval mode, drawing no random numbers.
    """

    epoch: int
    step: int
    rows: Sequence[dict[str, Any]]
    grads: tuple[float, float] | None
    sampled: dict[str, int]
    evaluate: Callable[[torch.Tensor], dict[str, Any]]


Judge = Callable[[EpochEnd], Decision]
"""What the plateau check asks at a plateau (the balance check's verdict): a decision with events and, maybe,
a new reconstruction weight."""


class Check(Protocol):
    """A training check. The loop calls it, through :class:`~wnet_zoo.training.checks.coordinator.TrainingChecks`:

    * :meth:`start` once when a new run begins;
    * :meth:`accept` for every step before its update (and for the epoch's final weights, see
      :data:`FINAL_LOSSES`);
    * :meth:`end_epoch` after every epoch's row;
    * :meth:`state_dict` for every ``last.pt``, and :meth:`load_state_dict` when a run resumes, so that a
      resumed run behaves exactly like an uninterrupted one.
    """

    name: str
    """The key of the check's state in ``last.pt``."""
    needs: frozenset[str]
    """What the loop must do or measure for the check: :data:`SNAPSHOTS`, :data:`FINAL_LOSSES`,
    :data:`GRADIENT_SHARES`."""

    def start(self, run: RunStart) -> Decision:
        """A new run begins (only the decision's events count here)."""
        ...

    def accept(self, step: StepLosses) -> Decision:
        """Look at a step's losses before its update."""
        ...

    def end_epoch(self, epoch: EpochEnd) -> Decision:
        """Look at the epoch that just ended."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything the check keeps between epochs, as plain data."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`."""
        ...

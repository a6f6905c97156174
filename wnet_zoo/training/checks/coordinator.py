"""The checks of one run, in the order the loop calls them, and the events they record in ``events.csv``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wnet_zoo.training.checks.balance import EVALUATED_VOLUMES, BalanceCheck, centre_patches
from wnet_zoo.training.checks.base import FINAL_LOSSES, Check, Decision, EpochEnd, RunStart, StepLosses
from wnet_zoo.training.checks.explosion import ExplosionGuard
from wnet_zoo.training.checks.plateau import PlateauCheck
from wnet_zoo.training.checks.screening import ScreeningCheck
from wnet_zoo.training.config import TrainConfig
from wnet_zoo.training.events import Event, write_events

LOG = logging.getLogger("wnet_zoo")


def checks_of(config: TrainConfig, volumes: Sequence[np.ndarray]) -> list[Check]:
    """The checks ``config`` turns on, in the order they are called: screening, explosion, balance, plateau
    (the balance check keeps its shares before the plateau check asks its verdict). ``volumes`` are the
    remapped training volumes: the centre patches of the first ones are segmented at a plateau."""
    checks: list[Check] = []
    if config.screen:
        checks.append(ScreeningCheck())
    if config.explosion_guard:
        checks.append(ExplosionGuard(config.num_classes, config.max_explosions, config.lr))
    judges = []
    if config.balance_check:
        centre = centre_patches(volumes[:EVALUATED_VOLUMES], tuple(config.patch))  # type: ignore[arg-type]
        balance = BalanceCheck(
            config.ncut_weight,
            config.rec_weight,
            config.rec_loss,
            config.auto_balance,
            window=config.plateau_window,
            pretrained=config.from_weights is not None,
            centre=centre,
        )
        checks.append(balance)
        judges.append(balance.at_plateau)
    window, tolerance, stop = config.plateau_window, config.plateau_tolerance, config.stop_at_plateau
    checks.append(PlateauCheck(window, tolerance, config.num_classes, stop=stop, judges=judges))
    return checks


class TrainingChecks:
    """The checks of one run and their events: calls every check, records and logs the events of their
    decisions (``events.csv`` is rewritten after each call that has some) and hands the merged decision to
    the loop, which applies it.

    Args:
        checks: the checks, in the order they are called (see :func:`checks_of`).
        out: the run directory.
    """

    def __init__(self, checks: Sequence[Check], out: Path) -> None:
        self.checks, self.out = list(checks), out
        self.events: list[Event] = []

    def needs(self, need: str) -> bool:
        """Whether a check needs ``need`` of the loop (see :mod:`wnet_zoo.training.checks.base`)."""
        return any(need in check.needs for check in self.checks)

    def start(self, screens: Sequence[Any]) -> None:
        """Begin a new run (not called when resuming): the checks' events about the ``screens`` of the volumes
        (:class:`~wnet_zoo.training.checks.screening.VolumeScreen`), and the first ``events.csv``."""
        self._record(Decision.merge([check.start(RunStart(screens)) for check in self.checks]))
        write_events(self.events, self.out / "events.csv")

    def accept(self, step: StepLosses) -> Decision:
        """Every check's decision on a step's losses (on the epoch's final weights: the checks that need
        them), merged."""
        called = [check for check in self.checks if not step.final or FINAL_LOSSES in check.needs]
        return self._record(Decision.merge([check.accept(step) for check in called]))

    def end_epoch(self, epoch: EpochEnd) -> Decision:
        """Every check's decision at the end of an epoch, merged."""
        return self._record(Decision.merge([check.end_epoch(epoch) for check in self.checks]))

    def _record(self, decision: Decision) -> Decision:
        for event in decision.events:
            self.events.append(event)
            LOG.warning("%s", event.line())
        if decision.events:
            write_events(self.events, self.out / "events.csv")
        return decision

    def state_dict(self) -> dict[str, Any]:
        """Plain data for ``last.pt``: the events and each check's state under its name."""
        return {"events": [event.as_dict() for event in self.events]} | {
            check.name: check.state_dict() for check in self.checks
        }

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue from :meth:`state_dict` (None: a checkpoint from before the checks) and rewrite events.csv."""
        state = state or {}
        self.events = [Event.from_dict(event) for event in state.get("events", [])]
        for check in self.checks:
            own = state.get(check.name)
            if own is None and check.name == "screening" and "patches" in state:  # written before per-check state
                own = {"reported": state["reported"], "patches": state["patches"]}
            if own:
                check.load_state_dict(own)
        write_events(self.events, self.out / "events.csv")

"""``events.csv``: one row each time a training check fires (screening, plateau, explosion, balance)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from wnet_zoo.io.atomic import atomic_path

EVENT_COLUMNS = ("epoch", "step", "kind", "detail", "action")
EVENT_KINDS = ("screening", "plateau", "explosion", "balance")


@dataclass(frozen=True)
class Event:
    """What a check saw (``detail``) and what was done about it (``action``).

    ``epoch`` and ``step`` are 1-based and count every step taken, rolled-back ones included; events from
    before training (data screening) have epoch 0 and step 0, end-of-epoch events the epoch's last step.
    """

    epoch: int
    step: int
    kind: str
    detail: str
    action: str

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"event kind must be one of {EVENT_KINDS}, got {self.kind!r}")

    def as_dict(self) -> dict[str, Any]:
        """Plain data, for ``last.pt``."""
        return asdict(self)

    def line(self) -> str:
        """The one log line of this event."""
        where = "before training" if self.epoch == 0 else f"epoch {self.epoch}, step {self.step}"
        return f"{self.kind} ({where}): {self.detail}; {self.action}"


def write_events(events: Sequence[Event], path: Path) -> None:
    """Write all ``events`` (a header alone when there are none) to ``path``, atomically."""
    with atomic_path(path) as part, part.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=EVENT_COLUMNS)
        writer.writeheader()
        writer.writerows(event.as_dict() for event in events)


def read_events(path: Path) -> list[Event]:
    """The events of an ``events.csv``; none when the file is missing (runs from before the checks)."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [
            Event(int(row["epoch"]), int(row["step"]), row["kind"], row["detail"], row["action"])
            for row in csv.DictReader(handle)
        ]

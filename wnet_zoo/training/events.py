"""``events.csv``: one row each time a training check fires (screening, plateau, explosion, balance).

Each event has a ``code`` from a closed set (:data:`EVENT_CODES`: the check, a dot, what it found or did) and the
``values`` behind it (a dict of numbers, a JSON object in its column), for programs such as ``wnet-zoo report``;
``detail`` (what the check saw) and ``action`` (what was done, or what to do) are sentences for people. Files
written before codes existed have neither column: their events read with their kind as code and no values.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wnet_zoo.io.atomic import atomic_path

EVENT_KINDS = ("screening", "plateau", "explosion", "balance")
EVENT_CODES = {
    "screening.volume": "a volume is over-exposed, almost empty, has large empty regions or low contrast",
    "screening.patches": "sampled patches are almost empty (and kept), over-exposed or of low contrast",
    "plateau.stopped": "the SoftNCut loss reached a plateau; training stopped",
    "plateau.trained_on": "the SoftNCut loss reached a plateau; training went on (stopping at it was off)",
    "plateau.rearmed": "the SoftNCut loss reached a plateau; the reconstruction weight changed, a new one is awaited",
    "explosion.rollback": "a loss exploded; the last good weights came back and the learning rate halved",
    "explosion.gave_up": "a loss exploded too many times in a row; training stopped",
    "balance.collapse": "NCut takes over and the segmentation collapsed; raise the reconstruction weight",
    "balance.auto_balanced": "NCut took over and the segmentation collapsed; the reconstruction weight was raised",
    "balance.poor_reconstruction": "the reconstruction stays no better than a constant image",
    "balance.poor_fit": "fine-tuned from pretrained weights, the nuclei class leaves most bright structure out",
}
"""Every event code, with what it means."""
LEGACY_COLUMNS = ("epoch", "step", "kind", "detail", "action")
"""The columns of ``events.csv`` before codes: enough to read an event."""
EVENT_COLUMNS = (*LEGACY_COLUMNS, "code", "values")


@dataclass(frozen=True)
class Event:
    """What a check saw (``detail``) and what was done about it (``action``), with its ``code`` and ``values``.

    ``epoch`` and ``step`` are 1-based and count every step taken, rolled-back ones included; events from
    before training (data screening) have epoch 0 and step 0, end-of-epoch events the epoch's last step.
    ``code`` is one of :data:`EVENT_CODES`, or a bare kind for an event read from a file written before codes.
    """

    epoch: int
    step: int
    code: str
    detail: str
    action: str
    values: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.code not in EVENT_CODES and self.code not in EVENT_KINDS:
            raise ValueError(f"event code must be one of {sorted(EVENT_CODES)}, got {self.code!r}")
        try:
            if any(isinstance(value, (str, bytes)) for value in self.values.values()):
                raise TypeError
            values = {str(key): float(value) for key, value in self.values.items()}
        except (TypeError, ValueError):
            raise ValueError(f"event values must be numbers, got {self.values!r}") from None
        object.__setattr__(self, "values", values)

    @property
    def kind(self) -> str:
        """The check that fired: the code's part before the dot."""
        return self.code.partition(".")[0]

    def as_dict(self) -> dict[str, Any]:
        """Plain data, for ``last.pt``."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "code": self.code,
            "detail": self.detail,
            "action": self.action,
            "values": dict(self.values),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        """Read :meth:`as_dict`, or the dict of a ``last.pt`` written before codes (a kind, no code)."""
        code = data.get("code") or data["kind"]
        values = dict(data.get("values") or {})
        return cls(int(data["epoch"]), int(data["step"]), code, str(data["detail"]), str(data["action"]), values)

    def row(self) -> dict[str, Any]:
        """The event's row of ``events.csv``."""
        return {**self.as_dict(), "kind": self.kind, "values": json.dumps(self.values)}

    @classmethod
    def from_row(cls, row: Mapping[str, str | None]) -> Event:
        """Read :meth:`row` (``code`` and ``values`` may be missing or empty: a file written before codes).

        Raises:
            ValueError: the row is no event (a number, code or JSON object that does not read, a kind that
                differs from its code's).
        """
        kind = row["kind"] or ""
        values = json.loads(row.get("values") or "{}")
        if not isinstance(values, dict):
            raise ValueError(f"event values must be a JSON object, got {row.get('values')!r}")
        event = cls.from_dict({**row, "code": row.get("code") or kind, "values": values})
        if event.kind != kind:
            raise ValueError(f"event kind {kind!r} does not match its code {event.code!r}")
        return event

    def line(self) -> str:
        """The one log line of this event."""
        where = "before training" if self.epoch == 0 else f"epoch {self.epoch}, step {self.step}"
        return f"{self.kind} ({where}): {self.detail}; {self.action}"


def numbers(**values: float | None) -> dict[str, float]:
    """The given numbers as floats, for :attr:`Event.values`; None (not measured) left out, NaN kept."""
    return {key: float(value) for key, value in values.items() if value is not None}


def write_events(events: Sequence[Event], path: Path) -> None:
    """Write all ``events`` (a header alone when there are none) to ``path``, atomically."""
    with atomic_path(path) as part, part.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=EVENT_COLUMNS)
        writer.writeheader()
        writer.writerows(event.row() for event in events)


def read_events(path: Path) -> list[Event]:
    """The events of an ``events.csv``; none when the file is missing (runs from before the checks)."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [Event.from_row(row) for row in csv.DictReader(handle)]

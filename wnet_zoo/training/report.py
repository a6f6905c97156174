"""``wnet-zoo report RUN_DIR``: how a training run went, what the checks saw, and what to do about it."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import torch

from wnet_zoo.errors import UserError, command, setting
from wnet_zoo.training.config import read_config_file
from wnet_zoo.training.events import LEGACY_COLUMNS, Event

METRIC_COLUMNS = ("epoch", "ncut", "rec", "total", "lr", "base_lr")  # the columns the report reads
BALANCE_CODES = ("balance.collapse", "balance.auto_balanced", "balance.poor_reconstruction", "balance.poor_fit")


def _advice_texts() -> dict[str, str]:
    """The advice, its settings named in the current naming (``{...}``: filled in with the run's numbers)."""
    return {
        "screening": (
            "avoid empty, almost-empty and over-exposed images (CellSeg3D: images with very large, bright regions, "
            "almost-empty and empty images, and large empty regions or holes): crop or remove the flagged volumes"
        ),
        "explosion": (
            "a loss exploded: lower the learning rate, first by a factor of two, then ten ({lr10}), as CellSeg3D "
            "advises when the NCut loss explodes"
        ),
        "balance.collapse": (
            f"NCut takes over: raise the reconstruction weight ({{weight}}), or train with "
            f"{setting('auto_balance', True)}"
        ),
        "balance.auto_balanced": (
            f"NCut took over and {setting('auto_balance', True)} raised the reconstruction weight to {{weight}}; if "
            "the segmentation still separates large bright and dim regions, raise it further"
        ),
        "balance.poor_reconstruction": (
            "reconstruction is poor: raise the reconstruction weight; if that is not enough, switch to "
            f"{setting('rec_loss', 'bce')} with {setting('rec_weight', 0.5)}"
        ),
        "balance.poor_fit": (
            "the pretrained start may not fit these images: compare with a model trained from scratch "
            f"({command('train')} on the same images)"
        ),
        "plateau": "the SoftNCut loss reached a plateau at epoch {epoch}: best.pt is the model to use",
        "no plateau": (
            "the SoftNCut loss had not reached a plateau: train longer ({command}); for good results, wait for it "
            "to plateau"
        ),
    }


def run_report(run_dir: str | Path) -> str:
    """A plain-text summary of the run in ``run_dir``: status, final losses, loss balance, events, advice.

    Raises:
        UserError: ``run_dir`` is not a run directory (no config.yaml and metrics.csv).
    """
    run = Path(run_dir)
    if not (run / "config.yaml").is_file() or not (run / "metrics.csv").is_file():
        raise UserError(f"{run}: not a run directory with config.yaml and metrics.csv; give a wnet-zoo run folder")
    config = read_config_file(run / "config.yaml")
    rows, damage = read_metrics(run / "metrics.csv")
    events, events_damage = read_whole_events(run / "events.csv")
    checkpoint = _checkpoint(run / "last.pt")
    checks = checkpoint.get("checks") or {}
    epochs = int(_config_number(config, "epochs", len(rows)))
    lines = [f"run: {run}", *damage, *events_damage, f"status: {_status(rows, epochs, events)}"]
    if rows:
        last = rows[-1]
        lines.append(
            f"final losses (epoch {last['epoch']:.0f}): SoftNCut {last['ncut']:.4f}, reconstruction "
            f"{last['rec']:.4g}, total {last['total']:.4g} (lr {last['lr']:.3g}, base lr {last['base_lr']:.3g})"
        )
        best = int(checkpoint.get("best_epoch", 0)) or _lowest_total(rows)
        best_row = next((row for row in rows if row["epoch"] == best), None)
        if best_row is not None:
            lines.append(f"best.pt: epoch {best} (total {best_row['total']:.4g})")
    lines += _balance_lines(checks)
    lines += _patch_lines(checks)
    lines.append(f"events ({len(events)}):" if events else "events: none, every check stayed quiet")
    lines += [f"  {_where(e)}  {e.kind:<10} {e.detail} -> {e.action}" for e in events]
    advice = _advice(run, config, rows, epochs, events)
    lines.append("advice:" if advice else "advice: none")
    lines += [f"  - {line}" for line in advice]
    return "\n".join(lines)


def read_metrics(path: Path) -> tuple[list[dict[str, float]], list[str]]:
    """The whole rows of ``metrics.csv``, and a line naming the rows that are not (none when all are whole).

    Raises:
        UserError: the file holds no whole row, or lacks the columns of a wnet-zoo metrics file.
    """
    header, records, bad, last = _whole_records(path)
    missing = [name for name in METRIC_COLUMNS if name not in header]
    if missing and records:
        raise UserError(
            f"{path}: not a wnet-zoo metrics file (no column {', '.join(missing)}); give a wnet-zoo run folder"
        )
    rows = []
    for line, record in records:
        values = [_number(field) for field in record]
        if any(not field.strip() for field in record):
            bad.append((line, "empty fields"))
        elif any(value is None for value in values):
            bad.append((line, "not numbers"))
        else:
            rows.append(dict(zip(header, values, strict=True)))
    if not rows or missing:
        raise UserError(
            f"{path}: no whole row of metrics (empty or cut short); copy it again from the run, or rewrite it from "
            f"last.pt with {command('resume', path.parent)}"
        )
    return rows, _damage_line(path, bad, last, len(rows), "epoch")


def read_whole_events(path: Path) -> tuple[list[Event], list[str]]:
    """The whole rows of ``events.csv`` (none when it is missing), and a line naming the rows that are not. A file
    written before event codes reads too: its events have their kind as code and no values."""
    if not path.is_file():
        return [], []
    header, records, bad, last = _whole_records(path)
    if not set(LEGACY_COLUMNS) <= set(header):
        return [], [f"{path.name}: no header of events (empty or cut short); events left out"]
    events = []
    for line, record in records:
        try:
            events.append(Event.from_row(dict(zip(header, record, strict=True))))
        except ValueError:
            bad.append((line, "not an event"))
    return events, _damage_line(path, bad, last, len(events), "event")


def _whole_records(path: Path) -> tuple[list[str], list[tuple[int, list[str]]], list[tuple[int, str]], int]:
    """A CSV file's header, its records with as many fields as the header (by line number), the line numbers of
    the others with what is wrong, and the line number of the last record. Training writes these files whole and
    ends every row with a line break, so a last row without one was cut short (a copy cut short, a full disk)."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    numbered = [(line, record) for line, record in enumerate(csv.reader(text.splitlines()), start=1) if record]
    if not numbered:
        return [], [], [], 0
    header, records, bad, last = numbered[0][1], [], [], numbered[-1][0]
    for line, record in numbered[1:]:
        if line == last and (len(record) < len(header) or not text.endswith(("\n", "\r"))):
            bad.append((line, "cut short"))
        elif len(record) < len(header):
            bad.append((line, "fields missing"))
        elif len(record) > len(header):
            bad.append((line, "extra fields"))
        else:
            records.append((line, record))
    return header, records, bad, last


def _damage_line(path: Path, bad: list[tuple[int, str]], last: int, whole: int, noun: str) -> list[str]:
    """One line naming the incomplete rows (``bad``: line number, what is wrong; ``last``: the last row's line
    number) and how many whole ones are reported."""
    if not bad:
        return []
    bad = sorted(bad)
    named = [f"the last row ({why})" if line == last else f"line {line} ({why})" for line, why in bad[:3]]
    if len(bad) == 1:
        what = named[0].replace(" (", " is incomplete (", 1)
    elif len(bad) > 3:
        what = f"{', '.join(named)} and {len(bad) - 3} more are incomplete"
    else:
        what = f"{', '.join(named[:-1])} and {named[-1]} are incomplete"
    return [f"{path.name}: {what}; reporting {whole} whole {noun}{'' if whole == 1 else 's'}"]


def _number(text: str) -> float | None:
    """The field as a number (``nan`` as written for a loss that was not finite); None when unreadable."""
    try:
        return float(text)
    except ValueError:
        return None


def _config_number(config: dict[str, Any], key: str, default: float) -> float:
    """``config[key]`` as a number; ``default`` when it is missing or unreadable (a config.yaml cut short)."""
    try:
        value = float(config[key])
    except (KeyError, TypeError, ValueError):
        return default
    return value if math.isfinite(value) else default


def _checkpoint(path: Path) -> dict[str, Any]:
    """``last.pt``, memory-mapped (its weights are not read); empty when unavailable."""
    if not path.is_file():
        return {}
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a torn or foreign file: the report goes on from the CSV files
        return {}
    return checkpoint if isinstance(checkpoint, dict) else {}


def _lowest_total(rows: list[dict[str, float]]) -> int:
    finite = [row for row in rows if math.isfinite(row["total"])]
    return int(min(finite, key=lambda row: row["total"])["epoch"]) if finite else 0


def _status(rows: list[dict[str, float]], epochs: int, events: list[Event]) -> str:
    if events and events[-1].code == "explosion.gave_up":
        return f"stopped by the explosion guard in epoch {events[-1].epoch} of {epochs}"
    stop = next((e for e in events if e.code == "plateau.stopped"), None)
    if stop is not None:
        return f"stopped at the SoftNCut plateau, epoch {stop.epoch} of {epochs}"
    if len(rows) >= epochs:
        return f"finished, {len(rows)} of {epochs} epochs"
    return f"interrupted or still running: {len(rows)} of {epochs} epochs"


def _where(event: Event) -> str:
    return "before training   " if event.epoch == 0 else f"epoch {event.epoch:<3} step {event.step:<5}"


def _balance_lines(checks: dict[str, Any]) -> list[str]:
    balance = checks.get("balance") or {}
    if not balance.get("shares"):
        return []
    epoch, loss_share, grad_share = balance["shares"][-1]
    lines = [
        f"loss balance (epoch {epoch:.0f}): NCut has {loss_share:.0%} of the weighted loss and {grad_share:.0%} of "
        f"the gradient at the encoder's output; reconstruction weight {balance['rec_weight']:g}"
    ]
    segmentation = balance.get("segmentation")
    if segmentation:
        covered = segmentation["covered"]
        bright = f", {covered:.0%} of their bright class" if math.isfinite(covered) else ""
        lines.append(
            f"segmentation at the plateau (epoch {segmentation['epoch']:.0f}): the nuclei class covers "
            f"{segmentation['foreground']:.0%} of the centre patches{bright}"
        )
    return lines


def _patch_lines(checks: dict[str, Any]) -> list[str]:
    patches = (checks.get("screening") or {}).get("patches") or checks.get("patches") or {}  # or as saved before
    if not patches.get("patches"):
        return []
    return [
        f"patches: {patches['patches']} sampled, {patches['almost_empty']} almost empty "
        f"({patches['skipped']} replaced), {patches['over_exposed']} over-exposed, "
        f"{patches['low_contrast']} with low contrast"
    ]


def _advice(
    run: Path, config: dict[str, Any], rows: list[dict[str, float]], epochs: int, events: list[Event]
) -> list[str]:
    """What to do, from the events' codes and numbers (the events of an ``events.csv`` from before codes give
    the advice of their kind only: none for the balance check's)."""
    texts = _advice_texts()
    kinds = {event.kind for event in events}
    advice = []
    if "screening" in kinds:
        advice.append(texts["screening"])
    if "explosion" in kinds:
        lr10 = float(f"{_config_number(config, 'lr', 1e-3) / 10:.3g}")
        advice.append(texts["explosion"].format(lr10=setting("lr", lr10)))
    for event in (e for e in events if e.code in BALANCE_CODES):
        weight = event.values.get("rec_weight")  # always there, unless the file was edited
        named = setting("rec_weight") if weight is None else setting("rec_weight", weight)
        shown = "?" if weight is None else f"{weight:g}"
        text = texts[event.code].format(weight=named if event.code == "balance.collapse" else shown)
        if text not in advice:
            advice.append(text)
    plateau = [event for event in events if event.kind == "plateau"]
    if plateau and plateau[-1].code != "plateau.rearmed":
        advice.append(texts["plateau"].format(epoch=plateau[-1].epoch))
    elif rows and len(rows) >= epochs and "explosion" not in kinds:
        advice.append(texts["no plateau"].format(command=command("resume", run, epochs=2 * epochs)))
    return advice

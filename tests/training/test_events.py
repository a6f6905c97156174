"""``events.csv``: codes and numbers written and read back, files from before codes, and a training run's codes."""

import csv
import math
from pathlib import Path

import pytest

from wnet_zoo.cli import main
from wnet_zoo.model.checkpoints import load_weights
from wnet_zoo.training.events import EVENT_CODES, EVENT_COLUMNS, Event, read_events, write_events

TINY = ["--channels", "4,8,16,32", "--patch", "16,24,24", "--samples-per-epoch", "2", "--batch", "2", "--no-bf16"]


def test_codes_and_values_are_written_as_columns_and_read_back(tmp_path: Path):
    events = [
        Event(0, 0, "screening.volume", "a.tif: low contrast", "clip the brightest outliers", {"spread": 4.5}),
        Event(2, 8, "explosion.rollback", "the loss is not finite", "restored ...", {"ncut": math.nan, "lr": 5e-4}),
        Event(3, 12, "plateau.stopped", "the SoftNCut loss stopped improving, at epoch 3", "stopped training"),
    ]
    path = tmp_path / "events.csv"
    write_events(events, path)
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == EVENT_COLUMNS == ("epoch", "step", "kind", "detail", "action", "code", "values")
    assert [(row["kind"], row["code"]) for row in rows] == [
        ("screening", "screening.volume"),
        ("explosion", "explosion.rollback"),
        ("plateau", "plateau.stopped"),
    ]
    assert rows[0]["values"] == '{"spread": 4.5}' and rows[2]["values"] == "{}"
    back = read_events(path)
    assert [e.code for e in back] == [e.code for e in events] and back[2] == events[2]
    assert back[1].values["lr"] == 5e-4 and math.isnan(back[1].values["ncut"])
    assert [e.kind for e in back] == ["screening", "explosion", "plateau"]
    assert Event.from_dict(events[1].as_dict()).values["lr"] == 5e-4  # last.pt keeps them as plain data


def test_an_events_file_from_before_codes_reads_with_kinds_as_codes(tmp_path: Path):
    path = tmp_path / "events.csv"
    path.write_text(
        "epoch,step,kind,detail,action\r\n"
        "1,3,explosion,the loss is not finite,stopped: 3 in a row\r\n"
        '4,16,balance,NCut takes over,"raise the reconstruction weight: --rec-weight 0.01 (or --auto-balance)"\r\n'
    )
    events = read_events(path)
    assert [(e.epoch, e.step, e.kind, e.code, e.values) for e in events] == [
        (1, 3, "explosion", "explosion", {}),
        (4, 16, "balance", "balance", {}),
    ]
    assert events[1].action == "raise the reconstruction weight: --rec-weight 0.01 (or --auto-balance)"
    old = {"epoch": 1, "step": 3, "kind": "explosion", "detail": "not finite", "action": "stopped"}  # a last.pt's
    assert Event.from_dict(old) == Event(1, 3, "explosion", "not finite", "stopped")


def test_events_that_do_not_read(tmp_path: Path):
    with pytest.raises(ValueError, match="event code must be one of"):
        Event(1, 1, "explosion.boom", "", "")
    with pytest.raises(ValueError, match="event values must be numbers"):
        Event(1, 1, "explosion.rollback", "", "", {"lr": "fast"})  # type: ignore[dict-item]
    row = {"epoch": "1", "step": "1", "kind": "plateau", "detail": "", "action": "", "code": "explosion.rollback"}
    with pytest.raises(ValueError, match="does not match its code"):
        Event.from_row({**row, "values": "{}"})
    with pytest.raises(ValueError):
        Event.from_row({**row, "kind": "explosion", "values": "{lr: 1"})
    with pytest.raises(ValueError, match="JSON object"):
        Event.from_row({**row, "kind": "explosion", "values": "[1]"})
    assert set(EVENT_CODES) >= {"explosion.rollback", "plateau.stopped", "balance.auto_balanced", "screening.patches"}


@pytest.mark.slow
def test_a_run_writes_codes_and_numbers_that_match_its_metrics(tmp_path: Path, small_tiff: Path):
    run = tmp_path / "run"
    args = [*TINY, "--lr", "1e-2", "--plateau-window", "2", "--plateau-tolerance", "0.05", "--epochs", "8"]
    assert main(["train", str(small_tiff), "--out", str(run), *args, "--rec-weight", "0", "--no-stop-at-plateau"]) == 0
    events = read_events(run / "events.csv")
    codes = [e.code for e in events]
    assert codes[:3] == ["plateau.trained_on", "balance.collapse", "balance.poor_reconstruction"], codes
    plateau, collapse, poor = events[:3]
    assert plateau.action == "none (--no-stop-at-plateau: training goes on)"
    assert collapse.action == f"raise the reconstruction weight: --rec-weight {collapse.values['rec_weight']:g} " + (
        "(or --auto-balance)"
    )
    with (run / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    ncut = [float(row["ncut"]) for row in rows[: plateau.epoch]]
    assert plateau.values["mean"] == pytest.approx(sum(ncut[-2:]) / 2)
    assert plateau.values["change"] == pytest.approx(sum(ncut[-2:]) / 2 - sum(ncut[-4:-2]) / 2)
    shares = load_weights(run / "last.pt").checkpoint["checks"]["balance"]["shares"]
    assert collapse.values["loss_share"] == shares[plateau.epoch - 1][1] == 1.0  # no reconstruction term at all
    assert poor.values["rec"] >= poor.values["rec_baseline"] and poor.values["window"] == 2
    assert poor.values["rec_weight"] == collapse.values["rec_weight"]

"""``wnet-zoo report RUN_DIR``: status, final losses, balance, events and advice of a run."""

import csv
from pathlib import Path

import torch
import yaml

from wnet_zoo.cli import main
from wnet_zoo.cli.naming import CliNaming
from wnet_zoo.errors import naming
from wnet_zoo.training.events import Event, write_events
from wnet_zoo.training.report import run_report

COLUMNS = ("epoch", "ncut", "rec", "total", "lr", "base_lr", "seconds")


def _run_dir(folder: Path, rows: list[tuple], events: list[Event], epochs: int = 4, checks: dict | None = None) -> Path:
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump({"epochs": epochs, "lr": 1e-3, "rec-weight": 0.005}))
    with (folder / "metrics.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    write_events(events, folder / "events.csv")
    if checks is not None:
        torch.save({"model": {"w": torch.zeros(2)}, "checks": checks}, folder / "last.pt")
    return folder


def test_report_of_a_run_with_events(tmp_path: Path):
    rows = [
        (1, "nan", "nan", "nan", 5e-4, 1e-3, 1.0),
        (2, 0.95, 60.0, 0.775, 5e-4, 1e-3, 1.0),
        (3, 0.90, 50.0, 0.70, 5e-4, 1e-3, 1.0),
    ]
    events = [
        Event(0, 0, "screening.volume", "a.tif: over-exposed (2.00% of voxels at the dtype maximum)", "avoid ..."),
        Event(
            1,
            2,
            "explosion.rollback",
            "the reconstruction loss jumped to 7e+04",
            "restored ..., lr 0.001 -> 0.0005",
            {"lr": 5e-4, "previous_lr": 1e-3},
        ),
        Event(
            3,
            6,
            "balance.collapse",
            "NCut takes over (97% of the loss, 99% ...)",
            "raise the reconstruction weight: --rec-weight 0.01",
            {"rec_weight": 0.01, "loss_share": 0.97},
        ),
        Event(
            3,
            6,
            "balance.poor_reconstruction",
            "the reconstruction stays poor: loss 50",
            "raise --rec-weight (e.g. 0.01), or ...",
            {"rec_weight": 0.01},
        ),
        Event(
            3,
            6,
            "plateau.stopped",
            "the SoftNCut loss stopped improving at epoch 3",
            "stopped training; best.pt holds the lowest total loss",
        ),
    ]
    checks = {
        "balance": {"rec_weight": 0.005, "shares": [[3, 0.6428, 0.991]]},
        "screening": {
            "reported": ["over-exposed"],
            "patches": {"patches": 24, "almost_empty": 3, "skipped": 2, "over_exposed": 5, "low_contrast": 0},
        },
    }
    run = _run_dir(tmp_path / "run", rows, events, checks=checks)
    with naming(CliNaming()):
        text = run_report(run)
    lines = text.splitlines()
    assert lines[1] == "status: stopped at the SoftNCut plateau, epoch 3 of 4"
    assert (
        lines[2] == "final losses (epoch 3): SoftNCut 0.9000, reconstruction 50, total 0.7 (lr 0.0005, base lr 0.001)"
    )
    assert lines[3] == "best.pt: epoch 3 (total 0.7)"
    assert lines[4].startswith("loss balance (epoch 3): NCut has 64% of the weighted loss and 99% of the gradient")
    assert lines[5] == "patches: 24 sampled, 3 almost empty (2 replaced), 5 over-exposed, 0 with low contrast"
    assert lines[6] == "events (5):" and lines[8].startswith("  epoch 1   step 2      explosion  the reconstruction")
    advice = lines[lines.index("advice:") + 1 :]
    assert advice[0].startswith("  - avoid empty, almost-empty and over-exposed images")
    assert "first by a factor of two, then ten (--lr 0.0001)" in advice[1]
    assert (
        advice[2]
        == "  - NCut takes over: raise the reconstruction weight (--rec-weight 0.01), or train with --auto-balance"
    )
    assert "switch to --rec-loss bce with --rec-weight 0.5" in advice[3]
    assert advice[4] == "  - the SoftNCut loss reached a plateau at epoch 3: best.pt is the model to use"
    assert len(advice) == 5

    python = run_report(run).splitlines()  # the Python API names settings as Python does
    assert python[: lines.index("advice:")] == lines[: lines.index("advice:")]
    python_advice = python[lines.index("advice:") + 1 :]
    assert "first by a factor of two, then ten (lr=0.0001)" in python_advice[1]
    assert python_advice[2] == (
        "  - NCut takes over: raise the reconstruction weight (rec_weight=0.01), or train with auto_balance=True"
    )
    assert "switch to rec_loss='bce' with rec_weight=0.5" in python_advice[3]

    # auto-balance raised the weight, and a plateau after it: the last plateau is the one to report
    events[2] = Event(
        3,
        6,
        "balance.auto_balanced",
        "NCut takes over",
        "--auto-balance: rec-weight 0.005 -> 0.02",
        {"rec_weight": 0.02},
    )
    events[4] = Event(3, 6, "plateau.rearmed", "the SoftNCut loss stopped improving at epoch 3", "watching")
    later = Event(4, 8, "plateau.trained_on", "the SoftNCut loss stopped improving at epoch 4", "none")
    write_events([*events, later], run / "events.csv")
    with naming(CliNaming()):
        lines = run_report(run).splitlines()
    assert lines[1] == "status: finished, 3 of 4 epochs" or lines[1].startswith("status: interrupted")
    advice = lines[lines.index("advice:") + 1 :]
    assert advice[2] == (
        "  - NCut took over and --auto-balance raised the reconstruction weight to 0.02; if the segmentation still "
        "separates large bright and dim regions, raise it further"
    )
    assert advice[4] == "  - the SoftNCut loss reached a plateau at epoch 4: best.pt is the model to use"


def test_report_of_a_fine_tuning_whose_pretrained_start_may_not_fit(tmp_path: Path):
    rows = [(epoch, 0.3, 100.0, 0.8, 1e-4, 1e-3, 1.0) for epoch in range(1, 7)]
    events = [
        Event(6, 24, "plateau.stopped", "the SoftNCut loss stopped improving at epoch 6", "stopped training"),
        Event(
            6,
            24,
            "balance.poor_fit",
            "the pretrained start may not fit these images: the nuclei class covers 41% of ...",
            "compare with a model trained from scratch on the same images (wnet-zoo train): ...",
            {"covered": 0.41, "foreground": 0.13},
        ),
    ]
    segmentation = {"epoch": 6, "foreground": 0.13, "largest": 0.2, "covered": 0.41}
    checks = {"balance": {"rec_weight": 0.005, "shares": [[6, 0.5, 0.6]], "segmentation": segmentation}}
    run = _run_dir(tmp_path / "run", rows, events, epochs=12, checks=checks)
    with naming(CliNaming()):
        lines = run_report(run).splitlines()
    assert lines[5] == (
        "segmentation at the plateau (epoch 6): the nuclei class covers 13% of the centre patches, 41% of their bright "
        "class"
    )
    advice = lines[lines.index("advice:") + 1 :]
    assert advice == [
        "  - the pretrained start may not fit these images: compare with a model trained from scratch (wnet-zoo "
        "train on the same images)",
        "  - the SoftNCut loss reached a plateau at epoch 6: best.pt is the model to use",
    ]
    lines = run_report(run).splitlines()
    assert "(train() on the same images)" in lines[lines.index("advice:") + 1]
    segmentation["covered"] = float("nan")  # no patch could be split
    torch.save({"model": {"w": torch.zeros(2)}, "checks": checks}, run / "last.pt")
    assert run_report(run).splitlines()[5] == (
        "segmentation at the plateau (epoch 6): the nuclei class covers 13% of the centre patches"
    )


def test_report_of_an_events_file_from_before_event_codes(tmp_path: Path, capsys):
    """An events.csv without the code and values columns reads: each event keeps its kind; the advice that needs
    its numbers is left out."""
    rows = [(e, 0.9, 50.0, 0.7, 1e-3, 1e-3, 1.0) for e in (1, 2, 3)]
    run = _run_dir(tmp_path / "run", rows, [])
    checks = {  # a last.pt from before the checks kept their state under their names
        "events": [{"epoch": 1, "step": 2, "kind": "explosion", "detail": "the loss is not finite", "action": "..."}],
        "reported": ["over-exposed"],
        "patches": {"patches": 24, "almost_empty": 3, "skipped": 2, "over_exposed": 5, "low_contrast": 0},
        "balance": {"rec_weight": 0.005, "shares": [[3, 0.6428, 0.991]]},
    }
    torch.save({"model": {"w": torch.zeros(2)}, "checks": checks}, run / "last.pt")
    (run / "events.csv").write_text(
        "epoch,step,kind,detail,action\r\n"
        "0,0,screening,a.tif: over-exposed (2.00% of voxels at the dtype maximum),avoid ...; training goes on\r\n"
        '1,2,explosion,the loss is not finite,"restored the last good weights (the initial ones), lr 0.001 -> 5e-4"\r\n'
        "3,6,balance,NCut takes over (97% of the loss),raise the reconstruction weight: --rec-weight 0.01\r\n"
        "3,6,plateau,the SoftNCut loss stopped improving at epoch 3,stopped training; best.pt holds the lowest\r\n"
    )
    capsys.readouterr()
    assert main(["report", str(run)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    assert lines[1] == "status: interrupted or still running: 3 of 4 epochs"  # "stopped" was in the words only
    assert lines[2].startswith("final losses (epoch 3)")
    assert lines[5] == "patches: 24 sampled, 3 almost empty (2 replaced), 5 over-exposed, 0 with low contrast"
    assert lines[6] == "events (4):"
    takeover = "NCut takes over (97% of the loss) -> raise the reconstruction weight: --rec-weight 0.01"
    assert lines[9] == f"  epoch 3   step 6      balance    {takeover}"
    advice = lines[lines.index("advice:") + 1 :]
    assert advice[0].startswith("  - avoid empty, almost-empty and over-exposed images")
    assert "first by a factor of two, then ten (--lr 0.0001)" in advice[1]
    assert advice[2] == "  - the SoftNCut loss reached a plateau at epoch 3: best.pt is the model to use"
    assert len(advice) == 3


def test_report_statuses_and_plain_runs(tmp_path: Path):
    rows = [(e, 0.9, 50.0, 0.7, 1e-3, 1e-3, 1.0) for e in (1, 2)]
    stopped = [Event(1, 3, "explosion.gave_up", "the loss is not finite", "stopped: 3 in a row", {"in_a_row": 3})]
    text = run_report(_run_dir(tmp_path / "diverged", rows[:1], stopped))
    assert "status: stopped by the explosion guard in epoch 1 of 4" in text and "lower the learning rate" in text
    text = run_report(_run_dir(tmp_path / "short", rows, [], epochs=4))
    assert "status: interrupted or still running: 2 of 4 epochs" in text and "advice: none" in text
    done = _run_dir(tmp_path / "done", rows, [], epochs=2)
    text = run_report(done)
    assert "status: finished, 2 of 2 epochs" in text and "events: none, every check stayed quiet" in text
    assert f"train longer (resume({str(done)!r}, epochs=4))" in text
    with naming(CliNaming()):
        assert f"train longer (wnet-zoo train --resume {done} --epochs 4)" in run_report(done)


def test_report_command(tmp_path: Path, small_tiff: Path, capsys):
    run = tmp_path / "run"
    tiny = ["--channels", "4,8,16,32", "--patch", "16,24,24", "--samples-per-epoch", "2", "--batch", "2"]
    assert main(["train", str(small_tiff), "--out", str(run), "--epochs", "2", *tiny]) == 0
    with (run / "metrics.csv").open() as handle:
        last = list(csv.DictReader(handle))[-1]
    capsys.readouterr()
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"final losses (epoch 2): SoftNCut {float(last['ncut']):.4f}" in out
    assert "patches: 4 sampled, 0 almost empty (0 replaced)" in out and "loss balance (epoch 2): NCut has" in out
    assert main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"Error: {tmp_path}: not a run directory")


def _metrics_text(rows: list[tuple]) -> str:
    return "".join(",".join(map(str, row)) + "\r\n" for row in [COLUMNS, *rows])


def test_report_of_a_metrics_file_cut_short(tmp_path: Path, capsys):
    rows = [(e, 0.9 - e / 100, 50.0, 0.7, 1e-3, 1e-3, 1.0) for e in (1, 2, 3)]
    run = _run_dir(tmp_path / "run", rows, [])
    whole = (run / "metrics.csv").read_text()
    (run / "metrics.csv").write_text(whole + "4,0.86,4")  # a copy cut short in the middle of the last row
    lines = run_report(run).splitlines()
    assert lines[1] == "metrics.csv: the last row is incomplete (cut short); reporting 3 whole epochs"
    assert lines[2] == "status: interrupted or still running: 3 of 4 epochs"
    assert lines[3].startswith("final losses (epoch 3): SoftNCut 0.8700")

    # a row with empty fields inside the file, and the last row cut short
    (run / "metrics.csv").write_text(_metrics_text([rows[0], (2, "", "", "", "", "", ""), rows[2]]) + "4,0.86,")
    text = run_report(run)
    assert "metrics.csv: line 3 (empty fields) and the last row (cut short) are incomplete; reporting 2 whole" in text
    assert main(["report", str(run)]) == 0 and "status: interrupted or still running: 2 of 4 epochs" in text

    for damaged in (
        "",
        "epoch,ncut,rec,to",
        _metrics_text([]) + "1,0.9,50",
        _metrics_text([(1, "", "", "", "", "", "")]),
    ):
        (run / "metrics.csv").write_text(damaged)
        capsys.readouterr()
        assert main(["report", str(run)]) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and error[0].startswith(f"Error: {run / 'metrics.csv'}: no whole row"), error


def test_report_of_an_events_file_cut_short(tmp_path: Path):
    rows = [(e, 0.9, 50.0, 0.7, 1e-3, 1e-3, 1.0) for e in (1, 2)]
    screening = Event(0, 0, "screening.volume", "a.tif: over-exposed", "avoid ...")
    stopped = Event(1, 3, "explosion.gave_up", "the loss is not finite", "stopped")
    run = _run_dir(tmp_path / "run", rows, [screening, stopped])
    whole = (run / "events.csv").read_text()
    for cut in (whole[: whole.rindex("not finite")], whole[: whole.rindex("explosion") + 4]):
        (run / "events.csv").write_text(cut)
        lines = run_report(run).splitlines()
        assert lines[1] == "events.csv: the last row is incomplete (cut short); reporting 1 whole event"
        assert "events (1):" in lines and "explosion" not in "\n".join(lines[2:])


def test_report_of_a_config_file_cut_short(tmp_path: Path, capsys):
    rows = [(e, 0.9, 50.0, 0.7, 1e-3, 1e-3, 1.0) for e in (1, 2)]
    run = _run_dir(tmp_path / "run", rows, [Event(1, 3, "explosion.rollback", "the loss is not finite", "restored")])
    (run / "config.yaml").write_text("rec-weight: 0.005\nepochs:")
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "status: finished, 2 of 2 epochs" in out and "then ten (--lr 0.0001)" in out

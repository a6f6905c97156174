"""Outputs whole or not at all: part files, their sweeping after a killed run, SIGTERM, folders checked first."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wnet_zoo.cli import main
from wnet_zoo.errors import Terminated, UserError
from wnet_zoo.io.atomic import atomic_path, check_can_create, part_path, sweep_stale_parts

DEAD_PID = 4_194_305  # above Linux's largest pid (2^22): never a running process


def test_atomic_path_publishes_whole_files_and_removes_parts_on_any_interruption(tmp_path: Path):
    target = tmp_path / "result.tif"
    with atomic_path(target) as part:
        assert (
            part == part_path(target)
            and part.name == f".result.tif.{socket.gethostname().split('.')[0]}.{os.getpid()}.part"
        )
        part.write_text("whole")
    assert target.read_text() == "whole" and not part.exists()
    for interruption in (KeyboardInterrupt(), Terminated(), ValueError("bug")):
        with pytest.raises(type(interruption)), atomic_path(target) as part:
            part.write_text("half")
            raise interruption
        assert not part.exists() and target.read_text() == "whole"


def test_stale_parts_of_dead_processes_are_swept_and_live_ones_kept(tmp_path: Path):
    here = socket.gethostname().split(".")[0]
    dead = tmp_path / f".a_mask.tif.{here}.{DEAD_PID}.part"
    dead.write_bytes(b"x" * 100)
    dead_folder = tmp_path / f".export.k2j3.{here}.{DEAD_PID}.part"
    (dead_folder / "inner").mkdir(parents=True)
    live = tmp_path / f".b_mask.tif.{here}.{os.getppid()}.part"
    live.write_bytes(b"y")
    elsewhere = tmp_path / f".c_mask.tif.node-17.{DEAD_PID}.part"  # another machine's job on a shared folder
    elsewhere.write_bytes(b"z")
    other = tmp_path / ".notes.part"
    other.write_text("not ours")
    assert sorted(sweep_stale_parts(tmp_path)) == sorted([dead, dead_folder])
    assert live.exists() and elsewhere.exists() and other.exists() and not dead.exists() and not dead_folder.exists()


def test_predict_sweeps_the_parts_a_killed_run_left_in_out(tmp_path: Path, tiny_onnx: Path, small_tiff: Path):
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f".crop_mask.tif.{socket.gethostname().split('.')[0]}.{DEAD_PID}.part"
    stale.write_bytes(b"\0" * 4096)
    assert main(["predict", str(tiny_onnx), str(small_tiff), "--out", str(out), "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["crop_instances.tif", "crop_labels.csv", "crop_mask.tif"]


@pytest.mark.parametrize("blocker", ["file", "proc"])
@pytest.mark.parametrize("command", ["predict", "train", "export", "demo"])
def test_an_out_that_cannot_be_created_is_refused_before_any_work(
    tmp_path: Path, tiny_onnx: Path, small_tiff: Path, capsys, command: str, blocker: str
):
    afile = tmp_path / "afile.txt"
    afile.write_text("a file")
    out = afile / "sub" if blocker == "file" else Path("/proc/wnet-zoo-test/sub")
    args = {
        "predict": ["predict", str(tiny_onnx), str(small_tiff)],
        "train": ["train", str(small_tiff), "--channels", "4,8,16,32", "--epochs", "1"],
        "export": ["export", str(tmp_path / "no-such-run")],  # the folder is checked before the weights are read
        "demo": ["demo"],
    }[command]
    started = time.perf_counter()
    assert main([*args, "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {out}: cannot be created") and "--out" in lines[0]
    assert time.perf_counter() - started < 5  # refused up front, not after training or predicting
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["afile.txt", small_tiff.name])


def test_check_can_create_leaves_nothing_behind(tmp_path: Path, monkeypatch):
    check_can_create(tmp_path / "a" / "b")
    check_can_create(tmp_path)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("")
    with pytest.raises(UserError, match="is a file or a broken link, not a folder"):
        check_can_create(tmp_path / "f")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UserError, match="broken link"):
        check_can_create(tmp_path / "dangling")
    (tmp_path / "ro").mkdir(mode=0o500)
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as another user would find it (CI is root)
    with pytest.raises(UserError, match="no permission to write there"):
        check_can_create(tmp_path / "ro")


def test_a_failed_rename_leaves_no_part(tmp_path: Path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "inside").write_text("a folder where the file should go")
    with pytest.raises(OSError), atomic_path(tmp_path / "taken") as part:
        part.write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no part left beside it


@pytest.mark.slow
def test_sigterm_is_handled_like_ctrl_c(tmp_path: Path, small_tiff: Path):
    """timeout, SLURM and docker stop send SIGTERM: one line, exit code 143, no part files left."""
    run = tmp_path / "run"
    command = [sys.executable, "-m", "wnet_zoo.cli", "train", str(small_tiff), "--out", str(run)]
    command += ["--channels", "4,8,16,32", "--patch", "16,24,24", "--epochs", "200", "--no-stop-at-plateau"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "last.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert err.strip().splitlines()[-1] == "Terminated." and "Traceback" not in err
    assert not [p.name for p in run.iterdir() if p.name.endswith((".part", ".tmp"))]

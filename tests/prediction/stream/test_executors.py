"""Dask distributed on a real LocalCluster on 127.0.0.1: same results as one process, a killed worker costs nothing."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from distributed import Client, LocalCluster

from wnet_zoo.cli import main
from wnet_zoo.errors import UserError
from wnet_zoo.prediction.files import predict_files
from wnet_zoo.prediction.settings import OUTPUTS as ALL_OUTPUTS
from wnet_zoo.prediction.stream.executors import kept_environment, open_executor
from wnet_zoo.prediction.stream.options import StreamOptions
from wnet_zoo.prediction.stream.streaming import work_folder
from wnet_zoo.prediction.stream.worker_imports import MODULES, ImportsFirst, imports_first

from closeness import assert_close

SMALL = StreamOptions(block=32, label_block=32, chunk=16, instance_halo=16)
OUTPUTS = ("probabilities", "instances")
SETTINGS = {"device": "cpu", "tile": 16, "outputs": OUTPUTS, "fmt": "zarr", "stream_options": SMALL}


@pytest.fixture(scope="module")
def image(example, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("image") / "crop.zarr"
    zarr.create_array(str(path), data=example[20:84, 8:80, 16:80].astype(np.uint16), chunks=(32, 32, 32))
    return path


@pytest.fixture(scope="module")
def one_process(tiny_onnx, image, tmp_path_factory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("local")
    predict_files(tiny_onnx, [image], out, threads=2, report=lambda line: None, **SETTINGS)
    return _read(out)


def _read(out: Path) -> dict[str, np.ndarray]:
    return {name: zarr.open_array(str(out / f"crop_{name}.zarr"), mode="r")[...] for name in OUTPUTS}


def _assert_same(ours: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> None:
    assert_close(ours["probabilities"], reference["probabilities"], rel=1e-6, what="probabilities")
    np.testing.assert_array_equal(ours["instances"], reference["instances"])  # numbered in block order both times
    assert reference["instances"].max() > 20


@pytest.mark.slow
def test_local_cluster_option_equals_one_process(tiny_onnx, image, one_process, tmp_path):
    lines: list[str] = []
    environment = dict(os.environ)
    predict_files(tiny_onnx, [image], tmp_path, scheduler="local:2", report=lines.append, **SETTINGS)
    assert dict(os.environ) == environment  # Dask's OMP_NUM_THREADS=1 and the like do not leak into the caller
    assert "streaming blocks on Dask scheduler tcp://127.0.0.1:" in lines[1] and "(2 workers)" in lines[1]
    _assert_same(_read(tmp_path), one_process)


@pytest.mark.slow
def test_a_killed_worker_costs_only_its_tasks(tiny_onnx, image, one_process, tmp_path):
    with (
        kept_environment(),
        LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        victim = next(iter(client.run(os.getpid).values()))
        done = work_folder(tmp_path, "crop") / "done" / "probabilities"
        killed: list[int] = []

        def kill_when_under_way() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                finished = len(list(done.glob("*.npz"))) if done.is_dir() else 0
                if finished >= 2:
                    os.kill(victim, signal.SIGKILL)
                    killed.append(finished)
                    return
                time.sleep(0.01)

        killer = threading.Thread(target=kill_when_under_way)
        killer.start()
        predict_files(
            tiny_onnx, [image], tmp_path, scheduler=cluster.scheduler_address, report=lambda line: None, **SETTINGS
        )
        killer.join()
    assert killed and killed[0] < 12  # the worker died while probability blocks were still running
    _assert_same(_read(tmp_path), one_process)


@pytest.mark.slow
def test_workers_import_the_block_work_before_their_first_task(tiny_onnx, image, tmp_path):
    """Two threads of a worker importing at once could fail (see worker_imports): running workers import when the
    plugin is registered, a worker that restarts meanwhile before any task, the workers import nothing else outside
    the standard library during a run, and the plugins are unregistered afterwards."""

    def loaded() -> set[str]:  # defined here, Dask sends it by value: the workers do not import this test module
        return set(sys.modules)

    settings = {**SETTINGS, "outputs": ALL_OUTPUTS, "report": lambda line: None}
    with (
        kept_environment(),
        LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        fresh = client.run(loaded)
        with imports_first(client):
            registered = client.run(loaded)
            client.restart_workers(list(client.scheduler_info()["workers"]))
            at_start = client.run(loaded)
            predict_files(tiny_onnx, [image], tmp_path, scheduler=cluster.scheduler_address, **settings)
            after = client.run(loaded)
        left = client.run_on_scheduler(_wnet_zoo_plugins)
    assert not any(set(MODULES) <= names for names in fresh.values())  # else this test would show nothing
    assert all(set(MODULES) <= names for names in registered.values())
    assert len(at_start) == 2 and all(set(MODULES) <= names for names in at_start.values())
    assert not any("test_executors" in name for names in after.values() for name in names)
    imported = {name for address, names in after.items() for name in names - at_start[address]}
    assert not {name for name in imported if name.partition(".")[0] not in sys.stdlib_module_names}
    assert not left


def test_a_plugin_that_fails_on_a_worker_raises_its_error_and_is_not_left_registered(monkeypatch):
    def missing(self, worker) -> None:
        raise UserError("onnxruntime is not installed")

    monkeypatch.setattr(ImportsFirst, "setup", missing)  # workers in this process: they run this class
    with (
        kept_environment(),
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        with pytest.raises(UserError, match="onnxruntime is not installed"), imports_first(client):
            pass
        assert not client.run_on_scheduler(_wnet_zoo_plugins)


def _wnet_zoo_plugins(dask_scheduler) -> list[str]:
    """The worker plugins of wnet-zoo the scheduler holds (sent by name: the scheduler runs in this process)."""
    return [name for name in dask_scheduler.worker_plugins if name.startswith("wnet-zoo")]


@pytest.mark.parametrize(
    ("scheduler", "hint"),
    [
        ("foo", ""),
        ("localhost:8786", "; did you mean tcp://localhost:8786?"),
        ("tcp://127.0.0.1", ""),
        ("tcp://:8786", ""),
        ("tcp://127.0.0.1:port", ""),
        ("http://127.0.0.1:8786", ""),
        ("local:", ""),
    ],
)
def test_a_malformed_scheduler_is_refused_at_once(scheduler, hint):
    expected = (
        f"scheduler={scheduler!r}: give local:N (N local workers, e.g. local:2) or a Dask scheduler's address, "
        f"tcp://HOST:PORT (or tls://, ws://, wss://){hint}"
    )
    with pytest.raises(UserError) as raised, open_executor(scheduler):
        pass
    assert str(raised.value) == expected


def test_predict_refuses_a_malformed_scheduler_and_negative_threads(tiny_onnx, image, tmp_path, capsys):
    with pytest.raises(UserError, match=r"^scheduler='foo': give local:N"):
        predict_files(tiny_onnx, [image], tmp_path / "out", scheduler="foo", report=lambda line: None, **SETTINGS)
    assert not (tmp_path / "out").exists()

    args = ["predict", str(tiny_onnx), str(image), "--out", str(tmp_path / "out")]
    assert main([*args, "--scheduler", "foo"]) == 2
    assert capsys.readouterr().err.startswith("Error: --scheduler foo: give local:N")
    assert main([*args, "--threads", "-3"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) <= 2 and error[0].startswith("Error: Invalid value for '--threads': -3 is not in the range x>=0")
    assert not (tmp_path / "out").exists()
    assert main(["predict", "--help"]) == 0
    help_text = "--threads INTEGER RANGE CPU threads of ONNX Runtime and of the nucleus stages. Default (and 0): all"
    assert help_text in " ".join(capsys.readouterr().out.split())

"""``wnet-zoo upload --dry-run``: the zoo's checks on a real exported package and on copies with one flaw each."""

from __future__ import annotations

import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from tiny_runs import train_tiny

from wnet_zoo.cli import main
from wnet_zoo.export.rdf import file_entries, sha256
from wnet_zoo.zoo.consumers import CONSUMERS, ENVIRONMENTS_VARIABLE, REQUIREMENTS_FILE
from wnet_zoo.zoo.preflight import preflight

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")
# bioimageiobot: a GitHub user bioimageio.spec knows, so that nothing here needs the network
PEOPLE = ["--author", "Jane Doe;bioimageiobot;EPFL", "--maintainer", "Jane Doe;bioimageiobot"]


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained for one epoch, exported with an author and a maintainer."""
    folder = tmp_path_factory.mktemp("zoo")
    train_tiny(folder, bf16=False)
    assert main(["export", str(folder / "run"), "--out", str(folder / "export"), *PEOPLE]) == 0
    (zipped,) = (folder / "export").glob("*.bioimageio.zip")
    return zipped


@pytest.fixture(autouse=True)
def no_consumer_environments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The consumer environments this machine may have built stay out of these tests (one test makes its own)."""
    monkeypatch.setenv(ENVIRONMENTS_VARIABLE, str(tmp_path / "no-consumer-environments"))


def _this_python_as(names: tuple[str, ...], envs: Path) -> None:
    """Environments for the consumers ``names`` whose Python is this one (it has onnxruntime and
    bioimageio.core 0.11), as if built from their requirements."""
    for consumer in CONSUMERS:
        if consumer.name in names:
            python = envs / consumer.folder_name / "bin" / "python"
            python.parent.mkdir(parents=True)
            python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
            python.chmod(0o755)
            (envs / consumer.folder_name / REQUIREMENTS_FILE).write_text("\n".join(consumer.requirements) + "\n")


def _flawed(package: Path, folder: Path, edit: Callable[[Path, dict], None], rehash: bool = True) -> Path:
    """An unpacked copy of ``package`` with ``edit(folder, rdf)`` applied, its SHA-256 values brought up to date
    (unless ``rehash`` is False), so that each case holds the one flaw it is about."""
    zipfile.ZipFile(package).extractall(folder)
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    edit(folder, rdf)
    if rehash:
        for entry in file_entries(rdf):
            entry["sha256"] = sha256(folder / entry["source"])
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    return folder


def _failed(folder: Path, run_weights: bool = False) -> set[str]:
    return {check.name for check in preflight(folder, run_weights=run_weights).checks if not check.passed}


def test_a_good_package_passes_every_check(package: Path, capsys):
    assert main(["upload", str(package), "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    verdicts = [line.split()[:2] for line in lines[1:-2]]
    assert verdicts == [
        ["PASS", name]
        for name in ("files", "format", "maintainers", "authors", "cover", "documentation", "reproducibility")
    ]
    assert "onnx, pytorch_state_dict reproduce the test output within 0.001" in lines[-3]
    assert "consumers without an environment here (bioimageio.core 0.11, " in lines[-2]
    assert lines[-1] == "every check passed"


def test_consumers_run_the_package_where_their_environments_exist(package: Path, tmp_path: Path):
    envs = tmp_path / "envs"
    _this_python_as(("bioimageio.core 0.11", "onnxruntime 1.15.0"), envs)
    (consumers,) = [check for check in preflight(package, consumer_envs=envs).checks if check.name == "consumers"]
    assert consumers.passed and consumers.found == "bioimageio.core 0.11, onnxruntime 1.15.0 run it within 0.001"

    def edit(folder: Path, rdf: dict) -> None:
        expected = np.load(folder / "test_output.npy")
        np.save(folder / "test_output.npy", np.clip(expected * 1.05 + 0.01, 0, 1))
        # ONNX weights alone: each consumer fails once (bioimageio.core's run per weight format costs ~10 s)
        del rdf["weights"]["pytorch_state_dict"], rdf["weights"]["onnx"]["parent"]

    flawed = _flawed(package, tmp_path / "flawed", edit)
    (consumers,) = [check for check in preflight(flawed, consumer_envs=envs).checks if check.name == "consumers"]
    failure = "2 failed, first: bioimageio.core 0.11 (onnx): Reproduce test outputs from test inputs (onnx)"
    assert not consumers.passed and consumers.found.startswith(failure)


def _no_maintainer(folder: Path, rdf: dict) -> None:
    del rdf["maintainers"]


def _placeholder_author(folder: Path, rdf: dict) -> None:
    rdf["authors"] = [{"name": "wnet-zoo developers", "github_user": "bioimageiobot"}]


def _wide_cover(folder: Path, rdf: dict) -> None:
    Image.new("RGB", (300, 100)).save(folder / "cover.png")


def _heavy_cover(folder: Path, rdf: dict) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (400, 800, 3), dtype=np.uint8)  # noise: PNG cannot shrink it
    Image.fromarray(noise).save(folder / "cover.png")


def _no_validation_section(folder: Path, rdf: dict) -> None:
    text = (folder / "README.md").read_text()
    (folder / "README.md").write_text(text.replace("## Validation", "## Checks"))


@pytest.mark.parametrize(
    ("edit", "failed"),
    [
        (_no_maintainer, {"maintainers"}),  # an author with a GitHub user keeps bioimageio.spec quiet
        (_placeholder_author, {"authors"}),
        (_wide_cover, {"cover"}),
        (_heavy_cover, {"cover"}),
        (_no_validation_section, {"documentation"}),
    ],
)
def test_each_flaw_fails_its_check_alone(package: Path, tmp_path: Path, edit, failed: set[str]):
    assert _failed(_flawed(package, tmp_path, edit)) == failed


def test_no_maintainer_and_no_github_user_fails_the_format_too(package: Path, tmp_path: Path):
    def edit(folder: Path, rdf: dict) -> None:
        del rdf["maintainers"]
        rdf["authors"] = [{"name": "Jane Doe"}]

    assert _failed(_flawed(package, tmp_path, edit)) == {"maintainers", "format"}


def test_a_file_changed_after_export_fails(package: Path, tmp_path: Path):
    def edit(folder: Path, rdf: dict) -> None:
        architecture = folder / "wnet3d_model.py"
        architecture.write_text(architecture.read_text() + "\n# edited\n")

    assert _failed(_flawed(package, tmp_path, edit, rehash=False)) == {"files"}


def test_weights_that_do_not_reproduce_the_test_output_fail(package: Path, tmp_path: Path):
    def edit(folder: Path, rdf: dict) -> None:
        expected = np.load(folder / "test_output.npy")
        np.save(folder / "test_output.npy", np.clip(expected * 1.05 + 0.01, 0, 1))

    assert _failed(_flawed(package, tmp_path, edit), run_weights=True) == {"reproducibility"}


def test_a_package_that_loosens_its_test_tolerance_fails(package: Path, tmp_path: Path):
    def edit(folder: Path, rdf: dict) -> None:
        tolerance = {"relative_tolerance": 0.01, "absolute_tolerance": 0.01}
        rdf["config"]["bioimageio"] = {"reproducibility_tolerance": [tolerance]}

    assert _failed(_flawed(package, tmp_path, edit), run_weights=True) == {"reproducibility"}


def test_a_damaged_zip_is_one_line(package: Path, tmp_path: Path, capsys):
    data = bytearray(package.read_bytes())
    start = data.find(b"PK\x03\x04", 100)  # the second member's header: damage the bytes after it
    data[start + 200 : start + 400] = bytes(200)
    (tmp_path / "damaged.zip").write_bytes(bytes(data))
    assert main(["upload", str(tmp_path / "damaged.zip"), "--dry-run"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "not a readable zip file" in lines[0]


def test_upload_refuses_a_package_without_maintainer_in_one_line(package: Path, tmp_path: Path, capsys):
    folder = _flawed(package, tmp_path, _no_maintainer)
    assert main(["upload", str(folder), "--dry-run", "--skip-weights"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  maintainers    none; export again with --maintainer 'NAME;GITHUB_USER'" in out
    assert main(["upload", str(folder)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"Error: {folder} has no maintainer, which bioimage.io refuses; "
        "export again with --maintainer 'NAME;GITHUB_USER'"
    ]


def test_not_a_package_is_one_line(tmp_path: Path, capsys):
    (tmp_path / "notes.zip").write_bytes(b"not a zip")
    assert main(["upload", str(tmp_path / "notes.zip"), "--dry-run"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "no such bioimage.io package" in lines[0]

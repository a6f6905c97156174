"""``wnet-zoo export``: real ONNX files run by onnxruntime, real packages tested by bioimageio.core."""

from __future__ import annotations

import ast
import importlib.metadata
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tifffile
import torch
import yaml
from PIL import Image
from tiny_runs import train_tiny

from wnet_zoo.cli import main
from wnet_zoo.export.exporter import ExportResult, export_model
from wnet_zoo.export.model_card import REQUIRED, default_card_path, read_card
from wnet_zoo.io.example import example_volume
from wnet_zoo.io.intensity import remap
from wnet_zoo.model.checkpoints import load_weights
from wnet_zoo.model.weight_files import DECODER_PLANES, from_byte_planes
from wnet_zoo.prediction.metadata import read_metadata

from closeness import assert_close

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "wnet3d-nuclei.bioimageio.zip"
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")  # TorchScript loads


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny model trained for one epoch (run folder) and the same weights as a bare state dict. It compresses
    and smooths its input (as training chooses for nuclei of widely varying brightness and for noisy stacks), so
    every export form must carry both steps."""
    folder = tmp_path_factory.mktemp("weights")
    # every input transform on, so that each weight format is checked with them
    train_tiny(folder, lr=1e-2, input_smoothing=1.0, input_log=2.0, input_background=3)
    torch.save(torch.load(folder / "run" / "best.pt", weights_only=True)["model"], folder / "bare.pth")
    return {"run": folder / "run", "bare": folder / "bare.pth", "tiff": folder / "crop.tif"}


@pytest.fixture(scope="module")
def exported(weights: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    torch.set_num_threads(2)
    return export_model(weights["run"], tmp_path_factory.mktemp("export") / "out", torchscript=True)


def _package(result: ExportResult) -> zipfile.ZipFile:
    assert result.package is not None
    return zipfile.ZipFile(result.package)


def _npy(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    return np.load(io.BytesIO(archive.read(name)))


def test_export_writes_three_files_and_onnx_metadata(exported: ExportResult, weights: dict[str, Path]):
    assert sorted(p.name for p in exported.out.iterdir()) == sorted([PACKAGE, "wnet3d.onnx", "wnet3d.torchscript.pt"])
    assert not [p for p in exported.out.parent.iterdir() if p.name.startswith(".")]  # no temporary folders left
    checkpoint = torch.load(weights["run"] / "best.pt", weights_only=True)
    props = {p.key: p.value for p in onnx.load(str(exported.onnx)).metadata_props}
    assert props["wnet_zoo.num_classes"] == "2"
    assert props["wnet_zoo.normalization"] == "minmax_0_1"
    assert props["wnet_zoo.spatial_multiple"] == "8"
    assert props["wnet_zoo.foreground_class"] == str(checkpoint["foreground_class"])
    assert props["wnet_zoo.train_patch"] == "16,24,24"
    assert props["wnet_zoo.version"] == importlib.metadata.version("wnet-zoo")
    assert read_metadata(exported.onnx).train_patch == (16, 24, 24)
    assert props["wnet_zoo.input_sigma"] == "1.0,1.0,1.0" and read_metadata(exported.onnx).input_sigma == (1.0,) * 3
    assert props["wnet_zoo.input_log"] == "2.0" and read_metadata(exported.onnx).input_log == 2.0
    assert props["wnet_zoo.input_background"] == "3,3,3" and read_metadata(exported.onnx).input_background == (3,) * 3
    from wnet_zoo.prediction.predictor import Predictor

    assert (
        Predictor(exported.onnx, device="cpu")
        .describe()
        .endswith(
            "the model compresses its input's intensities (log, offset 2), subtracts the result's background "
            "(box radius 3,3,3 voxels) and smooths the result (sigma 1,1,1 voxels)"
        )
    )
    parity = exported.parity
    assert parity.shape == (1, 1, 40, 48, 56)
    assert parity.ort_vs_torch < 1e-4 and parity.ort_vs_float64 < 1e-4 and parity.torch_vs_float64 < 1e-4
    assert parity.torchscript_vs_torch is not None and parity.torchscript_vs_torch < 1e-4
    # JDLL (deepImageJ, Icy) runs ONNX Runtime 1.13.1 by default, which reads opsets up to 17
    graph = onnx.load(str(exported.onnx))
    assert {o.domain: o.version for o in graph.opset_import}[""] <= 17 and graph.ir_version <= 8


def test_onnx_file_runs_in_bare_onnxruntime_with_dynamic_axes(exported: ExportResult, weights: dict[str, Path]):
    session = ort.InferenceSession(str(exported.onnx), providers=["CPUExecutionProvider"])
    (raw,) = session.get_inputs()
    assert raw.name == "raw" and raw.type == "tensor(float)"
    assert not isinstance(raw.shape[0], int) and not any(isinstance(d, int) for d in raw.shape[2:])
    props = session.get_modelmeta().custom_metadata_map
    volume = tifffile.imread(weights["tiff"]).astype(np.float32)[:24, :16, :32]
    x = remap(volume)[None, None].repeat(2, axis=0)  # batch of 2, non-cubic, as the metadata says
    (probabilities,) = session.run(None, {"raw": x / 100})  # the graph takes 0..1, the model 0..100
    assert probabilities.shape == (2, int(props["wnet_zoo.num_classes"]), 24, 16, 32)
    model = load_weights(weights["run"]).build_model().eval()
    with torch.no_grad():
        expected = model.encoder(torch.from_numpy(x)).numpy()
    assert np.abs(probabilities - expected).max() < 1e-4
    scripted = torch.jit.load(str(exported.torchscript))
    with torch.no_grad():
        assert np.abs(scripted(torch.from_numpy(x / 100)).numpy() - expected).max() < 1e-4


def test_package_contents(exported: ExportResult, weights: dict[str, Path]):
    archive = _package(exported)
    names = set(archive.namelist())
    assert {
        "rdf.yaml",
        "README.md",
        "cover.png",
        "test_input.npy",
        "test_output.npy",
        "sample_input.tif",
        "sample_output.tif",
        "wnet3d.onnx",
        "wnet3d.torchscript.pt",
        "wnet3d_encoder_state_dict.pt",
        "wnet3d_decoder.pt",
        "wnet3d_model.py",
    } <= names
    rdf = yaml.safe_load(archive.read("rdf.yaml"))
    assert rdf["format_version"].startswith("0.5.") and rdf["type"] == "model"
    assert [c["doi"] for c in rdf["cite"]] == ["10.7554/eLife.99848", "10.48550/arXiv.1711.08506"]
    assert rdf["format_version"] == "0.5.10"  # the zoo runtime's bioimageio.core 0.10.4 reads no newer one
    assert rdf["documentation"] == "README.md" and rdf["covers"] == ["cover.png"] and rdf["license"] == "MIT"
    (inputs,) = rdf["inputs"]
    assert [a["type"] for a in inputs["axes"]] == ["batch", "channel", "space", "space", "space"]
    assert "size" not in inputs["axes"][0]  # dynamic batch
    assert all(a["size"] == {"min": 40, "step": 8} for a in inputs["axes"][2:])
    # one step (BiaPy's older releases take no more); the weights scale its 0..1 by 100
    scale_range = {"axes": ["z", "y", "x"], "min_percentile": 0.0, "max_percentile": 100.0}
    assert inputs["preprocessing"] == [{"id": "scale_range", "kwargs": scale_range}]
    (outputs,) = rdf["outputs"]
    assert all(a["halo"] == 16 and a["size"]["tensor_id"] == "raw" for a in outputs["axes"][2:])
    foreground = rdf["config"]["wnet_zoo"]["foreground_class"]
    assert outputs["axes"][1]["channel_names"][foreground] == "foreground"
    weights_rdf = rdf["weights"]
    assert weights_rdf["pytorch_state_dict"]["architecture"]["callable"] == "UNet3D"
    assert weights_rdf["pytorch_state_dict"]["architecture"]["kwargs"]["input_sigma"] == [1.0, 1.0, 1.0]
    assert weights_rdf["pytorch_state_dict"]["architecture"]["kwargs"]["input_log"] == 2.0
    assert weights_rdf["pytorch_state_dict"]["architecture"]["kwargs"]["input_background"] == [3, 3, 3]
    assert weights_rdf["pytorch_state_dict"]["architecture"]["kwargs"]["input_scale"] == 100.0
    assert rdf["config"]["wnet_zoo"]["input_sigma"] == [1.0, 1.0, 1.0] and rdf["config"]["wnet_zoo"]["input_log"] == 2.0
    assert weights_rdf["onnx"]["parent"] == weights_rdf["torchscript"]["parent"] == "pytorch_state_dict"
    assert "## Validation" in archive.read("README.md").decode()
    card = archive.read("README.md").decode()
    assert "compresses its input's intensities" in card and "log(1 + x / 2)" in card
    assert "subtracts its compressed input's background, the smoothed grey-level opening by a box of 7 x 7 x 7" in card
    assert "smooths its transformed input with a Gaussian of sigma 1 x 1 x 1 voxels" in card
    cover = Image.open(io.BytesIO(archive.read("cover.png")))
    assert cover.format == "PNG" and cover.width == 2 * cover.height
    raw, expected = _npy(archive, "test_input.npy"), _npy(archive, "test_output.npy")
    assert raw.shape == (1, 1, 64, 64, 64) and expected.shape == (1, 2, 64, 64, 64)
    model = load_weights(weights["run"]).build_model().eval()
    with torch.no_grad():
        assert_close(model.encoder(torch.from_numpy(remap(raw))), expected, rel=1e-5, what="probabilities")


def test_package_is_a_weight_source_with_the_training_record(
    exported: ExportResult, weights: dict[str, Path], tmp_path: Path
):
    original = load_weights(weights["run"])
    folder = tmp_path / "unzipped"
    _package(exported).extractall(folder)
    for source in (exported.package, folder, folder / "rdf.yaml"):
        packaged = load_weights(source)
        assert packaged.state_dict.keys() == original.state_dict.keys()
        assert all(torch.equal(packaged.state_dict[k], v) for k, v in original.state_dict.items())
        assert packaged.config["patch"] == [16, 24, 24]
        assert packaged.checkpoint["foreground_class"] == original.checkpoint["foreground_class"]
    # no weight stored twice: the attachment holds the decoder, the encoder is the pytorch_state_dict weights
    attachment = torch.load(folder / "wnet3d_decoder.pt", weights_only=True)
    assert set(attachment) == {DECODER_PLANES, "config", "epoch", "foreground_class", "class_means"}
    encoder = torch.load(folder / "wnet3d_encoder_state_dict.pt", weights_only=True)
    assert len(encoder) + len(attachment[DECODER_PLANES]) == len(original.state_dict)


def test_package_with_the_decoder_as_a_state_dict_still_loads(
    exported: ExportResult, weights: dict[str, Path], tmp_path: Path
):
    """Packages exported before the attachment stored byte planes held the decoder's state dict itself."""
    original = load_weights(weights["run"])
    _package(exported).extractall(tmp_path)
    attachment = torch.load(tmp_path / "wnet3d_decoder.pt", weights_only=True)
    attachment["decoder"] = from_byte_planes(attachment.pop(DECODER_PLANES))
    torch.save(attachment, tmp_path / "wnet3d_decoder.pt")
    packaged = load_weights(tmp_path)
    assert all(torch.equal(packaged.state_dict[k], v) for k, v in original.state_dict.items())


def test_package_of_the_earlier_layout_still_loads(exported: ExportResult, weights: dict[str, Path], tmp_path: Path):
    """Packages exported before the decoder attachment held the whole WNet3D in one file (``full_weights``)."""
    original = load_weights(weights["run"])
    _package(exported).extractall(tmp_path)
    torch.save({"model": original.state_dict, "config": original.config}, tmp_path / "wnet3d_full.pt")
    rdf = yaml.safe_load((tmp_path / "rdf.yaml").read_text())
    del rdf["config"]["wnet_zoo"]["decoder_weights"]
    rdf["config"]["wnet_zoo"]["full_weights"] = "wnet3d_full.pt"
    (tmp_path / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    (tmp_path / "wnet3d_decoder.pt").unlink()
    packaged = load_weights(tmp_path)
    assert all(torch.equal(packaged.state_dict[k], v) for k, v in original.state_dict.items())


def test_architecture_file_needs_only_torch(exported: ExportResult):
    tree = ast.parse(_package(exported).read("wnet3d_model.py"))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, "the packaged architecture must not use relative imports"
            modules.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
    assert modules <= {"__future__", "collections", "typing", "math", "torch"}


@pytest.mark.slow
def test_bioimageio_test_cli_passes(exported: ExportResult):
    """``bioimageio test PACKAGE``, as docs/export.md tells users to run it: bioimageio.core's ``test_model`` on
    every weight format, behind its command line (the bundled model's package takes ``test_model`` in process)."""
    run = subprocess.run(
        [sys.executable, "-m", "bioimageio.core", "test", str(exported.package)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]


def test_bioimageio_core_prediction_matches_torch(exported: ExportResult, weights: dict[str, Path]):
    from bioimageio.core import create_prediction_pipeline, load_model_description, predict
    from bioimageio.core.digest_spec import create_sample_for_model

    raw = tifffile.imread(example_volume()).astype(np.float32)[8:56, 10:66, 20:84][None, None]  # not the test input
    model = load_weights(weights["run"]).build_model().eval()
    with torch.no_grad():
        expected = model.encoder(torch.from_numpy(remap(raw))).numpy()
    descr = load_model_description(exported.package)
    for weight_format in ("onnx", "torchscript", "pytorch_state_dict"):
        pipeline = create_prediction_pipeline(descr, weight_format=weight_format)
        sample = create_sample_for_model(descr, inputs={"raw": raw}, sample_id="crop")
        with pipeline:
            output = pipeline.predict_sample_without_blocking(
                sample, skip_input_padding=True, skip_output_cropping=True
            )
        actual = output.members["probabilities"].data.transpose("batch", "channel", "z", "y", "x").values
        assert np.abs(actual - expected).max() < 1e-4, weight_format
    # bioimageio.core's predict() pads the declared halo (16, symmetric) and crops it off again
    halo = 16
    padded = np.pad(remap(raw), [(0, 0), (0, 0)] + [(halo, halo)] * 3, mode="symmetric")
    with torch.no_grad():
        around = model.encoder(torch.from_numpy(padded)).numpy()[..., halo:-halo, halo:-halo, halo:-halo]
    default = predict(model=descr, inputs={"raw": raw}).members["probabilities"].data
    assert np.abs(default.transpose("batch", "channel", "z", "y", "x").values - around).max() < 1e-4


def test_bare_state_dict_exports_without_training_record(weights: dict[str, Path], tmp_path: Path, capsys):
    card = yaml.safe_load(default_card_path().read_text())
    card["name"] = "Bare WNet3D (test)"
    card["maintainers"] = [{"name": "Someone", "github_user": "someone"}]
    card["training_data"] = {"description": "a crop", "voxel_size": {"z": 5.0, "y": 1.5, "x": 1.5}}
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(card))
    out = tmp_path / "bare"
    assert main(["export", str(weights["bare"]), "--out", str(out), "--card", str(tmp_path / "card.yaml")]) == 0
    printed = capsys.readouterr().out
    assert "ONNX Runtime vs torch" in printed and "vs float64" in printed and "foreground class unknown" in printed
    metadata = read_metadata(out / "wnet3d.onnx")
    assert metadata.foreground_class is None and metadata.train_patch is None and metadata.num_classes == 2
    rdf = yaml.safe_load(zipfile.ZipFile(out / "bare-wnet3d-test.bioimageio.zip").read("rdf.yaml"))
    assert "foreground_class" not in rdf["config"]["wnet_zoo"] and "train_patch" not in rdf["config"]["wnet_zoo"]
    assert rdf["outputs"][0]["axes"][1]["channel_names"] == ["class_0", "class_1"]
    assert [(a["scale"], a["unit"]) for a in rdf["inputs"][0]["axes"][2:]] == [(5.0, "micrometer")] + [
        (1.5, "micrometer")
    ] * 2
    assert rdf["maintainers"] == [{"name": "Someone", "github_user": "someone"}]
    # without --torchscript: two weight formats (each one more copy of the encoder), no TorchScript file
    assert sorted(rdf["weights"]) == ["onnx", "pytorch_state_dict"]
    assert sorted(p.name for p in out.iterdir()) == ["bare-wnet3d-test.bioimageio.zip", "wnet3d.onnx"]
    readme = zipfile.ZipFile(out / "bare-wnet3d-test.bioimageio.zip").read("README.md").decode()
    assert "and `onnx` (opset 17), both computing the same function" in readme and "torchscript" not in readme
    assert "TorchScript" not in printed


def test_onnx_only(weights: dict[str, Path], tmp_path: Path, capsys):
    out = tmp_path / "onnx"
    assert main(["export", str(weights["bare"]), "--out", str(out), "--onnx"]) == 0
    assert [p.name for p in out.iterdir()] == ["wnet3d.onnx"]
    capsys.readouterr()
    assert main(["export", str(weights["bare"]), "--out", str(tmp_path / "both"), "--onnx", "--torchscript"]) == 2
    assert capsys.readouterr().err.strip() == "Error: --onnx writes no TorchScript file; drop --torchscript"


def _error_lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_bad_source_fails_cleanly(weights: dict[str, Path], tmp_path: Path, capsys):
    out = tmp_path / "out"
    assert main(["export", str(weights["tiff"]), "--out", str(out)]) == 2
    lines = _error_lines(capsys)
    assert 1 <= len(lines) <= 3 and lines[0].startswith("Error:") and "state dict" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_existing_out_needs_overwrite(weights: dict[str, Path], tmp_path: Path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", str(weights["bare"]), "--out", str(out), "--onnx"]) == 2
    assert _error_lines(capsys) == [f"Error: {out} already exists; choose another --out or pass --overwrite"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert main(["export", str(weights["bare"]), "--out", str(out), "--onnx", "--overwrite"]) == 0
    assert [p.name for p in out.iterdir()] == ["wnet3d.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("field", REQUIRED)
def test_card_missing_a_field_is_named(weights: dict[str, Path], tmp_path: Path, capsys, field: str):
    card = yaml.safe_load(default_card_path().read_text())
    del card[field]
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(card))
    out = tmp_path / "out"
    assert main(["export", str(weights["bare"]), "--out", str(out), "--card", str(tmp_path / "card.yaml")]) == 2
    lines = _error_lines(capsys)
    assert len(lines) <= 3 and f"missing required field {field!r}" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.yaml"]


def test_card_values_the_zoo_rejects_fail_before_writing(weights: dict[str, Path], tmp_path: Path, capsys):
    card = yaml.safe_load(default_card_path().read_text())
    card["license"] = "not-a-licence"
    card["colour"] = "blue"
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(card))
    args = ["export", str(weights["bare"]), "--out", str(tmp_path / "out"), "--card", str(tmp_path / "card.yaml")]
    assert main(args) == 2
    assert "unknown model card field 'colour'" in _error_lines(capsys)[0]
    del card["colour"]
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(card))
    assert main(args) == 2
    lines = _error_lines(capsys)
    assert len(lines) <= 3 and "license 'not-a-licence' is not an SPDX identifier" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.yaml"]


def test_card_options_make_a_package_the_zoo_accepts(weights: dict[str, Path], tmp_path: Path, capsys):
    from bioimageio.spec import load_description

    out = tmp_path / "out"
    # bioimageiobot: a GitHub user bioimageio.spec knows, so its check needs no network
    people = [
        "--author",
        "Jane Doe;bioimageiobot;EPFL",
        "--author",
        "Joe Bloggs",
        "--maintainer",
        "Jane Doe;bioimageiobot",
    ]
    about = ["--name", "Nuclei of test crops", "--license", "CC-BY-4.0", "--tag", "3d", "--tag", "nuclei"]
    cite = ["--cite", "Doe J. (2026). Nuclei; test.;10.5281/zenodo.1", "--cite", "Bloggs J.;https://example.org/j"]
    assert main(["export", str(weights["run"]), "--out", str(out), *people, *about, *cite]) == 0
    assert "bioimage.io will refuse" not in capsys.readouterr().out
    (package,) = out.glob("*.bioimageio.zip")
    assert package.name == "nuclei-of-test-crops.bioimageio.zip"
    rdf = yaml.safe_load(zipfile.ZipFile(package).read("rdf.yaml"))
    assert rdf["authors"] == [
        {"name": "Jane Doe", "github_user": "bioimageiobot", "affiliation": "EPFL"},
        {"name": "Joe Bloggs"},
    ]
    assert rdf["maintainers"] == [{"name": "Jane Doe", "github_user": "bioimageiobot"}]
    assert rdf["license"] == "CC-BY-4.0" and rdf["tags"] == ["3d", "nuclei"]
    assert rdf["cite"] == [
        {"text": "Doe J. (2026). Nuclei; test.", "doi": "10.5281/zenodo.1"},
        {"text": "Bloggs J.", "url": "https://example.org/j"},
    ]
    assert rdf["documentation"] and rdf["description"] == read_card().description.strip()  # the rest: the card's
    summary = load_description(package).validation_summary
    assert summary.status == "valid-format"
    assert [w.msg for d in summary.details for w in d.warnings] == []


def test_default_card_package_is_told_what_the_zoo_refuses(exported: ExportResult):
    from bioimageio.spec import load_description

    assert exported.zoo_gaps == (  # named for Python callers: the fixture calls export_model
        "no maintainer (maintainers='NAME;GITHUB_USER')",
        "the author is the default card's 'wnet-zoo developers' (authors='NAME[;GITHUB_USER[;AFFILIATION[;ORCID]]]')",
    )
    note = exported.summary().splitlines()[-1]
    assert note.startswith("note: bioimage.io will refuse this package for upload: no maintainer")
    warnings = [w.msg for d in load_description(exported.package).validation_summary.details for w in d.warnings]
    assert any("Missing `maintainers`" in message for message in warnings)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        (
            "--maintainer",
            "Jane Doe",
            "--maintainer 'Jane Doe': a maintainer answers on GitHub; give 'NAME;GITHUB_USER'",
        ),
        ("--author", ";janedoe", "--author ';janedoe': give NAME[;GITHUB_USER[;AFFILIATION[;ORCID]]]"),
        ("--author", "a;b;c;d;e", "--author 'a;b;c;d;e': give NAME[;GITHUB_USER[;AFFILIATION[;ORCID]]]"),
        ("--cite", "no link", "--cite 'no link': give TEXT;DOI_OR_URL"),
        (
            "--license",
            "MTI",
            "Error: --license MTI: license 'MTI' is not an SPDX identifier; did you mean MIT, iMatix or Multics?",
        ),
        ("--name", "abc", "Error: --name abc: name must be 5 to 128 characters long, not 3"),
        ("--description", " ", "Error: --description ' ': give one or two sentences"),
    ],
)
def test_bad_card_option_is_one_line_naming_it(
    weights: dict[str, Path], tmp_path: Path, capsys, option: str, value: str, message: str
):
    assert main(["export", str(weights["bare"]), "--out", str(tmp_path / "out"), option, value]) == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1 and message in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_card_options_are_refused_with_onnx_only(weights: dict[str, Path], tmp_path: Path, capsys):
    args = ["export", str(weights["bare"]), "--out", str(tmp_path / "out"), "--onnx", "--author", "Jane Doe"]
    assert main(args) == 2
    assert "which --onnx does not write" in _error_lines(capsys)[0]


def test_default_card():
    card = read_card()
    assert read_card("wnet3d") == card and card.source == default_card_path()
    assert card.name == "WNet3D nuclei" and card.file_stem == "wnet3d-nuclei"
    assert {c["doi"] for c in card.citations} == {"10.7554/eLife.99848", "10.48550/arXiv.1711.08506"}
    assert card.voxel_size is None


def test_pydantic_pin_holds():
    """pydantic 2.14 breaks bioimageio.spec 0.5.12 package building (see pyproject.toml)."""
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = [Requirement(r) for r in extras["zoo"] if Requirement(r).name == "pydantic"]
    assert pins and all(p.specifier.contains("2.13.5") and not p.specifier.contains("2.14.0") for p in pins)
    assert all(p.specifier.contains(importlib.metadata.version("pydantic")) for p in pins)
    assert "wnet-zoo[zoo]" in extras["test"]


def test_wheel_ships_cards_templates_and_the_bundled_model(tmp_path: Path):
    pytest.importorskip("setuptools")
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copytree(ROOT / "wnet_zoo", source / "wnet_zoo", ignore=shutil.ignore_patterns("__pycache__"))
    build = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*build, "-w", str(tmp_path / "wheel")], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        "wnet_zoo/examples/c5image.tif",
        "wnet_zoo/export/cards/wnet3d.yaml",
        "wnet_zoo/export/templates/rdf.yaml",
        "wnet_zoo/export/templates/README.md",
        "wnet_zoo/model/bundled/wnet3d.pt",
        "wnet_zoo/model/bundled/wnet3d.yaml",
    }
    assert shipped <= names
    install = [sys.executable, "-m", "pip", "install", str(wheel), "--no-deps", "-q", "--target", str(tmp_path / "t")]
    subprocess.run(install, check=True, capture_output=True)
    probe = (
        "import json, wnet_zoo; from wnet_zoo.export.model_card import read_card;"
        "from wnet_zoo.export.rdf import read_template; from wnet_zoo.model.pretrained import bundled_weights;"
        "print(json.dumps([wnet_zoo.__file__, read_card().name, len(read_template('rdf.yaml')),"
        " str(bundled_weights())]))"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "t")}
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env)
    where, name, size, bundled = json.loads(run.stdout)
    assert where.startswith(str(tmp_path / "t")) and name == "WNet3D nuclei" and size > 1000
    assert bundled.startswith(str(tmp_path / "t"))


def test_card_value_errors_are_one_short_line(tmp_path: Path, monkeypatch, capsys):
    from wnet_zoo.model.wnet import WNet3D

    torch.save(WNet3D(channels=[4, 8, 16, 32]).state_dict(), tmp_path / "bare.pth")
    monkeypatch.chdir(tmp_path)
    default = yaml.safe_load(default_card_path().read_text())
    voxels = {"description": "a crop", "voxel_size": {"z": 2.0, "y": 0.5, "x": 0.5}}
    cases = [
        ("license", "MTI", "license 'MTI' is not an SPDX identifier; did you mean MIT, iMatix or Multics?"),
        ("license", "mit", "license 'mit' is not an SPDX identifier; did you mean MIT?"),
        ("license", "zz-none", "license 'zz-none' is not an SPDX identifier; give one, e.g. MIT or CC-BY-4.0"),
        ("version", "v1.x", "version 'v1.x' is not a version number; give e.g. 1.0 or 1.2.3"),
        (
            "training_data",
            {**voxels, "unit": "microns"},
            "training_data.unit 'microns' is not one of bioimage.io's units; did you mean micrometer?",
        ),
        (
            "training_data",
            {**voxels, "unit": "µm"},
            "training_data.unit 'µm' is not one of bioimage.io's units; did you mean micrometer?",
        ),
        (
            "training_data",
            {**voxels, "unit": "px"},
            "training_data.unit 'px' is not one of bioimage.io's units; give "
            "a unit of length, e.g. micrometer or nanometer",
        ),
        ("name", "WNet/3D nuclei", "name 'WNet/3D nuclei' may hold only letters, digits, spaces and _+-() (not '/')"),
        ("name", "W" * 3000, "name must be 5 to 128 characters long, not 3000"),
    ]
    for field, value, wanted in cases:
        card = {**default, field: value}
        (tmp_path / "card.yaml").write_text(yaml.safe_dump(card, allow_unicode=True))
        capsys.readouterr()
        assert main(["export", "bare.pth", "--out", "out", "--card", "card.yaml"]) == 2, field
        lines = _error_lines(capsys)
        assert lines == [f"Error: card.yaml: {wanted}"] and len(lines[0]) < 200
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.pth", "card.yaml"]

import csv
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml

from wnet_zoo.cli import main
from wnet_zoo.model.checkpoints import load_weights
from wnet_zoo.model.pretrained import describe_bundled
from wnet_zoo.model.wnet import WNet3D
from wnet_zoo.training.device import bf16_supported

from reference import cellseg3d_wnet_class
from tiffs import noisy_nuclei

QUICK = ["--patch", "16,24,24", "--samples-per-epoch", "1", "--batch", "1", "--epochs", "1"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> dict[str, Path]:
    """Every kind of weight source, all holding the same tiny K=3 model."""
    folder = tmp_path_factory.mktemp("sources")
    torch.manual_seed(5)
    model = WNet3D(num_classes=3, channels=(4, 8, 16, 32))
    state = model.state_dict()
    run = folder / "run"
    run.mkdir()
    torch.save({"model": state, "epoch": 7, "optimizer": {}, "config": {"channels": [4, 8, 16, 32]}}, run / "last.pt")
    torch.save({"model": state}, folder / "dict.pt")
    torch.save(state, folder / "bare.pth")
    with tarfile.open(folder / "weights.tar.gz", "w:gz") as tar:
        tar.add(folder / "bare.pth", arcname="wnet/bare.pth")
    return {
        "run directory": run,
        "checkpoint": run / "last.pt",
        "dict with model": folder / "dict.pt",
        "bare state dict": folder / "bare.pth",
        "tar.gz": folder / "weights.tar.gz",
    }


def _finetuned(run: Path) -> tuple[dict, list[dict]]:
    config = yaml.safe_load((run / "config.yaml").read_text())
    with (run / "metrics.csv").open() as handle:
        return config, list(csv.DictReader(handle))


@pytest.mark.parametrize("kind", ["run directory", "checkpoint", "dict with model", "bare state dict", "tar.gz"])
def test_finetune_from_each_source(tmp_path: Path, small_tiff: Path, pretrained: dict[str, Path], kind: str):
    out = tmp_path / "tuned"
    assert main(["finetune", str(small_tiff), "--from", str(pretrained[kind]), "--out", str(out), *QUICK]) == 0
    config, rows = _finetuned(out)
    assert config["channels"] == [4, 8, 16, 32] and config["num-classes"] == 3
    assert config["lr"] == pytest.approx(1e-4) and config["base-lr"] == 1e-3 and config["lr-factor"] == 0.1
    assert config["from-weights"] == str(pretrained[kind])
    assert config["bf16"] is bf16_supported(torch.device("cpu"))  # the precision used, not "auto"
    assert float(rows[0]["lr"]) == pytest.approx(1e-4) and float(rows[0]["base_lr"]) == 1e-3
    source = torch.load(pretrained["bare state dict"], weights_only=True)
    tuned = torch.load(out / "last.pt", weights_only=True)["model"]
    drift = max((tuned[k].float() - v.float()).abs().max().item() for k, v in source.items())
    assert 0 < drift < 1e-3  # trained a little, from the pretrained weights


@pytest.mark.slow
def test_finetune_cellseg3d_pth_and_explicit_lr(tmp_path: Path, small_tiff: Path):
    torch.manual_seed(0)
    pth = tmp_path / "cellseg3d.pth"
    torch.save(cellseg3d_wnet_class()(1, 1, 2).state_dict(), pth)
    out = tmp_path / "tuned"
    assert main(["finetune", str(small_tiff), "--from", str(pth), "--out", str(out), *QUICK, "--lr", "1e-4"]) == 0
    config, rows = _finetuned(out)
    assert config["channels"] == [64, 128, 256, 512] and config["num-classes"] == 2
    assert config["lr"] == pytest.approx(1e-4) and config["base-lr"] == 1e-3
    assert float(rows[0]["lr"]) == pytest.approx(1e-4)


def test_finetune_bad_sources_and_mismatches(tmp_path: Path, small_tiff: Path, pretrained, capfd):
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(pretrained["bare state dict"].read_bytes()[:3000])
    other = tmp_path / "other.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), other)
    cases = [
        ["--from", str(text)],
        ["--from", str(truncated)],
        ["--from", str(other)],
        ["--from", str(pretrained["bare state dict"]), "--channels", "8,16,32,64"],
        ["--from", str(pretrained["bare state dict"]), "--num-classes", "2"],
        ["--from", str(pretrained["bare state dict"]), "--input-smoothing", "1"],  # trained without
        ["--from", str(pretrained["bare state dict"]), "--input-log", "2"],  # trained without
    ]
    for extra in cases:
        out = tmp_path / "out"
        assert main(["finetune", str(small_tiff), *extra, "--out", str(out), *QUICK]) == 2, extra
        lines = capfd.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error:"), lines
        assert not out.exists()


def test_finetune_lr_with_a_config_base_rate(tmp_path: Path, small_tiff: Path, pretrained, capfd):
    config = tmp_path / "c.yaml"
    config.write_text("base-lr: 1.0e-3\n")
    out = tmp_path / "tuned"
    source = str(pretrained["bare state dict"])
    args = ["finetune", str(small_tiff), "--from", source, "--out", str(out), *QUICK, "--config", str(config)]
    assert main([*args, "--lr", "1e-4"]) == 0
    saved, rows = _finetuned(out)
    assert saved["lr"] == pytest.approx(1e-4) and saved["base-lr"] == 1e-3
    assert float(rows[0]["lr"]) == pytest.approx(1e-4)
    capfd.readouterr()
    assert main([*args, "--overwrite", "--lr", "1e-4", "--lr-factor", "0.5"]) == 2
    assert "give one of them" in capfd.readouterr().err


def test_finetune_starts_from_the_bundled_model_by_default(tmp_path: Path, small_tiff: Path):
    out = tmp_path / "tuned"
    assert main(["finetune", str(small_tiff), "--out", str(out), *QUICK]) == 0
    config, rows = _finetuned(out)
    assert config["from-weights"] == describe_bundled() and config["channels"] == [16, 32, 64, 128]
    assert config["lr"] == pytest.approx(1e-4) and config["lr-factor"] == 0.1 and config["base-lr"] == 1e-3
    assert float(rows[0]["lr"]) == pytest.approx(1e-4)
    first = (out / "train.log").read_text().splitlines()[0]
    assert f"fine-tuning {describe_bundled()} at learning rate 0.0001 (0.1 x 0.001)" in first
    bundled = load_weights("bundled").state_dict
    tuned = torch.load(out / "last.pt", weights_only=True)["model"]
    drift = max((tuned[k].float() - v).abs().max().item() for k, v in bundled.items())
    assert 0 < drift < 1e-2  # trained a little, from the bundled weights


def test_bundled_model_takes_the_input_transform_chosen_for_the_images(tmp_path: Path, small_tiff: Path):
    """Trained without one, the bundled model is a starting point for any stack: the transform is the images'."""
    out = tmp_path / "tuned"
    args = ["finetune", str(small_tiff), "--from", "bundled", "--out", str(out), *QUICK]
    assert main([*args, "--input-smoothing", "1", "--input-log", "5"]) == 0
    config, _ = _finetuned(out)
    assert config["input-smoothing"] == 1 and config["input-log"] == 5
    tuned = load_weights(out / "last.pt").architecture
    assert tuned["input_sigma"] == [1.0, 1.0, 1.0] and tuned["input_log"] == 5
    assert main(["train", "--resume", str(out), "--epochs", "2"]) == 0  # the run's transform, not the bundle's
    assert load_weights(out / "last.pt").architecture["input_log"] == 5


def test_bundled_model_gets_the_transform_training_chooses_for_noisy_images(tmp_path: Path):
    noisy = noisy_nuclei(tmp_path / "noisy.tif", seed=0)
    out = tmp_path / "tuned"
    assert main(["finetune", str(noisy), "--out", str(out), *QUICK]) == 0
    config, _ = _finetuned(out)
    assert config["input-smoothing"] > 0  # as `train` would choose: the bundled model itself has none
    assert load_weights(out / "last.pt").architecture["input_sigma"][0] == config["input-smoothing"]


def test_own_weights_keep_the_input_transform_they_were_trained_with(tmp_path: Path):
    """Other weights than the bundled ones bring their transform: the images' own choice does not replace it."""
    rng = np.random.default_rng(1)
    noisy = tmp_path / "noisy.tif"
    tifffile.imwrite(noisy, rng.normal(100, 30, (32, 48, 48)).clip(0).astype(np.float32))
    torch.manual_seed(2)
    model = WNet3D(channels=(4, 8, 16, 32), input_sigma=(0.5, 1.0, 1.0), input_log=5.0)
    source = tmp_path / "own.pt"
    torch.save(model.state_dict(), source)
    out = tmp_path / "tuned"
    args = ["finetune", str(noisy), "--from", str(source), "--out", str(out), *QUICK, "--no-screen"]
    assert main([*args, "--input-log", "5"]) == 0  # the weights' own value may be given
    config, _ = _finetuned(out)
    assert config["input-smoothing"] == 1 and config["input-log"] == 5 and config["input-background"] == 0
    tuned = load_weights(out / "last.pt").state_dict
    transform = {key: value for key, value in model.state_dict().items() if key.endswith(("input_sigma", "input_log"))}
    assert len(transform) == 2 and all(torch.equal(tuned[key], value) for key, value in transform.items())

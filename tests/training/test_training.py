import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml

from wnet_zoo.cli import main
from wnet_zoo.model.checkpoints import load_weights
from wnet_zoo.training.config import TrainConfig
from wnet_zoo.training.device import bf16_supported
from wnet_zoo.training.step import TrainingStep

TINY = [
    "--channels",
    "4,8,16,32",
    "--patch",
    "16,24,24",
    "--samples-per-epoch",
    "2",
    "--batch",
    "2",
    "--lr",
    "1e-3",
    "--no-bf16",  # bf16 autocast (the default where the CPU has it) is not bit-reproducible
]


def _metrics(run: Path) -> list[dict]:
    with (run / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_train_writes_the_run_directory(tmp_path: Path, small_tiff: Path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(small_tiff), "--out", str(run), "--epochs", "3", *TINY]) == 0
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "metrics.csv", "loss.png", "last.pt", "best.pt", "train.log"} <= names
    rows = _metrics(run)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert list(rows[0]) == ["epoch", "ncut", "rec", "total", "lr", "base_lr", "seconds"]
    for row in rows:
        ncut, rec, total = float(row["ncut"]), float(row["rec"]), float(row["total"])
        assert 0 <= ncut <= 2 and rec > 0
        assert total == pytest.approx(0.5 * ncut + 5e-3 * rec, rel=1e-5)
        assert float(row["lr"]) == float(row["base_lr"]) == 1e-3
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["channels"] == [4, 8, 16, 32] and config["patch"] == [16, 24, 24]
    assert config["images"] == [str(small_tiff.resolve())] and config["ncut-weight"] == 0.5
    assert TrainConfig.from_dict(config).epochs == 3
    loaded = load_weights(run / "last.pt")
    assert loaded.epoch == 3 and loaded.architecture["channels"] == [4, 8, 16, 32]
    assert {"model", "optimizer", "epoch", "config", "rng"} <= set(loaded.checkpoint)
    assert loaded.checkpoint["config"]["channels"] == [4, 8, 16, 32]
    best = load_weights(run / "best.pt")
    best_epoch = min(rows, key=lambda r: float(r["total"]))["epoch"]
    assert best.epoch == int(best_epoch)
    assert (run / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert "epoch 3/3" in (run / "train.log").read_text()
    assert "run directory" in capsys.readouterr().out


def test_same_seed_same_metrics(tmp_path: Path, small_tiff: Path):
    runs = []
    for name in ("a", "b"):
        run = tmp_path / name
        assert main(["train", str(small_tiff), "--out", str(run), "--epochs", "2", "--seed", "7", *TINY]) == 0
        runs.append([{k: v for k, v in r.items() if k != "seconds"} for r in _metrics(run)])
    assert runs[0] == runs[1]


def test_config_file_and_command_line_precedence(tmp_path: Path, small_tiff: Path):
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "epochs": 2,
                "rec-loss": "bce",
                "radius": 1,
                "channels": [4, 8, 16, 32],
                "patch": "16,24,24",
                "samples_per_epoch": 1,
                "batch": 1,
            }
        )
    )
    run = tmp_path / "run"
    assert main(["train", str(small_tiff), "--out", str(run), "--config", str(config), "--epochs", "1"]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["epochs"] == 1 and saved["rec-loss"] == "bce" and saved["radius"] == 1
    assert saved["samples-per-epoch"] == 1 and len(_metrics(run)) == 1


def _bad_inputs(tmp_path: Path, small_tiff: Path) -> dict[str, list[str]]:
    notiff = tmp_path / "notes.tif"
    notiff.write_text("not an image")
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.random.rand(32, 32).astype(np.float32))
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.random.rand(2, 16, 16, 16).astype(np.float32))
    nan = tmp_path / "nan.tif"
    nan_data = np.random.rand(16, 16, 16).astype(np.float32)
    nan_data[3, 3, 3] = np.inf
    tifffile.imwrite(nan, nan_data)
    constant = tmp_path / "constant.tif"
    tifffile.imwrite(constant, np.full((16, 16, 16), 5, np.uint16))
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    badyaml = tmp_path / "bad.yaml"
    badyaml.write_text("epochs: 2\nwhat: 1\n")
    return {
        "missing file": [str(tmp_path / "nope.tif")],
        "not a tiff": [str(notiff)],
        "2-D image": [str(flat)],
        "4-D without --channel": [str(stack)],
        "NaN/Inf voxels": [str(nan)],
        "constant image": [str(constant)],
        "patch too large": [str(small_tiff), "--patch", "64"],
        "patch not a multiple of 8": [str(small_tiff), "--patch", "12,16,16"],
        "existing --out": [str(small_tiff), "--out-existing"],
        "unknown config key": [str(small_tiff), "--config", str(badyaml)],
        "unknown option": [str(small_tiff), "--epoch", "3"],
        "bad channels": [str(small_tiff), "--channels", "4,8,x"],
    }


def test_every_bad_input_exits_2_with_a_short_message_and_writes_nothing(tmp_path: Path, small_tiff: Path, capfd):
    cases = _bad_inputs(tmp_path, small_tiff)
    for name, args in cases.items():
        out = tmp_path / "existing" if args[-1] == "--out-existing" else tmp_path / "out"
        args = [a for a in args if a != "--out-existing"]
        code = main(["train", *args, "--out", str(out)])
        captured = capfd.readouterr()
        lines = (captured.out + captured.err).strip().splitlines()
        assert code == 2, name
        assert 1 <= len(lines) <= 3, (name, lines)
        assert lines[0].startswith("Error:"), (name, lines)
        assert "Traceback" not in captured.err
        assert not (tmp_path / "out").exists(), name
    assert [p.name for p in (tmp_path / "existing").iterdir()] == ["keep.txt"]


def test_console_script_exit_code(tmp_path: Path):
    result = subprocess.run(
        ["wnet-zoo", "train", str(tmp_path / "nope.tif"), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"Error: {tmp_path / 'nope.tif'}: no such file or folder; check the path"
    ]


def test_config_file_values_are_typed_and_checked(tmp_path: Path, small_tiff: Path, capfd):
    good = tmp_path / "good.yaml"
    good.write_text(
        f"images: [{small_tiff}]\nlr: 1e-4\nepochs: 1\nchannels: 4,8,16,32\npatch: 16x24x24\n"
        "samples-per-epoch: 1\nbatch: 1\n"
    )
    run = tmp_path / "run"
    assert main(["train", "--config", str(good), "--out", str(run)]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["lr"] == 1e-4 and saved["patch"] == [16, 24, 24] and saved["images"] == [str(small_tiff.resolve())]
    capfd.readouterr()
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: many\n")
    assert main(["train", str(small_tiff), "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert err == [f"Error: {bad}: epochs: expected int, got 'many'"]
    assert not (tmp_path / "o").exists()


def test_overwrite_never_deletes_inputs_or_foreign_folders(tmp_path: Path, small_tiff: Path, capfd):
    for out in (small_tiff.parent, tmp_path / "foreign"):
        out.mkdir(exist_ok=True)
        (out / "notes.txt").write_text("keep me")
        assert main(["train", str(small_tiff), "--out", str(out), "--overwrite", *TINY, "--epochs", "1"]) == 2
        assert (out / "notes.txt").read_text() == "keep me" and small_tiff.exists()
    assert "holds the input" in capfd.readouterr().err
    assert main(["train", "--resume", str(tmp_path), "--overwrite"]) == 2


def test_bare_command_prints_help(capsys):
    assert main([]) == 0
    assert "Usage: wnet-zoo" in capsys.readouterr().out


def test_defaults_train_fast_and_a_bf16_step_with_nan_gradients_is_redone_in_float32():
    config = TrainConfig()
    assert (config.lr, config.epochs, config.stop_at_plateau, config.bf16) == (1e-3, 12, True, None)
    cpu = torch.device("cpu")
    assert TrainingStep.from_config(config, cpu).bf16 == bf16_supported(cpu)  # bf16 where the CPU computes it

    tiny = TrainConfig(channels=[4, 8, 16, 32], lr=1e-2, bf16=False)
    batch = torch.rand(2, 1, 16, 24, 24) * 100

    def first_step(bf16: bool) -> TrainingStep:
        torch.manual_seed(0)
        step = TrainingStep.from_config(tiny, cpu)
        if bf16:
            step.bf16 = True  # autocast runs (emulated where not native) on any CPU
            calls = []  # a NaN gradient in the first backward only, as oneDNN's bf16 backward gives now and then
            hook = lambda grad: grad * np.nan if len(calls) == 1 else grad  # noqa: E731
            step.model.decoder.bot.module[0].weight.register_hook(lambda grad: calls.append(1) or hook(grad))
        torch.manual_seed(1)
        result = step(batch, probe=True)
        assert result["applied"]
        step.probed = {key: result[key] for key in ("ncut_grad", "rec_grad")}
        return step

    redone, reference = first_step(bf16=True), first_step(bf16=False)
    assert redone.float32_redone == 1 and reference.float32_redone == 0
    assert redone.probed == reference.probed  # the probed gradient norms are the float32 step's too
    # redone in float32 with the same dropout: the very update of a float32 step, and no NaN weights
    for a, b in zip(redone.model.state_dict().values(), reference.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_noisy_stacks_train_a_model_that_smooths_its_input_per_voxel_size(tmp_path: Path, small_tiff: Path):
    clean = tifffile.imread(small_tiff).astype(np.float32)
    for name, spread in (("noisy", 0.07), ("noisier", 0.12)):  # noise 5.8 and 8.1 on the 0..100 scale
        noisy = clean + np.random.default_rng(0).normal(0, spread * np.ptp(clean), clean.shape)
        tifffile.imwrite(
            tmp_path / f"{name}.tif",
            noisy.astype(np.float32),
            imagej=True,
            resolution=(1.0, 1.0),
            metadata={"spacing": 2.0, "unit": "um"},
        )
    path = tmp_path / "noisy.tif"
    for image, run, expected in (
        (path, tmp_path / "noisy", [0.5, 1.0, 1.0]),
        (tmp_path / "noisier.tif", tmp_path / "noisier", [1.0, 2.0, 2.0]),  # twice the noise, twice the sigma
        (small_tiff, tmp_path / "clean", [0.0] * 3),
    ):
        assert main(["train", str(image), "--out", str(run), "--epochs", "1", *TINY]) == 0
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["input-smoothing"] == max(expected)  # recorded, so --resume rebuilds the same model
        assert load_weights(run / "best.pt").architecture["input_sigma"] == expected  # z voxels are twice as long
        assert ("smooths its input" in (run / "train.log").read_text()) == bool(max(expected))
        assert config["input-log"] == 0.0  # nuclei of alike brightness: no compression
    assert main(["train", "--resume", str(tmp_path / "noisy"), "--epochs", "2"]) == 0
    resumed = load_weights(tmp_path / "noisy" / "last.pt")
    assert resumed.epoch == 2 and resumed.architecture["input_sigma"] == [0.5, 1.0, 1.0]
    assert (
        main(["train", str(path), "--out", str(tmp_path / "off"), "--epochs", "1", "--input-smoothing", "0", *TINY])
        == 0
    )
    assert load_weights(tmp_path / "off" / "best.pt").architecture["input_sigma"] == [0.0] * 3


def test_nuclei_of_widely_varying_brightness_train_a_model_that_compresses_its_input(tmp_path: Path):
    from scipy import ndimage

    from wnet_zoo.io.intensity import remap

    volume = np.full((24, 48, 60), 100.0, np.float32)  # camera counts: 20 spheres, half of them 10x dimmer
    z, y, x = np.ogrid[:24, :48, :60]
    for i in range(20):
        cy, cx = 6 + 12 * (i // 5), 6 + 12 * (i % 5)
        volume[(z - 12) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= 16] += 1000 if i % 2 else 100
    volume = ndimage.gaussian_filter(volume, 0.7) + np.random.default_rng(0).normal(0, 5.0, volume.shape)
    path = tmp_path / "mixed.tif"
    tifffile.imwrite(path, volume.astype(np.float32))
    background = float(np.median(remap(volume)))
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--epochs", "1", *TINY]) == 0
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["input-log"] == pytest.approx(background) and config["input-smoothing"] == 0.0
    assert load_weights(tmp_path / "run" / "best.pt").architecture["input_log"] == config["input-log"]
    assert "compresses its input with a logarithm" in (tmp_path / "run" / "train.log").read_text()
    assert main(["train", "--resume", str(tmp_path / "run"), "--epochs", "2"]) == 0
    assert load_weights(tmp_path / "run" / "last.pt").architecture["input_log"] == config["input-log"]
    off = tmp_path / "off"
    assert main(["train", str(path), "--out", str(off), "--epochs", "1", "--input-log", "0", *TINY]) == 0
    assert load_weights(off / "best.pt").architecture["input_log"] == 0.0


def test_nuclei_on_an_uneven_background_train_a_model_that_subtracts_it(tmp_path: Path):
    from scipy import ndimage

    rng = np.random.default_rng(0)
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in (24, 48, 64)), indexing="ij")
    volume = 300 + 240 * np.sin(x / 7 + 1) * np.cos(y / 9)  # autofluorescence swinging wider than the nuclei
    for cz in range(6, 24, 12):
        for cy in range(6, 48, 12):
            for cx in range(6, 64, 12):
                volume[(z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= 16] += 240
    volume = ndimage.gaussian_filter(volume, 0.7) + rng.normal(0, 10.0, volume.shape)
    path = tmp_path / "uneven.tif"
    tifffile.imwrite(path, volume.astype(np.float32))
    run = tmp_path / "run"
    assert main(["train", str(path), "--out", str(run), "--epochs", "1", *TINY]) == 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    radius = config["input-background"]
    assert 4 <= radius <= 8 and config["input-log"] == 0.0  # a box at least as wide as the nuclei
    assert load_weights(run / "best.pt").architecture["input_background"] == [radius] * 3
    assert "subtracts its input's background" in (run / "train.log").read_text()
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    assert load_weights(run / "last.pt").architecture["input_background"] == [radius] * 3
    refused = ["finetune", str(path), "--from", str(run), "--out", str(tmp_path / "ft"), "--input-background", "2"]
    assert main(refused) == 2  # weights trained with another box
    off = tmp_path / "off"
    assert main(["train", str(path), "--out", str(off), "--epochs", "1", "--input-background", "0", *TINY]) == 0
    assert load_weights(off / "best.pt").architecture["input_background"] == [0, 0, 0]


def test_losses_compare_with_the_image_the_encoder_sees():
    torch.manual_seed(0)
    config = TrainConfig(channels=[4, 8, 16, 32], bf16=False)
    step = TrainingStep.from_config(config, torch.device("cpu"), (1, 1, 1), input_log=2.0)
    batch = torch.rand(2, 1, 16, 24, 24) * 100
    result = step.evaluate(batch)
    smoothed = step.model.encoder.smooth(step.model.encoder.compress(batch))
    assert not torch.allclose(smoothed, batch)
    scale = float(smoothed.abs().max())  # what the balance check splits, to the last digits' noise of its scale
    torch.testing.assert_close(result["seen"], smoothed, rtol=1e-6, atol=1e-6 * scale)
    expected = step.loss(result["probabilities"], result["reconstruction"], smoothed)
    assert result["ncut"] == pytest.approx(expected.ncut.item(), rel=1e-6)
    assert result["rec"] == pytest.approx(expected.rec.item(), rel=1e-6)
    assert result["rec"] != pytest.approx(
        step.loss(result["probabilities"], result["reconstruction"], batch).rec.item()
    )


def test_bf16_asked_for_where_the_cpu_lacks_it_trains_and_is_recorded_as_float32(
    tmp_path: Path, small_tiff: Path, monkeypatch, capfd
):
    from wnet_zoo.training import device

    monkeypatch.setattr(device, "bf16_supported", lambda device: False)
    tiny = [arg for arg in TINY if arg != "--no-bf16"]
    assert main(["train", str(small_tiff), "--out", str(tmp_path / "run"), "--epochs", "1", "--bf16", *tiny]) == 0
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["bf16"] is False  # what ran
    assert capfd.readouterr().err.count("--bf16: this CPU has no native bf16 support; training in float32") == 1
    assert "(bf16)" not in (tmp_path / "run" / "train.log").read_text()


def test_config_file_keys_accept_what_their_options_accept(tmp_path: Path, small_tiff: Path, capsys):
    from wnet_zoo.cli.train import train
    from wnet_zoo.cli.training_options import config_from_options

    def resolved(args: list[str]) -> TrainConfig:
        with train.make_context("train", [str(small_tiff), "--out", str(tmp_path / "run"), *args]) as ctx:
            options = dict(ctx.params)
            images = options.pop("images")
            for name in ("out", "overwrite", "resume_dir"):
                del options[name]
            return config_from_options(ctx, images, options)

    config = tmp_path / "c.yaml"
    cases = {
        "patch: 32": ["--patch", "32"],
        'patch: "32,64,64"': ["--patch", "32,64,64"],
        "patch: 32,64,64": ["--patch", "32,64,64"],
        'channels: "8,16,32,64"': ["--channels", "8,16,32,64"],
        "channels: [8, 16, 32, 64]\nepochs: '3'": ["--channels", "8,16,32,64", "--epochs", "3"],
    }
    for text, options in cases.items():
        config.write_text(text + "\n")
        assert resolved(["--config", str(config)]) == resolved(options), text
    assert resolved(["--patch", "32"]).patch == [32]  # one size: that size on every axis, as training reads it

    for text, wanted in {
        "patch: 32.5": "patch: expected one size or z,y,x, e.g. 64 or 32,64,64, got 32.5",
        "patch: true": "patch: expected one size or z,y,x, e.g. 64 or 32,64,64, got True",
        "channels: 8": "--channels must be 4 positive multiples of 4",
        "epochs: true": "epochs: expected int, got True",
        "channels: 4,8,a": f"{config}: channels: expected comma-separated integers, e.g. 64,128,256,512, got '4,8,a'",
        "patch: 16\nepochs: 1": "--patch '32,a': give one size or z,y,x, e.g. 64 or 32,64,64",
    }.items():
        config.write_text(text + "\n")
        capsys.readouterr()
        typed = ["--patch", "32,a"] if "--patch" in wanted else []
        assert main(["train", str(small_tiff), "--out", str(tmp_path / "o"), "--config", str(config), *typed]) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and wanted in error[0], (text, error)


def test_python_callers_read_python_names_and_their_config_is_left_as_it_is(tmp_path: Path, small_tiff: Path):
    import dataclasses

    from wnet_zoo.cli.naming import CliNaming
    from wnet_zoo.errors import UserError, naming
    from wnet_zoo.training.runs import train

    bad = TrainConfig(images=[str(small_tiff)], patch=[33, 64, 64], device="cpu")
    with pytest.raises(UserError) as caught:
        train(bad, tmp_path / "bad", progress=False)
    assert str(caught.value).startswith("patch=(33, 64, 64): each size must be a multiple of 8")
    assert "--" not in str(caught.value) and not (tmp_path / "bad").exists()
    with naming(CliNaming()), pytest.raises(UserError, match=r"^--patch 33,64,64: each size must be a multiple"):
        train(bad, tmp_path / "bad", progress=False)
    with pytest.raises(UserError, match="^epochs must be at least 1$"):
        TrainConfig(epochs=0).validate()

    config = TrainConfig(
        images=[str(small_tiff)], channels=[4, 8, 16, 32], patch=[16, 24, 24], epochs=1, samples_per_epoch=2,
        device="cpu", bf16=False,
    )  # fmt: skip
    given = dataclasses.replace(config)
    train(config, tmp_path / "run", progress=False)
    assert config == given  # what training resolved is recorded in config.yaml, not written into the config
    saved = TrainConfig.from_dict(yaml.safe_load((tmp_path / "run" / "config.yaml").read_text()))
    assert saved.input_log is not None and saved.input_smoothing is not None and saved.base_lr == config.lr
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 2  # type: ignore[misc]


def test_training_flushes_denormals_in_every_thread(tmp_path: Path, small_tiff: Path):
    """Float32 arithmetic on denormals is what made fine-tuning slow on CPUs without bf16: a training command
    flushes them to zero, in PyTorch's worker threads too (fresh processes, as the command line's)."""
    train = ["train", str(small_tiff), "--out", str(tmp_path / "run"), "--epochs", "1", *TINY]
    sums = []
    for command in ([], train):  # the denormals' sum after nothing, after training
        script = (
            "import sys, torch; from wnet_zoo.cli import main; "
            f"code = main({command!r}) if {command!r} else 0; "
            "print(code, float((torch.full((4_000_000,), 1e-39) * 2).sum()))"
        )
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        code, total = done.stdout.split()[-2:]
        assert code == "0"
        sums.append(float(total))
    assert sums[0] > 0 and sums[1] == 0

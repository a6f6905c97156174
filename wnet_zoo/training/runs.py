"""Self-supervised WNet3D training: SoftNCut on the encoder, reconstruction on the decoder.

A run directory holds ``config.yaml`` (the resolved config), ``metrics.csv`` (one row per epoch),
``loss.png`` (redrawn every epoch), ``train.log``, ``events.csv`` (what the training checks of
:mod:`wnet_zoo.training.checks.coordinator` saw and did), ``last.pt`` and ``best.pt`` (lowest total loss).
Training starts from scratch (:func:`train`), from pretrained weights (:func:`finetune`) or from a run
directory's ``last.pt`` (:func:`resume`); a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from wnet_zoo.errors import UserError, setting
from wnet_zoo.io.atomic import check_can_create, sweep_stale_parts
from wnet_zoo.model.checkpoints import LoadedWeights, load_weights
from wnet_zoo.model.pretrained import describe_bundled, is_bundled
from wnet_zoo.training.config import DEFAULT_LR_FACTOR, TrainConfig, read_config_file, write_config_file
from wnet_zoo.training.data import prepare_data
from wnet_zoo.training.device import flush_denormals, resolve_bf16, resolve_device
from wnet_zoo.training.input_choices import (
    background_radius_for,
    choose_input_transform,
    input_sigma_for,
)
from wnet_zoo.training.loop import TrainResult, _Run

TRANSFORM_BUFFERS = ("input_sigma", "input_log", "input_background")  # the input transform's, in the state dict


def train(config: TrainConfig, out: str | Path, overwrite: bool = False, progress: bool = True) -> TrainResult:
    """Train WNet3D from scratch on ``config.images`` into the run directory ``out``.

    Training (this, :func:`finetune` and :func:`resume`) sets the process's PyTorch CPU arithmetic to flush
    denormal floats to zero (:func:`~wnet_zoo.training.device.flush_denormals`): call it before other PyTorch
    work for it to hold in every thread.

    Args:
        config: every training parameter (``config.images`` lists TIFF files or folders).
        out: the run directory to create.
        overwrite: replace an existing ``out``; otherwise an existing ``out`` is an error.
        progress: show a progress bar per epoch.

    Raises:
        UserError: bad images or options; nothing is written then.
    """
    flush_denormals()
    return _start(config, Path(out), overwrite, progress, initial=None)


def finetune(
    config: TrainConfig,
    source: str | Path,
    out: str | Path,
    lr_factor: float = DEFAULT_LR_FACTOR,
    overwrite: bool = False,
    progress: bool = True,
    weights: LoadedWeights | None = None,
) -> TrainResult:
    """Fine-tune pretrained weights from ``source``: ``"bundled"`` (the pretrained WNet3D that ships with
    wnet-zoo, :mod:`wnet_zoo.model.pretrained`) or anything :func:`~wnet_zoo.load_weights` reads.

    ``weights``, when given, are those already loaded from ``source`` (so a large archive is read once).

    The architecture (classes, channels) comes from the weights and replaces the config's in the configuration
    recorded (``config`` itself is left as it is). The input transform (smoothing, compression, background
    subtraction) is the weights' own, and an explicit ``config.input_smoothing``, ``input_log`` or
    ``input_background`` other than theirs is a ``UserError``; the bundled model, a starting point for any
    stack, was trained without one, and gets the transform training would choose for the images (or the
    config's). Training runs at ``lr = base_lr * lr_factor``, ``base_lr`` being ``config.base_lr`` or else
    ``config.lr`` (the training default 1e-3 unless changed), as CellSeg3D's page advises for retraining.
    """
    flush_denormals()
    bundled = is_bundled(source)
    initial = weights if weights is not None else load_weights(source)
    architecture = initial.architecture
    if architecture["in_channels"] != 1 or architecture["out_channels"] != 1:
        raise UserError(f"{source}: a WNet3D with {architecture['in_channels']} input channels; 1 is needed")
    transform = {}
    if not bundled:
        transform = {
            "input_smoothing": max(architecture["input_sigma"]),
            "input_log": float(architecture["input_log"]),
            "input_background": max(architecture["input_background"]),
        }
        for name, trained_with in transform.items():
            given = getattr(config, name)
            if given is not None and given != trained_with:
                raise UserError(
                    f"{setting(name, given)}: the weights were trained with {trained_with:g}; drop {setting(name)}"
                )
    base_lr = config.lr if config.base_lr is None else config.base_lr
    config = dataclasses.replace(
        config,
        channels=list(architecture["channels"]),
        num_classes=int(architecture["num_classes"]),
        from_weights=describe_bundled() if bundled else str(source),
        base_lr=base_lr,
        lr_factor=lr_factor,
        lr=base_lr * lr_factor,
        **transform,
    )
    return _start(config, Path(out), overwrite, progress, initial=initial, weights_transform=not bundled)


def resume(run_dir: str | Path, epochs: int | None = None, progress: bool = True) -> TrainResult:
    """Continue the run in ``run_dir`` from its ``last.pt``, up to ``epochs`` in total (default: as configured).

    Images and configuration come from the run directory; metrics.csv keeps one row per epoch in total.
    """
    flush_denormals()
    run_dir = Path(run_dir)
    last = run_dir / "last.pt"
    if not (run_dir / "config.yaml").is_file() or not last.is_file():
        raise UserError(f"{run_dir}: not a run directory with config.yaml and last.pt; nothing to resume")
    sweep_stale_parts(run_dir)  # a checkpoint-sized part of a run killed mid-save
    config = TrainConfig.from_dict(read_config_file(run_dir / "config.yaml"), source=str(run_dir / "config.yaml"))
    weights = load_weights(last)
    checkpoint = weights.checkpoint
    done = int(checkpoint.get("epoch", 0))
    if epochs is not None:
        if epochs < done:
            raise UserError(
                f"{setting('epochs', epochs)}: the run has done {done} epochs already; give at least {done}"
            )
        config = dataclasses.replace(config, epochs=epochs)
    data = prepare_data(config)
    device = resolve_device(config.device)
    write_config_file(config, run_dir / "config.yaml")
    architecture = weights.architecture
    run = _Run(
        config,
        run_dir,
        data,
        device,
        progress,
        tuple(architecture["input_sigma"]),
        architecture["input_log"],
        tuple(architecture["input_background"]),
    )
    run.restore(checkpoint)
    return run.fit()


def _start(
    config: TrainConfig,
    out: Path,
    overwrite: bool,
    progress: bool,
    initial: LoadedWeights | None,
    weights_transform: bool = True,
) -> TrainResult:
    config.validate()
    if out.exists() and not overwrite:
        raise UserError(
            f"{out} already exists; choose another {setting('out')}, pass {setting('overwrite', True)}, "
            f"or {setting('resume')} it"
        )
    check_can_create(out, setting("out"))
    data = prepare_data(config)
    device = resolve_device(config.device)
    config = dataclasses.replace(
        config,
        images=[str(p.resolve()) for p in data.paths],
        patch=list(data.patch),
        base_lr=config.lr if config.base_lr is None else config.base_lr,
        bf16=resolve_bf16(config.bf16, device),  # config.yaml records the precision used
    )
    config = choose_input_transform(config, data.volumes, data.spacing)
    if initial is not None and weights_transform:
        input_sigma = tuple(initial.architecture["input_sigma"])
        input_background = tuple(initial.architecture["input_background"])
    else:
        input_sigma = input_sigma_for(config.input_smoothing, data.spacing)
        input_background = background_radius_for(config.input_background, data.spacing)
    if out.exists():
        _check_replaceable(out, data.paths)
        shutil.rmtree(out)
    out.mkdir(parents=True)
    write_config_file(config, out / "config.yaml")
    run = _Run(config, out, data, device, progress, input_sigma, config.input_log, input_background)
    if initial is not None and weights_transform:
        run.model.load_state_dict(initial.state_dict, strict=True)
    elif initial is not None:  # the transform chosen anew: its buffers are the run's own
        transform = {key: value for key, value in run.model.state_dict().items() if key.endswith(TRANSFORM_BUFFERS)}
        state = {key: value for key, value in initial.state_dict.items() if not key.endswith(TRANSFORM_BUFFERS)}
        run.model.load_state_dict({**state, **transform}, strict=True)
    run.checks.start(data.screens)
    return run.fit()


def _check_replaceable(out: Path, inputs: list[Path]) -> None:
    """``--overwrite`` replaces earlier runs only: never a folder holding the inputs or other files."""
    target = out.resolve()
    for path in inputs:
        if target == path.resolve() or target in path.resolve().parents:
            raise UserError(
                f"{setting('out', out)} holds the input {path.name}; {setting('overwrite', True)} would delete it: "
                f"use another {setting('out')}"
            )
    if not out.is_dir() or (any(out.iterdir()) and not (out / "config.yaml").is_file()):
        raise UserError(
            f"{out} is not a wnet-zoo run directory; {setting('overwrite', True)} replaces runs only: "
            f"choose another {setting('out')}"
        )

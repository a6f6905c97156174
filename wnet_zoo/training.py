"""Self-supervised WNet3D training: SoftNCut on the encoder, reconstruction on the decoder.

A run directory holds ``config.yaml`` (the resolved config), ``metrics.csv`` (one row per epoch),
``loss.png`` (redrawn every epoch), ``train.log``, ``events.csv`` (what the training checks of
:mod:`wnet_zoo.checks` saw and did), ``last.pt`` and ``best.pt`` (lowest total loss).
Training starts from scratch (:func:`train`), from pretrained weights (:func:`finetune`) or from a run
directory's ``last.pt`` (:func:`resume`); a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from .atomic import atomic_path, check_can_create, sweep_stale_parts
from .checkpoints import LoadedWeights, load_weights, save_checkpoint
from .checks import TrainingChecks, VolumeScreen, check_usable, screen_volume, smoothed, usable_corners
from .config import TrainConfig, read_config_file, write_config_file
from .data import (
    PatchSampler,
    auto_input_log,
    auto_input_smoothing,
    check_volume,
    collect_images,
    compress_intensities,
    noise_level,
    parse_triple,
    read_stack,
    read_voxel_size,
    remap,
    resolve_patch,
)
from .errors import UserError
from .events import Event
from .losses import LossTerms, WNetLoss
from .model import WNet3D
from .nuclei import relative_spacing
from .plotting import plot_losses

LOG = logging.getLogger("wnet_zoo")
METRIC_COLUMNS = ("epoch", "ncut", "rec", "total", "lr", "base_lr", "seconds")


@dataclass
class TrainResult:
    """Where a finished run lives and how it ended."""

    run_dir: Path
    rows: list[dict[str, Any]]
    best_epoch: int
    events: list[Event] = field(default_factory=list)

    @property
    def best_checkpoint(self) -> Path:
        return self.run_dir / "best.pt"


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "--device cuda: PyTorch sees no CUDA GPU here; use --device cpu or install a CUDA build of torch"
        )
    return torch.device(name)


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast runs natively (AVX512-BF16/AMX CPUs, Ampere+ GPUs)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def resolve_bf16(requested: bool | None, device: torch.device) -> bool:
    """Whether training uses bf16 autocast: where ``device`` computes it natively, unless ``requested`` is False;
    ``requested`` True on a device without it trains in float32, with a warning."""
    supported = bf16_supported(device)
    if requested and not supported:
        LOG.warning("--bf16: this %s has no native bf16 support; training in float32", device.type.upper())
    return supported and requested is not False


class TrainingData(NamedTuple):
    """The training volumes (remapped to 0..100), their files and patch size, and their screening (when on):
    one :class:`~wnet_zoo.checks.VolumeScreen` and one array of usable patch positions per volume; the voxel
    size relative to its finest side (of the first volume that records one, else isotropic)."""

    paths: list[Path]
    volumes: list[np.ndarray]
    patch: tuple[int, int, int]
    screens: list[VolumeScreen]
    usable: list[np.ndarray] | None
    spacing: tuple[float, float, float]


def prepare_data(config: TrainConfig) -> TrainingData:
    """Read, screen and remap the training volumes and resolve the patch size; every check before anything
    is written (a volume without a usable patch is a ``UserError`` when ``config.screen``)."""
    paths = collect_images(config.images)
    volumes, screens, foregrounds = [], [], []
    for path in paths:
        raw = read_stack(path, config.channel)
        volume = check_volume(raw.astype(np.float32, copy=False), str(path))
        if config.screen:
            smooth = smoothed(raw)
            screens.append(screen_volume(raw, str(path), smooth))
            foregrounds.append(smooth > screens[-1].cut)
            del smooth
        volumes.append(remap(volume))
    sizes = [size for size in map(read_voxel_size, paths) if size is not None]
    spacing = relative_spacing(sizes[0][:3] if sizes else None)
    patch = resolve_patch(parse_triple(config.patch, "patch"), [v.shape for v in volumes])
    usable = None
    if config.screen:
        usable = []
        for foreground, screen in zip(foregrounds, screens, strict=True):
            usable.append(usable_corners(foreground, patch, config.min_foreground))
            check_usable(screen, usable[-1], patch)
    return TrainingData(paths, volumes, patch, screens, usable, spacing)


def input_sigma_for(smoothing: float | None, spacing: tuple[float, float, float]) -> tuple[float, float, float]:
    """The model's (z, y, x) input smoothing in voxels for a sigma of ``smoothing`` finest-axis voxels."""
    return (
        (0.0, 0.0, 0.0) if not smoothing else (smoothing / spacing[0], smoothing / spacing[1], smoothing / spacing[2])
    )


def choose_input_transform(config: TrainConfig, volumes: list[np.ndarray]) -> None:
    """Resolve ``config.input_log`` and then ``config.input_smoothing`` where they are None (auto), from the
    0..100 ``volumes``: the compression from the nuclei's brightness spread (:func:`~wnet_zoo.data.auto_input_log`),
    the smoothing from the noise of the volumes as compressed (:func:`~wnet_zoo.data.auto_input_smoothing`)."""
    if config.input_log is None:
        config.input_log, spreads = auto_input_log(volumes)
        if config.input_log:
            LOG.info(
                "nuclei differ widely in brightness (spread %s, see --help): the model compresses its input with a "
                "logarithm of offset %.3g (--input-log 0 turns this off)",
                ", ".join(f"{v:.1f}" for v in spreads),
                config.input_log,
            )
    if config.input_smoothing is None:
        noise = [noise_level(compress_intensities(v, config.input_log)) for v in volumes]
        config.input_smoothing = auto_input_smoothing(noise)
        if config.input_smoothing:
            LOG.info(
                "noisy images (voxel-to-voxel noise %s on the 0..100 scale): the model smooths its input by sigma "
                "%g voxel (--input-smoothing 0 turns this off)",
                ", ".join(f"{n:.1f}" for n in noise),
                config.input_smoothing,
            )


def train(config: TrainConfig, out: str | Path, overwrite: bool = False, progress: bool = True) -> TrainResult:
    """Train WNet3D from scratch on ``config.images`` into the run directory ``out``.

    Args:
        config: every training parameter (``config.images`` lists TIFF files or folders).
        out: the run directory to create.
        overwrite: replace an existing ``out``; otherwise an existing ``out`` is an error.
        progress: show a progress bar per epoch.

    Raises:
        UserError: bad images or options; nothing is written then.
    """
    return _start(config, Path(out), overwrite, progress, initial=None)


def finetune(
    config: TrainConfig,
    source: str | Path,
    out: str | Path,
    lr_factor: float = 0.1,
    overwrite: bool = False,
    progress: bool = True,
    weights: LoadedWeights | None = None,
) -> TrainResult:
    """Fine-tune pretrained weights from ``source`` (anything :func:`~wnet_zoo.load_weights` reads).

    ``weights``, when given, are those already loaded from ``source`` (so a large archive is read once).

    The architecture (classes, channels, input smoothing) comes from the weights and replaces the config's
    (an explicit ``config.input_smoothing`` other than the weights' is a ``UserError``). Training runs
    at ``lr = base_lr * lr_factor``, ``base_lr`` being ``config.base_lr`` or else ``config.lr`` (the
    training default 1e-3 unless changed): 1e-4 by default, as CellSeg3D's page advises for retraining.
    """
    initial = weights if weights is not None else load_weights(source)
    config.channels = list(initial.architecture["channels"])
    config.num_classes = int(initial.architecture["num_classes"])
    config.from_weights = str(source)
    config.base_lr = config.lr if config.base_lr is None else config.base_lr
    config.lr_factor = lr_factor
    config.lr = config.base_lr * lr_factor
    if initial.architecture["in_channels"] != 1 or initial.architecture["out_channels"] != 1:
        raise UserError(f"{source}: a WNet3D with {initial.architecture['in_channels']} input channels; 1 is needed")
    trained_with = max(initial.architecture["input_sigma"])
    if config.input_smoothing is not None and config.input_smoothing != trained_with:
        raise UserError(
            f"--input-smoothing {config.input_smoothing:g}: the weights were trained with {trained_with:g}; "
            "drop --input-smoothing"
        )
    config.input_smoothing = trained_with
    compressed_with = float(initial.architecture["input_log"])
    if config.input_log is not None and config.input_log != compressed_with:
        raise UserError(
            f"--input-log {config.input_log:g}: the weights were trained with {compressed_with:g}; drop --input-log"
        )
    config.input_log = compressed_with
    return _start(config, Path(out), overwrite, progress, initial=initial)


def resume(run_dir: str | Path, epochs: int | None = None, progress: bool = True) -> TrainResult:
    """Continue the run in ``run_dir`` from its ``last.pt``, up to ``epochs`` in total (default: as configured).

    Images and configuration come from the run directory; metrics.csv keeps one row per epoch in total.
    """
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
            raise UserError(f"--epochs {epochs}: the run has done {done} epochs already; give at least {done}")
        config.epochs = epochs
    data = prepare_data(config)
    device = resolve_device(config.device)
    write_config_file(config, run_dir / "config.yaml")
    architecture = weights.architecture
    run = _Run(config, run_dir, data, device, progress, tuple(architecture["input_sigma"]), architecture["input_log"])
    run.restore(checkpoint)
    return run.fit()


def _start(
    config: TrainConfig, out: Path, overwrite: bool, progress: bool, initial: LoadedWeights | None
) -> TrainResult:
    config.validate()
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; choose another --out, pass --overwrite, or --resume it")
    check_can_create(out, "--out")
    data = prepare_data(config)
    device = resolve_device(config.device)
    config.images = [str(p.resolve()) for p in data.paths]
    config.patch = list(data.patch)
    if config.base_lr is None:
        config.base_lr = config.lr
    config.bf16 = resolve_bf16(config.bf16, device)  # config.yaml records the precision used
    choose_input_transform(config, data.volumes)
    if initial is not None:
        input_sigma = tuple(initial.architecture["input_sigma"])
    else:
        input_sigma = input_sigma_for(config.input_smoothing, data.spacing)
    if out.exists():
        _check_replaceable(out, data.paths)
        shutil.rmtree(out)
    out.mkdir(parents=True)
    write_config_file(config, out / "config.yaml")
    run = _Run(config, out, data, device, progress, input_sigma, config.input_log)
    if initial is not None:
        run.model.load_state_dict(initial.state_dict, strict=True)
    run.checks.start(data.screens)
    return run.fit()


def _check_replaceable(out: Path, inputs: list[Path]) -> None:
    """``--overwrite`` replaces earlier runs only: never a folder holding the inputs or other files."""
    target = out.resolve()
    for path in inputs:
        if target == path.resolve() or target in path.resolve().parents:
            raise UserError(f"--out {out} holds the input {path.name}; --overwrite would delete it: use another --out")
    if not out.is_dir() or (any(out.iterdir()) and not (out / "config.yaml").is_file()):
        raise UserError(f"{out} is not a wnet-zoo run directory; --overwrite replaces runs only: choose another --out")


class TrainingStep:
    """One optimisation step of WNet3D: forward (optionally under bf16 autocast), both losses, backward, Adam."""

    def __init__(self, model: WNet3D, optimizer: torch.optim.Optimizer, loss: WNetLoss, bf16: bool = False) -> None:
        self.model, self.optimizer, self.loss, self.bf16 = model, optimizer, loss, bf16
        self.device = next(model.parameters()).device
        self.float32_redone = 0

    @classmethod
    def from_config(
        cls,
        config: TrainConfig,
        device: torch.device,
        input_sigma: tuple[float, float, float] = (0.0, 0.0, 0.0),
        input_log: float = 0.0,
    ) -> TrainingStep:
        """A freshly initialised model (channels-last on the device) compressing its input with a logarithm of
        offset ``input_log`` and smoothing it by ``input_sigma`` ((z, y, x) voxels), Adam and the loss of
        ``config``."""
        model = WNet3D(
            num_classes=config.num_classes,
            channels=config.channels,
            dropout=config.dropout,
            input_sigma=input_sigma,
            input_log=input_log,
        )
        # channels-last halves the time of the 3-D convolutions' backward pass on CPUs (oneDNN)
        model.to(device, memory_format=torch.channels_last_3d)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        loss = WNetLoss(
            intensity_sigma=config.intensity_sigma,
            spatial_sigma=config.spatial_sigma,
            radius=config.radius,
            ncut_weight=config.ncut_weight,
            rec_weight=config.rec_weight,
            rec_loss=config.rec_loss,
        )
        return cls(model, optimizer, loss, resolve_bf16(config.bf16, device))

    def __call__(
        self,
        image: torch.Tensor,
        accept: Callable[[dict[str, float]], bool] | None = None,
        probe: bool = False,
    ) -> dict[str, Any]:
        """Train on a batch (B, 1, Z, Y, X) on the 0..100 scale.

        Args:
            image: the batch.
            accept: called with the loss terms (floats) before the update; when it returns False, nothing
                is updated and the result holds the terms and ``applied`` False.
            probe: also measure the gradient norm of each weighted term at the encoder's last convolution
                (``ncut_grad``, ``rec_grad``): two extra backward passes, the update unchanged.

        Returns the loss terms (``ncut``, ``rec``, ``total`` as floats), ``applied`` and, per class, the summed
        probability (``class_weight``) and probability-weighted intensity (``class_intensity``).
        """
        image = image.to(self.device, memory_format=torch.channels_last_3d)
        rng = _rng_state() if self.bf16 else None
        with self._autocast():
            probabilities, reconstruction = self.model(image)
        probabilities = probabilities.float()
        target = self.target(image)
        terms = self.loss(probabilities, reconstruction.float(), target)
        if accept is not None and not accept(_floats(terms)):
            return {**_floats(terms), "applied": False}
        probed = self.gradient_norms(terms) if probe else {}
        self.optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        if rng is not None and not self._finite_gradients():
            probabilities, terms, probed = self._redo_in_float32(image, target, rng, probe)
        self.optimizer.step()
        with torch.no_grad():
            detached = probabilities.detach()
            class_weight = detached.sum(dim=(0, 2, 3, 4)).double().cpu()
            class_intensity = (detached * target).sum(dim=(0, 2, 3, 4)).double().cpu()
        return {
            **_floats(terms),
            "applied": True,
            "class_weight": class_weight,
            "class_intensity": class_intensity,
            **probed,
        }

    @torch.no_grad()
    def target(self, image: torch.Tensor) -> torch.Tensor:
        """What the losses compare with: the image as the encoder sees it (compressed and smoothed, when the
        model does either)."""
        return self.model.encoder.prepare(image)

    def _finite_gradients(self) -> bool:
        return all(bool(torch.isfinite(p.grad).all()) for p in self.model.parameters() if p.grad is not None)

    def _redo_in_float32(
        self, image: torch.Tensor, target: torch.Tensor, rng: dict[str, Any], probe: bool
    ) -> tuple[torch.Tensor, LossTerms, dict[str, float]]:
        """The step's forward and backward again in float32, from the random state the step started with (the
        dropout a float32 step draws): oneDNN's bf16 backward of 3-D convolutions now and then returns NaN weight
        gradients on small feature maps (a depth of 2), where float32 gives finite ones; without this, the
        explosion guard would take it for a diverging run."""
        if not self.float32_redone:
            LOG.info("bf16 autocast gave non-finite gradients; such steps are redone in float32")
        self.float32_redone += 1
        _set_rng_state(rng)
        self.optimizer.zero_grad(set_to_none=True)
        probabilities, reconstruction = self.model(image)
        terms = self.loss(probabilities, reconstruction, target)
        probed = self.gradient_norms(terms) if probe else {}  # autograd.grad: leaves .grad as it is
        terms.total.backward()
        return probabilities, terms, probed

    def gradient_norms(self, terms: LossTerms) -> dict[str, float]:
        """Norms of the gradients of ``ncut_weight * ncut`` and ``rec_weight * rec`` w.r.t. the weights of the
        encoder's last convolution, where both terms reach the encoder (the graph is kept for the update)."""
        head = self.model.encoder.out_b.module[-1].weight
        norms = {}
        for name, term in (
            ("ncut_grad", self.loss.ncut_weight * terms.ncut),
            ("rec_grad", self.loss.rec_weight * terms.rec),
        ):
            (grad,) = torch.autograd.grad(term, head, retain_graph=True, allow_unused=True)
            norms[name] = 0.0 if grad is None else grad.norm().item()
        return norms

    @torch.no_grad()
    def evaluate(self, image: torch.Tensor) -> dict[str, Any]:
        """The loss terms of a batch in eval mode (no dropout, no update, no random numbers drawn), with the
        ``probabilities`` and the ``reconstruction`` (float32 tensors on the CPU)."""
        training = self.model.training
        self.model.eval()
        try:
            image = image.to(self.device, memory_format=torch.channels_last_3d)
            with self._autocast():
                probabilities, reconstruction = self.model(image)
            probabilities, reconstruction = probabilities.float(), reconstruction.float()
            terms = self.loss(probabilities, reconstruction, self.target(image))
        finally:
            self.model.train(training)
        return {**_floats(terms), "probabilities": probabilities.cpu(), "reconstruction": reconstruction.cpu()}

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()


def _floats(terms: LossTerms) -> dict[str, float]:
    return {"ncut": terms.ncut.item(), "rec": terms.rec.item(), "total": terms.total.item()}


class _Sums:
    """Loss sums and per-class sums over the steps of an epoch that count."""

    def __init__(self, num_classes: int) -> None:
        self.steps = 0
        self.losses = {"ncut": 0.0, "rec": 0.0, "total": 0.0}
        self.class_weight = torch.zeros(num_classes, dtype=torch.float64)
        self.class_intensity = torch.zeros(num_classes, dtype=torch.float64)

    def add(self, terms: dict[str, Any]) -> None:
        self.steps += 1
        for key in self.losses:
            self.losses[key] += terms[key]
        self.class_weight += terms["class_weight"]
        self.class_intensity += terms["class_intensity"]

    def merge(self, other: _Sums) -> None:
        self.steps += other.steps
        for key in self.losses:
            self.losses[key] += other.losses[key]
        self.class_weight += other.class_weight
        self.class_intensity += other.class_intensity

    def means(self) -> dict[str, float]:
        return {key: value / self.steps if self.steps else math.nan for key, value in self.losses.items()}


class _Run:
    """The state of one training run."""

    def __init__(
        self,
        config: TrainConfig,
        out: Path,
        data: TrainingData,
        device: torch.device,
        progress: bool,
        input_sigma: tuple[float, float, float],
        input_log: float = 0.0,
    ) -> None:
        self.config, self.out, self.device, self.progress = config, out, device, progress
        _seed_everything(config.seed)
        self.step = TrainingStep.from_config(config, device, input_sigma, input_log)
        self.model, self.optimizer = self.step.model, self.step.optimizer
        self.sampler = PatchSampler(
            data.volumes,
            tuple(config.patch),
            config.samples_per_epoch,
            config.batch,
            config.seed,  # type: ignore[arg-type]
            usable=data.usable,
            skip_empty=config.skip_empty_patches,
        )
        self.checks = TrainingChecks(config, self.step, data.volumes, out)
        self.rows: list[dict[str, Any]] = []
        self.best_total = float("inf")
        self.best_epoch = 0

    def fit(self) -> TrainResult:
        log_file = logging.FileHandler(self.out / "train.log")
        log_file.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        LOG.addHandler(log_file)
        try:
            LOG.info(
                "training WNet3D %s on %d volume(s), patch %s, %d steps/epoch, device %s%s",
                ",".join(map(str, self.config.channels)),
                len(self.sampler.volumes),
                self.config.patch,
                self.sampler.steps_per_epoch(),
                self.device,
                " (bf16)" if self.step.bf16 else "",
            )
            if self.model.input_log:
                LOG.info(
                    "the model compresses its input with a logarithm of offset %.3g, in training and in its exports",
                    self.model.input_log,
                )
            if any(self.model.input_sigma):
                LOG.info(
                    "the model smooths its input by sigma %s voxels (z, y, x), in training and in its exports",
                    ", ".join(f"{s:g}" for s in self.model.input_sigma),
                )
            for epoch in range(len(self.rows), self.config.epochs):
                if self._epoch(epoch):
                    break
        finally:
            LOG.removeHandler(log_file)
            log_file.close()
        return TrainResult(self.out, self.rows, self.best_epoch, list(self.checks.events))

    def _epoch(self, epoch: int) -> bool:
        """Train one epoch; True when a check ends training. Steps rolled back by the explosion guard do not
        count in the epoch's row."""
        start = time.perf_counter()
        self.model.train()
        kept, pending = _Sums(self.config.num_classes), _Sums(self.config.num_classes)
        grads = None
        steps = self.sampler.steps_per_epoch()
        bar = tqdm(
            self.sampler.epoch(epoch),
            total=steps,
            desc=f"epoch {epoch + 1}/{self.config.epochs}",
            disable=not self.progress,
            leave=False,
            unit="step",
        )
        for index, batch in enumerate(bar):
            number = epoch * steps + index + 1
            if index == 0:
                self.checks.add_sampler_counts(self.sampler.counts)
            self.checks.screen_batch(batch)
            terms = self.step(
                torch.from_numpy(batch), accept=self.checks.accept(number), probe=self.checks.probe(index)
            )
            if not terms["applied"]:
                self.checks.exploded(epoch + 1, number)
                pending = _Sums(self.config.num_classes)
                continue
            if self.checks.guard is not None and self.checks.guard.snapshot_taken:
                kept.merge(pending)
                pending = _Sums(self.config.num_classes)
            pending.add(terms)
            if "ncut_grad" in terms:
                grads = (terms["ncut_grad"], terms["rec_grad"])
            bar.set_postfix(ncut=f"{terms['ncut']:.4f}", rec=f"{terms['rec']:.4g}")
        if self.checks.verify_epoch(epoch + 1, (epoch + 1) * steps, batch):
            kept.merge(pending)
        self.class_weight, self.class_intensity = kept.class_weight, kept.class_intensity
        row = {"epoch": epoch + 1, **kept.means()}
        row["lr"] = self.optimizer.param_groups[0]["lr"]
        row["base_lr"] = self.config.base_lr
        row["seconds"] = round(time.perf_counter() - start, 3)
        self.rows.append(row)
        stop, reweighted = self.checks.end_epoch(epoch + 1, (epoch + 1) * steps, self.rows, grads)
        self._save(epoch + 1, row, reset_best=reweighted)
        skipped = self.sampler.counts.get("skipped", 0)
        LOG.info(
            "epoch %d/%d  ncut %.5f  rec %.5g  total %.5g  (%.1f s%s)",
            epoch + 1,
            self.config.epochs,
            row["ncut"],
            row["rec"],
            row["total"],
            row["seconds"],
            f", {skipped} almost-empty patch(es) skipped" if skipped else "",
        )
        return stop

    def _save(self, epoch: int, row: dict[str, Any], reset_best: bool = False) -> None:
        _write_metrics(self.rows, self.out / "metrics.csv")
        plot_losses(self.rows, self.out / "loss.png")
        is_best = row["total"] < self.best_total
        if is_best:
            self.best_total, self.best_epoch = row["total"], epoch
        if reset_best:  # the reconstruction weight changed: later totals do not compare with earlier ones
            self.best_total = float("inf")
        payload = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": epoch,
            "config": self.config.to_dict(),
            "rng": _rng_state(),
            "best_total": self.best_total,
            "best_epoch": self.best_epoch,
            "rows": self.rows,
            "checks": self.checks.state_dict(),
            **self.class_summary(),
        }
        save_checkpoint(self.out / "last.pt", payload)
        if is_best:
            save_checkpoint(self.out / "best.pt", payload)

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a ``last.pt`` payload: weights, optimizer, metrics so far, best and RNG states."""
        self.model.load_state_dict(checkpoint["model"], strict=True)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.rows = [dict(row) for row in checkpoint["rows"]]
        self.best_total = float(checkpoint["best_total"])
        self.best_epoch = int(checkpoint["best_epoch"])
        _set_rng_state(checkpoint["rng"])
        _write_metrics(self.rows, self.out / "metrics.csv")  # drops rows written after the checkpoint
        self.checks.load_state_dict(checkpoint.get("checks"))  # and events

    def class_summary(self) -> dict[str, Any]:
        """Mean image intensity (0..100) of each class over the last epoch, weighted by its probability,
        and the foreground class: the brightest one (nuclei are bright in fluorescence)."""
        means = (self.class_intensity / self.class_weight.clamp_min(1e-12)).tolist()
        return {"class_means": means, "foreground_class": int(max(range(len(means)), key=means.__getitem__))}


def _write_metrics(rows: list[dict[str, Any]], path: Path) -> None:
    with atomic_path(path) as part, part.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state

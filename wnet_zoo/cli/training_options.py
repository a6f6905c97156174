"""The options ``train`` and ``finetune`` share, and the :class:`~wnet_zoo.train.config.TrainConfig` they build."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from wnet_zoo.errors import UserError
from wnet_zoo.train.config import TrainConfig, read_config_file

_DEFAULTS = TrainConfig()


def _csv_ints(value: str | None, name: str) -> list[int] | None:
    if value is None or isinstance(value, list):
        return value
    try:
        return [int(part) for part in str(value).split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--{name} {value!r}: give comma-separated integers, e.g. 64,128,256,512") from None


def training_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of every training parameter, shared by the commands that train."""
    d = _DEFAULTS
    options = [
        click.option(
            "--config",
            "config_file",
            type=click.Path(dir_okay=False),
            help="YAML file with any of these options (keys as option names); the command line wins.",
        ),
        click.option("--channel", type=int, default=None, help="Channel of 4-D (C, Z, Y, X) stacks to train on."),
        click.option(
            "--num-classes",
            type=int,
            default=d.num_classes,
            show_default=True,
            help="K, the classes the encoder segments into.",
        ),
        click.option(
            "--rec-loss",
            type=click.Choice(["mse", "bce"]),
            default=d.rec_loss,
            show_default=True,
            help="Reconstruction loss of the decoder.",
        ),
        click.option(
            "--intensity-sigma",
            type=float,
            default=d.intensity_sigma,
            show_default=True,
            help="SoftNCut intensity sigma.",
        ),
        click.option(
            "--input-smoothing",
            type=float,
            default=d.input_smoothing,
            metavar="SIGMA",
            help="Gaussian sigma (voxels along the finest axis) the model smooths its input with, in training and "
            "in every export. Default: 1 for noisy stacks (voxel-to-voxel noise of at least 4 on the 0..100 "
            "scale, measured after any --input-log), 2 from a noise of 8, up to 4; else 0 (off, as in CellSeg3D).",
        ),
        click.option(
            "--input-log",
            type=float,
            default=d.input_log,
            metavar="OFFSET",
            help="Compress the model's input (0..100) with 100*log(1+x/OFFSET)/log(1+100/OFFSET), in training and "
            "in every export. Default: the image's median when its nuclei differ widely in brightness (the 95th "
            "percentile of their brightness above background at least 2.5x the 25th: dim nuclei beside bright or "
            "over-exposed ones, uneven illumination), else 0 (off, as in CellSeg3D).",
        ),
        click.option(
            "--spatial-sigma",
            type=float,
            default=d.spatial_sigma,
            show_default=True,
            help="SoftNCut spatial sigma (voxels).",
        ),
        click.option(
            "--radius",
            type=int,
            default=d.radius,
            show_default=True,
            help="SoftNCut neighbourhood radius (voxels).",
        ),
        click.option(
            "--ncut-weight",
            type=float,
            default=d.ncut_weight,
            show_default=True,
            help="Weight of the SoftNCut loss.",
        ),
        click.option(
            "--rec-weight",
            type=float,
            default=d.rec_weight,
            show_default=True,
            help="Weight of the reconstruction loss.",
        ),
        click.option("--epochs", type=int, default=d.epochs, show_default=True, help="Epochs to train."),
        click.option(
            "--patch",
            default=None,
            help="Patch size, one size or z,y,x (multiples of 8). Default: 64, clipped to the smallest volume.",
        ),
        click.option(
            "--samples-per-epoch",
            type=int,
            default=d.samples_per_epoch,
            show_default=True,
            help="Random patches per volume in one epoch.",
        ),
        click.option("--batch", type=int, default=d.batch, show_default=True, help="Patches per step."),
        click.option("--lr", type=float, default=d.lr, show_default=True, help="Adam learning rate."),
        click.option(
            "--weight-decay", type=float, default=d.weight_decay, show_default=True, help="Adam weight decay."
        ),
        click.option(
            "--channels",
            default=",".join(map(str, d.channels)),
            show_default=True,
            help="Widths of the four U-Net levels, comma-separated (tiny models: 4,8,16,32).",
        ),
        click.option("--dropout", type=float, default=d.dropout, show_default=True, help="Dropout probability."),
        click.option("--seed", type=int, default=d.seed, show_default=True, help="Random seed."),
        click.option(
            "--device",
            type=click.Choice(["auto", "cpu", "cuda"]),
            default=d.device,
            show_default=True,
            help="Where to train.",
        ),
        click.option(
            "--bf16/--no-bf16",
            default=d.bf16,
            help="bfloat16 autocast. Default: where the CPU (AVX512-BF16, AMX) or GPU computes it natively.",
        ),
        click.option(
            "--screen/--no-screen",
            default=d.screen,
            show_default=True,
            help="Screen volumes and patches: over-exposure, (almost) empty content, low contrast.",
        ),
        click.option(
            "--skip-empty-patches/--keep-empty-patches",
            default=d.skip_empty_patches,
            show_default=True,
            help="Replace almost-empty patches by ones with foreground.",
        ),
        click.option(
            "--min-foreground",
            type=float,
            default=d.min_foreground,
            show_default=True,
            help="Share of foreground voxels below which a patch is almost empty.",
        ),
        click.option(
            "--plateau-window",
            type=int,
            default=d.plateau_window,
            show_default=True,
            help="Epochs of the SoftNCut moving mean for plateau detection (0: off).",
        ),
        click.option(
            "--plateau-tolerance",
            type=float,
            default=d.plateau_tolerance,
            show_default=True,
            help="Fall of that mean between two windows below which the loss has plateaued.",
        ),
        click.option(
            "--stop-at-plateau/--no-stop-at-plateau",
            default=d.stop_at_plateau,
            show_default=True,
            help="End training when the SoftNCut loss plateaus (best.pt: the lowest total loss).",
        ),
        click.option(
            "--explosion-guard/--no-explosion-guard",
            default=d.explosion_guard,
            show_default=True,
            help="Roll back and halve the learning rate when a loss explodes.",
        ),
        click.option(
            "--max-explosions",
            type=int,
            default=d.max_explosions,
            show_default=True,
            help="Explosions in a row after which training stops (exit code 1).",
        ),
        click.option(
            "--balance-check/--no-balance-check",
            default=d.balance_check,
            show_default=True,
            help="Measure the loss terms' shares; advise at a plateau when NCut takes over.",
        ),
        click.option("--auto-balance", is_flag=True, help="Raise the reconstruction weight when NCut takes over."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def config_from_options(ctx: click.Context, images: tuple[str, ...], options: dict[str, Any]) -> TrainConfig:
    """Merge a ``--config`` file with the options the user typed (typed options win)."""
    from wnet_zoo.triples import parse_triple

    values: dict[str, Any] = {}
    config_file = options.pop("config_file", None)
    if config_file:
        values.update({str(k).replace("-", "_"): v for k, v in read_config_file(config_file).items()})
    for name, value in options.items():
        typed = ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT
        if name not in values or typed:
            values[name] = value
        # a typed option's mistake is named as the option; a config file's by the file and key (from_dict)
        if typed and name == "channels":
            values[name] = _csv_ints(value, name)
        if typed and name == "patch":
            parse_triple(value, name)
    if images:
        values["images"] = list(images)
    return TrainConfig.from_dict(values, source=config_file or "options")

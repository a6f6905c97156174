"""``wnet-zoo train`` and ``wnet-zoo finetune``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from wnet_zoo.cli.training_options import _DEFAULTS, _csv_ints, config_from_options, training_options
from wnet_zoo.errors import UserError
from wnet_zoo.model.pretrained import BUNDLED
from wnet_zoo.training.config import DEFAULT_LR_FACTOR

if TYPE_CHECKING:
    from wnet_zoo.training.loop import TrainResult


@click.command()
@click.argument("images", nargs=-1)
@click.option("--out", type=click.Path(file_okay=False), help="Run directory to create.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(file_okay=False),
    help="Continue the run in this directory from its last.pt (no IMAGES, no --out; --epochs may raise the total).",
)
@training_options
@click.pass_context
def train(
    ctx: click.Context,
    images: tuple[str, ...],
    out: str | None,
    overwrite: bool,
    resume_dir: str | None,
    **options: Any,
) -> None:
    """Train WNet3D from scratch on IMAGES (3-D TIFF files or folders of them).

    \b
    Examples:
      wnet-zoo train stacks/ --out runs/nuclei --epochs 30 --patch 64
      wnet-zoo train --resume runs/nuclei --epochs 60
    """
    from wnet_zoo.training.runs import resume
    from wnet_zoo.training.runs import train as run_training

    if resume_dir is not None:
        typed = [name for name in options if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT]
        if images or out or overwrite or set(typed) - {"epochs"}:
            raise click.UsageError("--resume takes the images and options of the run; only --epochs may be given")
        epochs = options["epochs"] if "epochs" in typed else None
        _report(resume(Path(resume_dir), epochs=epochs))
        return
    if out is None:
        raise click.UsageError("give IMAGES and --out (or --resume RUN_DIR)")
    config = config_from_options(ctx, images, options)
    if not config.images:
        raise click.UsageError("give IMAGES (or an images key in --config) and --out")
    _report(run_training(config, Path(out), overwrite=overwrite))


@click.command()
@click.argument("images", nargs=-1, required=True)
@click.option(
    "--from",
    "source",
    default=BUNDLED,
    show_default=True,
    help=(
        "Pretrained weights: bundled (the compact WNet3D that ships with wnet-zoo), a run directory, checkpoint, "
        "CellSeg3D .pth, bioimage.io package, or cellseg3d:wnet3d (downloaded once)."
    ),
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to create.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
@click.option(
    "--lr-factor",
    type=float,
    default=DEFAULT_LR_FACTOR,
    show_default=True,
    help="Learning rate = factor x the training default.",
)
@training_options
@click.pass_context
def finetune(
    ctx: click.Context,
    images: tuple[str, ...],
    source: str,
    out: str,
    overwrite: bool,
    lr_factor: float,
    **options: Any,
) -> None:
    """Fine-tune pretrained weights on IMAGES at a lowered learning rate: by default the bundled pretrained
    WNet3D, whose input transform is chosen for IMAGES as training from scratch would.

    The architecture is read from the weights. Resume an interrupted run with 'wnet-zoo train --resume'.

    \b
    Examples:
      wnet-zoo finetune stacks/ --out runs/tuned
      wnet-zoo finetune stacks/ --from cellseg3d_wnet.pth --out runs/tuned --epochs 20
      wnet-zoo finetune stacks/ --from cellseg3d:wnet3d --out runs/tuned   # CellSeg3D's published weights
    """
    from wnet_zoo.io.download import resolve_source
    from wnet_zoo.model.checkpoints import load_weights
    from wnet_zoo.training.runs import finetune as run_finetune

    source = resolve_source(source)
    weights = load_weights(source)
    architecture = weights.architecture
    for name in ("channels", "num_classes"):
        given = _csv_ints(options[name], name) if name == "channels" else options[name]
        if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT and given != architecture[name]:
            flag = name.replace("_", "-")
            raise UserError(
                f"--{flag} {options[name]} does not match the weights ({architecture[name]}); drop --{flag}"
            )
    lr_given = ctx.get_parameter_source("lr") != click.core.ParameterSource.DEFAULT
    if lr_given and ctx.get_parameter_source("lr_factor") != click.core.ParameterSource.DEFAULT:
        raise UserError("--lr sets the rate outright and --lr-factor scales the base rate; give one of them")
    config = config_from_options(ctx, images, {**options, "lr": _DEFAULTS.lr} if lr_given else options)
    base = config.base_lr if config.base_lr is not None else config.lr
    factor = options["lr"] / base if lr_given else lr_factor
    _report(run_finetune(config, source, Path(out), lr_factor=factor, overwrite=overwrite, weights=weights))


def _report(result: TrainResult) -> None:
    last = result.rows[-1]
    click.echo(
        f"done: {len(result.rows)} epochs, final ncut {last['ncut']:.4f}, rec {last['rec']:.4g}; "
        f"best epoch {result.best_epoch}\nrun directory: {result.run_dir}"
    )
    if result.events:
        click.echo(f"{len(result.events)} troubleshooting event(s) in events.csv: wnet-zoo report {result.run_dir}")

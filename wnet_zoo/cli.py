"""The ``wnet-zoo`` command line: a thin click layer over the Python API.

User mistakes print one ``Error:`` line (plus a hint line for usage errors) and exit with code 2.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .config import TrainConfig, read_config_file
from .errors import Terminated, TrainingDiverged, UserError
from .version import __version__

if TYPE_CHECKING:
    from .training import TrainResult

LOG = logging.getLogger("wnet_zoo")
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
    from .data import parse_triple

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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="wnet-zoo")
def cli() -> None:
    """WNet3D self-supervised 3-D nuclei segmentation: train, export to bioimage.io, predict with ONNX."""


@cli.command()
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
    from .training import resume
    from .training import train as run_training

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


@cli.command()
@click.argument("images", nargs=-1, required=True)
@click.option(
    "--from",
    "source",
    required=True,
    help="Pretrained weights: run directory, checkpoint, CellSeg3D .pth, or cellseg3d:wnet3d (downloaded once).",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to create.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
@click.option(
    "--lr-factor", type=float, default=0.1, show_default=True, help="Learning rate = factor x the training default."
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
    """Fine-tune pretrained weights on IMAGES at a lowered learning rate.

    The architecture is read from the weights. Resume an interrupted run with 'wnet-zoo train --resume'.

    \b
    Examples:
      wnet-zoo finetune stacks/ --from cellseg3d_wnet.pth --out runs/tuned --epochs 20
      wnet-zoo finetune stacks/ --from cellseg3d:wnet3d --out runs/tuned   # CellSeg3D's published weights
    """
    from .checkpoints import load_weights
    from .download import resolve_source
    from .training import finetune as run_finetune

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


@cli.command()
@click.option(
    "--out",
    default="wnet-zoo-demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for the demo's results.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
def demo(out: str, overwrite: bool) -> None:
    """Run the whole job on the bundled example volume: a short training on 2 CPU cores."""
    from .demo import run_demo

    result = run_demo(Path(out), overwrite=overwrite)
    click.echo(result.summary())


@cli.command()
@click.argument("model")
@click.argument("images", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the results.")
@click.option(
    "--output",
    "outputs",
    multiple=True,
    type=click.Choice(["probabilities", "mask", "instances"]),
    help="Result to write, repeatable: probabilities, mask, instances (+ labels CSV). Default: mask and instances.",
)
@click.option("--channel", type=int, default=None, help="Channel of 4-D (C, Z, Y, X) stacks.")
@click.option(
    "--device",
    type=click.Choice(["auto", "cuda", "tensorrt", "openvino", "cpu"]),
    default="auto",
    show_default=True,
    help="auto: TensorRT or CUDA with a GPU, else OpenVINO when installed, else CPU.",
)
@click.option("--threads", type=click.IntRange(min=0), default=None, help="CPU threads. Default (and 0): all cores.")
@click.option("--tile", default=None, help="Window, one size or z,y,x (multiples of 8). Default: training patch or 64.")
@click.option("--overlap", type=float, default=0.25, show_default=True, help="Fraction of a window shared.")
@click.option(
    "--blend",
    type=click.Choice(["gaussian", "constant"]),
    default="gaussian",
    show_default=True,
    help="Weighting of overlapping windows: MONAI's Gaussian (sigma 0.125 of the window) or flat.",
)
@click.option(
    "--norm",
    type=click.Choice(["global", "tile"]),
    default="global",
    show_default=True,
    help="Remap to 0..100 over the whole volume (as trained) or per window (for comparison).",
)
@click.option("--batch", type=int, default=None, help="Windows per engine run. Default: 4 on GPUs, 1 on CPUs.")
@click.option("--foreground-class", type=int, default=None, help="Nuclei class. Default: metadata, else brightest.")
@click.option("--min-size", type=int, default=10, show_default=True, help="Smallest nucleus kept, in voxels.")
@click.option(
    "--relative-min-size",
    type=float,
    default=0.1,
    show_default=True,
    help="Also drop nuclei under this fraction of the typical nucleus volume (0: off).",
)
@click.option(
    "--boundary",
    type=click.Choice(["half-max", "mask"]),
    default="half-max",
    show_default=True,
    help="Nucleus edges where the smoothed image is halfway up from the surroundings, or the model's mask as is.",
)
@click.option("--voxel-size", default=None, help="z,y,x voxel size. Default: the TIFF's metadata, else isotropic.")
@click.option("--level", type=int, default=None, help="Resolution level of OME-Zarr images. Default: 0 (full).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["zarr", "tiff"]),
    default=None,
    help="Result format. Default: zarr for zarr inputs, TIFF otherwise.",
)
@click.option(
    "--stream/--no-stream",
    default=None,
    help="Predict block by block in bounded memory. Default: for zarr, Dask, --resume, volumes too big for memory.",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted streaming prediction, skipping finished blocks.")
@click.option("--scheduler", default=None, help="Run blocks on Dask: local:N (N local workers) or tcp://HOST:PORT.")
@click.option("--block", type=int, default=192, show_default=True, help="Streaming output block edge, multiple of 64.")
@click.option(
    "--instance-halo", type=int, default=24, show_default=True, help="Voxels around a block when splitting nuclei."
)
@click.option("--overwrite", is_flag=True, help="Replace existing results.")
def predict(
    model: str,
    images: tuple[str, ...],
    out: str,
    block: int,
    instance_halo: int,
    min_size: int,
    relative_min_size: float,
    boundary: str,
    **options: Any,
) -> None:
    """Segment IMAGES (3-D TIFF files, zarr / OME-Zarr volumes, or folders) with MODEL (.onnx or bioimage.io).

    \b
    Examples:
      wnet-zoo predict model.onnx stacks/ --out results --output probabilities --output instances
      wnet-zoo predict model.onnx brain.ome.zarr --out results --scheduler local:4
    """
    from .nuclei import NucleiOptions
    from .outputs import predict_files
    from .streaming import StreamOptions

    options["stream_options"] = StreamOptions(block=block, instance_halo=instance_halo)
    options["nuclei"] = NucleiOptions(min_size, relative_min_size, boundary.replace("-", "_"))
    predict_files(model, images, out, progress=True, report=click.echo, **options)


@cli.command()
@click.argument("source")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to create for the files.")
@click.option("--card", default=None, help="Model card: a YAML file or a bundled card's name. Default: wnet3d.")
@click.option("--onnx", "onnx_only", is_flag=True, help="Write only the ONNX file.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
def export(source: str, out: str, card: str | None, onnx_only: bool, overwrite: bool) -> None:
    """Export weights in SOURCE (run folder, checkpoint, CellSeg3D .pth) to ONNX, TorchScript and bioimage.io.

    \b
    Writes wnet3d.onnx, wnet3d.torchscript.pt and NAME.bioimageio.zip into --out.
    Example:
      wnet-zoo export runs/nuclei --out exported --card my_card.yaml
    """
    from .export import export_model

    result = export_model(source, Path(out), card=card, onnx_only=onnx_only, overwrite=overwrite)
    click.echo(result.summary())


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
def report(run_dir: str) -> None:
    """Summarise the training run in RUN_DIR: final losses, troubleshooting events, advice."""
    from .report import run_report

    click.echo(run_report(Path(run_dir)))


@cli.command()
@click.argument("prediction")
@click.argument("truth")
@click.option("--json", "json_out", default=None, metavar="OUT.json", help="Also write the scores to this file.")
def evaluate(prediction: str, truth: str, json_out: str | None) -> None:
    """Score PREDICTION against the ground truth TRUTH: foreground Dice, instance precision, recall and F1.

    Both are (z, y, x) label or mask volumes of the same shape: TIFF files or zarr arrays. A volume holding
    only 0 and 1 is a mask; its connected components are its objects. Objects are matched one-to-one
    (Hungarian on IoU) at each IoU threshold 0.1, 0.2, ..., 0.9.

    \b
    Example:
      wnet-zoo evaluate results/stack_instances.tif truth/stack_labels.tif --json scores.json
    """
    from .evaluate import evaluate_files

    target = None if json_out is None else Path(json_out).resolve()
    if target is not None and (target.is_dir() or not target.parent.is_dir()):
        raise UserError(f"--json {json_out}: give a file name in an existing folder")
    if target in {Path(prediction).resolve(), Path(truth).resolve()}:
        raise UserError(f"--json {json_out} would replace an input volume; choose another file name")
    result = evaluate_files(prediction, truth)
    click.echo(result.summary())
    if json_out is not None:
        result.write_json(json_out)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning user errors into a short message and exit code 2."""
    _configure_logging()
    previous = _handle_sigterm()
    try:
        cli.main(args=argv, prog_name="wnet-zoo", standalone_mode=False)
    except UserError as error:
        click.echo(f"Error: {error}", err=True)
        return 2
    except TrainingDiverged as error:
        click.echo(f"Error: {error}", err=True)
        return 1
    except click.exceptions.NoArgsIsHelpError as error:
        click.echo(error.ctx.get_help() if error.ctx is not None else "wnet-zoo --help")
        return 0
    except click.UsageError as error:
        click.echo(f"Error: {error.format_message()}", err=True)
        if error.ctx is not None:
            click.echo(f"Try '{error.ctx.command_path} --help' for help.", err=True)
        return 2
    except click.ClickException as error:
        click.echo(f"Error: {error.format_message()}", err=True)
        return error.exit_code
    except (click.Abort, KeyboardInterrupt) as error:
        if isinstance(error, Terminated) or isinstance(error.__context__, Terminated):  # click wraps it in Abort
            click.echo("Terminated.", err=True)
            return 143
        click.echo("Aborted.", err=True)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _handle_sigterm() -> Any:
    """Make SIGTERM raise :class:`Terminated` where Ctrl-C raises ``KeyboardInterrupt``; return the old handler.

    Only the main thread can install a handler (a Python API caller running ``main`` in a thread keeps its own).
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:  # started to ignore it (nohup-like): keep it so
        return None

    def terminate(signum: int, frame: Any) -> None:
        raise Terminated()

    return signal.signal(signal.SIGTERM, terminate)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (it may be replaced, e.g. by test runners)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # the base class assigns a stream; the current stderr is used instead
        pass


def _configure_logging() -> None:
    if not LOG.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    LOG.propagate = False


if __name__ == "__main__":
    sys.exit(main())

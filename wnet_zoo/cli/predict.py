"""``wnet-zoo predict``: probabilities, masks and nuclei for images, with an exported ONNX model.

The options' defaults and choices come from the settings objects they build
(:class:`~wnet_zoo.prediction.settings.Tiling`,
:class:`~wnet_zoo.prediction.settings.EngineSettings`, :class:`~wnet_zoo.segment.options.NucleiOptions`,
:class:`~wnet_zoo.prediction.stream.options.StreamOptions`), so each default is declared once.
"""

from __future__ import annotations

from typing import Any

import click

from wnet_zoo.cli.types import Triple
from wnet_zoo.prediction.settings import BLEND_MODES, DEVICES, NORMS, OUTPUTS, EngineSettings, Tiling
from wnet_zoo.prediction.stream.options import FORMATS, StreamOptions
from wnet_zoo.segment.options import NucleiOptions


@click.command()
@click.argument("model")
@click.argument("images", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the results.")
@click.option(
    "--output",
    "outputs",
    multiple=True,
    type=click.Choice([name.replace("_", "-") for name in OUTPUTS]),
    help="Result to write, repeatable: probabilities, mask (the nuclei's foreground, equal to instances > 0), "
    "raw-mask (the model's nuclei class as it is), instances (+ labels CSV). Default: mask and instances.",
)
@click.option("--channel", type=int, default=None, help="Channel of 4-D (C, Z, Y, X) stacks.")
@click.option(
    "--device",
    type=click.Choice(DEVICES),
    default=EngineSettings.device,
    show_default=True,
    help="auto: TensorRT or CUDA with a GPU, else OpenVINO when installed, else CPU.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=None,
    help="CPU threads of ONNX Runtime and of the nucleus stages. Default (and 0): all cores.",
)
@click.option(
    "--tile",
    type=Triple("tile"),
    default=None,
    help="Window, one size or z,y,x (multiples of 8). Default: training patch or 64.",
)
@click.option("--overlap", type=float, default=Tiling.overlap, show_default=True, help="Fraction of a window shared.")
@click.option(
    "--blend",
    type=click.Choice(BLEND_MODES),
    default=Tiling.blend,
    show_default=True,
    help="Weighting of overlapping windows: MONAI's Gaussian (sigma 0.125 of the window) or flat.",
)
@click.option(
    "--norm",
    type=click.Choice(NORMS),
    default=Tiling.norm,
    show_default=True,
    help="Remap to 0..100 over the whole volume (as trained) or per window (for comparison).",
)
@click.option("--batch", type=int, default=None, help="Windows per engine run. Default: 4 on GPUs, 1 on CPUs.")
@click.option("--foreground-class", type=int, default=None, help="Nuclei class. Default: metadata, else brightest.")
@click.option(
    "--min-size", type=int, default=NucleiOptions.min_size, show_default=True, help="Smallest nucleus kept, in voxels."
)
@click.option(
    "--relative-min-size",
    type=float,
    default=NucleiOptions.relative_min_size,
    show_default=True,
    help="Also drop nuclei under this fraction of the typical nucleus volume (0: off).",
)
@click.option(
    "--boundary",
    type=click.Choice(["half-max", "mask"]),
    default=NucleiOptions.boundary.replace("_", "-"),
    show_default=True,
    help="Nucleus edges where the smoothed image is halfway up from the surroundings, or the model's mask as is.",
)
@click.option(
    "--voxel-size",
    type=Triple("voxel_size", floats=True),
    default=None,
    help="z,y,x voxel size. Default: the TIFF's metadata, else isotropic.",
)
@click.option("--level", type=int, default=None, help="Resolution level of OME-Zarr images. Default: 0 (full).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
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
@click.option(
    "--block",
    type=int,
    default=StreamOptions.block,
    show_default=True,
    help="Streaming output block edge, multiple of 64.",
)
@click.option(
    "--instance-halo",
    type=int,
    default=StreamOptions.instance_halo,
    show_default=True,
    help="Voxels around a block when splitting nuclei.",
)
@click.option("--overwrite", is_flag=True, help="Replace existing results.")
def predict(
    model: str,
    images: tuple[str, ...],
    out: str,
    device: str,
    threads: int | None,
    batch: int | None,
    tile: tuple[int, int, int] | None,
    overlap: float,
    blend: str,
    norm: str,
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
    from wnet_zoo.prediction.files import predict_files

    predict_files(
        model,
        images,
        out,
        tiling=Tiling(tile, overlap, blend, norm),
        engine=EngineSettings(device, threads, batch),
        nuclei=NucleiOptions(min_size, relative_min_size, boundary.replace("-", "_")),
        stream_options=StreamOptions(block=block, instance_halo=instance_halo),
        progress=True,
        report=click.echo,
        **options,
    )

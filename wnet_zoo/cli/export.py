"""``wnet-zoo export``: a checkpoint or run folder to ONNX, TorchScript and a bioimage.io package."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("source")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to create for the files.")
@click.option("--card", default=None, help="Model card: a YAML file or a bundled card's name. Default: wnet3d.")
@click.option("--onnx", "onnx_only", is_flag=True, help="Write only the ONNX file.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
def export(source: str, out: str, card: str | None, onnx_only: bool, overwrite: bool) -> None:
    """Export weights in SOURCE (bundled, run folder, checkpoint, CellSeg3D .pth) to ONNX, TorchScript, bioimage.io.

    \b
    Writes wnet3d.onnx, wnet3d.torchscript.pt and NAME.bioimageio.zip into --out.
    Example:
      wnet-zoo export runs/nuclei --out exported --card my_card.yaml
    """
    from wnet_zoo.export.exporter import export_model

    result = export_model(source, Path(out), card=card, onnx_only=onnx_only, overwrite=overwrite)
    click.echo(result.summary())

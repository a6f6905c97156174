"""``wnet-zoo export``: a checkpoint or run folder to ONNX, TorchScript and a bioimage.io package."""

from __future__ import annotations

from pathlib import Path

import click

from wnet_zoo.export.model_card import CITATION_FORM, PERSON_FORM


@click.command()
@click.argument("source")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to create for the files.")
@click.option("--card", default=None, help="Model card: a YAML file or a bundled card's name. Default: wnet3d.")
@click.option(
    "--author",
    "authors",
    multiple=True,
    metavar=f'"{PERSON_FORM}"',
    help="An author of the model (repeat for more); replaces the card's authors.",
)
@click.option(
    "--maintainer",
    "maintainers",
    multiple=True,
    metavar=f'"{PERSON_FORM}"',
    help="Who answers for the model on bioimage.io, with a GitHub user (repeat for more); the zoo needs one.",
)
@click.option("--name", default=None, help="The model's name (letters, digits, spaces, _+-()); replaces the card's.")
@click.option("--description", default=None, help="One or two sentences; replaces the card's.")
@click.option("--license", "license_id", default=None, help="SPDX licence identifier, e.g. MIT or CC-BY-4.0.")
@click.option("--tag", "tags", multiple=True, help="A keyword (repeat for more); replaces the card's tags.")
@click.option(
    "--cite",
    "citations",
    multiple=True,
    metavar=f'"{CITATION_FORM}"',
    help="A citation (repeat for more); replaces the card's.",
)
@click.option("--onnx", "onnx_only", is_flag=True, help="Write only the ONNX file.")
@click.option(
    "--torchscript",
    is_flag=True,
    help="Also write the TorchScript encoder and put it in the package (PyTorch 2.0+ loads it; +75 MB at the "
    "default architecture; every bioimage.io consumer runs the ONNX or state-dict weights without it).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
def export(
    source: str,
    out: str,
    card: str | None,
    authors: tuple[str, ...],
    maintainers: tuple[str, ...],
    name: str | None,
    description: str | None,
    license_id: str | None,
    tags: tuple[str, ...],
    citations: tuple[str, ...],
    onnx_only: bool,
    torchscript: bool,
    overwrite: bool,
) -> None:
    """Export weights in SOURCE (bundled, run folder, checkpoint, CellSeg3D .pth) to ONNX and bioimage.io.

    Writes wnet3d.onnx and NAME.bioimageio.zip (weights as pytorch_state_dict and onnx, plus the decoder for
    fine-tuning) into --out; --torchscript adds wnet3d.torchscript.pt, also in the package. What the package says of the
    model (name, authors, licence, citations, documentation) comes from the model card; --author, --maintainer,
    --name, --description, --license, --tag and --cite replace the card's fields.

    \b
    Example:
      wnet-zoo export runs/nuclei --out exported --card my_card.yaml \\
        --author "Jane Doe;janedoe;EPFL;0000-0002-1825-0097" --maintainer "Jane Doe;janedoe"
    """
    from wnet_zoo.export.exporter import export_model
    from wnet_zoo.export.model_card import CardUpdate

    update = CardUpdate(
        name=name,
        description=description,
        license=license_id,
        authors=authors,
        maintainers=maintainers,
        tags=tags,
        citations=citations,
    )
    result = export_model(
        source,
        Path(out),
        card=card,
        card_update=update,
        onnx_only=onnx_only,
        torchscript=torchscript,
        overwrite=overwrite,
    )
    click.echo(result.summary())

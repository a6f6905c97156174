"""``wnet-zoo demo``: fine-tune, export and predict on the bundled example."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option(
    "--out",
    default="wnet-zoo-demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for the demo's results.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
def demo(out: str, overwrite: bool) -> None:
    """Run the whole job on the bundled example volume: the bundled pretrained WNet3D fine-tuned on it (a few
    minutes on 2 CPU cores), exported, and run on it."""
    from wnet_zoo.demo import run_demo

    result = run_demo(Path(out), overwrite=overwrite)
    click.echo(result.summary())

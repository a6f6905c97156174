"""``wnet-zoo report``: what happened in a training run."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
def report(run_dir: str) -> None:
    """Summarise the training run in RUN_DIR: final losses, troubleshooting events, advice."""
    from wnet_zoo.training.report import run_report

    click.echo(run_report(Path(run_dir)))

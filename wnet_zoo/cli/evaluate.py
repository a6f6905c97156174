"""``wnet-zoo evaluate``: scores of predicted instances against true labels."""

from __future__ import annotations

from pathlib import Path

import click

from wnet_zoo.errors import UserError


@click.command()
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
    from wnet_zoo.segment.evaluate import evaluate_files

    target = None if json_out is None else Path(json_out).resolve()
    if target is not None and (target.is_dir() or not target.parent.is_dir()):
        raise UserError(f"--json {json_out}: give a file name in an existing folder")
    if target in {Path(prediction).resolve(), Path(truth).resolve()}:
        raise UserError(f"--json {json_out} would replace an input volume; choose another file name")
    result = evaluate_files(prediction, truth)
    click.echo(result.summary())
    if json_out is not None:
        result.write_json(json_out)

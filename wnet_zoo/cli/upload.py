"""``wnet-zoo upload``: a package's way into bioimage.io, starting with the zoo's checks run here."""

from __future__ import annotations

import click

UPLOAD_PAGE = "https://bioimage.io/#/upload"


@click.command()
@click.argument("package")
@click.option("--dry-run", is_flag=True, help="Run the zoo's checks here and print each verdict; send nothing.")
@click.option(
    "--skip-weights", is_flag=True, help="Skip running each weight format on the test input (the slow check)."
)
def upload(package: str, dry_run: bool, skip_weights: bool) -> None:
    """Check PACKAGE (the .zip of wnet-zoo export) as bioimage.io will, before it is sent.

    \b
    --dry-run checks the description (bioimageio.spec), each file's SHA-256, that every weight format reproduces
    the test output within 1e-3 (bioimageio.core), maintainers, authors, the cover and the documentation's
    Validation section, offline, and exits with 1 when any check fails.
    Example:
      wnet-zoo upload exported/wnet3d-nuclei.bioimageio.zip --dry-run
    """
    from wnet_zoo.errors import UserError
    from wnet_zoo.zoo.preflight import maintainers_check, preflight

    if not dry_run:
        maintainers = maintainers_check(package)
        if not maintainers.passed:
            raise UserError(f"{package} has no maintainer, which bioimage.io refuses; {maintainers.fix}")
        raise UserError(
            f"sending to bioimage.io is not built into wnet-zoo yet: check the package with --dry-run, "
            f"then upload it at {UPLOAD_PAGE}"
        )
    result = preflight(package, run_weights=not skip_weights)
    click.echo(result.report())
    if not result.passed:
        raise click.exceptions.Exit(1)

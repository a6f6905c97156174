"""``wnet-zoo upload``: a package's way into bioimage.io: the zoo's checks run here, then the upload itself."""

from __future__ import annotations

import click

from wnet_zoo.zoo.upload import TOKEN_PAGE, ZOO_COLLECTION, ZOO_SERVER

TOKEN_VARIABLE = "BIOIMAGEIO_HYPHA_UPLOAD_TOKEN"  # bioimageio.spec's name for the same token


@click.command()
@click.argument("package")
@click.option("--dry-run", is_flag=True, help="Run the zoo's checks here and print each verdict; send nothing.")
@click.option(
    "--skip-weights",
    is_flag=True,
    help="Skip running the weights (reproducibility and consumers, the slow checks).",
)
@click.option(
    "--token",
    envvar=TOKEN_VARIABLE,
    show_envvar=True,
    help=f"Your bioimage.io upload token ({TOKEN_PAGE}); the environment variable keeps it out of the shell's history.",
)
@click.option("--server", "server_url", default=ZOO_SERVER, show_default=True, help="The zoo's Hypha server.")
@click.option("--collection", default=ZOO_COLLECTION, show_default=True, help="The collection to send it to.")
def upload(
    package: str, dry_run: bool, skip_weights: bool, token: str | None, server_url: str, collection: str
) -> None:
    """Check PACKAGE (the .zip of wnet-zoo export) as bioimage.io will, then send it for review.

    \b
    The checks (all of them with --dry-run, which sends nothing and exits with 1 when one fails): the
    description (bioimageio.spec), each file's SHA-256, that every weight format reproduces the test output
    within 1e-3 (bioimageio.core), the consumers whose environments are built, maintainers, authors, the cover
    and the documentation's Validation section.
    Without --dry-run a package that passes is sent to bioimage.io as a draft (the files, the zoo's remote
    test, a request for review); a curator publishes it. Nothing is sent when a check fails.
    Example:
      wnet-zoo upload exported/wnet3d-nuclei.bioimageio.zip --dry-run
      export BIOIMAGEIO_HYPHA_UPLOAD_TOKEN=...   # from https://bioimage.io/#/api?tab=hypha-rpc
      wnet-zoo upload exported/wnet3d-nuclei.bioimageio.zip
    """
    from wnet_zoo.errors import UserError
    from wnet_zoo.zoo.preflight import maintainers_check, preflight
    from wnet_zoo.zoo.upload import UploadTarget, upload_package

    if not dry_run:
        maintainers = maintainers_check(package)
        if not maintainers.passed:
            raise UserError(f"{package} has no maintainer, which bioimage.io refuses; {maintainers.fix}")
        if not token:
            raise UserError(
                f"uploading needs your bioimage.io token: get one at {TOKEN_PAGE}, pass --token or set {TOKEN_VARIABLE}"
            )
    result = preflight(package, run_weights=not skip_weights)
    click.echo(result.report())
    if dry_run:
        if not result.passed:
            raise click.exceptions.Exit(1)
        return
    if not result.passed:
        raise UserError("nothing was sent: fix what the pre-flight above found, then upload again")
    target = UploadTarget(token=token, server_url=server_url, collection=collection)
    click.echo(upload_package(package, target).summary(target))

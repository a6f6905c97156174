"""The ``wnet-zoo`` command line: a thin click layer over the Python API.

User mistakes print one ``Error:`` line (plus a hint line for usage errors) and exit with code 2.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any

import click

from wnet_zoo.cli.demo import demo
from wnet_zoo.cli.evaluate import evaluate
from wnet_zoo.cli.export import export
from wnet_zoo.cli.naming import CliNaming
from wnet_zoo.cli.predict import predict
from wnet_zoo.cli.report import report
from wnet_zoo.cli.train import finetune, train
from wnet_zoo.cli.upload import upload
from wnet_zoo.errors import Terminated, TrainingDiverged, UserError, naming
from wnet_zoo.version import __version__

LOG = logging.getLogger("wnet_zoo")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="wnet-zoo")
def cli() -> None:
    """WNet3D self-supervised 3-D nuclei segmentation: train, export to bioimage.io, predict with ONNX."""


for command in (train, finetune, demo, predict, export, upload, report, evaluate):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning user errors into a short message and exit code 2."""
    _configure_logging()
    previous = _handle_sigterm()
    try:
        with naming(CliNaming()):
            code = cli.main(args=argv, prog_name="wnet-zoo", standalone_mode=False)
        if isinstance(code, int):  # a command's click.exceptions.Exit, e.g. `upload --dry-run` with a failed check
            return code
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

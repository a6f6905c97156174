"""The ``wnet-zoo`` command line, the only layer that knows flag names: one module per command."""

from wnet_zoo.cli.main import cli, main

__all__ = ["cli", "main"]

"""The exceptions the CLI turns into one line: ``UserError`` (exit code 2), ``TrainingDiverged`` (1) and
``Terminated`` (143); and how messages name the user's settings.

A message that names a setting or a command goes through :func:`setting` or :func:`command`. In Python they read
as Python (``tile=(65, 65, 65)``, ``resume('run', epochs=80)``); the command line installs its own
:class:`Naming` (``--tile 65,65,65``, ``wnet-zoo train --resume run --epochs 80``), so that no module outside
:mod:`wnet_zoo.cli` knows a flag.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import PurePath
from typing import Any, Protocol


class UserError(Exception):
    """Bad input or options. The message says what is wrong and how to fix it, in at most two lines."""


class TrainingDiverged(Exception):
    """The explosion guard gave up: the message is one line of advice. The CLI exits with code 1."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (sent by ``timeout``, SLURM, ``docker stop``), raised where Ctrl-C would be, so that every
    output is cleaned up the same way. The CLI exits with code 143, as a process ended by SIGTERM does."""


def shorten(text: str, limit: int = 200) -> str:
    """``text`` on one line, cut between words to at most ``limit`` characters (and an ellipsis): a message from
    another library (torch, onnxruntime, bioimageio.spec) can run to pages, and the user's error is one line."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[: limit + 1].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
    return cut.rstrip(" ,;:") + "..."


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()
"""No value given: :func:`setting` names the setting alone."""


class Naming(Protocol):
    """How messages name settings and commands: Python's names, or those of an interface built on the library."""

    def setting(self, name: str, value: Any = UNSET) -> str:
        """Name the parameter ``name`` (a library parameter or :class:`~wnet_zoo.training.config.TrainConfig`
        field), with the ``value`` it had or should have when given."""
        ...

    def command(self, name: str, *args: Any, **kwargs: Any) -> str:
        """Name a call of the public function ``name`` with these arguments."""
        ...


class PythonNaming:
    """Settings as ``name=value`` and commands as calls, for users of the Python API."""

    def setting(self, name: str, value: Any = UNSET) -> str:
        return name if value is UNSET else f"{name}={_python(value)}"

    def command(self, name: str, *args: Any, **kwargs: Any) -> str:
        given = [_python(arg) for arg in args] + [f"{key}={_python(value)}" for key, value in kwargs.items()]
        return f"{name}({', '.join(given)})"


def _python(value: Any) -> str:
    return repr(str(value)) if isinstance(value, PurePath) else repr(value)


_NAMING: list[Naming] = [PythonNaming()]


def setting(name: str, value: Any = UNSET) -> str:
    """How a message names the user's setting ``name`` (with ``value`` when given), in the current naming."""
    return _NAMING[-1].setting(name, value)


def command(name: str, *args: Any, **kwargs: Any) -> str:
    """How a message names a call of the public function ``name``, in the current naming."""
    return _NAMING[-1].command(name, *args, **kwargs)


def current_naming() -> Naming:
    """The naming in use (a streaming job carries it to its Dask workers, whose messages then read alike)."""
    return _NAMING[-1]


@contextlib.contextmanager
def naming(chosen: Naming) -> Iterator[None]:
    """Name settings and commands with ``chosen`` while the block runs (the CLI wraps each command in it)."""
    _NAMING.append(chosen)
    try:
        yield
    finally:
        _NAMING.remove(chosen)

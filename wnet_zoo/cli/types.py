"""Parameter types that parse text into the library's values at the command-line boundary."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from wnet_zoo.triples import parse_floats, parse_triple


class Triple(click.ParamType):
    """One value or ``z,y,x`` as a (z, y, x) tuple: sizes (``64``, ``32,64,64``) as positive ints, or with
    ``floats`` voxel sizes (``2,0.5,0.5``) as positive floats. ``setting`` names the value in errors."""

    def __init__(self, setting: str, floats: bool = False) -> None:
        self.setting = setting
        self.name = "z,y,x" if floats else "size"
        self.parse: Callable[[Any, str], Any] = parse_floats if floats else parse_triple

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return value if isinstance(value, tuple) else self.parse(value, self.setting)

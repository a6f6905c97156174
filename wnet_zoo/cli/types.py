"""Parameter types that parse text into the library's values at the command-line boundary."""

from __future__ import annotations

from typing import Any

import click

from wnet_zoo.triples import parse_floats, parse_triple


class Triple(click.ParamType):
    """One size or ``z,y,x`` (``64``, ``32,64,64``) as a (z, y, x) tuple of positive ints."""

    name = "size"

    def __init__(self, setting: str) -> None:
        self.setting = setting

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return value if isinstance(value, tuple) else parse_triple(value, self.setting)


class Floats(click.ParamType):
    """One value or ``z,y,x`` (``2,0.5,0.5``) as a (z, y, x) tuple of positive floats."""

    name = "z,y,x"

    def __init__(self, setting: str) -> None:
        self.setting = setting

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return value if isinstance(value, tuple) else parse_floats(value, self.setting)

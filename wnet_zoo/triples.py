"""``z,y,x`` triples (sizes and voxel sizes) given as text, one number or a sequence, as tuples: the one
parser the command line's option types and the Python API share."""

from __future__ import annotations

import math
from collections.abc import Sequence

from wnet_zoo.errors import UserError, setting


def parse_floats(text: str | Sequence[float] | None, name: str) -> tuple[float, float, float] | None:
    """Parse ``"2,0.5,0.5"`` (or one value, or a sequence) into a (z, y, x) tuple of positive floats."""
    if text is None:
        return None
    try:
        values = [float(p) for p in text.split(",") if p.strip()] if isinstance(text, str) else [float(v) for v in text]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not all(v > 0 and math.isfinite(v) for v in values):
        raise UserError(f"{setting(name, text)}: give one value or z,y,x of positive numbers, e.g. 2,0.5,0.5")
    return (values[0], values[1], values[2])


def parse_triple(text: str | int | Sequence[int] | None, name: str) -> tuple[int, int, int] | None:
    """Parse ``"64"`` or ``"32,64,64"`` (or an int / sequence) into a (z, y, x) tuple of positive ints."""
    if text is None:
        return None
    if isinstance(text, int):
        values = [text]
    elif isinstance(text, str):
        try:
            values = [int(part) for part in text.replace("x", ",").split(",") if part.strip()]
        except ValueError:
            raise UserError(f"{setting(name, text)}: give one size or z,y,x, e.g. 64 or 32,64,64") from None
    else:
        values = [int(v) for v in text]
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or any(v <= 0 for v in values):
        raise UserError(f"{setting(name, text)}: give one size or z,y,x of positive integers, e.g. 64 or 32,64,64")
    return (values[0], values[1], values[2])

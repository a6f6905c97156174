"""Opening TIFF files, with truncated or damaged stacks refused in one line instead of read as zeros."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tifffile

from wnet_zoo.errors import UserError


@contextlib.contextmanager
def quiet_tifffile() -> Iterator[list[logging.LogRecord]]:
    """Keep tifffile's log messages (one per damaged page or strip, thousands for a damaged stack)
    off the user's terminal; yield this thread's log records, which tell a damaged file from a whole one."""
    logger = logging.getLogger("tifffile")
    drop = _Drop(threading.get_ident())
    logger.addFilter(drop)
    try:
        yield drop.records
    finally:
        logger.removeFilter(drop)


class _Drop(logging.Filter):
    """Drops every tifffile record; keeps those of one thread (other threads may read other files meanwhile)."""

    def __init__(self, thread: int) -> None:
        super().__init__()
        self.thread = thread
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if threading.get_ident() == self.thread:  # a filter runs on the logging thread (record.thread may be off)
            self.records.append(record)
        return False


def open_tiff(path: str | Path) -> tifffile.TiffFile:
    """Open a TIFF file (the caller closes it) whose pixels are all in the file.

    A header can claim far more than the file holds (a copy cut short, a disk that filled up): reading it
    block by block would then run over data that is not there, so the claim is checked against the file's size
    before any pixel is read.

    Raises:
        UserError: no such file, not a TIFF, or a truncated one.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; check the path")
    with quiet_tifffile() as records:
        try:
            tif = tifffile.TiffFile(path)
            series = tif.series[0]
        except Exception as error:  # tifffile raises several types for non-TIFF input
            raise UserError(
                f"{path}: not a readable TIFF file ({type(error).__name__}); give a 3-D TIFF stack"
            ) from None
        try:
            _check_complete(path, series, records)
        except BaseException:
            tif.close()
            raise
    return tif


_DAMAGE = ("invalid page offset", "missing data")  # tifffile's words for a page chain cut short, absent planes


def _check_complete(path: Path, series: Any, records: list[logging.LogRecord]) -> None:
    fix = "copy it again, or save it anew"
    size = path.stat().st_size
    one_file = all(page is not None and page.parent is series.pages[0].parent for page in series.pages)
    if series.dataoffset is not None and one_file:  # contiguous pixels in this file: the claim is exact
        end = int(series.dataoffset) + int(series.nbytes)
        if end > size:
            raise UserError(
                f"{path}: truncated: its header describes {_bytes(series.nbytes)} of pixels but the file holds "
                f"{_bytes(size, end)}; {fix}"
            )
    damaged = any(word in r.getMessage().lower() for r in records for word in _DAMAGE)
    if damaged or any(page is None for page in series.pages):  # tifffile falls back to what it found, or zeroes
        raise UserError(
            f"{path}: truncated: planes of the stack are missing (from this {_bytes(size)} file, or a file of its "
            f"set); {fix}"
        )
    for page in series.pages:
        held = page.parent.filehandle.size  # a page of a multi-file OME set lies in its own file
        ends = [int(o) + int(c) for o, c in zip(page.dataoffsets, page.databytecounts, strict=False) if c]
        if ends and max(ends) > held:
            raise UserError(
                f"{page.parent.filehandle.path}: truncated: its pixel data runs to {_bytes(max(ends), held)} but the "
                f"file holds {_bytes(held, max(ends))}; {fix}"
            )


def _bytes(count: int, other: int | None = None) -> str:
    """``count`` bytes for a person; exact where rounding would make it look equal to ``other``."""
    for unit, factor in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= factor:
            shown = f"{count / factor:.3g} {unit}"
            if other is not None and shown == _bytes(other):
                return f"{count:,} bytes"
            return shown
    return f"{count} bytes"

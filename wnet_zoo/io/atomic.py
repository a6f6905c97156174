"""Files that appear whole or not at all, and folders checked before any work.

Every output is written under a hidden part name beside its destination, ``.NAME.PID.part``, and renamed into
place when complete, so an error or an interruption never leaves a half-written result under the real name.
The host and process id in the name tell a later run which parts belong to a process that is gone (killed
with SIGKILL): :func:`sweep_stale_parts` removes those, and only those. Parts written from another machine (two
cluster jobs sharing a network folder) are never touched, whatever their process id.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from wnet_zoo.errors import UserError

_PART = re.compile(r"^\..+\.([^.]+)\.(\d+)\.part$")


def part_suffix() -> str:
    """The end of this process's part names: ``.HOST.PID.part``."""
    return f".{_host()}.{os.getpid()}.part"


def _host() -> str:
    return socket.gethostname().split(".")[0] or "localhost"


def part_path(path: str | Path) -> Path:
    """The hidden name ``path`` is written under by this process before it is renamed into place."""
    path = Path(path)
    return path.with_name(f".{path.name}{part_suffix()}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield the part name to write ``path`` to; on a clean exit it is renamed to ``path`` (replacing it).

    Any exception, ``KeyboardInterrupt`` included, removes the part (a file or a folder) and leaves ``path``
    as it was.
    """
    path = Path(path)
    part = part_path(path)
    try:
        yield part
        os.replace(part, path)
    except BaseException:
        remove(part)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as part:
        part.write_text(text)


def remove(path: Path) -> None:
    """Remove a file or folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep_stale_parts(folder: str | Path) -> list[Path]:
    """Remove the part files (and folders) in ``folder`` whose process is no longer running; return them.

    A part of a live process, or of another machine, is kept: it may be another run writing there now.
    """
    if os.name == "nt":  # os.kill(pid, 0) would end the process there
        return []
    removed = []
    try:
        for entry in Path(folder).iterdir():
            match = _PART.match(entry.name)
            if match and match.group(1) == _host() and not _alive(int(match.group(2))):
                remove(entry)
                removed.append(entry)
    except OSError:  # no folder, or one this user may not list: nothing to sweep (best effort)
        pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def check_can_create(folder: str | Path, what: str = "output folder") -> None:
    """Raise ``UserError`` unless ``folder`` exists as a folder or can be created, before any work is done.

    Nothing is left behind: the check makes (and removes) a hidden folder in the nearest existing ancestor.
    """
    folder = Path(folder).absolute()
    if os.path.isdir(folder):  # os.path's tests answer False where Path's raise (a folder this user cannot enter)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UserError(f"{folder}: no permission to write there; choose another {what}")
        return
    if os.path.lexists(folder):  # a file, or a link to nothing
        raise UserError(f"{folder}: is a file or a broken link, not a folder; choose another {what}")
    ancestor = folder.parent
    while not os.path.lexists(ancestor):
        ancestor = ancestor.parent
    if not os.path.isdir(ancestor):
        raise UserError(f"{folder}: cannot be created: {ancestor} is a file; choose another {what}")
    try:
        probe = tempfile.mkdtemp(prefix=".wnet-zoo-probe.", dir=ancestor)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UserError(f"{folder}: cannot be created in {ancestor} ({reason}); choose another {what}") from None
    os.rmdir(probe)


@contextlib.contextmanager
def removed_if_left_empty(folder: str | Path) -> Iterator[None]:
    """Remove ``folder`` if the block fails (Ctrl-C and SIGTERM included) and leaves it empty, having made it.

    A folder that existed before, or that holds something (a resumable work folder), is kept.
    """
    folder = Path(folder)
    made = not folder.exists()
    try:
        yield
    except BaseException:
        if made and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise

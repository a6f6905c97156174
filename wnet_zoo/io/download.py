"""CellSeg3D's published WNet3D weights, downloaded once into a user cache behind ``--from cellseg3d:wnet3d``.

The archive ``wnet_latest.tar.gz`` (one ``wnet_latest.pth``, about 194 MB) comes from the address
CellSeg3D's ``pretrained_model_urls.json`` lists. Its size is checked against the server's
``Content-Length`` and its SHA-256 against the ``X-Linked-Etag`` or ``ETag`` header when that holds one
(Hugging Face sends the LFS object's SHA-256 there, on the redirect to its CDN). The file is written under a
temporary name and renamed once verified; the verified SHA-256 is kept beside it (``.sha256``) and checked
whenever the cached file is used. The archive then goes to :func:`wnet_zoo.model.weight_files.weights_file`,
which extracts it safely.

Environment: ``WNET_ZOO_CACHE`` (cache folder, default ``~/.cache/wnet-zoo``), ``WNET_ZOO_CELLSEG3D_URL``
(another address for the archive, e.g. a mirror).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from tqdm.auto import tqdm

from wnet_zoo.errors import UserError, setting
from wnet_zoo.io.atomic import part_path, write_text

CELLSEG3D_WNET3D = "cellseg3d:wnet3d"
"""The ``--from`` value that names CellSeg3D's published WNet3D weights."""
CELLSEG3D_URL = "https://huggingface.co/C-Achard/cellseg3d/resolve/main/wnet_latest.tar.gz"
URL_VARIABLE = "WNET_ZOO_CELLSEG3D_URL"
CACHE_VARIABLE = "WNET_ZOO_CACHE"
TIMEOUT_S = 30.0
CHUNK = 1 << 20
_SHA256 = re.compile(r'^(?:W/)?"?([0-9a-f]{64})"?$', re.IGNORECASE)


def resolve_source(source: str, progress: bool = True) -> str:
    """``source`` itself, or for ``cellseg3d:wnet3d`` the path of the cached (downloaded if needed) archive."""
    return str(cellseg3d_weights(progress=progress)) if source.strip().lower() == CELLSEG3D_WNET3D else source


def cache_dir() -> Path:
    """The download cache: ``$WNET_ZOO_CACHE``, else ``$XDG_CACHE_HOME/wnet-zoo``, else ``~/.cache/wnet-zoo``."""
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "wnet-zoo"


def cellseg3d_weights(progress: bool = True) -> Path:
    """The path of CellSeg3D's WNet3D archive in the cache, downloaded and verified on first use.

    Raises:
        UserError: offline or unreachable server, an HTTP error, or a file whose size or checksum is wrong.
    """
    url = os.environ.get(URL_VARIABLE) or CELLSEG3D_URL
    target = cache_dir() / "cellseg3d" / (Path(urlsplit(url).path).name or "wnet_latest.tar.gz")
    if _cached(target):
        return target
    download(url, target, progress=progress)
    return target


def download(url: str, target: Path, progress: bool = True) -> str:
    """Download ``url`` to ``target`` (via a temporary file, renamed once verified); return its SHA-256.

    The size must equal ``Content-Length`` and the SHA-256 the ``X-Linked-Etag``/``ETag`` header's, when
    the server sends them; the digest is written to ``target`` + ``.sha256``.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    headers: list[Message] = []
    opener = urllib.request.build_opener(_RecordingRedirects(headers))
    request = urllib.request.Request(url, headers={"User-Agent": "wnet-zoo"})
    partial = part_path(target)
    try:
        with opener.open(request, timeout=TIMEOUT_S) as response:
            headers.append(response.headers)
            size = response.headers.get("Content-Length")
            expected = _expected_sha256(headers)
            digest, received = _stream(response, partial, int(size) if size else None, target.name, progress)
        if size is not None and received != int(size):
            raise UserError(f"download of {url} incomplete: {received} of {size} bytes; try again")
        if expected is not None and digest != expected:
            raise UserError(f"download of {url} is corrupt: SHA-256 {digest}, the server says {expected}; try again")
        os.replace(partial, target)
        write_text(_sha_file(target), f"{digest}  {target.name}\n")
        return digest
    except urllib.error.HTTPError as error:
        raise UserError(f"cannot download {url}: the server answered {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", None) or error
        elsewhere = setting("source", PurePosixPath("path/to", target.name))
        raise UserError(
            f"cannot download {url} ({reason}): offline? Download it elsewhere and pass {elsewhere}"
        ) from None
    finally:
        partial.unlink(missing_ok=True)


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cached(target: Path) -> bool:
    """Whether ``target`` is in the cache with the SHA-256 recorded when it was verified."""
    sha_file = _sha_file(target)
    if not (target.is_file() and sha_file.is_file()):
        return False
    recorded = sha_file.read_text().split()
    return bool(recorded) and recorded[0] == sha256_of(target)


def _sha_file(target: Path) -> Path:
    return target.with_name(f"{target.name}.sha256")


def _stream(
    response: http.client.HTTPResponse, path: Path, size: int | None, name: str, progress: bool
) -> tuple[str, int]:
    """Copy the body to ``path`` with a progress bar; (SHA-256, bytes received), also when cut short."""
    digest, received = hashlib.sha256(), 0
    with tqdm(total=size, unit="B", unit_scale=True, desc=name, disable=not progress) as bar, path.open("wb") as out:
        for chunk in _chunks(response):
            out.write(chunk)
            digest.update(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    return digest.hexdigest(), received


def _chunks(response: http.client.HTTPResponse) -> Iterator[bytes]:
    while True:
        try:
            chunk = response.read(CHUNK)
        except http.client.IncompleteRead as error:  # closed before Content-Length bytes: the size check fails
            yield error.partial
            return
        if not chunk:
            return
        yield chunk


def _expected_sha256(headers: list[Message]) -> str | None:
    """The SHA-256 that ``X-Linked-Etag`` (any response of the redirect chain) or the final ``ETag`` carries."""
    candidates = [h.get("X-Linked-Etag") for h in headers] + [headers[-1].get("ETag")]
    for value in candidates:
        match = _SHA256.match((value or "").strip())
        if match:
            return match.group(1).lower()
    return None


class _RecordingRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects like urllib's handler and keeps the headers of each redirect response."""

    def __init__(self, seen: list[Message]) -> None:
        super().__init__()
        self.seen = seen

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        self.seen.append(headers)
        return super().redirect_request(req, fp, code, msg, headers, newurl)

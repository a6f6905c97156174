"""Sending a package to bioimage.io as its website does: a staged draft in the zoo's collection on its Hypha
server, the files put by presigned URLs, the zoo's model runner asked to test it, then a request for review.

Nothing is published: a curator commits the draft. A failed transfer deletes the draft it created, so the
collection never holds a half-sent package; a draft the model runner fails stays unsubmitted for its owner to
see. The token is the user's own (bioimage.io, "API access"); it is only sent to ``server_url``.
"""

from __future__ import annotations

import contextlib
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm import tqdm

from wnet_zoo.errors import UserError, setting, shorten
from wnet_zoo.export.rdf import file_entries
from wnet_zoo.zoo.preflight import package_description

ZOO_SERVER = "https://hypha.aicell.io"
ZOO_COLLECTION = "bioimage-io/bioimage.io"
TOKEN_PAGE = "https://bioimage.io/#/api?tab=hypha-rpc"
ALIAS_PATTERN = "{animal_adjective}-{animal}"  # the zoo names models by two words of its lists
MODEL_RUNNER = "bioimage-io/model-runner"
REVIEW_STATUS = "request-review"  # what the zoo's website and bioimageio.spec set; curators list drafts by it
_CHUNK = 1 << 20
_TIMEOUT_S = 600
_CHATTY_LOGGERS = ("RPC", "websocket-client")  # hypha-rpc logs connection trouble to stdout; errors come back here


@dataclass(frozen=True)
class UploadTarget:
    """Where a package goes and who sends it."""

    token: str
    server_url: str = ZOO_SERVER
    collection: str = ZOO_COLLECTION


@dataclass(frozen=True)
class Uploaded:
    """What an upload left on the server.

    Attributes:
        artifact_id: the staged draft, ``workspace/alias``.
        files: the package's files, now in the draft.
        size: their bytes.
        remote_test: what the zoo's model runner said (or why it did not run).
    """

    artifact_id: str
    files: int
    size: int
    remote_test: str

    def summary(self, target: UploadTarget) -> str:
        """What happened and what comes next, for the user."""
        return "\n".join(
            [
                f"uploaded {self.files} files ({self.size / 1e6:.1f} MB) to {target.server_url}: draft "
                f"{self.artifact_id} in {target.collection}",
                f"remote test: {self.remote_test}",
                "review requested: a bioimage.io curator publishes it (nothing is public until then)",
            ]
        )


def upload_package(package: str | Path, target: UploadTarget, progress: bool = True) -> Uploaded:
    """Send ``package`` (a ``.zip``, its folder or its ``rdf.yaml``) to ``target.collection`` as a staged draft
    with a request for review. Only the files its description names go, with the description.

    Raises:
        UserError: hypha-rpc is missing, the server cannot be reached, the token is refused, the collection does
            not exist or takes no drafts from this user, a file does not arrive whole (the draft is deleted), or
            the zoo's model runner fails the draft (it stays, unsubmitted).
    """
    if not target.server_url.startswith(("https://", "http://")):
        raise UserError(f"{target.server_url!r} is no server address; give {setting('server_url')} as https://...")
    try:
        from hypha_rpc.sync import connect_to_server
    except ImportError:
        raise UserError("uploading to bioimage.io needs hypha-rpc: pip install 'wnet-zoo[zoo]'") from None
    with package_description(Path(package)) as (rdf, rdf_path), _quiet(_CHATTY_LOGGERS):
        files = package_files(rdf, rdf_path.parent)
        server = _connect(connect_to_server, target)
        try:
            return _send(server, rdf, rdf_path.parent, files, target, progress)
        finally:
            server.disconnect()


def package_files(rdf: dict[str, Any], folder: Path) -> list[str]:
    """The package's files as its description names them (weights, tensors, attachments, documentation, covers)
    and ``rdf.yaml``: nothing else in ``folder`` goes. ``UserError`` for a missing or outside file."""
    named = {str(entry["source"]) for entry in file_entries(rdf)}
    named |= {item for item in [rdf.get("documentation"), *(rdf.get("covers") or [])] if isinstance(item, str)}
    names = ["rdf.yaml", *sorted(named - {"rdf.yaml"})]
    for name in names:
        if "://" in name:
            continue
        if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts or not (folder / name).is_file():
            raise UserError(f"{folder / name}: named by the package's description but not in it; export it again")
    return [name for name in names if "://" not in name]


def _send(
    server: Any, rdf: dict[str, Any], folder: Path, files: list[str], target: UploadTarget, progress: bool
) -> Uploaded:
    manager = server.get_service("public/artifact-manager")
    manifest = {**rdf, "status": "draft"}
    artifact_id = _create(manager, manifest, target)
    try:
        size = _put_files(manager, artifact_id, folder, files, progress)
    except BaseException as error:
        deleted = _delete(manager, artifact_id)
        what = str(error) if isinstance(error, UserError) else _last_line(error)
        kept = "the draft was deleted" if deleted else f"delete the draft {artifact_id} on {target.server_url}"
        raise UserError(f"the upload failed: {shorten(what, 160)}; {kept}") from None
    remote_test = _remote_test(server, artifact_id)
    if remote_test.startswith("failed"):
        raise UserError(
            f"the zoo's model runner failed the draft {artifact_id} ({remote_test}); it was not sent for review"
        )
    manager.edit(artifact_id, stage=True, manifest={**manifest, "status": REVIEW_STATUS})
    return Uploaded(artifact_id, len(files), size, remote_test)


def _connect(connect_to_server: Any, target: UploadTarget) -> Any:
    where = target.server_url
    try:
        return connect_to_server({"server_url": where, "token": target.token, "method_timeout": 120})
    except ConnectionAbortedError as error:  # the server ended the handshake: a bad token, or its own trouble
        message = _last_line(error)
        if "Authentication error" not in message:
            raise UserError(f"{where} refused the connection ({shorten(message, 120)}); try again later") from None
        raise UserError(
            f"{where} refused the token ({shorten(message, 100)}); get a new one at {TOKEN_PAGE} "
            f"and pass it with {setting('token')}"
        ) from None
    except OSError as error:
        raise UserError(f"cannot reach {where} ({error}); check {setting('server_url')} and the network") from None
    except Exception as error:  # a web server that is not Hypha: the websocket handshake fails
        raise UserError(
            f"no Hypha server answers at {where} ({shorten(_last_line(error), 100)}); check {setting('server_url')}"
        ) from None


def _create(manager: Any, manifest: dict[str, Any], target: UploadTarget) -> str:
    """The staged draft's id; a missing collection or a refusal are one line each."""
    try:
        artifact = manager.create(
            parent_id=target.collection, alias=ALIAS_PATTERN, type="model", manifest=manifest, stage=True
        )
    except Exception as error:
        message = _last_line(error)
        if "does not exist" in message:
            raise UserError(f"{target.server_url} has no collection {target.collection!r}; check it") from None
        if "PermissionError" in message:
            raise UserError(
                f"{target.server_url} refused a draft in {target.collection} ({shorten(message, 120)}); "
                f"log in at bioimage.io and take the token from {TOKEN_PAGE}"
            ) from None
        raise UserError(f"{target.server_url} did not create the draft: {shorten(message, 160)}") from None
    return str(artifact["id"])


def _put_files(manager: Any, artifact_id: str, folder: Path, files: list[str], progress: bool) -> int:
    """Put every file by its presigned URL, then check the draft lists each with its size; the bytes sent."""
    sizes = {name: (folder / name).stat().st_size for name in files}
    with tqdm(total=sum(sizes.values()), unit="B", unit_scale=True, desc="upload", disable=not progress) as bar:
        for name in files:
            _put(manager.put_file(artifact_id, file_path=name), folder / name, bar)
    listed: dict[str, int | None] = {}
    for directory in sorted({str(PurePosixPath(name).parent) for name in files}):
        found = manager.list_files(artifact_id, dir_path=None if directory == "." else directory, version="stage")
        prefix = "" if directory == "." else f"{directory}/"
        listed |= {prefix + entry["name"]: entry.get("size") for entry in found}
    wrong = [name for name in files if listed.get(name) != sizes[name]]
    if wrong:
        raise UserError(f"{', '.join(wrong[:3])} did not arrive whole")
    return sum(sizes.values())


def _put(url: str, path: Path, bar: tqdm) -> None:
    """HTTP PUT of the file's bytes, streamed. S3 rejects chunked transfer, hence the length; the empty content
    type is what the zoo's website sends (urllib would add a form type)."""
    size = path.stat().st_size

    def chunks() -> Iterator[bytes]:
        with path.open("rb") as stream:
            while chunk := stream.read(_CHUNK):
                bar.update(len(chunk))
                yield chunk

    request = urllib.request.Request(
        url,
        data=chunks() if size else b"",
        method="PUT",
        headers={"Content-Type": "", "Content-Length": str(size)},
    )
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            response.read()
    except urllib.error.HTTPError as error:
        raise UserError(f"{path.name}: the store refused it (HTTP {error.code})") from None
    except urllib.error.URLError as error:
        raise UserError(f"{path.name}: the store could not be reached ({error.reason})") from None


def _remote_test(server: Any, artifact_id: str) -> str:
    """Ask the zoo's model runner to test the draft: its verdict, or why it did not run (the draft is kept: the
    zoo tests it again on review)."""
    try:
        runner = server.get_service(MODEL_RUNNER)
    except Exception as error:
        if "Service not found" in str(error):
            return "skipped: this server has no model runner"
        return f"could not run ({shorten(_last_line(error), 120)})"
    try:
        result = runner.test(model_id=artifact_id.split("/")[-1], stage=True)
    except Exception as error:
        return f"could not run ({shorten(_last_line(error), 120)})"
    status = str(result.get("status", "done")) if isinstance(result, dict) else "done"
    return status if status != "failed" else f"failed: {shorten(str(result.get('details', '')), 120)}"


def _delete(manager: Any, artifact_id: str) -> bool:
    """Remove a draft whose upload failed; whether it went (the upload's own error is the one reported)."""
    try:
        manager.delete(artifact_id, delete_files=True)
    except Exception:  # noqa: BLE001 - the server or its store may be gone: the caller says so
        return False
    return True


@contextlib.contextmanager
def _quiet(names: tuple[str, ...]) -> Iterator[None]:
    """Silence these loggers for the block, restoring their levels after."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _last_line(error: BaseException) -> str:
    """Remote errors carry the server's whole traceback; its last line says what went wrong."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__

"""Sending a package to bioimage.io as its website does: a staged draft in the zoo's collection on its Hypha
server, the files put by presigned URLs, the zoo's model runner asked to test it, then a request for review.

Nothing is published: a curator commits the draft. A failed upload deletes the draft it created, so the
collection never holds a half-sent package. The token is the user's own (bioimage.io, "API access"); it is only
sent to ``server_url``.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from wnet_zoo.errors import UserError, setting, shorten
from wnet_zoo.zoo.preflight import package_description

ZOO_SERVER = "https://hypha.aicell.io"
ZOO_COLLECTION = "bioimage-io/bioimage.io"
TOKEN_VARIABLE = "BIOIMAGEIO_HYPHA_UPLOAD_TOKEN"  # bioimageio.spec's name for the same token
TOKEN_PAGE = "https://bioimage.io/#/api?tab=hypha-rpc"
ALIAS_PATTERN = "{animal_adjective}-{animal}"  # the zoo names models by two words of its lists
MODEL_RUNNER = "bioimage-io/model-runner"
_CHUNK = 1 << 20
_TIMEOUT_S = 600


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
    with a request for review.

    Raises:
        UserError: hypha-rpc is missing, the server cannot be reached, the token is refused, the collection does
            not exist or takes no drafts from this user, or a file does not arrive whole (the draft is deleted).
    """
    try:
        from hypha_rpc.sync import connect_to_server
    except ImportError:
        raise UserError("uploading to bioimage.io needs hypha-rpc: pip install 'wnet-zoo[zoo]'") from None
    logging.getLogger("RPC").setLevel(logging.ERROR)  # it prints connection notices; errors come back here
    with package_description(Path(package)) as (rdf, rdf_path):
        folder = rdf_path.parent
        files = sorted(path for path in folder.rglob("*") if path.is_file())
        server = _connect(connect_to_server, target)
        try:
            manager = server.get_service("public/artifact-manager")
            manifest = {**rdf, "status": "draft"}
            artifact_id = _create(manager, manifest, target)
            try:
                size = _put_files(manager, artifact_id, folder, files, progress)
                remote_test = _remote_test(server, artifact_id)
                manager.edit(artifact_id, stage=True, manifest={**manifest, "status": "in-review"})
            except BaseException:
                _delete_quietly(manager, artifact_id)
                raise
        except UserError:
            raise
        except Exception as error:
            raise UserError(f"{target.server_url}: the upload failed: {_last_line(error)}; nothing was kept") from None
        finally:
            server.disconnect()
    return Uploaded(artifact_id, len(files), size, remote_test)


def _connect(connect_to_server: Any, target: UploadTarget) -> Any:
    where = target.server_url
    try:
        return connect_to_server({"server_url": where, "token": target.token, "method_timeout": 120})
    except ConnectionAbortedError as error:  # what hypha-rpc raises for a bad, expired or foreign token
        raise UserError(
            f"{where} refused the token ({shorten(_last_line(error), 100)}); get a new one at {TOKEN_PAGE} "
            f"and pass it with {setting('token')} or {TOKEN_VARIABLE}"
        ) from None
    except OSError as error:
        raise UserError(f"cannot reach {where} ({error}); check {setting('server_url')} and the network") from None


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
        raise
    return str(artifact["id"])


def _put_files(manager: Any, artifact_id: str, folder: Path, files: list[Path], progress: bool) -> int:
    """Put every file by its presigned URL, then check the draft lists each with its size; the bytes sent."""
    total = sum(path.stat().st_size for path in files)
    with tqdm(total=total, unit="B", unit_scale=True, desc="upload", disable=not progress) as bar:
        for path in files:
            name = path.relative_to(folder).as_posix()
            _put(manager.put_file(artifact_id, file_path=name), path, bar)
    listed = {entry["name"]: entry.get("size") for entry in manager.list_files(artifact_id, version="stage")}
    wrong = [p.name for p in files if listed.get(p.relative_to(folder).as_posix()) != p.stat().st_size]
    if wrong:
        raise UserError(f"{', '.join(wrong[:3])} did not arrive whole; the draft was deleted, try again")
    return total


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
        raise UserError(f"{path.name}: the store refused it (HTTP {error.code}); the draft was deleted") from None


def _remote_test(server: Any, artifact_id: str) -> str:
    """Ask the zoo's model runner to test the draft; a server without one says so."""
    try:
        runner = server.get_service(MODEL_RUNNER)
    except Exception as error:
        if "Service not found" in str(error):
            return "skipped: this server has no model runner"
        raise
    result = runner.test(model_id=artifact_id.split("/")[-1], stage=True)
    status = result.get("status", "done") if isinstance(result, dict) else "done"
    return f"{status} ({MODEL_RUNNER})"


def _delete_quietly(manager: Any, artifact_id: str) -> None:
    """Remove a draft whose upload failed; the upload's own error is the one reported."""
    try:
        manager.delete(artifact_id, delete_files=True)
    except Exception:  # noqa: BLE001 - the server may be gone; the first error says why
        logging.getLogger(__name__).warning("could not delete the draft %s", artifact_id)


def _last_line(error: BaseException) -> str:
    """Remote errors carry the server's whole traceback; its last line says what went wrong."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__

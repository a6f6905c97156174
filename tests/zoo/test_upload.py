"""``wnet-zoo upload``: a real package sent to a real Hypha server (artifact manager, S3 from moto) started on
127.0.0.1 for these tests, set up as the zoo's collection, by a user who logged in there (not its root)."""

from __future__ import annotations

import contextlib
import http.server
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hypha_rpc.sync import connect_to_server

from wnet_zoo.cli import main
from wnet_zoo.cli.upload import TOKEN_VARIABLE

PEOPLE = ["--author", "Jane Doe;bioimageiobot;EPFL", "--maintainer", "Jane Doe;bioimageiobot"]
COLLECTION = "bioimage-io/bioimage.io"
READY_S = 90


@dataclass(frozen=True)
class Zoo:
    url: str
    root_token: str
    user_token: str


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{url}: the server exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"{url}: no answer in {READY_S} s:\n{log.read_text()[-3000:]}")


def _start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _set_up_the_zoo(url: str, root_token: str) -> str:
    """As root: the zoo's workspace and collection (logged-in users may put drafts in it, as on bioimage.io);
    then a user signs up, confirms and logs in through the server's own login service: that user's token."""
    root = connect_to_server({"server_url": url, "token": root_token, "method_timeout": 60})
    root.create_workspace({"id": "bioimage-io", "name": "bioimage-io", "description": "the zoo", "persistent": True})
    words = {"animal": ["otter", "lynx", "heron", "koala"], "animal_adjective": ["calm", "eager", "jolly", "lucky"]}
    root.get_service("public/artifact-manager").create(
        alias=COLLECTION,
        type="collection",
        manifest={"name": "BioImage Model Zoo (local)", "description": "for the tests"},
        config={"permissions": {"*": "r", "@": "r+"}, "id_parts": words},
    )
    root.disconnect()
    guest = connect_to_server({"server_url": url, "method_timeout": 60})
    login = guest.get_service("public/hypha-login")
    email, password = "jane@example.org", secrets.token_urlsafe(12)
    signed = login.signup(name="Jane Doe", email=email, password=password)
    login.verify_email(email=email, code=signed["dev_code"])  # no mail server: the code comes back directly
    token = login.login(email=email, password=password)["token"]
    guest.disconnect()
    return token


@contextlib.contextmanager
def _running_zoo(folder: Path) -> Iterator[Zoo]:
    """moto (S3) and Hypha on free ports of 127.0.0.1, set up as the zoo, stopped on leaving."""
    s3_port, port = _free_port(), _free_port()
    s3 = _start([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)], folder / "s3.log")
    processes = [s3]
    try:
        _wait(f"http://127.0.0.1:{s3_port}/", s3, folder / "s3.log")
        root_token = secrets.token_urlsafe(48)  # hypha wants >= 32 characters and no guessable words
        hypha = _start(
            [
                sys.executable,
                "-m",
                "hypha.server",
                "--host=127.0.0.1",
                f"--port={port}",
                "--enable-s3",
                "--s3-admin-type=generic",
                f"--endpoint-url=http://127.0.0.1:{s3_port}",
                "--region-name=us-east-1",  # moto refuses hypha's default region when it creates the bucket
                "--access-key-id=testing",
                "--secret-access-key=testing",
                f"--database-uri=sqlite+aiosqlite:///{folder / 'hypha.db'}",
                f"--root-token={root_token}",
                "--enable-local-auth",
            ],
            folder / "hypha.log",
            env={**os.environ, "HYPHA_JWT_SECRET": secrets.token_urlsafe(32)},
        )
        processes.append(hypha)
        url = f"http://127.0.0.1:{port}"
        _wait(f"{url}/health/readiness", hypha, folder / "hypha.log")
        yield Zoo(url, root_token, _set_up_the_zoo(url, root_token))
    finally:
        for process in reversed(processes):
            _stop(process)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zoo]:
    with _running_zoo(tmp_path_factory.mktemp("zoo-server")) as running:
        yield running


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled model's package, with an author and a maintainer."""
    out = tmp_path_factory.mktemp("upload") / "export"
    assert main(["export", "bundled", "--out", str(out), *PEOPLE]) == 0
    (zipped,) = out.glob("*.bioimageio.zip")
    return zipped


def _upload(package: Path, zoo: Zoo, *more: str) -> int:
    return main(["upload", str(package), "--server", zoo.url, "--skip-weights", *more])


def _staged(zoo: Zoo, artifact_id: str) -> dict[str, bytes]:
    """The draft's files, downloaded, and its staged manifest under the key ``manifest``."""
    server = connect_to_server({"server_url": zoo.url, "token": zoo.user_token, "method_timeout": 60})
    try:
        manager = server.get_service("public/artifact-manager")
        files = {}
        for entry in manager.list_files(artifact_id, version="stage"):
            url = manager.get_file(artifact_id, file_path=entry["name"], version="stage")
            with urllib.request.urlopen(url) as response:
                files[entry["name"]] = response.read()
        files["manifest"] = manager.read(artifact_id, version="stage")["manifest"]
        files["versions"] = manager.read(artifact_id)["versions"]
        return files
    finally:
        server.disconnect()


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    assert "ERROR" not in captured.out and "Traceback" not in captured.out + captured.err  # no library logging
    (line,) = captured.err.strip().splitlines()
    return line


def test_upload_leaves_a_staged_draft_asking_for_review(package: Path, zoo: Zoo, capsys):
    assert _upload(package, zoo, "--token", zoo.user_token) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    with zipfile.ZipFile(package) as archive:
        originals = {name: archive.read(name) for name in archive.namelist()}
    assert lines[-3].startswith(f"uploaded {len(originals)} files (") and f"{zoo.url}: draft bioimage-io/" in lines[-3]
    assert lines[-2] == "remote test: skipped: this server has no model runner"
    assert lines[-1].startswith("review requested")
    staged = _staged(zoo, lines[-3].split("draft ")[1].split()[0])
    manifest, versions = staged.pop("manifest"), staged.pop("versions")
    assert staged == originals  # every file, byte for byte, and nothing else
    # what the zoo's website sets and its curators list: "request-review"
    assert manifest["status"] == "request-review" and manifest["name"] == yaml.safe_load(originals["rdf.yaml"])["name"]
    assert versions == []  # staged only: a curator commits


def test_a_package_folder_sends_only_what_its_description_names(package: Path, zoo: Zoo, tmp_path: Path, capsys):
    zipfile.ZipFile(package).extractall(tmp_path / "unpacked")
    (tmp_path / "unpacked" / ".DS_Store").write_bytes(b"stray")
    (tmp_path / "unpacked" / "notes").mkdir()
    (tmp_path / "unpacked" / "notes" / "draft.txt").write_text("not for the zoo")
    assert _upload(tmp_path / "unpacked", zoo, "--token", zoo.user_token) == 0
    line = capsys.readouterr().out.strip().splitlines()[-3]
    staged = _staged(zoo, line.split("draft ")[1].split()[0])
    assert set(staged) - {"manifest", "versions"} == set(zipfile.ZipFile(package).namelist())


def test_a_refused_token_is_one_line(package: Path, zoo: Zoo, capsys):
    assert _upload(package, zoo, "--token", "not-a-token") == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"Error: {zoo.url} refused the token (") and line.endswith("pass it with --token")


def test_no_token_is_one_line(package: Path, zoo: Zoo, capsys, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    assert _upload(package, zoo) == 2
    line = _one_error_line(capsys)
    assert "uploading needs your bioimage.io token" in line and TOKEN_VARIABLE in line


def test_the_token_can_come_from_the_environment(package: Path, zoo: Zoo, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(TOKEN_VARIABLE, zoo.user_token)
    assert _upload(package, zoo) == 0


def test_a_missing_collection_is_one_line(package: Path, zoo: Zoo, capsys):
    assert _upload(package, zoo, "--token", zoo.user_token, "--collection", "bioimage-io/no-such") == 2
    assert _one_error_line(capsys) == f"Error: {zoo.url} has no collection 'bioimage-io/no-such'; check it"


class _QuietPages(http.server.SimpleHTTPRequestHandler):
    """A plain web server's pages (not Hypha), without its request log on stderr."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.mark.parametrize("server", ["unreachable", "not hypha", "no scheme"])
def test_a_wrong_server_is_one_line(package: Path, server: str, capsys):
    with contextlib.ExitStack() as stack:
        if server == "not hypha":
            web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuietPages)
            threading.Thread(target=web.serve_forever, daemon=True).start()
            stack.callback(web.server_close)
            stack.callback(web.shutdown)
            url = f"http://127.0.0.1:{web.server_address[1]}"
        else:
            url = f"http://127.0.0.1:{_free_port()}" if server == "unreachable" else "hypha.aicell.io"
        assert main(["upload", str(package), "--server", url, "--skip-weights", "--token", "x" * 40]) == 2
    line = _one_error_line(capsys)
    expected = {
        "unreachable": f"Error: cannot reach {url} (",
        "not hypha": f"Error: no Hypha server answers at {url} (",
        "no scheme": "Error: 'hypha.aicell.io' is no server address; give --server as https://...",
    }[server]
    assert line.startswith(expected)

"""``--from cellseg3d:wnet3d``: download, verification and cache, against a local server on 127.0.0.1."""

import hashlib
import io
import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import yaml

from wnet_zoo.cli import main
from wnet_zoo.errors import UserError
from wnet_zoo.io.download import cellseg3d_weights, resolve_source
from wnet_zoo.model.checkpoints import load_weights
from wnet_zoo.model.wnet import WNet3D

QUICK = ["--patch", "16,24,24", "--samples-per-epoch", "1", "--batch", "1", "--epochs", "1"]


@pytest.fixture(scope="module")
def archive() -> bytes:
    """A .tar.gz holding one wnet_latest.pth, as CellSeg3D publishes it, of a tiny WNet3D."""
    torch.manual_seed(0)
    weights = io.BytesIO()
    torch.save(WNet3D(channels=(4, 8, 16, 32)).state_dict(), weights)
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        info = tarfile.TarInfo("wnet_latest.pth")
        info.size = len(weights.getvalue())
        tar.addfile(info, io.BytesIO(weights.getvalue()))
    return data.getvalue()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        status, headers, body = self.server.routes[self.path]  # type: ignore[attr-defined]
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(archive: bytes, tmp_path: Path, monkeypatch):
    """A local server with Hugging Face's answers (a redirect carrying X-Linked-Etag) and broken ones."""
    sha = hashlib.sha256(archive).hexdigest()
    size = str(len(archive))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.hits = []  # type: ignore[attr-defined]
    httpd.routes = {  # type: ignore[attr-defined]
        "/hf/wnet_latest.tar.gz": (302, {"Location": "/cdn/blob?sig=1", "X-Linked-Etag": f'"{sha}"'}, b""),
        "/cdn/blob?sig=1": (200, {"Content-Length": size, "ETag": '"5d41402abc"'}, archive),
        "/plain/wnet_latest.tar.gz": (200, {"Content-Length": size}, archive),
        "/badsha/wnet_latest.tar.gz": (200, {"Content-Length": size, "ETag": f'"{"0" * 64}"'}, archive),
        "/short/wnet_latest.tar.gz": (200, {"Content-Length": str(len(archive) + 100)}, archive),
        "/gone/wnet_latest.tar.gz": (404, {"Content-Length": "0"}, b""),
    }
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("WNET_ZOO_CACHE", str(tmp_path / "cache"))
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield base, httpd.hits, sha
    httpd.shutdown()
    httpd.server_close()


def _use(monkeypatch, url: str) -> None:
    monkeypatch.setenv("WNET_ZOO_CELLSEG3D_URL", url)


def test_download_follows_the_redirect_verifies_and_caches(server, archive: bytes, tmp_path: Path, monkeypatch):
    base, hits, sha = server
    _use(monkeypatch, f"{base}/hf/wnet_latest.tar.gz")
    path = cellseg3d_weights(progress=False)
    assert path == tmp_path / "cache" / "cellseg3d" / "wnet_latest.tar.gz"
    assert path.read_bytes() == archive and hits == ["/hf/wnet_latest.tar.gz", "/cdn/blob?sig=1"]
    assert (path.parent / "wnet_latest.tar.gz.sha256").read_text() == f"{sha}  wnet_latest.tar.gz\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["wnet_latest.tar.gz", "wnet_latest.tar.gz.sha256"]
    assert cellseg3d_weights(progress=False) == path and len(hits) == 2  # cached: no request
    assert load_weights(path).architecture["channels"] == [4, 8, 16, 32]
    with path.open("ab") as handle:
        handle.write(b"x")  # a damaged cache is downloaded again
    assert cellseg3d_weights(progress=False).read_bytes() == archive and len(hits) == 4


def test_download_without_a_checksum_header_stores_the_computed_one(server, archive: bytes, monkeypatch):
    base, hits, sha = server
    _use(monkeypatch, f"{base}/plain/wnet_latest.tar.gz")
    path = cellseg3d_weights(progress=False)
    assert path.read_bytes() == archive and path.with_name(path.name + ".sha256").read_text().split()[0] == sha


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ("badsha", r"is corrupt: SHA-256 [0-9a-f]{64}, the server says 0{64}; try again"),
        ("short", r"incomplete: \d+ of \d+ bytes; try again"),
        ("gone", r"the server answered 404 Not Found"),
    ],
)
def test_bad_downloads_leave_nothing_in_the_cache(server, tmp_path: Path, monkeypatch, route: str, message: str):
    base, _, _ = server
    _use(monkeypatch, f"{base}/{route}/wnet_latest.tar.gz")
    with pytest.raises(UserError, match=message):
        cellseg3d_weights(progress=False)
    assert list((tmp_path / "cache" / "cellseg3d").iterdir()) == []


def test_offline_is_one_error_line(tmp_path: Path, small_tiff: Path, monkeypatch, capfd):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("WNET_ZOO_CACHE", str(tmp_path / "cache"))
    _use(monkeypatch, f"http://127.0.0.1:{port}/wnet_latest.tar.gz")
    out = tmp_path / "tuned"
    assert main(["finetune", str(small_tiff), "--from", "cellseg3d:wnet3d", "--out", str(out), *QUICK]) == 2
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"Error: cannot download http://127.0.0.1:{port}/wnet_latest.tar.gz ("
    )
    assert lines[0].endswith("offline? Download it elsewhere and pass --from path/to/wnet_latest.tar.gz")
    assert not out.exists()


def test_finetune_from_cellseg3d_weights(server, tmp_path: Path, small_tiff: Path, monkeypatch):
    base, hits, _ = server
    _use(monkeypatch, f"{base}/hf/wnet_latest.tar.gz")
    assert resolve_source(str(tmp_path / "run")) == str(tmp_path / "run") and hits == []  # no alias: no request
    out = tmp_path / "tuned"
    assert main(["finetune", str(small_tiff), "--from", "cellseg3d:wnet3d", "--out", str(out), *QUICK]) == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["from-weights"] == str(tmp_path / "cache" / "cellseg3d" / "wnet_latest.tar.gz")
    assert config["channels"] == [4, 8, 16, 32] and len(hits) == 2

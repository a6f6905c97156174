"""Where weights can come from, turned into one PyTorch file to read.

A run directory (its ``best.pt``, else ``last.pt``), a ``.pt``/``.pth`` file, a ``.tar.gz`` holding one
``.pth`` (as CellSeg3D distributes its weights), or a bioimage.io model package exported by wnet-zoo: a
``.zip``, its folder, or its ``rdf.yaml`` (the package's full WNet3D weights are used).
"""

from __future__ import annotations

import contextlib
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from wnet_zoo.errors import UserError
from wnet_zoo.io.packages import read_rdf, wnet_zoo_config

EXPECTED = (
    "expected a wnet-zoo run directory or checkpoint, a dict with a 'model' state dict, a WNet3D state dict "
    "such as CellSeg3D's .pth (or a .tar.gz of one), or a wnet-zoo bioimage.io package"
)
WEIGHT_SUFFIXES = (".pt", ".pth")
FULL_WEIGHTS_KEY = "full_weights"
"""Key under ``config.wnet_zoo`` in a package's rdf.yaml naming the file with the whole WNet3D's weights."""


@contextlib.contextmanager
def weights_file(source: str | Path) -> Iterator[Path]:
    """Yield a path to a PyTorch weights file for ``source``, extracting archives into a temporary folder."""
    path = Path(source)
    if path.is_dir():
        if (path / "rdf.yaml").is_file():
            path = path / "rdf.yaml"
        else:
            found = next((c for c in (path / "best.pt", path / "last.pt") if c.is_file()), None)
            if found is None:
                raise UserError(f"{path}: folder has no best.pt, last.pt or rdf.yaml; {EXPECTED}")
            yield found
            return
    if not path.is_file():
        raise UserError(f"{path}: no such file or folder; {EXPECTED}")
    name = path.name.lower()
    if name.endswith((".yaml", ".yml")):
        yield path.parent / _package_weights_name(path.read_text(), path)
    elif name.endswith((".tar.gz", ".tgz", ".tar")):
        with tempfile.TemporaryDirectory(prefix="wnet-zoo-") as folder:
            yield _extract_tar_weights(path, Path(folder))
    elif zipfile.is_zipfile(path) and _is_package(path):
        with tempfile.TemporaryDirectory(prefix="wnet-zoo-") as folder, zipfile.ZipFile(path) as archive:
            rdf_name = next(n for n in archive.namelist() if Path(n).name == "rdf.yaml")
            member = str(Path(rdf_name).parent / _package_weights_name(archive.read(rdf_name).decode(), path))
            member = member.removeprefix("./")
            if member not in archive.namelist():
                raise UserError(f"{path}: the package lacks its weights file {member}; re-export it")
            yield Path(archive.extract(member, folder))
    else:
        yield path


def _is_package(path: Path) -> bool:
    with zipfile.ZipFile(path) as archive:
        return any(Path(n).name == "rdf.yaml" for n in archive.namelist())


def _package_weights_name(text: str, where: Path) -> str:
    ours = wnet_zoo_config(read_rdf(text, f"{where}: rdf.yaml", f"; {EXPECTED}"))
    if ours.get(FULL_WEIGHTS_KEY):
        return str(ours[FULL_WEIGHTS_KEY])
    raise UserError(f"{where}: not a bioimage.io package exported by wnet-zoo (no full WNet3D weights); {EXPECTED}")


def _extract_tar_weights(path: Path, folder: Path) -> Path:
    try:
        with tarfile.open(path) as archive:
            members = [m for m in archive.getmembers() if m.isfile() and m.name.lower().endswith(WEIGHT_SUFFIXES)]
            if len(members) != 1:
                raise UserError(f"{path}: holds {len(members)} .pth/.pt files; exactly one is needed")
            archive.extract(members[0], folder, filter="data")  # refuses absolute paths, '..' and links
    except (tarfile.TarError, OSError, EOFError) as error:
        raise UserError(f"{path}: not a readable tar archive ({type(error).__name__}); {EXPECTED}") from None
    return folder / members[0].name

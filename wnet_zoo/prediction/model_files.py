"""Finding the ONNX file in what the user gives: a ``.onnx`` file, a bioimage.io package (zip or folder),
and clear refusals for training checkpoints and run folders.
"""

from __future__ import annotations

import contextlib
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from wnet_zoo.errors import UserError, command
from wnet_zoo.io.packages import read_rdf
from wnet_zoo.prediction.runtime import short_message

_RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")


@contextlib.contextmanager
def onnx_file(model: str | Path) -> Iterator[Path]:
    """The ONNX file of ``model``: an ``.onnx`` file, or a bioimage.io package (zip, folder or its rdf.yaml)
    with ``weights: onnx``; a zipped package is unpacked into a temporary folder for the ``with`` block.

    Training checkpoints, run folders and TorchScript files are refused with the command that exports them.
    """
    path = Path(model)
    if not path.exists():
        raise UserError(f"{path}: no such model; give an .onnx file or a bioimage.io package (.zip, folder, rdf.yaml)")
    if path.is_dir():
        yield _onnx_from_rdf(rdf_in_folder(path))
    elif path.suffix.lower() in (".yaml", ".yml"):
        yield _onnx_from_rdf(path)
    elif zipfile.is_zipfile(path):
        with tempfile.TemporaryDirectory(prefix="wnet-zoo-") as folder:
            unzip_package(path, Path(folder))
            rdf = rdf_in_folder(Path(folder), path)
            onnx_path = _onnx_from_rdf(rdf, f"{path} ({rdf.name})")
            _SHOWN[onnx_path] = f"{path} ({onnx_path.name})"
            try:
                yield onnx_path
            finally:
                _SHOWN.pop(onnx_path, None)
    elif path.suffix.lower() in TORCH_SUFFIXES:
        raise UserError(_not_exported(path, "a training checkpoint"))
    elif path.suffix.lower() == ".zip" or _starts_with(path, ZIP_MAGIC):
        raise UserError(f"{path}: not a readable zip file (damaged or cut short); download or zip the package again")
    else:
        yield path


TORCH_SUFFIXES = (".pt", ".pth", ".ckpt")
RUN_FILES = ("best.pt", "last.pt", "config.yaml")
ZIP_MAGIC = b"PK\x03\x04"
# An ONNX file unpacked from a zipped package -> how messages name it: the zip the user gave, and the member.
# Kept for the ``with`` block of :func:`onnx_file`, so that a Predictor given the unpacked file names the zip.
_SHOWN: dict[Path, str] = {}


def shown_name(path: Path) -> str:
    """How messages name the ONNX file ``path`` from :func:`onnx_file`: itself, or the zip it came from."""
    return _SHOWN.get(path, str(path))


def _not_exported(path: Path, what: str) -> str:
    return f"{path}: {what}, not an exported model; export it first: {command('export_model', path, out='exported')}"


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(len(magic)) == magic
    except OSError:
        return False


def unzip_package(path: Path, folder: Path) -> None:
    """Unpack the bioimage.io package ``path`` into ``folder``; torch files (zips too) are refused."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if not any(name in _RDF_NAMES or name.endswith(".bioimageio.yaml") for name in names):
                _refuse_torch_zip(path, names)
            archive.extractall(folder)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:  # damaged members, CRC errors
        raise UserError(
            f"{path}: not a readable zip file ({short_message(error)}); download the package again"
        ) from None


def _refuse_torch_zip(path: Path, names: list[str]) -> None:
    """Refuse what ``torch.save`` (a ``data.pkl`` member) or ``torch.jit.save`` (``code/`` too) wrote."""
    if not any(name.rsplit("/", 1)[-1] == "data.pkl" for name in names):
        return
    if any("/code/" in name or name.endswith("/constants.pkl") for name in names):
        raise UserError(f"{path}: a TorchScript model, not ONNX; give the .onnx file written beside it")
    raise UserError(_not_exported(path, "a training checkpoint"))


def rdf_in_folder(folder: Path, shown: Path | None = None) -> Path:
    """The package description in ``folder`` (``rdf.yaml``, ``bioimageio.yaml`` or ``*.bioimageio.yaml``); ``shown``
    names the package a folder was unpacked from in messages."""
    found = [folder / name for name in _RDF_NAMES if (folder / name).is_file()]
    found += sorted(folder.glob("*.bioimageio.yaml"))
    if not found and shown is None and any((folder / name).is_file() for name in RUN_FILES):
        raise UserError(_not_exported(folder, "a training run folder"))
    if not found:
        raise UserError(f"{shown or folder}: no rdf.yaml inside; give an .onnx file or a bioimage.io package")
    return found[0]


def _onnx_from_rdf(rdf: Path, shown: str | None = None) -> Path:
    """The ONNX weights the package description ``rdf`` names; ``shown`` names it in messages."""
    shown = shown or str(rdf)
    try:
        text = rdf.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{shown}: not a readable bioimage.io rdf.yaml ({type(error).__name__})") from None
    weights = read_rdf(text, shown).get("weights")
    entry = weights.get("onnx") if isinstance(weights, dict) else None
    source = entry.get("source") if isinstance(entry, dict) else None
    if not isinstance(source, str):
        raise UserError(f"{shown}: the package has no onnx weights; export one with {command('export_model')}")
    if "://" in source:
        raise UserError(f"{shown}: onnx weights at {source} are remote; download the package with its weights first")
    onnx_path = rdf.parent / source
    if not onnx_path.is_file():
        raise UserError(f"{shown}: its onnx weights {source} are missing from the package")
    return onnx_path

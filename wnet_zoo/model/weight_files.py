"""Where weights can come from, turned into one PyTorch file to read.

A run directory (its ``best.pt``, else ``last.pt``), a ``.pt``/``.pth`` file, a ``.tar.gz`` holding one
``.pth`` (as CellSeg3D distributes its weights), or a bioimage.io model package exported by wnet-zoo: a
``.zip``, its folder, or its ``rdf.yaml``: the whole WNet3D joined from the package's encoder (its
``pytorch_state_dict`` weights) and its decoder attachment (earlier exports held both in one file).

The attachment stores the decoder's tensors as byte planes (every tensor's first bytes, then its second bytes, ...):
the same bits, but the zip's deflate packs the planes of sign and exponent bits far tighter than interleaved floats
(the default architecture's decoder: 93 MB -> 85 MB in the package). Only wnet-zoo reads the attachment; consumers
run the encoder's formats.
"""

from __future__ import annotations

import contextlib
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wnet_zoo.errors import UserError
from wnet_zoo.io.packages import read_rdf, wnet_zoo_config

if TYPE_CHECKING:
    import torch

EXPECTED = (
    "expected a wnet-zoo run directory or checkpoint, a dict with a 'model' state dict, a WNet3D state dict "
    "such as CellSeg3D's .pth (or a .tar.gz of one), or a wnet-zoo bioimage.io package"
)
WEIGHT_SUFFIXES = (".pt", ".pth")
FULL_WEIGHTS_KEY = "full_weights"
"""Key under ``config.wnet_zoo`` in a package's rdf.yaml naming a file with the whole WNet3D's weights (the layout
of earlier exports, which stored the encoder twice)."""
DECODER_WEIGHTS_KEY = "decoder_weights"
"""Key under ``config.wnet_zoo`` naming the attachment with the decoder's weights and the training record; the
encoder's are the package's ``pytorch_state_dict`` weights."""
DECODER_PLANES = "decoder_byte_planes"
"""Key in the decoder attachment of the decoder's state dict as :func:`to_byte_planes` stores it (exports before it
stored the state dict itself under ``decoder``)."""
JOINED_NAME = "wnet3d_joined.pt"


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
        files = [path.parent / member for member in _package_members(path.read_text(), path)]
        missing = [file.name for file in files if not file.is_file()]
        if missing:
            raise UserError(f"{path.parent}: the package lacks its weights file {missing[0]}; re-export it")
        if len(files) == 1:
            yield files[0]
            return
        with tempfile.TemporaryDirectory(prefix="wnet-zoo-") as folder:
            yield _join(*files, Path(folder), path)
    elif name.endswith((".tar.gz", ".tgz", ".tar")):
        with tempfile.TemporaryDirectory(prefix="wnet-zoo-") as folder:
            yield _extract_tar_weights(path, Path(folder))
    elif zipfile.is_zipfile(path) and _is_package(path):
        with tempfile.TemporaryDirectory(prefix="wnet-zoo-") as folder, zipfile.ZipFile(path) as archive:
            rdf_name = next(n for n in archive.namelist() if Path(n).name == "rdf.yaml")
            extracted = []
            for member in _package_members(archive.read(rdf_name).decode(), path):
                member = str(Path(rdf_name).parent / member).removeprefix("./")
                if member not in archive.namelist():
                    raise UserError(f"{path}: the package lacks its weights file {member}; re-export it")
                extracted.append(Path(archive.extract(member, folder)))
            yield extracted[0] if len(extracted) == 1 else _join(*extracted, Path(folder), path)
    else:
        yield path


def _is_package(path: Path) -> bool:
    with zipfile.ZipFile(path) as archive:
        return any(Path(n).name == "rdf.yaml" for n in archive.namelist())


def _package_members(text: str, where: Path) -> list[str]:
    """The files holding a wnet-zoo package's whole WNet3D: [encoder, decoder], or [both] in the earlier layout."""
    description = read_rdf(text, f"{where}: rdf.yaml", f"; {EXPECTED}")
    ours = wnet_zoo_config(description)
    if ours.get(DECODER_WEIGHTS_KEY):
        encoder = ((description.get("weights") or {}).get("pytorch_state_dict") or {}).get("source")
        if not encoder:
            raise UserError(f"{where}: the package names a decoder but no pytorch_state_dict encoder; re-export it")
        return [str(encoder), str(ours[DECODER_WEIGHTS_KEY])]
    if ours.get(FULL_WEIGHTS_KEY):
        return [str(ours[FULL_WEIGHTS_KEY])]
    raise UserError(f"{where}: not a bioimage.io package exported by wnet-zoo (no full WNet3D weights); {EXPECTED}")


def _join(encoder: Path, decoder: Path, folder: Path, where: Path) -> Path:
    """One checkpoint of the whole WNet3D (``model`` and the training record) from a package's encoder state dict
    and its decoder attachment, written into ``folder``; the tensors are the files' own, bit for bit."""
    import torch

    try:
        encoder_state = torch.load(encoder, map_location="cpu", weights_only=True)
        attachment = torch.load(decoder, map_location="cpu", weights_only=True)
        state = {f"encoder.{key}": value for key, value in encoder_state.items()}
        if "decoder" in attachment:
            decoder_state = attachment.pop("decoder")
        else:
            decoder_state = from_byte_planes(attachment.pop(DECODER_PLANES))
        state.update({f"decoder.{key}": value for key, value in decoder_state.items()})
    except Exception as error:  # a damaged or foreign file: what torch says is no use to the user
        raise UserError(
            f"{where}: the package's weights are unreadable ({type(error).__name__}); re-export it"
        ) from None
    target = folder / JOINED_NAME
    torch.save({"model": state, **attachment}, target)
    return target


def to_byte_planes(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    """Each tensor of ``state`` as plain data: its bytes as a (bytes per element, elements) uint8 tensor whose row
    k holds byte k of every element, least significant first on any machine, with its dtype's name and its shape
    (read back by :func:`from_byte_planes`)."""
    import torch

    planes = {}
    for key, tensor in state.items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        rows = flat.view(torch.uint8).reshape(flat.numel(), flat.element_size()).T
        planes[key] = {
            "planes": _little_endian(rows).contiguous(),
            "dtype": str(tensor.dtype).removeprefix("torch."),
            "shape": list(tensor.shape),
        }
    return planes


def from_byte_planes(planes: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict that :func:`to_byte_planes` stored, bit for bit; ``ValueError`` for anything else."""
    import math

    import torch

    state = {}
    for key, entry in planes.items():
        if not isinstance(entry, Mapping) or not {"planes", "dtype", "shape"} <= entry.keys():
            raise ValueError(f"{key}: not a tensor stored as byte planes")
        rows, shape = entry["planes"], entry["shape"]
        dtype = getattr(torch, str(entry["dtype"]), None)
        valid_shape = isinstance(shape, list | tuple) and all(type(n) is int and n >= 0 for n in shape)
        if not (isinstance(dtype, torch.dtype) and isinstance(rows, torch.Tensor) and valid_shape):
            raise ValueError(f"{key}: not a tensor stored as byte planes")
        if rows.dtype != torch.uint8 or tuple(rows.shape) != (dtype.itemsize, math.prod(shape)):
            raise ValueError(f"{key}: its byte planes do not hold a {dtype} tensor of shape {list(shape)}")
        state[key] = _little_endian(rows).T.contiguous().view(dtype).reshape(shape)
    return state


def _little_endian(rows: torch.Tensor) -> torch.Tensor:
    """Byte planes in the machine's order as least significant first, or back (the same reversal)."""
    return rows.flip(0) if sys.byteorder == "big" else rows


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

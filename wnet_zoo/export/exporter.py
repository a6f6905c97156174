"""``wnet-zoo export``: WNet3D weights to an ONNX file and a bioimage.io package (and a TorchScript file, asked for).

Everything is built in a temporary folder next to ``out`` and renamed into place at the end, so a failed
or interrupted export leaves nothing half-written (and an existing ``out`` untouched until then).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from wnet_zoo.errors import UserError, setting
from wnet_zoo.export.model_card import CardUpdate, ModelCard, read_card, zoo_gaps
from wnet_zoo.export.onnx import OPSET, export_onnx
from wnet_zoo.export.package import (
    ONNX_FILE,
    TORCHSCRIPT_FILE,
    PackageSource,
    require_bioimageio,
    write_package,
)
from wnet_zoo.export.parity import Parity, check_parity
from wnet_zoo.export.torchscript import export_torchscript
from wnet_zoo.io.atomic import check_can_create, part_suffix, sweep_stale_parts
from wnet_zoo.model.checkpoints import LoadedWeights, load_weights
from wnet_zoo.prediction.metadata import ModelMetadata


@dataclass
class ExportResult:
    """What an export wrote.

    Attributes:
        out: the folder holding the files below.
        onnx: the ONNX encoder.
        metadata: what the ONNX file's ``metadata_props`` say.
        parity: the numerical check of the written graphs against PyTorch.
        torchscript: the TorchScript encoder (``None`` unless asked for).
        package: the bioimage.io package (``None`` with ``onnx_only``).
        zoo_gaps: what bioimage.io's curators would refuse in the package's card (see
            :func:`~wnet_zoo.export.model_card.zoo_gaps`).
    """

    out: Path
    onnx: Path
    metadata: ModelMetadata
    parity: Parity
    torchscript: Path | None = None
    package: Path | None = None
    zoo_gaps: tuple[str, ...] = ()

    def summary(self) -> str:
        """What was written, one file a line, after the parity line."""
        m = self.metadata
        foreground = "unknown" if m.foreground_class is None else m.foreground_class
        tile = "x".join(map(str, m.train_patch)) if m.train_patch else "unknown"
        about = f"ONNX opset {OPSET}, {m.num_classes} classes, foreground class {foreground}, training tile {tile}"
        lines = [self.parity.summary(), f"wrote {self.out}/", f"  {self.onnx.name}  {about}"]
        if self.torchscript is not None:
            lines.append(f"  {self.torchscript.name}  TorchScript")
        if self.package is not None:
            lines.append(f"  {self.package.name}  bioimage.io model package")
        if self.zoo_gaps:
            lines.append(f"note: bioimage.io will refuse this package for upload: {'; '.join(self.zoo_gaps)}")
        return "\n".join(lines)


def training_metadata(weights: LoadedWeights, name: str) -> ModelMetadata:
    """The ONNX metadata of these weights: what their training record tells, nothing where there is none."""
    foreground = weights.checkpoint.get("foreground_class")
    patch = weights.config.get("patch")
    return ModelMetadata(
        num_classes=int(weights.architecture["num_classes"]),
        foreground_class=None if foreground is None else int(foreground),
        train_patch=tuple(int(v) for v in patch) if patch else None,  # type: ignore[arg-type]
        name=name,
    )


def export_model(
    source: str | Path,
    out: str | Path,
    *,
    card: str | Path | None = None,
    card_update: CardUpdate | None = None,
    onnx_only: bool = False,
    torchscript: bool = False,
    overwrite: bool = False,
) -> ExportResult:
    """Export WNet3D weights to the folder ``out``.

    Args:
        source: anything :func:`wnet_zoo.load_weights` reads (``"bundled"``, a run folder, our checkpoint, a dict with a
            ``model`` state dict, a bare state dict such as CellSeg3D's ``.pth``).
        out: the folder to create: ``wnet3d.onnx`` and ``NAME.bioimageio.zip`` (and ``wnet3d.torchscript.pt``).
        card: the model card YAML for the package (default: ``wnet_zoo/export/cards/wnet3d.yaml``).
        card_update: card fields given apart (authors, maintainers, name, ...), replacing the card's.
        onnx_only: write only ``wnet3d.onnx`` (no card is read then).
        torchscript: also write the TorchScript encoder, and put it in the package as a third weight format
            (PyTorch 2.0 and later load it; it adds a copy of the encoder, 75 MB at CellSeg3D's architecture).
        overwrite: replace an existing ``out``.

    Raises:
        UserError: ``out`` exists, ``source`` holds no WNet3D, the card is incomplete, ``bioimageio.spec`` is
            missing, or the exported graphs differ from PyTorch by more than 1e-3; nothing is written then.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; choose another {setting('out')} or pass {setting('overwrite', True)}")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; {setting('out')} must be a folder")
    check_can_create(out, setting("out"))
    if onnx_only and torchscript:
        raise UserError(f"{setting('onnx_only', True)} writes no TorchScript file; drop {setting('torchscript', True)}")
    if onnx_only and (card is not None or (card_update is not None and card_update != CardUpdate())):
        raise UserError(
            f"{setting('card')} and the card's fields (authors, maintainers, ...) describe the bioimage.io package, "
            f"which {setting('onnx_only', True)} does not write; drop them or {setting('onnx_only', True)}"
        )
    weights = load_weights(source)
    model_card: ModelCard | None = None
    if not onnx_only:
        model_card = read_card(card, card_update)
        require_bioimageio()
    model = weights.build_model().eval()
    metadata = training_metadata(weights, model_card.name if model_card else "wnet3d")
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_parts(out.parent)
    build = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=part_suffix(), dir=out.parent))
    try:
        onnx_path = export_onnx(model, build / ONNX_FILE, metadata)
        scripted = export_torchscript(model, build / TORCHSCRIPT_FILE) if torchscript else None
        parity = check_parity(model, onnx_path, scripted)
        package = None
        if model_card is not None:
            package_source = PackageSource(model, weights, metadata, model_card, parity)
            zip_path = build / f"{model_card.file_stem}.bioimageio.zip"
            with tempfile.TemporaryDirectory() as staging:
                package = write_package(package_source, onnx_path, scripted, Path(staging) / "package", zip_path)
        build.chmod(0o755)
        _move_into_place(build, out)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return ExportResult(
        out=out,
        onnx=out / ONNX_FILE,
        metadata=metadata,
        parity=parity,
        torchscript=None if scripted is None else out / TORCHSCRIPT_FILE,
        package=None if package is None else out / package.name,
        zoo_gaps=() if model_card is None else tuple(zoo_gaps(model_card)),
    )


def _move_into_place(build: Path, out: Path) -> None:
    """Rename ``build`` to ``out``; an existing ``out`` is moved aside first and deleted last."""
    if not out.exists():
        os.replace(build, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=part_suffix(), dir=out.parent))
    os.replace(out, old / out.name)
    os.replace(build, out)
    shutil.rmtree(old, ignore_errors=True)

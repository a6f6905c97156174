"""The bioimage.io model package (format 0.5) of a WNet3D encoder.

The zip holds ``rdf.yaml`` (rendered from ``wnet_zoo/export/templates/rdf.yaml``); the weights as
``pytorch_state_dict`` (its architecture ``wnet3d_model.py``, a copy of ``wnet_zoo/model/wnet.py`` that needs only
PyTorch) and ``onnx``, and ``torchscript`` when asked for (each format is another copy of the encoder, and every
consumer reads one of the first two: see docs/export.md); the decoder (as byte planes, which deflate better) with
the training record as an attachment (named by ``config.wnet_zoo.decoder_weights``: with the ``pytorch_state_dict``
encoder, the whole WNet3D that ``load_weights`` reads from a package, e.g. to fine-tune; no weight is stored twice);
test input and output tensors computed by the model itself, the same as TIFF sample tensors; a cover image
and the documentation page (``wnet_zoo/export/templates/README.md``). Writing it needs ``bioimageio.spec`` (the ``zoo``
extra), which validates the description before zipping.
"""

from __future__ import annotations

import datetime
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
import yaml

from wnet_zoo.errors import UserError, setting, shorten
from wnet_zoo.export.encoder import EXPORTED_INPUT_SCALE
from wnet_zoo.export.model_card import ModelCard
from wnet_zoo.export.onnx import OPSET
from wnet_zoo.export.parity import Parity
from wnet_zoo.export.rdf import read_template, render_text, render_yaml, sha256
from wnet_zoo.io.example import example_volume
from wnet_zoo.io.intensity import remap
from wnet_zoo.io.volumes import read_volume
from wnet_zoo.model import wnet as model_module
from wnet_zoo.model.checkpoints import LoadedWeights
from wnet_zoo.model.weight_files import DECODER_PLANES, DECODER_WEIGHTS_KEY, to_byte_planes
from wnet_zoo.model.wnet import WNet3D
from wnet_zoo.prediction.metadata import ModelMetadata
from wnet_zoo.version import __version__

ONNX_FILE = "wnet3d.onnx"
TORCHSCRIPT_FILE = "wnet3d.torchscript.pt"
STATE_DICT_FILE = "wnet3d_encoder_state_dict.pt"
DECODER_FILE = "wnet3d_decoder.pt"
_TRAINING_RECORD = ("config", "epoch", "foreground_class", "class_means")
ARCHITECTURE_FILE = "wnet3d_model.py"
TEST_SIZE = (64, 64, 64)
# The newest format that the zoo's runtime reads (bioimageio.core 0.10.4: bioimageio.spec 0.5.10; 0.5.11 made the
# documentation and covers file entries, which it and ilastik's 0.9 reject). Newer libraries update it on loading,
# older 0.5 ones read it as their own: benchmarks/consumers.py runs the package in each.
FORMAT_VERSION = "0.5.10"
HALO = 16  # voxels cropped from each side of a tile: 2 voxels of the 1/8-resolution bottleneck


@dataclass
class PackageSource:
    """Everything a package says about one exported model."""

    model: WNet3D
    weights: LoadedWeights
    metadata: ModelMetadata
    card: ModelCard
    parity: Parity


def require_bioimageio() -> None:
    """Raise ``UserError`` unless ``bioimageio.spec`` can be imported (checked before anything is written)."""
    try:
        import bioimageio.spec  # noqa: F401
    except ImportError:
        raise UserError(
            "writing a bioimage.io package needs bioimageio.spec: pip install 'wnet-zoo[zoo]' "
            f"(or pass {setting('onnx_only', True)} to write only the ONNX file)"
        ) from None


def write_package(
    source: PackageSource, onnx_path: Path, torchscript_path: Path | None, folder: Path, zip_path: Path
) -> Path:
    """Lay the package's files out in the new folder ``folder``, validate its description and zip it to ``zip_path``
    (with the TorchScript weights only when ``torchscript_path`` is given)."""
    folder.mkdir()
    shutil.copyfile(onnx_path, folder / ONNX_FILE)
    if torchscript_path is not None:
        shutil.copyfile(torchscript_path, folder / TORCHSCRIPT_FILE)
    torch.save(source.model.encoder.state_dict(), folder / STATE_DICT_FILE)
    record = {key: source.weights.checkpoint[key] for key in _TRAINING_RECORD if key in source.weights.checkpoint}
    torch.save({DECODER_PLANES: to_byte_planes(source.model.decoder.state_dict()), **record}, folder / DECODER_FILE)
    shutil.copyfile(model_module.__file__, folder / ARCHITECTURE_FILE)
    raw, probabilities = make_test_tensors(source.model)
    np.save(folder / "test_input.npy", raw)
    np.save(folder / "test_output.npy", probabilities)
    tifffile.imwrite(folder / "sample_input.tif", raw[0, 0], compression="zlib")
    tifffile.imwrite(folder / "sample_output.tif", probabilities[0], compression="zlib")
    foreground = source.metadata.foreground_class
    if foreground is None:
        foreground = brightest_class(raw, probabilities)
    write_cover(raw, probabilities, foreground, folder / "cover.png")
    values = _values(source, raw, probabilities)
    values |= _torchscript_values(folder / TORCHSCRIPT_FILE if torchscript_path is not None else None)
    (folder / "README.md").write_text(render_text(read_template("README.md"), values), encoding="utf-8")
    rdf = render_yaml(read_template("rdf.yaml"), values, folder)
    validate(rdf, folder, source.card)
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False, allow_unicode=True), encoding="utf-8")
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, path.name)
    return zip_path


def make_test_tensors(model: WNet3D) -> tuple[np.ndarray, np.ndarray]:
    """A ``TEST_SIZE`` crop from the middle of the bundled example volume, raw (1, 1, Z, Y, X), and the
    model's probabilities on it (the package's preprocessing and weights scale it to 0..1, then by 100: the
    0..100 remap the model was trained on)."""
    volume = read_volume(example_volume())
    start = [(full - size) // 2 for full, size in zip(volume.shape, TEST_SIZE, strict=True)]
    crop = volume[tuple(slice(s, s + size) for s, size in zip(start, TEST_SIZE, strict=True))]
    raw = np.ascontiguousarray(crop, dtype=np.float32)[None, None]
    with torch.no_grad():
        probabilities = model.encoder.eval()(torch.from_numpy(remap(raw))).numpy()
    return raw, probabilities


def brightest_class(raw: np.ndarray, probabilities: np.ndarray) -> int:
    """The class whose probability-weighted mean intensity is highest (the training's foreground rule)."""
    image = remap(raw)
    weights = probabilities.sum(axis=(0, 2, 3, 4))
    means = (probabilities * image).sum(axis=(0, 2, 3, 4)) / np.maximum(weights, 1e-12)
    return int(np.argmax(means))


def write_cover(raw: np.ndarray, probabilities: np.ndarray, foreground: int, path: Path, zoom: int = 4) -> Path:
    """A 2:1 PNG: the middle z slice of the input (grey, 1-99.5 percentile contrast) beside the same slice
    with the predicted foreground mask (``probability > 0.5``) in magenta."""
    from PIL import Image

    z = raw.shape[2] // 2
    low, high = np.percentile(raw[0, 0, z], [1, 99.5])
    image = np.clip((raw[0, 0, z] - low) / max(high - low, 1e-12), 0, 1)
    grey = np.repeat((image * 255).astype(np.uint8)[..., None], 3, axis=2)
    mask = probabilities[0, foreground, z] > 0.5
    overlay = grey.copy()
    overlay[mask] = (0.4 * grey[mask] + 0.6 * np.array([255, 0, 255])).astype(np.uint8)
    both = np.concatenate([grey, overlay], axis=1)
    picture = Image.fromarray(both).resize((both.shape[1] * zoom, both.shape[0] * zoom), Image.Resampling.NEAREST)
    width, height = picture.size
    canvas = Image.new("RGB", (max(width, 2 * height), max(height, width // 2)))
    canvas.paste(picture, ((canvas.width - width) // 2, (canvas.height - height) // 2))
    canvas.save(path)
    return path


def validate(rdf: dict[str, Any], folder: Path, card: ModelCard) -> None:
    """Validate the description with bioimageio.spec, offline (files are ours, so no I/O checks); raise
    ``UserError`` with the first problem, which comes from the card unless wnet-zoo has a bug."""
    from bioimageio.spec import InvalidDescr, ValidationContext, build_description

    descr = build_description(rdf, context=ValidationContext(root=folder, perform_io_checks=False))
    if isinstance(descr, InvalidDescr):
        error = descr.validation_summary.errors[0]
        where = ".".join(map(str, error.loc))
        raise UserError(f"{card.source}: bioimage.io rejects the package description at {where}: {shorten(error.msg)}")


def _values(source: PackageSource, raw: np.ndarray, probabilities: np.ndarray) -> dict[str, Any]:
    """The values of the templates' placeholders."""
    import onnxruntime

    model, card, metadata, parity = source.model, source.card, source.metadata, source.parity
    scale = card.voxel_size or (1.0, 1.0, 1.0)
    classes = [f"class_{k}" for k in range(model.num_classes)]
    if metadata.foreground_class is not None:
        classes[metadata.foreground_class] = "foreground"
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    return {
        "format_version": FORMAT_VERSION,
        "name": card.name,
        "description": card.description.strip(),
        "documentation": card.documentation.strip(),
        "version": card.version,
        "authors": card.authors,
        "maintainers": card.maintainers,
        "license": card.license,
        "tags": card.tags,
        "cite": card.citations,
        "git_repo": card.git_repo,
        "timestamp": now.isoformat(),
        "spatial_multiple": metadata.spatial_multiple,
        "scale_z": scale[0],
        "scale_y": scale[1],
        "scale_x": scale[2],
        "unit": card.voxel_unit,
        "halo": HALO,
        "min_size": 2 * HALO + metadata.spatial_multiple,  # bioimage.io: a tile must outlast its halo
        "class_names": classes,
        "output_description": _output_description(metadata),
        "architecture_kwargs": {
            "in_channels": model.in_channels,
            "out_channels": model.num_classes,
            "channels": list(model.channels),
            "softmax": True,
            "dropout": model.dropout,
            "input_sigma": list(model.input_sigma),
            "input_log": model.input_log,
            "input_background": list(model.input_background),
            "input_scale": EXPORTED_INPUT_SCALE,
        },
        "pytorch_version": torch.__version__.split("+")[0],
        "opset_version": OPSET,
        "wnet_zoo_config": _wnet_zoo_config(source),
        "channels": ", ".join(map(str, model.channels)),
        "num_classes": model.num_classes,
        "foreground_text": _foreground_text(metadata, raw, probabilities),
        "training_text": _training_text(source),
        "test_shape": " x ".join(map(str, raw.shape)),
        "parity_shape": " x ".join(map(str, parity.shape)),
        "ort_vs_torch": f"{parity.ort_vs_torch:.2g}",
        "ort_vs_float64": f"{parity.ort_vs_float64:.2g}",
        "torch_vs_float64": f"{parity.torch_vs_float64:.2g}",
        "onnxruntime_version": onnxruntime.__version__,
        "wnet_zoo_version": __version__,
        "citations": "\n".join(_citation_line(c) for c in card.citations),
        "source_name": source.weights.source.name,
        "date": now.date().isoformat(),
    }


def _torchscript_values(path: Path | None) -> dict[str, Any]:
    """The TorchScript weights entry (``None`` leaves it out) and the documentation's sentence on the formats."""
    formats = "`pytorch_state_dict` (architecture `wnet3d_model.py`, callable `UNet3D`; it needs only PyTorch)"
    if path is None:
        text = f"{formats} and `onnx` (opset {OPSET}), both computing the same function."
        return {"torchscript_weights": None, "weight_formats_text": text}
    text = f"{formats}, `torchscript` and `onnx` (opset {OPSET}), all three computing the same function."
    entry = {
        "source": path.name,
        "sha256": sha256(path),
        "pytorch_version": torch.__version__.split("+")[0],
        "parent": "pytorch_state_dict",
    }
    return {"torchscript_weights": entry, "weight_formats_text": text}


def _output_description(metadata: ModelMetadata) -> str:
    if metadata.foreground_class is None:
        return "Softmax probabilities of the classes (which one is the foreground was not recorded)."
    return f"Softmax probabilities of the classes; class {metadata.foreground_class} is the foreground."


def _foreground_text(metadata: ModelMetadata, raw: np.ndarray, probabilities: np.ndarray) -> str:
    if metadata.foreground_class is not None:
        return (
            f"Class {metadata.foreground_class} (channel `foreground`) is the foreground, the brightest class "
            "during training."
        )
    return (
        "Which class is the foreground was not recorded with these weights; on the test input the brightest "
        f"class is class {brightest_class(raw, probabilities)} (shown on the cover)."
    )


def _training_text(source: PackageSource) -> str:
    weights, metadata, card = source.weights, source.metadata, source.card
    if metadata.train_patch is None:
        text = (
            "no training record came with these weights (a bare state dict such as CellSeg3D's .pth), so the "
            "training tile size and the foreground class are not known."
        )
    else:
        epoch = f" (checkpoint of epoch {weights.epoch})" if weights.epoch is not None else ""
        text = (
            "self-supervised (SoftNCut + reconstruction) with wnet-zoo on tiles of "
            f"{' x '.join(map(str, metadata.train_patch))} voxels (z, y, x){epoch}."
        )
    if card.voxel_size is not None:
        size = " x ".join(f"{v:g}" for v in card.voxel_size)
        text += f" Training voxel size (z, y, x): {size} {card.voxel_unit}."
    text += _input_text(source.model.input_log, source.model.input_background, source.model.input_sigma)
    if card.training_data.get("description"):
        text += f" Data: {str(card.training_data['description']).strip()}"
    return text


def _input_text(offset: float, background: Sequence[int], sigma: Sequence[float]) -> str:
    """The model card's sentences on what the model does to its input before segmenting it."""
    text = ""
    if offset:
        text += (
            " The model compresses its input's intensities (0..100: the min-max scaling times 100) with a logarithm, "
            f"100 * log(1 + x / {offset:.3g}) / log(1 + 100 / {offset:.3g}), before segmenting it (chosen in "
            "training for stacks whose nuclei differ widely in brightness)."
        )
    if any(background):
        text += (
            f" The model subtracts its {'compressed ' if offset else ''}input's background, the smoothed grey-level "
            "opening by a box of "
            f"{' x '.join(str(2 * r + 1) for r in background)} voxels (z, y, x), before segmenting it (chosen in "
            "training for stacks whose background varies as much as the nuclei stand above it)."
        )
    if any(sigma):
        text += (
            f" The model smooths its {'transformed ' if offset or any(background) else ''}input with a Gaussian of "
            f"sigma {' x '.join(f'{s:g}' for s in sigma)} voxels (z, y, x) before segmenting it (chosen in training "
            "for noisy stacks)."
        )
    if text:
        text += " Every weight format here includes these steps."
    return text


def _wnet_zoo_config(source: PackageSource) -> dict[str, Any]:
    metadata, checkpoint = source.metadata, source.weights.checkpoint
    config: dict[str, Any] = {
        DECODER_WEIGHTS_KEY: DECODER_FILE,
        "version": __version__,
        "normalization": metadata.normalization,
        "spatial_multiple": metadata.spatial_multiple,
        "num_classes": metadata.num_classes,
        "parity": source.parity.to_dict(),
    }
    if any(source.model.input_sigma):
        config["input_sigma"] = list(source.model.input_sigma)
    if source.model.input_log:
        config["input_log"] = source.model.input_log
    if any(source.model.input_background):
        config["input_background"] = list(source.model.input_background)
    if metadata.foreground_class is not None:
        config["foreground_class"] = metadata.foreground_class
    if metadata.train_patch is not None:
        config["train_patch"] = list(metadata.train_patch)
    if checkpoint.get("class_means") is not None:
        config["class_means"] = [float(v) for v in checkpoint["class_means"]]
    if source.card.training_data:
        config["training_data"] = source.card.training_data
    return config


def _citation_line(citation: dict[str, str]) -> str:
    link = f"https://doi.org/{citation['doi']}" if citation.get("doi") else citation["url"]
    return f"- {' '.join(str(citation['text']).split())} {link}"

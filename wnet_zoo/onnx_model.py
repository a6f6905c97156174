"""The exported ONNX encoder and the metadata that tell any tool how to feed it.

The graph takes ``raw`` (B, 1, Z, Y, X) float32 on the 0..100 scale (``(v - min) / (max - min) * 100``
over the whole volume) and returns ``probabilities`` (B, K, Z, Y, X), a softmax over K classes. Batch and
spatial axes are dynamic; spatial sizes must be multiples of 8. ``metadata_props`` hold the rest.

The graph is that of :func:`wnet_zoo.inference_encoder.inference_encoder` (composed convolutions, group
norms as short reductions), which ONNX Runtime runs as close to float64 as torch does.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from . import __version__
from .architecture import SPATIAL_MULTIPLE
from .errors import UserError

if TYPE_CHECKING:
    from .model import WNet3D

INPUT_NAME = "raw"
OUTPUT_NAME = "probabilities"
OPSET = 18
NORMALIZATION = "minmax_0_100"
_PREFIX = "wnet_zoo."


@dataclass
class ModelMetadata:
    """What an exported WNet3D says about itself (stored as ONNX ``metadata_props``, prefixed ``wnet_zoo.``).

    Attributes:
        num_classes: K, the number of output channels.
        foreground_class: the class holding nuclei, when known from training.
        train_patch: the (z, y, x) patch the model was trained on, when known.
        normalization: how inputs are scaled: ``minmax_0_100``.
        spatial_multiple: spatial sizes must be multiples of this.
        name: a model name.
        version: the wnet-zoo version that exported it.
        input_sigma: the (z, y, x) Gaussian sigma in voxels the graph smooths its input with, when it does
            (set by :func:`export_onnx` from the model; informative: the smoothing is in the graph).
        input_log: the offset (0..100 scale) of the logarithm the graph compresses its input with, when it does
            (set by :func:`export_onnx`; informative too).
    """

    num_classes: int
    foreground_class: int | None = None
    train_patch: tuple[int, int, int] | None = None
    normalization: str = NORMALIZATION
    spatial_multiple: int = SPATIAL_MULTIPLE
    name: str = "wnet3d"
    version: str = __version__
    input_sigma: tuple[float, float, float] | None = None
    input_log: float | None = None

    def to_props(self) -> dict[str, str]:
        """The metadata as ``metadata_props`` strings; unknown values are left out."""
        props = {
            "num_classes": str(self.num_classes),
            "normalization": self.normalization,
            "spatial_multiple": str(self.spatial_multiple),
            "name": self.name,
            "version": self.version,
        }
        if self.foreground_class is not None:
            props["foreground_class"] = str(self.foreground_class)
        if self.train_patch is not None:
            props["train_patch"] = ",".join(map(str, self.train_patch))
        if self.input_sigma is not None:
            props["input_sigma"] = ",".join(map(repr, self.input_sigma))
        if self.input_log is not None:
            props["input_log"] = repr(self.input_log)
        return {_PREFIX + key: value for key, value in props.items()}

    @classmethod
    def from_props(cls, props: dict[str, str]) -> ModelMetadata:
        """Parse ``metadata_props``; a graph without ours gets what can be read off its output."""
        ours = {key[len(_PREFIX) :]: value for key, value in props.items() if key.startswith(_PREFIX)}
        patch = ours.get("train_patch")
        sigma = ours.get("input_sigma")
        log = ours.get("input_log")
        return cls(
            num_classes=int(ours.get("num_classes", 0)),
            foreground_class=int(ours["foreground_class"]) if "foreground_class" in ours else None,
            train_patch=tuple(int(v) for v in patch.split(",")) if patch else None,  # type: ignore[arg-type]
            normalization=ours.get("normalization", NORMALIZATION),
            spatial_multiple=int(ours.get("spatial_multiple", SPATIAL_MULTIPLE)),
            name=ours.get("name", "wnet3d"),
            version=ours.get("version", "unknown"),
            input_sigma=tuple(float(v) for v in sigma.split(",")) if sigma else None,  # type: ignore[arg-type]
            input_log=float(log) if log else None,
        )


def export_onnx(model: WNet3D, path: str | Path, metadata: ModelMetadata, example_size: int = 32) -> Path:
    """Export ``model.encoder`` (with its softmax) to ONNX at ``path`` (written atomically).

    Uses the TorchScript-based exporter (``dynamo=False``): it needs no extra packages and gives a plain
    static graph with dynamic batch and spatial axes. ``model`` itself is not changed.
    """
    import torch  # here: reading metadata (what prediction does) needs no torch

    from .inference_encoder import inference_encoder

    path = Path(path)
    metadata = replace(
        metadata,
        input_sigma=tuple(model.input_sigma) if any(model.input_sigma) else None,
        input_log=model.input_log or None,
    )
    encoder = inference_encoder(model)
    parameter = next(encoder.parameters())
    example = torch.rand(1, model.in_channels, example_size, example_size, example_size, dtype=parameter.dtype) * 100
    axes = {0: "batch", 2: "z", 3: "y", 4: "x"}
    tmp = path.with_name(f".{path.name}.tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notices
        torch.onnx.export(
            encoder,
            (example.to(parameter.device),),
            str(tmp),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
            opset_version=OPSET,
            dynamo=False,
        )
    graph = onnx.load(str(tmp))
    _inline_initializer_copies(graph.graph)
    for key, value in metadata.to_props().items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    graph.producer_name = "wnet-zoo"
    graph.producer_version = __version__
    onnx.save(graph, str(tmp))
    os.replace(tmp, path)
    return path


def _inline_initializer_copies(graph: onnx.GraphProto) -> None:
    """Replace ``Identity`` nodes that copy an initializer by the initializer itself.

    The exporter writes such copies when two parameters hold equal values (fresh GroupNorm weights), and
    ONNX Runtime 1.32 rejects ``Identity(initializer)`` feeding ``Mul(Div(1, x), .)`` at every optimisation
    level (its EliminateIdentity and DivMulFusion passes together leave a dangling input).
    """
    initializers = {tensor.name for tensor in graph.initializer}
    outputs = {value.name for value in graph.output}
    renamed = {}
    for node in list(graph.node):
        if node.op_type == "Identity" and node.input[0] in initializers and node.output[0] not in outputs:
            renamed[node.output[0]] = node.input[0]
            graph.node.remove(node)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]


def read_metadata(path: str | Path) -> ModelMetadata:
    """Read an ONNX file's WNet3D metadata; raises ``UserError`` if it is not a usable ONNX model."""
    path = Path(path)
    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception:  # protobuf raises DecodeError and friends
        raise UserError(f"{path}: not an ONNX model; export one with 'wnet-zoo export'") from None
    inputs = graph.graph.input
    if len(inputs) != 1 or len(inputs[0].type.tensor_type.shape.dim) != 5:
        raise UserError(f"{path}: the model's input is not 5-D (B, C, Z, Y, X); export one with 'wnet-zoo export'")
    metadata = ModelMetadata.from_props({p.key: p.value for p in graph.metadata_props})
    if metadata.num_classes == 0:
        dims = graph.graph.output[0].type.tensor_type.shape.dim
        metadata.num_classes = dims[1].dim_value if len(dims) == 5 else 0
    return metadata

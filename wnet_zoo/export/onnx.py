"""Writing WNet3D's inference encoder as an ONNX graph that carries its metadata."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from wnet_zoo.io.atomic import atomic_path
from wnet_zoo.prediction.metadata import INPUT_NAME, NORMALIZATION, OUTPUT_NAME, ModelMetadata
from wnet_zoo.version import __version__

if TYPE_CHECKING:
    import torch

    from wnet_zoo.model.wnet import WNet3D

OPSET = 17  # the newest that JDLL (deepImageJ, Icy) runs by default: its ONNX Runtime 1.13.1 build reads up to 17


def export_onnx(model: WNet3D, path: str | Path, metadata: ModelMetadata, example_size: int = 32) -> Path:
    """Export ``model.encoder`` (with its softmax) to ONNX at ``path`` (written atomically).

    Uses the TorchScript-based exporter (``dynamo=False``): it needs no extra packages and gives a plain
    static graph with dynamic batch and spatial axes. ``model`` itself is not changed.
    """
    import torch  # here: reading metadata (what prediction does) needs no torch

    from wnet_zoo.export.encoder import EXPORTED_INPUT_SCALE, inference_encoder

    path = Path(path)
    metadata = replace(
        metadata,
        normalization=NORMALIZATION,  # what the graph takes, whatever the caller's metadata said
        input_sigma=tuple(model.input_sigma) if any(model.input_sigma) else None,
        input_log=model.input_log or None,
        input_background=tuple(model.input_background) if any(model.input_background) else None,
    )
    encoder = inference_encoder(model, input_scale=EXPORTED_INPUT_SCALE)
    parameter = next(encoder.parameters())
    example = torch.rand(1, model.in_channels, example_size, example_size, example_size, dtype=parameter.dtype)
    with atomic_path(path) as part:
        _write_graph(encoder, example.to(parameter.device), part, metadata)
    return path


def _write_graph(encoder: torch.nn.Module, example: torch.Tensor, path: Path, metadata: ModelMetadata) -> None:
    import torch

    axes = {0: "batch", 2: "z", 3: "y", 4: "x"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notices
        torch.onnx.export(
            encoder,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
            opset_version=OPSET,
            dynamo=False,
        )
    graph = onnx.load(str(path))
    _inline_initializer_copies(graph.graph)
    for key, value in metadata.to_props().items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    graph.producer_name = "wnet-zoo"
    graph.producer_version = __version__
    onnx.save(graph, str(path))


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

"""The exported TorchScript encoder: the same graph as the ONNX file, for PyTorch-based consumers."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from wnet_zoo.export.encoder import EXPORTED_INPUT_SCALE, inference_encoder
from wnet_zoo.io.atomic import atomic_path
from wnet_zoo.model.wnet import WNet3D


def export_torchscript(model: WNet3D, path: str | Path, example_size: int = 32) -> Path:
    """Trace the export form of ``model.encoder`` (with its softmax) to ``path`` (written atomically).

    The traced module takes (B, 1, Z, Y, X) float32 min-max scaled to 0..1, any batch and spatial sizes that
    are multiples of 8, and returns (B, K, Z, Y, X) probabilities.
    """
    path = Path(path)
    encoder = inference_encoder(model, input_scale=EXPORTED_INPUT_SCALE)
    parameter = next(encoder.parameters())
    example = torch.rand(1, model.in_channels, example_size, example_size, example_size, dtype=parameter.dtype)
    with warnings.catch_warnings(), torch.no_grad(), atomic_path(path) as part:
        warnings.simplefilter("ignore")  # tracer notices, and TorchScript's deprecation in favour of torch.export
        traced = torch.jit.trace(encoder, example.to(parameter.device), check_trace=False)
        torch.jit.save(traced, str(part))
    return path

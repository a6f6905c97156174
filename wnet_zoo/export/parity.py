"""The check every export passes: the written graphs compute what the PyTorch model computes."""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wnet_zoo.errors import UserError
from wnet_zoo.export.encoder import EXPORTED_INPUT_SCALE
from wnet_zoo.model.wnet import WNet3D

PARITY_SHAPE = (1, 1, 40, 48, 56)
TOLERANCE = 1e-3


@dataclass
class Parity:
    """Largest absolute differences of the probabilities on one random input.

    Attributes:
        shape: the input's shape, (B, 1, Z, Y, X), values uniform on 0..100 (0..1 for the exported files).
        ort_vs_torch: ONNX Runtime (the ONNX file) against the PyTorch model in float32.
        ort_vs_float64: ONNX Runtime against the PyTorch model in float64.
        torch_vs_float64: the PyTorch model in float32 against float64.
        torchscript_vs_torch: the TorchScript file against the PyTorch model, when one was written.
    """

    shape: tuple[int, ...]
    ort_vs_torch: float
    ort_vs_float64: float
    torch_vs_float64: float
    torchscript_vs_torch: float | None = None

    def summary(self) -> str:
        """One line for the log."""
        text = (
            f"parity on {'x'.join(map(str, self.shape))}: ONNX Runtime vs torch {self.ort_vs_torch:.2g}, "
            f"vs float64 {self.ort_vs_float64:.2g} (torch vs float64 {self.torch_vs_float64:.2g})"
        )
        if self.torchscript_vs_torch is not None:
            text += f", TorchScript vs torch {self.torchscript_vs_torch:.2g}"
        return text

    def to_dict(self) -> dict[str, object]:
        """Plain data."""
        return {
            "shape": list(self.shape),
            "ort_vs_torch": self.ort_vs_torch,
            "ort_vs_float64": self.ort_vs_float64,
            "torch_vs_float64": self.torch_vs_float64,
            "torchscript_vs_torch": self.torchscript_vs_torch,
        }


def check_parity(
    model: WNet3D,
    onnx_path: Path,
    torchscript_path: Path | None = None,
    shape: tuple[int, ...] = PARITY_SHAPE,
    tolerance: float = TOLERANCE,
) -> Parity:
    """Run the exported files and the model on one random input; raise ``UserError`` above ``tolerance``."""
    import onnxruntime as ort

    generator = torch.Generator().manual_seed(0)
    scaled = torch.rand(shape, generator=generator)  # what the exported files take: 0..1
    x = scaled * EXPORTED_INPUT_SCALE  # what the model takes: 0..100
    encoder = model.encoder.eval()
    with torch.no_grad():
        expected = encoder(x).numpy()
        reference = copy.deepcopy(encoder).double()(x.double()).numpy()
        scripted = None
        if torchscript_path is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TorchScript's deprecation in favour of torch.export
                scripted = torch.jit.load(str(torchscript_path), map_location="cpu")(scaled).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {session.get_inputs()[0].name: scaled.numpy()})
    parity = Parity(
        shape=tuple(shape),
        ort_vs_torch=_max_abs(actual, expected),
        ort_vs_float64=_max_abs(actual, reference),
        torch_vs_float64=_max_abs(expected, reference),
        torchscript_vs_torch=None if scripted is None else _max_abs(scripted, expected),
    )
    worst = max(parity.ort_vs_torch, parity.torchscript_vs_torch or 0.0)
    if not worst <= tolerance:
        raise UserError(f"the exported model differs from PyTorch by {worst:.3g} > {tolerance:g}; nothing was written")
    return parity


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())

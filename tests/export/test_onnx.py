"""The export form of the encoder and the ONNX graph made from it, run by onnxruntime against float64."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from wnet_zoo.export.encoder import StableGroupNorm, inference_encoder
from wnet_zoo.export.onnx import export_onnx
from wnet_zoo.model.wnet import WNet3D
from wnet_zoo.prediction.metadata import ModelMetadata, read_metadata

from closeness import assert_close

TINY_CHANNELS = (4, 8, 16, 32)


def _trained_like(seed: int = 0) -> WNet3D:
    """A tiny WNet3D whose norm affine parameters differ from their initial ones."""
    torch.manual_seed(seed)
    model = WNet3D(channels=TINY_CHANNELS).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.GroupNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model


def test_stable_group_norm_equals_group_norm():
    norm = nn.GroupNorm(4, 16).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x = torch.relu(torch.randn(2, 16, 8, 16, 24, dtype=torch.float64) * 3 + 2)
    assert torch.allclose(StableGroupNorm(norm)(x), norm(x), atol=1e-12)


def test_inference_encoder_equals_encoder_in_float64():
    model = _trained_like().double()
    x = torch.rand(2, 1, 16, 24, 32, dtype=torch.float64) * 100
    with torch.no_grad():
        assert torch.allclose(inference_encoder(model)(x), model.encoder(x), atol=1e-12)
    assert model.training is False and isinstance(model.encoder.in_b.module[3], nn.GroupNorm)  # model unchanged


def test_exported_graph_matches_float64_with_dynamic_axes(tmp_path: Path):
    model = _trained_like()
    path = export_onnx(model, tmp_path / "m.onnx", ModelMetadata(num_classes=2, foreground_class=1))
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert not ops & {"InstanceNormalization", "Einsum", "Identity", "GroupNormalization"}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(2, 1, 24, 32, 40) * 100
    with torch.no_grad():
        reference = copy.deepcopy(model).double().encoder(x.double()).numpy()
    (actual,) = session.run(None, {"raw": x.numpy() / 100})  # the graph takes 0..1, the model 0..100
    assert actual.shape == (2, 2, 24, 32, 40)
    assert_close(actual, reference, rel=1e-5, what="probabilities")
    assert read_metadata(path).foreground_class == 1


def test_fresh_model_exports_to_a_graph_onnxruntime_loads(tmp_path: Path):
    """Fresh GroupNorm weights are all equal, so the exporter writes Identity copies of initializers, which
    ONNX Runtime 1.32 rejects next to Mul(Div(1, x), .): export_onnx inlines them."""
    path = export_onnx(WNet3D(channels=TINY_CHANNELS), tmp_path / "fresh.onnx", ModelMetadata(num_classes=2))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(None, {"raw": np.random.default_rng(0).random((1, 1, 16, 16, 16), np.float32)})
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    claimed = ModelMetadata(num_classes=2, input_sigma=(1.0, 1.0, 1.0))  # the model's own smoothing is recorded
    assert read_metadata(export_onnx(WNet3D(channels=TINY_CHANNELS), tmp_path / "b.onnx", claimed)).input_sigma is None


def test_stable_group_norm_in_onnxruntime_on_large_groups(tmp_path: Path):
    """Post-ReLU values with a large mean, 4 x 64^3 values a group: ONNX Runtime stays at float32 rounding."""
    norm = StableGroupNorm(nn.GroupNorm(4, 16)).eval()
    x = torch.relu(torch.randn(1, 16, 64, 64, 64) * 30 + 20)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(norm, (x,), str(tmp_path / "norm.onnx"), input_names=["x"], dynamo=False)
    session = ort.InferenceSession(str(tmp_path / "norm.onnx"), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        reference = nn.functional.group_norm(x.double(), 4).numpy()
    assert_close(actual, reference, rel=1e-5, what="normalised values")


def test_a_flattening_model_exports_its_background_subtraction_and_records_it(tmp_path: Path):
    torch.manual_seed(0)
    model = WNet3D(channels=TINY_CHANNELS, input_background=(2, 3, 3)).eval()
    path = export_onnx(model, tmp_path / "flat.onnx", ModelMetadata(num_classes=2))
    assert read_metadata(path).input_background == (2, 3, 3)
    z, y, x = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in (16, 24, 32)), indexing="ij")
    image = (50 + 40 * torch.sin(x / 5) + torch.rand(16, 24, 32) * 10)[None, None]  # a background to subtract
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"raw": image.numpy() / 100})
    with torch.no_grad():
        expected = model.encoder(image).numpy()
    assert np.abs(actual - expected).max() < 1e-4


def test_a_compressing_model_exports_its_logarithm_and_records_it(tmp_path: Path):
    torch.manual_seed(0)
    model = WNet3D(channels=TINY_CHANNELS, input_log=1.5).eval()
    path = export_onnx(model, tmp_path / "log.onnx", ModelMetadata(num_classes=2))
    assert read_metadata(path).input_log == 1.5
    x = torch.rand(1, 1, 16, 24, 16) * 100
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"raw": x.numpy() / 100})
    with torch.no_grad():
        expected = model.encoder(x).numpy()
    assert np.abs(actual - expected).max() < 1e-4
    assert (
        read_metadata(export_onnx(WNet3D(channels=TINY_CHANNELS), tmp_path / "plain.onnx", ModelMetadata(2))).input_log
        is None
    )

"""The encoder in the form that is exported: same function as ``WNet3D.encoder``, built for graph runtimes.

Two changes, neither of which alters the mathematics:

* every ``[conv3 conv1]`` pair that ``model._conv_pair`` composes at each forward is composed once, in
  float64, into one ``Conv3d`` (the graph holds a plain convolution instead of an Einsum on weights);
* every ``GroupNorm`` becomes :class:`StableGroupNorm`, which reduces one axis at a time. The plain
  export of ``GroupNorm`` is ``InstanceNormalization`` over (C/G)·Z·Y·X values, and ONNX Runtime's CPU kernel
  sums those serially in float32 (Eigen ``mean``/``squaredNorm``): on the default architecture at 64³ one
  layer is then off by ~1e-2 and the probabilities by ~3e-3 (see ``benchmarks/onnx_parity.py``). Short
  reductions keep every partial sum small, so the exported graph matches float64 as torch does.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from wnet_zoo.model.wnet import UNet3D, WNet3D, _Block


class StableGroupNorm(nn.Module):
    """``nn.GroupNorm`` for (N, C, Z, Y, X) tensors, as short reductions that any runtime sums accurately.

    Means are taken over X, then Y, then Z (each at most a few hundred values), then averaged within each
    group by a (C, C) matrix product. The variance is the same chain over squared deviations (two-pass).
    """

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.num_channels = norm.num_channels
        self.eps = norm.eps
        self.weight = nn.Parameter(norm.weight.detach().clone().view(1, -1, 1, 1, 1))
        self.bias = nn.Parameter(norm.bias.detach().clone().view(1, -1, 1, 1, 1))
        size = norm.num_channels // norm.num_groups
        group = torch.arange(norm.num_channels, device=norm.weight.device) // size
        average = (group[:, None] == group[None, :]).to(norm.weight.dtype) / size
        self.register_buffer("group_average", average)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - self._group_mean(x)
        variance = self._group_mean(centred * centred)
        return centred * (torch.rsqrt(variance + self.eps) * self.weight) + self.bias

    def _group_mean(self, x: torch.Tensor) -> torch.Tensor:
        per_channel = x.mean(dim=4, keepdim=True).mean(dim=3, keepdim=True).mean(dim=2, keepdim=True)
        grouped = per_channel.flatten(1) @ self.group_average
        return grouped.view(-1, self.num_channels, 1, 1, 1)


def _composed(spatial: nn.Conv3d, pointwise: nn.Conv3d) -> nn.Conv3d:
    """One ``Conv3d`` equal to ``pointwise(spatial(x))``, its weights composed in float64."""
    point = pointwise.weight.detach().double().flatten(1)
    weight = torch.einsum("om,mizyx->oizyx", point, spatial.weight.detach().double())
    bias = pointwise.bias.detach().double() + point @ spatial.bias.detach().double()
    like = {"dtype": spatial.weight.dtype, "device": spatial.weight.device}
    conv = nn.Conv3d(spatial.in_channels, pointwise.out_channels, spatial.kernel_size, padding=spatial.padding, **like)
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
    return conv


def _inference_block(block: _Block, compose: bool) -> nn.Sequential:
    """A block's layers for inference: conv pairs composed where the model composes them (if ``compose``),
    no dropout, stable group norms."""
    layers = list(block.module)
    out: list[nn.Module] = []
    i = 0
    while i < len(layers):
        layer = layers[i]
        following = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, nn.Conv3d) and isinstance(following, nn.Conv3d):
            if not compose or following.out_channels > following.in_channels:
                out += [copy.deepcopy(layer), copy.deepcopy(following)]
            else:
                out.append(_composed(layer, following))
            i += 2
            continue
        if isinstance(layer, nn.GroupNorm):
            out.append(StableGroupNorm(layer))
        elif not isinstance(layer, nn.Dropout):
            out.append(copy.deepcopy(layer))
        i += 1
    return nn.Sequential(*out)


EXPORTED_INPUT_SCALE = 100.0
"""What the exported graphs multiply their input by: they take each volume min-max scaled to 0..1, the one
preprocessing step every bioimage.io consumer runs (BiaPy's older releases accept no second one), and the network
was trained on 0..100."""


class InferenceEncoder(nn.Module):
    """WNet3D's encoder U-Net with its softmax, in export form: (B, 1, Z, Y, X) → (B, K, Z, Y, X); the input is
    multiplied by ``input_scale`` first."""

    def __init__(self, encoder: UNet3D, compose: bool = True, input_scale: float = 1.0) -> None:
        super().__init__()
        self.input_scale = float(input_scale)
        self.compress = copy.deepcopy(encoder.compress)
        self.flatten = copy.deepcopy(encoder.flatten)
        self.smooth = copy.deepcopy(encoder.smooth)
        self.max_pool = nn.MaxPool3d(2)
        for name in ("in_b", "conv1", "conv2", "bot", "deconv2", "deconv3", "out_b"):
            setattr(self, name, _inference_block(getattr(encoder, name), compose))
        for name in ("conv_trans2", "conv_trans3", "conv_trans_out"):
            setattr(self, name, copy.deepcopy(getattr(encoder, name)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the same wiring as the training encoder, over this object's export-form blocks
        prepared = UNet3D.prepare(self, x)  # type: ignore[arg-type]
        return torch.softmax(UNet3D.logits(self, prepared), dim=1)  # type: ignore[arg-type]


def inference_encoder(model: WNet3D, compose: bool = True, input_scale: float = 1.0) -> InferenceEncoder:
    """The export form of ``model.encoder`` (a new module in eval mode; ``model`` is not changed).

    ``compose=False`` keeps every conv pair as two convolutions (same function, more arithmetic: only for
    comparisons such as ``benchmarks/onnx_parity.py``). ``input_scale``: see :data:`EXPORTED_INPUT_SCALE`, which
    the exported files use; 1 gives the same function as ``model.encoder``.
    """
    return InferenceEncoder(model.encoder, compose, input_scale).eval()

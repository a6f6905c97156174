"""WNet3D: two 3-D U-Nets in a row, state-dict compatible with CellSeg3D's ``WNet``.

The encoder U-Net maps the image to K class probabilities (softmax over channels); the decoder U-Net
reconstructs the image from them. Parameter names and shapes follow napari-cellseg3d 0.2.4
(``code_models/models/wnet/model.py``) exactly, so its checkpoints load with ``strict=True``.

Layout of one U-Net, with ``c = channels`` (CellSeg3D: 64, 128, 256, 512)::

    in_b   conv3(in→c0) relu drop GN, conv3(c0→c0) relu drop GN              full resolution
    conv1  [conv3(c0→c0) conv1(c0→c1)] relu drop GN, [conv3 conv1](c1→c1) …   1/2   (after max-pool)
    conv2  same pattern, c1 → c2                                               1/4
    bot    same pattern, c2 → c3                                               1/8
    deconv2 (cat c2 + up(c3→c2)) → c2, deconv3 (cat c1 + up(c2→c1)) → c1
    out_b  (cat c0 + up(c1→c0)) conv3(→c0) relu drop GN conv3(c0→c0) relu drop GN conv1(c0→out)

CellSeg3D hard-codes 64 as the width of its output block; here it follows ``channels[0]``, which is
the same for the default architecture and keeps small models small.

The encoder may compress its input's intensities (:class:`InputCompression`, a fixed logarithm), subtract its
background (:class:`InputFlattening`, a morphological top-hat) and smooth it (:class:`InputSmoothing`, a fixed
Gaussian), in that order; all are off for CellSeg3D's weights and by default. Trained on a transformed image, a
model must see the same transform wherever it runs, so each is part of the model, its graph and its weights (the
``compress.input_log``, ``flatten.input_background`` and ``smooth.input_sigma`` buffers, present only when on).

Each ``[conv3 conv1]`` pair is linear with nothing in between, so when the 1x1 convolution does not
widen the features the pair is evaluated as one 3x3x3 convolution with the composed weights (same
parameters, same result up to float rounding, fewer operations: the decoder path halves its largest
convolutions this way).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

NUM_GROUPS = 4
DEFAULT_CHANNELS = (64, 128, 256, 512)  # this file goes into bioimage.io packages alone: no imports of wnet_zoo;
SPATIAL_MULTIPLE = 8  # the torch-free modules read them from wnet_zoo.model.architecture (tested equal)


class _Dropout(nn.Dropout):
    """``nn.Dropout`` with the same distribution, its mask drawn with ``rand`` (twice as fast as
    ``bernoulli_`` on CPUs, where mask drawing is a tenth of a training step at CellSeg3D's p=0.65)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = 1.0 - self.p
        return x * ((torch.rand_like(x) < keep).to(x.dtype) * (1.0 / keep))


def _conv_pair(spatial: nn.Conv3d, pointwise: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """``pointwise(spatial(x))``, as one composed convolution when the pointwise one does not widen."""
    if pointwise.out_channels > pointwise.in_channels:
        return pointwise(spatial(x))
    point = pointwise.weight.flatten(1)  # (out, mid)
    weight = torch.einsum("om,mizyx->oizyx", point, spatial.weight)
    bias = pointwise.bias + point @ spatial.bias
    return F.conv3d(x, weight, bias, padding=spatial.padding)


class _Block(nn.Module):
    """CellSeg3D's ``InBlock``/``Block``/``OutBlock``: conv stages each followed by ReLU, dropout, GroupNorm.

    ``separable`` stages are a 3x3x3 convolution plus a 1x1x1 one (``Block``); the others a single
    3x3x3 convolution. ``head`` appends a final 1x1x1 convolution (``OutBlock``). Parameters live in
    ``self.module`` so that their names (``module.0.weight`` ...) are CellSeg3D's.
    """

    def __init__(
        self, in_channels: int, out_channels: int, dropout: float, separable: bool, head: int | None = None
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for cin in (in_channels, out_channels):
            if separable:
                layers += [nn.Conv3d(cin, cin, 3, padding=1), nn.Conv3d(cin, out_channels, 1)]
            else:
                layers.append(nn.Conv3d(cin, out_channels, 3, padding=1))
            layers += [nn.ReLU(), _Dropout(p=dropout), nn.GroupNorm(NUM_GROUPS, out_channels)]
        if head is not None:
            layers.append(nn.Conv3d(out_channels, head, 1))
        self.module = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = list(self.module)
        i = 0
        while i < len(layers):
            layer = layers[i]
            following = layers[i + 1] if i + 1 < len(layers) else None
            if isinstance(layer, nn.Conv3d) and isinstance(following, nn.Conv3d):
                x = _conv_pair(layer, following, x)
                i += 2
            else:
                x = layer(x)
                i += 1
        return x


class InputSmoothing(nn.Module):
    """A fixed Gaussian filter over (Z, Y, X) of each of ``channels`` channels, edges replicated; the identity
    at sigma 0.

    ``sigma`` (z, y, x) in voxels. Kernels reach ``int(4 * sigma + 0.5)`` voxels each way (scipy's
    ``gaussian_filter``) and are normalised to sum 1. A non-zero ``sigma`` is kept in the state dict
    (``input_sigma``), so weights tell the smoothing they were trained with; loading weights of another sigma
    is an error rather than a silent mismatch. A part of another transform (``recorded=False``) keeps no buffer.
    """

    def __init__(self, sigma: Sequence[float] = (0.0, 0.0, 0.0), channels: int = 1, recorded: bool = True) -> None:
        super().__init__()
        self.channels = channels
        self.sigma = _check_sigma(sigma)
        self.recorded = recorded
        self.radii = tuple(int(4 * s + 0.5) for s in self.sigma)
        if any(self.sigma) and recorded:
            self.register_buffer("input_sigma", torch.tensor(self.sigma, dtype=torch.float64))
        for axis, (s, r) in enumerate(zip(self.sigma, self.radii, strict=True)):
            offsets = torch.arange(-r, r + 1, dtype=torch.float64)
            kernel = torch.exp(-0.5 * (offsets / s) ** 2) if r else torch.ones(1, dtype=torch.float64)
            shape = [1, 1, 1, 1, 1]
            shape[2 + axis] = 2 * r + 1
            kernel = (kernel / kernel.sum()).float().reshape(shape).repeat(channels, 1, 1, 1, 1)
            self.register_buffer(f"kernel{axis}", kernel, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for axis, r in enumerate(self.radii):
            if r:
                pad = [0, 0, 0, 0, 0, 0]
                pad[4 - 2 * axis] = pad[5 - 2 * axis] = r  # F.pad lists the last axis first
                kernel = getattr(self, f"kernel{axis}").to(x.dtype)
                x = F.conv3d(F.pad(x, pad, mode="replicate"), kernel, groups=self.channels)
        return x

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        given = state_dict.get(prefix + "input_sigma")
        found = tuple(float(v) for v in given.tolist()) if given is not None else (0.0, 0.0, 0.0)
        if self.recorded and found != self.sigma:
            raise ValueError(f"weights trained with input smoothing sigma {found}, model built with {self.sigma}")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class InputFlattening(nn.Module):
    """Subtracts a smooth estimate of the background from each channel: ``x - G(open(g(x)))``; the identity at
    radius 0.

    ``open`` is a grey-level opening (erosion then dilation) by a box of ``2 * radius + 1`` voxels per axis, which
    keeps what is wider than the box (autofluorescence, cytoplasm, out-of-focus haze) and removes the nuclei, which
    are narrower; ``g`` is a Gaussian of sigma ``radius / max(radius)`` (one voxel along the finest axis), so that
    the erosion reads the background's level rather than the noise's minima; ``G`` a Gaussian of sigma
    ``radius / 2``, which smooths the opening's box-shaped steps. At tile borders the box holds only the voxels
    inside (max-pooling ignores its padding) and the Gaussians repeat the edge, so overlapping tiles agree beyond
    the transform's reach (``2 * radius`` plus the Gaussians' kernel radii) from their borders. It runs in float32
    under autocast too. A non-zero ``radius`` is kept
    in the state dict (``input_background``): loading weights of another radius is an error.
    """

    def __init__(self, radius: Sequence[int] = (0, 0, 0), channels: int = 1) -> None:
        super().__init__()
        self.radius = _check_radius(radius)
        finest = max(self.radius) or 1
        self.presmooth = InputSmoothing([r / finest for r in self.radius], channels, recorded=False)
        self.blur = InputSmoothing([r / 2 for r in self.radius], channels, recorded=False)
        if any(self.radius):
            self.register_buffer("input_background", torch.tensor(self.radius, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not any(self.radius):
            return x
        if torch.is_autocast_enabled(x.device.type):
            # a small difference of two large values: in bf16 the background would be off by up to a unit on
            # the 0..100 scale, which the exports (float32) would not reproduce
            with torch.autocast(x.device.type, enabled=False):
                return self.forward(x.float())
        return x - self.blur(self._dilate(-self._dilate(-self.presmooth(x))))

    def _dilate(self, x: torch.Tensor) -> torch.Tensor:
        """A box maximum, one axis at a time (the box is separable: 3 x (2r+1) comparisons, not (2r+1)^3)."""
        for axis, r in enumerate(self.radius):
            size = [1, 1, 1]
            size[axis] = 2 * r + 1
            padding = [0, 0, 0]
            padding[axis] = r
            x = F.max_pool3d(x, size, stride=1, padding=padding)
        return x

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        given = state_dict.get(prefix + "input_background")
        found = tuple(int(v) for v in given.tolist()) if given is not None else (0, 0, 0)
        if found != self.radius:
            raise ValueError(f"weights trained with input background radius {found}, model built with {self.radius}")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class InputCompression(nn.Module):
    """A fixed logarithmic compression of intensities on the 0..100 scale, which keeps 0 at 0 and 100 at 100:
    ``100 * log1p(x / offset) / log1p(100 / offset)``; the identity at offset 0.

    Intensities well above ``offset`` are compressed and those below it are stretched, so that nuclei 10x
    dimmer than their neighbours, or next to over-exposed ones, still stand clear of the background. Values
    below 0 count as 0. A non-zero ``offset`` is kept in the state dict (``input_log``), like the smoothing's
    sigma: loading weights of another offset is an error.
    """

    def __init__(self, offset: float = 0.0) -> None:
        super().__init__()
        self.offset = _check_offset(offset)
        self.scale = 100.0 / math.log1p(100.0 / self.offset) if self.offset else 1.0
        if self.offset:
            self.register_buffer("input_log", torch.tensor(self.offset, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.offset:
            return x
        return torch.log1p(x.clamp(min=0.0) * (1.0 / self.offset)) * self.scale

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        given = state_dict.get(prefix + "input_log")
        found = float(given) if given is not None else 0.0
        if found != self.offset:
            raise ValueError(f"weights trained with input log offset {found:g}, model built with {self.offset:g}")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class UNet3D(nn.Module):
    """One half of WNet3D: a 3-level 3-D U-Net, optionally ending in a softmax over channels, optionally
    compressing, flattening and smoothing its input first (``input_log``, ``input_background``, ``input_sigma``:
    see :class:`InputCompression`, :class:`InputFlattening` and :class:`InputSmoothing`).

    ``input_scale`` multiplies the input before anything else: 1 in training (inputs on the 0..100 scale), 100 in
    an exported package, whose preprocessing scales each sample to 0..1 in one step (bioimage.io's
    ``scale_range``); a plain attribute, not in the state dict."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        softmax: bool = True,
        dropout: float = 0.65,
        input_sigma: Sequence[float] = (0.0, 0.0, 0.0),
        input_log: float = 0.0,
        input_background: Sequence[int] = (0, 0, 0),
        input_scale: float = 1.0,
    ) -> None:
        super().__init__()
        c0, c1, c2, c3 = _check_channels(channels)
        self.softmax = softmax
        self.input_scale = float(input_scale)
        self.compress = InputCompression(input_log)
        self.flatten = InputFlattening(input_background, in_channels)
        self.smooth = InputSmoothing(input_sigma, in_channels)
        self.max_pool = nn.MaxPool3d(2)
        self.in_b = _Block(in_channels, c0, dropout, separable=False)
        self.conv1 = _Block(c0, c1, dropout, separable=True)
        self.conv2 = _Block(c1, c2, dropout, separable=True)
        self.bot = _Block(c2, c3, dropout, separable=True)
        self.deconv2 = _Block(2 * c2, c2, dropout, separable=True)
        self.deconv3 = _Block(2 * c1, c1, dropout, separable=True)
        self.out_b = _Block(2 * c0, c0, dropout, separable=False, head=out_channels)
        self.conv_trans2 = nn.ConvTranspose3d(c3, c2, 2, stride=2)
        self.conv_trans3 = nn.ConvTranspose3d(c2, c1, 2, stride=2)
        self.conv_trans_out = nn.ConvTranspose3d(c1, c0, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing():
            check_input_shape(x.shape, self.in_b.module[0].in_channels)
        x = self.logits(self.prepare(x))
        return torch.softmax(x, dim=1) if self.softmax else x

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The input as the U-Net sees it: scaled, compressed, flattened, then smoothed (each the identity when
        off)."""
        if self.input_scale != 1.0:
            x = x * self.input_scale
        return self.smooth(self.flatten(self.compress(x)))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The U-Net's output before any softmax (the wiring of the levels, without input checks)."""
        top = self.in_b(x)
        mid = self.conv1(self.max_pool(top))
        low = self.conv2(self.max_pool(mid))
        x = self.bot(self.max_pool(low))
        x = self.deconv2(torch.cat([low, self.conv_trans2(x)], dim=1))
        x = self.deconv3(torch.cat([mid, self.conv_trans3(x)], dim=1))
        return self.out_b(torch.cat([top, self.conv_trans_out(x)], dim=1))


class WNet3D(nn.Module):
    """WNet3D (Xia & Kulis 2017, in 3-D as in CellSeg3D): encoder U-Net + decoder U-Net.

    Args:
        in_channels: image channels (1 for the light-sheet volumes this is made for).
        out_channels: channels of the reconstruction.
        num_classes: K, the number of classes the encoder segments into.
        channels: widths of the four U-Net levels; CellSeg3D's are ``(64, 128, 256, 512)``.
        dropout: dropout probability after every convolution stage (CellSeg3D: 0.65).
        input_sigma: (z, y, x) Gaussian sigma in voxels the encoder smooths its input with (0: none, as in
            CellSeg3D). Training compares the decoder's reconstruction with the smoothed image too.
        input_log: offset on the 0..100 scale of the logarithm the encoder compresses its input's intensities with,
            before any smoothing (0: none, as in CellSeg3D; see :class:`InputCompression`).
        input_background: (z, y, x) radius in voxels of the box whose opening the encoder takes as its input's
            background and subtracts, after any compression (0: none, as in CellSeg3D; see
            :class:`InputFlattening`).

    ``forward(x)`` returns ``(probabilities, reconstruction)``; ``model.encoder(x)`` alone returns the
    K class probabilities. Spatial sizes must be multiples of 8.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        num_classes: int = 2,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        dropout: float = 0.65,
        input_sigma: Sequence[float] = (0.0, 0.0, 0.0),
        input_log: float = 0.0,
        input_background: Sequence[int] = (0, 0, 0),
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_classes = num_classes
        self.channels = tuple(_check_channels(channels))
        self.dropout = dropout
        self.encoder = UNet3D(
            in_channels,
            num_classes,
            self.channels,
            softmax=True,
            dropout=dropout,
            input_sigma=input_sigma,
            input_log=input_log,
            input_background=input_background,
        )
        self.decoder = UNet3D(num_classes, out_channels, self.channels, softmax=False, dropout=dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities = self.encoder(x)
        return probabilities, self.decoder(probabilities)

    def architecture(self) -> dict:
        """The constructor arguments, as plain data."""
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "num_classes": self.num_classes,
            "channels": list(self.channels),
            "dropout": self.dropout,
            "input_sigma": list(self.encoder.smooth.sigma),
            "input_log": self.encoder.compress.offset,
            "input_background": list(self.encoder.flatten.radius),
        }

    @property
    def input_sigma(self) -> tuple[float, float, float]:
        """The (z, y, x) sigma in voxels of the encoder's input smoothing (zeros: none)."""
        return self.encoder.smooth.sigma

    @property
    def input_log(self) -> float:
        """The offset (0..100 scale) of the encoder's logarithmic input compression (0: none)."""
        return self.encoder.compress.offset

    @property
    def input_background(self) -> tuple[int, int, int]:
        """The (z, y, x) radius in voxels of the encoder's background subtraction (zeros: none)."""
        return self.encoder.flatten.radius


def check_input_shape(shape: Sequence[int], in_channels: int) -> None:
    """Raise ``ValueError`` unless ``shape`` is (B, in_channels, Z, Y, X) with Z, Y, X multiples of 8."""
    if len(shape) != 5 or shape[1] != in_channels:
        raise ValueError(f"WNet3D expects input of shape (B, {in_channels}, Z, Y, X), got {tuple(shape)}")
    bad = [s for s in shape[2:] if s % SPATIAL_MULTIPLE or s == 0]
    if bad:
        raise ValueError(
            f"WNet3D needs spatial sizes that are multiples of {SPATIAL_MULTIPLE}, got {tuple(shape[2:])}: "
            "pad or crop the volume"
        )


def _check_sigma(sigma: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(s) for s in sigma)
    if len(values) != 3 or not all(0 <= s < 64 for s in values):
        raise ValueError(f"input_sigma must be 3 values (z, y, x) in [0, 64) voxels, got {tuple(sigma)}")
    return values  # type: ignore[return-value]


def _check_radius(radius: Sequence[int]) -> tuple[int, int, int]:
    values = tuple(int(r) for r in radius)
    if len(values) != 3 or values != tuple(radius) or not all(0 <= r <= 16 for r in values):
        raise ValueError(f"input_background must be 3 whole numbers (z, y, x) in [0, 16] voxels, got {tuple(radius)}")
    if any(values) and not all(values):
        raise ValueError(f"input_background must be 0 on every axis or on none, got {values}")
    return values  # type: ignore[return-value]


def _check_offset(offset: float) -> float:
    value = float(offset)
    if not 0 <= value <= 100:
        raise ValueError(f"input_log must be an offset in [0, 100] on the 0..100 scale, got {offset}")
    return value


def _check_channels(channels: Sequence[int]) -> tuple[int, int, int, int]:
    values = tuple(int(c) for c in channels)
    if len(values) != 4 or any(c <= 0 or c % NUM_GROUPS for c in values):
        raise ValueError(
            f"channels must be 4 positive multiples of {NUM_GROUPS} (GroupNorm groups), got {tuple(channels)}"
        )
    return values  # type: ignore[return-value]

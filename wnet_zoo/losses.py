r"""WNet3D's training losses: CellSeg3D's SoftNCut loss (same values and gradients, much faster) and the
decoder's reconstruction loss.

SoftNCut, as CellSeg3D 0.2.4 computes it (``soft_Ncuts.py``), for class probabilities ``p`` (B, K, Z, Y, X)
and an image ``I`` (B, C, Z, Y, X) on the 0..100 scale. For each sample ``b`` and class ``k``, with
``p = p[b, k]`` and means taken over the ``N = Z*Y*X`` voxels:

* class mean, per channel: ``mu_c = mean(I_c * p) / (mean(p) + 1e-5)``;
* squared distance to it: ``d(v) = sum_c (I_c(v) - mu_c)^2``;
* voxel weight: ``w(v) = exp(-d(v)^2 / sigma_I^2)``. The distance is squared twice (a quirk kept on
  purpose), and the weight belongs to one voxel, not to a pair of voxels as in the original N-cut;
* spatial kernel: ``G(u, v) = exp(-|u - v|^2 / (2 sigma_X^2))`` on the (2r+1)^3 cube around ``u``,
  zero outside the volume (the zero padding of ``conv3d(..., padding=r)``);
* ``num = sum_u p(u) sum_v G(u, v) p(v) w(v)`` and ``den = sum_u p(u) sum_v G(u, v) w(v)``;

and ``loss = K - sum_k mean_b |num / (den + 1e-6)|``, which lies in [0, K].

CellSeg3D evaluates this with two dense (2r+1)^3 ``conv3d`` per class. Here ``G`` is the product of three
1-D Gaussians, applied as three 1-D passes, and ``G(u, v) = G(v, u)`` so that
``num = sum_v (p w)(v) (G p)(v)`` and ``den = sum_v w(v) (G p)(v)``: one blur of ``p`` per class, all
classes in one call, instead of two 3-D convolutions. The blur is self-adjoint, so its backward pass is
the same blur of the incoming gradient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MEAN_EPS = 1e-5
"""Added to a class's mean probability before dividing by it (CellSeg3D's value)."""
RATIO_EPS = 1e-6
"""Added to the denominator of each class's association ratio (CellSeg3D's value)."""
WEIGHT_CUTOFF = 80.0
"""Voxel weights ``exp(-x)`` with ``x >= WEIGHT_CUTOFF`` (below about 2e-35) are set to zero: their effect on
the loss is far below float32 resolution, and ``exp`` is about 10x slower where it underflows."""
RECONSTRUCTION_LOSSES = ("mse", "bce")


def gaussian_taps(radius: int, sigma: float) -> list[float]:
    """One half of the 1-D kernel, ``exp(-j^2 / (2 sigma^2))`` for ``j = 0..radius``.

    The product of three such kernels is CellSeg3D's ``norm.pdf(dist / sigma) / norm.pdf(0)``.
    """
    return [math.exp(-(j * j) / (2.0 * sigma * sigma)) for j in range(radius + 1)]


def _blur_axis(x: Tensor, taps: Sequence[float], dim: int) -> Tensor:
    """Symmetric 1-D convolution of ``x`` along ``dim`` with zero padding, as sums of shifted slices."""
    n = x.shape[dim]
    out = x * taps[0]
    for shift in range(1, min(len(taps), n)):
        out.narrow(dim, shift, n - shift).add_(x.narrow(dim, 0, n - shift), alpha=taps[shift])
        out.narrow(dim, 0, n - shift).add_(x.narrow(dim, shift, n - shift), alpha=taps[shift])
    return out


def _blur(x: Tensor, taps: Sequence[float]) -> Tensor:
    """Separable Gaussian blur of the last three axes of ``x``; every other axis is a batch axis."""
    for dim in (-3, -2, -1):
        x = _blur_axis(x, taps, x.dim() + dim)
    return x


class _GaussianBlur(torch.autograd.Function):
    """The blur as one autograd node: it keeps no tensors, and its backward is the same blur."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor, taps: tuple[float, ...]) -> Tensor:
        ctx.taps = taps  # type: ignore[attr-defined]
        return _blur(x, taps)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        return _GaussianBlur.apply(grad, ctx.taps), None  # type: ignore[attr-defined]


def gaussian_blur(x: Tensor, radius: int, sigma: float) -> Tensor:
    """``conv3d(x, G, padding=radius)`` of each (Z, Y, X) volume in ``x`` (..., Z, Y, X), with CellSeg3D's
    dense kernel ``G`` (unnormalised Gaussian, peak 1), computed in three 1-D passes."""
    return _GaussianBlur.apply(x, tuple(gaussian_taps(radius, sigma)))


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (bf16/fp16 inputs are computed in float32)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


class SoftNCutLoss(nn.Module):
    """CellSeg3D's SoftNCut loss (see the module docstring), with a separable, symmetric evaluation.

    Args:
        intensity_sigma: ``sigma_I`` of the voxel weights ``exp(-d^2 / sigma_I^2)``.
        spatial_sigma: ``sigma_X`` of the spatial Gaussian.
        radius: half-width of the (2r+1)^3 spatial neighbourhood.
    """

    def __init__(self, intensity_sigma: float = 1.0, spatial_sigma: float = 4.0, radius: int = 2) -> None:
        super().__init__()
        if not intensity_sigma > 0:
            raise ValueError(f"intensity_sigma must be positive, got {intensity_sigma}")
        if not spatial_sigma > 0:
            raise ValueError(f"spatial_sigma must be positive, got {spatial_sigma}")
        if isinstance(radius, bool) or not isinstance(radius, Integral) or radius < 1:
            raise ValueError(f"radius must be an integer >= 1, got {radius!r}")
        self.intensity_sigma = float(intensity_sigma)
        self.spatial_sigma = float(spatial_sigma)
        self.radius = int(radius)

    def extra_repr(self) -> str:
        sigmas = f"intensity_sigma={self.intensity_sigma}, spatial_sigma={self.spatial_sigma}"
        return f"{sigmas}, radius={self.radius}"

    def forward(self, probs: Tensor, image: Tensor) -> Tensor:
        """The loss (0-dim, in [0, K]) of probabilities (B, K, Z, Y, X) for an image (B, C, Z, Y, X).

        Computed in float32 (float64 if an input is float64), also under autocast.
        """
        if probs.dim() != 5 or image.dim() != 5:
            raise ValueError(
                f"expected probs (B, K, Z, Y, X) and image (B, C, Z, Y, X), got {tuple(probs.shape)} "
                f"and {tuple(image.shape)}"
            )
        if probs.shape[0] != image.shape[0] or probs.shape[2:] != image.shape[2:]:
            raise ValueError(
                f"probs {tuple(probs.shape)} and image {tuple(image.shape)} differ in batch or spatial size"
            )
        dtype = _compute_dtype(probs, image)
        with torch.autocast(probs.device.type, enabled=False):
            p = probs.to(dtype)
            img = image.to(dtype)
            num_classes = p.shape[1]
            # Class means per channel, (B, K, C): one batched matrix product over the voxels.
            p_flat, img_flat = p.flatten(2), img.flatten(2)
            voxels = p_flat.shape[-1]
            weighted = torch.bmm(p_flat, img_flat.transpose(1, 2)) / voxels
            class_mean = weighted / (p_flat.mean(-1, keepdim=True) + MEAN_EPS)
            # Squared distance to each class mean, summed over channels: (B, K, N).
            dist = (img_flat.unsqueeze(1) - class_mean.unsqueeze(-1)).square()
            dist = dist.squeeze(2) if dist.shape[2] == 1 else dist.sum(2)
            exponent = (dist * (1.0 / self.intensity_sigma)).square()
            weights = torch.exp(-exponent.clamp(max=WEIGHT_CUTOFF)).masked_fill(exponent >= WEIGHT_CUTOFF, 0.0)
            blurred = gaussian_blur(p, self.radius, self.spatial_sigma).flatten(2)
            numerator = torch.linalg.vecdot(p_flat * weights, blurred)
            denominator = torch.linalg.vecdot(weights, blurred)
            association = (numerator / (denominator + RATIO_EPS)).abs().mean(0)
            return num_classes - association.sum()


def reconstruction_loss(reconstruction: Tensor, image: Tensor, kind: str = "mse") -> Tensor:
    """The decoder's loss, as CellSeg3D's trainer computes it.

    ``"mse"``: mean squared error between ``reconstruction`` and ``image``. ``"bce"``: binary cross-entropy
    between ``sigmoid(reconstruction)`` and the image remapped to 0..1 by the whole batch's minimum and
    maximum, ``(image - min) / (max - min)`` (a constant image gives all-zero targets instead of CellSeg3D's
    NaNs). The sigmoid is fused into the cross-entropy (``binary_cross_entropy_with_logits``): the same
    value as ``BCELoss(sigmoid(x), t)``, except for logits so large that the float32 sigmoid rounds to 1,
    where ``BCELoss`` clamps its logarithm at -100 and the fused form stays exact.
    """
    if kind not in RECONSTRUCTION_LOSSES:
        raise ValueError(f"reconstruction loss must be one of {RECONSTRUCTION_LOSSES}, got {kind!r}")
    if reconstruction.shape != image.shape:
        raise ValueError(f"reconstruction {tuple(reconstruction.shape)} and image {tuple(image.shape)} differ in shape")
    dtype = _compute_dtype(reconstruction, image)
    with torch.autocast(reconstruction.device.type, enabled=False):
        rec, img = reconstruction.to(dtype), image.to(dtype)
        if kind == "mse":
            return F.mse_loss(rec, img)
        low, span = img.min(), img.max() - img.min()
        target = torch.where(span > 0, (img - low) / span, torch.zeros_like(img))
        return F.binary_cross_entropy_with_logits(rec, target)


@dataclass
class LossTerms:
    """The weighted total and its two unweighted terms (0-dim tensors; ``total`` carries the graph)."""

    total: Tensor
    ncut: Tensor
    rec: Tensor


class WNetLoss(nn.Module):
    """``ncut_weight * SoftNCut(probs, image) + rec_weight * reconstruction_loss(reconstruction, image)``.

    Args:
        intensity_sigma, spatial_sigma, radius: the SoftNCut parameters (see :class:`SoftNCutLoss`).
        ncut_weight: weight of the SoftNCut term (CellSeg3D's ``n_cuts_weight``).
        rec_weight: weight of the reconstruction term (CellSeg3D's ``rec_loss_weight``).
        rec_loss: ``"mse"`` or ``"bce"`` (see :func:`reconstruction_loss`).
    """

    def __init__(
        self,
        intensity_sigma: float = 1.0,
        spatial_sigma: float = 4.0,
        radius: int = 2,
        ncut_weight: float = 0.5,
        rec_weight: float = 5e-3,
        rec_loss: str = "mse",
    ) -> None:
        super().__init__()
        if rec_loss not in RECONSTRUCTION_LOSSES:
            raise ValueError(f"rec_loss must be one of {RECONSTRUCTION_LOSSES}, got {rec_loss!r}")
        self.ncut = SoftNCutLoss(intensity_sigma, spatial_sigma, radius)
        self.ncut_weight = float(ncut_weight)
        self.rec_weight = float(rec_weight)
        self.rec_loss = rec_loss

    def forward(self, probs: Tensor, reconstruction: Tensor, image: Tensor) -> LossTerms:
        """Both terms and their weighted sum, for encoder probabilities, decoder output and the image."""
        ncut = self.ncut(probs, image)
        rec = reconstruction_loss(reconstruction, image, self.rec_loss)
        return LossTerms(self.ncut_weight * ncut + self.rec_weight * rec, ncut, rec)

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

CellSeg3D evaluates this with two dense (2r+1)^3 ``conv3d`` per class, forward and backward through
autograd. Here ``G`` is the product of three 1-D Gaussians, applied as three 1-D passes (sums of shifted
slices), and ``G(u, v) = G(v, u)``, so that ``num = sum_v (p w)(v) (G p)(v)`` and
``den = sum_v w(v) (G p)(v)``: one blur of ``p`` for all classes at once instead of two 3-D convolutions
per class. The backward pass is written by hand (the blur is self-adjoint, so it is one more blur) and
keeps three (B, K, Z, Y, X) tensors; memory does not depend on the radius.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

MEAN_EPS = 1e-5
"""Added to a class's mean probability before dividing by it (CellSeg3D's value)."""
RATIO_EPS = 1e-6
"""Added to the denominator of each class's association ratio (CellSeg3D's value)."""
WEIGHT_FLOOR = 80.0
"""Voxel weights are ``exp(-min(x, WEIGHT_FLOOR))``, floored at ``exp(-80)`` (about 2e-35) instead of
underflowing to float32 subnormals and zero: a change far below float32 resolution of the loss and its
gradient, which keeps ``exp`` off its slow path (about 10x slower where it underflows)."""
RECONSTRUCTION_LOSSES = ("mse", "bce")


def gaussian_taps(radius: int, sigma: float) -> list[float]:
    """One half of the 1-D kernel, ``exp(-j^2 / (2 sigma^2))`` for ``j = 0..radius``.

    The product of three such kernels is CellSeg3D's ``norm.pdf(dist / sigma) / norm.pdf(0)``.
    """
    return [math.exp(-(j * j) / (2.0 * sigma * sigma)) for j in range(radius + 1)]


def _blur_axis(x: Tensor, taps: Sequence[float], dim: int, out: Tensor) -> Tensor:
    """Symmetric 1-D convolution of ``x`` along ``dim`` with zero padding, as sums of shifted slices,
    written into ``out`` (another tensor of the same shape)."""
    n = x.shape[dim]
    torch.mul(x, taps[0], out=out)
    for shift in range(1, min(len(taps), n)):
        out.narrow(dim, shift, n - shift).add_(x.narrow(dim, 0, n - shift), alpha=taps[shift])
        out.narrow(dim, 0, n - shift).add_(x.narrow(dim, shift, n - shift), alpha=taps[shift])
    return out


def _blur(x: Tensor, taps: Sequence[float], scratch: Tensor | None = None) -> Tensor:
    """Separable Gaussian blur of the last three axes of ``x``; every other axis is a batch axis.

    The three passes alternate between two buffers; ``scratch`` (which may be ``x`` itself, whose values
    are then lost) serves as the second one instead of a new tensor.
    """
    first = _blur_axis(x, taps, x.dim() - 3, torch.empty_like(x))
    second = _blur_axis(first, taps, x.dim() - 2, torch.empty_like(x) if scratch is None else scratch)
    return _blur_axis(second, taps, x.dim() - 1, first)


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


def _squared_distance(image: Tensor, class_mean: Tensor) -> Tensor:
    """``sum_c (image_c - mean_kc)^2`` for an image (B, C, N) and class means (B, K, C): (B, K, N)."""
    dist = (image[:, :1] - class_mean[..., :1]).square_()
    for channel in range(1, image.shape[1]):
        dist.add_((image[:, channel : channel + 1] - class_mean[..., channel : channel + 1]).square_())
    return dist


class _SoftNCut(torch.autograd.Function):
    """The SoftNCut loss of contiguous ``probs`` (B, K, Z, Y, X) and ``image`` (B, C, Z, Y, X) of one float
    dtype, with a hand-written backward pass.

    With ``a = dL/dnum`` and ``c = dL/dden`` per sample and class, ``h = a p + c`` and ``g = G p``:
    ``dL/dp = G(w h) + a w g`` with the weights held fixed, and ``dL/dw = h g``. Through
    ``w = exp(-d^2 / sigma^2)`` and ``d = sum_c (I_c - mu_c)^2`` the class means get
    ``dL/dmu_c = (4 / sigma^2) sum_v (I_c - mu_c) q`` with ``q = d w h g``, which flows back to ``p`` (and
    to the image) through ``mu_c = mean(I_c p) / (mean(p) + 1e-5)``. One blur in the forward pass, one in
    the backward pass, and three saved (B, K, N) tensors: ``d``, ``w`` and ``w g``.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        probs: Tensor,
        image: Tensor,
        taps: tuple[float, ...],
        intensity_sigma: float,
    ) -> Tensor:
        p, img = probs.flatten(2), image.flatten(2)
        voxels = p.shape[-1]
        mass = p.sum(-1, keepdim=True).div_(voxels).add_(MEAN_EPS)  # mean(p) + 1e-5, (B, K, 1)
        # Sums over all voxels use torch's reductions (pairwise summation), not matrix products, whose float32
        # accumulation made the loss and gradient 10-60x less accurate at 64^3 (and was slower).
        weighted_sum = torch.stack([torch.linalg.vecdot(p, img[:, c : c + 1]) for c in range(img.shape[1])], -1)
        class_mean = weighted_sum / (mass * voxels)  # (B, K, C)
        dist = _squared_distance(img, class_mean)
        weights = torch.mul(dist, dist).mul_(-1.0 / intensity_sigma**2).clamp_(min=-WEIGHT_FLOOR).exp_()
        weighted_blur = _blur(probs, taps).flatten(2).mul_(weights)  # w g
        denominator = weighted_blur.sum(-1)
        numerator = torch.linalg.vecdot(p, weighted_blur)
        ratio = numerator / (denominator + RATIO_EPS)
        ctx.save_for_backward(probs, image, class_mean, mass, dist, weights, weighted_blur, ratio, denominator)
        ctx.taps, ctx.intensity_sigma = taps, intensity_sigma  # type: ignore[attr-defined]
        return probs.shape[1] - ratio.abs().mean(0).sum()

    @staticmethod
    @once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_loss: Tensor
    ) -> tuple[Tensor | None, Tensor | None, None, None]:
        saved = ctx.saved_tensors  # type: ignore[attr-defined]
        probs, image, class_mean, mass, dist, weights, weighted_blur, ratio, denominator = saved
        p, img = probs.flatten(2), image.flatten(2)
        batch, voxels = p.shape[0], p.shape[-1]
        grad_num = (-grad_loss * torch.sign(ratio) / batch / (denominator + RATIO_EPS)).unsqueeze(-1)  # a
        grad_den = -grad_num * ratio.unsqueeze(-1)  # c
        h = torch.addcmul(grad_den, p, grad_num)  # a p + c
        q = (h * weighted_blur).mul_(dist)
        weighted_h = h.mul_(weights)
        factor = 4.0 / ctx.intensity_sigma**2  # type: ignore[attr-defined]
        offsets = [img[:, c : c + 1] - class_mean[..., c : c + 1] for c in range(img.shape[1])]  # I_c - mu_c
        grad_mean = torch.stack([torch.linalg.vecdot(q, e) for e in offsets], -1).mul_(factor)  # (B, K, C)
        grad_weighted = grad_mean / mass  # dL/d mean(I_c p)
        grad_mass = -(grad_mean * class_mean).sum(-1, keepdim=True) / mass  # dL/d mean(p)
        grad_probs = grad_image = None
        if ctx.needs_input_grad[0]:
            weighted_h = weighted_h.view(probs.shape)
            grad = _blur(weighted_h, ctx.taps, scratch=weighted_h).flatten(2)  # type: ignore[attr-defined]
            grad.addcmul_(weighted_blur, grad_num)
            for c in range(img.shape[1]):
                grad.addcmul_(img[:, c : c + 1], grad_weighted[..., c : c + 1] / voxels)
            grad_probs = grad.add_(grad_mass / voxels).view(probs.shape)
        if ctx.needs_input_grad[1]:
            direct = torch.cat([(e * q).sum(1, keepdim=True) for e in offsets], 1).mul_(-factor)
            through_mean = torch.bmm(grad_weighted.transpose(1, 2), p).div_(voxels)  # (B, C, N)
            grad_image = direct.add_(through_mean).view(image.shape)
        return grad_probs, grad_image, None, None


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
            p = probs.to(dtype).contiguous()
            img = image.to(dtype).contiguous()
            taps = tuple(gaussian_taps(self.radius, self.spatial_sigma))
            return _SoftNCut.apply(p, img, taps, self.intensity_sigma)


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
        intensity_sigma: SoftNCut's intensity sigma (see :class:`SoftNCutLoss`).
        spatial_sigma: SoftNCut's spatial sigma, in voxels.
        radius: SoftNCut's neighbourhood radius, in voxels.
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

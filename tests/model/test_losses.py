"""SoftNCut and reconstruction losses: agreement with CellSeg3D's own SoftNCutsLoss, closed forms, errors."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wnet_zoo.model.losses import LossTerms, SoftNCutLoss, WNetLoss, gaussian_blur, reconstruction_loss

from reference import cellseg3d_softncut_class

VALUE_RTOL = 1e-4
GRAD_RTOL = 1e-3


def _inputs(shape: tuple[int, ...], seed: int, channels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random softmax probabilities (B, K, Z, Y, X) and a random image (B, C, Z, Y, X) on 0..100."""
    gen = torch.Generator().manual_seed(seed)
    probs = torch.softmax(2.0 * torch.randn(shape, generator=gen), dim=1)
    image = 100.0 * torch.rand((shape[0], channels, *shape[2:]), generator=gen)
    return probs, image


def _blob_inputs(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth image (bright blobs on a dark background) with probabilities that roughly follow it."""
    gen = torch.Generator().manual_seed(seed)
    batch, classes, *spatial = shape
    noise = torch.rand((batch, 1, *spatial), generator=gen)
    smooth = F.avg_pool3d(noise, 3, stride=1, padding=1, count_include_pad=False)
    low, high = smooth.amin(), smooth.amax()
    image = 100.0 * (smooth - low) / (high - low)
    logits = torch.cat([(image - 50.0 * k) / 10.0 for k in range(classes)], dim=1)
    logits = logits + torch.randn(logits.shape, generator=gen)
    return torch.softmax(logits, dim=1), image


def _value_and_grads(
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    probs: torch.Tensor,
    image: torch.Tensor,
    image_grad: bool,
) -> tuple[float, torch.Tensor, torch.Tensor | None]:
    probs = probs.clone().requires_grad_(True)
    image = image.clone().requires_grad_(image_grad)
    value = loss(probs, image)
    value.backward()
    return value.item(), probs.grad, image.grad


def _relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return ((value - reference).norm() / reference.norm()).item()


def _assert_close_to_reference(
    probs: torch.Tensor,
    image: torch.Tensor,
    intensity_sigma: float,
    spatial_sigma: float,
    radius: int,
    image_grad: bool = False,
) -> None:
    """Loss value and gradients (probabilities, and optionally image) against CellSeg3D's SoftNCutsLoss."""
    reference = cellseg3d_softncut_class()(tuple(probs.shape[2:]), "cpu", intensity_sigma, spatial_sigma, radius)
    ours = SoftNCutLoss(intensity_sigma, spatial_sigma, radius)
    ref_value, ref_grad, ref_image_grad = _value_and_grads(reference, probs, image, image_grad)
    value, grad, our_image_grad = _value_and_grads(ours, probs, image, image_grad)
    assert abs(value - ref_value) <= VALUE_RTOL * abs(ref_value), (value, ref_value)
    assert _relative_error(grad, ref_grad) <= GRAD_RTOL
    if image_grad:
        assert _relative_error(our_image_grad, ref_image_grad) <= GRAD_RTOL


@pytest.mark.parametrize("radius", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("spatial", [(16, 16, 16), (12, 16, 20)])
def test_matches_cellseg3d_random(spatial: tuple[int, int, int], classes: int, radius: int) -> None:
    batch = 2 if spatial[0] == spatial[1] == spatial[2] else 1
    probs, image = _inputs((batch, classes, *spatial), seed=radius + 10 * classes)
    _assert_close_to_reference(probs, image, intensity_sigma=1.0, spatial_sigma=4.0, radius=radius)


@pytest.mark.parametrize(
    ("classes", "radius", "intensity_sigma", "spatial_sigma"),
    [(2, 1, 40.0, 4.0), (2, 3, 500.0, 2.5), (3, 2, 40.0, 1.5), (3, 5, 2000.0, 6.0)],
)
def test_matches_cellseg3d_structured(classes: int, radius: int, intensity_sigma: float, spatial_sigma: float) -> None:
    """Wide intensity sigmas make most voxel weights non-negligible, unlike the default on random noise."""
    probs, image = _blob_inputs((2, classes, 10, 14, 18), seed=radius)
    _assert_close_to_reference(probs, image, intensity_sigma, spatial_sigma, radius, image_grad=True)


def test_matches_cellseg3d_multichannel_image() -> None:
    """With several image channels the class mean is per channel and the distance sums over channels."""
    probs, image = _inputs((2, 2, 8, 10, 12), seed=3, channels=2)
    image = image / 20.0
    _assert_close_to_reference(probs, image, intensity_sigma=3.0, spatial_sigma=4.0, radius=2, image_grad=True)


@pytest.mark.parametrize("radius", [1, 2, 5])
def test_blur_matches_dense_kernel(radius: int) -> None:
    """Three 1-D passes equal conv3d with CellSeg3D's dense kernel, also where the kernel outgrows an axis."""
    loss_class = cellseg3d_softncut_class()
    kernel = loss_class((4, 4, 4), "cpu", 1.0, 4.0, radius).gaussian_kernel(radius, 2.5)
    volumes = torch.rand(3, 2, 4, 7, 13, dtype=torch.float64)
    dense = F.conv3d(volumes.reshape(6, 1, 4, 7, 13), kernel.double(), padding=radius).reshape(volumes.shape)
    torch.testing.assert_close(gaussian_blur(volumes, radius, 2.5), dense, rtol=1e-6, atol=1e-6)


def test_blur_is_its_own_adjoint() -> None:
    volumes = torch.rand(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: gaussian_blur(v, 2, 1.5), (volumes,))
    assert torch.autograd.gradgradcheck(lambda v: gaussian_blur(v, 2, 1.5), (volumes,))


@pytest.mark.parametrize(("classes", "channels"), [(2, 1), (3, 2)])
def test_gradients_match_finite_differences(classes: int, channels: int) -> None:
    """The hand-written backward pass, for the probabilities and the image, in float64."""
    probs, image = _blob_inputs((2, classes, 4, 5, 6), seed=classes)
    image = torch.cat([image + 3.0 * c for c in range(channels)], dim=1)
    probs = probs.double().requires_grad_(True)
    image = image.double().requires_grad_(True)
    loss = SoftNCutLoss(intensity_sigma=30.0, spatial_sigma=2.0, radius=2)
    assert torch.autograd.gradcheck(loss, (probs, image))


def test_non_contiguous_inputs() -> None:
    probs, image = _blob_inputs((2, 2, 6, 7, 8), seed=4)
    loss = SoftNCutLoss(30.0, 4.0, 2)
    permuted = probs.permute(0, 1, 4, 3, 2).contiguous().permute(0, 1, 4, 3, 2)
    assert not permuted.is_contiguous()
    torch.testing.assert_close(loss(permuted, image), loss(probs, image))


def _axis_association(inside: range, outside: range, radius: int, sigma: float) -> float:
    """Sum of the 1-D kernel over pairs (i in inside, j in outside) at most ``radius`` apart."""
    return sum(math.exp(-((i - j) ** 2) / (2 * sigma**2)) for i in inside for j in outside if abs(i - j) <= radius)


@pytest.mark.parametrize("classes", [2, 3])
def test_uniform_probabilities_constant_image(classes: int) -> None:
    """p = 1/K everywhere and a constant image: weights are 1 and every class's ratio is (S/K^2)/(S/K + eps),
    S the sum of the kernel over all pairs of voxels, so the loss is about K - 1."""
    shape, radius, sigma = (6, 7, 9), 2, 4.0
    probs = torch.full((2, classes, *shape), 1.0 / classes)
    image = torch.full((2, 1, *shape), 37.0)
    total = math.prod(_axis_association(range(n), range(n), radius, sigma) for n in shape)
    ratio = (total / classes**2) / (total / classes + 1e-6)
    expected = classes - classes * ratio
    value = SoftNCutLoss(1.0, sigma, radius)(probs, image)
    assert value.item() == pytest.approx(expected, rel=1e-5)
    assert value.item() == pytest.approx(classes - 1, rel=1e-5)


def test_half_split_constant_image_is_the_normalised_cut() -> None:
    """Two one-hot halves along X of a constant image: loss = cut/assoc(A, V) + cut/assoc(B, V) with the
    Gaussian affinity, which factorises into 1-D sums along X."""
    shape, radius, sigma = (5, 6, 10), 3, 2.0
    half = shape[2] // 2
    probs = torch.zeros(1, 2, *shape)
    probs[:, 0, :, :, :half] = 1.0
    probs[:, 1, :, :, half:] = 1.0
    image = torch.full((1, 1, *shape), 80.0)
    left, everything = range(half), range(shape[2])
    ratio = _axis_association(left, left, radius, sigma) / _axis_association(left, everything, radius, sigma)
    value = SoftNCutLoss(1.0, sigma, radius)(probs, image)
    assert value.item() == pytest.approx(2 - 2 * ratio, rel=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_loss_is_between_zero_and_k(seed: int) -> None:
    classes = 2 + seed % 2
    probs, image = _blob_inputs((2, classes, 6, 8, 10), seed=seed)
    if seed == 3:
        probs = F.one_hot(probs.argmax(1), classes).movedim(-1, 1).float()
    for intensity_sigma in (1.0, 30.0, 1e4):
        value = SoftNCutLoss(intensity_sigma, 4.0, 2)(probs, image).item()
        assert 0.0 <= value <= classes


def test_bf16_autocast_and_inputs_compute_in_float32() -> None:
    probs, image = _blob_inputs((1, 2, 8, 8, 8), seed=5)
    loss = SoftNCutLoss(30.0, 4.0, 2)
    expected = loss(probs, image)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = loss(probs, image)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, expected)
    low = probs.bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(low, image.bfloat16())
    value.backward()
    assert value.dtype == torch.float32 and low.grad is not None and low.grad.dtype == torch.bfloat16
    torch.testing.assert_close(value, loss(low.detach().float(), image.bfloat16().float()))


def test_reconstruction_mse_by_hand() -> None:
    reconstruction = torch.tensor([[[[[1.0, 2.0], [3.0, 4.0]]]]])
    image = torch.tensor([[[[[1.5, 0.0], [3.0, 8.0]]]]])
    expected = (0.25 + 4.0 + 0.0 + 16.0) / 4
    assert reconstruction_loss(reconstruction, image).item() == pytest.approx(expected)
    assert reconstruction_loss(reconstruction, image, "mse").item() == pytest.approx(expected)


def test_reconstruction_bce_by_hand() -> None:
    """BCE of sigmoid(reconstruction) against the image min-max remapped over the whole batch."""
    gen = torch.Generator().manual_seed(0)
    reconstruction = torch.randn(2, 1, 3, 4, 5, generator=gen)
    image = 20.0 + 60.0 * torch.rand(2, 1, 3, 4, 5, generator=gen)
    x, y = reconstruction.double().numpy(), image.double().numpy()
    target = (y - y.min()) / (y.max() - y.min())
    prob = 1.0 / (1.0 + np.exp(-x))
    expected = -np.mean(target * np.log(prob) + (1 - target) * np.log(1 - prob))
    value = reconstruction_loss(reconstruction, image, "bce").item()
    assert value == pytest.approx(expected, rel=1e-5)
    remapped = (image - image.min()) / (image.max() - image.min())
    assert value == pytest.approx(torch.nn.BCELoss()(torch.sigmoid(reconstruction), remapped).item(), rel=1e-5)


def test_reconstruction_bce_constant_image_is_finite() -> None:
    reconstruction = torch.zeros(1, 1, 2, 2, 2)
    value = reconstruction_loss(reconstruction, torch.full_like(reconstruction, 7.0), "bce")
    assert value.item() == pytest.approx(math.log(2.0))


def test_wnet_loss_weights_its_terms() -> None:
    probs, image = _blob_inputs((1, 2, 6, 6, 6), seed=1)
    reconstruction = image + torch.randn(image.shape, generator=torch.Generator().manual_seed(2))
    probs.requires_grad_(True)
    reconstruction.requires_grad_(True)
    terms = WNetLoss()(probs, reconstruction, image)
    assert isinstance(terms, LossTerms)
    torch.testing.assert_close(terms.ncut, SoftNCutLoss()(probs, image))
    torch.testing.assert_close(terms.rec, reconstruction_loss(reconstruction, image))
    torch.testing.assert_close(terms.total, 0.5 * terms.ncut + 5e-3 * terms.rec)
    terms.total.backward()
    assert probs.grad is not None and reconstruction.grad is not None

    custom = WNetLoss(30.0, 2.0, 1, ncut_weight=2.0, rec_weight=0.25, rec_loss="bce")(probs, reconstruction, image)
    torch.testing.assert_close(custom.ncut, SoftNCutLoss(30.0, 2.0, 1)(probs, image))
    torch.testing.assert_close(custom.rec, reconstruction_loss(reconstruction, image, "bce"))
    torch.testing.assert_close(custom.total, 2.0 * custom.ncut + 0.25 * custom.rec)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"intensity_sigma": 0.0},
        {"intensity_sigma": -1.0},
        {"intensity_sigma": float("nan")},
        {"spatial_sigma": 0.0},
        {"radius": 0},
        {"radius": 2.5},
        {"radius": True},
    ],
)
def test_invalid_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SoftNCutLoss(**kwargs)
    with pytest.raises(ValueError):
        WNetLoss(**kwargs)


def test_invalid_inputs() -> None:
    loss = SoftNCutLoss()
    with pytest.raises(ValueError, match="expected probs"):
        loss(torch.rand(2, 4, 4, 4), torch.rand(2, 1, 4, 4, 4))
    with pytest.raises(ValueError, match="differ"):
        loss(torch.rand(2, 2, 4, 4, 4), torch.rand(2, 1, 4, 4, 5))
    with pytest.raises(ValueError, match="differ"):
        loss(torch.rand(2, 2, 4, 4, 4), torch.rand(1, 1, 4, 4, 4))
    with pytest.raises(ValueError, match="must be one of"):
        reconstruction_loss(torch.rand(1, 1, 2, 2, 2), torch.rand(1, 1, 2, 2, 2), "l1")
    with pytest.raises(ValueError, match="differ in shape"):
        reconstruction_loss(torch.rand(1, 1, 2, 2, 2), torch.rand(1, 1, 2, 2, 3))
    with pytest.raises(ValueError, match="rec_loss"):
        WNetLoss(rec_loss="l1")

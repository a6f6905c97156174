"""One optimisation step of WNet3D (SoftNCut plus reconstruction), with bf16 autocast and gradient shares."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import torch

from wnet_zoo.model.losses import LossTerms, WNetLoss
from wnet_zoo.model.wnet import WNet3D
from wnet_zoo.training.config import TrainConfig
from wnet_zoo.training.device import resolve_bf16
from wnet_zoo.training.seeding import _rng_state, _set_rng_state

LOG = logging.getLogger("wnet_zoo")


class TrainingStep:
    """One optimisation step of WNet3D: forward (optionally under bf16 autocast), both losses, backward, Adam."""

    def __init__(self, model: WNet3D, optimizer: torch.optim.Optimizer, loss: WNetLoss, bf16: bool = False) -> None:
        self.model, self.optimizer, self.loss, self.bf16 = model, optimizer, loss, bf16
        self.device = next(model.parameters()).device
        self.float32_redone = 0

    @classmethod
    def from_config(
        cls,
        config: TrainConfig,
        device: torch.device,
        input_sigma: tuple[float, float, float] = (0.0, 0.0, 0.0),
        input_log: float = 0.0,
        input_background: tuple[int, int, int] = (0, 0, 0),
    ) -> TrainingStep:
        """A freshly initialised model (channels-last on the device) compressing its input with a logarithm of
        offset ``input_log``, subtracting its background (box radius ``input_background``) and smoothing it by
        ``input_sigma`` ((z, y, x) voxels), Adam and the loss of ``config``."""
        model = WNet3D(
            num_classes=config.num_classes,
            channels=config.channels,
            dropout=config.dropout,
            input_sigma=input_sigma,
            input_log=input_log,
            input_background=input_background,
        )
        # channels-last halves the time of the 3-D convolutions' backward pass on CPUs (oneDNN)
        model.to(device, memory_format=torch.channels_last_3d)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        loss = WNetLoss(
            intensity_sigma=config.intensity_sigma,
            spatial_sigma=config.spatial_sigma,
            radius=config.radius,
            ncut_weight=config.ncut_weight,
            rec_weight=config.rec_weight,
            rec_loss=config.rec_loss,
        )
        return cls(model, optimizer, loss, resolve_bf16(config.bf16, device))

    def __call__(
        self,
        image: torch.Tensor,
        accept: Callable[[dict[str, float]], bool] | None = None,
        probe: bool = False,
    ) -> dict[str, Any]:
        """Train on a batch (B, 1, Z, Y, X) on the 0..100 scale.

        Args:
            image: the batch.
            accept: called with the loss terms (floats) before the update; when it returns False, nothing
                is updated and the result holds the terms and ``applied`` False.
            probe: also measure the gradient norm of each weighted term at the encoder's last convolution
                (``ncut_grad``, ``rec_grad``): two extra backward passes, the update unchanged.

        Returns the loss terms (``ncut``, ``rec``, ``total`` as floats), ``applied`` and, per class, the summed
        probability (``class_weight``) and probability-weighted intensity (``class_intensity``).
        """
        image = image.to(self.device, memory_format=torch.channels_last_3d)
        rng = _rng_state() if self.bf16 else None
        with self._autocast():
            probabilities, reconstruction = self.model(image)
        probabilities = probabilities.float()
        target = self.target(image)
        terms = self.loss(probabilities, reconstruction.float(), target)
        if accept is not None and not accept(_floats(terms)):
            return {**_floats(terms), "applied": False}
        probed = self.gradient_norms(terms) if probe else {}
        self.optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        if rng is not None and not self._finite_gradients():
            probabilities, terms, probed = self._redo_in_float32(image, target, rng, probe)
        self.optimizer.step()
        with torch.no_grad():
            detached = probabilities.detach()
            class_weight = detached.sum(dim=(0, 2, 3, 4)).double().cpu()
            class_intensity = (detached * target).sum(dim=(0, 2, 3, 4)).double().cpu()
        return {
            **_floats(terms),
            "applied": True,
            "class_weight": class_weight,
            "class_intensity": class_intensity,
            **probed,
        }

    @torch.no_grad()
    def target(self, image: torch.Tensor) -> torch.Tensor:
        """What the losses compare with: the image as the encoder sees it (compressed, less its background and
        smoothed, when the model does any of these)."""
        return self.model.encoder.prepare(image)

    def _finite_gradients(self) -> bool:
        return all(bool(torch.isfinite(p.grad).all()) for p in self.model.parameters() if p.grad is not None)

    def _redo_in_float32(
        self, image: torch.Tensor, target: torch.Tensor, rng: dict[str, Any], probe: bool
    ) -> tuple[torch.Tensor, LossTerms, dict[str, float]]:
        """The step's forward and backward again in float32, from the random state the step started with (the
        dropout a float32 step draws): oneDNN's bf16 backward of 3-D convolutions now and then returns NaN weight
        gradients on small feature maps (a depth of 2), where float32 gives finite ones; without this, the
        explosion guard would take it for a diverging run."""
        if not self.float32_redone:
            LOG.info("bf16 autocast gave non-finite gradients; such steps are redone in float32")
        self.float32_redone += 1
        _set_rng_state(rng)
        self.optimizer.zero_grad(set_to_none=True)
        probabilities, reconstruction = self.model(image)
        terms = self.loss(probabilities, reconstruction, target)
        probed = self.gradient_norms(terms) if probe else {}  # autograd.grad: leaves .grad as it is
        terms.total.backward()
        return probabilities, terms, probed

    def gradient_norms(self, terms: LossTerms) -> dict[str, float]:
        """Norms of the gradients of ``ncut_weight * ncut`` and ``rec_weight * rec`` w.r.t. the weights of the
        encoder's last convolution, where both terms reach the encoder (the graph is kept for the update)."""
        head = self.model.encoder.out_b.module[-1].weight
        norms = {}
        for name, term in (
            ("ncut_grad", self.loss.ncut_weight * terms.ncut),
            ("rec_grad", self.loss.rec_weight * terms.rec),
        ):
            (grad,) = torch.autograd.grad(term, head, retain_graph=True, allow_unused=True)
            norms[name] = 0.0 if grad is None else grad.norm().item()
        return norms

    @torch.no_grad()
    def evaluate(self, image: torch.Tensor) -> dict[str, Any]:
        """The loss terms of a batch in eval mode (no dropout, no update, no random numbers drawn), with the
        ``probabilities``, the ``reconstruction`` and the batch as the encoder ``seen`` it (float32 tensors on
        the CPU)."""
        training = self.model.training
        self.model.eval()
        try:
            image = image.to(self.device, memory_format=torch.channels_last_3d)
            with self._autocast():
                probabilities, reconstruction = self.model(image)
            probabilities, reconstruction = probabilities.float(), reconstruction.float()
            seen = self.target(image)
            terms = self.loss(probabilities, reconstruction, seen)
        finally:
            self.model.train(training)
        return {
            **_floats(terms),
            "probabilities": probabilities.cpu(),
            "reconstruction": reconstruction.cpu(),
            "seen": seen.cpu(),
        }

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()


def _floats(terms: LossTerms) -> dict[str, float]:
    return {"ncut": terms.ncut.item(), "rec": terms.rec.item(), "total": terms.total.item()}

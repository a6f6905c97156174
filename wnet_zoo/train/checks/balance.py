"""The balance check: loss and gradient shares, and the segmentation of each volume's centre at a plateau."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from wnet_zoo.model.losses import reconstruction_loss

NCUT_DOMINANT = 0.9
"""NCut dominates when it has this share of the encoder's gradient."""
COLLAPSE_FOREGROUND = 0.25
"""A segmentation has collapsed when its brightest class covers this share of the centre patch ..."""
COLLAPSE_LARGEST = 0.5
"""... with this share of it in one connected region: large bright-vs-dim regions, not nuclei."""
POOR_RECONSTRUCTION = 1.0
"""The reconstruction is poor when its loss is at least this multiple of a constant image's ..."""
REC_IMPROVEMENT = 0.9
"""... and it stays poor when its mean over the last window of epochs is above this share of the first window's
(less than 10% better: with the page's small weight, a decoder that learns still ends worse than a constant)."""
EVALUATED_VOLUMES = 3
"""Volumes whose centre patch the balance check segments."""


# ------------------------------------------------------------------------------------------------ balance


@dataclass
class SegmentationStats:
    """How the brightest class segments the centre patches, and how well they are reconstructed."""

    foreground: float
    largest: float
    rec: float
    rec_baseline: float

    @property
    def collapsed(self) -> bool:
        """Large bright-vs-dim regions: much foreground, mostly in one connected region."""
        return self.foreground >= COLLAPSE_FOREGROUND and self.largest >= COLLAPSE_LARGEST

    @property
    def poor_reconstruction(self) -> bool:
        """The decoder does no better than a constant image."""
        return self.rec >= POOR_RECONSTRUCTION * self.rec_baseline


def segmentation_stats(
    probabilities: np.ndarray, reconstruction: torch.Tensor, image: torch.Tensor, rec_loss: str
) -> SegmentationStats:
    """Foreground share and largest-region share (of the foreground) of the brightest class's mask, and the
    reconstruction loss next to that of each patch's mean (a constant image), for a batch (B, K, Z, Y, X)."""
    from scipy import ndimage

    pixels = image.numpy()[:, 0]
    means = (probabilities * pixels[:, None]).sum(axis=(0, 2, 3, 4)) / probabilities.sum(axis=(0, 2, 3, 4))
    mask = probabilities.argmax(axis=1) == int(np.argmax(means))
    foreground, largest = [], []
    for patch_mask in mask:
        labels, count = ndimage.label(patch_mask)
        foreground.append(float(patch_mask.mean()))
        largest.append(float(np.bincount(labels.ravel())[1:].max() / patch_mask.sum()) if count else 0.0)
    dims = tuple(range(1, image.dim()))
    if rec_loss == "bce":
        target = (image - image.min()) / (image.max() - image.min()).clamp_min(1e-12)
        constant = torch.logit(target.mean(dim=dims, keepdim=True).clamp(1e-6, 1 - 1e-6)).expand_as(image)
    else:
        constant = image.mean(dim=dims, keepdim=True).expand_as(image)
    return SegmentationStats(
        foreground=float(np.mean(foreground)),
        largest=float(np.mean(largest)),
        rec=float(reconstruction_loss(reconstruction, image, rec_loss)),
        rec_baseline=float(reconstruction_loss(constant.contiguous(), image, rec_loss)),
    )


def suggested_rec_weight(ncut_weight: float, rec_weight: float, ncut: float, rec: float) -> float:
    """A reconstruction weight that gives both weighted terms the same size (the page's advice), at least
    twice the current one, rounded to one significant digit."""
    wanted = max(ncut_weight * ncut / rec if rec > 0 else 0.0, 2 * rec_weight)
    exponent = math.floor(math.log10(wanted))
    return round(math.ceil(wanted / 10**exponent) * 10**exponent, 12)


@dataclass
class BalanceCheck:
    """Loss and gradient shares per epoch; at a plateau, advice when NCut takes over or reconstruction is poor."""

    ncut_weight: float
    rec_weight: float
    rec_loss: str
    auto: bool
    shares: list[list[float]] = field(default_factory=list)

    def record(self, epoch: int, row: dict[str, Any], grads: tuple[float, float] | None) -> None:
        """Keep NCut's share of the epoch's loss and of the encoder gradient (from the probed step)."""
        loss_share = self.ncut_weight * row["ncut"] / row["total"] if row["total"] else math.nan
        grad_share = grads[0] / (grads[0] + grads[1]) if grads and sum(grads) > 0 else math.nan
        self.shares.append([epoch, float(loss_share), float(grad_share)])

    def judge(
        self, stats: SegmentationStats, rows: Sequence[dict[str, Any]], window: int
    ) -> list[tuple[str, str, float | None]]:
        """(detail, action, new rec weight or None) for each problem the centre patches and the rows show."""
        found: list[tuple[str, str, float | None]] = []
        row = rows[-1]
        _, loss_share, grad_share = self.shares[-1] if self.shares else (0, math.nan, math.nan)
        dominant = not grad_share < NCUT_DOMINANT  # NaN (not measured) counts as dominant
        if stats.collapsed and dominant:
            weight = suggested_rec_weight(self.ncut_weight, self.rec_weight, row["ncut"], row["rec"])
            detail = (
                f"NCut takes over ({loss_share:.0%} of the loss, {grad_share:.0%} of the encoder gradient): the "
                f"segmentation only separates large bright and dim regions (the brightest class covers "
                f"{stats.foreground:.0%} of the centre patches, {stats.largest:.0%} of it in one region)"
            )
            if self.auto:
                found.append((detail, f"--auto-balance: rec-weight {self.rec_weight:g} -> {weight:g}", weight))
            else:
                advice = f"raise the reconstruction weight: --rec-weight {weight:g} (or --auto-balance)"
                found.append((detail, advice, None))
        rec = [r["rec"] for r in rows if math.isfinite(r["rec"])]
        first, last = float(np.mean(rec[:window])), float(np.mean(rec[-window:]))
        if stats.poor_reconstruction and last > REC_IMPROVEMENT * first:
            detail = (
                f"the reconstruction stays poor: loss {stats.rec:.4g} on the centre patches, no better than a "
                f"constant image ({stats.rec_baseline:.4g}), and {last:.4g} over the last {window} epochs against "
                f"{first:.4g} over the first {window}"
            )
            weight = suggested_rec_weight(self.ncut_weight, self.rec_weight, row["ncut"], row["rec"])
            advice = f"raise --rec-weight (e.g. {weight:g}), or switch to --rec-loss bce --rec-weight 0.5"
            found.append((detail, advice, None))
        return found

    def state_dict(self) -> dict[str, Any]:
        """Plain data for ``last.pt``."""
        return {"rec_weight": self.rec_weight, "shares": self.shares}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.rec_weight, self.shares = float(state["rec_weight"]), [list(s) for s in state["shares"]]


def _centre_patches(volumes: Sequence[np.ndarray], patch: tuple[int, int, int]) -> np.ndarray:
    """The patch-sized centre of each volume, as a batch (B, 1, Z, Y, X)."""
    centres = []
    for volume in volumes:
        start = [(size - p) // 2 for size, p in zip(volume.shape, patch, strict=True)]
        centres.append(volume[tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))])
    return np.ascontiguousarray(np.stack(centres)[:, None], dtype=np.float32)

"""The balance check: loss and gradient shares, and the segmentation of each volume's centre at a plateau."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from wnet_zoo.errors import command, setting
from wnet_zoo.model.losses import reconstruction_loss
from wnet_zoo.training.checks.base import GRADIENT_SHARES, NOTHING, Decision, EpochEnd, RunStart, StepLosses
from wnet_zoo.training.checks.screening import smoothed
from wnet_zoo.training.events import Event, numbers
from wnet_zoo.training.input_choices import otsu_split

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
POOR_FIT_COVERAGE = 0.6
"""A model fine-tuned from pretrained weights may not fit the images when its nuclei class covers less than this
share of the bright class of a two-class split of the image as the encoder sees it. On the tuning phantoms whose
fine-tuning ends within 0.02 mean F1 of training from scratch, the fine-tuned models cover 0.79 (packed) to 1.0 of
it; on ``organoid`` (packed, textured nuclei the pretraining never saw, 0.19 below scratch) 0.42, where the model
trained from scratch covers 0.97 (``benchmarks/README.md``, fine-tuning)."""


# ------------------------------------------------------------------------------------------------ balance


@dataclass
class SegmentationStats:
    """How the brightest class segments the centre patches, and how well they are reconstructed."""

    foreground: float
    largest: float
    rec: float
    rec_baseline: float
    covered: float

    @property
    def collapsed(self) -> bool:
        """Large bright-vs-dim regions: much foreground, mostly in one connected region."""
        return self.foreground >= COLLAPSE_FOREGROUND and self.largest >= COLLAPSE_LARGEST

    @property
    def poor_reconstruction(self) -> bool:
        """The decoder does no better than a constant image."""
        return self.rec >= POOR_RECONSTRUCTION * self.rec_baseline

    @property
    def poor_fit(self) -> bool:
        """The nuclei class leaves most of the image's bright structure out (see :data:`POOR_FIT_COVERAGE`)."""
        return self.covered < POOR_FIT_COVERAGE


def segmentation_stats(
    probabilities: np.ndarray, reconstruction: torch.Tensor, seen: torch.Tensor, rec_loss: str
) -> SegmentationStats:
    """Foreground share and largest-region share (of the foreground) of the nuclei class's mask, the
    reconstruction loss next to that of each patch's mean (a constant image), and the share of each patch's bright
    class that the mask covers, for a batch (B, K, Z, Y, X).

    ``seen`` is the batch as the encoder sees it (after the model's input transform), which the decoder learns to
    rebuild. The nuclei class is the brightest in it, as training picks the class that prediction reads. Its bright
    class is the part above an Otsu split after the screen's smoothing; ``covered`` is NaN where no patch can be
    split.
    """
    from scipy import ndimage

    pixels = seen.numpy()[:, 0]
    means = (probabilities * pixels[:, None]).sum(axis=(0, 2, 3, 4)) / probabilities.sum(axis=(0, 2, 3, 4))
    mask = probabilities.argmax(axis=1) == int(np.argmax(means))
    foreground, largest, covered = [], [], []
    for patch_mask, patch_seen in zip(mask, pixels, strict=True):
        labels, count = ndimage.label(patch_mask)
        foreground.append(float(patch_mask.mean()))
        largest.append(float(np.bincount(labels.ravel())[1:].max() / patch_mask.sum()) if count else 0.0)
        smooth = smoothed(patch_seen)
        split = otsu_split(smooth)
        if split is not None:
            bright = smooth > split[0]
            covered.append(float(np.count_nonzero(patch_mask & bright) / np.count_nonzero(bright)))
    dims = tuple(range(1, seen.dim()))
    if rec_loss == "bce":
        target = (seen - seen.min()) / (seen.max() - seen.min()).clamp_min(1e-12)
        constant = torch.logit(target.mean(dim=dims, keepdim=True).clamp(1e-6, 1 - 1e-6)).expand_as(seen)
    else:
        constant = seen.mean(dim=dims, keepdim=True).expand_as(seen)
    return SegmentationStats(
        foreground=float(np.mean(foreground)),
        largest=float(np.mean(largest)),
        rec=float(reconstruction_loss(reconstruction, seen, rec_loss)),
        rec_baseline=float(reconstruction_loss(constant.contiguous(), seen, rec_loss)),
        covered=float(np.mean(covered)) if covered else math.nan,
    )


def suggested_rec_weight(ncut_weight: float, rec_weight: float, ncut: float, rec: float) -> float:
    """A reconstruction weight that gives both weighted terms the same size (the page's advice), at least
    twice the current one, rounded to one significant digit."""
    wanted = max(ncut_weight * ncut / rec if rec > 0 else 0.0, 2 * rec_weight)
    exponent = math.floor(math.log10(wanted))
    return round(math.ceil(wanted / 10**exponent) * 10**exponent, 12)


Finding = tuple[str, str, str, dict[str, float]]
"""What the balance check found: the event's code, detail, action and values."""


@dataclass
class BalanceCheck:
    """Loss and gradient shares per epoch; at a plateau (as the plateau check's judge, :meth:`at_plateau`),
    advice when NCut takes over or the reconstruction is poor, and with ``auto`` a higher reconstruction
    weight when NCut takes over.

    ``centre`` holds the patch-sized centre of the first volumes (see :func:`centre_patches`), segmented at a
    plateau; ``window`` is the plateau's, over which the reconstruction loss must improve. A ``pretrained``
    run (fine-tuning) is not told its reconstruction stays poor: that finding is about a decoder that does not
    learn, told by the 10 % a fresh one gains; a pretrained decoder starts where its own run ended and barely
    moves, and the advice (the reconstruction weight of a run from scratch) is its own run's business. It is
    told instead when its nuclei class leaves most of the images' bright structure out (:data:`POOR_FIT_COVERAGE`):
    the pretrained start may not fit the images, and fine-tuning did not mend it. Not when ``auto`` has just raised
    the reconstruction weight: training goes on, and the next plateau judges again.
    """

    name: ClassVar[str] = "balance"
    needs: ClassVar[frozenset[str]] = frozenset({GRADIENT_SHARES})

    ncut_weight: float
    rec_weight: float
    rec_loss: str
    auto: bool
    window: int = 0
    pretrained: bool = False
    centre: np.ndarray | None = field(default=None, repr=False)
    shares: list[list[float]] = field(default_factory=list)
    segmentation: dict[str, float] = field(default_factory=dict)

    def start(self, run: RunStart) -> Decision:
        """Nothing to do when a run begins."""
        return NOTHING

    def accept(self, step: StepLosses) -> Decision:
        """Steps do not matter: the loop measures the gradient shares of each epoch's first step."""
        return NOTHING

    def end_epoch(self, epoch: EpochEnd) -> Decision:
        """Keep the epoch's shares (:meth:`record`); the verdict waits for a plateau."""
        self.record(epoch.epoch, epoch.rows[-1], epoch.grads)
        return NOTHING

    def record(self, epoch: int, row: dict[str, Any], grads: tuple[float, float] | None) -> None:
        """Keep NCut's share of the epoch's loss and of the encoder gradient (from the probed step)."""
        loss_share = self.ncut_weight * row["ncut"] / row["total"] if row["total"] else math.nan
        grad_share = grads[0] / (grads[0] + grads[1]) if grads and sum(grads) > 0 else math.nan
        self.shares.append([epoch, float(loss_share), float(grad_share)])

    def at_plateau(self, epoch: EpochEnd) -> Decision:
        """Segment the centre patches and judge the balance (see :meth:`judge`); with ``auto``, a takeover
        raises the reconstruction weight."""
        assert self.centre is not None, "the centre patches are given to judge at a plateau"
        evaluation = epoch.evaluate(torch.from_numpy(self.centre))
        probabilities = evaluation["probabilities"].numpy()
        stats = segmentation_stats(probabilities, evaluation["reconstruction"], evaluation["seen"], self.rec_loss)
        self.segmentation = {
            "epoch": epoch.epoch,
            "foreground": stats.foreground,
            "largest": stats.largest,
            "covered": stats.covered,
        }
        found = self.judge(stats, epoch.rows, self.window)
        events = tuple(Event(epoch.epoch, epoch.step, *finding) for finding in found)
        weight = next((values["rec_weight"] for code, *_, values in found if code == "balance.auto_balanced"), None)
        if weight is not None:
            self.rec_weight = weight
        return Decision(events=events, rec_weight=weight)

    def judge(self, stats: SegmentationStats, rows: Sequence[dict[str, Any]], window: int) -> list[Finding]:
        """Each problem the centre patches and the rows show: (code, detail, action, values); the values'
        ``rec_weight`` is the suggested weight, or the new one (``balance.auto_balanced``)."""
        found: list[Finding] = []
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
            values = numbers(
                rec_weight=weight,
                loss_share=loss_share,
                grad_share=grad_share,
                foreground=stats.foreground,
                largest=stats.largest,
            )
            if self.auto:
                action = f"{setting('auto_balance', True)}: rec-weight {self.rec_weight:g} -> {weight:g}"
                values["previous_rec_weight"] = self.rec_weight
                found.append(("balance.auto_balanced", detail, action, values))
            else:
                action = (
                    f"raise the reconstruction weight: {setting('rec_weight', weight)} "
                    f"(or {setting('auto_balance', True)})"
                )
                found.append(("balance.collapse", detail, action, values))
        rebalanced = any(code == "balance.auto_balanced" for code, *_ in found)  # trains on: judged at its plateau
        if self.pretrained and stats.poor_fit and not rebalanced:
            detail = (
                f"the pretrained start may not fit these images: the nuclei class covers {stats.covered:.0%} of the "
                f"bright class of a two-class split of the centre patches as the encoder sees them (fine-tunings as "
                f"good as training from scratch cover 79 to 100 % of it on the benchmark phantoms)"
            )
            action = (
                f"compare with a model trained from scratch on the same images ({command('train')}): on packed, "
                f"textured nuclei it did much better"
            )
            found.append(
                ("balance.poor_fit", detail, action, numbers(covered=stats.covered, foreground=stats.foreground))
            )
        rec = [r["rec"] for r in rows if math.isfinite(r["rec"])]
        first, last = float(np.mean(rec[:window])), float(np.mean(rec[-window:]))
        if not self.pretrained and stats.poor_reconstruction and last > REC_IMPROVEMENT * first:
            detail = (
                f"the reconstruction stays poor: loss {stats.rec:.4g} on the centre patches, no better than a "
                f"constant image ({stats.rec_baseline:.4g}), and {last:.4g} over the last {window} epochs against "
                f"{first:.4g} over the first {window}"
            )
            weight = suggested_rec_weight(self.ncut_weight, self.rec_weight, row["ncut"], row["rec"])
            action = (
                f"raise {setting('rec_weight')} (e.g. {weight:g}), or switch to {setting('rec_loss', 'bce')} "
                f"{setting('rec_weight', 0.5)}"
            )
            values = numbers(
                rec_weight=weight, rec=stats.rec, rec_baseline=stats.rec_baseline, first=first, last=last, window=window
            )
            found.append(("balance.poor_reconstruction", detail, action, values))
        return found

    def state_dict(self) -> dict[str, Any]:
        """Plain data for ``last.pt``: with the segmentation of the centre patches at the last plateau (its
        ``epoch``, ``foreground``, ``largest`` and ``covered`` shares; empty before one)."""
        return {"rec_weight": self.rec_weight, "shares": self.shares, "segmentation": self.segmentation}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (a checkpoint from before the segmentation was kept has none)."""
        self.rec_weight, self.shares = float(state["rec_weight"]), [list(s) for s in state["shares"]]
        self.segmentation = dict(state.get("segmentation") or {})


def centre_patches(volumes: Sequence[np.ndarray], patch: tuple[int, int, int]) -> np.ndarray:
    """The patch-sized centre of each volume, as a batch (B, 1, Z, Y, X)."""
    centres = []
    for volume in volumes:
        start = [(size - p) // 2 for size, p in zip(volume.shape, patch, strict=True)]
        centres.append(volume[tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))])
    return np.ascontiguousarray(np.stack(centres)[:, None], dtype=np.float32)

"""Automated troubleshooting while WNet3D trains, after the advice of CellSeg3D's WNet3D training page.

Four checks, each on by default and each recorded in ``events.csv`` (see :mod:`wnet_zoo.events`) and
logged as one line when it fires:

* **screening** (before training and per sampled patch): over-exposure (voxels at the dtype's maximum, or
  many sharing the top value), empty or almost-empty content, low contrast. Almost-empty patch positions are
  skipped by the sampler; a volume without a single usable patch is an error.
* **plateau**: the SoftNCut loss has stopped improving (its moving mean over a window of epochs fell by less
  than a tolerance); training ends there (``--no-stop-at-plateau`` trains on).
* **explosion** (every step): a NaN/Inf loss, a SoftNCut loss jumping toward its bound K, or a
  reconstruction loss blown up by orders of magnitude. The weights and optimizer state of the last good
  snapshot come back, the learning rate halves, training goes on; after a few in a row it stops.
* **balance**: each weighted term's share of the loss and of the encoder's gradient is measured every
  epoch; at a plateau the segmentation of the centre of each volume is inspected, and a collapse into
  large bright-vs-dim regions, or a reconstruction no better than a constant image, gets the page's advice
  (``--auto-balance`` raises the reconstruction weight itself).

Everything a check keeps between epochs is plain data in ``state_dict()``, saved in ``last.pt``, so a
resumed run behaves exactly like an uninterrupted one.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .errors import TrainingDiverged, UserError
from .events import Event, write_events
from .losses import reconstruction_loss

if TYPE_CHECKING:
    from .config import TrainConfig
    from .training import TrainingStep

LOG = logging.getLogger("wnet_zoo")

OVER_EXPOSED_SHARE = 1e-3
"""A volume is over-exposed when this share of its voxels sits at the dtype's maximum or at its top value
(real images reach their maximum in a handful of voxels; clipping piles many onto it)."""
FOREGROUND_SIGMAS = 5.0
"""Foreground: voxels of the smoothed volume above its median by this many robust (MAD) standard deviations of
the background. Gaussian or Poisson noise alone puts fewer than 5e-5 of its voxels there; the example volume 2 to
4%."""
FOREGROUND_SMOOTHING = 1.0
"""The volume is smoothed by a Gaussian of this sigma (voxels) before foreground is counted: nuclei keep their
brightness while the noise drops about fivefold, so noisy stacks whose nuclei hide in the voxel-wise noise
(a low-SNR phantom: 0.06% of voxels counted raw, 5% smoothed, 7% true) are not taken for empty."""
ALMOST_EMPTY_SHARE = 5e-3
"""A volume with less foreground than this share is almost empty (the example volume has 2.3%)."""
EMPTY_POSITIONS = 0.25
"""A volume where at least this share of patch positions is almost empty has large empty regions."""
LOW_CONTRAST_SPREAD = 10.0
"""Low contrast: the 0.1..99.9 percentiles span less than this much of the 0..100 remap (a few outlier
voxels stretch the remap and squeeze the image; the example volume spans 43)."""
OVER_EXPOSED_PATCH = 0.01
"""A patch is over-exposed when this share of its voxels sits at the volume's top value (100)."""
LOW_CONTRAST_PATCH = 3.0
"""A patch has low contrast when its 1..99 percentiles span less than this on the 0..100 scale (patches
of the example volume span 3.8 at the least, 17 typically)."""
STATS_VOXELS = 4_000_000
"""Volume statistics use a regular subsample of at most this many voxels."""

SPLIT_MARGIN = 0.02
"""No plateau while the SoftNCut loss is within this of K - 1, the value before the encoder splits."""

NCUT_JUMP = 0.5
"""The SoftNCut loss explodes when it covers this share of the way from its recent best up to K ..."""
ONE_CLASS_MARGIN = 0.25
"""... and ends above K - 1 (the loss of a one-class segmentation) by at least this much."""
REC_FACTOR = 100.0
"""The reconstruction loss explodes when it exceeds its recent best by this factor (two orders of magnitude)."""
RECENT_STEPS = 20
"""Steps whose losses make the "recent best"."""
SNAPSHOT_EVERY = 10
"""Good steps between two in-memory snapshots of the weights and optimizer state; also the good steps
after which a run that exploded counts as recovered."""

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


# ---------------------------------------------------------------------------------------------- screening


@dataclass
class VolumeScreen:
    """Screening numbers of one volume (shares are fractions of its voxels or patch positions)."""

    name: str
    saturated: float
    top: float
    foreground: float
    spread: float
    cut: float
    empty_positions: float = 0.0

    @property
    def flags(self) -> list[str]:
        """What is wrong with the volume: over-exposed, almost empty, large empty regions, low contrast."""
        flags = []
        if max(self.saturated, self.top) >= OVER_EXPOSED_SHARE:
            flags.append("over-exposed")
        if self.foreground < ALMOST_EMPTY_SHARE:
            flags.append("almost empty")
        if self.empty_positions >= EMPTY_POSITIONS:
            flags.append("large empty regions")
        if self.spread < LOW_CONTRAST_SPREAD:
            flags.append("low contrast")
        return flags

    def detail(self) -> str:
        """The flags with their numbers, for a log line."""
        parts = []
        for flag in self.flags:
            if flag == "over-exposed":
                parts.append(
                    f"over-exposed ({self.saturated:.2%} of voxels at the dtype maximum, "
                    f"{self.top:.2%} at the top value)"
                )
            elif flag == "almost empty":
                parts.append(f"almost empty ({self.foreground:.3%} of voxels stand out of the background noise)")
            elif flag == "large empty regions":
                parts.append(f"large empty regions ({self.empty_positions:.0%} of patch positions almost empty)")
            else:
                parts.append(f"low contrast (the bulk of the intensities spans {self.spread:.1f} of 0..100)")
        return f"{self.name}: " + ", ".join(parts)


def smoothed(volume: np.ndarray) -> np.ndarray:
    """The volume smoothed for counting foreground (float32, :data:`FOREGROUND_SMOOTHING`)."""
    from scipy import ndimage

    return ndimage.gaussian_filter(np.asarray(volume, dtype=np.float32), FOREGROUND_SMOOTHING)


def screen_volume(raw: np.ndarray, name: str, smooth: np.ndarray | None = None) -> VolumeScreen:
    """Screen one volume in its stored dtype (before the 0..100 remap) for over-exposure, foreground and contrast.

    Foreground is counted on the :func:`smoothed` volume (``smooth``, computed when not given), above its
    median plus :data:`FOREGROUND_SIGMAS` robust standard deviations (1.4826 x the median absolute deviation):
    that level is :attr:`VolumeScreen.cut`, in the units of ``raw``.
    """
    low, high = float(raw.min()), float(raw.max())
    top = float(np.count_nonzero(raw == raw.max())) / raw.size
    saturated = 0.0
    if np.issubdtype(raw.dtype, np.integer):
        saturated = float(np.count_nonzero(raw == np.iinfo(raw.dtype).max)) / raw.size
    stride = max(1, math.ceil(raw.size / STATS_VOXELS))
    values = (smoothed(raw) if smooth is None else smooth).reshape(-1)[::stride].astype(np.float64)
    median = float(np.median(values))
    deviation = np.abs(values - median)
    sigma = 1.4826 * float(np.median(deviation)) or 1.2533 * float(deviation.mean())
    cut = median + FOREGROUND_SIGMAS * sigma
    span = high - low
    p_low, p_high = np.percentile(raw.reshape(-1)[::stride], [0.1, 99.9])
    return VolumeScreen(
        name=name,
        saturated=saturated,
        top=top,
        foreground=float(np.mean(values > cut)),
        spread=float((p_high - p_low) / span * 100.0) if span > 0 else 0.0,
        cut=cut,
    )


def usable_corners(foreground: np.ndarray, patch: Sequence[int], min_share: float) -> np.ndarray:
    """Boolean array over patch corners: True where the patch holds at least ``min_share`` foreground voxels.

    ``foreground`` marks the voxels that stand out (the :func:`smoothed` volume above :attr:`VolumeScreen.cut`).
    The foreground count of every patch position comes from running sums along each axis (two int32 arrays of
    the volume's size).
    """
    counts: np.ndarray = np.asarray(foreground, dtype=bool)
    for axis, size in enumerate(patch):
        running = np.cumsum(counts, axis=axis, dtype=np.int32)
        length = running.shape[axis]
        counts = running[_along(axis, size - 1, length)].copy()  # sums over [0, i + size)
        counts[_along(axis, 1, None)] -= running[_along(axis, 0, length - size)]  # minus those over [0, i)
    needed = math.ceil(min_share * math.prod(patch)) if min_share > 0 else 0
    return counts >= needed


def _along(axis: int, start: int, stop: int | None) -> tuple[slice, ...]:
    index = [slice(None)] * 3
    index[axis] = slice(start, stop)
    return tuple(index)


def check_usable(screen: VolumeScreen, usable: np.ndarray, patch: Sequence[int]) -> None:
    """Record the share of almost-empty patch positions; raise ``UserError`` when no position is usable."""
    screen.empty_positions = 1.0 - float(usable.mean())
    if not usable.any():
        size = "x".join(map(str, patch))
        raise UserError(
            f"{screen.name}: unusable for training: no {size} patch holds foreground "
            f"({screen.foreground:.3%} of voxels stand out of the background noise): empty or noise only; "
            "remove it from the images (or pass --no-screen)"
        )


def screen_patches(batch: np.ndarray) -> dict[str, int]:
    """Count over-exposed and low-contrast patches in a batch (B, 1, Z, Y, X) on the 0..100 scale."""
    flat = batch.reshape(len(batch), -1)
    low, high = np.percentile(flat, [1, 99], axis=1)
    return {
        "over_exposed": int(np.count_nonzero((flat >= 100.0).mean(axis=1) >= OVER_EXPOSED_PATCH)),
        "low_contrast": int(np.count_nonzero(high - low < LOW_CONTRAST_PATCH)),
    }


# ------------------------------------------------------------------------------------------------ plateau


@dataclass
class PlateauDetector:
    """Fires once when the SoftNCut loss stops improving; :meth:`rearm` starts watching afresh.

    The loss is smoothed by a moving mean over ``window`` epochs; a plateau is a fall between the last two
    windows below ``tolerance`` (absolute: the loss heads for 0, where a relative change never settles), once
    the loss has left K - 1 (no plateau before the encoder splits the volume). ``window`` 0 turns the check off.
    """

    window: int
    tolerance: float
    num_classes: int
    armed_from: int = 0
    fired_at: int | None = None

    def update(self, ncut: Sequence[float]) -> str | None:
        """Look at the per-epoch SoftNCut losses so far; return the event's detail when the plateau is reached."""
        if self.window <= 0 or self.fired_at is not None:
            return None
        history = [value for value in ncut[self.armed_from :] if math.isfinite(value)]
        if len(history) < 2 * self.window:
            return None
        recent = float(np.mean(history[-self.window :]))
        before = float(np.mean(history[-2 * self.window : -self.window]))
        if recent > self.num_classes - 1 - SPLIT_MARGIN:
            return None
        fall = before - recent
        if fall >= self.tolerance:
            return None
        self.fired_at = len(ncut)
        return (
            f"the SoftNCut loss stopped improving at epoch {len(ncut)}: its {self.window}-epoch mean is {recent:.4f}, "
            f"{-fall:+.4f} on the {self.window} epochs before (tolerance {self.tolerance:g})"
        )

    def rearm(self, epoch: int) -> None:
        """Watch for a new plateau from ``epoch`` (1-based count of epochs done) on."""
        self.armed_from, self.fired_at = epoch, None

    def state_dict(self) -> dict[str, Any]:
        """Plain data for ``last.pt``."""
        return {"armed_from": self.armed_from, "fired_at": self.fired_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.armed_from, self.fired_at = int(state["armed_from"]), state["fired_at"]


# ---------------------------------------------------------------------------------------------- explosion


class ExplosionGuard:
    """Checks every step's losses before its update, and rolls back to the last good snapshot.

    A snapshot (in-memory copies of the model's and the optimizer's state) is taken at the start, every
    :data:`SNAPSHOT_EVERY` good steps (of weights whose loss just passed) and at the end of each epoch once
    the final weights pass an evaluation, so ``last.pt`` always holds a snapshot: the one a resumed run
    starts from.
    """

    def __init__(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, num_classes: int, max_in_a_row: int
    ) -> None:
        self.model, self.optimizer = model, optimizer
        self.num_classes, self.max_in_a_row = num_classes, max_in_a_row
        self.recent_ncut: list[float] = []
        self.recent_rec: list[float] = []
        self.in_a_row = 0
        self.good_since_event = SNAPSHOT_EVERY
        self.good_since_snapshot = 0
        self.snapshot_step = 0
        self.weights_step = 0
        self.step = 0
        self.snapshot_taken = False
        self.reason = ""
        self._snapshot: tuple[dict[str, Any], dict[str, Any]] | None = None

    def explosion(self, ncut: float, rec: float) -> str | None:
        """Why these losses count as an explosion, or None."""
        if not (math.isfinite(ncut) and math.isfinite(rec)):
            return f"the loss is not finite (SoftNCut {ncut:.4g}, reconstruction {rec:.4g})"
        if self.recent_ncut:
            best = min(self.recent_ncut)
            limit = max(best + NCUT_JUMP * (self.num_classes - best), self.num_classes - 1 + ONE_CLASS_MARGIN)
            if ncut > limit:
                return (
                    f"the SoftNCut loss jumped to {ncut:.3f}, toward its bound K={self.num_classes}, "
                    f"from its recent best {best:.3f}"
                )
        if self.recent_rec:
            best = min(self.recent_rec)
            if rec > REC_FACTOR * best:
                return f"the reconstruction loss jumped to {rec:.4g}, {rec / best:.0f}x its recent best {best:.4g}"
        return None

    def accept(self, terms: dict[str, float]) -> bool:
        """Whether a step's losses (computed, not yet applied) are sane; snapshots the weights when due."""
        self.snapshot_taken = False
        reason = self.explosion(terms["ncut"], terms["rec"])
        if reason is not None:
            self.reason = reason
            return False
        self.recent_ncut = [*self.recent_ncut, terms["ncut"]][-RECENT_STEPS:]
        self.recent_rec = [*self.recent_rec, terms["rec"]][-RECENT_STEPS:]
        self.good_since_event += 1
        if self.good_since_event >= SNAPSHOT_EVERY:
            self.in_a_row = 0
        if self._snapshot is None or self.good_since_snapshot >= SNAPSHOT_EVERY:
            self.snapshot()
        self.good_since_snapshot += 1
        self.weights_step = self.step  # the step's update is applied next
        return True

    def snapshot(self) -> None:
        """Keep the current weights and optimizer state as the last good ones."""
        model_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self._snapshot = (model_state, copy.deepcopy(self.optimizer.state_dict()))
        self.snapshot_step, self.good_since_snapshot, self.snapshot_taken = self.weights_step, 0, True

    def rollback(self) -> str:
        """Restore the last good snapshot and halve the learning rate; return what was done."""
        assert self._snapshot is not None, "a snapshot is taken before the first step"
        lr = self.optimizer.param_groups[0]["lr"]
        self.model.load_state_dict(self._snapshot[0])
        self.optimizer.load_state_dict(copy.deepcopy(self._snapshot[1]))  # Adam would update the copy in place
        for group in self.optimizer.param_groups:
            group["lr"] = lr / 2
        discarded = self.good_since_snapshot
        self.in_a_row += 1
        self.good_since_event = self.good_since_snapshot = 0
        self.weights_step = self.snapshot_step
        weights = f"those after step {self.snapshot_step}" if self.snapshot_step else "the initial ones"
        return f"restored the last good weights ({weights}, {discarded} update(s) undone), lr {lr:.3g} -> {lr / 2:.3g}"

    @property
    def given_up(self) -> bool:
        """Whether the last explosions came too many in a row."""
        return self.in_a_row >= self.max_in_a_row

    def state_dict(self) -> dict[str, Any]:
        """Plain data for ``last.pt`` (the snapshot itself is the checkpoint's weights)."""
        keys = ("recent_ncut", "recent_rec", "in_a_row", "good_since_event", "snapshot_step")
        return {key: getattr(self, key) for key in keys}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` and take the snapshot of the restored weights."""
        for key, value in state.items():
            setattr(self, key, value)
        self.weights_step = self.snapshot_step
        self.snapshot()


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


# ------------------------------------------------------------------------------------------ coordination


@dataclass
class PatchTotals:
    """Screening counts of all sampled patches so far."""

    patches: int = 0
    almost_empty: int = 0
    skipped: int = 0
    over_exposed: int = 0
    low_contrast: int = 0

    def add(self, counts: dict[str, int]) -> None:
        """Add one epoch's (or batch's) counts."""
        for key, value in counts.items():
            setattr(self, key, getattr(self, key) + value)


class TrainingChecks:
    """The four checks of one run, as the trainer calls them, with the run's events.

    Args:
        config: the run's configuration (which checks, their settings).
        step: the run's :class:`~wnet_zoo.training.TrainingStep` (model, optimizer, loss, evaluation).
        volumes: the remapped training volumes (their centre patches are segmented at a plateau).
        out: the run directory (``events.csv`` is rewritten at every event).
    """

    def __init__(self, config: TrainConfig, step: TrainingStep, volumes: Sequence[np.ndarray], out: Path) -> None:
        self.config, self.step, self.out = config, step, out
        self.events: list[Event] = []
        self.reported: list[str] = []
        self.patches = PatchTotals()
        self.epoch_patches = PatchTotals()
        self.guard = (
            ExplosionGuard(step.model, step.optimizer, config.num_classes, config.max_explosions)
            if config.explosion_guard
            else None
        )
        self.plateau = PlateauDetector(config.plateau_window, config.plateau_tolerance, config.num_classes)
        self.balance = (
            BalanceCheck(config.ncut_weight, config.rec_weight, config.rec_loss, config.auto_balance)
            if config.balance_check
            else None
        )
        self.centre = _centre_patches(volumes[:EVALUATED_VOLUMES], tuple(config.patch))  # type: ignore[arg-type]

    def start(self, screens: Sequence[VolumeScreen]) -> None:
        """Begin a new run: record the flagged volumes and take the first snapshot."""
        for screen in screens:
            if 0 < screen.empty_positions < EMPTY_POSITIONS:
                LOG.info(
                    "%s: %.1f%% of patch positions almost empty; skipped", screen.name, 100 * screen.empty_positions
                )
            if screen.flags:
                advice = []
                if set(screen.flags) - {"low contrast"}:
                    advice.append("avoid empty, almost-empty and over-exposed images")
                if "low contrast" in screen.flags:
                    advice.append("clip the brightest outliers (e.g. at the 99.9th percentile)")
                self._fire(Event(0, 0, "screening", screen.detail(), "; ".join([*advice, "training goes on"])))
        write_events(self.events, self.out / "events.csv")
        if self.guard is not None:
            self.guard.snapshot()

    def accept(self, step: int) -> Callable[[dict[str, float]], bool] | None:
        """The guard's test of step number ``step``, for :class:`~wnet_zoo.training.TrainingStep`; None when off."""
        if self.guard is None:
            return None
        self.guard.step = step
        return self.guard.accept

    def probe(self, index: int) -> bool:
        """Whether to measure the gradient shares on the epoch's ``index``-th step (the first one)."""
        return self.balance is not None and index == 0

    def screen_batch(self, batch: np.ndarray) -> None:
        """Count the batch's over-exposed and low-contrast patches."""
        if self.config.screen:
            self.epoch_patches.add(screen_patches(batch))

    def exploded(self, epoch: int, step: int) -> None:
        """The step's loss exploded: roll back and halve the learning rate, or give up (``TrainingDiverged``)."""
        assert self.guard is not None
        reason, action = self.guard.reason, self.guard.rollback()
        if self.guard.given_up:
            lr = self.config.lr / 10
            last = self.out / "last.pt"
            kept = f"the last good checkpoint is {last}" if last.is_file() else "no epoch finished"
            self._fire(Event(epoch, step, "explosion", reason, f"stopped: {self.guard.in_a_row} in a row"))
            raise TrainingDiverged(
                f"the loss exploded {self.guard.in_a_row} times in a row; lower the learning rate by 10x "
                f"(--lr {lr:.3g}) and train again ({kept})"
            )
        self._fire(Event(epoch, step, "explosion", reason, action))

    def verify_epoch(self, epoch: int, step: int, batch: np.ndarray) -> bool:
        """Evaluate the epoch's final weights on its last batch; False when they exploded and were rolled back."""
        if self.guard is None:
            return True
        evaluation = self.step.evaluate(torch.from_numpy(batch))
        reason = self.guard.explosion(evaluation["ncut"], evaluation["rec"])
        if reason is not None:
            self.guard.reason = f"{reason} (evaluating the epoch's final weights)"
            self.exploded(epoch, step)
        self.guard.snapshot()  # what last.pt will hold: a resumed run starts from the same snapshot
        return reason is None

    def end_epoch(
        self, epoch: int, step: int, rows: Sequence[dict[str, Any]], grads: tuple[float, float] | None
    ) -> tuple[bool, bool]:
        """After an epoch's row: patch counts, plateau, balance. Returns (stop training, rec weight changed)."""
        if self.config.screen:
            self._screen_epoch(epoch, step)
        if self.balance is not None:
            self.balance.record(epoch, rows[-1], grads)
        plateau = self.plateau.update([row["ncut"] for row in rows])
        if plateau is None:
            return False, False
        findings = self._balance(rows) if self.balance is not None else []
        weight = next((found[2] for found in findings if found[2] is not None), None)
        stop = self.config.stop_at_plateau and weight is None
        if weight is not None:
            self.plateau.rearm(epoch)
            action = "the reconstruction weight changes: watching for a new plateau"
        elif stop:
            action = "stopped training; best.pt holds the lowest total loss"
        else:
            action = "none (--no-stop-at-plateau: training goes on)"
        self._fire(Event(epoch, step, "plateau", plateau, action))
        for detail, advice, _ in findings:
            self._fire(Event(epoch, step, "balance", detail, advice))
        if weight is not None:
            self.balance.rec_weight = self.step.loss.rec_weight = weight  # type: ignore[union-attr]
        return stop, weight is not None

    def _screen_epoch(self, epoch: int, step: int) -> None:
        counts = self.epoch_patches
        self.patches.add(asdict(counts))
        self.epoch_patches = PatchTotals()
        flagged = {
            "almost empty (kept: no usable position found, or --keep-empty-patches)": counts.almost_empty
            - counts.skipped,
            "over-exposed": counts.over_exposed,
            "low contrast": counts.low_contrast,
        }
        for what, count in flagged.items():
            if count and what not in self.reported:
                self.reported.append(what)
                detail = f"{count} of {counts.patches} sampled patches {what}"
                self._fire(Event(epoch, step, "screening", detail, "trained on; counted from now on (wnet-zoo report)"))

    def add_sampler_counts(self, counts: dict[str, int]) -> None:
        """Add the sampler's numbers of the epoch (patches drawn, almost empty, skipped)."""
        if self.config.screen:
            self.epoch_patches.add(counts)

    def _balance(self, rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, float | None]]:
        """Segment the centre patches and judge the balance (see :meth:`BalanceCheck.judge`)."""
        assert self.balance is not None
        centre = torch.from_numpy(self.centre)
        evaluation = self.step.evaluate(centre)
        stats = segmentation_stats(
            evaluation["probabilities"].numpy(), evaluation["reconstruction"], centre, self.config.rec_loss
        )
        return self.balance.judge(stats, rows, self.config.plateau_window)

    def _fire(self, event: Event) -> None:
        self.events.append(event)
        LOG.warning("%s", event.line())
        write_events(self.events, self.out / "events.csv")

    def state_dict(self) -> dict[str, Any]:
        """Plain data for ``last.pt``: events, patch counts and each check's state."""
        return {
            "events": [event.as_dict() for event in self.events],
            "reported": self.reported,
            "patches": asdict(self.patches),
            "plateau": self.plateau.state_dict(),
            "guard": None if self.guard is None else self.guard.state_dict(),
            "balance": None if self.balance is None else self.balance.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue from :meth:`state_dict` (None: a checkpoint from before the checks) and rewrite events.csv."""
        if state is not None:
            self.events = [Event(**event) for event in state["events"]]
            self.reported = list(state["reported"])
            self.patches = PatchTotals(**state["patches"])
            self.plateau.load_state_dict(state["plateau"])
            if self.balance is not None and state.get("balance"):
                self.balance.load_state_dict(state["balance"])
                self.step.loss.rec_weight = self.balance.rec_weight
        if self.guard is not None:
            self.guard.load_state_dict((state or {}).get("guard") or {})
        write_events(self.events, self.out / "events.csv")


def _centre_patches(volumes: Sequence[np.ndarray], patch: tuple[int, int, int]) -> np.ndarray:
    """The patch-sized centre of each volume, as a batch (B, 1, Z, Y, X)."""
    centres = []
    for volume in volumes:
        start = [(size - p) // 2 for size, p in zip(volume.shape, patch, strict=True)]
        centres.append(volume[tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))])
    return np.ascontiguousarray(np.stack(centres)[:, None], dtype=np.float32)

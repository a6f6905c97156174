"""The screening check: over-exposed, empty and low-contrast volumes and patches, and usable patch positions.

The volumes are screened once, as they are read (:func:`screen_volume`, :func:`check_usable`); the
:class:`ScreeningCheck` records the flagged ones when the run begins and counts the sampled patches every epoch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from wnet_zoo.errors import UserError, command, setting
from wnet_zoo.training.checks.base import NOTHING, Decision, EpochEnd, RunStart, StepLosses
from wnet_zoo.training.events import Event, numbers
from wnet_zoo.training.input_choices import noise_level, otsu_split

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
STRUCTURE_SEPARATION = 5.0
"""Where nuclei fill much of the volume, its median and spread are the nuclei's own and nothing stands out of
them: such a volume holds foreground when a two-class (Otsu) split of its smoothed intensities puts the class
means this many times the smoothed noise apart. Smoothed noise alone gives about 1.7; nuclei in tissue 20 or more."""
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

LOG = logging.getLogger("wnet_zoo")


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
    median plus :data:`FOREGROUND_SIGMAS` robust standard deviations (1.4826 x the median absolute deviation).
    Where that finds almost nothing, the volume may be packed tissue, whose median is the nuclei's: then the
    level of a two-class split is used, when the split stands out of the noise (:func:`structure_cut`). The
    level is :attr:`VolumeScreen.cut`, in the units of ``raw``.
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
    foreground = float(np.mean(values > cut))
    if foreground < ALMOST_EMPTY_SHARE:
        packed = structure_cut(values, noise_level(raw) * _SMOOTHED_NOISE)
        if packed is not None:
            cut, foreground = packed, float(np.mean(values > packed))
    span = high - low
    p_low, p_high = np.percentile(raw.reshape(-1)[::stride], [0.1, 99.9])
    return VolumeScreen(
        name=name,
        saturated=saturated,
        top=top,
        foreground=foreground,
        spread=float((p_high - p_low) / span * 100.0) if span > 0 else 0.0,
        cut=cut,
    )


_SMOOTHED_NOISE = (2 * math.sqrt(math.pi) * FOREGROUND_SMOOTHING) ** -1.5
"""The share of white noise's standard deviation left after the :func:`smoothed` volume's 3-D Gaussian."""


def structure_cut(values: np.ndarray, noise: float) -> float | None:
    """The level of a two-class (Otsu) split of the smoothed intensities ``values``, when the two classes'
    means stand :data:`STRUCTURE_SEPARATION` times the smoothed ``noise`` apart; None for noise alone or a
    constant volume."""
    split = otsu_split(values)
    if split is None:
        return None
    level, separation = split
    return level if separation >= STRUCTURE_SEPARATION * noise else None


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
            f"remove it from the images (or pass {setting('screen', False)})"
        )


def screen_patches(batch: np.ndarray) -> dict[str, int]:
    """Count over-exposed and low-contrast patches in a batch (B, 1, Z, Y, X) on the 0..100 scale."""
    flat = batch.reshape(len(batch), -1)
    low, high = np.percentile(flat, [1, 99], axis=1)
    return {
        "over_exposed": int(np.count_nonzero((flat >= 100.0).mean(axis=1) >= OVER_EXPOSED_PATCH)),
        "low_contrast": int(np.count_nonzero(high - low < LOW_CONTRAST_PATCH)),
    }


# ------------------------------------------------------------------------------------------------- check


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


class ScreeningCheck:
    """Records the flagged volumes when a run begins, and the first epoch whose sampled patches show each
    problem (almost empty yet kept, over-exposed, low contrast); counts all sampled patches."""

    name = "screening"
    needs: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self.reported: list[str] = []
        self.patches = PatchTotals()
        self.epoch_patches = PatchTotals()

    def start(self, run: RunStart) -> Decision:
        """An event for each flagged volume; a log line for each with some almost-empty patch positions."""
        events = []
        for screen in run.screens:
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
                values = numbers(
                    saturated=screen.saturated,
                    top=screen.top,
                    foreground=screen.foreground,
                    spread=screen.spread,
                    empty_positions=screen.empty_positions,
                )
                action = "; ".join([*advice, "training goes on"])
                events.append(Event(0, 0, "screening.volume", screen.detail(), action, values))
        return Decision(events=tuple(events))

    def accept(self, step: StepLosses) -> Decision:
        """Count the batch's over-exposed and low-contrast patches."""
        self.epoch_patches.add(screen_patches(step.batch))
        return NOTHING

    def end_epoch(self, epoch: EpochEnd) -> Decision:
        """Add the epoch's counts to the totals; an event for each problem the patches show the first time."""
        counts = self.epoch_patches
        counts.add(epoch.sampled)
        self.patches.add(asdict(counts))
        self.epoch_patches = PatchTotals()
        kept = f" (kept: no usable position found, or {setting('skip_empty_patches', False)})"
        flagged = (  # what, its key in the event's values, why, how many
            ("almost empty", "almost_empty", kept, counts.almost_empty - counts.skipped),
            ("over-exposed", "over_exposed", "", counts.over_exposed),
            ("low contrast", "low_contrast", "", counts.low_contrast),
        )
        events = []
        for what, key, why, count in flagged:
            if count and what not in self.reported:
                self.reported.append(what)
                detail = f"{count} of {counts.patches} sampled patches {what}{why}"
                action = f"trained on; counted from now on ({command('run_report')})"
                values = {"sampled": float(counts.patches), key: float(count)}
                events.append(Event(epoch.epoch, epoch.step, "screening.patches", detail, action, values))
        return Decision(events=tuple(events))

    def state_dict(self) -> dict[str, Any]:
        """Plain data for ``last.pt``: the totals and the problems reported."""
        return {"reported": self.reported, "patches": asdict(self.patches)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.reported = [what.partition(" (")[0] for what in state["reported"]]  # older ones: with the reason
        self.patches = PatchTotals(**state["patches"])

"""Training patches: their size, and the sampler that draws them (with flips) from usable positions."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from wnet_zoo.errors import UserError, setting
from wnet_zoo.model.architecture import SPATIAL_MULTIPLE

DEFAULT_PATCH = 64


def resolve_patch(patch: tuple[int, int, int] | None, shapes: Sequence[tuple[int, ...]]) -> tuple[int, int, int]:
    """The training patch: the user's (checked) or 64 per axis clipped to what the smallest volume allows."""
    smallest = tuple(min(shape[axis] for shape in shapes) for axis in range(3))
    if patch is None:
        fitted = tuple(min(DEFAULT_PATCH, size // SPATIAL_MULTIPLE * SPATIAL_MULTIPLE) for size in smallest)
        if min(fitted) == 0:
            raise UserError(
                f"a volume of shape {smallest} is smaller than {SPATIAL_MULTIPLE} voxels along an axis; "
                f"WNet3D needs at least {SPATIAL_MULTIPLE} per axis"
            )
        return fitted  # type: ignore[return-value]
    if any(p % SPATIAL_MULTIPLE for p in patch):
        raise UserError(
            f"{setting('patch', patch)}: each size must be a multiple of {SPATIAL_MULTIPLE}, e.g. 64 or 32,64,64"
        )
    if any(p > s for p, s in zip(patch, smallest, strict=True)):
        raise UserError(
            f"{setting('patch', patch)} is larger than the smallest volume {_fmt(smallest)}; choose a smaller patch"
        )
    return patch


def _fmt(values: Sequence[int]) -> str:
    return ",".join(str(v) for v in values)


_REPLACEMENT_TRIES = 200
"""Random draws for a usable patch position before picking among the full list of them."""
_JITTER_STREAM = 1  # the contrast jitter's draws: a stream apart from the replacement positions'
_JITTER_MAX_GREY = 50.0


@dataclass
class PatchSampler:
    """Seeded random patches with flips and 90° rotations, the same sequence for the same seed and epoch.

    Each epoch draws ``samples_per_epoch`` patches from every volume (volumes already remapped) and yields
    them shuffled in batches of ``batch`` as float32 arrays (B, 1, Z, Y, X). The random stream of epoch
    ``e`` depends only on ``(seed, e)``, so a resumed run samples exactly what an uninterrupted one does.

    ``usable`` (one boolean array per volume, indexed by patch corner; see
    :func:`wnet_zoo.training.checks.screening.usable_corners`) marks the patch positions that hold foreground. A
    drawn position that is not usable counts as almost empty and, with ``skip_empty``, is replaced by a usable one drawn
    from a stream of its own (seeded by seed, epoch and the patch's index), so every other patch, its flips
    and its rotation stay those of the plain sequence. ``counts`` holds the last epoch's numbers:
    ``patches``, ``almost_empty`` (drawn) and ``skipped`` (replaced).

    ``contrast_jitter`` J > 0 blends half the patches with a uniform grey, ``a * x + (1 - a) * c``, with ``a``
    log-uniform in [1 - J, 1] and ``c`` uniform in [0, 50] (the 0..100 scale), drawn from a stream of the patch's
    own: the network meets nuclei of a lower contrast over a brighter background than its volumes show (a smoothed
    noisy stack, haze) and learns to separate them by structure rather than by absolute intensity, while the
    other half keep the contrast it is fine-tuned on.
    """

    volumes: Sequence[np.ndarray]
    patch: tuple[int, int, int]
    samples_per_epoch: int
    batch: int
    seed: int
    usable: Sequence[np.ndarray] | None = None
    skip_empty: bool = True
    contrast_jitter: float = 0.0
    counts: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def steps_per_epoch(self) -> int:
        """Number of batches in one epoch."""
        return -(-len(self.volumes) * self.samples_per_epoch // self.batch)

    def epoch(self, epoch: int) -> Iterator[np.ndarray]:
        """The batches of one (0-based) epoch."""
        rng = np.random.default_rng([self.seed, epoch])
        picks = [v for v in range(len(self.volumes)) for _ in range(self.samples_per_epoch)]
        self.counts = {"patches": len(picks), "almost_empty": 0, "skipped": 0}
        patches = [self._sample(v, rng, (epoch, index)) for index, v in enumerate(picks)]
        order = rng.permutation(len(patches))
        for start in range(0, len(order), self.batch):
            chosen = [patches[i] for i in order[start : start + self.batch]]
            yield np.stack(chosen)[:, None]

    def _sample(self, index: int, rng: np.random.Generator, key: tuple[int, int]) -> np.ndarray:
        volume = self.volumes[index]
        corner = tuple(int(rng.integers(0, size - p + 1)) for size, p in zip(volume.shape, self.patch, strict=True))
        if self.usable is not None and not self.usable[index][corner]:
            self.counts["almost_empty"] += 1
            replacement = self._usable_corner(index, key) if self.skip_empty else None
            if replacement is not None:
                corner = replacement
                self.counts["skipped"] += 1
        region = volume[tuple(slice(c, c + p) for c, p in zip(corner, self.patch, strict=True))]
        for axis in range(3):
            if rng.random() < 0.5:
                region = np.flip(region, axis)
        turns = int(rng.integers(4))
        if self.patch[1] != self.patch[2]:
            turns = 2 * (turns % 2)  # a quarter turn would change the patch shape: half turns only
        region = np.rot90(region, turns, axes=(1, 2))
        region = np.ascontiguousarray(region, dtype=np.float32)
        if self.contrast_jitter > 0:
            region = self._jitter(region, key)
        return region

    def _jitter(self, region: np.ndarray, key: tuple[int, int]) -> np.ndarray:
        draw = np.random.default_rng([self.seed, *key, _JITTER_STREAM])
        if draw.random() < 0.5:
            return region
        contrast = float(np.exp(draw.uniform(np.log1p(-self.contrast_jitter), 0.0)))
        grey = draw.uniform(0.0, _JITTER_MAX_GREY)
        return (contrast * region + (1.0 - contrast) * grey).astype(np.float32)

    def _usable_corner(self, index: int, key: tuple[int, int]) -> tuple[int, ...] | None:
        usable = self.usable[index]  # type: ignore[index]
        side = np.random.default_rng([self.seed, *key])
        for _ in range(_REPLACEMENT_TRIES):
            corner = tuple(int(side.integers(size)) for size in usable.shape)
            if usable[corner]:
                return corner
        found = np.flatnonzero(usable)  # few usable positions: pick among all of them
        if found.size == 0:
            return None
        return tuple(int(i) for i in np.unravel_index(found[side.integers(found.size)], usable.shape))

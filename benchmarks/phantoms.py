"""Labelled 3-D nuclei phantoms that look like light-sheet stacks, one named setting per difficulty.

    python benchmarks/phantoms.py OUT_DIR [--settings sparse dense ...] [--seed N]

writes ``OUT_DIR/NAME.tif`` (the image, uint16 camera counts, ImageJ TIFF with its voxel size in µm) and
``OUT_DIR/NAME_labels.tif`` (the ground truth, uint16) for each setting. From Python::

    image, labels = make_phantom("touching")
    voxel_size = SETTINGS["touching"].voxel_size

How a phantom is made (all lengths in µm, converted with the setting's voxel size):

1. Nuclei are ellipsoids: a size ``R`` drawn in ``radius``, semi-axes ``R`` times factors in
   ``[1 / elongation, 1]``, a random orientation. Centres are drawn one after another, uniformly or around
   ``clusters`` random cluster centres, and a centre is kept when it lies at least ``contact * (R_i + R_j)``
   from every kept centre: below 1, neighbours touch and flatten against each other.
2. Labels: each voxel belongs to the ellipsoid in whose normalised coordinates it lies deepest, so touching
   nuclei meet at a shared face. Fragments under ``min_voxels`` (nuclei cut by the volume's border, or
   almost covered by neighbours) become background, and the image is drawn from the final labels only.
3. Image: every nucleus gets a brightness in photons (log-normal around ``brightness``; ``dim_fraction`` of
   them times ``dim_factor``; ``bright_fraction`` times ``bright_factor``), a smooth chromatin-like texture,
   an illumination field (the light sheet fading along x by ``fade_x``, and a beam profile across y),
   a constant background, blur by a Gaussian point spread function (``psf_sigma``), Poisson shot noise,
   camera gain and offset, Gaussian read noise, and clipping at the camera's ``camera_max``; a fraction
   ``hot_voxels`` of voxels reads ``camera_max``.

The settings (:data:`SETTINGS`; share of nuclei touching another in brackets):

- ``sparse``: isolated ellipsoids of radius 3 to 6.5 µm, elongated up to 1.8x, any orientation, high SNR [0%].
- ``touching``: seven clusters of nuclei pressed together, flattened where they meet [80%].
- ``anisotropic``: 2 µm z voxels (1 µm in y and x) and a z blur 3x the lateral one, as light sheets give [10%].
- ``low_snr``: a few photons per nucleus voxel in shot and read noise; the nuclei stand about 1.3 noise
  standard deviations above the background [5%].
- ``uneven``: the light sheet fades to 30% across x, a beam profile dims the y borders by half, and nucleus
  brightness varies widely (log-normal, sigma 0.6) [5%].
- ``dim_bright``: clusters in which half the nuclei are 8x dimmer than their neighbours [50%].
- ``saturated``: a 12-bit camera; 15% of the nuclei 30x brighter, clipped at 4095, and over-exposed voxels
  scattered through the volume [0%].
- ``dense``: about 1400 nuclei filling 40% of the volume [95%].
- ``packed``: tissue-like packing, about 40% of the volume nuclei touching in 3-D, 1.6x brighter than the haze
  between them [95%].
- ``low_contrast``: nuclei 1.3x the background, out-of-focus haze between them.
- ``textured``: strong chromatin texture, bright chromatin spots and two dim nucleoli per nucleus.
- ``confocal_offset``: 12-bit counts with a camera offset of 400 and an uneven autofluorescent background.
- ``autofluorescence``: moderately packed nuclei on an autofluorescent background whose large-scale variation is as
  large as the nuclei's contrast (the development twin of ``confocal_offset``, which is held out).
- ``tissue``: all of the above at once, as float32.
- ``organoid``: packed, textured, low-contrast nuclei in haze on an uneven background, in camera counts: the
  development twin of ``tissue`` (other sizes, texture and seed), so that what tissue lacks can be tuned without it.

Held out (:data:`HELD_OUT`): ``dense``, ``confocal_offset`` and ``tissue`` are never used to choose defaults,
so they check that the defaults generalise.

Every setting is seeded: the same name and seed give identical arrays. The volumes hold 0.2 to 1 M voxels and
build in well under a second each.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation


@dataclass(frozen=True)
class PhantomSettings:
    """How one phantom setting is drawn (lengths in µm; axes z, y, x).

    Attributes:
        description: what the setting tests, in one sentence.
        shape: volume shape in voxels.
        voxel_size: voxel size in µm.
        count: nuclei to place (fewer when the volume is full before that).
        radius: range of the nuclei's size R (geometric mean of the semi-axes).
        elongation: largest ratio between the longest and the shortest semi-axis.
        contact: smallest centre distance, as a fraction of the sum of two sizes (below 1: touching).
        clusters: number of cluster centres the nuclei gather around (0: uniform).
        cluster_spread: standard deviation of the nuclei's offsets from their cluster centre.
        brightness: median nucleus signal in photons per voxel (before blur).
        brightness_spread: standard deviation of the log-brightness across nuclei.
        dim_fraction: fraction of nuclei made dim.
        dim_factor: brightness factor of the dim nuclei.
        bright_fraction: fraction of nuclei made very bright (over-exposed when they exceed ``camera_max``).
        bright_factor: brightness factor of those.
        texture: relative amplitude of the smooth texture inside nuclei.
        background: background photons per voxel.
        fade_x: illumination falls by ``exp(-fade_x)`` from the first to the last x.
        beam_y: illumination falls by this fraction at the y borders (a Gaussian beam across y).
        psf_sigma: standard deviation of the Gaussian point spread function.
        gain: camera counts per photon.
        offset: camera counts added to every voxel.
        read_noise: standard deviation of the camera's Gaussian read noise, in counts.
        camera_max: largest count the camera records (4095 for a 12-bit camera, 65535 for 16 bits).
        hot_voxels: fraction of voxels that read ``camera_max`` (over-exposed speckles).
        min_voxels: smallest labelled fragment kept.
        nucleoli: dim spots per nucleus (nucleoli, radius about 1 µm).
        nucleolus_factor: brightness factor inside a nucleolus.
        chromatin: relative amplitude of fine bright chromatin spots inside nuclei (0: none).
        haze: out-of-focus light: this fraction of the signal added again, blurred by ``haze_sigma``.
        haze_sigma: standard deviation of the haze's blur.
        background_structure: relative amplitude of a smooth, uneven background (autofluorescence,
            cytoplasm), of feature size ``background_scale``.
        background_scale: standard deviation of the background structure's smoothing.
        floats: the image as float32 (photon counts scaled by the gain, offset removed) instead of camera counts.
        seed: default random seed.
    """

    description: str
    shape: tuple[int, int, int]
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0)
    count: int = 40
    radius: tuple[float, float] = (3.5, 6.0)
    elongation: float = 1.5
    contact: float = 1.15
    clusters: int = 0
    cluster_spread: float = 8.0
    brightness: float = 120.0
    brightness_spread: float = 0.25
    dim_fraction: float = 0.0
    dim_factor: float = 1.0
    bright_fraction: float = 0.0
    bright_factor: float = 1.0
    texture: float = 0.15
    background: float = 15.0
    fade_x: float = 0.0
    beam_y: float = 0.0
    psf_sigma: tuple[float, float, float] = (0.9, 0.6, 0.6)
    gain: float = 2.0
    offset: float = 100.0
    read_noise: float = 2.0
    camera_max: int = 65535
    hot_voxels: float = 0.0
    min_voxels: int = 30
    nucleoli: int = 0
    nucleolus_factor: float = 0.5
    chromatin: float = 0.0
    haze: float = 0.0
    haze_sigma: float = 6.0
    background_structure: float = 0.0
    background_scale: float = 8.0
    floats: bool = False
    seed: int = 0


SETTINGS: dict[str, PhantomSettings] = {
    "sparse": PhantomSettings(
        "Isolated ellipsoids of varied radii and orientation, high SNR.",
        shape=(48, 96, 96),
        count=30,
        radius=(3.0, 6.5),
        elongation=1.8,
        contact=1.4,
        seed=1,
    ),
    "touching": PhantomSettings(
        "Clusters of touching nuclei flattened against each other.",
        shape=(48, 112, 112),
        count=130,
        contact=0.85,
        clusters=7,
        cluster_spread=7.0,
        brightness=80.0,
        seed=2,
    ),
    "anisotropic": PhantomSettings(
        "z voxels 2 µm against 1 µm in y and x, and a z blur 3x the lateral one, as in light-sheet stacks.",
        shape=(32, 128, 128),
        voxel_size=(2.0, 1.0, 1.0),
        count=150,
        contact=1.0,
        psf_sigma=(1.8, 0.6, 0.6),
        seed=3,
    ),
    "low_snr": PhantomSettings(
        "Dim nuclei in shot and read noise: nucleus minus background about 1.3x the background's noise.",
        shape=(48, 96, 96),
        count=70,
        contact=1.1,
        brightness=5.0,
        background=5.0,
        read_noise=4.0,
        seed=4,
    ),
    "uneven": PhantomSettings(
        "A light sheet fading to 30% across x, a beam profile across y, and widely varied nucleus brightness.",
        shape=(48, 128, 128),
        count=150,
        contact=1.05,
        brightness_spread=0.6,
        fade_x=1.2,
        beam_y=0.5,
        seed=5,
    ),
    "dim_bright": PhantomSettings(
        "Half the nuclei 8x dimmer than their bright neighbours, in clusters.",
        shape=(48, 112, 112),
        count=120,
        contact=0.95,
        clusters=8,
        cluster_spread=9.0,
        brightness=250.0,
        dim_fraction=0.5,
        dim_factor=0.125,
        seed=6,
    ),
    "saturated": PhantomSettings(
        "A 12-bit camera: 15% of the nuclei clipped at its maximum, and over-exposed speckles.",
        shape=(48, 96, 96),
        count=70,
        contact=1.1,
        bright_fraction=0.15,
        bright_factor=30.0,
        camera_max=4095,
        hot_voxels=2e-4,
        seed=7,
    ),
    "dense": PhantomSettings(
        "Densely packed nuclei of varied size, most touching others (about 40% of the volume is nuclei).",
        shape=(56, 128, 128),
        count=1400,
        radius=(3.0, 5.5),
        contact=0.8,
        brightness_spread=0.35,
        seed=8,
    ),
}
SETTINGS.update(
    {
        "packed": PhantomSettings(
            "Packed tissue: nuclei touching in 3-D fill about 40% of the volume, 1.6x the haze between them.",
            shape=(48, 96, 96),
            count=900,
            radius=(3.0, 5.0),
            contact=0.78,
            brightness=60.0,
            background=40.0,
            haze=0.3,
            seed=9,
        ),
        "low_contrast": PhantomSettings(
            "Nuclei 1.3x the background, with out-of-focus haze between them.",
            shape=(48, 96, 96),
            count=120,
            contact=1.0,
            brightness=40.0,
            background=100.0,
            haze=0.4,
            seed=10,
        ),
        "textured": PhantomSettings(
            "Nuclei with strong chromatin texture, bright chromatin spots and dim nucleoli.",
            shape=(48, 96, 96),
            count=100,
            contact=1.0,
            texture=0.35,
            chromatin=0.6,
            nucleoli=2,
            nucleolus_factor=0.35,
            seed=11,
        ),
        "confocal_offset": PhantomSettings(
            "A 12-bit confocal: a camera offset of 400 counts, an uneven autofluorescent background.",
            shape=(40, 112, 112),
            count=140,
            contact=1.0,
            brightness=60.0,
            background=30.0,
            background_structure=0.6,
            gain=4.0,
            offset=400.0,
            read_noise=6.0,
            camera_max=4095,
            seed=12,
        ),
        "autofluorescence": PhantomSettings(
            "Nuclei on an autofluorescent background that varies as much as they stand above it.",
            shape=(48, 96, 96),
            count=160,
            contact=1.0,
            brightness=80.0,
            background=40.0,
            background_structure=0.5,
            haze=0.15,
            seed=14,
        ),
        "tissue": PhantomSettings(
            "All of the above at once, in float32: packed, low-contrast, textured nuclei on an uneven, hazy "
            "background.",
            shape=(48, 104, 104),
            count=1000,
            radius=(3.0, 5.0),
            contact=0.8,
            brightness=45.0,
            brightness_spread=0.3,
            background=80.0,
            texture=0.3,
            chromatin=0.4,
            nucleoli=1,
            nucleolus_factor=0.5,
            haze=0.35,
            background_structure=0.4,
            floats=True,
            seed=13,
        ),
        "organoid": PhantomSettings(
            "Packed, textured, low-contrast nuclei in haze on an uneven background, in camera counts (the "
            "development twin of tissue, which is held out).",
            shape=(48, 96, 96),
            count=900,
            radius=(3.0, 5.5),
            contact=0.8,
            brightness=50.0,
            brightness_spread=0.3,
            background=70.0,
            texture=0.25,
            chromatin=0.5,
            nucleoli=2,
            nucleolus_factor=0.4,
            haze=0.3,
            background_structure=0.45,
            seed=15,
        ),
    }
)
HELD_OUT = ("dense", "confocal_offset", "tissue")
"""Settings never used to choose defaults: the check that they generalise (decided before any tuning on them)."""


def make_phantom(name: str, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The phantom of setting ``name``: (image, labels), both (z, y, x) uint16.

    Args:
        name: a key of :data:`SETTINGS`.
        seed: random seed (default: the setting's own).

    Returns:
        The image in camera counts and the ground-truth labels (0 background, 1..N nuclei).
    """
    if name not in SETTINGS:
        raise KeyError(f"unknown phantom setting {name!r}; choose one of {', '.join(SETTINGS)}")
    settings = SETTINGS[name]
    rng = np.random.default_rng(settings.seed if seed is None else seed)
    centres, axes, rotations = _place_nuclei(settings, rng)
    labels = _rasterise(settings, centres, axes, rotations)
    return _image(settings, labels, rng), labels


def _place_nuclei(settings: PhantomSettings, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres (N, 3), semi-axes (N, 3) and rotations (N, 3, 3) of nuclei placed without too much overlap."""
    extent = np.array(settings.shape) * np.array(settings.voxel_size)
    cluster_centres = rng.uniform(0.15, 0.85, size=(settings.clusters, 3)) * extent
    centres = np.empty((settings.count, 3))
    sizes = np.empty(settings.count)
    kept = 0
    for _ in range(settings.count * 60):
        if kept == settings.count:
            break
        size = rng.uniform(*settings.radius)
        if settings.clusters:
            centre = cluster_centres[rng.integers(settings.clusters)] + rng.normal(0, settings.cluster_spread, 3)
        else:
            centre = rng.uniform(0, 1, 3) * extent
        if np.any(centre < 0) or np.any(centre > extent):
            continue
        distance = np.linalg.norm(centres[:kept] - centre, axis=1)
        if np.all(distance >= settings.contact * (sizes[:kept] + size)):
            centres[kept], sizes[kept] = centre, size
            kept += 1
    factors = rng.uniform(1 / settings.elongation, 1, size=(kept, 3))
    factors /= np.cbrt(factors.prod(axis=1, keepdims=True))  # geometric mean 1: the size stays R
    rotations = Rotation.random(kept, random_state=rng).as_matrix().reshape(kept, 3, 3)
    return centres[:kept], factors * sizes[:kept, None], rotations


def _rasterise(settings: PhantomSettings, centres: np.ndarray, axes: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """Labels 1..N of the ellipsoids; a voxel inside several belongs to the one it is deepest in."""
    spacing = np.array(settings.voxel_size)
    shape = np.array(settings.shape)
    labels = np.zeros(settings.shape, dtype=np.uint16)
    depth = np.full(settings.shape, np.inf, dtype=np.float32)  # (normalised radius)^2 of the owning ellipsoid
    for label, (centre, semi_axes, rotation) in enumerate(zip(centres, axes, rotations, strict=True), start=1):
        low = np.maximum(np.floor((centre - semi_axes.max()) / spacing).astype(int), 0)
        high = np.minimum(np.ceil((centre + semi_axes.max()) / spacing).astype(int) + 1, shape)
        box = tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True))
        grid = np.meshgrid(
            *(np.arange(lo, hi) * s for lo, hi, s in zip(low, high, spacing, strict=True)), indexing="ij"
        )
        offsets = np.stack(grid, axis=-1) - centre
        local = offsets @ rotation  # coordinates along the ellipsoid's own axes
        radius2 = ((local / semi_axes) ** 2).sum(axis=-1)
        owned = (radius2 <= 1) & (radius2 < depth[box])
        depth[box][owned] = radius2[owned]
        labels[box][owned] = label
    sizes = np.bincount(labels.ravel(), minlength=len(centres) + 1)
    keep = sizes >= settings.min_voxels
    keep[0] = False
    lookup = np.zeros(sizes.size, dtype=np.uint16)
    lookup[keep] = np.arange(1, int(keep.sum()) + 1)
    return lookup[labels]


def _image(settings: PhantomSettings, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera counts (uint16) of the labelled nuclei under the setting's optics, illumination and noise."""
    spacing = np.array(settings.voxel_size)
    count = int(labels.max())
    brightness = settings.brightness * rng.lognormal(0.0, settings.brightness_spread, count + 1)
    order = rng.permutation(np.arange(1, count + 1))
    n_dim, n_bright = round(settings.dim_fraction * count), round(settings.bright_fraction * count)
    brightness[order[:n_dim]] *= settings.dim_factor
    brightness[order[n_dim : n_dim + n_bright]] *= settings.bright_factor
    brightness[0] = 0.0
    texture = ndimage.gaussian_filter(rng.standard_normal(settings.shape).astype(np.float32), 1.0 / spacing)
    texture *= settings.texture / max(float(texture.std()), 1e-12)
    signal = brightness.astype(np.float32)[labels] * np.clip(1 + texture, 0.2, None)
    if settings.chromatin:
        spots = ndimage.gaussian_filter(rng.standard_normal(settings.shape).astype(np.float32), 0.5 / spacing)
        spots = np.maximum(spots - 2 * float(spots.std()), 0)
        signal *= 1 + settings.chromatin * spots / max(float(spots.max()), 1e-12) * 4
    if settings.nucleoli:
        signal *= _nucleoli(settings, labels, rng)
    y = np.linspace(-1, 1, settings.shape[1], dtype=np.float32)[:, None]
    x = np.linspace(0, 1, settings.shape[2], dtype=np.float32)[None, :]
    illumination = np.exp(-settings.fade_x * x) * (1 - settings.beam_y * (1 - np.exp(-2 * y**2)) / (1 - np.exp(-2)))
    lit = signal * illumination
    if settings.haze:
        lit = lit + settings.haze * ndimage.gaussian_filter(lit, settings.haze_sigma / spacing)
    background = np.float32(settings.background)
    if settings.background_structure:
        field = ndimage.gaussian_filter(rng.standard_normal(settings.shape), settings.background_scale / spacing)
        field *= settings.background_structure / max(float(field.std()), 1e-12)
        background = settings.background * np.clip(1 + field, 0.1, None).astype(np.float32)
    photons = ndimage.gaussian_filter(lit + background, np.array(settings.psf_sigma) / spacing)
    counts = rng.poisson(np.maximum(photons, 0)) * settings.gain + settings.offset
    counts += rng.normal(0.0, settings.read_noise, settings.shape)
    hot = rng.random(settings.shape) < settings.hot_voxels
    counts[hot] = settings.camera_max
    if settings.floats:
        return ((np.clip(counts, 0, settings.camera_max) - settings.offset) / settings.gain).astype(np.float32)
    return np.clip(np.rint(counts), 0, settings.camera_max).astype(np.uint16)


def _nucleoli(settings: PhantomSettings, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A brightness factor: ``nucleolus_factor`` in spots of about 1 µm radius, ``nucleoli`` per nucleus."""
    spacing = np.array(settings.voxel_size)
    factor = np.ones(settings.shape, dtype=np.float32)
    owners = labels.ravel()
    inside = np.flatnonzero(owners)
    order = inside[np.argsort(owners[inside], kind="stable")]
    starts = np.searchsorted(owners[order], np.arange(1, int(labels.max()) + 2))
    for label in range(int(labels.max())):
        voxels = order[starts[label] : starts[label + 1]]
        for flat in rng.choice(voxels, size=min(settings.nucleoli, voxels.size), replace=False):
            centre = np.unravel_index(flat, settings.shape)
            box = tuple(slice(max(c - 3, 0), min(c + 4, n)) for c, n in zip(centre, settings.shape, strict=True))
            z, y, x = (np.arange(b.start, b.stop) for b in box)
            distance2 = (
                ((z[:, None, None] - centre[0]) * spacing[0]) ** 2
                + ((y[None, :, None] - centre[1]) * spacing[1]) ** 2
                + ((x[None, None, :] - centre[2]) * spacing[2]) ** 2
            )
            factor[box][(distance2 <= 1.0) & (labels[box] == label + 1)] = settings.nucleolus_factor
    return factor


def write_phantom(name: str, out: Path, seed: int | None = None) -> tuple[Path, Path]:
    """Write setting ``name`` as ``out/NAME.tif`` (ImageJ TIFF with its voxel size) and ``out/NAME_labels.tif``."""
    import tifffile

    image, labels = make_phantom(name, seed)
    z, y, x = SETTINGS[name].voxel_size
    out.mkdir(parents=True, exist_ok=True)
    paths = out / f"{name}.tif", out / f"{name}_labels.tif"
    for path, array in zip(paths, (image, labels), strict=True):
        metadata = {"spacing": z, "unit": "um", "axes": "ZYX"}
        tifffile.imwrite(path, array, imagej=True, resolution=(1 / x, 1 / y), metadata=metadata)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for the TIFF pairs")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: each setting's own)")
    args = parser.parse_args(argv)
    for name in args.settings:
        start = time.perf_counter()
        image_path, labels_path = write_phantom(name, args.out, args.seed)
        held_out = "  (held out of tuning)" if name in HELD_OUT else ""
        print(f"{name:12s} {image_path} {labels_path} {time.perf_counter() - start:.1f} s{held_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

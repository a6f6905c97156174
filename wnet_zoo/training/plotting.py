"""Pictures a user looks at: the live loss curves of a training run and a preview of a segmentation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the headless backend

from wnet_zoo.io.atomic import atomic_path


def plot_losses(rows: Sequence[dict], path: Path) -> None:
    """Draw the SoftNCut and reconstruction losses per epoch side by side into ``path`` (PNG, atomic)."""
    epochs = [row["epoch"] for row in rows]
    fig, (ncut_ax, rec_ax) = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    ncut_ax.plot(epochs, [row["ncut"] for row in rows], marker="o", ms=3, color="tab:blue")
    ncut_ax.set(title="SoftNCut loss (encoder)", xlabel="epoch", ylabel="loss")
    rec_ax.plot(epochs, [row["rec"] for row in rows], marker="o", ms=3, color="tab:orange")
    rec_ax.set(title="Reconstruction loss (decoder)", xlabel="epoch", ylabel="loss")
    if all(row["rec"] > 0 for row in rows):
        rec_ax.set_yscale("log")
    for ax in (ncut_ax, rec_ax):
        ax.grid(alpha=0.3)
        if len(epochs) < 12:
            ax.set_xticks(epochs)
    _save(fig, path)


def plot_preview(volume: np.ndarray, mask: np.ndarray, labels: np.ndarray, path: Path) -> None:
    """The middle z slice of the input, the mask and the instances side by side, into ``path`` (PNG, atomic)."""
    z = volume.shape[0] // 2
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.8), constrained_layout=True)
    low, high = np.percentile(volume[z], (1, 99.5))
    axes[0].imshow(volume[z], cmap="gray", vmin=low, vmax=high)
    axes[0].set_title(f"input, z = {z}")
    axes[1].imshow(volume[z], cmap="gray", vmin=low, vmax=high)
    axes[1].imshow(np.ma.masked_equal(mask[z], 0), cmap="autumn", alpha=0.45, vmin=0, vmax=1)
    axes[1].set_title("foreground mask")
    shown = labels[z].astype(np.int64)
    colours = np.random.default_rng(0).permutation(max(int(labels.max()), 1) + 1)
    axes[2].imshow(np.ma.masked_equal(colours[shown] * (shown > 0), 0), cmap="nipy_spectral", interpolation="nearest")
    axes[2].set_title(f"instances ({len(np.unique(labels)) - 1} nuclei in the volume)")
    for ax in axes:
        ax.set_axis_off()
    _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as part:
        fig.savefig(part, dpi=100, format="png")
    plt.close(fig)

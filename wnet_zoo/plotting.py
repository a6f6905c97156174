"""Pictures a user looks at: the live loss curves of a training run."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the headless backend


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
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    os.replace(tmp, path)

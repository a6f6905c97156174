"""``wnet-zoo demo``: the main job end to end on the bundled example volume, in a few minutes on 2 cores."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .config import TrainConfig
from .errors import UserError
from .train import TrainResult, train

EXAMPLE_NAME = "c5image.tif"


def example_volume() -> Path:
    """Path of the bundled example: a 124 x 86 x 94 light-sheet volume of nuclei from CellSeg3D (MIT)."""
    return Path(str(resources.files("wnet_zoo") / "examples" / EXAMPLE_NAME))


def demo_config() -> TrainConfig:
    """A small, quick configuration: narrow U-Nets and few patches, CellSeg3D's loss settings."""
    return TrainConfig(
        images=[str(example_volume())],
        channels=[8, 16, 32, 64],
        patch=[32, 64, 64],
        epochs=6,
        samples_per_epoch=4,
        batch=2,
        lr=2e-3,
        seed=0,
        device="cpu",
    )


@dataclass
class DemoResult:
    """What the demo made."""

    out: Path
    training: TrainResult

    def summary(self) -> str:
        """What to look at, one item a line."""
        last = self.training.rows[-1]
        run = self.training.run_dir
        return "\n".join(
            [
                f"demo finished in {self.out}",
                f"  training run     {run}  (final ncut {last['ncut']:.4f}, rec {last['rec']:.4g})",
                f"  loss curves      {run / 'loss.png'}",
                f"  best weights     {self.training.best_checkpoint}",
            ]
        )


def run_demo(out: Path, overwrite: bool = False, progress: bool = True) -> DemoResult:
    """Train a small WNet3D on the bundled example into ``out/run``."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; choose another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    training = train(demo_config(), out / "run", overwrite=True, progress=progress)
    return DemoResult(out=out, training=training)

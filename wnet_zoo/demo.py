"""``wnet-zoo demo``: the whole job on the bundled example volume, in a few minutes on 2 CPU cores.

Fine-tune the bundled pretrained WNet3D on the example (as a user fine-tunes it on their own stacks), export it
(ONNX, bioimage.io package), predict the example with the exported ONNX file (probabilities, mask,
instances) and draw a preview.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import tifffile

from wnet_zoo.errors import UserError, setting
from wnet_zoo.export.exporter import ExportResult, export_model
from wnet_zoo.io.atomic import check_can_create
from wnet_zoo.io.example import example_volume
from wnet_zoo.model.pretrained import BUNDLED
from wnet_zoo.training.config import TrainConfig
from wnet_zoo.training.loop import TrainResult
from wnet_zoo.training.plotting import plot_preview
from wnet_zoo.training.runs import finetune

DEMO_EPOCHS = 8

if TYPE_CHECKING:
    from wnet_zoo.prediction.outputs import ImageResult


def demo_config() -> TrainConfig:
    """A quick fine-tuning of the bundled model: few patches, CellSeg3D's loss settings, the default rate."""
    return TrainConfig(
        images=[str(example_volume())],
        patch=[64, 64, 64],
        epochs=DEMO_EPOCHS,
        samples_per_epoch=4,
        batch=2,
        seed=0,
        device="cpu",
    )


@dataclass
class DemoResult:
    """What the demo made."""

    out: Path
    training: TrainResult
    export: ExportResult
    prediction: ImageResult
    preview: Path

    def summary(self) -> str:
        """What to look at, one item a line."""
        last = self.training.rows[-1]
        run = self.training.run_dir
        paths = self.prediction.paths
        return "\n".join(
            [
                f"demo finished in {self.out}",
                f"  fine-tuning run  {run}  (final ncut {last['ncut']:.4f}, rec {last['rec']:.4g})",
                f"  loss curves      {run / 'loss.png'}",
                f"  ONNX model       {self.export.onnx}",
                f"  zoo package      {self.export.package}",
                f"  mask             {paths['mask']}",
                f"  instances        {paths['instances']}  ({self.prediction.nuclei} nuclei)",
                f"  preview          {self.preview}",
            ]
        )


def run_demo(out: Path, overwrite: bool = False, progress: bool = True) -> DemoResult:
    """Fine-tune, export and predict on the bundled example into ``out`` (``run/``, ``export/``,
    ``predictions/``)."""
    from wnet_zoo.prediction.files import predict_files

    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; choose another {setting('out')} or pass {setting('overwrite', True)}")
    check_can_create(out, setting("out"))
    out.mkdir(parents=True, exist_ok=True)
    training = finetune(demo_config(), BUNDLED, out / "run", overwrite=True, progress=progress)
    exported = export_model(training.run_dir, out / "export", overwrite=True)
    (prediction,) = predict_files(
        exported.onnx,
        [example_volume()],
        out / "predictions",
        outputs=["probabilities", "mask", "instances"],
        overwrite=True,
        progress=progress,
        device="cpu",
        report=lambda line: None,
    )
    preview = out / "preview.png"
    plot_preview(
        tifffile.imread(example_volume()),
        tifffile.imread(prediction.paths["mask"]),
        tifffile.imread(prediction.paths["instances"]),
        preview,
    )
    return DemoResult(out, training, exported, prediction, preview)

"""The recipe of the pretrained WNet3D that ships with wnet-zoo (``wnet_zoo/model/bundled/``).

    python benchmarks/pretrain.py --work DIR [--real DIR] [--epochs N] [--seed S] [--install]

Trains the compact architecture (channels 16,32,64,128) from scratch with wnet-zoo's own training on openly
licensed volumes no benchmark scores on:

* CellSeg3D's two real light-sheet example volumes (``../shared/data/``, MIT, the CellSeg3D authors), which
  have no labels and are only looked at (``benchmarks/results/real_volumes.json``), never scored;
* one phantom of each setting of ``benchmarks/phantoms.py`` that is not held out, drawn with another seed
  (``PRETRAIN_SEED_OFFSET`` + the setting's own) than the phantoms the benchmarks score. The held-out settings'
  kinds stay out, and so does ``organoid``, tissue's development twin, so that fine-tuning is also measured on a
  tuning setting of a kind the model never saw (``autofluorescence``, the twin of the held-out confocal_offset, is
  in: confocal_offset shows what a twin in the pretraining gives); ``anisotropic`` stays out as its 2:1 voxels
  would set the spacing of the whole run.

Fine-tuning puts in front of the network the input transform (smoothing, compression, background subtraction)
that training chooses for the user's images, so the network learns from each volume as that transform shows it:
each is rewritten once, with the transform chosen for it alone, and the model itself has none. Training reads
these files as they are: its usual 0..100 remap would stretch each back to the full range (smoothing a noisy volume
narrows it to about a quarter), and the network would learn on a contrast the fine-tuned model never sees.

Half the patches have their contrast lowered at random (``--contrast-jitter``): written as their transforms show
them, the volumes span nuclei 20 to 90 units above a background near 5, and a smoothed noisy stack nuclei 10 units
above 34; a model that learnt only the first separates by absolute intensity and calls all of the second one class,
which fine-tuning at a lowered rate does not undo (``benchmarks/README.md`` has the numbers).

``--install`` writes the best epoch's weights (a float32 state dict, nothing else) and a card (``wnet3d.yaml``:
data, transforms, recipe, machine, losses, seconds) into ``wnet_zoo/model/bundled/``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from phantoms import HELD_OUT, SETTINGS, write_phantom  # noqa: E402
from quality import machine  # noqa: E402

REAL_DATA = HERE.parent.parent / "shared" / "data"
REAL_VOLUMES = ("c5image.tif", "test_very_small.tif")
PRETRAIN_SEED_OFFSET = 1000
LEFT_OUT = (*HELD_OUT, "organoid", "anisotropic")
CHANNELS = [16, 32, 64, 128]
EPOCHS = 20
CONTRAST_JITTER = 0.75  # half the patches down to a quarter of their contrast, over a grey up to 50: see the docstring


def as_the_model_sees_it(path: Path) -> dict[str, float]:
    """Rewrite the volume at ``path`` as a fine-tuned model's input transform would show it to the network: the
    transform training chooses for this volume alone (compression, background subtraction, smoothing), applied
    to its 0..100 remap; float32, isotropic voxels. Returns the transform chosen."""
    import numpy as np
    import tifffile
    import torch

    from wnet_zoo.io.intensity import remap
    from wnet_zoo.model.wnet import UNet3D
    from wnet_zoo.training.config import TrainConfig
    from wnet_zoo.training.input_choices import background_radius_for, choose_input_transform, input_sigma_for

    volume = remap(tifffile.imread(path).astype(np.float32))
    spacing = (1.0, 1.0, 1.0)
    chosen = choose_input_transform(TrainConfig(images=[str(path)]), [volume], spacing)
    encoder = UNet3D(
        1,
        2,
        channels=CHANNELS,
        input_sigma=input_sigma_for(chosen.input_smoothing, spacing),
        input_log=chosen.input_log or 0.0,
        input_background=background_radius_for(chosen.input_background, spacing),
    )
    with torch.no_grad():
        seen = encoder.prepare(torch.from_numpy(volume)[None, None])[0, 0].numpy()
    tifffile.imwrite(path, seen.astype(np.float32))
    return {
        "input_smoothing": float(chosen.input_smoothing or 0.0),
        "input_log": round(float(chosen.input_log or 0.0), 3),
        "input_background": int(chosen.input_background or 0),
    }


@contextlib.contextmanager
def read_as_written() -> Iterator[None]:
    """Training reads its volumes without the 0..100 remap: those :func:`as_the_model_sees_it` wrote are the
    remap already, seen through the transform, and must reach the network with the range the transform left."""
    import wnet_zoo.training.data as data

    remap = data.remap
    data.remap = lambda volume: volume
    try:
        yield
    finally:
        data.remap = remap


def training_images(folder: Path, real: Path = REAL_DATA) -> list[Path]:
    """Write the pretraining volumes into ``folder``: the real examples (from ``real``), then one phantom per
    kept setting."""
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for name in REAL_VOLUMES:
        target = folder / name
        shutil.copyfile(real / name, target)
        images.append(target)
    for name, settings in SETTINGS.items():
        if name not in LEFT_OUT:
            image, labels = write_phantom(name, folder, seed=settings.seed + PRETRAIN_SEED_OFFSET)
            labels.unlink()  # self-supervised: the truth is never read
            images.append(image)
    return images


def install_pretrained(checkpoint: Path, card: dict[str, Any], folder: Path | None = None) -> Path:
    """Write ``checkpoint``'s weights (a float32 state dict only) and ``card`` as the bundled model (into
    ``folder``, default the package's ``bundled/``); return the weights' path."""
    import yaml

    from wnet_zoo.errors import UserError
    from wnet_zoo.io.atomic import write_text
    from wnet_zoo.model.checkpoints import load_weights, save_checkpoint
    from wnet_zoo.model.pretrained import CARD_NAME, WEIGHTS_NAME, bundled_folder

    weights = load_weights(checkpoint)
    architecture = weights.architecture
    if any(architecture["input_sigma"]) or architecture["input_log"] or any(architecture["input_background"]):
        raise UserError(f"{checkpoint}: the bundled model is trained without an input transform")
    text = yaml.safe_dump({"channels": list(architecture["channels"]), **card}, sort_keys=False)
    folder = bundled_folder() if folder is None else folder
    folder.mkdir(exist_ok=True)
    target = folder / WEIGHTS_NAME
    save_checkpoint(target, {key: value.float().contiguous() for key, value in weights.state_dict.items()})
    write_text(folder / CARD_NAME, text)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the images and the run")
    parser.add_argument("--real", type=Path, default=REAL_DATA, help="folder of CellSeg3D's example volumes")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--seed", type=int, default=0, help="of the initial weights and the patches drawn")
    parser.add_argument("--install", action="store_true", help="write the weights and card into wnet_zoo/")
    args = parser.parse_args(argv)

    from wnet_zoo.training.config import TrainConfig
    from wnet_zoo.training.runs import train

    images = training_images(args.work / "images", args.real)
    transforms = {path.name: as_the_model_sees_it(path) for path in images}
    for name, transform in transforms.items():
        print(name, transform)
    config = TrainConfig(
        images=[str(path) for path in images],
        channels=CHANNELS,
        epochs=args.epochs,
        stop_at_plateau=False,
        contrast_jitter=CONTRAST_JITTER,
        input_smoothing=0.0,
        input_log=0.0,
        input_background=0,
        seed=args.seed,
    )
    started = time.perf_counter()
    with read_as_written():
        result = train(config, args.work / "run", overwrite=True)
    seconds = time.perf_counter() - started
    best = result.rows[result.best_epoch - 1]
    print(f"trained {len(result.rows)} epochs in {seconds:.0f} s; best epoch {result.best_epoch}: {best}")
    if args.install:
        card: dict[str, Any] = {
            "trained": datetime.date.today().isoformat(),
            "recipe": "benchmarks/pretrain.py",
            "seed": args.seed,
            "epochs": len(result.rows),
            "best_epoch": result.best_epoch,
            "best_losses": {key: round(float(best[key]), 5) for key in ("ncut", "rec", "total") if key in best},
            "seconds": round(seconds),
            "machine": machine(None),
            "images": [path.name for path in images],
            "input_transforms": transforms,
            "inputs": "each volume rewritten as its input transform shows it, read without the 0..100 remap",
            "contrast_jitter": CONTRAST_JITTER,
            "phantom_seeds": f"each setting's own + {PRETRAIN_SEED_OFFSET}",
            "left_out": list(LEFT_OUT),
        }
        print(f"installed {install_pretrained(result.run_dir / 'best.pt', card)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

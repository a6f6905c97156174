"""Fine-tuning the bundled pretrained WNet3D against training from scratch, on every phantom setting.

    python benchmarks/finetune.py --work DIR [--settings ...] [--variants [bundled compact scratch]]
                                  [--lr-factors 0.05 0.1 0.2 0.5] [--threads N] [--out JSON]

CellSeg3D's training page advises retraining from a pretrained model "to quickly reach good performance". For
each phantom setting of ``benchmarks/phantoms.py`` (held-out ones included) and each variant, the pipeline a user
runs, each step a ``wnet-zoo`` command in its own process, timed: training, ``export --onnx``, ``predict`` (the
default outputs), then the instances scored against the phantom's labels (``benchmarks/quality.py``'s scores):

* ``scratch``: ``wnet-zoo train IMAGE`` with the defaults (CellSeg3D's architecture), as ``quality.py`` runs it;
* ``bundled``: ``wnet-zoo finetune IMAGE``, the bundled model with the defaults;
* ``compact``: ``wnet-zoo train IMAGE --channels 16,32,64,128``, the bundled model's architecture from scratch;
* ``bundled xF`` for each ``--lr-factors`` F: ``wnet-zoo finetune IMAGE --lr-factor F`` (the sweep that chose
  the default factor; the variant at the default is ``bundled``).

Without ``scratch`` in ``--variants`` the file keeps the scratch numbers of ``benchmarks/results/quality.json``
(same pipeline and nuclei code; its date and machine are recorded with them): its training takes 5 to 14 minutes
a setting on 2 cores. Results go to ``benchmarks/results/finetune.json`` (``--out``, rewritten after each
setting) with the machine (CPU, bf16 or not), and a table is printed. Variants of an earlier run on the same
kind of CPU that this one does not repeat are kept, each with its date, but fine-tunings of another bundled model
than today's (another ``bundled_model`` fingerprint) are dropped. ``--variants`` with no name and
``--lr-factors`` runs the sweep alone.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tifffile

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from wnet_zoo.export.rdf import sha256  # noqa: E402
from wnet_zoo.model.pretrained import bundled_card, bundled_weights  # noqa: E402
from wnet_zoo.training.config import DEFAULT_LR_FACTOR  # noqa: E402

from phantoms import HELD_OUT, SETTINGS, make_phantom, write_phantom  # noqa: E402
from quality import PIPELINE, PipelineError, machine, run_pipeline, scores  # noqa: E402

RESULTS = HERE / "results" / "finetune.json"
QUALITY = HERE / "results" / "quality.json"
COMPACT = "16,32,64,128"
TRAINING: dict[str, list[str]] = {
    "scratch": ["train"],
    "bundled": ["finetune"],
    "compact": ["train", "--channels", COMPACT],
}
KEYS = ("fg_dice", "f1_at_05", "mean_f1")


def training_command(variant: str) -> list[str]:
    """The ``wnet-zoo`` arguments (before IMAGE) that train ``variant``."""
    if variant.startswith("bundled x"):
        return ["finetune", "--lr-factor", variant.removeprefix("bundled x")]
    return TRAINING[variant]


def run_variant(name: str, variant: str, image: Path, work: Path, threads: int | None) -> dict[str, Any]:
    """Train (or fine-tune), export and predict one setting's image; scores, stage seconds, training summary."""
    _, truth = make_phantom(name)
    command, *options = training_command(variant)
    stem = f"{name}_{variant.replace(' ', '_')}"
    try:
        instances, stages, training = run_pipeline(
            stem, image, work, None, threads, options, command=command, overwrite=True
        )
    except PipelineError as error:
        return {"fg_dice": 0.0, "f1_at_05": 0.0, "mean_f1": 0.0, "seconds": error.seconds, "error": str(error)}
    found = scores(tifffile.imread(instances), truth, sum(stages.values()))
    found["stage_seconds"] = {stage: round(value, 2) for stage, value in stages.items()}
    found["training"] = training
    if variant.startswith("bundled"):
        found["bundled_model"] = bundled_fingerprint()
    return found


def bundled_fingerprint() -> str:
    """Which bundled model a fine-tuning started from: its card's date and the start of its weights' SHA-256."""
    return f"trained {bundled_card()['trained']}, wnet3d.pt sha256 {sha256(bundled_weights())[:12]}"


def scratch_from_quality(name: str) -> dict[str, Any] | None:
    """The from-scratch numbers of ``quality.json`` for ``name``, with their date (None when it has none)."""
    if not QUALITY.exists():
        return None
    setting = json.loads(QUALITY.read_text())["settings"].get(name)
    if setting is None:
        return None
    ours = setting["methods"][PIPELINE]
    kept = {key: ours[key] for key in (*KEYS, "n_pred", "n_true", "seconds", "stage_seconds") if key in ours}
    return {**kept, "from": f"quality.json, trained {ours.get('training_from', setting['date'])}"}


def render_table(results: dict[str, Any]) -> str:
    """A markdown table: per setting and variant, fg Dice / F1@0.5 / mean F1 and training seconds, and "(poor
    fit)" where the fine-tuning was told its pretrained start may not fit the image (``balance.poor_fit``)."""
    variants = list(results["variants"])
    lines = [
        "| setting | " + " | ".join(variants) + " |",
        "|---|" + "---|" * len(variants),
    ]
    for name, setting in results["settings"].items():
        cells = []
        for variant in variants:
            found = setting["variants"].get(variant)
            if found is None or "error" in found:
                cells.append("failed" if found else "")
                continue
            quality = " / ".join(f"{found[key]:.3f}" for key in KEYS)
            told = "balance.poor_fit" in (found.get("training") or {}).get("event_codes", {})
            cells.append(f"{quality}, {found['stage_seconds']['train']:.0f} s" + (" (poor fit)" if told else ""))
        held = " (held out)" if setting["held_out"] else ""
        lines.append(f"| {name}{held} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the phantoms, runs and predictions")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--variants", nargs="*", choices=list(TRAINING), default=["bundled", "compact"])
    parser.add_argument("--lr-factors", nargs="*", type=float, default=[], help="fine-tuning rates to sweep")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    variants = list(args.variants)
    variants += [f"bundled x{factor:g}" for factor in args.lr_factors if factor != DEFAULT_LR_FACTOR]
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "what": __doc__.split("\n\n")[0],
        "machine": machine(args.threads),
        "default_lr_factor": DEFAULT_LR_FACTOR,
        "variants": (["scratch"] if "scratch" not in variants else []) + variants,
        "held_out": list(HELD_OUT),
        "settings": {},
    }
    earlier = json.loads(args.out.read_text()) if args.out.exists() else {"settings": {}, "variants": []}
    if earlier.get("machine", {}).get("cpu") == results["machine"]["cpu"]:  # same kind of machine: keep the rest
        results["variants"] = list(dict.fromkeys([*earlier["variants"], *results["variants"]]))
        results["settings"] = earlier["settings"]
        today = bundled_fingerprint()
        for setting in results["settings"].values():
            found = setting["variants"]
            for variant in [v for v in found if v.startswith("bundled") and found[v].get("bundled_model") != today]:
                del found[variant]
    for name in args.settings:
        image, _ = write_phantom(name, args.work / "phantoms")
        found: dict[str, Any] = dict(results["settings"].get(name, {}).get("variants", {}))
        if "scratch" not in variants:
            found["scratch"] = scratch_from_quality(name)
        for variant in variants:
            found[variant] = run_variant(name, variant, image, args.work, args.threads)
            found[variant]["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
            print(name, variant, {key: found[variant].get(key) for key in (*KEYS, "seconds")}, flush=True)
        results["settings"][name] = {"held_out": name in HELD_OUT, "variants": found}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(render_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

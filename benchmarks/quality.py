"""Segmentation quality of the default user pipeline against classical baselines, on the nuclei phantoms.

    python benchmarks/quality.py [--settings sparse touching ...] [--epochs N] [--threads N]
                                 [--train-arg=--lr=1e-3 ...] [--work DIR] [--out JSON]
    python benchmarks/quality.py --table [--out JSON]
    python benchmarks/quality.py --work DIR --keep-training [--settings ...]

For each phantom setting of ``benchmarks/phantoms.py`` (all by default):

1. the phantom is written as an ImageJ TIFF with its voxel size, as ``phantoms.py`` writes it;
2. the pipeline a user runs, each step a ``wnet-zoo`` command in its own process:
   ``wnet-zoo train IMAGE --out RUN`` with the default options (``--epochs`` and ``--train-arg`` change them,
   for quick runs), ``wnet-zoo export RUN --out EXPORT --onnx`` and
   ``wnet-zoo predict EXPORT/wnet3d.onnx IMAGE --out PRED`` with the default outputs (mask and instances) and
   the raw mask;
3. the instances are scored against the phantom's labels with :func:`wnet_zoo.segment.evaluate.evaluate`, and the
   mask file on its own (``mask_fg_dice``, the foreground a user gets); so is the same run's raw mask split as
   ``predict --boundary mask --relative-min-size 0`` would (``wnet_zoo_mask_boundary``,
   in this process: what the half-max boundaries and the relative minimum size add), and so are the baselines
   of ``benchmarks/baselines.py`` (timed each). A command that fails (e.g. ``train`` refusing a volume) is
   recorded with its message and scores 0.
4. the issue's goals are checked: the pipeline ahead of the best baseline (mean F1) with fg Dice >= 0.85 and
   F1@0.5 >= 0.6 on every setting, and its mean F1 at least 0.1 above the best baseline's on average.

``--threads`` limits every process to that many threads (``OMP_NUM_THREADS`` and friends for training and
export, ``--threads`` for predict; the baselines run under the same limit). Results, with the configuration and
the machine, go to ``benchmarks/results/quality.json`` (``--out``, rewritten after each setting), and a table is
printed. Settings the file holds from a run with the same options and that are not run again are kept, each with
its date, so that one setting can be re-measured alone after a change that leaves the others' pipeline as it was.
``--keep-training`` re-measures after a change that leaves training as it was (export, predict, nuclei): the
training runs in ``--work`` of the settings the results file holds are exported and predicted with again, and
their training seconds and date are carried over (``training_from``).
``--table`` prints the README's quality table (markdown) rendered from that file, without running anything.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import yaml

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # the source tree this script belongs to, and the benchmarks beside it

from wnet_zoo.segment.evaluate import evaluate  # noqa: E402
from wnet_zoo.segment.nuclei import instances  # noqa: E402

from baselines import BASELINES  # noqa: E402
from phantoms import HELD_OUT, SETTINGS, make_phantom, write_phantom  # noqa: E402

RESULTS = HERE / "results" / "quality.json"
PIPELINE = "wnet_zoo"
MASK_BOUNDARY = "wnet_zoo_mask_boundary"  # the same run's mask, split with boundary="mask", relative_min_size=0
GOALS = {"fg_dice": 0.85, "f1_at_05": 0.6, "mean_f1_margin": 0.1}
CLI = (sys.executable, "-m", "wnet_zoo.cli")  # the console script's entry point, in this interpreter
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class PipelineError(RuntimeError):
    """A ``wnet-zoo`` command failed: its message holds the command, exit code and the end of its output."""

    def __init__(self, message: str, seconds: float) -> None:
        super().__init__(message)
        self.seconds = round(seconds, 2)


def run_command(command: Sequence[str], threads: int | None) -> float:
    """Run one command to completion under the thread limit; its wall-clock seconds. Failure raises PipelineError."""
    environment = dict(os.environ)
    if threads is not None:
        environment.update({name: str(threads) for name in THREAD_VARIABLES})
    start = time.perf_counter()
    done = subprocess.run(list(command), env=environment, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        lines = (done.stdout + done.stderr).strip().splitlines()
        last = lines[-1] if lines else ""
        raise PipelineError(f"wnet-zoo {command[len(CLI)]} exited with {done.returncode}: {last}", seconds)
    return seconds


def scores(labels: Any, truth: Any, seconds: float) -> dict[str, Any]:
    """The numbers kept per method: fg Dice, F1 at IoU 0.5, mean F1, object counts and seconds."""
    evaluation = evaluate(labels, truth)
    return {
        "fg_dice": round(evaluation.foreground_dice, 4),
        "f1_at_05": round(evaluation.f1_at_05, 4),
        "mean_f1": round(evaluation.mean_f1, 4),
        "n_pred": evaluation.n_pred,
        "n_true": evaluation.n_true,
        "seconds": round(seconds, 2),
    }


def training_summary(run: Path) -> dict[str, Any]:
    """What the training run did: epochs, final SoftNCut, the epoch its plateau was reported (if any), events
    (by kind, and by code), the balance check's segmentation of the centre patches at the plateau, and the input
    transforms it chose."""
    import torch

    config = yaml.safe_load((run / "config.yaml").read_text())
    checks = torch.load(run / "last.pt", map_location="cpu", weights_only=True, mmap=True).get("checks") or {}
    with (run / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    with (run / "events.csv").open() as handle:
        events = list(csv.DictReader(handle))
    plateaus = [int(event["epoch"]) for event in events if event["kind"] == "plateau"]
    return {
        "epochs": len(rows),
        "final_ncut": round(float(rows[-1]["ncut"]), 4),
        "final_rec": round(float(rows[-1]["rec"]), 3),
        "epoch_seconds": round(sum(float(row["seconds"]) for row in rows) / len(rows), 2),
        "plateau_epoch": plateaus[0] if plateaus else None,
        "input_smoothing": config.get("input-smoothing"),
        "input_log": config.get("input-log"),
        "input_background": config.get("input-background"),
        "events": dict(Counter(event["kind"] for event in events)),
        "event_codes": dict(sorted(Counter(event.get("code") or event["kind"] for event in events).items())),
        "plateau_segmentation": (checks.get("balance") or {}).get("segmentation") or None,
    }


def run_pipeline(
    name: str,
    image: Path,
    work: Path,
    epochs: int | None,
    threads: int | None,
    train_args: Sequence[str],
    trained_in: float | None = None,
    command: str = "train",
    overwrite: bool = False,
) -> tuple[Path, dict[str, float], dict[str, Any]]:
    """``wnet-zoo train`` (or ``command``, e.g. ``finetune``), ``export --onnx`` and ``predict`` on one image: the
    instances file, seconds, training.

    With ``trained_in`` (the seconds an earlier training took), the run already in ``work`` is exported and
    predicted with again instead of training a new one; with ``overwrite``, every step replaces what an earlier
    run left in ``work``."""
    run, export, prediction = work / f"{name}_run", work / f"{name}_export", work / f"{name}_predictions"
    cli = list(CLI)
    again = ["--overwrite"] if overwrite or trained_in is not None else []
    train = [*cli, command, str(image), "--out", str(run), *(["--epochs", str(epochs)] if epochs else []), *train_args]
    predict = [*cli, "predict", str(export / "wnet3d.onnx"), str(image), "--out", str(prediction)]
    predict += ["--output", "mask", "--output", "raw-mask", "--output", "instances"]  # the defaults, and the raw mask
    predict += ["--threads", str(threads)] if threads else []
    seconds = {
        "train": run_command([*train, *again], threads) if trained_in is None else trained_in,
        "export": run_command([*cli, "export", str(run), "--out", str(export), "--onnx", *again], threads),
        "predict": run_command([*predict, *again], threads),
    }
    return prediction / f"{image.stem}_instances.tif", seconds, training_summary(run)


def mask_boundary_instances(mask_file: Path, image: np.ndarray, voxel_size: Sequence[float]) -> np.ndarray:
    """Nuclei of the raw mask ``predict`` wrote (the model's class), split without the half-max boundary or the
    relative minimum size."""
    mask = tifffile.imread(mask_file) > 0
    found = instances(
        mask.astype(np.float32), image, mask=mask, voxel_size=voxel_size, boundary="mask", relative_min_size=0
    )
    return found.labels


def foreground_class(onnx_file: Path) -> int | None:
    """The foreground class the exporter recorded in the ONNX metadata (what ``predict`` uses by default)."""
    import onnx

    model = onnx.load(str(onnx_file), load_external_data=False)
    meta = {prop.key: prop.value for prop in model.metadata_props}
    value = meta.get("wnet_zoo.foreground_class")
    return None if value is None else int(value)


def benchmark_setting(
    name: str,
    work: Path,
    epochs: int | None,
    threads: int | None,
    train_args: Sequence[str],
    kept: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Scores and seconds of the pipeline (as is, and with the mask's own boundaries) and of every baseline.

    ``kept``: the earlier result of this setting, whose training run in ``work`` is reused (see ``--keep-training``).
    """
    image_path, _ = write_phantom(name, work / "phantoms")
    image, truth = make_phantom(name)
    voxel_size = SETTINGS[name].voxel_size
    try:
        trained_in = None if kept is None else kept["methods"][PIPELINE]["stage_seconds"]["train"]
        instances_file, stages, training = run_pipeline(name, image_path, work, epochs, threads, train_args, trained_in)
    except PipelineError as error:  # a refusal is a result too: scored as finding nothing
        failed = {"fg_dice": 0.0, "f1_at_05": 0.0, "mean_f1": 0.0, "seconds": error.seconds, "error": str(error)}
        methods = {PIPELINE: failed, MASK_BOUNDARY: dict(failed)}
    else:
        pipeline = scores(tifffile.imread(instances_file), truth, sum(stages.values()))
        mask = tifffile.imread(instances_file.with_name(f"{image_path.stem}_mask.tif")) > 0
        pipeline["mask_fg_dice"] = round(float(2 * (mask & (truth > 0)).sum() / (mask.sum() + (truth > 0).sum())), 4)
        pipeline["stage_seconds"] = {stage: round(value, 2) for stage, value in stages.items()}
        pipeline["foreground_class"] = foreground_class(work / f"{name}_export" / "wnet3d.onnx")
        pipeline["training"] = training
        if kept is not None:
            pipeline["training_from"] = kept["methods"][PIPELINE].get("training_from", kept["date"])
        start = time.perf_counter()
        labels = mask_boundary_instances(instances_file.with_name(f"{image_path.stem}_raw_mask.tif"), image, voxel_size)
        methods = {
            PIPELINE: pipeline,
            MASK_BOUNDARY: scores(labels, truth, time.perf_counter() - start + pipeline["seconds"]),
        }
    for method, baseline in BASELINES.items():
        start = time.perf_counter()
        labels = baseline(image, voxel_size)
        methods[method] = scores(labels, truth, time.perf_counter() - start)
    best = max(BASELINES, key=lambda method: methods[method]["mean_f1"])
    ours = methods[PIPELINE]
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "shape": list(image.shape),
        "voxel_size": list(voxel_size),
        "held_out": name in HELD_OUT,
        "methods": methods,
        "best_baseline": best,
        "meets_goals": bool(
            ours["mean_f1"] > methods[best]["mean_f1"]
            and ours["fg_dice"] >= GOALS["fg_dice"]
            and ours["f1_at_05"] >= GOALS["f1_at_05"]
        ),
    }


def earlier_settings(path: Path, run: dict[str, Any], rerun: Sequence[str]) -> dict[str, Any]:
    """The settings of the results file at ``path`` that this invocation does not run again, when that file was
    made with the same options (``run``); each dated, with its machine (the file's where it has none of its own)."""
    if not path.exists():
        return {}
    earlier = json.loads(path.read_text())
    if earlier.get("run") != run:
        return {}
    return {
        name: {"date": earlier["date"], "machine": earlier["machine"], **result}
        for name, result in earlier["settings"].items()
        if name not in rerun and name in SETTINGS
    }


def kept_training(args: argparse.Namespace, run: dict[str, Any]) -> dict[str, Any]:
    """For ``--keep-training``: the earlier result of each setting to run, whose training run ``--work`` holds;
    exits naming what is missing otherwise."""
    earlier = earlier_settings(args.out, run, [])
    missing = [
        name
        for name in args.settings
        if args.work is None or name not in earlier or not (args.work / f"{name}_run" / "best.pt").is_file()
    ]
    if missing:
        sys.exit(
            f"--keep-training: no training run with a result in {args.out} (same options) for {', '.join(missing)} "
            f"in --work {args.work}; run them without --keep-training"
        )
    return {name: earlier[name] for name in args.settings}


def goals(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals over all settings: each setting's, and the average mean-F1 margin over the best baseline."""
    settings = results["settings"].values()
    margins = [s["methods"][PIPELINE]["mean_f1"] - s["methods"][s["best_baseline"]]["mean_f1"] for s in settings]
    margin = float(np.mean(margins)) if margins else 0.0
    every = all(s["meets_goals"] for s in settings)
    return {
        "thresholds": GOALS,
        "every_setting": every,
        "mean_f1_margin": round(margin, 4),
        "met": bool(every and margin >= GOALS["mean_f1_margin"]),
    }


def machine(threads: int | None) -> dict[str, Any]:
    """The CPU (and whether it computes bf16 natively, as training then does), the cores visible, the thread
    limit and the library versions the numbers come from."""
    import onnxruntime
    import torch

    from wnet_zoo.prediction.runtime import cpu_supports_bf16

    cpu = platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu,
        "cpu_bf16": cpu_supports_bf16(),
        "cores": os.cpu_count(),
        "threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "onnxruntime": onnxruntime.__version__,
    }


def render_table(results: dict[str, Any]) -> str:
    """The README's quality table (markdown): per setting, fg Dice / F1@0.5 / mean F1 of the pipeline as it runs,
    of the best baseline and of the same run's mask split with its own boundaries; then their means."""
    columns = (PIPELINE, "best", MASK_BOUNDARY)
    keys = ("fg_dice", "f1_at_05", "mean_f1")
    lines = [
        "| setting | wnet-zoo | best baseline | which | wnet-zoo, mask boundaries | wnet-zoo s |",
        "|---|---|---|---|---|---:|",
    ]
    sums = dict.fromkeys(((column, key) for column in columns for key in keys), 0.0)
    notes = []
    for name, setting in results["settings"].items():
        found = {column: setting["methods"].get(column, {}) for column in (PIPELINE, MASK_BOUNDARY)}
        found["best"] = setting["methods"][setting["best_baseline"]]
        cells = []
        for column in columns:
            values = found[column]
            cells.append(" / ".join(f"{values.get(key, 0.0):.3f}" for key in keys))
            if "error" in values:
                cells[-1] = "failed"
            for key in keys:
                sums[column, key] += values.get(key, 0.0)
        if "error" in found[PIPELINE]:
            notes.append(f"{name}: {found[PIPELINE]['error']}")
        label = f"{name} (held out)" if setting["held_out"] else name
        seconds = found[PIPELINE]["seconds"]
        ours, best, ablation = cells
        lines.append(f"| {label} | {ours} | {best} | {setting['best_baseline']} | {ablation} | {seconds:.0f} |")
    count = max(len(results["settings"]), 1)
    means = [" / ".join(f"{sums[column, key] / count:.3f}" for key in keys) for column in columns]
    lines.append(f"| **mean** | {means[0]} | {means[1]} | | {means[2]} | |")
    run = results["run"]
    options = [*([f"--epochs {run['epochs']}"] if run["epochs"] else []), *run["train_args"]]
    training = f"`train {' '.join(options)}`" if options else "`train` with its defaults"
    lines += [
        "",
        "Each cell: foreground Dice / F1 at IoU 0.5 / mean F1 over IoU 0.1..0.9. wnet-zoo: "
        f"{training}, `export --onnx`, `predict` with its default outputs; seconds for the three commands. "
        "Mask boundaries: the same run's mask split as `predict --boundary mask --relative-min-size 0` would "
        "(without the half-max boundaries and the relative minimum size). Failed runs score 0 in the means.",
        f"Machines: {_machines(results)}. Days: {_dates(results)}; "
        "`python benchmarks/quality.py`, results in `benchmarks/results/quality.json`.",
        *(f"Failed: {note}" for note in notes),
    ]
    if "goals" in results:
        found = results["goals"]
        lines.append(
            "Goals: ahead of the best baseline with fg Dice >= 0.85 and F1@0.5 >= 0.6 on every setting: "
            f"{'yes' if found['every_setting'] else 'no'}; mean F1 above the best baseline's by "
            f"{found['mean_f1_margin']:+.3f} on average (goal +0.1)."
        )
    return "\n".join(lines)


def _machines(results: dict[str, Any]) -> str:
    """The CPU and thread limit of the run, or of each setting where settings were measured on different
    machines (quality does not depend on the CPU beyond float rounding; seconds do)."""
    machines = {
        name: "{cpu}, {threads} thread(s)".format(cpu=found["cpu"], threads=found["threads"] or "all")
        for name, found in ((n, s.get("machine", results["machine"])) for n, s in results["settings"].items())
    }
    if len(set(machines.values())) <= 1:
        found = results["machine"]
        return next(iter(machines.values()), f"{found['cpu']}, {found['threads'] or 'all'} thread(s)")
    return _grouped(_names_by_value(machines))


def _dates(results: dict[str, Any]) -> str:
    """The day of the run, or of each setting where settings were measured on different days."""
    days = {name: str(setting.get("date", results["date"]))[:10] for name, setting in results["settings"].items()}
    if len(set(days.values())) <= 1:
        return next(iter(days.values()), results["date"][:10]) + _trained_earlier(results)
    return _grouped(dict(sorted(_names_by_value(days).items()))) + _trained_earlier(results)


def _names_by_value(values: dict[str, str]) -> dict[str, list[str]]:
    """The settings of ``values`` (setting -> what it was measured with) under each value, in first-seen order."""
    groups: dict[str, list[str]] = {}
    for name, value in values.items():
        groups.setdefault(value, []).append(name)
    return groups


def _grouped(groups: dict[str, list[str]]) -> str:
    """``"a, b on X; c on Y"`` for settings grouped by what they share (two groups or more); a group larger than
    every other comes last as "the others", so that a setting added to a run names itself alone."""
    largest, *rest = sorted(groups, key=lambda key: len(groups[key]), reverse=True)
    others = bool(rest) and len(groups[largest]) > len(groups[rest[0]])
    parts = [f"{', '.join(names)} on {key}" for key, names in groups.items() if not (others and key == largest)]
    return "; ".join([*parts, *([f"the others on {largest}"] if others else [])])


def _trained_earlier(results: dict[str, Any]) -> str:
    """Where training runs were reused (``--keep-training``): which, and the days they were trained."""
    pipelines = {name: setting.get("methods", {}).get(PIPELINE, {}) for name, setting in results["settings"].items()}
    kept = {name: str(run["training_from"])[:10] for name, run in pipelines.items() if "training_from" in run}
    if not kept:
        return ""
    trained = "; ".join(f"{', '.join(names)} on {day}" for day, names in sorted(_names_by_value(kept).items()))
    return f" (export and predict; the models were trained earlier: {trained})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: train's own default)")
    parser.add_argument("--threads", type=int, default=None, help="thread limit of every step (default: none)")
    parser.add_argument(
        "--train-arg",
        action="append",
        default=[],
        help="extra option for 'wnet-zoo train', repeatable; write it as --train-arg=--lr=1e-3",
    )
    parser.add_argument("--work", type=Path, default=None, help="keep the images, runs and predictions here")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results JSON (default {RESULTS})")
    parser.add_argument("--table", action="store_true", help="print the README table from --out and exit")
    parser.add_argument(
        "--keep-training",
        action="store_true",
        help="reuse each setting's training run in --work (from the run --out records, same options): export and "
        "predict again, for changes after training; the training's seconds are the recorded ones",
    )
    args = parser.parse_args(argv)
    if args.table:
        print(render_table(json.loads(args.out.read_text())))
        return 0
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="wnet-zoo-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    run = {"epochs": args.epochs, "threads": args.threads, "train_args": args.train_arg}
    kept = kept_training(args, run) if args.keep_training else {}
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "what": "default user pipeline (train, export --onnx, predict) vs classical baselines on the phantoms",
        "run": run,
        "machine": machine(args.threads),
        "held_out": list(HELD_OUT),
        "settings": earlier_settings(args.out, run, args.settings),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        for name in args.settings:
            start = time.perf_counter()
            results["settings"][name] = {
                "machine": results["machine"],
                **benchmark_setting(name, work, args.epochs, args.threads, args.train_arg, kept.get(name)),
            }
            results["settings"] = {n: results["settings"][n] for n in SETTINGS if n in results["settings"]}
            results["goals"] = goals(results)
            args.out.write_text(json.dumps(results, indent=2) + "\n")
            ours = results["settings"][name]["methods"][PIPELINE]
            print(
                f"{name}: fg Dice {ours['fg_dice']:.3f}, F1@0.5 {ours['f1_at_05']:.3f}, mean F1 {ours['mean_f1']:.3f} "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(render_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

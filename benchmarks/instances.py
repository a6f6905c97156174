"""The instance stages of ``wnet-zoo predict``: how long they take, stage by stage, against the code before issue 21.

    python benchmarks/instances.py --work DIR [--repeats 5] [--stress-repeats 1] [--threads 1 2] [--reference REV]

The reference is wnet-zoo as it was at git revision ``--reference`` (default: the last commit before issue 21's
work), extracted once into ``WORK/reference`` and run from there (``PYTHONPATH``), so both are measured in the
same run on the same machine. Two masks on the bundled example volume (124 x 86 x 94):

* ``demo``: the demo's model (``wnet-zoo demo`` run once into ``WORK/demo``: the bundled model fine-tuned on the
  example, exported), the case of issue 21's goal;
* ``stress``: CellSeg3D's default architecture with random weights (seed 0, as ``benchmarks/predict.py``): a
  labyrinth of touching blobs (89 % of the volume), where the convex merge tests thousands of pairs.

For each mask, each ``--threads`` value and each code (ours, reference), in turns:

* whole commands, fresh processes, best of the repeats: ``predict`` with the default outputs plus the
  probabilities, and with ``--output probabilities`` alone; the instance stages take the difference (issue 21's
  measure); each command's own peak RSS (``wait4``); ours streamed too (``--stream``, default outputs);
* stage by stage (``instances()`` on the command's probabilities and the image, timed by its ``step`` callback,
  best of 3 in a fresh process of each code), and whether ours gives the reference's labels.

Results in ``benchmarks/results/instances.json`` with the machine (CPU, bf16 or not); compare only within a run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE)]

from predict import _timed  # noqa: E402

RESULTS = HERE / "results" / "instances.json"
REFERENCE = "49b1924"  # the last commit before issue 21's work (2026-12-06)
CODES = ("ours", "reference")


def environment(code: str, work: Path) -> dict[str, str]:
    """The environment that runs ``code``: the reference's package first on the path (checked: a process started
    from this folder imports it)."""
    env = dict(os.environ, PYTHONPATH=str(work / "reference")) if code == "reference" else dict(os.environ)
    script = "import wnet_zoo; print(wnet_zoo.__file__)"
    found = subprocess.run([sys.executable, "-c", script], env=env, cwd=HERE, check=True, capture_output=True)
    expected = (work / "reference" if code == "reference" else ROOT) / "wnet_zoo" / "__init__.py"
    assert Path(found.stdout.decode().strip()) == expected, (code, found.stdout)
    return env


def run_command(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run a whole command (see ``predict._timed``), not from the repository's folder: Python would put it first on
    the path and import ours for the reference."""
    found = _timed(command, env, cwd=HERE)
    return {"seconds": found["seconds"], "peak_rss_mib": found["peak_rss_mib"]}


def prepare(work: Path, reference: str) -> dict[str, Path]:
    """The reference's code, and the ONNX file of each mask's model, made once in ``work``."""
    marker = work / "reference" / "REVISION"
    if not marker.is_file() or marker.read_text() != reference:
        shutil.rmtree(work / "reference", ignore_errors=True)
        (work / "reference").mkdir(parents=True)
        archive = subprocess.run(["git", "archive", reference, "wnet_zoo"], cwd=ROOT, check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(work / "reference")], input=archive.stdout, check=True)
        marker.write_text(reference)
    cli = [sys.executable, "-m", "wnet_zoo.cli"]
    demo = work / "demo"
    if not (demo / "export" / "wnet3d.onnx").exists():
        run_command([*cli, "demo", "--out", str(demo), "--overwrite"], dict(os.environ))
    stress = work / "stress"
    if not (stress / "wnet3d.onnx").exists():
        stress.mkdir(parents=True, exist_ok=True)
        code = f"import sys; sys.path[:0] = [{str(HERE)!r}]; from pathlib import Path; from predict import _prepare; "
        run_command([sys.executable, "-c", code + f"_prepare(Path({str(stress)!r}))"], dict(os.environ))
    return {"demo": demo / "export" / "wnet3d.onnx", "stress": stress / "wnet3d.onnx"}


def commands(model: Path, work: Path, threads: int, repeats: int) -> dict[str, Any]:
    """Best of ``repeats`` of each whole command for each code, run in turns, and the instance stages' share."""
    image = str(ROOT / "wnet_zoo" / "examples" / "c5image.tif")
    base = [sys.executable, "-m", "wnet_zoo.cli", "predict", str(model), image, "--threads", str(threads)]
    base.append("--overwrite")
    outputs = ["--output", "probabilities", "--output", "mask", "--output", "instances"]
    runs = {
        "probabilities": ["--output", "probabilities"],
        "default_and_probabilities": outputs,
        "streamed_default": ["--stream"],
    }
    envs = {code: environment(code, work.parent) for code in CODES}
    timings: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _ in range(repeats):
        for code in CODES:
            for name, options in runs.items():
                if name == "streamed_default" and code == "reference":
                    continue
                out = work / f"{code}_{name}"
                found = run_command([*base, "--out", str(out), *options], envs[code])
                timings.setdefault((code, name), []).append(found)
    result: dict[str, Any] = {}
    for (code, name), runs_of in timings.items():
        best = min(runs_of, key=lambda run: run["seconds"])
        result.setdefault(code, {})[name] = {
            "seconds": round(best["seconds"], 3),
            "peak_rss_mib": max(run["peak_rss_mib"] for run in runs_of),
        }
    for code in CODES:
        seconds = result[code]["default_and_probabilities"]["seconds"] - result[code]["probabilities"]["seconds"]
        result[code]["instance_stages_seconds"] = round(seconds, 3)
    result["instance_stages_speedup"] = round(
        result["reference"]["instance_stages_seconds"] / max(result["ours"]["instance_stages_seconds"], 1e-3), 2
    )
    return result


def stages_in_process(probabilities: Path, labels_out: Path, threads: int) -> dict[str, Any]:
    """Run by :func:`stages` in a fresh process of either code: ``instances()`` stage by stage, best of 3 (by total),
    on the foreground class of ``probabilities`` (the one ``predict`` chose: the metadata's or the brightest)."""
    import numpy as np
    import tifffile

    from wnet_zoo.io.example import example_volume
    from wnet_zoo.segment import nuclei

    classes = tifffile.imread(probabilities)
    image = tifffile.imread(example_volume()).astype(np.float32)
    mask = tifffile.imread(probabilities.parent / probabilities.name.replace("probabilities", "instances")) > 0
    # the class whose voxels the instances came from: the most overlap with them
    probability = classes[int(np.argmax([((c > 0.5) & mask).sum() for c in classes]))]
    keywords = {"threads": threads} if "threads" in nuclei.instances.__code__.co_varnames else {}
    best: dict[str, float] | None = None
    for _ in range(3):
        marks: list[tuple[str, float]] = []
        start = time.perf_counter()
        found = nuclei.instances(
            probability, image, step=lambda name, marks=marks: marks.append((name, time.perf_counter())), **keywords
        )
        end = time.perf_counter()
        times = {n: (marks[i + 1][1] if i + 1 < len(marks) else end) - at for i, (n, at) in enumerate(marks)}
        times["total"] = end - start
        if best is None or times["total"] < best["total"]:
            best = times
    np.save(labels_out, found.labels)
    assert best is not None
    return {name: round(seconds, 3) for name, seconds in best.items()}


def stages(work: Path, threads_values: list[int]) -> dict[str, Any]:
    """Stage times of each code (the reference on one thread: it has no other), and whether the labels agree."""
    import numpy as np

    (probabilities,) = (work / "ours_default_and_probabilities").glob("*probabilities*")
    found: dict[str, Any] = {}
    runs = [("reference", 1)] + [("ours", threads) for threads in threads_values]
    for code, threads in runs:
        labels = work / f"labels_{code}_{threads}.npy"
        script = (
            f"import json, sys; sys.path[:0] = [{str(HERE)!r}]; from pathlib import Path; import instances; "
            f"print(json.dumps(instances.stages_in_process(Path({str(probabilities)!r}), "
            f"Path({str(labels)!r}), {threads})))"
        )
        command = [sys.executable, "-c", script]
        output = subprocess.run(command, env=environment(code, work.parent), cwd=HERE, check=True, capture_output=True)
        name = "reference" if code == "reference" else f"ours_threads_{threads}"
        found[name] = json.loads(output.stdout.decode().strip().splitlines()[-1])
    reference = np.load(work / "labels_reference_1.npy")
    found["same_labels"] = all(
        np.array_equal(np.load(work / f"labels_ours_{threads}.npy"), reference) for threads in threads_values
    )
    found["labels"] = int(reference.max())
    for threads in threads_values:
        ours = found[f"ours_threads_{threads}"]
        found[f"speedup_threads_{threads}"] = {
            stage: round(seconds / max(ours[stage], 1e-3), 2) for stage, seconds in found["reference"].items()
        }
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=5, help="of each demo command (best taken)")
    parser.add_argument("--stress-repeats", type=int, default=1, help="of each stress command (about 30 s each)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--reference", default=REFERENCE, help="git revision of the code to compare with")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat(),
        "reference": args.reference,
        "masks": {},
    }
    models = prepare(work, args.reference)
    for mask, model in models.items():
        repeats = args.repeats if mask == "demo" else args.stress_repeats
        entry: dict[str, Any] = {"model": str(model.relative_to(work)), "repeats": repeats}
        for threads in args.threads:
            entry[f"threads_{threads}"] = commands(model, work / mask, threads, repeats)
            print(mask, threads, json.dumps(entry[f"threads_{threads}"]), flush=True)
        record["masks"][mask] = entry
    from quality import machine  # imports torch: after the commands

    record["machine"] = machine(None)
    for mask in models:
        record["masks"][mask]["stages"] = stages(work / mask, args.threads)
        print(mask, json.dumps(record["masks"][mask]["stages"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    staged = args.out.with_name(f".{args.out.name}.partial")
    staged.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(staged, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

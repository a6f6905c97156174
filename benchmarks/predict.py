"""``wnet-zoo predict`` against CellSeg3D's inference path, whole commands timed as subprocesses.

    python benchmarks/predict.py [--threads N] [--repeats 1] [--openvino-python /tmp/ovenv/bin/python]

Model: the DEFAULT WNet3D architecture (64, 128, 256, 512), random weights (seed 0), exported with
``export_onnx``; image: the bundled example volume (124 x 86 x 94). Each run is a fresh process, from start
to its files on disk; both write the probabilities (K, Z, Y, X) and the mask of the brightest class:

* reference: CellSeg3D's path, ``python benchmarks/predict.py reference WEIGHTS IMAGE OUT THREADS``: imports
  torch, MONAI and CellSeg3D's ``WNet``, loads the weights, reads the TIFF, remaps to 0..100,
  ``sliding_window_inference`` (ROI 64^3, overlap 0.25, Gaussian, sw_batch_size 1) over ``forward_encoder`` in
  torch eager fp32, writes the TIFFs (``... THREADS DEVICE WINDOWS``: on another device, more windows a batch;
  ``predict_gpu.py`` runs it so);
* ``wnet-zoo predict --output probabilities --output mask`` with default tiling on plain CPU onnxruntime, and
  on OpenVINO when ``--openvino-python`` names an interpreter that has ``onnxruntime-openvino`` and
  wnet-zoo (e.g. a venv made with ``--system-site-packages``); plus the default outputs (mask and instances).

Same thread count for all; every kind of process imports once, untimed, before the timed runs (on a fresh
machine the first command otherwise reads torch from a cold disk: 25.4 s instead of 22.2 for the reference).
Reported: seconds (median over ``--repeats``), voxels per second, speed-up over
the reference, peak RSS of the process (``wait4``), mask Dice and probability differences against the
reference, the provider printed by the command, CPU model and bf16 support, and the seconds the imports
alone take in each kind of process (``wnet-zoo predict`` imports no torch). A second
table runs ``Predictor.probabilities`` in one process (fastest engine available) over tile x overlap:
voxels/s and mask Dice against the reference. Results go to ``benchmarks/results/predict.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "predict.json"
TILES = (32, 64, 96)
OVERLAPS = (0.0, 0.25, 0.5)
STARTUP = {  # the imports alone: what a command pays before its first tile
    "reference_imports": [
        sys.executable,
        "-c",
        "import torch, monai.inferers, tifffile; from napari_cellseg3d.code_models.models.wnet.model import WNet",
    ],
    "wnet_zoo_cli_imports": [sys.executable, "-c", "import wnet_zoo.cli, wnet_zoo.prediction.files, onnxruntime"],
    "of_which_torch": [sys.executable, "-c", "import torch"],
}
GOALS = {
    "cpu": {"goal": 1.2, "floor": 0.9},
    "openvino_bf16": {"goal": 8.0, "floor": 4.0, "dice": 0.99},
    "openvino_fp32": {"goal": 1.3, "floor": 1.05},
}


def reference(weights: str, image: str, out: str, threads: int, device: str = "cpu", windows: int = 1) -> None:
    """CellSeg3D's path, as its inference worker runs it (sigma_scale at MONAI's default), on ``device`` (the volume
    there too) with ``windows`` per batch."""
    import numpy as np
    import tifffile
    import torch
    from monai.inferers import sliding_window_inference
    from napari_cellseg3d.code_models.models.wnet.model import WNet

    torch.set_num_threads(threads)
    model = WNet(1, 1, 2)
    model.load_state_dict(torch.load(weights, weights_only=True), strict=True)
    model.eval().to(device)
    volume = tifffile.imread(image).astype(np.float32)
    remapped = (volume - volume.min()) / (volume.max() - volume.min()) * 100
    with torch.no_grad():
        inputs = torch.from_numpy(remapped)[None, None].to(device)
        probabilities = (
            sliding_window_inference(
                inputs, (64, 64, 64), windows, model.forward_encoder, overlap=0.25, mode="gaussian"
            )[0]
            .cpu()
            .numpy()
        )
    winner = probabilities.argmax(axis=0)
    means = [volume[winner == k].mean() if (winner == k).any() else -np.inf for k in range(len(probabilities))]
    stem = Path(out) / Path(image).stem
    tifffile.imwrite(f"{stem}_probabilities.tif", probabilities)
    tifffile.imwrite(f"{stem}_mask.tif", (winner == int(np.argmax(means))).astype(np.uint8))


def table(model: str, image: str, reference_mask: str, threads: int) -> None:
    """Tile x overlap in one process with the fastest engine here; prints JSON rows."""
    import numpy as np
    import tifffile

    from wnet_zoo.io.volumes import read_volume
    from wnet_zoo.prediction.foreground import choose_foreground
    from wnet_zoo.prediction.predictor import Predictor

    volume = read_volume(image)
    expected = tifffile.imread(reference_mask).astype(bool)
    rows = []
    for tile in TILES:
        predictor = Predictor(model, threads=threads, tile=tile)
        predictor.engine.run(np.zeros((1, 1, tile, tile, tile), dtype=np.float32))  # compile outside the timing
        for overlap in OVERLAPS:
            predictor.tiling = replace(predictor.tiling, overlap=overlap)
            start = time.perf_counter()
            probabilities = predictor.probabilities(volume)
            seconds = time.perf_counter() - start
            foreground, _ = choose_foreground(probabilities, volume, predictor.metadata)
            mask = probabilities.argmax(axis=0) == foreground
            rows.append(
                {
                    "tile": tile,
                    "overlap": overlap,
                    "provider": predictor.provider,
                    "precision": predictor.engine.precision,
                    "seconds": round(seconds, 2),
                    "voxels_per_second": round(volume.size / seconds),
                    "mask_dice": round(_dice(mask, expected), 5),
                }
            )
    print(json.dumps(rows))


def _dice(a, b) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def _timed(command: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> dict:
    """Run a whole command: its wall time, its own peak RSS (from ``wait4``; a child's peak starts at its parent's,
    so the caller stays small) and its standard output."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=cwd, env=env)
    assert process.stdout is not None
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed with exit code {process.returncode}")
    return {"seconds": seconds, "stdout": stdout, "peak_rss_mib": round(usage.ru_maxrss / 1024)}


def _prepare(work: Path) -> tuple[Path, Path]:
    import torch

    from wnet_zoo.export.onnx import export_onnx
    from wnet_zoo.model.wnet import WNet3D
    from wnet_zoo.prediction.metadata import ModelMetadata

    torch.manual_seed(0)
    model = WNet3D().eval()
    onnx_path = export_onnx(model, work / "wnet3d.onnx", ModelMetadata(num_classes=2, name="wnet3d-random"))
    weights = work / "wnet3d.pt"
    torch.save(model.state_dict(), weights)
    return onnx_path, weights


def _compare(out: Path, reference_out: Path, stem: str) -> dict:
    import numpy as np
    import tifffile

    mask = tifffile.imread(out / f"{stem}_mask.tif").astype(bool)
    expected = tifffile.imread(reference_out / f"{stem}_mask.tif").astype(bool)
    row = {"mask_dice": round(_dice(mask, expected), 5)}
    if (out / f"{stem}_probabilities.tif").exists():
        difference = np.abs(
            tifffile.imread(out / f"{stem}_probabilities.tif")
            - tifffile.imread(reference_out / f"{stem}_probabilities.tif")
        )
        row |= {"max_abs_diff": float(difference.max()), "mean_abs_diff": float(difference.mean())}
    return row


def _provider(stdout: str) -> str:
    line = next((line for line in stdout.splitlines() if line.startswith("provider ")), "")
    return line.removeprefix("provider ")


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")


def _versions(python: str) -> dict:
    code = (
        "import onnxruntime, json; print(json.dumps([onnxruntime.__version__, onnxruntime.get_available_providers()]))"
    )
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    version, providers = json.loads(result.stdout)
    return {"onnxruntime": version, "providers": providers}


def main() -> None:
    from wnet_zoo.prediction.runtime import cpu_supports_bf16, default_threads

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--repeats", type=int, default=1)
    default_ov = "/tmp/ovenv/bin/python"
    parser.add_argument("--openvino-python", default=default_ov if Path(default_ov).exists() else None)
    parser.add_argument("--no-table", action="store_true", help="skip the tile x overlap table")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON goes (another machine's)")
    args = parser.parse_args()

    from wnet_zoo.io.example import example_volume

    image = example_volume()
    voxels = 124 * 86 * 94
    with tempfile.TemporaryDirectory(prefix="wnet-zoo-bench-") as folder:
        work = Path(folder)
        model, weights = _prepare(work)
        threads = str(args.threads)
        ours = ["-m", "wnet_zoo.cli", "predict", str(model), str(image), "--threads", threads, "--overwrite"]
        both = ["--output", "probabilities", "--output", "mask"]
        runs = {
            "reference": [sys.executable, __file__, "reference", str(weights), str(image), "{out}", threads],
            "cpu": [sys.executable, *ours, *both, "--device", "cpu", "--out", "{out}"],
        }
        if args.openvino_python:
            runs["openvino"] = [args.openvino_python, *ours, *both, "--device", "openvino", "--out", "{out}"]
            runs["openvino_default_outputs"] = [args.openvino_python, *ours, "--device", "openvino", "--out", "{out}"]
        warm = list(STARTUP.values())
        if args.openvino_python:
            warm.append([args.openvino_python, *STARTUP["wnet_zoo_cli_imports"][1:]])
        for command in warm:  # the file cache warm, so that the first timed command pays no more
            subprocess.run(command, cwd=ROOT, capture_output=True, check=True)
        measured: dict[str, list[dict]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, command in runs.items():
                out = work / name
                out.mkdir(exist_ok=True)
                measured[name].append(_timed([part.replace("{out}", str(out)) for part in command]))
                print(f"{name}: {measured[name][-1]['seconds']:.1f} s", file=sys.stderr)

        startup = {name: round(_timed(command)["seconds"], 2) for name, command in STARTUP.items()}
        base = statistics.median(m["seconds"] for m in measured["reference"])
        rows = {}
        for name, results in measured.items():
            seconds = statistics.median(m["seconds"] for m in results)
            row = {
                "seconds": round(seconds, 2),
                "all_seconds": [round(m["seconds"], 2) for m in results],
                "voxels_per_second": round(voxels / seconds),
                "speedup": round(base / seconds, 3),
                "peak_rss_mib": max(m["peak_rss_mib"] for m in results),
                "provider": _provider(results[-1]["stdout"]) or "torch eager fp32 (CPU)",
            }
            if name != "reference":
                row |= _compare(work / name, work / "reference", image.stem)
            rows[name] = row

        grid = None
        if not args.no_table:
            python = args.openvino_python or sys.executable
            reference_mask = work / "reference" / f"{image.stem}_mask.tif"
            command = [python, __file__, "table", str(model), str(image), str(reference_mask), threads]
            grid = json.loads(_timed(command)["stdout"])

    bf16 = cpu_supports_bf16()
    openvino_goal = GOALS["openvino_bf16" if bf16 else "openvino_fp32"]
    for name, goal in (("cpu", GOALS["cpu"]), ("openvino", openvino_goal)):
        if name in rows:
            rows[name]["goal"] = goal
            rows[name]["meets_floor"] = rows[name]["speedup"] >= goal["floor"]
            rows[name]["meets_goal"] = rows[name]["speedup"] >= goal["goal"]
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "what": "whole commands as subprocesses (start, reading, inference, writing), median seconds",
        "model": "WNet3D default architecture (64, 128, 256, 512), random weights (seed 0), encoder + softmax",
        "image": "bundled example c5image.tif, 124 x 86 x 94",
        "tiling": "64^3 windows, overlap 0.25, gaussian blend (sigma 0.125), global 0..100 remap",
        "threads": args.threads,
        "repeats": args.repeats,
        "cpu": _cpu_model(),
        "cpu_bf16": bf16,
        "machine": f"{platform.machine()}, {os.cpu_count()} logical cores visible, shared with other jobs",
        "python": platform.python_version(),
        "runtimes": {"cpu": _versions(sys.executable)}
        | ({"openvino": _versions(args.openvino_python)} if args.openvino_python else {}),
        "results": rows,
        "startup_seconds": startup,
        "tile_overlap_table": grid,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"{'run':26} {'seconds':>8} {'voxels/s':>10} {'speed-up':>8} {'RSS MiB':>8} {'Dice':>8}  provider")
    for name, row in rows.items():
        dice = row.get("mask_dice", "")
        print(
            f"{name:26} {row['seconds']:8.1f} {row['voxels_per_second']:10d} {row['speedup']:8.2f} "
            f"{row['peak_rss_mib']:8d} {dice!s:>8}  {row['provider']}"
        )
    for row in grid or []:
        print(
            f"tile {row['tile']:3d} overlap {row['overlap']:.2f}: {row['voxels_per_second']:8d} voxels/s, "
            f"Dice {row['mask_dice']:.4f} ({row['provider']}, {row['precision']})"
        )
    print(f"written {args.results}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "reference":
        reference(*sys.argv[2:5], int(sys.argv[5]), *sys.argv[6:7], *map(int, sys.argv[7:8]))
    elif len(sys.argv) > 1 and sys.argv[1] == "table":
        sys.path.insert(0, str(ROOT))
        table(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        sys.path.insert(0, str(ROOT))
        main()

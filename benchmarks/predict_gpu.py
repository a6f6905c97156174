"""``wnet-zoo predict`` on an NVIDIA GPU against CellSeg3D's path on the same GPU, whole commands timed.

    python benchmarks/predict_gpu.py [--repeats 2] [--results benchmarks/results/predict_gpu.json]

Needs onnxruntime-gpu (the ``[gpu]`` extra), torch with CUDA, MONAI and CellSeg3D's code. ``--device cpu`` runs
the same steps on the CPU (a dry run of this script on a machine without a GPU).

Model: the default WNet3D (64, 128, 256, 512), random weights (seed 0), exported with ``export_onnx``. Images: the
bundled example (124 x 86 x 94) and a large volume mirrored from it (248 x 344 x 376, 32 M voxels). Per image, each
a fresh process, from start to its files on disk:

* reference: CellSeg3D's path on the GPU (``predict.py reference``): torch eager fp32, MONAI's
  ``sliding_window_inference`` (ROI 64^3, overlap 0.25, Gaussian, 4 windows per batch, the volume on the GPU)
  over ``forward_encoder``, probabilities and the mask of the brightest class written as TIFF;
* ``wnet-zoo predict --device cuda --output probabilities --output mask`` (default tiling; 4 windows per run);
* ``wnet-zoo predict`` with the default device and outputs (the provider ``auto`` picks; mask and instances).

In one process: the model converted to fp16 (``onnxruntime.transformers.float16``, float32 inputs and outputs)
against fp32 over the large volume: seconds and mask Dice. Checks: ``--device tensorrt`` without TensorRT's
libraries exits with code 2 and one line; a ``--batch`` larger than the GPU holds goes on with smaller batches and
gives the mask of batch 4.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import predict  # noqa: E402
from predict import _compare, _dice, _prepare, _provider, _timed  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "predict_gpu.json"
LARGE_PAD = ((0, 124), (0, 258), (0, 282))  # the example mirrored to 248 x 344 x 376
OOM_SHAPE = (512, 512, 512)  # 1331 windows of 64^3 at overlap 0.25
OOM_BATCH = 1331


def precisions(model: str, image: str, device: str) -> None:
    """fp32 against fp16 (I/O kept float32) in one process; prints a JSON object."""
    import numpy as np
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from wnet_zoo.io.volumes import read_volume
    from wnet_zoo.prediction.foreground import choose_foreground
    from wnet_zoo.prediction.predictor import Predictor

    half = Path(model).with_name("wnet3d_fp16.onnx")
    onnx.save(convert_float_to_float16(onnx.load(model), keep_io_types=True), half)
    volume = read_volume(image)
    masks, rows = {}, {}
    for name, path in (("fp32", model), ("fp16", str(half))):
        predictor = Predictor(path, device=device)
        predictor.probabilities(volume[:64, :64, :64])  # warm-up: cuDNN's algorithm search, the arena
        start = time.perf_counter()
        probabilities = predictor.probabilities(volume)
        seconds = time.perf_counter() - start
        foreground, _ = choose_foreground(probabilities, volume, predictor.metadata)
        masks[name] = probabilities.argmax(axis=0) == foreground
        rows[name] = {
            "seconds": round(seconds, 2),
            "voxels_per_second": round(volume.size / seconds),
            "finite": bool(np.isfinite(probabilities).all()),
            "provider": predictor.provider,
        }
    rows["fp16"]["mask_dice_vs_fp32"] = round(_dice(masks["fp16"], masks["fp32"]), 5)
    rows["fp16"]["speedup_vs_fp32"] = round(rows["fp32"]["seconds"] / rows["fp16"]["seconds"], 3)
    print(json.dumps(rows))


def _run(command: list[str], timeout: float) -> dict:
    """A command that may fail: exit code, seconds, last lines of its output."""
    start = time.perf_counter()
    try:
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"returncode": None, "seconds": timeout, "output": "timed out"}
    lines = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr).strip().splitlines()  # no colours
    printed = result.stdout.strip().splitlines()
    return {
        "returncode": result.returncode,
        "seconds": round(time.perf_counter() - start, 2),
        "output": lines[-4:],
        "stdout_last": printed[-1] if printed else "",
    }


def _gpu() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"gpu": None, "torch": torch.__version__}
    return {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cudnn": torch.backends.cudnn.version()}


def main() -> None:
    import numpy as np
    import tifffile

    from wnet_zoo.io.example import example_volume
    from wnet_zoo.prediction.runtime import default_threads

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a dry run")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--large-pad", default=",".join(str(p[1]) for p in LARGE_PAD), help="z,y,x voxels added")
    parser.add_argument("--oom-size", type=int, default=OOM_SHAPE[0], help="edge of the volume for the OOM check")
    parser.add_argument("--oom-batch", type=int, default=OOM_BATCH)
    args = parser.parse_args()
    torch_device = "cuda" if args.device in ("cuda", "tensorrt") else "cpu"

    example = example_volume()
    report: dict = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "what": "whole commands as subprocesses (start, reading, inference, writing), median seconds",
        "model": "WNet3D default architecture (64, 128, 256, 512), random weights (seed 0), encoder + softmax",
        "tiling": "64^3 windows, overlap 0.25, gaussian blend (sigma 0.125), global 0..100 remap, 4 windows a run",
        "device": args.device,
        "repeats": args.repeats,
        "python": platform.python_version(),
        **_gpu(),
        "onnxruntime": json.loads(
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import onnxruntime as o, json; print(json.dumps([o.__version__, o.get_available_providers()]))",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        ),
        "images": {},
    }
    with tempfile.TemporaryDirectory(prefix="wnet-zoo-gpu-") as folder:
        work = Path(folder)
        model, weights = _prepare(work)
        pad = [int(p) for p in args.large_pad.split(",")]
        large = work / "large.tif"
        tifffile.imwrite(large, np.pad(tifffile.imread(example), [(0, p) for p in pad], mode="symmetric"))
        ours = [sys.executable, "-m", "wnet_zoo.cli", "predict", str(model), "--overwrite"]
        reference = [sys.executable, predict.__file__, "reference"]  # CellSeg3D's path, on the GPU
        threads = str(default_threads())
        for image in (example, large):
            shape = tifffile.imread(image).shape
            runs = {
                "reference": [*reference, str(weights), str(image), "{out}", threads, torch_device, "4"],
                "wnet_zoo": [
                    *ours,
                    str(image),
                    "--device",
                    args.device,
                    "--output",
                    "probabilities",
                    "--output",
                    "mask",
                    "--out",
                    "{out}",
                ],
                "wnet_zoo_auto_default_outputs": [*ours, str(image), "--out", "{out}"],
            }
            measured: dict[str, list[dict]] = {name: [] for name in runs}
            for _ in range(args.repeats):
                for name, command in runs.items():
                    out = work / image.stem / name
                    out.mkdir(parents=True, exist_ok=True)
                    measured[name].append(_timed([part.replace("{out}", str(out)) for part in command]))
                    print(f"{image.stem} {name}: {measured[name][-1]['seconds']:.1f} s", file=sys.stderr)
            base = statistics.median(m["seconds"] for m in measured["reference"])
            rows = {}
            for name, results in measured.items():
                seconds = statistics.median(m["seconds"] for m in results)
                rows[name] = {
                    "seconds": round(seconds, 2),
                    "all_seconds": [round(m["seconds"], 2) for m in results],
                    "voxels_per_second": round(int(np.prod(shape)) / seconds),
                    "speedup": round(base / seconds, 3),
                    "peak_rss_mib": max(m["peak_rss_mib"] for m in results),
                    "provider": _provider(results[-1]["stdout"]) or f"torch eager fp32 ({torch_device})",
                }
                if name != "reference":
                    rows[name] |= _compare(work / image.stem / name, work / image.stem / "reference", image.stem)
            report["images"][image.name] = {"shape": list(shape), "results": rows}

        fp16 = _run([sys.executable, __file__, "precisions", str(model), str(large), args.device], 300)
        report["fp16"] = json.loads(fp16.pop("stdout_last")) if fp16["returncode"] == 0 else fp16
        report["tensorrt_without_libraries"] = _run(
            [*ours, str(example), "--device", "tensorrt", "--out", str(work / "trt")], 120
        )
        oom = work / "oom.tif"
        rng = np.random.default_rng(0)
        tifffile.imwrite(oom, rng.normal(100, 10, (args.oom_size,) * 3).astype(np.float32))
        for name, batch in (("batch_4", 4), ("batch_oom", args.oom_batch)):
            check = _run(
                [
                    *ours,
                    str(oom),
                    "--device",
                    args.device,
                    "--batch",
                    str(batch),
                    "--output",
                    "mask",
                    "--out",
                    str(work / name),
                ],
                240,
            )
            report[f"large_batch_{name}"] = check
        masks = [work / name / "oom_mask.tif" for name in ("batch_4", "batch_oom")]
        if all(path.exists() for path in masks):
            report["large_batch_mask_dice"] = _dice(*(tifffile.imread(p).astype(bool) for p in masks))

    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    for image, entry in report["images"].items():
        for name, row in entry["results"].items():
            print(
                f"{image:14} {name:30} {row['seconds']:8.2f} s {row['voxels_per_second']:>11} vox/s "
                f"x{row['speedup']:.2f} Dice {row.get('mask_dice', '')!s:8} {row['provider']}"
            )
    print("fp16:", json.dumps(report["fp16"]))
    print("tensorrt:", json.dumps(report["tensorrt_without_libraries"]))
    print("oom:", json.dumps({k: v for k, v in report.items() if k.startswith("large_batch")}))
    print(f"written {args.results}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "precisions":
        sys.path.insert(0, str(ROOT))
        precisions(*sys.argv[2:5])
    else:
        sys.path.insert(0, str(ROOT))
        main()

"""Peak memory of streaming ``wnet-zoo predict`` as the volume grows: it must stay flat.

    python benchmarks/memory.py [--sizes 32MiB 512MiB 2GiB] [--formats zarr tiff] [--threads 2]

Model: WNet3D with channels (4, 8, 16, 32), random weights (seed 0), exported with ``export_onnx``. Volumes:
uint16, made on the fly without holding them (the bundled example's first 64^3 voxels repeated), as an
uncompressed TIFF stack and as a zarr array (64^3 chunks): 64 x 512 x 512 (32 MiB), 256 x 1024 x 1024
(512 MiB) and 1024 x 1024 x 1024 (2 GiB). Every run is the whole command, ``wnet-zoo predict MODEL VOLUME
--out DIR --device cpu --stream`` with the default outputs (mask and instances, plus the labels table), as a
fresh process; its own peak RSS comes from ``wait4``. Reported per run: seconds, voxels per second, peak RSS,
nuclei found; and whether every run's peak is within 15 % of the smallest volume's and at most 1 GiB.
Results are written to ``benchmarks/results/memory.json`` after every run (a long run leaves what it measured);
runs of sizes and formats not measured this time are kept from the file, each run carrying its own date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "memory.json"
SIZES = {"32MiB": (64, 512, 512), "512MiB": (256, 1024, 1024), "2GiB": (1024, 1024, 1024)}
FLAT = 0.15
CEILING_MIB = 1024


def texture() -> np.ndarray:
    """A 64^3 uint16 block of real light-sheet nuclei (the bundled example)."""
    import tifffile

    from wnet_zoo.io.example import example_volume

    return tifffile.imread(example_volume())[:64, :64, :64].astype(np.uint16)


def planes(shape: tuple[int, int, int], block: np.ndarray) -> Iterator[np.ndarray]:
    """The volume's z planes, one at a time: ``block`` repeated over y and x, cycling in z."""
    reps = (shape[1] // block.shape[1], shape[2] // block.shape[2])
    for z in range(shape[0]):
        yield np.tile(block[z % block.shape[0]], reps)


def write_tiff(path: Path, shape: tuple[int, int, int]) -> None:
    """An uncompressed (Big)TIFF stack, written plane by plane."""
    import tifffile

    tifffile.imwrite(path, planes(shape, texture()), shape=shape, dtype=np.uint16, bigtiff=True)


def write_zarr(path: Path, shape: tuple[int, int, int]) -> None:
    """A zarr array of 64^3 chunks, written one 64-plane slab at a time."""
    import zarr

    block = texture()
    array = zarr.create_array(str(path), shape=shape, chunks=(64, 64, 64), dtype=np.uint16)
    reps = (1, shape[1] // 64, shape[2] // 64)
    for z in range(0, shape[0], 64):
        array[z : z + 64] = np.tile(block, reps)[: shape[0] - z]


def export_model(path: Path) -> None:
    """The small-channel model, random weights (seed 0)."""
    import torch

    from wnet_zoo.export.onnx import export_onnx
    from wnet_zoo.model.wnet import WNet3D
    from wnet_zoo.prediction.metadata import ModelMetadata

    torch.manual_seed(0)
    export_onnx(WNet3D(channels=(4, 8, 16, 32)).eval(), path, ModelMetadata(num_classes=2, name="small"))


def measure(command: list[str]) -> dict[str, object]:
    """Run a whole command: wall time, its own peak RSS (``wait4``) and its output."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stdout}")
    return {"seconds": round(seconds, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024), "stdout": stdout}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--formats", nargs="+", default=["zarr", "tiff"], choices=["zarr", "tiff"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--work", type=Path, default=None, help="Folder for volumes and results (default: a temp one).")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wnet-zoo-memory-", dir=args.work))
    model = work / "small.onnx"
    export_model(model)
    report: dict[str, object] = {
        "benchmark": "streaming wnet-zoo predict, default outputs, peak RSS against volume size",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "threads": args.threads,
        },
        "model": "WNet3D channels (4, 8, 16, 32), random weights (seed 0)",
        "command": "wnet-zoo predict MODEL VOLUME --out DIR --device cpu --stream --threads N",
        "runs": _earlier_runs(args.sizes, args.formats),
    }
    runs: list[dict[str, object]] = report["runs"]  # type: ignore[assignment]
    try:
        for size in args.sizes:
            shape = SIZES[size]
            for fmt in args.formats:
                volume = work / (f"volume_{size}.zarr" if fmt == "zarr" else f"volume_{size}.tif")
                (write_zarr if fmt == "zarr" else write_tiff)(volume, shape)
                out = work / f"out_{size}_{fmt}"
                command = [
                    sys.executable, "-m", "wnet_zoo.cli", "predict", str(model), str(volume), "--out", str(out),
                    "--device", "cpu", "--stream", "--threads", str(args.threads),
                ]  # fmt: skip
                result = measure(command)
                voxels = int(np.prod(shape))
                nuclei = [line for line in str(result.pop("stdout")).splitlines() if "nuclei" in line]
                runs.append(
                    {
                        "size": size,
                        "input": fmt,
                        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                        "shape": list(shape),
                        "input_mib": voxels * 2 // 2**20,
                        **result,
                        "voxels_per_s": round(voxels / float(result["seconds"])),  # type: ignore[arg-type]
                        "summary": nuclei[-1] if nuclei else "",
                    }
                )
                print(json.dumps(runs[-1]), flush=True)
                shutil.rmtree(out, ignore_errors=True)
                shutil.rmtree(volume, ignore_errors=True) if fmt == "zarr" else volume.unlink()
                _verdict(report)
                RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _earlier_runs(sizes: list[str], formats: list[str]) -> list[dict[str, object]]:
    """The runs in the results file that this invocation does not measure again (dated by their file)."""
    if not RESULTS.exists():
        return []
    earlier = json.loads(RESULTS.read_text())
    kept = [run for run in earlier["runs"] if not (run["size"] in sizes and run["input"] in formats)]
    return [{**run, "date": run.get("date", earlier["date"])} for run in kept]


def _verdict(report: dict[str, object]) -> None:
    runs = report["runs"]
    for fmt in ("zarr", "tiff"):
        mine = [r for r in runs if r["input"] == fmt]  # type: ignore[index, union-attr]
        if len(mine) < 2:
            continue
        smallest = min(mine, key=lambda r: r["input_mib"])
        highest = max(mine, key=lambda r: r["peak_rss_mib"])  # any size over the smallest's: not flat
        growth = highest["peak_rss_mib"] / smallest["peak_rss_mib"] - 1
        report[f"{fmt}_peak_growth"] = round(growth, 3)
        report[f"{fmt}_meets_goal"] = growth <= FLAT and highest["peak_rss_mib"] <= CEILING_MIB


if __name__ == "__main__":
    main()

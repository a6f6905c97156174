"""Streaming prediction in one process against 1 and 2 local Dask workers, in one run.

    python benchmarks/dask_scaling.py [--shape 64,512,512] [--threads 2]

Model: WNet3D with channels (4, 8, 16, 32), random weights (seed 0). Volume: a uint16 zarr array (64^3 chunks)
of the bundled example's first 64^3 voxels repeated. Each run is the whole command, ``wnet-zoo predict MODEL
VOLUME --out DIR --device cpu`` (default outputs: mask and instances), as a fresh process:

* one process, ``--threads N``;
* ``--scheduler local:1``: one worker process with N threads for ONNX Runtime;
* ``--scheduler local:2``: two worker processes, N / 2 threads each.

All runs use the same N cores, so on one machine Dask adds scheduling and start-up, and gains only where one
process leaves cores idle (the labelling phase runs single-threaded in scipy); across machines throughput adds
up per worker. Reported: seconds, voxels/s and the ratio to the one-process run; the results must be equal
(checked: probabilities are not written, the masks and instance labels are compared). Results go to
``benchmarks/results/dask_scaling.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import export_model, write_zarr  # noqa: E402  (a sibling script)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "dask_scaling.json"
RUNS = {"one process": [], "dask local:1": ["--scheduler", "local:1"], "dask local:2": ["--scheduler", "local:2"]}


def main() -> None:
    import subprocess

    import zarr

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="64,512,512", help="z,y,x of the volume, multiples of 64")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    load = [round(x, 2) for x in os.getloadavg()]
    shape = tuple(int(v) for v in args.shape.split(","))
    voxels = int(np.prod(shape))
    with tempfile.TemporaryDirectory(prefix="wnet-zoo-dask-") as folder:
        work = Path(folder)
        export_model(work / "small.onnx")
        write_zarr(work / "volume.zarr", shape)  # type: ignore[arg-type]
        rows: dict[str, dict[str, object]] = {}
        reference: dict[str, np.ndarray] = {}
        for name, extra in RUNS.items():
            out = work / name.replace(" ", "_").replace(":", "")
            command = [
                sys.executable, "-m", "wnet_zoo.cli", "predict", str(work / "small.onnx"), str(work / "volume.zarr"),
                "--out", str(out), "--device", "cpu", "--threads", str(args.threads), *extra,
            ]  # fmt: skip
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            seconds = time.perf_counter() - start
            results = {
                kind: zarr.open(str(out / f"volume_{kind}.zarr"), mode="r")[...] for kind in ("mask", "instances")
            }
            reference = reference or results
            equal = all(np.array_equal(results[k], reference[k]) for k in results)
            rows[name] = {"seconds": round(seconds, 1), "voxels_per_s": round(voxels / seconds), "equal": equal}
            print(name, rows[name], flush=True)
    baseline = float(rows["one process"]["seconds"])  # type: ignore[arg-type]
    for row in rows.values():
        row["speed_vs_one_process"] = round(baseline / float(row["seconds"]), 2)  # type: ignore[arg-type]
    report = {
        "benchmark": "streaming wnet-zoo predict: one process vs Dask LocalCluster workers, same cores",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "threads": args.threads,
        },
        "load_average_at_start": load,
        "model": "WNet3D channels (4, 8, 16, 32), random weights (seed 0)",
        "volume": {"shape": list(shape), "dtype": "uint16", "format": "zarr, 64^3 chunks"},
        "runs": rows,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

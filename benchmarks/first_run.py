"""How long a new user's first runs take: on this CPU as it is, and as a CPU without AVX-512 and bf16 (emulated).

    python benchmarks/first_run.py --work DIR [--cpus native no-bf16] [--repeats N] [--out JSON]

Two commands, each in its own process, timed wall-clock (best of ``--repeats``; what trained is the last
repeat's):

* ``wnet-zoo demo``: fine-tunes the bundled model on the example volume, exports it, predicts, draws the preview;
* ``wnet-zoo finetune c5image.tif --out RUN``: the bundled model fine-tuned with the defaults on the example
  volume, a 1 M-voxel stack (124 x 86 x 94).

``no-bf16`` stands for the CPUs of most laptops and of AMD EPYCs before Zen 4, on a CPU that has AVX-512 and bf16:
PyTorch's kernels and oneDNN's are held to AVX2 (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``) and training
runs in float32, as it chooses to there. ONNX Runtime's kernels are not held back (prediction is a few seconds of
the demo). Such CPUs also differ in clock and caches: the emulation measures what the missing instructions cost,
not what a given laptop takes. Results go to ``benchmarks/results/first_run.json`` with the machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from quality import machine, training_summary  # noqa: E402

RESULTS = HERE / "results" / "first_run.json"
EXAMPLE = HERE.parent / "wnet_zoo" / "examples" / "c5image.tif"
AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
# Training asks wnet_zoo.training.device whether the CPU computes bf16 natively; the emulated CPU does not.
RUN_CLI = "import sys; from wnet_zoo.cli import main; sys.exit(main(sys.argv[1:]))"
RUN_CLI_WITHOUT_BF16 = "import wnet_zoo.training.device as d; d.bf16_supported = lambda device: False; " + RUN_CLI


def command_line(cpu: str, arguments: list[str]) -> tuple[list[str], dict[str, str]]:
    """The process (``python -c ...``) and environment that run ``wnet-zoo ARGUMENTS`` on ``cpu``."""
    environment = dict(os.environ)
    if cpu == "no-bf16":
        environment.update(AVX2_ONLY)
        return [sys.executable, "-c", RUN_CLI_WITHOUT_BF16, *arguments], environment
    return [sys.executable, "-c", RUN_CLI, *arguments], environment


def timed(cpu: str, arguments: list[str]) -> float:
    """Run ``wnet-zoo ARGUMENTS`` on ``cpu`` to completion; its wall-clock seconds (failure stops the script)."""
    command, environment = command_line(cpu, arguments)
    start = time.perf_counter()
    done = subprocess.run(command, env=environment, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"wnet-zoo {' '.join(arguments)} exited with {done.returncode}:\n{done.stderr[-2000:]}")
    return seconds


def measure(cpu: str, work: Path, repeats: int) -> dict[str, Any]:
    """Best-of-``repeats`` seconds of the demo and of the 1 M-voxel fine-tuning on ``cpu``, with what trained."""
    demo, run = work / f"demo_{cpu}", work / f"finetune_{cpu}"
    demo_seconds = min(timed(cpu, ["demo", "--out", str(demo), "--overwrite"]) for _ in range(repeats))
    finetune_seconds = min(
        timed(cpu, ["finetune", str(EXAMPLE), "--out", str(run), "--overwrite"]) for _ in range(repeats)
    )
    config = yaml.safe_load((run / "config.yaml").read_text())
    demo_bf16 = yaml.safe_load((demo / "run" / "config.yaml").read_text())["bf16"]
    if cpu == "no-bf16" and (config["bf16"] or demo_bf16):
        raise SystemExit("the no-bf16 emulation trained in bf16: wnet_zoo.training.device no longer decides it")
    nuclei = sum(1 for _ in (demo / "predictions" / "c5image_labels.csv").open()) - 1
    return {
        "demo": {
            "seconds": round(demo_seconds, 1),
            "training": training_summary(demo / "run"),
            "bf16": demo_bf16,
            "nuclei": nuclei,
        },
        "finetune_1m_voxels": {
            "seconds": round(finetune_seconds, 1),
            "training": training_summary(run),
            "bf16": config["bf16"],
            "patch": config["patch"],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the demos and the runs")
    parser.add_argument("--cpus", nargs="+", choices=("native", "no-bf16"), default=["native", "no-bf16"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "what": __doc__.split("\n\n")[0],
        "machine": machine(None),
        "no_bf16_emulation": {**AVX2_ONLY, "training": "float32"},
        "repeats": args.repeats,
        "cpus": {},
    }
    for cpu in args.cpus:
        results["cpus"][cpu] = measure(cpu, args.work, args.repeats)
        demo, tune = results["cpus"][cpu]["demo"], results["cpus"][cpu]["finetune_1m_voxels"]
        print(
            f"{cpu:8s} demo {demo['seconds']:6.1f} s ({demo['training']['epochs']} epochs, {demo['nuclei']} nuclei)"
            f"   finetune 1 M voxels {tune['seconds']:6.1f} s ({tune['training']['epochs']} epochs, bf16 "
            f"{tune['bf16']})"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

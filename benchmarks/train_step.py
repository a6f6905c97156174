"""Time one WNet3D training step: wnet-zoo's against CellSeg3D's model and loss, in the same run.

Default architecture (64, 128, 256, 512), one 64^3 patch (batch 1), Adam, SoftNCut at radius 2 plus
MSE reconstruction, on the CPU with a fixed thread count. Ours runs in float32 and with ``--bf16``
(autocast, where the CPU supports it); CellSeg3D's runs in float32 (its trainer has no bf16) and, for
information, under the same autocast. Repeats alternate between the contenders so that drift in a
shared machine's load hits both alike; medians are reported.

    python benchmarks/train_step.py [--threads 2] [--repeats 5] [--size 64]

Writes ``benchmarks/results/train_step.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch

from wnet_zoo.training.config import TrainConfig
from wnet_zoo.training.device import bf16_supported
from wnet_zoo.training.step import TrainingStep

from reference import cellseg3d_softncut_class, cellseg3d_wnet_class

RESULTS = Path(__file__).parent / "results" / "train_step.json"


def cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo where available."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def ours(size: int, bf16: bool) -> Callable[[torch.Tensor], None]:
    """wnet-zoo's training step, exactly as the trainer runs it."""
    torch.manual_seed(0)
    step = TrainingStep.from_config(TrainConfig(bf16=bf16), torch.device("cpu"))

    def run(image: torch.Tensor) -> None:
        step(image)

    return run


def cellseg3d(size: int, bf16: bool) -> Callable[[torch.Tensor], None]:
    """CellSeg3D's step: its WNet, SoftNCutsLoss and MSELoss, weighted as its training page documents."""
    torch.manual_seed(0)
    model = cellseg3d_wnet_class()(1, 1, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-5, weight_decay=0.01)
    ncut = cellseg3d_softncut_class()((size,) * 3, "cpu", 1.0, 4.0, 2)
    mse = torch.nn.MSELoss()

    def step(image: torch.Tensor) -> None:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            enc, dec = model(image)
        loss = 0.5 * ncut(enc.float(), image) + 5e-3 * mse(dec.float(), image)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    has_bf16 = bf16_supported(torch.device("cpu"))
    contenders = {"cellseg3d_fp32": cellseg3d(args.size, False), "ours_fp32": ours(args.size, False)}
    if has_bf16:
        contenders["ours_bf16"] = ours(args.size, True)
        contenders["cellseg3d_bf16_autocast"] = cellseg3d(args.size, True)
    image = torch.rand(1, 1, args.size, args.size, args.size) * 100
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for step in contenders.values():  # warm-up: first-call allocations and oneDNN kernel selection
        step(image)
    for repeat in range(args.repeats):
        for name, step in contenders.items():
            start = time.perf_counter()
            step(image)
            times[name].append(time.perf_counter() - start)
        print(f"repeat {repeat + 1}/{args.repeats}: " + ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items()))
    medians = {name: statistics.median(values) for name, values in times.items()}
    reference = medians["cellseg3d_fp32"]
    ratios = {name: value / reference for name, value in medians.items()}
    print(f"\n{'contender':<26}{'median s':>10}{'x CellSeg3D fp32':>18}")
    for name in contenders:
        print(f"{name:<26}{medians[name]:>10.2f}{ratios[name]:>18.2f}")
    result = {
        "benchmark": "one training step, default WNet3D, batch 1, Adam, SoftNCut r=2 + MSE",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_bf16": has_bf16,
        "threads": args.threads,
        "torch": torch.__version__,
        "patch": [args.size] * 3,
        "repeats": args.repeats,
        "seconds": times,
        "median_seconds": medians,
        "time_ratio_vs_cellseg3d_fp32": ratios,
        "goals": {"ours_fp32": "<= 0.9", "ours_bf16": "<= 0.4 (CPUs with bf16)"},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

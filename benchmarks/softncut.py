"""SoftNCut loss, forward + backward: wnet_zoo's SoftNCutLoss against CellSeg3D's SoftNCutsLoss.

    python benchmarks/softncut.py [--threads 2] [--repeats 5] [--radii 1 2 3 4 5]

Both losses run in this process on the same random batch (softmax probabilities, image on 0..100) for
each radius: the relative error of the loss value, the relative norm error of the gradient with respect to
the probabilities, and the median wall time of forward + backward over at least ``--repeats`` runs lasting
one second or more, after a warm-up. The machine may be shared: runs are grouped in samples of at least
0.25 s, and a sample during which other processes used 10% of the CPUs or more (``/proc/stat`` minus this
process's CPU time) is discarded and measured again once they are quiet; the table's last column is the
largest share among the kept samples.

Peak memory is measured separately, in a fresh subprocess per loss and radius: the growth of the process's
peak resident set size (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``) during one forward +
backward pass, over its resident size just before; a small warm-up on an 8^3 batch first loads the code
paths, so that the number is the pass's own tensors and buffers. A second table times candidate 1-D blur
implementations alone (forward + backward of the blur of one batch-sized tensor). Results go to
``benchmarks/results/softncut.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmark the source tree this script belongs to

from wnet_zoo.model.losses import SoftNCutLoss, gaussian_blur, gaussian_taps  # noqa: E402

from reference import cellseg3d_softncut_class  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "softncut.json"
INTENSITY_SIGMA, SPATIAL_SIGMA = 1.0, 4.0
TARGETS = {2: 8.0, 5: 40.0}  # minimum speed-up (reference time / ours) at these radii

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_batch(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    probs = torch.softmax(2.0 * torch.randn(shape, generator=gen), dim=1)
    image = 100.0 * torch.rand((shape[0], 1, *shape[2:]), generator=gen)
    return probs, image


def make_loss(impl: str, shape: tuple[int, ...], radius: int) -> LossFn:
    if impl == "ours":
        return SoftNCutLoss(INTENSITY_SIGMA, SPATIAL_SIGMA, radius)
    reference = cellseg3d_softncut_class()
    return reference(tuple(shape[2:]), "cpu", INTENSITY_SIGMA, SPATIAL_SIGMA, radius)


def forward_backward(loss: LossFn, probs: torch.Tensor, image: torch.Tensor) -> tuple[float, torch.Tensor]:
    leaf = probs.clone().requires_grad_(True)
    value = loss(leaf, image)
    value.backward()
    return value.item(), leaf.grad


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
QUIET_SHARE = 0.1  # a measurement counts as uncontended when other processes used under 10% of the CPUs


def _busy_cpu_seconds() -> float:
    """CPU seconds that all processes on the machine have spent busy since boot (Linux ``/proc/stat``)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS  # all but idle and iowait


class OthersLoad:
    """Measures the share of the machine's CPUs that other processes kept busy during a ``with`` block."""

    def __enter__(self) -> OthersLoad:
        self.wall, self.busy, self.own = time.perf_counter(), _busy_cpu_seconds(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.wall
        others = _busy_cpu_seconds() - self.busy - (time.process_time() - self.own)
        self.share = max(0.0, others) / (wall * (os.cpu_count() or 1))


def wait_for_quiet(max_wait_s: float = 120.0) -> None:
    """Waits (up to ``max_wait_s``) for a 1-second window in which other processes use under 10% of the CPUs."""
    deadline = time.monotonic() + max_wait_s
    while time.monotonic() < deadline:
        with OthersLoad() as load:
            time.sleep(1.0)
        if load.share < QUIET_SHARE:
            return


def timed(run: Callable[[], object], repeats: int, min_total_s: float = 1.0, sample_s: float = 0.25) -> dict[str, Any]:
    """Median wall time of ``run``, after a warm-up of at least ``sample_s``, over at least ``repeats`` runs
    that together last at least ``min_total_s``.

    Runs are grouped in samples of at least ``sample_s``; a sample during which other processes used 10% of
    the CPUs or more is discarded (after waiting for them to go quiet) and measured again, up to
    ``4 * repeats + 8`` samples; if none was clean, all runs are kept. ``others_cpu_share`` is the largest
    share among the kept samples.
    """
    start = time.perf_counter()
    while True:
        run()
        if time.perf_counter() - start >= sample_s:
            break
    kept: list[float] = []
    discarded: list[float] = []
    shares: list[float] = []
    for _ in range(4 * repeats + 8):
        if len(kept) >= repeats and sum(kept) >= min_total_s:
            break
        times: list[float] = []
        with OthersLoad() as load:
            while sum(times) < sample_s:
                begin = time.perf_counter()
                run()
                times.append(time.perf_counter() - begin)
        if load.share < QUIET_SHARE:
            kept += times
            shares.append(load.share)
        else:
            discarded += times
            wait_for_quiet()
    if not kept:
        kept, discarded, shares = discarded, [], [1.0]
    return {
        "median_s": statistics.median(kept),
        "times_s": kept,
        "discarded_runs": len(discarded),
        "others_cpu_share": max(shares),
    }


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_case(impl: str, shape: tuple[int, ...], radius: int, threads: int) -> dict[str, float]:
    """Runs in a fresh subprocess: peak RSS growth (MiB) of one forward + backward pass."""
    torch.set_num_threads(threads)
    small = (shape[0], shape[1], 8, 8, 8)
    forward_backward(make_loss(impl, small, radius), *make_batch(small))
    probs, image = make_batch(shape)
    loss = make_loss(impl, shape, radius)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    forward_backward(loss, probs, image)
    return {"peak_rss_growth_mib": (_status_kib("VmHWM") - before) / 1024}


def measure_memory(impl: str, shape: tuple[int, ...], radius: int, threads: int) -> float | None:
    command = [sys.executable, __file__, "--memory-case", impl, str(radius), "--threads", str(threads)]
    command += ["--shape", *map(str, shape)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"memory measurement failed for {impl} r={radius}: {done.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_growth_mib"]


def _toeplitz(n: int, taps: list[float], dtype: torch.dtype) -> torch.Tensor:
    index = torch.arange(n)
    gap = (index[:, None] - index[None, :]).abs().clamp(max=len(taps))
    return torch.tensor([*taps, 0.0], dtype=dtype)[gap]


def blur_variants(radius: int) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Candidate implementations of the separable blur of (B, K, Z, Y, X); autograd differentiates all
    but ours (a custom autograd Function whose backward is the same blur)."""
    taps = gaussian_taps(radius, SPATIAL_SIGMA)
    line = torch.tensor([*taps[:0:-1], *taps])

    def conv3d_1d_kernels(x: torch.Tensor) -> torch.Tensor:
        v = x.flatten(0, 1).unsqueeze(1)
        for axis in range(3):
            size = [1, 1, 1]
            size[axis] = line.numel()
            padding = [0, 0, 0]
            padding[axis] = radius
            v = F.conv3d(v, line.view(1, 1, *size), padding=padding)
        return v.view(x.shape)

    def padded_slices(x: torch.Tensor) -> torch.Tensor:
        for dim in (2, 3, 4):
            n = x.shape[dim]
            padded = F.pad(x, [0, 0] * (4 - dim) + [radius, radius])
            out = padded.narrow(dim, radius, n) * taps[0]
            for shift in range(1, radius + 1):
                out = out + taps[shift] * (
                    padded.narrow(dim, radius - shift, n) + padded.narrow(dim, radius + shift, n)
                )
            x = out
        return x

    def conv1d_views(x: torch.Tensor) -> torch.Tensor:
        kernel = line.view(1, 1, -1)
        for dim in (2, 3, 4):
            moved = x.movedim(dim, -1)
            flat = F.conv1d(moved.reshape(-1, 1, moved.shape[-1]), kernel, padding=radius)
            x = flat.view(moved.shape).movedim(-1, dim)
        return x

    def banded_matmul(x: torch.Tensor) -> torch.Tensor:
        b, k, z, y, w = x.shape
        v = x @ _toeplitz(w, taps, x.dtype)
        v = _toeplitz(y, taps, x.dtype) @ v
        return (_toeplitz(z, taps, x.dtype) @ v.reshape(b * k, z, y * w)).view(x.shape)

    return {
        "conv3d, (k,1,1) kernels": conv3d_1d_kernels,
        "padded shifted slices": padded_slices,
        "conv1d on moved views": conv1d_views,
        "banded matmul": banded_matmul,
        "ours: in-place shifted slices": lambda x: gaussian_blur(x, radius, SPATIAL_SIGMA),
    }


def time_blur_variants(shape: tuple[int, ...], radii: list[int], repeats: int) -> list[dict[str, object]]:
    volumes = torch.rand(shape)
    upstream = torch.rand(shape)
    rows = []
    for radius in radii:
        for name, blur in blur_variants(radius).items():

            def run(blur: Callable[[torch.Tensor], torch.Tensor] = blur) -> None:
                leaf = volumes.clone().requires_grad_(True)
                (blur(leaf) * upstream).sum().backward()

            result = timed(run, repeats, min_total_s=0.5)
            rows.append(
                {
                    "radius": radius,
                    "variant": name,
                    "median_ms": round(result["median_s"] * 1e3, 2),
                    "others_cpu_share": round(result["others_cpu_share"], 3),
                }
            )
    return rows


def machine_info(threads: int) -> dict[str, object]:
    model = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        model = names[0] if names else model
    return {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def relative_error(value: float, reference: float) -> float:
    return abs(value - reference) / abs(reference)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per case, after a warm-up")
    parser.add_argument("--radii", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--shape", type=int, nargs=5, default=[2, 2, 64, 64, 64], metavar=("B", "K", "Z", "Y", "X"))
    parser.add_argument("--skip-memory", action="store_true", help="do not run the memory subprocesses")
    parser.add_argument("--skip-variants", action="store_true", help="do not time the blur variants")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--memory-case", nargs=2, metavar=("IMPL", "RADIUS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shape = tuple(args.shape)
    torch.set_num_threads(args.threads)
    if args.memory_case:
        impl, radius = args.memory_case
        print(json.dumps(memory_case(impl, shape, int(radius), args.threads)))
        return 0

    info = machine_info(args.threads)
    print(f"{info['cpu_model']}, {args.threads} threads, torch {info['torch']}, batch {shape}")
    probs, image = make_batch(shape)
    rows = []
    header = f"{'r':>2} {'ours ms':>9} {'CellSeg3D ms':>13} {'ratio':>7} {'value err':>10} {'grad err':>9}"
    header += f" {'ours MiB':>9} {'CellSeg3D MiB':>14} {'others':>7}"
    print(header)
    for radius in args.radii:
        ours, reference = make_loss("ours", shape, radius), make_loss("cellseg3d", shape, radius)
        value, grad = forward_backward(ours, probs, image)
        ref_value, ref_grad = forward_backward(reference, probs, image)
        ours_t = timed(lambda loss=ours: forward_backward(loss, probs, image), args.repeats)
        ref_t = timed(lambda loss=reference: forward_backward(loss, probs, image), args.repeats)
        ours_s, ref_s = ours_t["median_s"], ref_t["median_s"]
        row = {
            "radius": radius,
            "ours_ms": round(ours_s * 1e3, 2),
            "cellseg3d_ms": round(ref_s * 1e3, 1),
            "ratio": round(ref_s / ours_s, 1),
            "value_rel_error": relative_error(value, ref_value),
            "grad_rel_norm_error": ((grad - ref_grad).norm() / ref_grad.norm()).item(),
            "loss": value,
            "ours_runs": len(ours_t["times_s"]),
            "cellseg3d_ms_all": [round(t * 1e3, 1) for t in ref_t["times_s"]],
            "discarded_runs": {"ours": ours_t["discarded_runs"], "cellseg3d": ref_t["discarded_runs"]},
            "others_cpu_share_during_ours": round(ours_t["others_cpu_share"], 3),
            "others_cpu_share_during_cellseg3d": round(ref_t["others_cpu_share"], 3),
        }
        if not args.skip_memory:
            row["ours_peak_rss_growth_mib"] = measure_memory("ours", shape, radius, args.threads)
            row["cellseg3d_peak_rss_growth_mib"] = measure_memory("cellseg3d", shape, radius, args.threads)
        rows.append(row)

        def mib(key: str, row: dict[str, object] = row) -> str:
            number = row.get(key)
            return "-" if number is None else f"{number:.0f}"

        print(
            f"{radius:>2} {row['ours_ms']:>9.1f} {row['cellseg3d_ms']:>13.1f} {row['ratio']:>7.1f}"
            f" {row['value_rel_error']:>10.1e} {row['grad_rel_norm_error']:>9.1e}"
            f" {mib('ours_peak_rss_growth_mib'):>9} {mib('cellseg3d_peak_rss_growth_mib'):>14}"
            f" {max(ours_t['others_cpu_share'], ref_t['others_cpu_share']):>7.0%}",
            flush=True,
        )

    targets = {
        str(radius): {"min_ratio": ratio, "ratio": row["ratio"], "met": row["ratio"] >= ratio}
        for radius, ratio in TARGETS.items()
        for row in rows
        if row["radius"] == radius
    }
    variants = [] if args.skip_variants else time_blur_variants(shape, [1, 2, 5], args.repeats)
    if variants:
        print("\nblur alone, forward + backward (median ms)")
        for radius in sorted({v["radius"] for v in variants}):
            for v in variants:
                if v["radius"] == radius:
                    print(f"  r={radius}  {v['variant']:<30} {v['median_ms']:>8.2f}")
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result = {
        "benchmark": "SoftNCut forward + backward: wnet_zoo SoftNCutLoss vs CellSeg3D SoftNCutsLoss",
        "machine": info,
        "shape": list(shape),
        "intensity_sigma": INTENSITY_SIGMA,
        "spatial_sigma": SPATIAL_SIGMA,
        "repeats": args.repeats,
        "timing": (
            "median wall time of forward + backward runs, after a warm-up: at least --repeats runs and 1 s, in "
            "samples of >= 0.25 s; samples during which other processes used >= 10% of all CPUs (/proc/stat minus "
            "this process's CPU time) are discarded and measured again; others_cpu_share_* = the largest share "
            "among the kept samples"
        ),
        "memory": (
            "peak resident set growth (MiB) during one forward + backward pass in a fresh subprocess: "
            "VmHWM after the pass minus VmRSS before it (VmHWM reset via /proc/self/clear_refs), "
            "after a warm-up on an 8^3 batch; includes allocator and library buffers"
        ),
        "rows": rows,
        "targets": targets,
        "blur_variants": variants,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    missed = [radius for radius, target in targets.items() if not target["met"]]
    if missed:
        print(f"speed-up target missed at radius {', '.join(missed)}", file=sys.stderr)
    return 0 if not missed and all(math.isfinite(r["ratio"]) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

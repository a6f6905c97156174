"""ONNX Runtime against float64: where the exported WNet3D encoder loses precision, and the fix.

    python benchmarks/onnx_parity.py [--threads 2] [--size 64] [--steps 12] [--repeats 5]

For the DEFAULT architecture (64, 128, 256, 512), two models: freshly initialised ("random") and
"trained-like" (``--steps`` Adam steps, lr 1e-3, of the WNet3D loss on 32^3 crops of the bundled example,
which makes the logits larger and the probabilities saturate as after training). Each runs on a
``--size``^3 crop of the remapped example volume (0..100). Compared, each against the float64 torch
model (max abs difference):

* per block (``in_b`` ... ``out_b`` logits, softmax): torch float32, ONNX Runtime on the plain export
  ("before": ``GroupNorm`` as ``InstanceNormalization``) and on the export form ("after":
  ``wnet_zoo.export.encoder``), all blocks exposed as extra graph outputs;
* per layer inside ``in_b`` (conv, ReLU, GroupNorm, conv, ReLU, GroupNorm), before and after;
* the export form without composing the conv pairs (``inference_encoder(model, compose=False)``);
* timings: ``--repeats`` interleaved runs of the whole encoder in torch and in the ONNX graphs (min and
  median), the time ONNX Runtime's profiler puts on each operator type, and one group norm alone (the
  plain export vs the export form) on (1, 64, size, size, size) post-ReLU values.

Two minimal reproductions in ONNX Runtime alone, without torch: one ``InstanceNormalization`` node on
(1, 4, W) post-ReLU-like values for growing W (its error against float64 grows with W; the short
reductions of the export form do not), and the optimiser bug that rejects ``Identity(initializer)``
feeding ``Mul(Div(1, x), .)``. Results go to ``benchmarks/results/onnx_parity.json``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, numpy_helper
from onnx import helper as oh
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmark the source tree this script belongs to

from wnet_zoo.export.encoder import EXPORTED_INPUT_SCALE, StableGroupNorm, inference_encoder  # noqa: E402
from wnet_zoo.io.example import example_volume  # noqa: E402
from wnet_zoo.io.intensity import remap  # noqa: E402
from wnet_zoo.io.volumes import read_volume  # noqa: E402
from wnet_zoo.model.losses import WNetLoss  # noqa: E402
from wnet_zoo.model.wnet import WNet3D  # noqa: E402

FINDING = (
    "Cause: GroupNorm. The legacy exporter writes it as Reshape + InstanceNormalization over (C/G)*Z*Y*X values, "
    "and ONNX Runtime's CPU InstanceNormalization sums each group serially in float32 (Eigen mean and "
    "squaredNorm, onnxruntime/core/providers/cpu/nn/instance_norm.cc), so its error grows with the group size "
    "(instance_norm_reproduction: one node, no torch) and with the mean of post-ReLU activations. At 64^3 the "
    "first GroupNorm of the default encoder (16 channels x 262144 voxels a group) is already off by ~8e-2; "
    "conv, ReLU, pooling, transposed conv and softmax layers add nothing beyond torch's own float32 error "
    "(in_b_layers, blocks), the einsum-composed weights included. Same at every optimisation level. Fix: "
    "export GroupNorm as StableGroupNorm (means over X, then Y, then Z, then a (C, C) group-averaging "
    "MatMul; two-pass variance), conv pairs composed once in float64 (wnet_zoo/export/encoder.py). "
    "Second runtime issue found on the way: ORT 1.32 rejects Identity(initializer) feeding Mul(Div(1, x), .) "
    "at every optimisation level (EliminateIdentity + DivMulFusion), identity_div_mul_reproduction; the "
    "exporter inlines such initializer copies."
)
RESULTS = Path(os.environ.get("ONNX_PARITY_RESULTS", ROOT / "benchmarks" / "results" / "onnx_parity.json"))
BLOCKS = ("in_b", "conv1", "conv2", "bot", "deconv2", "deconv3", "out_b_logits", "softmax")


class Taps(nn.Module):
    """An encoder (``UNet3D`` or ``InferenceEncoder``: same attribute names) returning every block's output."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.e = encoder

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        e = self.e
        top = e.in_b(x)
        mid = e.conv1(e.max_pool(top))
        low = e.conv2(e.max_pool(mid))
        bot = e.bot(e.max_pool(low))
        d2 = e.deconv2(torch.cat([low, e.conv_trans2(bot)], 1))
        d3 = e.deconv3(torch.cat([mid, e.conv_trans3(d2)], 1))
        logits = e.out_b(torch.cat([top, e.conv_trans_out(d3)], 1))
        return top, mid, low, bot, d2, d3, logits, torch.softmax(logits, 1)


class LayerTaps(nn.Module):
    """The layers of one ``nn.Sequential`` block, returning each layer's output."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = []
        for layer in self.layers:
            x = layer(x)
            outputs.append(x)
        return tuple(outputs)


def export(module: nn.Module, example: torch.Tensor, path: Path, outputs: list[str]) -> Path:
    """Plain legacy export (opset 18), initializer copies inlined as ``export_onnx`` does."""
    from wnet_zoo.export.onnx import _inline_initializer_copies

    module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), input_names=["raw"], output_names=outputs, dynamo=False)
    module.eval()  # the exporter restores the wrapper's (training) mode on its children
    graph = onnx.load(str(path))
    _inline_initializer_copies(graph.graph)
    onnx.save(graph, str(path))
    return path


def session(path: Path, threads: int, profile: str | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def trained_like(steps: int, volume: np.ndarray, seed: int = 0) -> WNet3D:
    """The default WNet3D after ``steps`` Adam steps of the WNet3D loss on random 32^3 crops."""
    torch.manual_seed(seed)
    model = WNet3D()
    if steps == 0:
        return model.eval()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = WNetLoss()
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(steps):
        z, y, x = (int(rng.integers(0, s - 32 + 1)) for s in volume.shape)
        crop = torch.from_numpy(np.ascontiguousarray(volume[z : z + 32, y : y + 32, x : x + 32]))[None, None]
        probabilities, reconstruction = model(crop)
        optimizer.zero_grad()
        loss(probabilities, reconstruction, crop).total.backward()
        optimizer.step()
    return model.eval()


def timed(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, dict[str, float]]:
    """Seconds per call of each function, the calls interleaved (A B C A B C ...) after one warm-up each, so
    that load from other processes on a shared machine hits all alike; min and median reported."""
    for function in functions.values():
        function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: {"min_s": min(t), "median_s": statistics.median(t)} for name, t in times.items()}


def op_times(path: Path, feed: dict[str, np.ndarray], threads: int, folder: Path) -> dict[str, float]:
    """Seconds per operator type in one run (ONNX Runtime profiler, after one warm-up run)."""
    sess = session(path, threads, profile=str(folder / path.stem))
    sess.run(None, feed)
    sess.run(None, feed)
    events = json.loads(Path(sess.end_profiling()).read_text())
    runs = [e for e in events if e.get("name") == "model_run"]
    last_start = runs[-1]["ts"]
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["ts"] >= last_start and event["name"].endswith("_kernel_time"):
            totals[event["args"]["op_name"]] += event["dur"] / 1e6
    return dict(sorted(((k, round(v, 3)) for k, v in totals.items()), key=lambda kv: -kv[1]))


def compare_model(model: WNet3D, x: torch.Tensor, threads: int, repeats: int, folder: Path) -> dict:
    """Per-block and per-layer errors against float64, before and after, and timings."""
    plain, form = Taps(model.encoder).eval(), Taps(inference_encoder(model)).eval()
    feed = {"raw": x.numpy()}
    with torch.no_grad():
        ref = [t.numpy() for t in copy.deepcopy(plain).double()(x.double())]
        f32 = [t.numpy() for t in plain(x)]
    before = session(export(plain, x, folder / "taps_before.onnx", list(BLOCKS)), threads).run(None, feed)
    after = session(export(form, x, folder / "taps_after.onnx", list(BLOCKS)), threads).run(None, feed)
    blocks = {
        name: {
            "max_abs_value": float(np.abs(r).max()),
            "torch_fp32": max_abs(a, r),
            "ort_before": max_abs(b, r),
            "ort_after": max_abs(c, r),
        }
        for name, r, a, b, c in zip(BLOCKS, ref, f32, before, after, strict=True)
    }

    layers_plain = [layer for layer in model.encoder.in_b.module if not isinstance(layer, nn.Dropout)]
    layers_form = list(inference_encoder(model).in_b)
    outs = [f"{i}_{type(layer).__name__}" for i, layer in enumerate(layers_plain)]
    with torch.no_grad():
        layer_ref = [t.numpy() for t in LayerTaps(copy.deepcopy(layers_plain)).double()(x.double())]
    lb = session(export(LayerTaps(layers_plain), x, folder / "inb_before.onnx", outs), threads).run(None, feed)
    la = session(export(LayerTaps(layers_form), x, folder / "inb_after.onnx", outs), threads).run(None, feed)
    in_b_layers = {
        name: {"ort_before": max_abs(b, r), "ort_after": max_abs(a, r)}
        for name, r, b, a in zip(outs, layer_ref, lb, la, strict=True)
    }

    from wnet_zoo.export.onnx import export_onnx
    from wnet_zoo.prediction.metadata import ModelMetadata

    full_before = export(model.encoder, x, folder / "encoder_before.onnx", ["probabilities"])
    full_after = export_onnx(model, folder / "encoder_after.onnx", ModelMetadata(num_classes=model.num_classes))
    scaled = {"raw": feed["raw"] / EXPORTED_INPUT_SCALE}  # export_onnx's graph takes 0..1
    uncomposed = inference_encoder(model, compose=False)
    full_uncomposed = export(uncomposed, x, folder / "encoder_uncomposed.onnx", ["probabilities"])
    sb, sa, su = session(full_before, threads), session(full_after, threads), session(full_uncomposed, threads)
    probabilities = ref[-1]
    with torch.no_grad():
        timings = timed(
            {
                "torch_fp32": lambda: model.encoder(x),
                "ort_before": lambda: sb.run(None, feed),
                "ort_after": lambda: sa.run(None, scaled),
                "ort_after_uncomposed_pairs": lambda: su.run(None, feed),
            },
            repeats,
        )
    by_level = {}
    for level in ("ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_ALL"):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        plain_session = ort.InferenceSession(str(full_before), options, providers=["CPUExecutionProvider"])
        by_level[level] = max_abs(plain_session.run(None, feed)[0], probabilities)
    return {
        "ort_before_by_optimisation_level": by_level,
        "probabilities_max_abs_vs_float64": {
            "torch_fp32": blocks["softmax"]["torch_fp32"],
            "ort_before": max_abs(sb.run(None, feed)[0], probabilities),
            "ort_after": max_abs(sa.run(None, scaled)[0], probabilities),
            "ort_after_uncomposed_pairs": max_abs(su.run(None, feed)[0], probabilities),
        },
        "max_probability_mean": float(probabilities.max(axis=1).mean()),
        "blocks": blocks,
        "in_b_layers": in_b_layers,
        "timings": timings,
        "ort_op_seconds_before": op_times(full_before, feed, threads, folder),
        "ort_op_seconds_after": op_times(full_after, scaled, threads, folder),
    }


def instance_norm_reproduction(threads: int, folder: Path) -> list[dict]:
    """One InstanceNormalization node vs float64, and StableGroupNorm's export, on (1, 4, W) values."""
    rows = []
    rng = np.random.default_rng(0)
    for side in (16, 32, 64, 100, 160):
        width = side**3
        x = np.maximum(rng.normal(20.0, 30.0, size=(1, 4, width)), 0).astype(np.float32)
        x64 = x.astype(np.float64)
        mean = x64.mean(axis=2, keepdims=True)
        ref = (x64 - mean) / np.sqrt(((x64 - mean) ** 2).mean(axis=2, keepdims=True) + 1e-5)
        node = oh.make_node("InstanceNormalization", ["x", "scale", "bias"], ["y"], epsilon=1e-5)
        graph = oh.make_graph(
            [node],
            "instance_norm",
            [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, width])],
            [oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, width])],
            [
                numpy_helper.from_array(np.ones(4, np.float32), "scale"),
                numpy_helper.from_array(np.zeros(4, np.float32), "bias"),
            ],
        )
        path = folder / "instance_norm.onnx"
        onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)]), str(path))
        plain = session(path, threads).run(None, {"x": x})[0]
        stable = StableGroupNorm(nn.GroupNorm(4, 4)).eval()
        cube = torch.from_numpy(x.reshape(1, 4, side, side, side))
        exported = export(stable, cube, folder / "stable_norm.onnx", ["y"])
        short = session(exported, threads).run(None, {"raw": cube.numpy()})[0]
        rows.append(
            {
                "values_per_group": width,
                "ort_instance_norm_max_abs": max_abs(plain, ref),
                "ort_stable_group_norm_max_abs": max_abs(short.reshape(ref.shape), ref),
            }
        )
    return rows


def group_norm_alone(size: int, threads: int, repeats: int, folder: Path) -> dict:
    """One GroupNorm(4, 64) on (1, 64, size^3) post-ReLU values: plain export vs StableGroupNorm, error
    against float64 and time."""
    torch.manual_seed(0)
    norm = nn.GroupNorm(4, 64).eval()
    x = torch.relu(torch.randn(1, 64, size, size, size) * 30 + 20)
    reference = nn.functional.group_norm(x.double(), 4).numpy()
    feed = {"raw": x.numpy()}
    sessions = {
        "instance_normalization": session(export(norm, x, folder / "gn_plain.onnx", ["y"]), threads),
        "stable_group_norm": session(export(StableGroupNorm(norm), x, folder / "gn_stable.onnx", ["y"]), threads),
    }
    errors = {name: max_abs(s.run(None, feed)[0], reference) for name, s in sessions.items()}
    times = timed({name: (lambda s=s: s.run(None, feed)) for name, s in sessions.items()}, repeats)
    return {name: {"max_abs_vs_float64": errors[name], **times[name]} for name in sessions}


def identity_fusion_reproduction() -> str:
    """Whether ONNX Runtime accepts ``Identity(w) -> Mul(Div(1, sqrt(x)), .)``; the error text if not."""
    nodes = [
        oh.make_node("Identity", ["w"], ["w_copy"]),
        oh.make_node("Sqrt", ["x"], ["s"]),
        oh.make_node("Div", ["one", "s"], ["r"]),
        oh.make_node("Mul", ["r", "w_copy"], ["y"]),
    ]
    graph = oh.make_graph(
        nodes,
        "identity_div_mul",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [numpy_helper.from_array(np.ones(4, np.float32), "w"), numpy_helper.from_array(np.array(1, np.float32), "one")],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as error:  # the runtime's InvalidArgument
        return str(error).splitlines()[0]
    return "accepted"


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return {"cpu": cpu, "cores_visible": os.cpu_count(), "platform": platform.platform()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=12, help="Adam steps for the trained-like model")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    volume = read_volume(example_volume())
    s = args.size
    if s > min(volume.shape):
        parser.error(f"--size must be at most {min(volume.shape)}, the example's smallest side")
    z0, y0, x0 = ((dim - s) // 2 for dim in volume.shape)
    x = torch.from_numpy(remap(volume[z0 : z0 + s, y0 : y0 + s, x0 : x0 + s]))[None, None]
    volume = remap(volume)
    results: dict = {
        "finding": FINDING,
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__},
        "settings": {**vars(args), "input": [1, 1, s, s, s], "architecture": list(WNet3D().channels)},
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, steps in (("random", 0), ("trained_like", args.steps)):
            start = time.perf_counter()
            model = trained_like(steps, volume)
            results[name] = {"adam_steps": steps, **compare_model(model, x, args.threads, args.repeats, folder)}
            print(
                f"{name}: {time.perf_counter() - start:.0f} s",
                json.dumps(results[name]["probabilities_max_abs_vs_float64"]),
            )
        results["instance_norm_reproduction"] = instance_norm_reproduction(args.threads, folder)
        results["group_norm_alone"] = group_norm_alone(s, args.threads, 2 * args.repeats, folder)
    results["identity_div_mul_reproduction"] = identity_fusion_reproduction()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""Does an exported package run in every bioimage.io consumer? Each consumer's runtime in its own environment.

    python benchmarks/consumers.py [--package ZIP] [--envs DIR] [--only NAME ...] [--out JSON]

Builds one virtual environment per consumer (the versions the zoo's compatibility checks and shared runtime use,
as far as they install from PyPI here), cached under ``--envs`` and rebuilt only when its requirements change,
then runs the package there in each weight format with ``consumer_run.py``: bioimageio.core's ``test_model`` and
prediction, BiaPy's compatibility check, or the bare runtime that the Java consumers (deepImageJ, Icy through
JDLL) use. Without ``--package`` it exports the bundled model with every weight format and an author and
maintainer (the package a user uploads). A cell passes when the consumer accepts the package and its outputs are
within 1e-3 of the package's test output. Results in ``benchmarks/results/consumers.json`` with the machine and
each environment's versions; ``--table`` prints the docs' table from that file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from quality import machine  # noqa: E402

RESULTS = HERE / "results" / "consumers.json"
RUNNER = HERE / "consumer_run.py"
ENVS = Path.home() / ".cache" / "wnet-zoo" / "consumers"
FORMATS = ("pytorch_state_dict", "torchscript", "onnx")
TOLERANCE = 1e-3  # the zoo's reproducibility check: rtol = atol = 1e-3
RUN_TIMEOUT_S = 1800
# pydantic 2.14 breaks every bioimageio.spec release here when it reads a package (package_file_descr_serializer);
# each consumer's own environment predates it
PYDANTIC = "pydantic<2.14"


@dataclass(frozen=True)
class Consumer:
    """One consumer's runtime: what to install, how to run a package there, which weight formats it reads."""

    name: str
    stands_for: str
    requirements: tuple[str, ...]
    kind: str  # consumer_run.py's KIND
    formats: tuple[str, ...]
    versions_of: tuple[str, ...]

    @property
    def folder_name(self) -> str:
        return self.name.replace(" ", "-").replace("(", "").replace(")", "").lower()


CONSUMERS = (
    Consumer(
        "bioimageio.core 0.11",
        "bioimageio.core as wnet-zoo exports with it (the zoo's current checks)",
        ("bioimageio.core>=0.11,<0.12", PYDANTIC, "torch==2.13.0", "onnxruntime"),
        "bioimageio.core",
        FORMATS,
        ("bioimageio.core", "bioimageio.spec", "torch", "onnxruntime"),
    ),
    Consumer(
        "bioimageio.core 0.10.4",
        "the zoo's shared runtime (BioEngine): bioimageio.core 0.10.4, torch 2.5.1, onnxruntime 1.20.1",
        ("bioimageio.core==0.10.4", "torch==2.5.1", "onnxruntime==1.20.1", PYDANTIC),
        "bioimageio.core",
        FORMATS,
        ("bioimageio.core", "bioimageio.spec", "torch", "onnxruntime"),
    ),
    Consumer(
        "bioimageio.core 0.9.6",
        "ilastik (its bioimageio.core 0.9.x; the zoo's ilastik check runs test_model)",
        ("bioimageio.core==0.9.6", "torch==2.5.1", "onnxruntime==1.20.1", PYDANTIC),
        "bioimageio.core",
        FORMATS,
        ("bioimageio.core", "bioimageio.spec", "torch", "onnxruntime"),
    ),
    Consumer(
        "BiaPy 3.7.1",
        "BiaPy's check_bmz_model_compatibility, as the zoo's BiaPy check calls it",
        ("biapy==3.7.1", PYDANTIC),
        "biapy",
        ("pytorch_state_dict",),
        ("biapy", "torch", "bioimageio.core", "bioimageio.spec"),
    ),
    Consumer(
        "onnxruntime 1.15.0",
        "the oldest onnxruntime that installs here (JDLL's newest is 1.13.1: opset 17, IR 8)",
        ("onnxruntime==1.15.0", "numpy<2", "pyyaml"),
        "onnxruntime",
        ("onnx",),
        ("onnxruntime", "numpy"),
    ),
    Consumer(
        "torch 2.0.1",
        "the PyTorch of deepImageJ and Icy (JDLL runs TorchScript on PyTorch up to 2.0)",
        ("torch==2.0.1", "numpy<2", "pyyaml"),
        "torchscript",
        ("torchscript",),
        ("torch", "numpy"),
    ),
)
NOT_RUN = {
    "CAREamics": "not applicable: the zoo's CAREamics check runs only models tagged CAREamics that carry a "
    "careamics.yaml (models CAREamics trained)",
}


def ensure_environment(consumer: Consumer, envs: Path) -> tuple[Path | None, str]:
    """The consumer's Python, building its environment if it is missing or was built from other requirements;
    ``(None, why)`` when it does not install."""
    folder = envs / consumer.folder_name
    marker = folder / "wnet-zoo-requirements.txt"
    wanted = "\n".join(consumer.requirements) + "\n"
    python = folder / "bin" / "python"
    if marker.exists() and marker.read_text() == wanted and python.exists():
        return python, "cached"
    shutil.rmtree(folder, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    print(f"  installing {' '.join(consumer.requirements)} ...", flush=True)
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *consumer.requirements],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        return None, "does not install here: " + (lines[-1] if lines else f"pip exit {done.returncode}")
    marker.write_text(wanted)
    return python, "built"


def versions(python: Path, packages: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of ``packages`` in that environment (and its Python)."""
    code = (
        "import importlib.metadata as m, json, platform\n"
        f"names = {list(packages)!r}\n"
        "found = {}\n"
        "for n in names:\n"
        "    try: found[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "found['python'] = platform.python_version()\n"
        "print(json.dumps(found))\n"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def run_cell(python: Path, consumer: Consumer, package: Path, weight_format: str) -> dict[str, Any]:
    """One consumer x weight format: consumer_run.py's report, ``passed`` only within ``TOLERANCE``."""
    env = {**os.environ, "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    try:
        done = subprocess.run(
            [str(python), str(RUNNER), consumer.kind, str(package), weight_format],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            env=env,
            cwd=tempfile.gettempdir(),
        )
    except subprocess.TimeoutExpired:
        return {"status": "failed", "details": f"no answer in {RUN_TIMEOUT_S} s"}
    lines = done.stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": "failed", "details": f"the runner crashed: {tail}"}
    difference = report.get("max_abs_diff")
    if report.get("status") == "passed" and difference is not None and difference > TOLERANCE:
        report["status"] = "failed"
        report["details"] = f"outputs differ by {difference:.2g} > {TOLERANCE}"
    return report


def export_bundled(work: Path) -> Path:
    """The bundled model exported as a user uploads it: every weight format, an author and a maintainer."""
    from wnet_zoo.export.exporter import export_model
    from wnet_zoo.export.model_card import CardUpdate

    update = CardUpdate(
        authors=("wnet-zoo benchmark;bioimageiobot",), maintainers=("wnet-zoo benchmark;bioimageiobot",)
    )
    result = export_model("bundled", work / "export", card_update=update, torchscript=True, overwrite=True)
    assert result.package is not None
    return result.package


def render_table(record: dict[str, Any]) -> str:
    """The docs' table (markdown): one row per consumer, one column per weight format."""
    lines = ["| consumer | stands for | " + " | ".join(FORMATS) + " |", "|---|---|" + "---|" * len(FORMATS)]
    for name, entry in record["consumers"].items():
        cells = []
        about = entry["stands_for"] if "reason" not in entry else entry["reason"]
        for weight_format in FORMATS:
            cell = entry.get("cells", {}).get(weight_format)
            if cell is None:
                cells.append("-" if "reason" not in entry else "not run")
                continue
            mark = "passed" if cell["status"] == "passed" else f"**{cell['status']}**"
            if cell.get("max_abs_diff") is not None:
                mark += f" ({cell['max_abs_diff']:.1g})"
            cells.append(mark)
        lines.append(f"| {name} | {about} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", type=Path, help="package to run (default: the bundled model, exported)")
    parser.add_argument("--envs", type=Path, default=ENVS, help=f"where environments are cached (default {ENVS})")
    parser.add_argument("--only", nargs="*", help="consumer names to run (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--table", action="store_true", help="print the docs' table from --out and stop")
    args = parser.parse_args(argv)
    if args.table:
        print(render_table(json.loads(args.out.read_text())))
        return 0

    args.envs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        package = args.package or export_bundled(Path(work))
        record: dict[str, Any] = {
            "date": datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat(),
            "package": {"file": package.name, "mb": round(package.stat().st_size / 1e6, 1)},
            "tolerance": TOLERANCE,
            "machine": machine(None),
            "consumers": {},
        }
        for consumer in CONSUMERS:
            if args.only and consumer.name not in args.only:
                continue
            print(f"{consumer.name}: {consumer.stands_for}", flush=True)
            python, how = ensure_environment(consumer, args.envs)
            entry: dict[str, Any] = {"stands_for": consumer.stands_for, "requirements": list(consumer.requirements)}
            if python is None:
                entry["reason"] = how
                print(f"  {how}")
                record["consumers"][consumer.name] = entry
                continue
            entry["versions"] = versions(python, consumer.versions_of)
            entry["cells"] = {}
            for weight_format in consumer.formats:
                cell = run_cell(python, consumer, package, weight_format)
                entry["cells"][weight_format] = cell
                shown = cell.get("max_abs_diff")
                print(
                    f"  {weight_format:20s} {cell['status']}" + ("" if shown is None else f"  max |diff| {shown:.2g}")
                )
                if cell["status"] != "passed":
                    print("    " + str(cell.get("details", ""))[:400].replace("\n", "\n    "))
            record["consumers"][consumer.name] = entry
        for name, reason in NOT_RUN.items():
            record["consumers"][name] = {"stands_for": name, "reason": reason}
    print()
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(render_table(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

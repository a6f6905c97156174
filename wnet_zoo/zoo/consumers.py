"""The consumers of a bioimage.io package, each in its own Python environment: who they are, how their
environments are built and cached, and how a package is run in one.

A consumer's environment holds the versions the zoo's compatibility checks and its shared runtime use, as far as
they install from PyPI. Building one downloads up to 4 GB (old torch releases exist on PyPI only as CUDA builds),
so it happens only when asked (``build_environment``, ``benchmarks/consumers.py``); the pre-flight runs the
environments that exist. Inside an environment ``consumer_run.py`` runs the package; it imports nothing of wnet_zoo.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENVIRONMENTS_VARIABLE = "WNET_ZOO_CONSUMER_ENVS"
FORMATS = ("pytorch_state_dict", "torchscript", "onnx")
CORE_PACKAGES = ("bioimageio.core", "bioimageio.spec", "torch", "onnxruntime")  # whose versions a core runtime records
TOLERANCE = 1e-3  # the zoo's reproducibility check: rtol = atol = 1e-3
RUN_TIMEOUT_S = 1800
RUNNER = Path(__file__).with_name("consumer_run.py")
# pydantic 2.14 breaks every bioimageio.spec release here when it reads a package (package_file_descr_serializer);
# each consumer's own environment predates it
PYDANTIC = "pydantic<2.14"
REQUIREMENTS_FILE = "wnet-zoo-requirements.txt"  # in each environment: the requirements it was built from, one a line


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
        """The environment's folder under the environments' folder."""
        return self.name.replace(" ", "-").lower()


CONSUMERS = (
    Consumer(
        "bioimageio.core 0.11",
        "bioimageio.core as wnet-zoo exports with it (the zoo's current checks)",
        ("bioimageio.core>=0.11,<0.12", PYDANTIC, "torch==2.13.0", "onnxruntime"),
        "bioimageio.core",
        FORMATS,
        CORE_PACKAGES,
    ),
    Consumer(
        "bioimageio.core 0.10.4",
        "the zoo's shared runtime (BioEngine): bioimageio.core 0.10.4, torch 2.5.1, onnxruntime 1.20.1",
        ("bioimageio.core==0.10.4", "torch==2.5.1", "onnxruntime==1.20.1", PYDANTIC),
        "bioimageio.core",
        FORMATS,
        CORE_PACKAGES,
    ),
    Consumer(
        "bioimageio.core 0.9.6",
        "ilastik (its bioimageio.core 0.9.x; the zoo's ilastik check runs test_model)",
        ("bioimageio.core==0.9.6", "torch==2.5.1", "onnxruntime==1.20.1", PYDANTIC),
        "bioimageio.core",
        FORMATS,
        CORE_PACKAGES,
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


def environments_folder() -> Path:
    """Where consumer environments are cached: ``$WNET_ZOO_CONSUMER_ENVS`` or ``~/.cache/wnet-zoo/consumers``."""
    given = os.environ.get(ENVIRONMENTS_VARIABLE)
    return Path(given) if given else Path.home() / ".cache" / "wnet-zoo" / "consumers"


def existing_environment(consumer: Consumer, envs: Path) -> Path | None:
    """The consumer's Python when its environment was built from today's requirements, else ``None``."""
    folder = envs / consumer.folder_name
    python = folder / "bin" / "python"
    marker = folder / REQUIREMENTS_FILE
    if python.exists() and marker.exists() and marker.read_text() == _requirements_text(consumer):
        return python
    return None


def build_environment(consumer: Consumer, envs: Path) -> tuple[Path | None, str]:
    """The consumer's Python, building its environment when it is missing or was built from other requirements;
    ``(None, why)`` when it does not install. The second item says what happened."""
    python = existing_environment(consumer, envs)
    if python is not None:
        return python, "cached"
    folder = envs / consumer.folder_name
    shutil.rmtree(folder, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    python = folder / "bin" / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *consumer.requirements], capture_output=True, text=True
    )
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("WARNING")]
        return None, "does not install here: " + (lines[-1] if lines else f"pip exit {done.returncode}")
    (folder / REQUIREMENTS_FILE).write_text(_requirements_text(consumer))
    return python, "built"


def installed_versions(python: Path, consumer: Consumer) -> dict[str, str]:
    """The versions of the consumer's key packages in its environment, and its Python's."""
    code = (
        "import importlib.metadata as m, json, platform\n"
        "found = {}\n"
        f"for name in {list(consumer.versions_of)!r}:\n"
        "    try: found[name] = m.version(name)\n"
        "    except m.PackageNotFoundError: pass\n"
        "found['python'] = platform.python_version()\n"
        "print(json.dumps(found))\n"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def run_package(python: Path, consumer: Consumer, package: Path, weight_format: str) -> dict[str, Any]:
    """Run ``package`` in the consumer's environment in one weight format: ``consumer_run.py``'s report (``status``,
    ``max_abs_diff``, ``details``), ``passed`` only with outputs within ``TOLERANCE`` of the package's."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PYTHONNOUSERSITE"] = "1"
    try:
        done = subprocess.run(
            [str(python), str(RUNNER), consumer.kind, str(Path(package).resolve()), weight_format, str(TOLERANCE)],
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


def _requirements_text(consumer: Consumer) -> str:
    return "\n".join(consumer.requirements) + "\n"

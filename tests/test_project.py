"""The two set-up commands a new user runs, and the pins that keep the tests' verdicts from drifting."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DECIDERS = ("pytest", "numpy", "scipy", "scikit-image", "onnx", "onnxruntime", "monai", "bioimageio.core", "pydantic")


def _quick_start_commands() -> list[str]:
    """What .ci/run runs: the lines of the ```bash blocks in README.md's Quick start section."""
    script = ROOT / ".ci" / "run"
    awk = re.search(r"awk '(.*?)' README.md", script.read_text(), re.S)
    assert awk, ".ci/run reads its commands from README.md"
    found = subprocess.run(["awk", awk.group(1), "README.md"], cwd=ROOT, capture_output=True, text=True, check=True)
    return found.stdout.splitlines()


def test_readme_has_the_two_commands_ci_runs():
    install, tests = _quick_start_commands()
    assert install.startswith("pip install torch==2.13.0 && ") and install.endswith("wnet-zoo demo --overwrite")
    assert tests.endswith("python -m pytest -q")
    assert all("-c constraints.txt" in command for command in (install, tests))


def test_constraints_pin_every_package_that_decides_a_verdict():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    assert all(pins.get(name) for name in DECIDERS), [name for name in DECIDERS if not pins.get(name)]
    assert "torch" not in pins  # installed first, by the README's command (GPU users bring their own build)


def test_code_is_linted_and_formatted():
    for command in (["ruff", "check", "--quiet", "."], ["ruff", "format", "--check", "--quiet", "."]):
        found = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True)
        assert found.returncode == 0, found.stdout + found.stderr


def test_architecture_contract_holds():
    """The layers, torch-free prediction and no import cycles, as declared in pyproject.toml's importlinter."""
    lint = Path(sys.executable).with_name("lint-imports")
    found = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert found.returncode == 0, found.stdout[-3000:] + found.stderr


FLAG = re.compile(r"(?<![\w-])--[a-z]|\bwnet-zoo (?:train|finetune|export|upload|predict|report|evaluate|demo)\b")


def test_no_flag_or_command_line_outside_the_cli():
    """Messages name settings through wnet_zoo.errors.setting / command, so Python users read Python names;
    only wnet_zoo/cli knows flags. Docstrings may describe the command line."""
    found = []
    for path in sorted((ROOT / "wnet_zoo").rglob("*.py")):
        if path.relative_to(ROOT / "wnet_zoo").parts[0] == "cli":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
        for node in ast.walk(tree):
            text = node.value if isinstance(node, ast.Constant) and id(node) not in docstrings else None
            if isinstance(text, str) and FLAG.search(text):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value[:70]!r}")
    assert not found, "\n".join(found)


def test_public_names_stay_the_public_objects_after_every_subpackage_is_imported():
    """A subpackage named like a public function would replace it as an attribute of wnet_zoo once imported:
    every name of wnet_zoo.__all__ must still be the function or class, whatever was imported before."""
    script = (
        "import importlib, pkgutil, types, wnet_zoo\n"
        "for found in pkgutil.walk_packages(wnet_zoo.__path__, 'wnet_zoo.'):\n"
        "    if not found.name.endswith('__main__'):\n"
        "        importlib.import_module(found.name)\n"
        "from wnet_zoo import *\n"
        "names = [n for n in wnet_zoo.__all__ if n != '__version__']\n"
        "wrong = [n for n in names if isinstance(getattr(wnet_zoo, n), types.ModuleType)]\n"
        "print(wrong + [n for n in names if globals().get(n) is not getattr(wnet_zoo, n)])\n"
    )
    found = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert found.returncode == 0, found.stderr[-2000:]
    assert found.stdout.strip() == "[]"

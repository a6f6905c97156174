"""Run one bioimage.io package in one consumer's runtime; executed by that consumer's own Python.

    python consumer_run.py KIND PACKAGE WEIGHT_FORMAT TOLERANCE

(by :func:`wnet_zoo.zoo.consumers.run_package`; PACKAGE is the zip or the ``rdf.yaml`` of an unpacked package)

Prints one JSON object: ``status`` (passed / failed), ``max_abs_diff`` (largest difference from the package's
test output, where the consumer gives outputs) and ``details``. Imports nothing of wnet_zoo, only what the
consumer's environment has:

- ``bioimageio.core``: ``test_model`` for the weight format (what the zoo's bioimageio.core and ilastik checks
  run), then a prediction on the test input through the same library;
- ``biapy``: BiaPy's ``check_bmz_model_compatibility`` on the package's description (the zoo's BiaPy check);
- ``onnxruntime`` / ``torchscript``: the runtime alone, as a Java consumer (deepImageJ, Icy through JDLL) runs
  the file: the package's one preprocessing step (``scale_range`` over the whole sample) by hand, then the
  weights on the test input.
"""

from __future__ import annotations

import inspect
import json
import sys
import tempfile
import traceback
import zipfile
from pathlib import Path
from typing import Any

EPS = 1e-6  # bioimageio's scale_range: (x - min) / (max - min + eps)


def main(kind: str, package: str, weight_format: str, tolerance: str) -> dict[str, Any]:
    """Run ``package`` (a zip, or the ``rdf.yaml`` of an unpacked one) in this environment's ``kind`` of consumer;
    a bare runtime passes within ``tolerance`` of the test output."""
    if not zipfile.is_zipfile(package):
        return _run(kind, Path(package), weight_format, float(tolerance))
    with tempfile.TemporaryDirectory() as folder:
        with zipfile.ZipFile(package) as archive:
            archive.extractall(folder)
        return _run(kind, Path(folder) / "rdf.yaml", weight_format, float(tolerance))


def _run(kind: str, rdf_path: Path, weight_format: str, tolerance: float) -> dict[str, Any]:
    if kind == "bioimageio.core":
        return _bioimageio_core(rdf_path, weight_format)
    if kind == "biapy":
        return _biapy(rdf_path)
    return _runtime(kind, rdf_path, weight_format, tolerance)


def _load_rdf(rdf_path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(rdf_path.read_text())


def _bioimageio_core(rdf_path: Path, weight_format: str) -> dict[str, Any]:
    import numpy as np
    from bioimageio.core import test_model

    summary = test_model(str(rdf_path), weight_format=weight_format)
    result: dict[str, Any] = {"status": summary.status, "details": _failures(summary)}
    try:
        result["max_abs_diff"] = _core_difference(rdf_path, weight_format, np)
    except Exception as error:  # the prediction API differs between releases; test_model above is the verdict
        result["prediction"] = f"{type(error).__name__}: {error}"
    return result


def _failures(summary: Any) -> str:
    lines = []
    for detail in summary.details:
        if detail.status != "passed":
            errors = "; ".join(str(getattr(e, "msg", e))[:300] for e in (detail.errors or []))
            lines.append(f"{detail.name}: {errors}")
    return "\n".join(lines)


def _core_difference(rdf_path: Path, weight_format: str, np: Any) -> float:
    """Largest difference between the package's test output and bioimageio.core's own prediction on its test
    input, through the prediction pipeline every release since 0.6 has."""
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.core.digest_spec import get_test_inputs, get_test_outputs
    from bioimageio.spec import load_description

    description = load_description(str(rdf_path))
    with create_prediction_pipeline(description, weight_format=weight_format) as pipeline:
        # 0.11 pads each input by the output halo and crops it off again unless told not to (test_model does not)
        accepted = inspect.signature(pipeline.predict_sample_without_blocking).parameters
        unpadded = {key: True for key in ("skip_input_padding", "skip_output_cropping") if key in accepted}
        got = pipeline.predict_sample_without_blocking(get_test_inputs(description), **unpadded)
    worst = 0.0
    for member, expected in get_test_outputs(description).members.items():
        actual = got.members[member].data.transpose(*expected.data.dims).values
        worst = max(worst, float(np.abs(actual - expected.data.values).max()))
    return worst


def _biapy(rdf_path: Path) -> dict[str, Any]:
    from biapy.models import check_bmz_model_compatibility

    outcome = check_bmz_model_compatibility(_load_rdf(rdf_path))
    if isinstance(outcome, dict):  # 3.7: a dict; the zoo's script still unpacks the tuple of older releases
        error, message = outcome["error"], outcome["reason_message"]
        found = {key: outcome.get(key) for key in ("workflow_info", "preproc_info")}
    else:
        error, message, found = outcome[1], outcome[2], {}
    return {"status": "failed" if error else "passed", "details": str(message), **found}


def _runtime(kind: str, rdf_path: Path, weight_format: str, tolerance: float) -> dict[str, Any]:
    import numpy as np

    rdf = _load_rdf(rdf_path)
    folder = rdf_path.parent
    raw = np.load(folder / rdf["inputs"][0]["test_tensor"]["source"]).astype(np.float32)
    expected = np.load(folder / rdf["outputs"][0]["test_tensor"]["source"])
    steps = rdf["inputs"][0].get("preprocessing", [])
    if [step["id"] for step in steps] != ["scale_range"]:
        return {"status": "failed", "details": f"preprocessing {steps}: not the one scale_range step JDLL runs"}
    scaled = ((raw - raw.min()) / (raw.max() - raw.min() + EPS)).astype(np.float32)
    source = folder / rdf["weights"][weight_format]["source"]
    if kind == "onnxruntime":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(source), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: scaled})[0]
    else:
        import torch

        module = torch.jit.load(str(source), map_location="cpu")
        with torch.no_grad():
            got = module(torch.from_numpy(scaled)).numpy()
    difference = float(np.abs(got - expected).max())
    status = "passed" if difference <= tolerance else "failed"
    return {"status": status, "max_abs_diff": difference, "details": "" if status == "passed" else "outputs differ"}


if __name__ == "__main__":
    try:
        report = main(*sys.argv[1:5])
    except Exception as error:
        report = {"status": "failed", "details": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()}
    print(json.dumps(report))

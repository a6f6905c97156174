"""ONNX Runtime sessions: which execution provider, how many threads, and the options that make each fast.

``onnxruntime``, ``onnxruntime-gpu`` and ``onnxruntime-openvino`` install the same module; the extras
``wnet-zoo[cpu]``, ``[gpu]`` and ``[openvino]`` pick one. The provider a session really uses is read from
the session after it is made: ``onnxruntime-gpu`` offers CUDA and TensorRT even without a GPU and then
quietly runs on the CPU, which ``device="cuda"`` turns into an error saying what is missing.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import logging
import os
import platform
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from wnet_zoo.errors import UserError, setting, shorten
from wnet_zoo.prediction.settings import DEVICES

LOG = logging.getLogger("wnet_zoo")
PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
GPU_DEVICES = ("tensorrt", "cuda")
INSTALL_HINT = (
    'onnxruntime is not installed; install one build: pip install "wnet-zoo[cpu]" (CPU), '
    '"wnet-zoo[gpu]" (NVIDIA GPU) or "wnet-zoo[openvino]" (OpenVINO, fastest on x86 CPUs)'
)
_EXTRA = {"cuda": "gpu", "tensorrt": "gpu", "openvino": "openvino", "cpu": "cpu"}
_SESSION_LOCK = threading.Lock()


def import_onnxruntime() -> ModuleType:
    """The ``onnxruntime`` module, or a ``UserError`` naming the extra to install."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return onnxruntime


def default_threads() -> int:
    """All the cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_supports_bf16() -> bool:
    """Whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16); read from ``/proc/cpuinfo``."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cache_dir() -> Path:
    """Where compiled engines are kept (TensorRT): ``$WNET_ZOO_CACHE`` or ``~/.cache/wnet-zoo``."""
    base = (
        os.environ.get("WNET_ZOO_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "wnet-zoo"
    )
    return Path(base)


@dataclass
class Engine:
    """An ONNX Runtime session with what was chosen for it.

    Attributes:
        session: the ``onnxruntime.InferenceSession``.
        provider: the execution provider the session really uses (its first).
        threads: CPU threads given to it.
        precision: ``"fp32"``, or ``"bf16"`` for OpenVINO on CPUs that compute it natively.
    """

    session: Any
    provider: str
    threads: int
    precision: str = "fp32"

    @property
    def on_gpu(self) -> bool:
        """Whether the session runs on an NVIDIA GPU (CUDA or TensorRT)."""
        return self.provider in (PROVIDERS["cuda"], PROVIDERS["tensorrt"])

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities (B, K, Z, Y, X) of a float32 batch (B, 1, Z, Y, X) scaled as the graph takes it."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        input_name = self.session.get_inputs()[0].name
        if not self.on_gpu:
            return self.session.run(None, {input_name: batch})[0]
        binding = self.session.io_binding()
        binding.bind_cpu_input(input_name, batch)
        binding.bind_output(self.session.get_outputs()[0].name, "cuda")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]


def open_engine(
    model: str | Path,
    device: str = "auto",
    threads: int | None = None,
    tile: tuple[int, int, int] | None = None,
    batch: int = 1,
    shown: str | None = None,
) -> Engine:
    """Open ``model`` (an ONNX file) on ``device``.

    Args:
        model: the ONNX file.
        device: ``auto`` (TensorRT or CUDA with a GPU, else OpenVINO when installed, else CPU), ``cuda``,
            ``tensorrt``, ``openvino`` or ``cpu``.
        threads: CPU threads (default: all cores).
        tile: the (z, y, x) input shape, for TensorRT's optimisation profile.
        batch: the largest batch that will be run, for TensorRT's optimisation profile.
        shown: how messages name the model (default: ``model``).

    Raises:
        UserError: no onnxruntime, an unknown device, or a device this installation cannot use.
    """
    ort = import_onnxruntime()
    if device not in DEVICES:
        raise UserError(f"{setting('device', device)}: choose one of {', '.join(DEVICES)}")
    if threads is not None and threads < 0:
        raise UserError(f"{setting('threads', threads)}: give a number of threads, or 0 for all cores")
    threads = threads or default_threads()
    available = set(ort.get_available_providers())
    candidates = _auto_devices(available) if device == "auto" else [device]
    for choice in candidates:
        if PROVIDERS[choice] not in available:
            raise UserError(
                f"{setting('device', choice)}: this onnxruntime build has no {PROVIDERS[choice]}; "
                f'pip uninstall onnxruntime, then pip install "wnet-zoo[{_EXTRA[choice]}]"'
            )
        engine = _make_session(ort, model, choice, threads, tile, batch, shown)
        if engine.provider == PROVIDERS[choice] or (device == "auto" and engine.on_gpu):
            return engine
        if device != "auto":
            raise UserError(f"{setting('device', choice)}: {_why_not_started(ort, choice)}")
        LOG.warning("%s did not start (%s); trying the next device", PROVIDERS[choice], _why_not_started(ort, choice))
    return _make_session(ort, model, "cpu", threads, tile, batch, shown)


def _auto_devices(available: set[str]) -> list[str]:
    devices: list[str] = []
    if PROVIDERS["cuda"] in available and _loadable(_driver_library()):
        tensorrt = PROVIDERS["tensorrt"] in available and _loadable(*_tensorrt_libraries())
        devices.append("tensorrt" if tensorrt else "cuda")
    if PROVIDERS["openvino"] in available:
        devices.append("openvino")
    return devices


def _make_session(
    ort: ModuleType,
    model: str | Path,
    device: str,
    threads: int,
    tile: tuple[int, int, int] | None,
    batch: int,
    shown: str | None = None,
) -> Engine:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    options.log_severity_level = 3  # errors only: a provider that fails to load is diagnosed below
    precision = "fp32"
    providers: list[Any] = []
    if device in GPU_DEVICES:
        _preload_cuda_libraries(ort)
        if device == "tensorrt":
            providers.append((PROVIDERS["tensorrt"], _tensorrt_options(tile, batch)))
        providers.append((PROVIDERS["cuda"], {"device_id": 0, "cudnn_conv_use_max_workspace": "1"}))
    elif device == "openvino":
        precision = "bf16" if cpu_supports_bf16() else "fp32"
        providers.append((PROVIDERS["openvino"], _openvino_options(threads, precision)))
    providers.append(PROVIDERS["cpu"])
    # The process's onnxruntime logger (errors only from here on): onnxruntime-gpu 1.31 warns "no registered
    # plugin EP device" at every CUDA session.
    ort.set_default_logger_severity(3)
    printed = io.StringIO()
    try:
        # its provider fallback is print()ed; sys.stdout is the process's, so one session is made at a time
        with _SESSION_LOCK, contextlib.redirect_stdout(printed):
            session = ort.InferenceSession(str(model), sess_options=options, providers=providers)
    except Exception as error:  # onnxruntime raises its own exception types
        raise UserError(f"{shown or model}: onnxruntime cannot load this model ({short_message(error)})") from None
    finally:
        if printed.getvalue().strip():
            LOG.debug("onnxruntime: %s", " ".join(printed.getvalue().split()))
    used = session.get_providers()[0]
    return Engine(session, used, threads, precision if used == PROVIDERS["openvino"] else "fp32")


_ORT_CODE = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")
_LOAD_FAILED = re.compile(r"^Load model from .*? failed: ?")
_INVALID_NODE = re.compile(r"^This is an invalid model\. In Node, .*? , Error ")


def short_message(error: BaseException, limit: int = 200) -> str:
    """The point of an onnxruntime error in one line of at most ``limit`` characters (and an ellipsis).

    Drops what the user cannot act on and what hides the point: the status code prefix, the model path it
    repeats (a temporary file for a zipped package), the node's signature before its error. Its lines are
    joined (onnxruntime puts the offending sizes on the second) and a longer text is cut between words.
    """
    text = " ".join(str(error).split()) or type(error).__name__
    for boilerplate in (_ORT_CODE, _LOAD_FAILED, _INVALID_NODE):
        text = boilerplate.sub("", text)
    return shorten(text, limit)


def _openvino_options(threads: int, precision: str) -> dict[str, str]:
    """OpenVINO on the CPU; precision goes through ``load_config`` (its ``precision`` option is refused on CPU)."""
    config = {
        "CPU": {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "INFERENCE_NUM_THREADS": str(threads),
            "PERFORMANCE_HINT": "LATENCY",
        }
    }
    return {"device_type": "CPU", "load_config": json.dumps(config)}


def _tensorrt_options(tile: tuple[int, int, int] | None, batch: int) -> dict[str, Any]:
    """TensorRT with its engine and timing caches on disk, one optimisation profile for the tile shape."""
    cache = cache_dir() / "tensorrt"
    cache.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "device_id": 0,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache),
    }
    if tile is not None:
        shape = "x".join(map(str, tile))
        options["trt_profile_min_shapes"] = f"raw:1x1x{shape}"
        options["trt_profile_opt_shapes"] = f"raw:{batch}x1x{shape}"
        options["trt_profile_max_shapes"] = f"raw:{batch}x1x{shape}"
    return options


def _preload_cuda_libraries(ort: ModuleType) -> None:
    """Load CUDA and cuDNN from the ``nvidia-*`` wheels the ``[gpu]`` extra installs, when present."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(Exception):
        preload(cuda=True, cudnn=True, msvc=False)


def _why_not_started(ort: ModuleType, device: str) -> str:
    """One line on why a provider did not start (diagnosed for CUDA and TensorRT)."""
    if device not in GPU_DEVICES:
        return "onnxruntime fell back to its CPU provider"
    if not _loadable(_driver_library()):
        device_setting = setting("device")
        return f"no NVIDIA GPU driver found ({_driver_library()} cannot be loaded); use {device_setting} cpu or auto"
    major = str(getattr(ort, "cuda_version", "") or "").split(".")[0]
    if major and not _loadable(_cuda_runtime_library(major)):
        return f'the CUDA {major} runtime libraries are missing; pip install "wnet-zoo[gpu]" installs them'
    if not _loadable(_cudnn_library()):
        return 'cuDNN 9 is missing; pip install "wnet-zoo[gpu]" installs it'
    if device == "tensorrt" and not _loadable(*_tensorrt_libraries()):
        return (
            f"the TensorRT libraries are missing; pip install tensorrt-cu{major or 13}, or use {setting('device')} cuda"
        )
    return "onnxruntime could not start it with this driver and these CUDA libraries; update the NVIDIA driver"


def _windows() -> bool:
    return platform.system() == "Windows"


def _driver_library() -> str:
    return "nvcuda.dll" if _windows() else "libcuda.so.1"


def _cuda_runtime_library(major: str) -> str:
    return f"cudart64_{major}.dll" if _windows() else f"libcudart.so.{major}"


def _cudnn_library() -> str:
    return "cudnn64_9.dll" if _windows() else "libcudnn.so.9"


def _tensorrt_libraries() -> tuple[str, ...]:
    return ("nvinfer_10.dll", "nvinfer_11.dll") if _windows() else ("libnvinfer.so.10", "libnvinfer.so.11")


def _loadable(*names: str) -> bool:
    """Whether any of the shared libraries ``names`` loads."""
    for name in names:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False

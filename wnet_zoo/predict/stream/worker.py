"""What a process keeps between blocks: one predictor per model and settings, and its cached tiles."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from wnet_zoo.predict.stream.jobs import Job, _predictor_key

_LOCK = threading.Lock()
_PREDICTORS: dict[str, Any] = {}
_CACHES: dict[str, OrderedDict[int, np.ndarray]] = {}


def predictor_for(job: Job) -> Any:
    """One :class:`~wnet_zoo.predict.predictor.Predictor` per model and settings per process (one per Dask worker)."""
    from wnet_zoo.predict.predictor import Predictor

    key = _predictor_key(job)
    with _LOCK:
        if key not in _PREDICTORS:
            _PREDICTORS.clear()
            _CACHES.clear()
            _PREDICTORS[key] = Predictor(job.model, **job.predictor)
        return _PREDICTORS[key]


def adopt(job: Job, predictor: Any) -> None:
    """Use ``predictor`` (already open in this process) for ``job`` instead of opening another."""
    with _LOCK:
        _PREDICTORS.clear()
        _CACHES.clear()
        _PREDICTORS[_predictor_key(job)] = predictor


def release_tiles() -> None:
    """Drop this process's cached tile outputs (once the probability phase is over)."""
    with _LOCK:
        _CACHES.clear()
    _trim()


def _trim() -> None:
    """Hand freed memory back to the system (glibc keeps it otherwise, and the resident size creeps up block by
    block with the large, short-lived arrays of the watershed); nothing elsewhere."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc() -> Any:
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _load_libc()

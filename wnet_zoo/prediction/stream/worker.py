"""What a process keeps between blocks: one predictor per model and settings, and its cached tiles."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from wnet_zoo.prediction.stream.jobs import Job, _predictor_key

MMAP_THRESHOLD = 1 << 20  # bytes from which an allocation gets pages of its own: see map_large_allocations
_M_MMAP_THRESHOLD = -3  # the number of that parameter in glibc's malloc.h


class WorkerState:
    """What one process keeps between blocks: one open predictor (for one model and settings) and its cached
    tile outputs. A new model, new settings or a new prediction drops what was kept for the last one."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.predictors: dict[str, Any] = {}
        self.caches: dict[str, OrderedDict[int, np.ndarray]] = {}

    def predictor_for(self, job: Job) -> Any:
        """The :class:`~wnet_zoo.prediction.predictor.Predictor` of ``job``, opened on first use."""
        from wnet_zoo.prediction.predictor import Predictor

        key = _predictor_key(job)
        with self.lock:
            if key not in self.predictors:
                self.predictors.clear()
                self.caches.clear()
                self.predictors[key] = Predictor(job.model, **job.predictor)
            return self.predictors[key]

    def adopt(self, job: Job, predictor: Any) -> None:
        """Use ``predictor`` (already open in this process) for ``job`` instead of opening another."""
        with self.lock:
            self.predictors.clear()
            self.caches.clear()
            self.predictors[_predictor_key(job)] = predictor

    def tile_cache(self, key: str) -> OrderedDict[int, np.ndarray]:
        """The tile outputs kept for the prediction ``key`` (one prediction at a time: another's are dropped)."""
        with self.lock:
            if key not in self.caches:
                self.caches.clear()
            return self.caches.setdefault(key, OrderedDict())

    def release_tiles(self) -> None:
        """Drop the cached tile outputs (once the probability phase is over) and hand the memory back."""
        with self.lock:
            self.caches.clear()
        trim_memory()


STATE = WorkerState()
"""This process's state: the Dask worker's, or that of the process predicting in-process."""


def release_tiles() -> None:
    """:meth:`WorkerState.release_tiles` of this process (a plain function, for Dask's ``client.run``)."""
    STATE.release_tiles()


def trim_memory() -> None:
    """Hand freed memory back to the system (glibc keeps it otherwise, and the resident size creeps up block by
    block with the large, short-lived arrays of the watershed); nothing elsewhere."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def map_large_allocations() -> None:
    """From now on, give allocations of :data:`MMAP_THRESHOLD` bytes or more pages of their own, handed back to
    the system when they are freed (glibc; nothing elsewhere). Called before every block's work: a Dask worker may
    start with a label block.

    glibc raises that threshold (up to 32 MiB) each time such a block is freed, and serves what falls under it
    from the allocating thread's arena, where freed memory stays for that thread's use: with the nucleus stages
    on 2 threads a label block peaked about 200 MiB higher, and only blocks deep enough for slabs run them on
    threads, so the peak grew with the volume (``benchmarks/README.md``). The pages cost a few % of the stages'
    time."""
    if _LIBC is not None:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def _load_libc() -> Any:
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC = _load_libc()

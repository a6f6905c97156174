"""A Dask worker plugin that makes a worker import everything the block work needs before it takes a task.

Python 3.11 keeps the AST builder's recursion counter per interpreter, not per thread: two threads parsing at once
can fail with ``SystemError: AST constructor recursion depth mismatch``. Imports parse (``inspect.signature`` of a
builtin does, and ``numpy.ma`` calls it many times), and a fresh worker failed so: its event loop imported
``numpy.ma`` for Dask's ndarray serializer, to send one block's summary, while its task thread imported the next
block's modules. A worker runs :meth:`ImportsFirst.setup` before it reads its first task, and again after a
restart, so with every import done there no two threads import at once. The client imports them too before it
asks for work: its own event loop deserializes the summaries.
"""

from __future__ import annotations

import importlib
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

MODULES = (
    "distributed.protocol.numpy",  # Dask's ndarray serializer, which imports numpy.ma
    "wnet_zoo.prediction.stream.blocks",
    "wnet_zoo.prediction.predictor",
    # what the block work imports inside functions (commands that never need them do not load them)
    "onnxruntime",
    "scipy.ndimage",
    "scipy.spatial",
    "edt",
    "pandas",
    "zarr",
    "tifffile",
)


def import_block_work() -> None:
    """Import :data:`MODULES` (and scikit-image's watershed, which it loads on first use) in this process."""
    for module in MODULES:
        importlib.import_module(module)
    from skimage.segmentation import watershed  # noqa: F401


class ImportsFirst(WorkerPlugin):
    """Import the block work's modules when a worker starts (or when the plugin is registered with running workers)."""

    name = "wnet-zoo-imports"
    idempotent = True  # one registration serves every later command on the same cluster

    def setup(self, worker: Any) -> None:
        """Import on the worker's event loop, before any task runs."""
        import_block_work()

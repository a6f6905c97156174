"""The imports a Dask worker makes before its first task, in a worker plugin registered for the command's run.

CPython 3.11.0 to 3.11.7 could fail an ``ast.parse`` with ``SystemError: AST constructor recursion depth mismatch``
when another thread parsed at the same time (gh-106905, fixed in 3.11.8). Some imports parse: ``numpy.ma`` calls
``inspect.signature`` on builtins, scikit-image reads its lazy modules' stubs. A fresh worker failed so: its event
loop imported ``numpy.ma`` for Dask's ndarray serializer, to send one block's summary, while its task thread
imported (most likely) the nucleus stages' libraries. A worker runs the plugin's setup when it joins the cluster
(or when the plugin is registered), before it reads a task of this command: these imports meet no other thread of
the command's.
"""

from __future__ import annotations

import contextlib
import importlib
import uuid
from collections.abc import Iterator
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from wnet_zoo.prediction.runtime import import_onnxruntime
from wnet_zoo.segment.nuclei import LIBRARIES

MODULES = (
    "distributed.protocol.numpy",  # Dask's ndarray serializer, which imports numpy.ma
    "wnet_zoo.prediction.stream.blocks",
    "wnet_zoo.prediction.predictor",
    *LIBRARIES,  # the nucleus stages import them where they are used
    "edt",
    "zarr",
    "tifffile",
)


class ImportsFirst(WorkerPlugin):
    """Import ONNX Runtime (or raise the ``UserError`` naming its extra) and :data:`MODULES` on a worker."""

    def setup(self, worker: Any) -> None:
        """Run on the worker's event loop, which handles no task until it returns."""
        import_onnxruntime()
        for module in MODULES:
            importlib.import_module(module)
        from skimage.segmentation import watershed  # noqa: F401  (scikit-image loads its functions' modules lazily)


@contextlib.contextmanager
def imports_first(client: Any) -> Iterator[None]:
    """While it lasts, :class:`ImportsFirst` is registered with the cluster of ``client`` (workers that join or restart
    meanwhile run it too), under a name of its own: another command on the same cluster keeps its own. It is
    unregistered afterwards (best effort), so that a shared cluster's later workers do not need wnet-zoo. This process
    imports Dask's ndarray serializer first as well: its event loop reads the summaries."""
    importlib.import_module("distributed.protocol.numpy")
    name = f"wnet-zoo-imports-{uuid.uuid4().hex}"
    try:  # the scheduler keeps a plugin whose setup failed on a worker (its error is raised here): it goes too
        client.register_plugin(ImportsFirst(), name=name)
        yield
    finally:
        if client.status == "running":  # else no scheduler answers (and the call would wait out its timeout)
            with contextlib.suppress(Exception):  # best effort: never in place of the error that ended the run
                client.unregister_worker_plugin(name)

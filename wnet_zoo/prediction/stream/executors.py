"""Two executors for the same block work: this process, or a Dask distributed cluster.

Both run :func:`wnet_zoo.prediction.stream.blocks.run` over the blocks of a phase and return the blocks' summaries
in block order, so the results are the same whichever runs them. On Dask each task reads its input region and writes
its output block itself (input and work folder must be on storage every worker sees); only the small
summaries travel back. A worker keeps its ONNX Runtime session between tasks, and a task lost with its
worker is rerun elsewhere by Dask: a block's work is idempotent.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from tqdm.auto import tqdm

from wnet_zoo.errors import UserError, setting
from wnet_zoo.prediction.stream import blocks
from wnet_zoo.prediction.stream.jobs import Job
from wnet_zoo.prediction.stream.worker import release_tiles

CONNECT_TIMEOUT_S = 10
SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")  # Dask's network protocols
_FORMS = (
    "local:N (N local workers, e.g. local:2) or a Dask scheduler's address, tcp://HOST:PORT (or tls://, ws://, wss://)"
)


class Executor(Protocol):
    """Where the blocks of a phase run: this process (:class:`LocalExecutor`) or Dask (:class:`DaskExecutor`)."""

    description: str

    def map(
        self, phase: str, job: Job, indices: Sequence[int], extras: Sequence[Any] | None = None, label: str = ""
    ) -> list[dict[str, Any]]:
        """Run ``phase`` on the blocks ``indices`` (with one extra argument per block if given); their summaries
        in block order."""
        ...

    def release_tiles(self) -> None:
        """Drop the cached tile outputs wherever the blocks ran."""
        ...


class LocalExecutor:
    """Blocks one after another in this process (x fastest, so neighbouring blocks share tile outputs)."""

    description = "this process"

    def map(
        self, phase: str, job: Job, indices: Sequence[int], extras: Sequence[Any] | None = None, label: str = ""
    ) -> list[dict[str, Any]]:
        """Run ``phase`` on the blocks ``indices`` (with one extra argument per block if given)."""
        bar = tqdm(indices, desc=label, unit="block", leave=False, disable=None if label else True)
        return [blocks.run(phase, job, index, None if extras is None else extras[i]) for i, index in enumerate(bar)]

    def release_tiles(self) -> None:
        """Drop the cached tile outputs."""
        release_tiles()


class DaskExecutor:
    """Blocks as tasks on a ``dask.distributed`` cluster; a progress bar follows their completion."""

    def __init__(self, client: Any, worker_threads: int | None = None) -> None:
        self.client = client
        self.worker_threads = worker_threads  # ONNX Runtime threads per worker, when this command made the cluster
        workers = client.scheduler_info().get("workers", {})
        self.description = f"Dask scheduler {client.scheduler.address} ({len(workers)} workers)"

    def map(
        self, phase: str, job: Job, indices: Sequence[int], extras: Sequence[Any] | None = None, label: str = ""
    ) -> list[dict[str, Any]]:
        """See :meth:`LocalExecutor.map`."""
        from distributed import as_completed

        futures = self.client.map(
            blocks.run,
            [phase] * len(indices),
            [job] * len(indices),
            list(indices),
            list(extras) if extras is not None else [None] * len(indices),
            pure=False,
            retries=2,
        )
        position = {future.key: i for i, future in enumerate(futures)}
        results: list[dict[str, Any]] = [{}] * len(futures)
        with tqdm(total=len(futures), desc=label, unit="block", leave=False, disable=None if label else True) as bar:
            try:
                for future in as_completed(futures):
                    results[position[future.key]] = future.result()
                    bar.update(1)
            except BaseException:
                self.client.cancel(futures)  # no task may write on after the error
                raise
        return results

    def release_tiles(self) -> None:
        """Drop the workers' cached tile outputs."""
        self.client.run(release_tiles)


@contextlib.contextmanager
def open_executor(scheduler: str | None, threads: int | None = None) -> Iterator[Executor]:
    """The executor for ``scheduler``: None -> this process; ``local:N`` -> a LocalCluster of N worker
    processes on 127.0.0.1, stopped afterwards; ``tcp://HOST:PORT`` -> an existing cluster."""
    if scheduler is None:
        yield LocalExecutor()
        return
    check_scheduler(scheduler)
    try:
        from distributed import Client, LocalCluster

        from wnet_zoo.prediction.stream.worker_imports import imports_first  # it needs Dask too
    except ImportError:
        raise UserError(f"{setting('scheduler')} needs Dask: pip install 'wnet-zoo[dask]'") from None
    if scheduler.startswith("local:"):
        count = _worker_count(scheduler)
        per_worker = max((threads or os.cpu_count() or 1) // count, 1)
        with (
            kept_environment(),
            LocalCluster(
                n_workers=count,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                env={"OMP_NUM_THREADS": str(per_worker)},
            ) as cluster,
            Client(cluster) as client,
            imports_first(client),
        ):
            yield DaskExecutor(client, per_worker)
        return
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as error:
        raise UserError(
            f"{setting('scheduler', scheduler)}: no Dask scheduler answered within {CONNECT_TIMEOUT_S} s"
            f" ({type(error).__name__});"
            f"\nstart one (dask scheduler; dask worker ADDRESS) or use {setting('scheduler', 'local:N')}"
        ) from None
    with client, imports_first(client):
        yield DaskExecutor(client)


@contextlib.contextmanager
def kept_environment() -> Iterator[None]:
    """Restore ``os.environ`` afterwards: a ``LocalCluster`` sets OMP_NUM_THREADS=1 and more in its parent process,
    which would slow (and change the numbers of) later work in the caller's process and its children."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def check_scheduler(scheduler: str) -> None:
    """Raise ``UserError`` unless ``scheduler`` is ``local:N`` or a scheduler address ``SCHEME://HOST:PORT``: a
    malformed address would otherwise cost the whole connection timeout before its error."""
    if scheduler.startswith("local:"):
        _worker_count(scheduler)
        return
    if _is_address(scheduler):
        return
    hint = f"; did you mean tcp://{scheduler}?" if "://" not in scheduler and _is_address(f"tcp://{scheduler}") else ""
    raise UserError(f"{setting('scheduler', scheduler)}: give {_FORMS}{hint}")


def _is_address(text: str) -> bool:
    """Whether ``text`` is SCHEME://HOST:PORT with one of Dask's network schemes."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:  # a port that is not a number in 0..65535
        return False
    return bool(
        parts.scheme in SCHEMES
        and parts.hostname
        and port
        and parts.path in ("", "/")
        and not (parts.query or parts.fragment or parts.username)
    )


def _worker_count(scheduler: str) -> int:
    text = scheduler.partition(":")[2]
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"{setting('scheduler', scheduler)}: give {_FORMS}")
    return int(text)

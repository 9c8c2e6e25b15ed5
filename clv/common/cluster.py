"""Where part-by-part work runs: in this process, or on a Dask cluster (a `LocalCluster` sized to the
machine, or an existing one by its scheduler's address). Either way `runner.map(function, source,
parts, **kwargs)` returns `[function(source, part, **kwargs) for part in parts]`, in order, and reports
its progress on stderr; the work functions know nothing of Dask.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

logger = logging.getLogger(__name__)


class ClusterError(RuntimeError):
    """A cluster this run cannot use (its workers run other code): reported as one line, exit code 2."""


class Progress:
    """Parts done of the total, rows a second, time left: a bar on a terminal, a line every 10% in a log."""

    def __init__(self, label: str, weights: Sequence[int], quiet: bool = False, stream: TextIO | None = None) -> None:
        self.label, self.weights, self.quiet = label, list(weights), quiet
        self.stream = stream or sys.stderr
        self.total, self.done_rows, self.done = sum(self.weights) or 1, 0, 0
        self.started = time.monotonic()
        self.tty = self.stream.isatty()
        self.next_tenth = 1

    def advance(self, index: int) -> None:
        self.done += 1
        self.done_rows += self.weights[index]
        if self.quiet:
            return
        share = self.done_rows / self.total
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done_rows / elapsed
        left = (self.total - self.done_rows) / rate if rate else math.inf
        text = (
            f"{self.label}: {self.done}/{len(self.weights)} parts, {self.done_rows:,} customers, "
            f"{rate:,.0f}/s, {_clock(left)} left"
        )
        if self.tty:
            bar = "#" * round(24 * share)
            self.stream.write(f"\r[{bar:<24}] {text}   ")
            if self.done == len(self.weights):
                self.stream.write("\n")
        elif share * 10 >= self.next_tenth or self.done == len(self.weights):
            self.next_tenth = int(share * 10) + 1
            self.stream.write(f"{text}\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}:{seconds:02d}"


class LocalRunner:
    """The parts in this process, one after another: a flat bank, and every test of a work function."""

    def __init__(self, quiet: bool = True) -> None:
        self.quiet = quiet

    def share(self, value: Any) -> Any:
        return value

    def map(
        self,
        function: Callable[..., Any],
        source: Any,
        parts: Sequence[str] | None = None,
        label: str = "parts",
        **kwargs: Any,
    ) -> list[Any]:
        parts = list(source.parts if parts is None else parts)
        progress = Progress(label, [source.customers_in([part]) for part in parts], self.quiet)
        results = []
        for index, part in enumerate(parts):
            results.append(function(source, part, **kwargs))
            progress.advance(index)
        return results


class DaskRunner:
    """The parts as tasks on a Dask cluster. A task lost with its worker is run again elsewhere by the
    scheduler, so a part function must give the same result when run twice (they write whole files
    under their final names only when complete)."""

    def __init__(self, client: Any, quiet: bool = False) -> None:
        self.client, self.quiet = client, quiet

    def share(self, value: Any) -> Any:
        """Send a value (the model) to every worker once; tasks receive it by reference. The workers import its
        module first, all at once: unpickled as it arrived, it imported its libraries a worker after another (3.7 s
        of a 1M scoring's start on 2 workers, against 1.6 s)."""
        self.client.run(load_module, type(value).__module__)
        return self.client.scatter(value, broadcast=True, hash=False)

    def map(
        self,
        function: Callable[..., Any],
        source: Any,
        parts: Sequence[str] | None = None,
        label: str = "parts",
        **kwargs: Any,
    ) -> list[Any]:
        from distributed import as_completed

        parts = list(source.parts if parts is None else parts)
        progress = Progress(label, [source.customers_in([part]) for part in parts], self.quiet)
        futures = self.client.map(function, [source] * len(parts), parts, pure=False, **kwargs)
        index = {future.key: i for i, future in enumerate(futures)}
        results: list[Any] = [None] * len(parts)
        try:
            for future in as_completed(futures):
                i = index[future.key]
                results[i] = future.result()  # fetched once; a part that failed raises here, with its own message
                progress.advance(i)
            return results
        finally:
            self.client.cancel(futures)


Runner = LocalRunner | DaskRunner


def load_module(name: str) -> None:
    importlib.import_module(name)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's mallopt parameters (malloc.h)
KEPT_BYTES = 1 << 30
OLD_GLIBC_MMAP_MAX = 32 << 20  # the largest mmap threshold a glibc before 2.26 accepts
KEEP_MIN_LIMIT = 4 << 30  # a worker's memory limit under which it gives back what a part frees, as Dask has it


def keep_freed_memory(dask_worker: Any = None) -> None:
    """Keep what one part frees for the next, in this worker process (run on every worker by `client.run`).

    A part's columns are arrays of tens of MB. glibc maps each array past its mmap threshold afresh (32 MiB at most
    as it adapts, 128 KiB where MALLOC_TRIM_THRESHOLD_ is set, as Dask's nanny does) and unmaps it when freed; a
    thread's own arena gives back its heaps too, and Arrow's allocator (mimalloc) what it frees. The next part's
    pages are then faulted in and zeroed again: a sixth of a part's time went to the kernel. Here the threads that
    start from now on (a worker's task thread starts with its first task) allocate from the one heap, arrays under
    1 GiB come from it, it is given back only past 1 GiB free at its top, and Arrow allocates from it too: the
    process stays near its peak, which its first part reaches anyway.

    Not on a worker limited to less than 4 GiB (`--memory-limit 2GiB`): Dask pauses a worker at 80% of its limit
    until its memory falls, and one that kept its peak could stay paused. Not off Linux, whose C library this is."""
    limit = getattr(getattr(dask_worker, "memory_manager", None), "memory_limit", None)
    if (limit and limit < KEEP_MIN_LIMIT) or not sys.platform.startswith("linux"):
        return
    import pyarrow as pa

    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # glibc's; musl has none
    if mallopt is None:
        return
    pa.set_memory_pool(pa.system_memory_pool())
    if not mallopt(M_MMAP_THRESHOLD, KEPT_BYTES):  # refused past 32 MiB by an older glibc
        mallopt(M_MMAP_THRESHOLD, OLD_GLIBC_MMAP_MAX)
    mallopt(M_TRIM_THRESHOLD, KEPT_BYTES)
    mallopt(M_ARENA_MAX, 1)


def prepare_workers(client: Any) -> None:
    """Check that every worker runs this clv (check_workers), then set each one's allocator (keep_freed_memory)."""
    check_workers(client)
    client.run(keep_freed_memory)


@contextmanager
def runner(
    scheduler: str | None = None,
    workers: int | None = None,
    memory_limit: str | None = None,
    quiet: bool = False,
    cluster: bool = True,
) -> Iterator[LocalRunner | DaskRunner]:
    """A Dask runner on the cluster at `scheduler`, or on a LocalCluster of `workers` processes (default:
    one a core) with `memory_limit` each; a LocalRunner when `cluster` is False and no scheduler is named."""
    if not (cluster or scheduler):
        yield LocalRunner(quiet)
        return
    import dask
    from distributed import Client, LocalCluster

    # its start and stop, and a failed task's traceback, are not this run's news: a failure is one line
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    if scheduler:
        logger.info("using the Dask cluster at %s", scheduler)
        with Client(scheduler, timeout="30s") as client:
            prepare_workers(client)
            yield DaskRunner(client, quiet)
        return
    n = workers or os.cpu_count() or 1
    limit = memory_limit or "auto"
    # read by each worker as it starts: a failed task's traceback is not this command's output
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "critical")
    logger.info("starting a local Dask cluster of %d workers (memory limit %s each)", n, limit)
    # a worker's profiler samples its task's stack every 10 ms for a dashboard this cluster does not serve: a tenth
    # of a 1M scoring's time
    with (
        dask.config.set({"distributed.worker.profile.enabled": False}),
        LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            memory_limit=limit,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as local,
        Client(local) as client,
    ):
        prepare_workers(client)
        yield DaskRunner(client, quiet)


def check_workers(client: Any) -> None:
    """Raise ClusterError, naming the first worker that does not import the very clv this process imports
    (another version, other files, or none at all), and what to do about it."""
    import cloudpickle

    from clv.common import package

    mine = f"clv {package.identity()} from {package.ROOT}"
    # the probe goes by value: a worker without clv can still run it and say so
    cloudpickle.register_pickle_by_value(package)
    try:
        found = client.run(package.probe, on_error="return")
    finally:
        cloudpickle.unregister_pickle_by_value(package)
    for address, theirs in sorted(found.items()):
        if isinstance(theirs, BaseException):
            theirs = f"an error ({type(theirs).__name__}: {theirs})"
        if theirs.split(" from ")[0] != mine.split(" from ")[0]:
            raise ClusterError(
                f"the Dask worker at {address} imports {theirs}, this client {mine}: install this project in the "
                f"workers' environment (pip install -e {package.ROOT.parent}, or an image built with it) and "
                "restart the workers"
            )

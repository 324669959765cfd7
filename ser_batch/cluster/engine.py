"""The one engine of shard jobs: plan on the driver, run each shard in a worker, commit on the driver.

A job (``extract``, ``score``, ``train``'s fits) is a frozen *run context*, a :class:`ShardJob`
built once on the driver (its config, bundle, classes, ...) and sent whole to the workers, where
:meth:`ShardJob.run_shard` does one shard and returns a small typed result; the driver commits each
result as it comes in (:func:`run_shards`' ``commit``: counts, a long file's row, the progress bar).
A shard is named by a hash of its content, so a retried shard overwrites its own output.

The executor is a parameter (:class:`Executor`): Ray (an embedded local runtime, or the cluster at
an address) or this very process, one shard after the other (``--in-process``) -- for small runs,
tests and debugging: no runtime to start, and a failure's traceback is the job's own. Both run the
same code on the same shards, so they write the same bytes. :mod:`ser_batch.cluster.runtime` is the
only module that talks to Ray.

A job may make several passes, each one :func:`run_shards` over its shards: say a first pass whose
small results the driver reduces (statistics of every window), then a second one whose run context
carries that reduction (``dataclasses.replace(job, stats=...)``).

Lost workers: a shard whose worker died on every try (a native crash, memory, a lost node) does not
stop the job. :meth:`ShardJob.split` cuts it into one shard per file, which run again, so that only a
file that kills its worker is lost; :meth:`ShardJob.lost` gives that file's result (an error row the
driver writes). A shard that raised a ser-batch error of its own (a bundle a worker cannot load) did
not crash: every shard would fail alike, so the job stops with that error.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Generic, Iterator, Protocol, Sequence, TypeVar

from ser_batch.cluster import runtime
from ser_batch.cluster.runtime import IN_PROCESS, RuntimeInfo
from ser_batch.config import RayConfig
from ser_batch.errors import ClusterError, SerBatchError
from ser_batch.reports.progress import progress_bar

log = logging.getLogger(__name__)

S = TypeVar("S")
R = TypeVar("R")

#: Environment variable for fault-injection tests: a shard that reaches an input whose path
#: contains this text ends its worker process at once, as a crash in a native decoder would.
FAULT_ENV = "SER_BATCH_TEST_CRASH_ON"


class ShardJob(Generic[S, R]):
    """A job's run context and its work on one shard. Subclasses are frozen dataclasses: the
    context is built once on the driver and sent whole to every worker."""

    #: What a worker does to a file, for the error of a file whose worker died: "scoring".
    doing: ClassVar[str] = "processing"
    #: The name of its tasks (Ray shows it in worker process titles and log lines: ``ray::score_shard``).
    task: ClassVar[str] = "shard"

    def run_shard(self, shard: S) -> R:
        """Do one shard (in a worker: no Ray in here) and return its small result."""
        raise NotImplementedError

    def split(self, shard: S) -> list[S]:
        """The shards to run again, one file each, after ``shard``'s worker died on every try;
        ``[]`` (the default): nothing is run again, ``shard`` is lost."""
        return []

    def lost(self, shard: S, error: str) -> R:
        """The result of a shard lost for good (on the driver): by default the job stops."""
        raise ClusterError(f"{error}; the job stops")


@dataclass(frozen=True)
class Ran(Generic[R]):
    """A shard's result with what running it cost its worker process."""

    result: R
    #: CPU seconds of the worker process while it ran the shard.
    cpu_s: float
    #: Peak resident memory of the worker process so far, MB.
    peak_rss_mb: float


def run_in_worker(shard: Any, *, job: ShardJob[Any, Any], threads: int) -> Ran[Any]:
    """What every task runs: ``job.run_shard(shard)`` with ``threads`` BLAS and OpenMP threads, timed.

    The threads are set here, for every shard, whoever runs it: a matrix product split over more
    threads sums in another order, so a shard run in this process, or by a Ray worker that was
    started for a task of another size (Ray sets ``OMP_NUM_THREADS`` once, when it starts a worker),
    would not write the same bytes.
    """
    from threadpoolctl import threadpool_limits

    cpu0 = time.process_time()
    with threadpool_limits(limits=threads):
        result = job.run_shard(shard)
    return Ran(result, time.process_time() - cpu0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


class Workers(Protocol):
    """A started executor."""

    info: RuntimeInfo

    def map(self, function: Callable[..., Any], items: Sequence[Any], *, kwargs: dict[str, Any], name: str,
            max_retries: int, cpus_per_task: float, on_result: Callable[[Any], None],
            on_failure: Callable[[int, Any, BaseException], None]) -> None:
        """Run ``function(item, **kwargs)`` for every item; ``on_result`` on the driver as each one
        finishes, ``on_failure(index, item, error)`` for one that failed for good."""

    def largest_node_cpus(self) -> int:
        """CPUs of the biggest node: a task asking for more could never be scheduled."""


def this_machine_cpus() -> int:
    """CPUs this process may use (its affinity, which a container may narrow)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class InProcess:
    """The executor that runs every shard here, one after the other."""

    def __init__(self, *, cpus: int | None = None) -> None:
        self.info = RuntimeInfo(IN_PROCESS, None, cpus or this_machine_cpus(), 1, started=False, local=True)

    def map(self, function: Callable[..., Any], items: Sequence[Any], *, kwargs: dict[str, Any], name: str,
            max_retries: int, cpus_per_task: float, on_result: Callable[[Any], None],
            on_failure: Callable[[int, Any, BaseException], None]) -> None:
        # No retries: nothing here dies without taking the driver along, and an exception would
        # only be raised again.
        for index, item in enumerate(items):
            try:
                result = function(item, **kwargs)
            except SerBatchError:
                raise
            except OSError as exc:  # a permission or disk error: the job stops saying so (no traceback)
                on_failure(index, item, exc)
                continue
            except Exception as exc:  # noqa: BLE001 - as a Ray task's would, it fails its shard only
                log.exception("shard %d failed", index)
                on_failure(index, item, exc)
                continue
            on_result(result)

    def largest_node_cpus(self) -> int:
        return self.info.cpus


class RayWorkers:
    """The executor that runs every shard as a Ray task (:func:`ser_batch.cluster.runtime.map_tasks`)."""

    def __init__(self, info: RuntimeInfo) -> None:
        self.info = info

    def map(self, function: Callable[..., Any], items: Sequence[Any], *, kwargs: dict[str, Any], name: str,
            max_retries: int, cpus_per_task: float, on_result: Callable[[Any], None],
            on_failure: Callable[[int, Any, BaseException], None]) -> None:
        runtime.map_tasks(function, items, kwargs=kwargs, name=name, max_retries=max_retries, num_cpus=cpus_per_task,
                          on_result=on_result, on_failure=on_failure)

    def largest_node_cpus(self) -> int:
        return runtime.largest_node_cpus()


@dataclass(frozen=True)
class Executor:
    """Where a job's shards run: this process (``in_process``), or Ray: the cluster at ``address``,
    else ``RAY_ADDRESS``, else an embedded local runtime of ``num_cpus`` CPUs (``None``: all)."""

    in_process: bool = False
    address: str | None = None
    num_cpus: int | None = None

    @classmethod
    def of(cls, ray: RayConfig, *, address: str | None = None, in_process: bool = False) -> "Executor":
        """The executor of a run's settings: ``address`` (``--address``) before ``ray.address``."""
        return cls(in_process, None if in_process else (address or ray.address or None), ray.local_cpus)

    @contextmanager
    def start(self) -> Iterator[Workers]:
        """Start (or join) the runtime; a runtime this started is stopped on exit."""
        if self.in_process:
            yield InProcess(cpus=self.num_cpus)
            return
        with runtime.ray_runtime(address=self.address, num_cpus=self.num_cpus) as info:
            yield RayWorkers(info)


@dataclass(frozen=True)
class Progress:
    """The progress bar of a pass (:func:`ser_batch.reports.progress.progress_bar`): ``total`` units."""

    total: int
    desc: str
    enabled: bool = True
    unit: str = "file"
    #: Seconds between plain lines off a terminal (``None``: the default; 0: every update).
    every_s: float | None = None
    #: A first line at once (a unit may take minutes).
    announce: bool = False


@dataclass
class PassStats:
    """What a pass cost: its shards' CPU seconds, their workers' peak memory, its wall time."""

    shards: int = 0
    task_cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    #: Wall seconds from the first shard submitted to the last one committed (no runtime start).
    wall_s: float = 0.0


def run_shards(job: ShardJob[S, R], shards: Sequence[S], *, workers: Workers, commit: Callable[[R], int],
               max_retries: int, progress: Progress, postfix: Callable[[], str] | None = None,
               cpus_per_task: float = 1) -> PassStats:
    """One pass of ``job`` over ``shards`` on ``workers``; ``commit(result)`` on the driver as each
    shard's result comes in, returning the progress units (files) it completed.

    A shard whose worker died on every one of its ``max_retries + 1`` tries is split
    (:meth:`ShardJob.split`) and its pieces run again; a piece that dies as often is committed as
    :meth:`ShardJob.lost`. ``postfix``: text after the bar's count (``0.02 h audio``).

    Raises
    ------
    SerBatchError
        The first one a shard raised (it would be every shard's).
    """
    stats = PassStats()
    bar = progress_bar(total=progress.total, desc=progress.desc, enabled=progress.enabled, unit=progress.unit,
                       every_s=progress.every_s, announce=progress.announce)
    started = time.perf_counter()

    def collect(ran: Ran[R]) -> None:
        stats.shards += 1
        stats.task_cpu_s += ran.cpu_s
        stats.peak_rss_mb = max(stats.peak_rss_mb, ran.peak_rss_mb)
        advance(commit(ran.result))

    def advance(units: int) -> None:
        if postfix is not None:
            bar.set_postfix_str(postfix(), refresh=False)
        bar.update(units)

    def run(items: Sequence[S]) -> list[S]:
        failed: list[S] = []
        workers.map(run_in_worker, items, kwargs={"job": job, "threads": max(1, int(cpus_per_task))}, name=job.task,
                    max_retries=max_retries, cpus_per_task=cpus_per_task, on_result=collect,
                    on_failure=_record_lost(failed, job.task))
        return failed

    try:
        pieces = [(shard, job.split(shard)) for shard in run(shards)]
        singles = [single for _, split in pieces for single in split]
        lost = [shard for shard, split in pieces if not split]
        if singles:
            log.warning("%d shard(s) lost their worker %d times; running their %d files one by one",
                        len(pieces), max_retries + 1, len(singles))
            lost += run(singles)
        error = worker_died(job.doing, max_retries + 1)
        for shard in lost:
            advance(commit(job.lost(shard, error)))
    finally:
        bar.close()
    stats.wall_s = time.perf_counter() - started
    return stats


def crash_if_asked(path: str) -> None:
    """Fault injection (:data:`FAULT_ENV`): end this process at once, no Python handler running,
    when ``path`` contains the variable's text."""
    crash_on = os.environ.get(FAULT_ENV)
    if crash_on and crash_on in path:
        os._exit(70)


def worker_died(doing: str, times: int) -> str:
    """The error of a file whose worker died on every try: ``the worker scoring this file died 4 times ...``."""
    return f"the worker {doing} this file died {times} time{'s' if times != 1 else ''} (a crash, out of memory or " \
           "a lost node)"


#: The errors of a file system that refuses a write (a task's job cannot complete until that is fixed);
#: any other OSError (a connection reset, a timeout) is a shard that failed and runs again.
_PERMISSION_OR_DISK = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})


def _permission_or_disk(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and (isinstance(exc, PermissionError) or exc.errno in _PERMISSION_OR_DISK)


def _record_lost(into: list[Any], task: str) -> Callable[[int, Any, BaseException], None]:
    """``on_failure`` of a pass: a shard whose worker died is kept for a re-run, but one that raised
    a ser-batch error of its own (a bundle a worker cannot load, say) did not crash: every shard
    would fail alike, so the job stops with that error instead of recording its files as killing
    their workers. Nor did one that met a permission or disk error writing its results (an OUT the
    workers may not write, a full disk): the job stops saying so, not that workers were lost."""

    def record(index: int, shard: Any, exc: BaseException) -> None:
        cause = getattr(exc, "cause", None) or exc  # a Ray task's error carries the exception it raised
        if isinstance(cause, SerBatchError):
            raise cause
        if _permission_or_disk(cause):
            where = f" on {cause.filename}" if cause.filename else ""
            raise ClusterError(f"a {task} task stopped with '{cause.strerror or cause}'{where}: a permission or disk "
                               "problem where it ran, not a crash of its worker; the job stops (what it committed "
                               "stays, and it completes when run again once that is fixed)") from None
        into.append(shard)

    return record

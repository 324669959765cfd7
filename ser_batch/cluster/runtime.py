"""The one place that talks to Ray: start or join a runtime, fan tasks out, gather metadata.

Library functions stay Ray-free; the shard-job engine (:mod:`ser_batch.cluster.engine`) hands a
plain function and its shards to :func:`map_tasks`, which runs each shard as a Ray task (retried
on worker failure, which is why every task's write must be idempotent) and returns only each
task's small result to the driver.

Joining a cluster (``address``) works the same for a cluster on this machine and one
elsewhere: the address is checked before Ray is asked (a dead address fails in seconds,
not after Ray's minute of retries), token authentication is switched on when a token is
available (Ray does that only for ``auto``), and a driver outside a Ray Job ships its own
``ser_batch`` package to the cluster's workers, so that tasks run the driver's code.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ser_batch.errors import ClusterError, SerBatchError

log = logging.getLogger(__name__)

#: Seconds to wait for a TCP connection to a cluster's GCS before calling the address dead.
CONNECT_TIMEOUT_S = 5.0
#: What a driver ships to the workers with its ``ser_batch`` package (caches, not code).
PACKAGE_EXCLUDES = ["__pycache__", "*.pyc"]
#: ``RuntimeInfo.executor`` of the two executors (:class:`ser_batch.cluster.engine.Executor`).
RAY, IN_PROCESS = "ray", "in-process"


@dataclass(frozen=True)
class RuntimeInfo:
    """Where a job runs, for summaries, run records and the shared-storage check."""

    executor: str  # RAY or IN_PROCESS
    address: str | None
    cpus: int
    nodes: int
    #: Whether this run started the runtime (and stops it at its end).
    started: bool
    #: An embedded runtime, a single node on this machine, or this process: tasks see the driver's files.
    local: bool
    #: Seconds it took to start or join Ray; ``None`` in process.
    start_s: float | None = None

    def record(self) -> dict[str, Any]:
        """The ``ray`` entry of a run record."""
        return {"address": self.address, "cpus": self.cpus, "nodes": self.nodes}


def resolve_address(address: str | None) -> str | None:
    """The cluster to join: ``address``, else ``RAY_ADDRESS``, else ``None`` (embedded Ray).

    Raises
    ------
    ClusterError
        For an ``http://`` address: that is the dashboard and Jobs API, which ``ray.init``
        cannot join (ray-project/ray#35010); it belongs to ``ser-batch submit --jobs-address``.
    """
    target = address or os.environ.get("RAY_ADDRESS") or None
    if target and target.lower().startswith(("http://", "https://")):
        raise ClusterError(
            f"{target} is a dashboard / Jobs API address; --address and RAY_ADDRESS take the cluster's GCS "
            "address HOST:PORT (as printed by `ser-batch cluster start`). To run a job through the Jobs API, "
            f"use `ser-batch submit ... --jobs-address {target}`"
        )
    return target


def check_reachable(address: str, *, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast when nothing answers at ``HOST:PORT`` (``auto`` and other forms are left to Ray).

    Raises
    ------
    ClusterError
        If the address is malformed, the host unknown or the port closed.
    """
    text = address.split("://", 1)[-1]
    if text == "auto" or text == "local":
        return
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ClusterError(f"cluster address {address!r} is not HOST:PORT (e.g. 127.0.0.1:6379) or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ClusterError(f"no Ray cluster answers at {address} ({reason}); is its head running? "
                           "(`ser-batch cluster status` for a local one)") from None


def enable_token_auth() -> bool:
    """Send the cluster token when one is available; return whether token auth is on.

    Ray clusters started with ``ray start`` (and ``ser-batch cluster start``) require a token.
    Ray's client picks the token up by itself only for ``address="auto"``; with an explicit
    address it stays in mode ``disabled`` and is refused (``InvalidAuthToken``). So, unless
    ``RAY_AUTH_MODE`` is set (then it is respected), token mode is switched on for this
    process and its children whenever a token is found where Ray looks for it:
    ``RAY_AUTH_TOKEN``, the file ``RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token``. A cluster
    without authentication accepts such a client as well.
    """
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return False
    with _quiet_token_notice():
        return bool(maybe_enable_token_auth_if_token_available(warn_if_disabled=False))


def _inside_ray_job() -> bool:
    """Whether this process is the driver of a Ray Job (its runtime env is the job's: the
    project uploaded by ``ser-batch submit``, which a ``py_modules`` of ours would override)."""
    try:
        from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR
    except ImportError:  # the variable's name, should Ray move the constant
        RAY_JOB_CONFIG_JSON_ENV_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"
    return RAY_JOB_CONFIG_JSON_ENV_VAR in os.environ


@contextmanager
def ray_runtime(*, address: str | None = None, num_cpus: int | None = None) -> Iterator[RuntimeInfo]:
    """Use the running Ray runtime, join ``address``, or start an embedded local one.

    A runtime this function started is shut down on exit; one that was already running
    (a test fixture, a Ray Job's driver, the demo's) is left alone.

    Yields
    ------
    RuntimeInfo
        ``local``: an embedded runtime or a single node on this machine, whose tasks see the
        driver's files; ``start_s``: the seconds this took.

    Raises
    ------
    ClusterError
        If the address is not a GCS address, nothing answers there, or Ray refuses to start
        or join (the message says why, e.g. a wrong token).
    """
    starting = time.perf_counter()
    plain_worker_logs()
    import ray

    import ser_batch

    started = False
    if not ray.is_initialized():
        target = resolve_address(address)
        kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                                  "log_to_driver": True}
        try:
            if target:
                check_reachable(target)
                enable_token_auth()
                join: dict[str, Any] = {"address": target, "logging_level": logging.WARNING}
                if not _inside_ray_job():
                    join["runtime_env"] = {"py_modules": [str(Path(ser_batch.__file__).resolve().parent)],
                                           "excludes": PACKAGE_EXCLUDES}
                ray.init(**join)
            else:
                with _quiet_token_notice():
                    ray.init(num_cpus=num_cpus or None, **kwargs)
        except (ConnectionError, ValueError, RuntimeError, ray.exceptions.RayError) as exc:
            where = f"the Ray cluster at {target}" if target else "an embedded Ray runtime"
            raise ClusterError(f"cannot start or reach {where}: {_first_line(exc)}") from None
        except OSError as exc:  # a folder Ray writes that cannot be written: say which, and what moves it
            raise ClusterError(unwritable(exc)) from None
        started = True
    # Embedded, or a cluster whose only node is this machine: tasks see the driver's files.
    local = _single_local_node()
    info = RuntimeInfo(RAY, ray.get_runtime_context().gcs_address, int(ray.cluster_resources().get("CPU", 0)),
                       len(_alive_nodes()), started=started, local=local, start_s=time.perf_counter() - starting)
    try:
        yield info
    finally:
        if started:
            ray.shutdown()
        no_colour_reset_at_exit()


def unwritable(exc: OSError) -> str:
    """The message of a Ray start that could not write a file or folder: which, and the setting that
    moves it. An embedded Ray writes its token (``~/.ray/auth_token``, made when no token is found:
    ``RAY_AUTH_TOKEN``, the file ``RAY_AUTH_TOKEN_PATH``, or that one) and its temporary folder
    (``RAY_TMPDIR``, else ``TMPDIR``, else ``/tmp``, then ``ray/``): a read-only HOME or /tmp
    stopped every job with ``Operation not permitted: .../.ray``."""
    path = str(exc.filename or "")
    reason = exc.strerror or type(exc).__name__
    token_folder = Path.home() / ".ray"
    if path and _on_the_way(path, str(token_folder)):
        return (f"Ray cannot write its token file {token_folder / 'auth_token'} ({reason}): an embedded Ray makes one "
                "there when it finds none. Point RAY_AUTH_TOKEN_PATH at a token file elsewhere (64 hex digits: "
                "python -c 'import secrets; print(secrets.token_hex(32))' > FILE), or set RAY_AUTH_MODE=disabled to "
                "run the embedded Ray without token authentication, or HOME to a writable folder (or run the job "
                "--in-process: no Ray at all)")
    temp = _ray_temp_folder()
    if path and _on_the_way(path, temp):
        return (f"Ray cannot write its temporary folder {temp} ({reason} at {path}): set RAY_TMPDIR to a writable "
                "folder (Ray uses RAY_TMPDIR, else TMPDIR, else /tmp; or run the job --in-process: no Ray at all)")
    return f"cannot start an embedded Ray runtime: {reason}" + (f": {path}" if path else "")


def _on_the_way(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder``, inside it, or one of the folders making it (a mkdir of them failed)."""
    path = path.rstrip(os.sep) or os.sep
    return path == folder or path.startswith(folder + os.sep) or folder.startswith(path.rstrip(os.sep) + os.sep)


def _ray_temp_folder() -> str:
    """The folder an embedded Ray keeps its sessions in (``RAY_TMPDIR``, else ``TMPDIR``, else /tmp; ``ray``)."""
    base = os.environ.get("RAY_TMPDIR") or (os.environ.get("TMPDIR") if sys.platform.startswith("linux") else None)
    return os.path.join(base or "/tmp", "ray")


def plain_worker_logs() -> None:
    """Workers' lines (warnings) forwarded to the driver without colour codes when stderr is not
    a terminal, where ``ESC[36m(fit_model pid=...)ESC[0m`` would be raw bytes in a log; Ray
    reads ``RAY_COLOR_PREFIX`` as it prints each line. A value the user set is kept."""
    if "RAY_COLOR_PREFIX" not in os.environ and not _is_terminal(sys.stderr):
        os.environ["RAY_COLOR_PREFIX"] = "0"
        # Ray's log deduplication colours its " [repeated 3x across cluster]" whatever that says.
        try:
            from ray._private import ray_logging
        except ImportError:  # another Ray layout: its colour codes stay
            return
        if callable(getattr(ray_logging, "_color", None)):
            ray_logging._color = lambda msg: msg


def no_colour_reset_at_exit() -> None:
    """Drop the exit hook of the colorama Ray bundles (its CLI logger calls ``colorama.init``):
    it writes ``ESC[0m`` to stdout after the job's last line, and ser-batch sets no colour to reset."""
    import atexit

    initialise = sys.modules.get("colorama.initialise")
    if initialise is not None and hasattr(initialise, "reset_all"):
        atexit.unregister(initialise.reset_all)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [node for node in ray.nodes() if node.get("Alive")]


def _single_local_node() -> bool:
    """One node, on this machine: a runtime joined earlier that cannot hide files from us."""
    import ray

    nodes = _alive_nodes()
    return len(nodes) == 1 and nodes[0].get("NodeManagerAddress") == ray.util.get_node_ip_address()


#: Logger and opening words of Ray's notice, on every new local cluster (Ray >= 2.52), that it
#: enabled token authentication by default.
_TOKEN_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"
_TOKEN_NOTICE = "Token authentication is enabled for this Ray cluster"


class _DropTokenNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_TOKEN_NOTICE)


@contextmanager
def _quiet_token_notice() -> Iterator[None]:
    """Hide Ray's "token authentication is enabled" notice while we start our own runtime.

    Token authentication stays on (Ray's default); only that one line, which users of the
    embedded runtime cannot act on, is dropped. Other messages of the same logger (a
    missing token, authentication disabled) still show.
    """
    logger = logging.getLogger(_TOKEN_NOTICE_LOGGER)
    notice_filter = _DropTokenNotice()
    logger.addFilter(notice_filter)
    try:
        yield
    finally:
        logger.removeFilter(notice_filter)


def largest_node_cpus() -> int:
    """CPUs of the biggest live node: a task asking for more could never be scheduled."""
    import ray

    cpus = [int(node.get("Resources", {}).get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]
    return max(cpus, default=1) or 1


def map_tasks(
    function: Callable[..., dict[str, Any]],
    items: Sequence[Any],
    *,
    kwargs: dict[str, Any] | None = None,
    name: str | None = None,
    max_retries: int = 3,
    num_cpus: float = 1,
    max_in_flight: int | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    on_failure: Callable[[int, Any, BaseException], None] | None = None,
) -> list[dict[str, Any] | None]:
    """Run ``function(item, **kwargs)`` for every item as a Ray task; results in item order.

    Parameters
    ----------
    function : callable returning a small dict (metadata only, never feature arrays)
    items : the shards
    kwargs : shared keyword arguments, put in the object store once
    name : the tasks' name (their workers' process title is ``ray::NAME``); default: the function's
    max_retries : retries of a task whose worker died
    num_cpus : CPUs reserved per task (Ray limits the task's OpenMP threads to it)
    max_in_flight : tasks submitted at once (default: 2 per cluster CPU), bounding memory
    on_result : called on the driver as each task finishes, e.g. to move a progress bar
    on_failure : called as ``on_failure(index, item, error)`` for a task that failed for good
        (its worker died on every try); its result is then ``None`` and the others go on.
        Without it, such a failure cancels the rest.

    Raises
    ------
    ClusterError
        If a task fails for good and there is no ``on_failure`` (its error is included).
    """
    import ray

    remote = ray.remote(function).options(num_cpus=num_cpus, max_retries=max_retries, retry_exceptions=False,
                                          **({"name": name} if name else {}))
    shared = {k: ray.put(v) for k, v in (kwargs or {}).items()}
    if max_in_flight is None:
        max_in_flight = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    results: list[dict[str, Any] | None] = [None] * len(items)
    pending: dict[Any, int] = {}
    next_item = 0
    try:
        while next_item < len(items) or pending:
            while next_item < len(items) and len(pending) < max_in_flight:
                pending[remote.remote(items[next_item], **shared)] = next_item
                next_item += 1
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                index = pending.pop(ref)
                try:
                    results[index] = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    if on_failure is None:
                        raise ClusterError(f"task {index} failed: {_short(exc)}") from exc
                    on_failure(index, items[index], exc)
                    continue
                if on_result is not None:
                    on_result(results[index])  # type: ignore[arg-type]
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
    return results  # type: ignore[return-value]


def _short(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, SerBatchError):
        return str(cause)
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def run_on_each_node(function: Callable[..., Any], *, kwargs: dict[str, Any] | None = None,
                     timeout_s: float = 120.0) -> list[tuple[str, Any]]:
    """Run ``function(**kwargs)`` once on every live node; ``[(node address, result), ...]``.

    For checks of what each machine sees (shared storage). The tasks reserve no CPU, so a
    busy cluster still runs them at once.

    Raises
    ------
    ClusterError
        If a node does not answer within ``timeout_s`` or the function raises.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote = ray.remote(function)
    refs = {}
    for node in _alive_nodes():
        strategy = NodeAffinitySchedulingStrategy(node_id=node["NodeID"], soft=False)
        ref = remote.options(num_cpus=0, max_retries=0, scheduling_strategy=strategy).remote(**(kwargs or {}))
        refs[ref] = node.get("NodeManagerAddress", "?")
    try:
        values = ray.get(list(refs), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise ClusterError(f"a node did not answer within {timeout_s:.0f} s") from None
    except ray.exceptions.RayError as exc:
        raise ClusterError(f"a check on a cluster node failed: {_short(exc)}") from exc
    return list(zip(refs.values(), values))

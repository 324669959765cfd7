"""The one place that talks to Ray: start or join a runtime, fan tasks out, gather metadata.

Library functions stay Ray-free; jobs hand a plain function and its shards to
:func:`map_tasks`, which runs each shard as a Ray task (retried on worker failure,
which is why every task's write must be idempotent) and returns only each task's
small result dict to the driver.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from ser_batch.errors import ClusterError, SerBatchError


def resolve_address(address: str | None) -> str | None:
    """The cluster to join: ``address``, else ``RAY_ADDRESS``, else ``None`` (embedded Ray)."""
    return address or os.environ.get("RAY_ADDRESS") or None


@contextmanager
def ray_runtime(*, address: str | None = None, num_cpus: int | None = None) -> Iterator[dict[str, Any]]:
    """Use the running Ray runtime, join ``address``, or start an embedded local one.

    A runtime this function started is shut down on exit; one that was already running
    (a test fixture, a Ray Job's driver) is left alone.

    Yields
    ------
    dict
        ``{"address": ..., "cpus": ..., "started": bool}`` for logs and summaries.
    """
    import ray

    started = False
    if not ray.is_initialized():
        target = resolve_address(address)
        kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                                  "log_to_driver": True}
        try:
            if target:
                ray.init(address=target, logging_level=logging.WARNING)
            else:
                with _quiet_token_notice():
                    ray.init(num_cpus=num_cpus or None, **kwargs)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = f"the Ray cluster at {target}" if target else "an embedded Ray runtime"
            raise ClusterError(f"cannot start or reach {where}: {exc}") from None
        started = True
    try:
        yield {
            "address": ray.get_runtime_context().gcs_address,
            "cpus": int(ray.cluster_resources().get("CPU", 0)),
            "started": started,
        }
    finally:
        if started:
            ray.shutdown()


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

    remote = ray.remote(function).options(num_cpus=num_cpus, max_retries=max_retries,
                                          retry_exceptions=False)
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

"""Ray Jobs: run a ser-batch command as a job on a cluster, and follow, list or stop jobs.

A job is the same command the CLI runs (``jobs/<command>.py ARGS``), started by the
cluster's Jobs API (``JobSubmissionClient``) on the head node, with the project as its
``working_dir`` (an installed package ships as ``py_modules`` instead), so the cluster runs
the submitting machine's code. The job's driver joins the cluster through the
``RAY_ADDRESS`` that Ray sets for it.

Two addresses, never mixed: the Jobs API is the dashboard's ``http://HOST:8265``
(``--jobs-address``, ``RAY_API_SERVER_ADDRESS``), while ``ray.init`` takes the GCS
``HOST:PORT`` (``--address``, ``RAY_ADDRESS``). Ray's submission client ignores its own
address argument when ``RAY_ADDRESS`` or ``RAY_API_SERVER_ADDRESS`` is set
(ray-project/ray#41590), so the client here is built with both variables out of the way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ser_batch.cluster import runtime
from ser_batch.errors import ClusterError

DEFAULT_JOBS_ADDRESS = "http://127.0.0.1:8265"
#: Kept out of a job's upload: environments, data, results, history, tests and docs.
UPLOAD_EXCLUDES = ["/.venv/", "/output/", "/input/", "/.git", "/tests/", "/benchmarks/", "/docs/", "/build/",
                   "__pycache__/", ".pytest_cache/", "*.egg-info/", "*.pyc"]
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def jobs_address(address: str | None) -> str:
    """The Jobs API to use: ``address``, else the local cluster's, else ``http://127.0.0.1:8265``.

    Raises
    ------
    ClusterError
        For an address without ``http://`` (a GCS address, which belongs to ``--address``).
    """
    if not address:
        from ser_batch.cluster.local import load_state

        local = load_state()
        address = local.jobs_address if local else DEFAULT_JOBS_ADDRESS
    if not address.lower().startswith(("http://", "https://")):
        raise ClusterError(f"the Jobs API address is the dashboard's http://HOST:PORT (e.g. {DEFAULT_JOBS_ADDRESS}), "
                           f"not {address!r}; a GCS address HOST:PORT goes to --address of extract/train/score")
    return address.rstrip("/")


@contextmanager
def _without(*names: str) -> Iterator[None]:
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def client(address: str | None) -> Any:
    """A ``JobSubmissionClient`` for the Jobs API at ``address`` (see :func:`jobs_address`),
    sending the cluster token when one is available.

    Raises
    ------
    ClusterError
        If nothing answers there, or the token is missing or refused.
    """
    url = jobs_address(address)
    runtime.enable_token_auth()
    from ray.job_submission import JobSubmissionClient

    _quiet_ray_chatter()

    try:
        with _without("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
            return JobSubmissionClient(url)
    except ConnectionError as exc:
        raise ClusterError(f"no Ray Jobs API answers at {url} ({_first_line(exc)}); is the cluster running? "
                           "(`ser-batch cluster start` for a local one)") from None
    except Exception as exc:  # noqa: BLE001 - Ray raises bare RuntimeError/AuthenticationError here
        raise ClusterError(f"the Jobs API at {url} refused the connection: {_first_line(exc)}") from None


def _quiet_ray_chatter() -> None:
    """Keep Ray's INFO lines about packaging and uploading the working_dir (and its note that
    ``.git`` is skipped) out of the command's output, unless ``-v`` asked for details."""
    if logging.getLogger().getEffectiveLevel() <= logging.INFO:
        return
    # Ray sets INFO on the SDK modules' own loggers, so the parents' level would not reach them.
    for name in ("ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("ray._private.runtime_env").setLevel(logging.ERROR)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


@dataclass(frozen=True)
class Submitted:
    job_id: str
    entrypoint: str
    dashboard: str
    new: bool  # False: a job with this submission id existed already and was not submitted again


def _package_dir() -> Path:
    """The folder of the ``ser_batch`` package this process runs."""
    import ser_batch

    return Path(ser_batch.__file__).resolve().parent


def project_root() -> Path | None:
    """The source checkout this ser_batch comes from (with ``jobs/``), or ``None`` if installed."""
    root = _package_dir().parent
    return root if (root / "pyproject.toml").is_file() and (root / "jobs").is_dir() else None


def job_spec(command: str, args: list[str]) -> tuple[str, dict[str, Any]]:
    """Entrypoint and runtime env of ``ser-batch COMMAND ARGS`` as a Ray job.

    From a source checkout: ``python jobs/COMMAND.py ARGS`` with the project (minus
    environments, data and tests) as ``working_dir``; from an installed package:
    ``python -m ser_batch.cli COMMAND ARGS`` with the package as ``py_modules``. Either way
    the cluster runs this machine's code; its Python needs ser-batch's dependencies.
    """
    root = project_root()
    if root is not None and (root / "jobs" / f"{command}.py").is_file():
        return (f"python jobs/{command}.py {shlex.join(args)}".rstrip(),
                {"working_dir": str(root), "excludes": UPLOAD_EXCLUDES})
    package = _package_dir()
    return (f"python -m ser_batch.cli {command} {shlex.join(args)}".rstrip(),
            {"py_modules": [str(package)], "excludes": ["__pycache__/", "*.pyc"]})


def submit(command: str, args: list[str], *, address: str | None = None,
           submission_id: str | None = None) -> Submitted:
    """Submit ``ser-batch COMMAND ARGS`` (paths already absolute) as a Ray job.

    A ``submission_id`` that the cluster already knows is not submitted again (nightly runs
    use a date-based id, so a repeated cron or a retry of the same night does nothing twice).
    """
    jobs = client(address)
    entrypoint, runtime_env = job_spec(command, args)
    dashboard = jobs_address(address)
    if submission_id and _info(jobs, submission_id) is not None:
        return Submitted(submission_id, entrypoint, dashboard, new=False)
    try:
        job_id = jobs.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id=submission_id,
                                 metadata={"ser_batch_command": command})
    except Exception as exc:  # noqa: BLE001 - the SDK raises RuntimeError for every HTTP failure
        if submission_id and _info(jobs, submission_id) is not None:  # submitted meanwhile by another client
            return Submitted(submission_id, entrypoint, dashboard, new=False)
        raise ClusterError(f"job submission failed: {_first_line(exc)}") from None
    return Submitted(job_id, entrypoint, dashboard, new=True)


def _info(jobs: Any, job_id: str) -> Any | None:
    try:
        return jobs.get_job_info(job_id)
    except RuntimeError as exc:
        if "does not exist" in str(exc) or "404" in str(exc):
            return None
        raise ClusterError(f"cannot read job {job_id}: {_first_line(exc)}") from None


def job_info(address: str | None, job_id: str) -> Any:
    """The ``JobDetails`` of a job (by submission id or job id)."""
    info = _info(client(address), job_id)
    if info is None:
        raise ClusterError(f"no job {job_id} on the cluster at {jobs_address(address)}")
    return info


def list_jobs(address: str | None) -> list[Any]:
    """Every job the cluster knows, oldest first."""
    jobs = client(address).list_jobs()
    return sorted(jobs, key=lambda j: j.start_time or 0)


def logs(address: str | None, job_id: str) -> str:
    job_info(address, job_id)
    return client(address).get_job_logs(job_id)


def follow(address: str | None, job_id: str, write: Callable[[str], None]) -> Any:
    """Write the job's log as it grows until the job ends; returns its final ``JobDetails``."""
    jobs = client(address)
    if _info(jobs, job_id) is None:
        raise ClusterError(f"no job {job_id} on the cluster at {jobs_address(address)}")

    async def tail() -> None:
        async for chunk in jobs.tail_job_logs(job_id):
            write(chunk)

    try:
        asyncio.run(tail())
    except RuntimeError as exc:  # the connection dropped: report the status the job has
        write(f"(log stream ended: {_first_line(exc)})\n")
    return _info(jobs, job_id)


def stop(address: str | None, job_id: str, *, wait_s: float = 30.0) -> str:
    """Ask the job to stop (its driver gets SIGTERM, then SIGKILL); returns its final status."""
    import time

    jobs = client(address)
    if _info(jobs, job_id) is None:
        raise ClusterError(f"no job {job_id} on the cluster at {jobs_address(address)}")
    jobs.stop_job(job_id)
    deadline = time.monotonic() + wait_s
    status = str(jobs.get_job_status(job_id))
    while status_name(status) not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.5)
        status = str(jobs.get_job_status(job_id))
    return status_name(status)


def status_name(status: Any) -> str:
    return str(getattr(status, "value", status)).rsplit(".", 1)[-1]


def exit_code(info: Any) -> int:
    """0 for a job that succeeded, else its driver's exit status (1 when it has none)."""
    if status_name(info.status) == "SUCCEEDED":
        return 0
    code = getattr(info, "driver_exit_code", None)
    return code if isinstance(code, int) and code > 0 else 1


def describe(info: Any) -> str:
    """One line: id, status, start time, entrypoint."""
    import time

    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.start_time / 1000)) if info.start_time else "-"
    job_id = info.submission_id or info.job_id
    return f"{job_id}  {status_name(info.status):9s}  {started}  {info.entrypoint}"

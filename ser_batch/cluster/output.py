"""Starting a job the same way on any cluster: the output folder locked, then the executor.

Every job that writes an output folder goes through :func:`job_output`, then, when its plan
holds work, :func:`start_workers`:

0. a symbolic link inside OUT where ser-batch writes (``OUT/segments``, ``OUT/.lock``, a part, ...)
   is refused (:func:`ser_batch.data.parts.refuse_links`): every write, rename and delete stays in OUT;
1. ``OUT/.lock`` is taken (:mod:`ser_batch.cluster.lock`), so two runs never share a folder, and the
   job plans its work from one read of what OUT holds (a run with nothing to do starts no runtime);
2. the executor is started (Ray started or joined, :class:`ser_batch.cluster.engine.Executor`)
   before the job writes anything, so a wrong address or a refused token leaves no trace in OUT
   (the lock is removed again, and so is an OUT the lock created);
3. on a cluster whose nodes are not just this machine, one probe task per node checks that
   the node sees the inputs and this run's lock at the same paths, i.e. that INPUT and OUT
   are on storage every node shares. Tasks read their files and write their parts directly,
   so without shared storage a job would compute results the driver never sees.

Paths are made absolute before any of this (:func:`absolute`): a task's working directory
is not the driver's, and a Ray Job's driver runs in a temporary copy of the project. So a
relative OUT is refused when this process is a Ray Job's entrypoint (:func:`output_path`):
it would name a folder inside that copy, which is deleted when the job ends.

Object stores would slot in at the same two places: a ``pyarrow.fs`` filesystem
(``pyarrow.fs.FileSystem.from_uri("s3://bucket/out")``) in the tasks' writes and in the
driver's listing, with the lock as a conditional put; the paths here stay local POSIX paths.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from ser_batch.cluster import lock, runtime
from ser_batch.cluster.engine import Executor, Workers
from ser_batch.data.parts import refuse_links
from ser_batch.errors import ClusterError, ConfigError

#: What Ray's job supervisor sets for a job's entrypoint: the job's config, with its submission id.
RAY_JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def absolute(path: Path | str) -> Path:
    """``path`` made absolute against the current directory (``~`` expanded, links kept)."""
    return Path(os.path.abspath(Path(path).expanduser()))


def ray_job_id() -> str | None:
    """The submission id when this process is the entrypoint of a Ray Job (``ray job submit``,
    ``ser-batch submit``), else ``None``."""
    blob = os.environ.get(RAY_JOB_CONFIG_ENV)
    if not blob:
        return None
    try:
        metadata = json.loads(blob).get("metadata") or {}
    except (ValueError, AttributeError):
        metadata = {}
    return str(metadata.get("job_submission_id") or "?")


def output_path(out: Path | str) -> Path:
    """``out`` made absolute (:func:`absolute`); inside a Ray Job, a relative ``out`` is refused.

    A Ray Job's entrypoint runs in a temporary copy of the project (its ``working_dir``) that Ray
    deletes when the job ends, so ``--out results`` would report success and leave nothing.
    ``ser-batch submit`` makes every path absolute before submitting, so this catches raw
    ``ray job submit ... -- python jobs/score.py IN --out relative/path``.

    Raises
    ------
    ConfigError
        For a relative ``out`` inside a Ray Job.
    """
    job = ray_job_id()
    if job is not None and not Path(out).expanduser().is_absolute():
        raise ConfigError(f"--out {out} is relative, but this runs as Ray job {job} in a temporary working "
                          f"directory ({os.getcwd()}) that is deleted when the job ends; give --out as an absolute "
                          "path on storage every node shares (`ser-batch submit` makes paths absolute itself)")
    return absolute(out)


def node_sees(*, inputs: list[str], lock_path: str, token: str) -> dict[str, Any]:
    """On one node: which inputs are missing, and whether the driver's lock is visible.

    Runs in a probe task (no Ray in here); the lock file, written by the driver just before,
    proves that this node sees the driver's OUT, not a folder of the same name of its own.
    """
    import socket

    missing = [p for p in inputs if not os.path.exists(p)]
    try:
        with open(lock_path, encoding="utf-8") as handle:
            lock_seen = token in handle.read()
    except OSError:
        lock_seen = False
    return {"host": socket.gethostname(), "missing": missing, "lock_seen": lock_seen}


def check_shared_storage(*, inputs: Iterable[Path], held: lock.OutputLock) -> None:
    """Raise a clear error unless every node sees ``inputs`` and this run's OUT.

    Raises
    ------
    ClusterError
        Naming the node and the path it cannot see.
    """
    seen = runtime.run_on_each_node(node_sees, kwargs={"inputs": [str(p) for p in inputs],
                                                       "lock_path": str(held.path), "token": held.info.token})
    problems = []
    for address, result in seen:
        where = f"node {result['host']} ({address})"
        for path in result["missing"]:
            problems.append(f"{where} cannot see the input {path}")
        if not result["lock_seen"]:
            problems.append(f"{where} does not see this run's output folder {held.out}")
    if problems:
        raise ClusterError("; ".join(problems[:3]) + ". On a cluster, inputs and --out must be on storage "
                           "every node mounts at the same path (NFS or similar); see docs/cluster.md")


@contextmanager
def job_output(out: Path, *, job: str) -> Iterator[lock.OutputLock]:
    """No links in OUT, then OUT locked for this run; the lock is released on any exit."""
    refuse_links(out)
    with lock.hold(out, job=job) as held:
        yield held


@contextmanager
def start_workers(executor: Executor, *, held: lock.OutputLock, inputs: Iterable[Path]) -> Iterator[Workers]:
    """The executor started for a job that holds OUT's lock, and on a cluster whose nodes are not
    all this machine, every node checked to see ``inputs`` and OUT (:func:`check_shared_storage`)."""
    with executor.start() as workers:
        if not workers.info.local:
            check_shared_storage(inputs=inputs, held=held)
        yield workers


def check_visible(out: Path, names: Iterable[str]) -> None:
    """Raise unless every file the tasks reported writing is visible here, in ``out``.

    Raises
    ------
    ClusterError
        If some are missing: the tasks wrote to a disk of their own node.
    """
    names = list(names)
    missing = [n for n in names if not (Path(out) / n).is_file()]
    if missing:
        raise ClusterError(f"{len(missing)} of {len(names)} parts the tasks wrote are not visible in {out} from "
                           f"this machine (first: {missing[0]}); --out must be on storage every node shares")

"""One run per output folder: ``OUT/.lock`` names the run that owns it.

Two runs writing the same folder (a job submitted twice, a cron run overlapping a manual
one) would each clean up the other's temporary and orphaned files. A run therefore
creates ``OUT/.lock`` exclusively (host, pid, process start time, job, a random token) and
removes it when it ends. A lock whose process is gone on this host is stale (a killed
run) and is taken over; a lock of another host cannot be checked from here, so it is
refused with a message saying how to remove it. The hidden name keeps it out of Arrow's
dataset discovery and out of the files the jobs manage.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from ser_batch.errors import DatasetError
from ser_batch.schema import LOCK_NAME


@dataclass(frozen=True)
class LockInfo:
    """Who holds an output folder."""

    host: str
    pid: int
    started: str  # local time, ISO 8601
    job: str
    token: str
    #: The process's start time in clock ticks since boot (Linux), to tell a reused pid apart.
    proc_start: int | None = None

    def describe(self) -> str:
        return f"{self.job} run, pid {self.pid} on {self.host}, since {self.started}"


def _proc_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot, or ``None`` where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces, so count from its closing ")".
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[19]) if len(fields) > 19 else None


def _alive(info: LockInfo) -> bool:
    """Whether the process named by a lock of this host still runs (the same process)."""
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: alive
    if info.proc_start is not None:
        now = _proc_start(info.pid)
        if now is not None and now != info.proc_start:
            return False  # the pid was reused by another process
    return True


def read_lock(out: Path) -> LockInfo | None:
    """The lock of ``out``, or ``None``; an unreadable lock counts as held by an unknown run."""
    path = Path(out) / LOCK_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return LockInfo(**{k: data.get(k) for k in LockInfo.__dataclass_fields__})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        return LockInfo(host="?", pid=-1, started="?", job="unknown", token="")


class OutputLock:
    """The lock of one output folder, held by this process (see :func:`hold`)."""

    def __init__(self, out: Path, *, job: str) -> None:
        self.out = Path(out)
        self.path = self.out / LOCK_NAME
        pid = os.getpid()
        self.info = LockInfo(host=socket.gethostname(), pid=pid, started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                             job=job, token=uuid.uuid4().hex, proc_start=_proc_start(pid))
        self._created: list[Path] = []

    def acquire(self) -> None:
        """Create the lock, taking over a stale one.

        Raises
        ------
        DatasetError
            If ``out`` is not a folder, or another live run (or a run of another host) holds it.
        """
        if self.out.exists() and not self.out.is_dir():
            raise DatasetError(f"output path exists and is not a folder: {self.out}")
        missing = [p for p in (self.out, *self.out.parents) if not p.exists()]
        self.out.mkdir(parents=True, exist_ok=True)
        self._created = missing  # innermost first: removed again if the run leaves them empty
        blob = json.dumps(asdict(self.info), indent=2) + "\n"
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(blob)
            return
        raise DatasetError(f"could not lock {self.out}: its lock keeps changing")

    def _take_over_if_stale(self) -> None:
        other = read_lock(self.out)
        if other is None:
            return  # released meanwhile: try again
        here = socket.gethostname()
        if other.host == here and other.pid > 0 and not _alive(other):
            # Only one of several runs finding the same stale lock wins this rename.
            try:
                os.replace(self.path, self.path.with_name(f"{LOCK_NAME}.stale-{self.info.token}"))
            except FileNotFoundError:
                return
            self.path.with_name(f"{LOCK_NAME}.stale-{self.info.token}").unlink(missing_ok=True)
            return
        if other.host == here:
            raise DatasetError(f"{self.out} is in use by another {other.describe()}; wait for it to finish "
                               "or choose another --out")
        raise DatasetError(f"{self.out} is in use by another {other.describe()}; if that run is gone, "
                           f"delete {self.path} and run again")

    def release(self) -> None:
        """Remove the lock if it is still ours, and folders the run created but left empty."""
        current = read_lock(self.out)
        if current is not None and current.token == self.info.token:
            self.path.unlink(missing_ok=True)
        for folder in self._created:
            try:
                folder.rmdir()
            except OSError:
                break  # not empty (the run wrote results) or not ours to remove


@contextmanager
def hold(out: Path, *, job: str) -> Iterator[OutputLock]:
    """Hold ``OUT/.lock`` for the duration of a run (released on any exit)."""
    lock = OutputLock(out, job=job)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()

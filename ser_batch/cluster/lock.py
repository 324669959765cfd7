"""One run per output folder: ``OUT/.lock`` names the run that owns it.

Two runs writing the same folder (a job submitted twice, a cron run overlapping a manual
one) would each clean up the other's temporary and orphaned files. A run therefore
creates ``OUT/.lock`` exclusively (host, pid, process start time, job, a random token) and
removes it when it ends. A lock whose process is gone on this host is stale (a killed
run) and is taken over; a lock of another host cannot be checked from here, so it is
refused with a message saying how to remove it. The hidden name keeps it out of Arrow's
dataset discovery and out of the files the jobs manage.

The lock appears complete or not at all: it is written to a temporary file, then hard-linked
to ``.lock`` (which fails if one exists), so a disk that fills up mid-write leaves no lock
rather than an empty one. An empty or unreadable lock (left by an older version, or on a
file system without hard links, where the lock is created then written) therefore names no
run: once it is :data:`UNREADABLE_GRACE_S` old it is stale and taken over.
"""

from __future__ import annotations

import errno
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

#: An unreadable lock younger than this (seconds) may be one being written where hard links
#: are not available (see :meth:`OutputLock.acquire`); older, it is stale.
UNREADABLE_GRACE_S = 5.0
#: Errors of ``os.link`` on file systems without hard links: the lock is then created and written.
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


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


#: What :func:`read_lock` returns for a lock that names no run (empty, cut short, not ser-batch's).
UNREADABLE = LockInfo(host="?", pid=-1, started="?", job="unknown", token="")


def read_lock(out: Path) -> LockInfo | None:
    """The lock of ``out``; ``None`` if there is none, :data:`UNREADABLE` if it names no run."""
    path = Path(out) / LOCK_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        info = LockInfo(**{k: data.get(k) for k in LockInfo.__dataclass_fields__})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, AttributeError):
        return UNREADABLE
    valid = (isinstance(info.host, str) and info.host and type(info.pid) is int and isinstance(info.token, str)
             and (info.proc_start is None or type(info.proc_start) is int))
    return info if valid else UNREADABLE


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
        deadline = time.monotonic() + UNREADABLE_GRACE_S + 5
        for attempt in range(100):
            if self._create(blob):
                return
            if not self._take_over_if_stale() and time.monotonic() < deadline:
                time.sleep(min(0.5, 0.05 * 2**attempt))  # a lock being written: look again
        raise DatasetError(f"could not lock {self.out}: its lock keeps changing")

    def _create(self, blob: str) -> bool:
        """Create ``OUT/.lock`` holding ``blob``, complete or not at all; ``False`` if one exists."""
        tmp = self.path.with_name(f"{LOCK_NAME}.tmp-{self.info.token}")
        try:
            with open(tmp, "x", encoding="utf-8") as handle:
                handle.write(blob)
                handle.flush()
                os.fsync(handle.fileno())  # the lock's content is on disk before its name is
            try:
                os.link(tmp, self.path)  # atomic, and fails if a lock exists
                return True
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in _NO_HARD_LINKS:
                    raise
            # No hard links here: create exclusively, then write (an unreadable lock is young for a moment).
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(blob)
            except OSError:
                self.path.unlink(missing_ok=True)  # never leave a lock that names no run
                raise
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def _take_over_if_stale(self) -> bool:
        """Remove the lock if it is stale; ``True`` when the caller should try again at once,
        ``False`` when the lock may still be being written (wait a moment).

        Raises
        ------
        DatasetError
            If a live run holds it, or a run of another host.
        """
        other = read_lock(self.out)
        if other is None:
            return True  # released meanwhile: try again
        here = socket.gethostname()
        if other is UNREADABLE:
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return True
            if age < UNREADABLE_GRACE_S:
                return False
            self._remove_stale()  # empty or cut short (a full disk, an old version): names no run
            return True
        if other.host == here and other.pid > 0 and not _alive(other):
            self._remove_stale()
            return True
        if other.host == here:
            raise DatasetError(f"{self.out} is in use by another {other.describe()}; wait for it to finish "
                               "or choose another --out")
        raise DatasetError(f"{self.out} is in use by another {other.describe()}; if that run is gone, "
                           f"delete {self.path} and run again")

    def _remove_stale(self) -> None:
        # Only one of several runs finding the same stale lock wins this rename.
        stale = self.path.with_name(f"{LOCK_NAME}.stale-{self.info.token}")
        try:
            os.replace(self.path, stale)
        except FileNotFoundError:
            return
        stale.unlink(missing_ok=True)

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

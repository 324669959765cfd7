"""One run per output folder (ser_batch/cluster/lock.py): live, stale and foreign locks."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ser_batch.cli import main
from ser_batch.cluster import lock
from ser_batch.errors import DatasetError

from conftest import write_audio


def write_lock(out: Path, **fields: object) -> None:
    out.mkdir(parents=True, exist_ok=True)
    info = {"host": socket.gethostname(), "pid": 1, "started": "2026-01-01T01:30:00+0000", "job": "score",
            "token": "other", "proc_start": None, **fields}
    (out / lock.LOCK_NAME).write_text(json.dumps(info))


def finished_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_hold_writes_who_and_releases(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with lock.hold(out, job="extract") as held:
        info = lock.read_lock(out)
        assert info is not None and info.token == held.info.token
        assert (info.host, info.job) == (socket.gethostname(), "extract") and info.pid > 0
    assert not (out / lock.LOCK_NAME).exists()


def test_a_live_lock_is_refused_naming_host_and_pid(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(tmp_path, pid=sleeper.pid)
        with pytest.raises(DatasetError, match=rf"in use by another score run, pid {sleeper.pid} on "
                                               rf"{socket.gethostname()}, since 2026-01-01"):
            lock.OutputLock(tmp_path, job="score").acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert json.loads((tmp_path / lock.LOCK_NAME).read_text())["token"] == "other"  # left alone


def test_a_second_run_of_this_process_is_refused(tmp_path: Path) -> None:
    with lock.hold(tmp_path, job="score"):
        with pytest.raises(DatasetError, match="in use by another score run"):
            lock.OutputLock(tmp_path, job="score").acquire()


def test_a_stale_lock_is_taken_over(tmp_path: Path) -> None:
    write_lock(tmp_path, pid=finished_pid())
    with lock.hold(tmp_path, job="score") as held:
        assert lock.read_lock(tmp_path).token == held.info.token
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no leftovers of the takeover either


def test_a_reused_pid_is_stale(tmp_path: Path) -> None:
    # Our own pid, but a process that started at another time: the lock's process is gone.
    import os

    write_lock(tmp_path, pid=os.getpid(), proc_start=1)
    with lock.hold(tmp_path, job="score") as held:
        assert lock.read_lock(tmp_path).token == held.info.token  # taken over, now ours
    assert lock.read_lock(tmp_path) is None


def test_a_lock_of_another_host_says_how_to_remove_it(tmp_path: Path) -> None:
    write_lock(tmp_path, host="node-7", pid=4242)
    with pytest.raises(DatasetError, match=rf"pid 4242 on node-7.*delete {tmp_path / '.lock'}"):
        lock.OutputLock(tmp_path, job="score").acquire()


def test_release_removes_only_folders_it_created_and_left_empty(tmp_path: Path) -> None:
    with lock.hold(tmp_path / "a" / "b", job="score"):
        pass
    assert not (tmp_path / "a").exists()
    with lock.hold(tmp_path / "c" / "d", job="score"):
        (tmp_path / "c" / "d" / "part.parquet").write_text("x")
    assert (tmp_path / "c" / "d" / "part.parquet").exists()


def test_a_file_in_place_of_the_folder(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        lock.OutputLock(tmp_path / "out", job="score").acquire()


def test_extract_refuses_a_locked_output_and_takes_over_a_stale_one(ray_session: None, tmp_path: Path) -> None:
    write_audio(tmp_path / "in" / "a.wav", duration_s=0.5)
    out = tmp_path / "out"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(out, pid=sleeper.pid, job="extract")
        refused = CliRunner().invoke(main, ["extract", str(tmp_path / "in"), "--out", str(out), "--no-progress"])
        assert refused.exit_code == 1 and f"in use by another extract run, pid {sleeper.pid}" in refused.output
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written
    finally:
        sleeper.kill()
        sleeper.wait()
    done = CliRunner().invoke(main, ["extract", str(tmp_path / "in"), "--out", str(out), "--no-progress"])
    assert done.exit_code == 0, done.output
    assert not (out / ".lock").exists() and (out / "_manifest.json").exists()


# --- a lock that names no run (issue 16, point 8): a full disk, a cut-short write -------------


def _age(path: Path, seconds: float) -> None:
    import os
    import time

    os.utime(path, (time.time() - seconds, time.time() - seconds))


@pytest.mark.parametrize("content", [b"", b'{"host": "x", "pi', b"\x00\x00\x00\x00", b"[1, 2]", b'"a string"',
                                     b'{"host": "h", "pid": "12", "token": "t"}', b'{"pid": 12}'])
def test_an_empty_or_unreadable_lock_is_stale(tmp_path: Path, content: bytes) -> None:
    (tmp_path / lock.LOCK_NAME).write_bytes(content)
    assert lock.read_lock(tmp_path) is lock.UNREADABLE
    _age(tmp_path / lock.LOCK_NAME, lock.UNREADABLE_GRACE_S + 1)
    with lock.hold(tmp_path, job="score") as held:
        assert lock.read_lock(tmp_path).token == held.info.token
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_young_unreadable_lock_is_given_time_to_be_written(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a lock is created and then written (no hard links), it is empty for a moment."""
    import threading

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    (tmp_path / lock.LOCK_NAME).write_bytes(b"")
    threading.Timer(0.5, write_lock, args=(tmp_path,), kwargs={"pid": sleeper.pid}).start()
    try:
        with pytest.raises(DatasetError, match=f"in use by another score run, pid {sleeper.pid}"):
            lock.OutputLock(tmp_path, job="score").acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    # one that stays empty past the grace time is stale
    monkeypatch.setattr(lock, "UNREADABLE_GRACE_S", 0.3)
    (tmp_path / lock.LOCK_NAME).write_bytes(b"")
    with lock.hold(tmp_path, job="extract"):
        assert lock.read_lock(tmp_path).job == "extract"


def test_a_full_disk_while_locking_leaves_no_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        lock.OutputLock(tmp_path, job="score").acquire()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no empty lock, no temporary file
    monkeypatch.undo()
    with lock.hold(tmp_path, job="score") as held:  # the next run is not blocked
        assert lock.read_lock(tmp_path).token == held.info.token


def test_without_hard_links_the_lock_is_written_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os
    from typing import Self

    def no_links(*args: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    with lock.hold(tmp_path, job="score") as held:
        assert lock.read_lock(tmp_path).token == held.info.token
        assert sorted(p.name for p in tmp_path.iterdir()) == [lock.LOCK_NAME]
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, handle: object) -> None:
            self.handle = handle

        def __enter__(self) -> Self:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()

        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: FullDisk(real_fdopen(fd, *a, **k)))
    with pytest.raises(OSError, match="No space left"):
        lock.OutputLock(tmp_path, job="score").acquire()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_score_runs_into_a_folder_whose_lock_was_cut_short(ray_session: None, tmp_path: Path) -> None:
    write_audio(tmp_path / "in" / "a.wav", duration_s=1.0)
    out = tmp_path / "out"
    out.mkdir()
    (out / lock.LOCK_NAME).write_bytes(b"")  # what a full disk left behind
    _age(out / lock.LOCK_NAME, lock.UNREADABLE_GRACE_S + 1)
    result = CliRunner().invoke(main, ["score", str(tmp_path / "in"), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "unknown run" not in result.output and not (out / lock.LOCK_NAME).exists()

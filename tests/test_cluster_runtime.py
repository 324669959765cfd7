"""The Ray layer (ser_batch/cluster/runtime.py): joining a runtime, fanning tasks out, retries.

Task functions are defined inside the tests so that Ray ships them by value: the
workers cannot import this test module.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ser_batch.cluster import runtime
from ser_batch.errors import ClusterError, DatasetError


def test_resolve_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert runtime.resolve_address(None) is None
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert runtime.resolve_address(None) == "10.0.0.1:6379"
    assert runtime.resolve_address("head:6379") == "head:6379"


def test_ray_runtime_reuses_a_running_one(ray_session: None) -> None:
    import ray

    with runtime.ray_runtime(num_cpus=1) as info:
        assert info.started is False and info.cpus == 2 and info.nodes == 1 and info.local
        assert info.executor == runtime.RAY and info.address == ray.get_runtime_context().gcs_address
        assert info.record() == {"address": info.address, "cpus": 2, "nodes": 1}
    assert ray.is_initialized()  # not shut down: this block did not start it
    assert runtime.largest_node_cpus() == 2


def test_map_tasks_returns_results_in_item_order(ray_session: None) -> None:
    def square(item: int, *, offset: int) -> dict[str, int]:
        return {"item": item, "value": item * item + offset}

    seen: list[int] = []
    results = runtime.map_tasks(square, [3, 1, 2, 0], kwargs={"offset": 10}, max_in_flight=2,
                                on_result=lambda r: seen.append(r["item"]))
    assert [r["value"] for r in results] == [19, 11, 14, 10]
    assert sorted(seen) == [0, 1, 2, 3]


def test_a_task_that_raises_fails_the_job_with_its_message(ray_session: None) -> None:
    def fail_on_two(item: int) -> dict[str, int]:
        if item == 2:
            raise ValueError(f"shard {item} is unreadable")
        return {"item": item}

    with pytest.raises(ClusterError, match=r"task 2 failed: .*ValueError: shard 2 is unreadable"):
        runtime.map_tasks(fail_on_two, [0, 1, 2, 3], max_retries=3)

    def refuse(item: int) -> dict[str, int]:
        raise DatasetError(f"bad labels in shard {item}")

    # the library's own errors come through as their one-line message, not retried
    with pytest.raises(ClusterError) as caught:
        runtime.map_tasks(refuse, [5], max_retries=3)
    assert str(caught.value) == "task 0 failed: bad labels in shard 5"


def test_a_dead_worker_is_retried(ray_session: None, tmp_path: Path) -> None:
    def die_once(item: int, *, folder: str) -> dict[str, int]:
        import os

        marker = Path(folder) / f"attempted-{item}"
        if item == 1 and not marker.exists():
            marker.touch()
            os._exit(1)  # the worker process dies, as on an out-of-memory kill
        return {"item": item}

    results = runtime.map_tasks(die_once, [0, 1, 2], kwargs={"folder": str(tmp_path)}, max_retries=2)
    assert [r["item"] for r in results] == [0, 1, 2]
    assert (tmp_path / "attempted-1").exists()


def test_a_worker_that_keeps_dying_fails_after_max_retries(ray_session: None, tmp_path: Path) -> None:
    def always_die(item: int, *, folder: str) -> dict[str, int]:
        import os

        with (Path(folder) / "attempts").open("a") as log:
            log.write("x")
        os._exit(1)

    with pytest.raises(ClusterError, match=r"task 0 failed: .*(died|crash|exit)"):
        runtime.map_tasks(always_die, [7], kwargs={"folder": str(tmp_path)}, max_retries=1)
    assert (tmp_path / "attempts").read_text() == "xx"  # the first run and one retry


# --- joining a cluster ------------------------------------------------------------------


def test_an_http_address_is_the_jobs_api_not_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    with pytest.raises(ClusterError, match=r"dashboard / Jobs API address.*--jobs-address http://127\.0\.0\.1:8265"):
        runtime.resolve_address(None)


def test_a_dead_address_fails_at_once() -> None:
    import socket
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again before the check
    started = time.perf_counter()
    with pytest.raises(ClusterError, match=rf"no Ray cluster answers at 127\.0\.0\.1:{port} \(Connection refused\)"):
        runtime.check_reachable(f"127.0.0.1:{port}")
    assert time.perf_counter() - started < 2
    with pytest.raises(ClusterError, match="is not HOST:PORT"):
        runtime.check_reachable("head-node")
    runtime.check_reachable("auto")  # left to Ray


@pytest.mark.parametrize(("mode", "token", "expected"), [
    (None, False, "False None"),           # no token anywhere: Ray's default stays
    (None, True, "True token"),            # a token file: sent, as Ray does only for address "auto"
    ("disabled", True, "False disabled"),  # an explicit mode is respected
])
def test_token_auth_is_switched_on_when_a_token_exists(tmp_path: Path, mode: str | None, token: bool,
                                                        expected: str) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    if mode:
        env["RAY_AUTH_MODE"] = mode
    if token:
        (tmp_path / "token").write_text("0123456789abcdef" * 4)
        env["RAY_AUTH_TOKEN_PATH"] = str(tmp_path / "token")
    script = "import os; from ser_batch.cluster import runtime; print(runtime.enable_token_auth(), os.environ.get('RAY_AUTH_MODE'))"
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == expected, result.stderr


def test_run_on_each_node(ray_session: None) -> None:
    import os

    import ray

    def where(*, tag: str) -> tuple[str, str, bool]:
        import os
        import socket

        return tag, socket.gethostname(), os.getpid() != driver

    driver = os.getpid()
    answers = runtime.run_on_each_node(where, kwargs={"tag": "x"})
    # The session runtime has one node, this machine: one answer, from a worker process there.
    assert answers == [(ray.util.get_node_ip_address(), ("x", os.uname().nodename, True))]


def test_map_tasks_names_its_tasks(ray_session: None) -> None:
    """Workers carry the job's task name (``ray::score_shard`` in ps and on log lines)."""

    def title(item: int) -> str:
        with open("/proc/self/cmdline", "rb") as handle:
            return handle.read().split(b"\0")[0].decode()

    assert runtime.map_tasks(title, [0], name="score_shard")[0].startswith("ray::score_shard")


def _stdout_on_a_terminal(code: str) -> bytes:
    """What a Python process running ``code`` writes to its stdout when that is a terminal (a pty)."""
    import os
    import subprocess
    import sys

    main_fd, child_fd = os.openpty()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-c", code], stdout=child_fd, stderr=subprocess.DEVNULL, env=env,
                          timeout=120, check=True)
    os.close(child_fd)
    chunks = []
    while True:
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main_fd)
    assert proc.returncode == 0
    return b"".join(chunks)


def test_no_stray_colour_reset_after_the_last_line() -> None:
    """Ray's CLI logger initialises colorama, whose exit hook writes ESC[0m after the job's last
    line; ser-batch drops that hook."""
    setup = "import ray.autoscaler._private.cli_logger; from ser_batch.cluster import runtime; "
    assert b"\x1b[0m" in _stdout_on_a_terminal(setup + "print('done')")  # what users saw
    out = _stdout_on_a_terminal(setup + "runtime.no_colour_reset_at_exit(); print('done')")
    assert out.strip() == b"done"


def test_worker_lines_without_colour_when_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import os
    import sys

    monkeypatch.delenv("RAY_COLOR_PREFIX", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    runtime.plain_worker_logs()
    assert os.environ["RAY_COLOR_PREFIX"] == "0"
    monkeypatch.setenv("RAY_COLOR_PREFIX", "1")  # the user's choice is kept
    runtime.plain_worker_logs()
    assert os.environ["RAY_COLOR_PREFIX"] == "1"


def test_ray_dedup_notes_lose_their_colour_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """`[repeated 3x across cluster]` is coloured by Ray whatever RAY_COLOR_PREFIX says: seen as raw
    ESC codes in train's output in the full test session."""
    from ray._private import ray_logging

    # Ray's own colouring (an earlier job in this session may have replaced it already).
    monkeypatch.setattr(ray_logging, "_color", lambda msg: f"\x1b[32m{msg}\x1b[0m")
    monkeypatch.delenv("RAY_COLOR_PREFIX", raising=False)
    monkeypatch.setattr(runtime, "_is_terminal", lambda stream: False)
    assert "\x1b" in ray_logging._color(" [repeated 2x across cluster]")
    runtime.plain_worker_logs()
    assert ray_logging._color(" [repeated 2x across cluster]") == " [repeated 2x across cluster]"


# ----------------------------------------------------- a read-only HOME or temp folder (issue 25)


def _unwritable(tmp_path: Path) -> Path:
    """A folder in which nothing can be made: read-only by its mode, or (for root, whom modes do not
    stop) a path below /sys, where mkdir fails for everyone."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        (folder / "probe").mkdir()
    except OSError:
        return folder
    (folder / "probe").rmdir()
    return Path("/sys/fs/ser-batch-read-only")


def _score_env(**changes: str) -> dict[str, str]:
    """This process's environment without any Ray setting, with ``changes``."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, **changes}


def _score(tmp_path: Path, env: dict[str, str]):  # noqa: ANN202
    import subprocess
    import sys

    from conftest import write_audio

    write_audio(tmp_path / "in/a.wav", duration_s=1.5)
    return subprocess.run([sys.executable, "-m", "ser_batch.cli", "score", str(tmp_path / "in"), "--out",
                           str(tmp_path / "out"), "--no-progress"], capture_output=True, text=True, env=env,
                          timeout=300)


def test_a_read_only_home_names_the_token_file_and_the_settings_that_move_it(tmp_path: Path) -> None:
    """Issue 25: a read-only HOME stopped every job with `error: Operation not permitted: .../.ray`
    (an embedded Ray writes ~/.ray/auth_token when it finds no token), saying neither why nor how."""
    home = _unwritable(tmp_path)
    result = _score(tmp_path, _score_env(HOME=str(home)))
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: Ray cannot write its token file {home}/.ray/auth_token (")
    assert "Point RAY_AUTH_TOKEN_PATH at a token file elsewhere" in result.stderr
    assert "RAY_AUTH_MODE=disabled" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()  # nothing written: the runtime starts before any write


def test_a_read_only_temp_folder_names_it_and_ray_tmpdir(tmp_path: Path) -> None:
    temp = _unwritable(tmp_path)
    result = _score(tmp_path, _score_env(RAY_TMPDIR=str(temp), RAY_AUTH_MODE="disabled"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: Ray cannot write its temporary folder {temp}/ray (")
    assert "set RAY_TMPDIR to a writable folder" in result.stderr


@pytest.mark.slow
def test_a_token_file_elsewhere_lets_a_read_only_home_run(tmp_path: Path) -> None:
    """What the message says works: RAY_AUTH_TOKEN_PATH at a token file outside HOME."""
    import secrets

    token = tmp_path / "ray_token"
    token.write_text(secrets.token_hex(32))
    result = _score(tmp_path, _score_env(HOME=str(_unwritable(tmp_path)), RAY_AUTH_TOKEN_PATH=str(token)))
    assert result.returncode == 0, result.stderr
    assert "1 file scored (0 already done), 0 errors" in result.stdout

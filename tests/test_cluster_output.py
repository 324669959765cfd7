"""Starting a job on any cluster (ser_batch/cluster/output.py): absolute paths, the shared-storage
probe on every node, and the driver's check that it sees what the tasks wrote."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ser_batch.cluster import lock, output, runtime
from ser_batch.cluster.engine import Executor
from ser_batch.errors import ClusterError, ConfigError


def test_absolute_keeps_links_and_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert output.absolute("link/x") == tmp_path / "link" / "x"
    assert output.absolute("~/y") == Path.home() / "y"


def test_every_node_sees_inputs_and_the_lock(ray_session: None, tmp_path: Path) -> None:
    with lock.hold(tmp_path / "out", job="score") as held:
        seen = runtime.run_on_each_node(output.node_sees, kwargs={"inputs": [str(tmp_path)],
                                                                  "lock_path": str(held.path),
                                                                  "token": held.info.token})
        # One node, this machine: it sees the input and this run's lock, so the check passes.
        assert [(s["missing"], s["lock_seen"]) for _, s in seen] == [([], True)]
        assert output.check_shared_storage(inputs=[tmp_path], held=held) is None


def test_a_missing_input_names_the_node(ray_session: None, tmp_path: Path) -> None:
    with lock.hold(tmp_path / "out", job="score") as held:
        with pytest.raises(ClusterError, match=rf"node .* cannot see the input {tmp_path / 'gone'}.*same path"):
            output.check_shared_storage(inputs=[tmp_path / "gone"], held=held)


def test_a_folder_of_the_same_name_is_not_the_drivers(ray_session: None, tmp_path: Path) -> None:
    """A node that finds OUT but not this run's lock in it sees a folder of its own, not ours."""
    with lock.hold(tmp_path / "out", job="score") as held:
        held.path.write_text('{"token": "of another machine"}')
        with pytest.raises(ClusterError, match="does not see this run's output folder"):
            output.check_shared_storage(inputs=[], held=held)


@pytest.mark.parametrize("in_process", [False, True])
def test_job_output_locks_and_skips_the_probe_on_one_machine(ray_session: None, tmp_path: Path,
                                                             in_process: bool) -> None:
    with output.job_output(tmp_path / "out", job="extract") as held, \
            output.start_workers(Executor(in_process=in_process), held=held,
                                 inputs=[tmp_path / "not-checked"]) as workers:
        assert workers.info.local and (tmp_path / "out" / ".lock").is_file()
        assert workers.info.executor == (runtime.IN_PROCESS if in_process else runtime.RAY)
    assert not (tmp_path / "out").exists()  # created for the lock, left empty: removed


def test_a_failed_start_leaves_no_trace_in_out(tmp_path: Path) -> None:
    """The lock is taken before the runtime starts: a runtime that cannot start removes it again,
    and the folder it created for it. A process of its own: this one may hold the session's Ray."""
    import subprocess
    import sys

    from conftest import write_audio

    write_audio(tmp_path / "in" / "a.wav", duration_s=1.0)
    result = subprocess.run([sys.executable, "-m", "ser_batch.cli", "score", str(tmp_path / "in"), "--out",
                             str(tmp_path / "out" / "scores"), "--address", "127.0.0.1:9", "--no-progress"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "no Ray cluster answers at 127.0.0.1:9" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_parts_the_driver_cannot_see_are_an_error(tmp_path: Path) -> None:
    (tmp_path / "part-00000-aaaaaaaaaaaa.parquet").write_bytes(b"x")
    output.check_visible(tmp_path, ["part-00000-aaaaaaaaaaaa.parquet"])
    with pytest.raises(ClusterError, match=r"1 of 2 parts the tasks wrote are not visible .*every node shares"):
        output.check_visible(tmp_path, ["part-00000-aaaaaaaaaaaa.parquet", "part-00001-bbbbbbbbbbbb.parquet"])


def test_node_sees_runs_without_ray(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    lock.write_text('{"token": "abc"}')
    seen = output.node_sees(inputs=[str(tmp_path), str(tmp_path / "nope")], lock_path=str(lock), token="abc")
    assert seen["missing"] == [str(tmp_path / "nope")] and seen["lock_seen"] and seen["host"] == os.uname().nodename


# --- a relative --out inside a Ray job (issue 16, point 8) -------------------------------------

JOB_ENV = json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_x.zip"},
                      "metadata": {"job_submission_id": "raysubmit_abc", "job_name": "raysubmit_abc"}})


def test_a_relative_out_is_refused_inside_a_ray_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(output.RAY_JOB_CONFIG_ENV, raising=False)
    assert output.output_path("scores") == tmp_path / "scores"  # outside a job: against the current folder
    monkeypatch.setenv(output.RAY_JOB_CONFIG_ENV, JOB_ENV)
    assert output.ray_job_id() == "raysubmit_abc"
    with pytest.raises(ConfigError, match=rf"^--out scores is relative, but this runs as Ray job raysubmit_abc in a "
                                          rf"temporary working directory \({tmp_path}\) that is deleted"):
        output.output_path("scores")
    assert output.output_path(tmp_path / "abs") == tmp_path / "abs"
    assert output.output_path("~/x") == Path.home() / "x"  # ~ is not relative to the working copy


@pytest.mark.parametrize("job", ["score", "extract", "train"])
def test_every_job_refuses_a_relative_out_inside_a_ray_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           job: str) -> None:
    from click.testing import CliRunner

    from ser_batch.cli import main

    from conftest import write_audio

    write_audio(tmp_path / "in" / "a.wav", duration_s=0.5)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv(output.RAY_JOB_CONFIG_ENV, JOB_ENV)
    result = CliRunner().invoke(main, [job, str(tmp_path / "in"), "--out", "results"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: --out results is relative, but this runs as Ray job raysubmit_abc")
    assert len(result.stderr.strip().splitlines()) == 1
    assert list((tmp_path / "work").iterdir()) == []

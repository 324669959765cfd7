"""Starting a job on any cluster (ser_batch/cluster/output.py): absolute paths, the shared-storage
probe on every node, and the driver's check that it sees what the tasks wrote."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ser_batch.cluster import lock as outlock
from ser_batch.cluster import output as launch
from ser_batch.errors import ClusterError, ConfigError


def test_absolute_keeps_links_and_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert launch.absolute("link/x") == tmp_path / "link" / "x"
    assert launch.absolute("~/y") == Path.home() / "y"


def test_every_node_sees_inputs_and_the_lock(ray_session: None, tmp_path: Path) -> None:
    with outlock.hold(tmp_path / "out", job="score") as lock:
        launch.check_shared_storage(inputs=[tmp_path], lock=lock)  # one node, this machine: fine


def test_a_missing_input_names_the_node(ray_session: None, tmp_path: Path) -> None:
    with outlock.hold(tmp_path / "out", job="score") as lock:
        with pytest.raises(ClusterError, match=rf"node .* cannot see the input {tmp_path / 'gone'}.*same path"):
            launch.check_shared_storage(inputs=[tmp_path / "gone"], lock=lock)


def test_a_folder_of_the_same_name_is_not_the_drivers(ray_session: None, tmp_path: Path) -> None:
    """A node that finds OUT but not this run's lock in it sees a folder of its own, not ours."""
    with outlock.hold(tmp_path / "out", job="score") as lock:
        lock.path.write_text('{"token": "of another machine"}')
        with pytest.raises(ClusterError, match="does not see this run's output folder"):
            launch.check_shared_storage(inputs=[], lock=lock)


def test_job_output_locks_and_skips_the_probe_on_one_machine(ray_session: None, tmp_path: Path) -> None:
    with launch.job_output(tmp_path / "out", job="extract", inputs=[tmp_path / "not-checked"], address=None,
                           num_cpus=None) as info:
        assert info["local"] and (tmp_path / "out" / ".lock").is_file()
    assert not (tmp_path / "out").exists()  # created for the lock, left empty: removed


def test_parts_the_driver_cannot_see_are_an_error(tmp_path: Path) -> None:
    (tmp_path / "part-00000-aaaaaaaaaaaa.parquet").write_bytes(b"x")
    launch.check_visible(tmp_path, ["part-00000-aaaaaaaaaaaa.parquet"])
    with pytest.raises(ClusterError, match=r"1 of 2 parts the tasks wrote are not visible .*every node shares"):
        launch.check_visible(tmp_path, ["part-00000-aaaaaaaaaaaa.parquet", "part-00001-bbbbbbbbbbbb.parquet"])


def test_node_sees_runs_without_ray(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    lock.write_text('{"token": "abc"}')
    seen = launch.node_sees(inputs=[str(tmp_path), str(tmp_path / "nope")], lock_path=str(lock), token="abc")
    assert seen["missing"] == [str(tmp_path / "nope")] and seen["lock_seen"] and seen["host"] == os.uname().nodename


# --- a relative --out inside a Ray job (issue 16, point 8) -------------------------------------

JOB_ENV = json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_x.zip"},
                      "metadata": {"job_submission_id": "raysubmit_abc", "job_name": "raysubmit_abc"}})


def test_a_relative_out_is_refused_inside_a_ray_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(launch.RAY_JOB_CONFIG_ENV, raising=False)
    assert launch.output_path("scores") == tmp_path / "scores"  # outside a job: against the current folder
    monkeypatch.setenv(launch.RAY_JOB_CONFIG_ENV, JOB_ENV)
    assert launch.ray_job_id() == "raysubmit_abc"
    with pytest.raises(ConfigError, match=rf"^--out scores is relative, but this runs as Ray job raysubmit_abc in a "
                                          rf"temporary working directory \({tmp_path}\) that is deleted"):
        launch.output_path("scores")
    assert launch.output_path(tmp_path / "abs") == tmp_path / "abs"
    assert launch.output_path("~/x") == Path.home() / "x"  # ~ is not relative to the working copy


@pytest.mark.parametrize("job", ["score", "extract", "train"])
def test_every_job_refuses_a_relative_out_inside_a_ray_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           job: str) -> None:
    from click.testing import CliRunner

    from ser_batch.cli import main

    from conftest import write_audio

    write_audio(tmp_path / "in" / "a.wav", duration_s=0.5)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv(launch.RAY_JOB_CONFIG_ENV, JOB_ENV)
    result = CliRunner().invoke(main, [job, str(tmp_path / "in"), "--out", "results"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: --out results is relative, but this runs as Ray job raysubmit_abc")
    assert len(result.stderr.strip().splitlines()) == 1
    assert list((tmp_path / "work").iterdir()) == []

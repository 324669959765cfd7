"""Running on a cluster, with real Ray processes: a local multi-node cluster, Ray Jobs, kills.

One local cluster (``ser-batch cluster start --num-cpus 1 --workers 1``: a head and a worker
node on free ports, in their own Ray temporary folder and state folder) serves the tests of
this module; a finaliser stops it, and kills whatever of it is left, even when a test
fails. Every client (the CLI, a job driver) runs in a subprocess, so the session Ray runtime
of the other tests is never touched. Nodes are declared dead after ~2 s here (Ray's default
is ~30 s) so that the lost-node test does not wait on Ray's health checks.

The kill tests print one ``OUTCOME`` line each (files in, rows out, duplicates) for the record.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from ser_batch.cluster import local

from conftest import write_audio

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[1]
FAST_NODE_DEATH = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "500",
                   "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "3"}
LONG_FILES = 16  # two-minute files: enough work per task to kill one mid-task


def client_env(state: Path | None = None, **extra: str) -> dict[str, str]:
    """A user's environment: no Ray address or auth mode set, this worktree's code first."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_API_SERVER_ADDRESS", local.STATE_ENV)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if state is not None:
        env[local.STATE_ENV] = str(state)
    env.update(extra)
    return env


def ser_command(*args: object) -> list[str]:
    return [sys.executable, "-m", "ser_batch.cli", *map(str, args)]


def ser(*args: object, env: dict[str, str], cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(ser_command(*args), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


class Cluster:
    """The module's local cluster, as a test sees it."""

    def __init__(self, state: Path, started: str) -> None:
        self.state = state
        self.started = started
        self.info = local.LocalCluster(**json.loads((state / local.STATE_FILE).read_text()))
        self.env = client_env(state)

    @property
    def gcs(self) -> str:
        return self.info.gcs_address

    @property
    def jobs(self) -> str:
        return self.info.jobs_address

    def reload(self) -> None:
        self.info = local.LocalCluster(**json.loads((self.state / local.STATE_FILE).read_text()))


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    state = tmp_path_factory.mktemp("cluster-state")
    env = client_env(state, **FAST_NODE_DEATH)
    temp_dir, gcs = None, ""
    try:
        started = time.perf_counter()
        result = ser("cluster", "start", "--num-cpus", "1", "--workers", "1", env=env, timeout=240)
        assert result.returncode == 0, result.stderr
        print(f"\ncluster start took {time.perf_counter() - started:.1f} s")
        here = Cluster(state, result.stdout)
        temp_dir, gcs = here.info.temp_dir, here.info.gcs_address
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(local.STATE_ENV, str(state))  # for local.add_node / stop_node in this process
            yield here
    finally:
        stopped = ser("cluster", "stop", env=env, timeout=120)
        if temp_dir is None:
            temp_dir = next(iter(re.findall(r"/tmp/serb-\w+", stopped.stdout)), None)
        if temp_dir:
            leftovers = local.cluster_pids(temp_dir, gcs)
            local._terminate(leftovers, grace_s=1.0)  # whatever `stop` missed, then fail
            assert not leftovers and not local.cluster_pids(temp_dir, gcs)
            assert not Path(temp_dir).exists()


@pytest.fixture(scope="module")
def long_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LONG_FILES two-minute recordings (copies of one), shared read-only by the kill tests."""
    folder = tmp_path_factory.mktemp("long")
    first = write_audio(folder / "call_00.wav", duration_s=120.0)
    for i in range(1, LONG_FILES):
        shutil.copy(first, folder / f"call_{i:02d}.wav")
    return folder


def small_archive(folder: Path, n: int, *, start: int = 0) -> list[str]:
    names = []
    for i in range(start, start + n):
        write_audio(folder / f"rec_{i:02d}.wav", duration_s=2.0, seed=i)
        names.append(f"rec_{i:02d}.wav")
    return names


# ----------------------------------------------------------------------- processes


def worker_running(temp_dir: str, task: str, *, raylet_port: int | None = None) -> int | None:
    """pid of a worker of the cluster now running ``task`` (its title is ``ray::task``), optionally
    only on the node whose raylet listens on ``raylet_port``."""
    table = local._processes()
    if raylet_port is None:
        pids = local.cluster_pids(temp_dir)
    else:
        raylets = {pid for pid, (_, cmd, _) in table.items()
                   if "raylet" in cmd and f"--node_manager_port={raylet_port}" in cmd}
        pids = local._with_children(raylets)
    return next((pid for pid in pids if pid in table and table[pid][1].startswith(f"ray::{task}")), None)


def wait_for(predicate, timeout: float, what: str):  # noqa: ANN001, ANN201 - a polling helper
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def outcome(name: str, files_in: int, paths: pd.Series) -> None:
    print(f"\nOUTCOME {name}: files in {files_in}, rows out {len(paths)}, "
          f"duplicates {int(paths.duplicated().sum())}")


# ------------------------------------------------------------------- the cluster


def test_start_prints_addresses_binds_localhost_and_refuses_a_second(local_cluster: Cluster) -> None:
    text = local_cluster.started
    assert re.search(r"http://127\.0\.0\.1:\d+", text) and local_cluster.gcs in text
    assert "token authentication on" in text
    # the dashboard / Jobs API listens on the loopback address only
    port = int(local_cluster.jobs.rsplit(":", 1)[1])
    listening = [line.split()[1] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                 if line.split()[3] == "0A"]
    assert f"0100007F:{port:04X}" in listening and f"00000000:{port:04X}" not in listening
    # Ray's per-node Prometheus endpoints (no authentication, every interface) are switched off
    listening6 = [line.split()[1].rsplit(":", 1)[1] for line in Path("/proc/net/tcp6").read_text().splitlines()[1:]
                  if line.split()[3] == "0A"]
    for node in local_cluster.info.nodes:
        metrics = f"{node['metrics-export-port']:04X}"
        assert metrics not in {a.rsplit(":", 1)[1] for a in listening} | set(listening6), node
    status = ser("cluster", "status", env=local_cluster.env)
    assert status.returncode == 0, status.stderr
    assert re.search(r"head node +raylet on port \d+: up\n +worker node 1 +raylet on port \d+: up", status.stdout)
    assert "Autoscaler status" in status.stdout  # and Ray's own view, with the token sent
    again = ser("cluster", "start", env=local_cluster.env)
    assert again.returncode == 1 and "already running" in again.stderr


def test_the_token_file_is_readable_by_its_owner_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    token = tmp_path / ".ray" / "auth_token"
    local._ensure_token(local._environment())  # generated by `ray get-auth-token --generate`
    assert token.is_file() and len(token.read_text().strip()) >= 32
    assert token.stat().st_mode & 0o777 == 0o600
    token.chmod(0o644)  # one an older ser-batch (or Ray itself) wrote
    local._ensure_token(local._environment())
    assert token.stat().st_mode & 0o777 == 0o600


def test_extract_with_an_explicit_address_and_relative_paths(local_cluster: Cluster, tmp_path: Path) -> None:
    """The issue's first failure: an explicit HOST:PORT with token auth and no RAY_AUTH_MODE."""
    names = small_archive(tmp_path / "in", 6)
    assert "RAY_AUTH_MODE" not in local_cluster.env
    result = ser("extract", "in", "--out", "feat", "--address", local_cluster.gcs, "--no-progress",
                 "--set", "extract.shard_size=2", env=local_cluster.env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    table = pd.read_parquet(tmp_path / "feat")
    assert sorted(table.path) == names and table.error.isna().all()
    manifest = json.loads((tmp_path / "feat" / "_manifest.json").read_text())
    assert manifest["input_dir"] == str(tmp_path / "in") and manifest["ray"]["nodes"] == 2
    assert not (tmp_path / "feat" / ".lock").exists()


def test_extract_then_train_as_a_job(local_cluster: Cluster, tmp_path: Path) -> None:
    """train on the cluster too: features extracted with --address, models fitted in a Ray job."""
    for i in range(8):  # RAVDESS names: emotion 01 or 05, repetition 1 or 2, actor 01 or 02
        write_audio(tmp_path / "in" / f"03-01-0{1 + 4 * (i % 2)}-01-01-0{1 + (i // 2) % 2}-0{1 + i // 4}.wav",
                    duration_s=1.0, seed=i, kind="speech" if i % 2 else "noise")
    extracted = ser("extract", tmp_path / "in", "--out", tmp_path / "feat", "--address", local_cluster.gcs,
                    "--no-progress", env=local_cluster.env)
    assert extracted.returncode == 0, extracted.stderr
    trained = ser("submit", "train", tmp_path / "feat", "--out", tmp_path / "model", "--models", "sklearn",
                  "--split", "random", "--test-size", "0.5", "--wait", env=local_cluster.env)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "python jobs/train.py" in trained.stdout and "SUCCEEDED" in trained.stdout
    manifest = json.loads((tmp_path / "model" / "manifest.json").read_text())
    assert manifest["models"] == ["sklearn"] and manifest["training_data"]["rows_labelled"] == 8


def test_submit_score_wait_and_the_jobs_commands(local_cluster: Cluster, tmp_path: Path) -> None:
    names = small_archive(tmp_path / "archive", 5)
    env = local_cluster.env
    # relative input, default output: both made absolute before the job is submitted
    run = ser("submit", "score", "archive", "--submission-id", "t-score-1", "--wait", env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    out = tmp_path / "output" / "scores"
    assert f"submitted job t-score-1: python jobs/score.py {tmp_path / 'archive'} --out {out}" in run.stdout
    assert f"dashboard: {local_cluster.jobs}/#/jobs/t-score-1" in run.stdout
    assert "5 files scored (0 already done)" in run.stdout and "job t-score-1 SUCCEEDED" in run.stdout
    assert sorted(pd.read_parquet(out / "files").path) == names
    record = (out / "_run.json").stat().st_mtime_ns

    listed = ser("jobs", "list", "--jobs-address", local_cluster.jobs, env=env)
    assert listed.returncode == 0 and re.search(r"t-score-1\s+SUCCEEDED", listed.stdout)
    status = ser("jobs", "status", "t-score-1", env=env)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout
    logs = ser("jobs", "logs", "t-score-1", env=env)
    assert "5 files scored" in logs.stdout
    # the same submission id again: not run twice
    again = ser("submit", "score", "archive", "--submission-id", "t-score-1", env=env, cwd=tmp_path)
    assert again.returncode == 0 and "not run again" in again.stdout
    assert (out / "_run.json").stat().st_mtime_ns == record
    missing = ser("jobs", "status", "no-such-job", env=env)
    assert missing.returncode == 1 and "no job no-such-job" in missing.stderr
    # a job that fails: --wait exits with its driver's status (3: --fail-on-error with a bad file)
    (tmp_path / "archive" / "broken.wav").write_text("not audio")
    failed = ser("submit", "score", "archive", "--out", "bad", "--fail-on-error", "--wait", env=env, cwd=tmp_path)
    assert failed.returncode == 3, failed.stdout + failed.stderr
    assert failed.stderr.strip().endswith("FAILED: Job entrypoint command failed with exit code 3")


def test_a_raw_job_with_a_relative_out_is_refused(local_cluster: Cluster, tmp_path: Path) -> None:
    """What `ray job submit --working-dir . -- python jobs/score.py IN --out relative/path` does: the
    job's working directory is a temporary copy of the project, so a relative OUT would vanish."""
    small_archive(tmp_path / "in", 1)
    script = ("import sys\n"
              "from ser_batch.cluster import jobs_api\n"
              "jobs_api.submit('score', [sys.argv[2], '--out', 'relative/scores'], address=sys.argv[1],\n"
              "                submission_id='t-relative-out')\n")
    submitted = subprocess.run([sys.executable, "-c", script, local_cluster.jobs, str(tmp_path / "in")],
                               env=local_cluster.env, cwd=ROOT, capture_output=True, text=True, timeout=300,
                               check=False)
    assert submitted.returncode == 0, submitted.stderr
    logs = ser("jobs", "logs", "t-relative-out", "--follow", env=local_cluster.env)
    assert logs.returncode == 2, logs.stdout + logs.stderr  # the driver's exit status: bad usage
    assert ("error: --out relative/scores is relative, but this runs as Ray job t-relative-out in a temporary "
            "working directory") in logs.stdout
    assert not (ROOT / "relative").exists()


def test_jobs_stop_ends_the_job_and_frees_its_output(local_cluster: Cluster, long_archive: Path,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "out"
    submitted = ser("submit", "score", long_archive, "--out", out, "--submission-id", "t-stop-1",
                    "--set", "score.shard_s=100", env=local_cluster.env)
    assert submitted.returncode == 0, submitted.stderr
    wait_for(lambda: (out / ".lock").exists(), 120, "the job to lock its output")
    stopped = ser("jobs", "stop", "t-stop-1", env=local_cluster.env)
    assert stopped.returncode == 0 and "t-stop-1 STOPPED" in stopped.stdout
    assert not (out / ".lock").exists()  # the driver released it on SIGTERM
    status = ser("jobs", "status", "t-stop-1", env=local_cluster.env)
    assert status.returncode == 1 and "STOPPED" in status.stdout


# --------------------------------------------------------------- fault tolerance


@pytest.mark.parametrize("job", ["extract", "score"])
def test_a_worker_killed_mid_task_is_retried(local_cluster: Cluster, long_archive: Path, tmp_path: Path,
                                             job: str) -> None:
    out = tmp_path / "out"
    options = (["--recipe", "rich", "--set", "extract.shard_size=2"] if job == "extract"
               else ["--set", "score.shard_s=100"])
    process = subprocess.Popen(ser_command(job, long_archive, "--out", out, "--address", local_cluster.gcs,
                                           "--no-progress", *options),
                               env=local_cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        victim = wait_for(lambda: worker_running(local_cluster.info.temp_dir, f"{job}_shard"), 180,
                          f"a {job} task to run")
        os.kill(victim, signal.SIGKILL)
        assert process.poll() is None  # killed mid-job
        stdout, stderr = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    table = pd.read_parquet(out if job == "extract" else out / "files")
    outcome(f"worker killed mid-{job}", LONG_FILES, table.path)
    assert sorted(table.path) == sorted(p.name for p in long_archive.iterdir())
    assert not table.path.duplicated().any() and table.error.isna().all()


def test_a_lost_worker_node_mid_job(local_cluster: Cluster, long_archive: Path, tmp_path: Path) -> None:
    """A third node joins, takes tasks and dies (SIGKILL of its raylet and every process under it)."""
    index = local.add_node(num_cpus=1)
    local_cluster.reload()
    port = local_cluster.info.nodes[index]["node-manager-port"]
    out = tmp_path / "out"
    process = subprocess.Popen(ser_command("score", long_archive, "--out", out, "--address", local_cluster.gcs,
                                           "--no-progress", "--set", "score.shard_s=100"),
                               env=local_cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: worker_running(local_cluster.info.temp_dir, "score_shard", raylet_port=port), 180,
                 "a task on the new node")
        assert local.stop_node(local_cluster.info, index) >= 2  # raylet, agents, workers
        wait_for(lambda: local.node_lines(local_cluster.info)[index].endswith(": DOWN"), 10, "the node to be down")
        assert process.poll() is None
        stdout, stderr = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    files = pd.read_parquet(out / "files")
    outcome("worker node lost mid-score", LONG_FILES, files.path)
    assert sorted(files.path) == sorted(p.name for p in long_archive.iterdir())
    assert not files.path.duplicated().any() and files.error.isna().all()
    assert not pd.read_parquet(out / "segments").duplicated(["path", "start_s"]).any()


def test_a_killed_driver_completes_when_run_again(local_cluster: Cluster, long_archive: Path,
                                                  tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = ser_command("extract", long_archive, "--out", out, "--address", local_cluster.gcs, "--resume",
                          "--no-progress", "--recipe", "rich", "--set", "extract.shard_size=1")
    process = subprocess.Popen(command, env=local_cluster.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: list(out.glob("part-*.parquet")), 180, "a first part")
        process.kill()
        process.wait()
    finally:
        process.kill()
    # Ray ends a dead driver's tasks; then the parts of the killed run can be counted.
    wait_for(lambda: not worker_running(local_cluster.info.temp_dir, "extract_shard"), 60, "its tasks to end")
    kept = len(list(out.glob("part-*.parquet")))
    assert 0 < kept < LONG_FILES and (out / ".lock").exists()  # a stale lock, taken over below
    again = subprocess.run(command, env=local_cluster.env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"{kept} kept from before" in again.stdout
    table = pd.read_parquet(out)
    outcome("driver killed mid-extract, run again", LONG_FILES, table.path)
    assert sorted(table.path) == sorted(p.name for p in long_archive.iterdir())
    assert not table.path.duplicated().any()


# -------------------------------------------------------------------- nightly runs


def crontab_line() -> str:
    """The crontab line of docs/cluster.md (the one that submits the nightly score)."""
    text = (ROOT / "docs" / "cluster.md").read_text()
    return next(line for line in text.splitlines() if re.match(r"^[\d*]+ [\d*]+ \* \* \* .*submit score", line))


def test_the_documented_crontab_line_scores_only_new_files(local_cluster: Cluster, tmp_path: Path) -> None:
    """Two nights of the documented line (a fake `date`), then the second night repeated."""
    line = crontab_line()
    command = line.split(None, 5)[5]
    archive, scores, log = tmp_path / "archive", tmp_path / "scores", tmp_path / "nightly.log"
    command = (command.replace("/srv/ser-batch", str(ROOT))
               .replace(".venv/bin/ser-batch", f"{sys.executable} -m ser_batch.cli")
               .replace("/archive/calls", str(archive)).replace("/archive/scores", str(scores))
               .replace("http://127.0.0.1:8265", local_cluster.jobs)
               .replace("/var/log/ser-batch-nightly.log", str(log)))
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "date").write_text('#!/bin/sh\necho "$FAKE_DATE"\n')
    (fake / "date").chmod(0o755)

    def night(date: str) -> str:
        env = dict(local_cluster.env, FAKE_DATE=date, PATH=f"{fake}{os.pathsep}{os.environ['PATH']}")
        before = log.read_text() if log.exists() else ""
        result = subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, log.read_text()
        return log.read_text()[len(before):]

    first = small_archive(archive, 4)
    assert "4 files scored (0 already done)" in night("2026-01-01")
    small_archive(archive, 2, start=4)
    second = night("2026-01-02")
    assert "score-2026-01-02" in second and "2 files scored (4 already done)" in second
    assert "not run again" in night("2026-01-02")  # cron fired twice: one run only
    files = pd.read_parquet(scores / "files")
    assert len(files) == len(first) + 2 and not files.path.duplicated().any()


def test_kuberay_example_runs_the_score_job() -> None:
    import yaml

    spec = yaml.safe_load((ROOT / "docs" / "kuberay-rayjob.yaml").read_text())
    assert spec["apiVersion"] == "ray.io/v1" and spec["kind"] == "RayJob"
    job = spec["spec"]
    assert job["entrypoint"].startswith("python jobs/score.py ") and "--out" in job["entrypoint"]
    assert job["rayClusterSpec"]["authOptions"]["mode"] == "token"
    assert yaml.safe_load(job["runtimeEnvYAML"])["working_dir"]


# ----------------------------------------------- without a cluster: addresses, arguments, lost shards


def test_a_wrong_address_fails_within_seconds_and_leaves_out_untouched(tmp_path: Path) -> None:
    small_archive(tmp_path / "in", 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (port,) = local.free_ports(1)
    env = client_env(tmp_path / "no-state")
    empty = tmp_path / "empty"
    empty.mkdir()
    # score refuses a folder of notes before it looks for a cluster; extract's OUT may hold them.
    for job, folder, kept in (("extract", out, ["notes.txt"]), ("score", empty, [])):
        started = time.perf_counter()
        result = ser(job, tmp_path / "in", "--out", folder, "--address", f"127.0.0.1:{port}", env=env)
        assert result.returncode == 1 and time.perf_counter() - started < 15
        assert result.stderr.startswith(f"error: no Ray cluster answers at 127.0.0.1:{port}")
        assert len(result.stderr.strip().splitlines()) == 1
        assert sorted(p.name for p in folder.iterdir()) == kept
    foreign = ser("score", tmp_path / "in", "--out", out, "--address", f"127.0.0.1:{port}", env=env)
    assert foreign.returncode == 1 and "is not empty and is not a score output folder" in foreign.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    http = ser("extract", tmp_path / "in", "--out", tmp_path / "new", "--address", "http://127.0.0.1:8265", env=env)
    assert http.returncode == 1 and "--jobs-address http://127.0.0.1:8265" in http.stderr
    assert not (tmp_path / "new").exists()
    jobs = ser("jobs", "list", "--jobs-address", f"http://127.0.0.1:{port}", env=env)
    assert jobs.returncode == 1 and "no Ray Jobs API answers" in jobs.stderr
    gcs = ser("jobs", "list", "--jobs-address", f"127.0.0.1:{port}", env=env)
    assert gcs.returncode == 1 and "dashboard's http://HOST:PORT" in gcs.stderr


def test_submitted_arguments_are_absolute_and_out_is_added(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ser_batch.cli import main
    from ser_batch.cli.cluster import absolute_args

    monkeypatch.chdir(tmp_path)
    score = absolute_args(main.commands["score"], ["calls", "--framework", "keras", "--set", "score.shard_s=60",
                                                   "--no-progress", "--model=models/m"])
    assert score == [str(tmp_path / "calls"), "--framework", "keras", "--set", "score.shard_s=60", "--no-progress",
                     "--model", str(tmp_path / "models" / "m"), "--out", str(tmp_path / "output" / "scores")]
    config = tmp_path / "night.toml"
    config.write_text('[extract]\nout = "feats/nightly"\n')
    extract = absolute_args(main.commands["extract"], ["in", "--config", "night.toml"])
    assert extract == [str(tmp_path / "in"), "--config", str(config), "--out", str(tmp_path / "feats" / "nightly")]
    train = absolute_args(main.commands["train"], ["feats", "--out", "/models/x"])
    assert train == [str(tmp_path / "feats"), "--out", "/models/x"]
    import click

    with pytest.raises(click.UsageError, match="has no option --frobnicate"):
        absolute_args(main.commands["score"], ["calls", "--frobnicate"])


def test_a_job_ships_the_project_without_environments_or_data() -> None:
    from ser_batch.cluster.jobs_api import job_spec

    entrypoint, runtime_env = job_spec("score", ["/data/in", "--out", "/data/out dir"])
    assert entrypoint == "python jobs/score.py /data/in --out '/data/out dir'"
    assert runtime_env["working_dir"] == str(ROOT)
    assert {"/.venv/", "/output/", "/input/", "/tests/"} <= set(runtime_env["excludes"])


def test_extract_records_a_shard_whose_worker_always_dies_as_errors(tmp_path: Path) -> None:
    """No job-wide abort: the shard's files run one by one; only the file that kills its worker fails."""
    from ser_batch.cluster.engine import FAULT_ENV

    names = small_archive(tmp_path / "in", 3)
    write_audio(tmp_path / "in" / "poison.wav", duration_s=1.0)
    env = client_env(None, **{FAULT_ENV: "poison"})
    result = ser("extract", tmp_path / "in", "--out", tmp_path / "out", "--num-cpus", "1", "--no-progress",
                 "--set", "ray.max_retries=0", "--set", "extract.shard_size=4", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("4 files, 1 error, 1 part")  # after Ray's worker notices
    table = pd.read_parquet(tmp_path / "out").set_index("path")
    assert sorted(table.index) == sorted([*names, "poison.wav"])
    assert table.loc["poison.wav", "error"] == ("the worker extracting this file died 1 time "
                                                "(a crash, out of memory or a lost node)")
    assert table.drop("poison.wav").error.isna().all()

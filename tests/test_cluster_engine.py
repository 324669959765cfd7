"""The shard-job engine (ser_batch/cluster/engine.py): both executors write the same bytes, a retried
shard overwrites its own output, a shard whose worker keeps dying loses only its file, passes chain.

Jobs defined inside the tests are shipped to Ray by value (the workers cannot import this module).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from ser_batch.cluster import engine, runtime
from ser_batch.cluster.engine import Executor, Progress, ShardJob, run_shards
from ser_batch.config import Config
from ser_batch.data.labels import discover_audio
from ser_batch.errors import ClusterError
from ser_batch.pipeline.extract import plan_shards, run_extract
from ser_batch.pipeline.extract_shard import ExtractRun
from ser_batch.pipeline.score import run_score
from ser_batch.pipeline.train import run_train

from conftest import speech_like, write_audio

ROOT = Path(__file__).resolve().parents[1]
RICH = Config().replace(features={"recipe": "rich"}, extract={"shard_size": 3})
#: What a run record holds that depends on the executor or the clock, not on the results.
RUN_ONLY = {"wall_s", "ray_start_s", "task_cpu_s", "tasks_wall_s", "peak_rss_mb", "realtime_factor",
            "realtime_factor_per_core", "created", "started", "finished", "executor", "ray"}
QUIET = Progress(0, "test", enabled=False)


def _files(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` (run records aside) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in ("_manifest.json", "_run.json")}


def _record(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in RUN_ONLY}


def _executors() -> dict[str, Executor]:
    return {"ray": Executor(), "in-process": Executor(in_process=True)}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Labelled clips of three actors, an 8 kHz call, a stereo call long enough to be cut into
    chunks, and two files that cannot be read."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("archive")
    for i, name in enumerate(["03-01-05-01-01-01-01", "03-01-01-01-01-01-01", "03-01-05-01-01-01-02",
                              "03-01-01-01-01-01-02", "03-01-05-01-01-01-03", "03-01-01-01-01-01-03"]):
        write_audio(root / f"Actor_0{name[-1]}" / f"{name}.wav", duration_s=1.5, seed=i)
    write_audio(root / "calls" / "narrow.wav", sample_rate=8000, duration_s=3.0, seed=7)
    left, right = speech_like(sample_rate=16_000, duration_s=7.0, seed=8), speech_like(
        sample_rate=16_000, duration_s=7.0, f0_hz=230, seed=9)
    sf.write(root / "calls" / "stereo.wav", np.stack([left, right * 0.5], axis=1), 16_000)
    (root / "bad").mkdir()
    (root / "bad" / "empty.wav").write_bytes(b"")
    (root / "bad" / "notes.wav").write_text("not audio\n" * 20)
    return root


def test_both_executors_extract_train_and_score_the_same_bytes(ray_session: None, archive: Path,
                                                                tmp_path: Path) -> None:
    config = RICH.replace(score={"chunk_s": 3.0, "channels": "split", "shard_files": 2},
                          train={"models": ["sklearn"], "split": "none"}, sklearn={"max_iter": 20})
    for name, executor in _executors().items():
        extracted = run_extract(archive, tmp_path / name / "features", config=config, executor=executor,
                                progress=False)
        assert extracted.errors == 2 and extracted.parts == 4
        run_train(tmp_path / name / "features", tmp_path / name / "model", config=config, executor=executor,
                  progress=False)
        scored = run_score(archive, tmp_path / name / "scores", config=config, executor=executor, progress=False)
        assert scored.files_scored == 10 and (scored.ray_start_s is None) == executor.in_process
    ray, local = tmp_path / "ray", tmp_path / "in-process"
    for folder in ("features", "scores"):
        assert _files(ray / folder) == _files(local / folder), folder
    # A cut file: several segments parts, one files row per channel.
    assert len(list((ray / "scores" / "segments").glob("part-*"))) > 5
    assert _record(ray / "features" / "_manifest.json") == _record(local / "features" / "_manifest.json")
    assert _record(ray / "scores" / "_run.json") == _record(local / "scores" / "_run.json")
    assert json.loads((local / "scores" / "_run.json").read_text())["executor"] == runtime.IN_PROCESS
    for npz in sorted((ray / "model").rglob("*.npz")):
        with np.load(npz) as a, np.load(local / "model" / npz.relative_to(ray / "model")) as b:
            assert sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)


def test_a_retried_shard_overwrites_its_own_part(ray_session: None, archive: Path, tmp_path: Path) -> None:
    """A worker dies halfway through a shard (after its first file) once: Ray runs the shard again,
    which writes the same part, and the folder is what a run without the crash writes."""

    @dataclass(frozen=True)
    class DiesOnce(ExtractRun):
        marker: str = ""

        def run_shard(self, shard):  # noqa: ANN001, ANN202
            if shard.index == 1 and not os.path.exists(self.marker):
                Path(self.marker).touch()
                os._exit(1)  # the worker process dies, as on an out-of-memory kill
            return super().run_shard(shard)

    shards = plan_shards(discover_audio(archive, extensions=RICH.audio.extensions), config=RICH)
    for name, executor in (("crashing", Executor()), ("clean", Executor(in_process=True))):
        (tmp_path / name).mkdir()
        job = DiesOnce(str(archive), str(tmp_path / name), RICH, "archive", marker=str(tmp_path / "died"))
        if name == "clean":
            job = ExtractRun(str(archive), str(tmp_path / name), RICH, "archive")
        committed = []
        with executor.start() as workers:
            stats = run_shards(job, shards, workers=workers, commit=lambda r: committed.append(r) or r.files,
                               max_retries=1, progress=QUIET)
        assert stats.shards == len(shards) and sorted(r.part for r in committed) == sorted(s.name for s in shards)
    assert (tmp_path / "died").exists()
    assert _files(tmp_path / "crashing") == _files(tmp_path / "clean")


def _items_job() -> ShardJob[tuple[str, ...], tuple[str, ...]]:
    """A job over shards of names; a name containing ``die`` ends its worker, ``raise`` raises. Its
    class is made here, so that Ray ships it by value."""

    @dataclass(frozen=True)
    class Items(ShardJob[tuple[str, ...], tuple[str, ...]]):
        doing = "testing"

        def run_shard(self, shard: tuple[str, ...]) -> tuple[str, ...]:
            for item in shard:
                if "die" in item:
                    os._exit(1)
                if "raise" in item:
                    raise ValueError(f"cannot do {item}")
            return shard

        def split(self, shard: tuple[str, ...]) -> list[tuple[str, ...]]:
            return [(item,) for item in shard]

        def lost(self, shard: tuple[str, ...], error: str) -> tuple[str, ...]:
            return tuple(f"{item}: {error}" for item in shard)

    return Items()


@pytest.mark.parametrize(("executor", "bad"), [(Executor(), "die"), (Executor(in_process=True), "raise"),
                                               (Executor(), "raise")])
def test_a_shard_that_keeps_failing_is_split_and_only_its_file_is_lost(ray_session: None, executor: Executor,
                                                                        bad: str) -> None:
    """A worker killed by a file on every try (or, in process, a shard that raises an unexpected
    error): its shard runs again file by file, and only that file is committed as lost."""
    committed: list[str] = []
    with executor.start() as workers:
        run_shards(_items_job(), [("a", "b"), ("c", f"{bad}-d", "e"), ("f",)], workers=workers,
                   commit=lambda result: committed.extend(result) or len(result), max_retries=1, progress=QUIET)
    died = engine.worker_died("testing", 2)
    assert sorted(committed) == sorted(["a", "b", "c", f"{bad}-d: {died}", "e", "f"])


def test_a_job_without_split_stops_when_its_shard_is_lost(ray_session: None) -> None:
    @dataclass(frozen=True)
    class Fit(ShardJob[str, str]):
        doing = "fitting"

        def run_shard(self, shard: str) -> str:
            os._exit(1)

    with Executor().start() as workers, pytest.raises(ClusterError, match="the worker fitting .* died 1 time "):
        run_shards(Fit(), ["keras"], workers=workers, commit=lambda r: 1, max_retries=0, progress=QUIET)


def test_a_second_pass_carries_what_the_first_reduced() -> None:
    """Two passes of one job, as ``score --normalize archive`` will make them: a map whose small
    results the driver reduces, then a pass whose run context carries the reduction."""

    @dataclass(frozen=True)
    class Share(ShardJob[int, float]):
        total: float | None = None

        def run_shard(self, shard: int) -> float:
            return float(shard) if self.total is None else shard / self.total

    shards, sums, shares = [1, 2, 3, 4], [], []
    with Executor(in_process=True).start() as workers:
        run_shards(Share(), shards, workers=workers, commit=lambda r: sums.append(r) or 1, max_retries=0,
                   progress=QUIET)
        run_shards(replace(Share(), total=sum(sums)), shards, workers=workers,
                   commit=lambda r: shares.append(r) or 1, max_retries=0, progress=QUIET)
    assert shares == [0.1, 0.2, 0.3, 0.4]


def test_in_process_runs_never_import_ray(tmp_path: Path) -> None:
    """``--in-process`` pays no runtime start: Ray is not even imported, and the run record says so."""
    write_audio(tmp_path / "in" / "a.wav", duration_s=2.0, seed=1)
    write_audio(tmp_path / "in" / "b.wav", duration_s=2.0, seed=2)
    script = ("import sys\nfrom ser_batch.cli import main\n"
              "try:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n    code = exc.code\n"
              "print('ray imported:', 'ray' in sys.modules, 'exit', code)\n")
    result = subprocess.run([sys.executable, "-c", script, "score", str(tmp_path / "in"), "--out",
                             str(tmp_path / "out"), "--in-process", "--no-progress"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.stdout.strip().splitlines()[-1] == "ray imported: False exit 0", result.stderr
    assert result.stdout.splitlines()[-2].startswith("2 files scored (0 already done), 0 errors")
    assert "Ray start" not in result.stdout
    record = json.loads((tmp_path / "out" / "_run.json").read_text())
    assert record["executor"] == "in-process" and record["ray_start_s"] is None and record["files_scored"] == 2


@pytest.mark.parametrize("executor", [Executor(), Executor(in_process=True)])
def test_a_task_s_permission_error_stops_the_job_saying_so_not_as_a_lost_worker(ray_session: None,
                                                                               executor: Executor) -> None:
    """Issue 25: a task that could not write its results (an OUT its workers may not write) was
    reported as shards that "lost their worker 4 times" and its files as killing their workers."""
    import errno

    @dataclass(frozen=True)
    class Write(ShardJob[str, str]):
        doing = "writing"

        def run_shard(self, shard: str) -> str:
            if shard == "denied":
                raise PermissionError(errno.EACCES, "Permission denied", f"/out/segments/part-{shard}.parquet")
            return shard

        def split(self, shard: str) -> list[str]:
            return [shard]

    committed: list[str] = []
    with executor.start() as workers, pytest.raises(ClusterError) as raised:
        run_shards(Write(), ["a", "denied", "b"], workers=workers, commit=lambda r: committed.append(r) or 1,
                   max_retries=2, progress=QUIET)
    assert str(raised.value) == (
        "a shard task stopped with 'Permission denied' on /out/segments/part-denied.parquet: a permission or disk "
        "problem where it ran, not a crash of its worker; the job stops (what it committed stays, and it completes "
        "when run again once that is fixed)")
    assert "died" not in str(raised.value) and "denied" not in committed


@pytest.mark.parametrize("executor", [Executor(), Executor(in_process=True)])
def test_a_task_s_connection_error_is_a_failed_shard_not_a_disk_problem(ray_session: None,
                                                                        executor: Executor) -> None:
    """An OSError that is not the file system refusing a write (a connection reset while a task
    reads an object store, say) fails its shard like any other error; the job does not stop."""

    @dataclass(frozen=True)
    class Flaky(ShardJob[str, str]):
        doing = "reading"

        def run_shard(self, shard: str) -> str:
            if shard == "reset":
                raise ConnectionResetError(104, "Connection reset by peer")
            return shard

        def split(self, shard: str) -> list[str]:
            return [shard]

        def lost(self, shard: str, error: str) -> str:
            return f"{shard}: {error}"

    committed: list[str] = []
    with executor.start() as workers:
        run_shards(Flaky(), ["a", "reset", "b"], workers=workers, commit=lambda r: committed.append(r) or 1,
                   max_retries=0, progress=QUIET)
    assert sorted(committed)[:2] == ["a", "b"] and sorted(committed)[2].startswith("reset: ")

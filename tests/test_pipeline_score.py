"""The batch scoring job end to end: tables, re-runs, bad input, long files, channels, exit codes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from click.testing import CliRunner

from ser_batch import schema
from ser_batch.cli import main
from ser_batch.cluster.engine import FAULT_ENV
from ser_batch.config import load_config
from ser_batch.data import score_folder
from ser_batch.errors import DatasetError
from ser_batch.inference.scoring import predict_files
from ser_batch.models.bundle import load_bundle
from ser_batch.pipeline.score import run_score

from conftest import speech_like, write_audio

RUN_KEYS = {"config", "bundle_id", "bundle_path", "started", "finished", "files_total", "files_scored",
            "files_skipped", "errors", "audio_s", "wall_s", "task_cpu_s", "peak_rss_mb", "realtime_factor"}
BAD = {
    "bad/empty.wav": "empty file",
    "bad/notes.wav": "not an audio file",
    "bad/header_only.wav": "",
    "bad/nan.wav": "NaN",
    "bad/dangling.wav": "broken link",
}


def _archive(root: Path) -> Path:
    write_audio(root / "calls/a.flac", duration_s=6.0, seed=1)
    write_audio(root / "calls/b_ulaw.wav", duration_s=4.0, sample_rate=8000, subtype="ULAW", seed=2)
    left = speech_like(sample_rate=16_000, duration_s=5.0, f0_hz=120, seed=3)
    right = speech_like(sample_rate=16_000, duration_s=5.0, f0_hz=220, seed=4) * 0.3
    sf.write(root / "stereo.wav", np.stack([left, right], axis=1), 16_000)
    (root / "bad").mkdir()
    (root / "bad/empty.wav").write_bytes(b"")
    (root / "bad/notes.wav").write_text("not audio\n" * 50)
    full = (root / "calls/a.flac").read_bytes()
    sf.write(root / "bad/header_only.wav", np.zeros(16000, dtype=np.int16), 16_000, subtype="PCM_16")
    (root / "bad/header_only.wav").write_bytes((root / "bad/header_only.wav").read_bytes()[:44] if full else b"")
    sf.write(root / "bad/nan.wav", np.full(8000, np.nan, dtype=np.float32), 16_000, subtype="FLOAT")
    os.symlink(root / "gone.wav", root / "bad/dangling.wav")
    return root


def _tables(out: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    return (pd.read_parquet(out / "files"), pd.read_parquet(out / "segments"),
            json.loads((out / "_run.json").read_text()))


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory, ray_session: None) -> tuple[Path, Path]:
    archive = _archive(tmp_path_factory.mktemp("archive"))
    out = tmp_path_factory.mktemp("scores") / "out"
    summary = run_score(archive, out, config=load_config(), progress=False)
    assert summary.files_scored == 3 + len(BAD)
    return archive, out


def test_tables_rows_and_run_record(scored: tuple[Path, Path]) -> None:
    archive, out = scored
    files, segments, run = _tables(out)
    classes = load_bundle().classes
    assert RUN_KEYS <= set(run) and run["files_total"] == run["files_scored"] == 8 and run["errors"] == len(BAD)
    assert run["audio_s"] == pytest.approx(15.0, abs=0.1) and run["task_cpu_s"] > 0 and run["peak_rss_mb"] > 50
    assert sorted(files.path) == sorted(["calls/a.flac", "calls/b_ulaw.wav", "stereo.wav", *BAD])
    for path, reason in BAD.items():
        row = files[files.path == path].iloc[0]
        assert reason in row.error and pd.isna(row.label) and pd.isna(row.duration_s)
    good = files[files.error.isna()].set_index("path")
    assert good.channel.isna().all()  # channels mixed down
    assert good.loc["calls/b_ulaw.wav", "sample_rate_in"] == 8000 and good.loc["stereo.wav", "channels_in"] == 2
    assert (good.n_segments == segments.groupby("path").size().reindex(good.index)).all()
    assert set(good.label) <= set(classes)
    p_columns = [schema.proba_column(c) for c in classes]
    np.testing.assert_allclose(segments[p_columns].sum(axis=1), 1.0, atol=1e-4)
    assert (segments.end_s > segments.start_s).all() and segments.speech_ratio.between(0, 1).all()
    assert (segments.label.isna() == (segments.speech_ratio < load_config().score.min_speech_ratio)).all()
    # A file's probabilities are the mean of its windows with speech.
    a = segments[(segments.path == "calls/a.flac") & segments.label.notna()]
    np.testing.assert_allclose(good.loc["calls/a.flac", p_columns].astype(float), a[p_columns].mean(), atol=1e-5)
    meta = score_folder.read_table(out, score_folder.FILES_DIR).schema.metadata
    assert json.loads(meta[schema.META_CLASSES]) == classes
    assert int(meta[schema.META_SCHEMA_VERSION]) == schema.SCHEMA_VERSION


def test_duckdb_reads_the_tables(scored: tuple[Path, Path]) -> None:
    duckdb = pytest.importorskip("duckdb")
    _, out = scored
    count = duckdb.sql(f"select count(*) from read_parquet('{out}/files/*.parquet')").fetchall()[0][0]
    assert count == 8


def test_rerun_scores_nothing_and_a_new_file_is_the_only_work(scored: tuple[Path, Path], tmp_path: Path) -> None:
    archive, out = scored
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    files, segments, _ = _tables(copy)
    again = run_score(archive, copy, config=load_config(), progress=False)
    assert (again.files_scored, again.files_skipped) == (0, 8)
    files2, segments2, run = _tables(copy)
    assert len(files2) == len(files) and len(segments2) == len(segments) and run["files_scored"] == 0
    new_archive = tmp_path / "archive"
    shutil.copytree(archive, new_archive, symlinks=True)
    # As if the copy of OUT had been made from the copy of the archive (its recorded input root).
    record = json.loads((copy / "_score.json").read_text())
    (copy / "_score.json").write_text(json.dumps(dict(record, input_root=str(new_archive.resolve()))))
    write_audio(new_archive / "calls/late.wav", duration_s=2.0, seed=9)
    later = run_score(new_archive, copy, config=load_config(), progress=False)
    assert (later.files_scored, later.files_skipped) == (1, 8)
    files3, _, _ = _tables(copy)
    assert len(files3) == 9 and not files3.path.duplicated().any()
    # A file that changed is scored again and its old rows are replaced.
    write_audio(new_archive / "calls/a.flac", duration_s=3.0, seed=11)
    os.utime(new_archive / "calls/a.flac", (1e9, 1e9))
    changed = run_score(new_archive, copy, config=load_config(), progress=False)
    files4, segments4, _ = _tables(copy)
    assert changed.files_scored == 1 and len(files4) == 9 and not files4.path.duplicated().any()
    assert files4.set_index("path").loc["calls/a.flac", "duration_s"] == pytest.approx(3.0)
    assert segments4[segments4.path == "calls/a.flac"].end_s.max() <= 3.1


def test_interrupted_run_leaves_nothing_that_duplicates(scored: tuple[Path, Path], tmp_path: Path) -> None:
    """A run killed between a task's segments part and its files part: the next run removes the
    orphan segments and scores those files again."""
    archive, out = scored
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    files_part = next((copy / "files").glob("part-*.parquet"))
    lost = set(pd.read_parquet(files_part).path)
    files_part.unlink()
    (copy / "segments" / ".part-x.parquet.tmp-1234").write_bytes(b"half a file")
    again = run_score(archive, copy, config=load_config(), progress=False)
    assert again.files_scored == len(lost)
    files, segments, _ = _tables(copy)
    assert len(files) == 8 and not files.path.duplicated().any()
    assert not segments.duplicated(["path", "channel", "start_s"]).any()
    assert not list((copy / "segments").glob(".part-*"))


def test_other_settings_are_refused_unless_rescore(scored: tuple[Path, Path], tmp_path: Path) -> None:
    archive, out = scored
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    split = load_config(overrides=["score.channels='split'"])
    with pytest.raises(DatasetError, match="another bundle or other settings.*--rescore"):
        run_score(archive, copy, config=split, progress=False)
    summary = run_score(archive, copy, config=split, rescore=True, progress=False)
    assert summary.files_scored == 8
    files, segments, _ = _tables(copy)
    stereo = files[files.path == "stereo.wav"].sort_values("channel")
    assert stereo.channel.tolist() == [0, 1] and (stereo.channels_in == 2).all()
    assert sorted(segments[segments.path == "stereo.wav"].channel.unique()) == [0, 1]
    mono = files[files.path == "calls/a.flac"]
    assert mono.channel.tolist() == [0]


def test_split_channels_score_each_channel_as_its_own_file(scored: tuple[Path, Path], tmp_path: Path) -> None:
    archive, _ = scored
    data, rate = sf.read(archive / "stereo.wav", dtype="float32")
    sf.write(tmp_path / "right.wav", data[:, 1], rate, subtype="FLOAT")
    bundle = load_bundle()
    alone = predict_files([tmp_path / "right.wav"], bundle=bundle)[0]["predictions"]["both"]["probabilities"]
    out = tmp_path / "out"
    listing = tmp_path / "list.txt"
    listing.write_text(f"# one stereo call\n{archive / 'stereo.wav'}\n\n")
    run_score(listing, out, config=load_config(overrides=["score.channels='split'"]), progress=False)
    files = pd.read_parquet(out / "files")
    right = files[files.channel == 1].iloc[0]
    assert right.path == str(archive / "stereo.wav")
    for c, p in alone.items():
        assert right[schema.proba_column(c)] == pytest.approx(p, abs=2e-4)


def test_long_files_cut_into_ranges_equal_scoring_whole(ray_session: None, tmp_path: Path) -> None:
    archive = tmp_path / "long"
    y = np.concatenate([speech_like(sample_rate=16_000, duration_s=9.0, seed=s, f0_hz=100 + 30 * s)
                        for s in range(5)])
    archive.mkdir()
    sf.write(archive / "call.wav", y, 16_000, subtype="FLOAT")
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    run_score(archive, whole, config=load_config(), progress=False)
    summary = run_score(archive, cut, config=load_config(overrides=["score.chunk_s=8.0"]), progress=False)
    assert summary.files_scored == 1 and len(list((cut / "segments").glob("part-*"))) >= 5
    a, b = pd.read_parquet(whole / "segments"), pd.read_parquet(cut / "segments").sort_values("start_s")
    assert len(a) == len(b)
    columns = [c for c in a.columns if c.startswith("p_")] + ["start_s", "end_s", "speech_ratio"]
    np.testing.assert_allclose(b[columns].to_numpy(float), a[columns].to_numpy(float), atol=2e-4)
    fa, fb = pd.read_parquet(whole / "files").iloc[0], pd.read_parquet(cut / "files").iloc[0]
    assert fa.label == fb.label and fa.n_segments == fb.n_segments and fa.speech_s == fb.speech_s
    np.testing.assert_allclose(fb[columns[:-3]].astype(float), fa[columns[:-3]].astype(float), atol=1e-4)
    run = json.loads((cut / "_run.json").read_text())
    assert run["audio_s"] == pytest.approx(45.0, abs=0.05)


def test_one_window_scored_equals_predict(ray_session: None, tmp_path: Path) -> None:
    write_audio(tmp_path / "in/short.wav", duration_s=1.2, seed=4)
    run_score(tmp_path / "in", tmp_path / "out", config=load_config(overrides=["score.min_speech_ratio=0.0"]),
              progress=False)
    segments = pd.read_parquet(tmp_path / "out/segments")
    assert len(segments) == 1
    predicted = predict_files([tmp_path / "in/short.wav"], bundle=load_bundle(),
                              config=load_config(overrides=["score.min_speech_ratio=0.0"]))[0]
    for c, p in predicted["predictions"]["both"]["probabilities"].items():
        assert segments[schema.proba_column(c)].iloc[0] == pytest.approx(p, abs=1e-4)


def test_cli_exit_codes_and_messages(scored: tuple[Path, Path], tmp_path: Path) -> None:
    archive, _ = scored
    runner = CliRunner()
    missing = runner.invoke(main, ["score", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 2 and f"Path '{tmp_path / 'nope'}' does not exist." in missing.output
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    unusable = runner.invoke(main, ["score", str(archive), "--out", str(blocker)])
    assert unusable.exit_code == 1 and "not a folder" in unusable.output
    bad_bundle = runner.invoke(main, ["score", str(archive), "--out", str(tmp_path / "o"), "--model", str(tmp_path)])
    assert bad_bundle.exit_code == 1 and "not a model bundle" in bad_bundle.output
    failing = runner.invoke(main, ["score", str(archive), "--out", str(tmp_path / "o2"), "--fail-on-error",
                                   "--no-progress"])
    assert failing.exit_code == 3
    assert "5 of 8 files failed" in failing.output and "  bad/dangling.wav: broken link" in failing.output
    assert "5 errors" in failing.output
    report = runner.invoke(main, ["report", str(tmp_path / "o2")])
    assert report.exit_code == 0
    page = (tmp_path / "o2" / "report.html").read_text()
    assert "<svg" in page and "bad/notes.wav" in page and "calls/a.flac" in page


@pytest.mark.slow
def test_a_worker_that_dies_on_a_file_fails_that_file_only(tmp_path: Path) -> None:
    """A native crash kills the worker on every try: that file gets the error, the rest is scored."""
    archive = tmp_path / "archive"
    for i in range(3):
        write_audio(archive / f"f{i}.wav", duration_s=1.5, seed=i)
    write_audio(archive / "poison.wav", duration_s=1.5, seed=7)
    env = dict(os.environ, **{FAULT_ENV: "poison"})
    result = subprocess.run([sys.executable, "-m", "ser_batch.cli", "score", str(archive), "--out",
                             str(tmp_path / "out"), "--num-cpus", "1", "--no-progress", "--set", "ray.max_retries=1"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    files = pd.read_parquet(tmp_path / "out/files").set_index("path")
    assert len(files) == 4 and files.loc["poison.wav", "error"].startswith("the worker scoring this file died")
    assert files.drop(index="poison.wav").error.isna().all()


def _session_pids(sid: int) -> list[int]:
    """Live processes of session ``sid`` (a driver started with ``start_new_session``)."""
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


@pytest.mark.slow
def test_a_killed_driver_completes_when_run_again(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    n_files = 24
    for i in range(n_files):  # a minute each, one task per file: the run lasts long enough to be killed
        write_audio(archive / f"f{i:02d}.wav", duration_s=60.0, seed=i)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "ser_batch.cli", "score", str(archive), "--out", str(out), "--num-cpus", "1",
               "--no-progress", "--set", "score.shard_s=30"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list((out / "files").glob("part-*")):
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    # Ray's workers run in process groups of their own: end them too, or one commits a part
    # after `done_before` is counted.
    for pid in _session_pids(process.pid):
        os.kill(pid, signal.SIGKILL)
    done_before = len(pd.read_parquet(out / "files")) if list((out / "files").glob("part-*")) else 0
    assert 0 < done_before < n_files
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    files, segments = pd.read_parquet(out / "files"), pd.read_parquet(out / "segments")
    assert len(files) == n_files and not files.path.duplicated().any()
    assert not segments.duplicated(["path", "start_s"]).any()
    assert f"({done_before} already done)" in result.stdout


def test_predict_on_a_folder_points_to_score(tmp_path: Path) -> None:
    write_audio(tmp_path / "calls/a.wav", duration_s=1.0)
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "calls")])
    assert result.exit_code == 2
    assert "is a folder; predict takes audio files" in result.output
    assert f"ser-batch score {tmp_path / 'calls'} --out output/scores" in result.output


def _no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any start (or join) of the Ray runtime, and any task, fail the test."""
    from ser_batch.cluster import runtime

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray was started")

    monkeypatch.setattr(runtime, "ray_runtime", refuse)
    monkeypatch.setattr(runtime, "map_tasks", refuse)


def _foreign_folders(root: Path) -> dict[str, Path]:
    """Folders that are not score folders: notes and audio, an extract output, a model bundle."""
    notes = root / "notes"
    write_audio(notes / "call.wav", duration_s=1.0, seed=5)
    (notes / "todo.txt").write_text("listen to the calls\n")
    extract = root / "features"
    (extract / "part-0123abcd.parquet").parent.mkdir(parents=True)
    pd.DataFrame({"path": ["a.wav"], "f0": [1.0]}).to_parquet(extract / "part-0123abcd.parquet")
    (extract / "_manifest.json").write_text("{}\n")
    (extract / "_config.toml").write_text("")
    bundle = root / "bundle"
    shutil.copytree(load_bundle(None).path, bundle)
    return {"notes": notes, "extract": extract, "bundle": bundle}


@pytest.mark.parametrize("kind", ["notes", "extract", "bundle"])
def test_score_refuses_a_folder_that_is_not_a_score_folder(kind: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Scoring into notes, an extract output or a bundle is refused in one line, before Ray
    starts and before anything is written, --rescore or not."""
    archive = tmp_path / "archive"
    write_audio(archive / "a.wav", duration_s=2.0, seed=1)
    out = _foreign_folders(tmp_path)[kind]
    before = sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*"))
    _no_ray(monkeypatch)
    for extra in ([], ["--rescore"]):
        result = CliRunner().invoke(main, ["score", str(archive), "--out", str(out), "--no-progress", *extra])
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {out} is not empty and is not a score output folder")
        assert "(no _score.json; it holds " in lines[0] and "choose an empty or new --out" in lines[0]
    assert sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*")) == before


def test_score_into_an_empty_folder_or_one_a_killed_run_began(ray_session: None, tmp_path: Path) -> None:
    """An empty OUT and one holding only what score writes (a killed run's lock) are not foreign."""
    score_folder.refuse_foreign(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    score_folder.refuse_foreign(tmp_path / "empty")
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / ".lock").write_text("")
    (tmp_path / "killed" / ".lock.tmp-1234").write_text("")
    score_folder.refuse_foreign(tmp_path / "killed")
    (tmp_path / "killed" / "mine.txt").write_text("x")
    with pytest.raises(DatasetError, match="it holds mine.txt"):
        score_folder.refuse_foreign(tmp_path / "killed")


def test_a_rerun_with_nothing_to_do_does_not_start_ray(scored: tuple[Path, Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    archive, out = scored
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    _no_ray(monkeypatch)
    result = CliRunner().invoke(main, ["score", str(archive), "--out", str(copy), "--no-progress"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert f"nothing to do: all 8 of its files are already scored in {copy}" in lines
    assert lines[-1].startswith("0 files scored (8 already done), 0 errors")
    run = json.loads((copy / "_run.json").read_text())
    assert run["files_scored"] == 0 and run["files_skipped"] == 8 and run["last_work"]["files_scored"] == 8
    assert not (copy / ".lock").exists()
    # --fail-on-error counts the folder's error rows without Ray too.
    failing = CliRunner().invoke(main, ["score", str(archive), "--out", str(copy), "--no-progress", "--fail-on-error"])
    assert failing.exit_code == 3 and "error: 5 files in" in failing.output
    # A bad --out, other settings, and no audio answer without Ray too.
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    assert "not a folder" in CliRunner().invoke(main, ["score", str(archive), "--out", str(blocker)]).output
    other = CliRunner().invoke(main, ["score", str(archive), "--out", str(copy), "--channels", "split"])
    assert other.exit_code == 1 and "other settings" in other.output
    (tmp_path / "silent").mkdir()
    nothing = CliRunner().invoke(main, ["score", str(tmp_path / "silent"), "--out", str(tmp_path / "o")])
    assert nothing.exit_code == 1 and "no audio files" in nothing.output and not (tmp_path / "o").exists()


def test_normalize_file_says_how_many_streams_fell_back_and_progress_lines(
        ray_session: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream with too little speech to normalise is scored by the plain models: the summary
    counts both kinds (also in _run.json); shards move plain progress lines on a non-terminal."""
    from ser_batch.reports import progress

    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    archive = tmp_path / "archive"
    write_audio(archive / "short.wav", duration_s=2.0, seed=1)
    write_audio(archive / "long.wav", duration_s=9.0, seed=2)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["score", str(archive), "--out", str(out), "--normalize", "file",
                                       "--set", "score.min_normalize_s=4", "--set", "score.shard_files=1"])
    assert result.exit_code == 0, result.output
    files = pd.read_parquet(out / "files").set_index("path")
    assert files.loc["long.wav", "normalized"] and not files.loc["short.wav", "normalized"]
    assert ("--normalize file: 1 of 2 streams normalised; 1 with less than 4 s of speech (score.min_normalize_s) "
            "scored by the plain models") in result.output.splitlines()
    run = json.loads((out / "_run.json").read_text())
    assert (run["streams_normalized"], run["streams_not_normalized"]) == (1, 1)
    assert [line.split(",")[0] for line in result.output.splitlines() if line.startswith("score: ")] == \
        ["score: 1/2 files (50%)", "score: 2/2 files (100%)"]
    assert "\x1b" not in result.output


def _call_with_silences(rate: int) -> np.ndarray:
    """About 150 s of speech-like stretches with digital silence (exact zeros) between them, as a
    telephone call is between utterances."""
    parts = []
    for s in range(12):
        parts.append(speech_like(sample_rate=rate, duration_s=6.0 + s % 4, seed=s, f0_hz=110 + 17 * s))
        parts.append(np.zeros(int(rate * (1.3 + 0.7 * s)), dtype=np.float32))
    return np.concatenate(parts)


@pytest.mark.parametrize("rate", [8000, 16000])
def test_ranges_give_the_numbers_of_the_whole_file_at_every_rate(tmp_path: Path, rate: int) -> None:
    """Issue 25: a 20-minute 8 kHz call scored in ranges differed from the same call scored whole by up
    to 0.14 in probability (the resampler's rounding at a range's start turned silent frames into
    1e-8 noise); at 16 kHz it agreed. Every probability of every window and of the file, at several
    range lengths, to 1e-5."""
    from ser_batch.cluster.engine import Executor

    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in/call.wav", _call_with_silences(rate), rate, subtype="PCM_16")
    results = {}
    for chunk_s in (100_000, 10, 23, 61):
        out = tmp_path / f"out{chunk_s}"
        summary = run_score(tmp_path / "in", out, config=load_config(overrides=[f"score.chunk_s={chunk_s}"]),
                            progress=False, executor=Executor(in_process=True))
        assert summary.files_scored == 1 and not summary.errors
        assert summary.audio_s == pytest.approx(len(_call_with_silences(rate)) / rate, abs=1e-3)
        assert (len(list((out / "segments").glob("part-*"))) == 1) == (chunk_s == 100_000)
        results[chunk_s] = (pd.read_parquet(out / "segments").sort_values("start_s").reset_index(drop=True),
                            pd.read_parquet(out / "files").iloc[0])
    whole, whole_file = results.pop(100_000)
    probabilities = [c for c in whole.columns if c.startswith("p_")]
    for chunk_s, (cut, cut_file) in results.items():
        assert len(cut) == len(whole) and np.array_equal(cut.start_s, whole.start_s)
        np.testing.assert_array_equal(cut.speech_ratio, whole.speech_ratio)
        np.testing.assert_allclose(cut[probabilities].to_numpy(float), whole[probabilities].to_numpy(float),
                                   atol=1e-5, rtol=0, err_msg=f"chunk_s={chunk_s}")
        assert (cut.label.fillna("") == whole.label.fillna("")).all()
        assert cut_file.n_segments == whole_file.n_segments and cut_file.speech_s == whole_file.speech_s
        np.testing.assert_allclose(cut_file[probabilities].astype(float), whole_file[probabilities].astype(float),
                                   atol=1e-5, rtol=0)


def test_a_long_file_that_fails_in_a_later_range_adds_no_audio_to_the_summary(tmp_path: Path) -> None:
    """A file cut into ranges whose later range fails (a FLAC cut short: its first 20 s decode) gets
    its error row, and none of the seconds its good ranges scored count as audio scored."""
    from ser_batch.cluster.engine import Executor

    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in/cut.flac", _call_with_silences(8000)[: 40 * 8000], 8000)
    blob = (tmp_path / "in/cut.flac").read_bytes()
    (tmp_path / "in/cut.flac").write_bytes(blob[: int(len(blob) * 0.6)])
    write_audio(tmp_path / "in/good.wav", duration_s=3.0)
    out = tmp_path / "out"
    summary = run_score(tmp_path / "in", out, config=load_config(overrides=["score.chunk_s=10"]), progress=False,
                        executor=Executor(in_process=True))
    assert summary.errors == [("cut.flac", "truncated or corrupt audio data")]
    assert summary.audio_s == pytest.approx(3.0, abs=1e-3)
    assert "0.00 h of audio" in summary.line()
    files, segments, run = _tables(out)
    assert run["audio_s"] == pytest.approx(3.0, abs=1e-3)
    assert set(segments.path) == {"good.wav"} and files.set_index("path").loc["cut.flac"].error is not None

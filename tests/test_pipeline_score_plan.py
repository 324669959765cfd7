"""Planning a scoring run (ser_batch/pipeline/score_plan.py): once, read only, from one listing of the
input, one read of OUT and one probe per file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ser_batch.config import load_config
from ser_batch.data import score_folder, score_root
from ser_batch.pipeline import score_plan
from ser_batch.pipeline.score import run_score
from ser_batch.pipeline.score_plan import list_input, plan_score

from conftest import write_audio

CONFIG = load_config()
#: The grid long files are cut on: the default bundle's features at its rate.
GRID = {"features": CONFIG.features, "sample_rate": CONFIG.audio.sample_rate}


def _archive(root: Path) -> Path:
    for name, seconds in (("a.wav", 2.0), ("b.wav", 2.0), ("long.wav", 9.0)):
        write_audio(root / name, duration_s=seconds, seed=len(name))
    (root / "bad.wav").write_text("not audio")
    return root


def _snapshot(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns) for p in folder.rglob("*"))


def test_a_new_folder_plans_every_file_and_cuts_the_long_one(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "in")
    entries = list_input(archive, extensions=CONFIG.audio.extensions)
    config = CONFIG.replace(score={"chunk_s": 4.0})
    plan = plan_score(entries, score_folder.Committed(), config=config, settings_key="k", **GRID,
                      scope=score_root.Scope(archive.resolve()))
    units = [u for s in plan.shards for u in s.units]
    assert plan.files == plan.files_total == 4 and plan.files_skipped == 0 and not plan.changed
    assert sorted({u.path for u in units}) == ["a.wav", "b.wav", "bad.wav", "long.wav"]
    chunks = sorted((u for u in units if u.path == "long.wav"), key=lambda u: u.chunk)
    assert [u.chunk for u in chunks] == [0, 1] and chunks[0].windows == (0, 8) and chunks[1].windows == (8, None)
    # The driver's probe travels with each unit; a file it could not read has none (its task says why).
    assert all(u.info is not None and u.info.duration_s == pytest.approx(u.duration_s if u.chunk < 0 else 9.0)
               for u in units if u.path != "bad.wav")
    assert next(u for u in units if u.path == "bad.wav").info is None
    # Shard keys depend on what they hold, not on the plan: planning again names them alike.
    again = plan_score(entries, score_folder.Committed(), config=config, settings_key="k", **GRID,
                       scope=score_root.Scope(archive.resolve()))
    assert [s.key for s in again.shards] == [s.key for s in plan.shards]
    other = plan_score(entries, score_folder.Committed(), config=config, settings_key="other", **GRID,
                       scope=score_root.Scope(archive.resolve()))
    assert not {s.key for s in other.shards} & {s.key for s in plan.shards}


def test_the_plan_of_a_scored_folder_reads_it_once_and_writes_nothing(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "in")
    out = tmp_path / "out"
    run_score(archive, out, config=CONFIG, progress=False, executor=_in_process())
    write_audio(archive / "a.wav", duration_s=3.0, seed=7)  # changed since it was scored
    os.utime(archive / "a.wav", (1e9, 1e9))
    write_audio(archive / "new.wav", duration_s=2.0, seed=8)
    (archive / "b.wav").unlink()  # gone
    committed = score_folder.read_committed(out)
    before = _snapshot(out)
    entries = list_input(archive, extensions=CONFIG.audio.extensions)
    for retry, prune in ((False, False), (True, True)):
        plan = plan_score(entries, committed, config=CONFIG, settings_key="k", **GRID,
                          scope=score_root.Scope(archive.resolve()),
                          retry_errors=retry, prune=prune)
        planned = {u.path for s in plan.shards for u in s.units}
        assert planned == {"a.wav", "new.wav", *(["bad.wav"] if retry else [])}
        assert plan.files_skipped == (1 if retry else 2) and plan.failed_skipped == (0 if retry else 1)
        assert plan.retried == (1 if retry else 0) and plan.gone == {"b.wav"} and plan.pruned == (1 if prune else 0)
        assert plan.changed == {"a.wav", *(["bad.wav", "b.wav"] if retry else [])}
    assert _snapshot(out) == before


def test_a_run_lists_its_input_reads_out_and_probes_each_file_once(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver lists INPUT once, reads OUT once, and probes each file once; the probe travels to
    the worker, which does not probe again (in process, so every call is seen here)."""
    from ser_batch.audio import decode
    from ser_batch.inference import scoring

    archive = _archive(tmp_path / "in")
    out = tmp_path / "out"
    run_score(archive, out, config=CONFIG, progress=False, executor=_in_process())
    write_audio(archive / "c.wav", duration_s=2.0, seed=9)
    calls: dict[str, list[str]] = {"list": [], "read": [], "probe": []}

    def counted(name: str, function):  # noqa: ANN001, ANN202
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            calls[name].append(str(args[0]))
            return function(*args, **kwargs)
        return wrapper

    monkeypatch.setattr("ser_batch.pipeline.score.list_input", counted("list", score_plan.list_input))
    monkeypatch.setattr(score_folder, "read_committed", counted("read", score_folder.read_committed))
    monkeypatch.setattr(decode, "probe_audio", counted("probe", decode.probe_audio))
    monkeypatch.setattr(scoring, "probe_audio", counted("probe", scoring.probe_audio))
    summary = run_score(archive, out, config=CONFIG, progress=False, executor=_in_process())
    assert summary.files_scored == 1 and summary.files_skipped == 4
    assert len(calls["list"]) == 1 and len(calls["read"]) == 1
    assert calls["probe"] == [str(archive / "c.wav")]


def _in_process():  # noqa: ANN202
    from ser_batch.cluster.engine import Executor

    return Executor(in_process=True)


# ----------------------------------------------------------------- long files cut into ranges


def _check_ranges(ranges: list[tuple[int, int | None]], n_samples: int) -> None:
    """Ranges of a stream of ``n_samples`` samples: from window 0 to the end, one after the other,
    each starting at a window the stream has and at a sample inside the file."""
    from ser_batch.features.windows import WindowGrid, first_sample_needed, n_frames_of

    features, rate = CONFIG.features, CONFIG.audio.sample_rate
    total = WindowGrid.of(features, rate).n_windows(n_frames_of(n_samples, features.hop_length))
    assert ranges[0][0] == 0 and ranges[-1][1] is None
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(ranges, ranges[1:]))
    assert ranges[-1][0] < total, f"a range starts at window {ranges[-1][0]} of {total} ({n_samples} samples)"
    assert first_sample_needed(ranges[-1][0], config=features, sample_rate=rate) < n_samples


@pytest.mark.parametrize(("chunk_s", "longest_s"), [(600.0, 24 * 3600), (10.0, 2 * 3600), (37.0, 2 * 3600)])
def test_every_length_to_24_hours_is_cut_into_ranges_inside_the_file(chunk_s: float, longest_s: int) -> None:
    """Issue 25: ranges were planned on a 0.5 s hop where the windows' is 0.512 s, so on long files
    the last range started past the end (8, 10 and 12 h files failed, every length past 10.6 h). Every
    whole second from 1 s to 24 h (2 h for short ranges), and lengths that are not whole samples of
    the grid."""
    from ser_batch.features.windows import WindowGrid, n_frames_of, window_ranges

    features, rate = CONFIG.features, CONFIG.audio.sample_rate
    grid = WindowGrid.of(features, rate)
    for seconds in range(1, longest_s + 1):
        n = seconds * rate
        ranges = window_ranges(n, config=features, sample_rate=rate, range_s=chunk_s)
        if seconds % 997 == 0 or seconds < 200:  # everything on a sample, where the last one starts on all
            _check_ranges(ranges, n)
        total = grid.n_windows(n_frames_of(n, features.hop_length))
        assert ranges[-1][0] < total, f"{seconds} s: a range starts at window {ranges[-1][0]} of {total}"
    for n in np.random.default_rng(0).integers(rate, longest_s * rate, 2000):
        _check_ranges(window_ranges(int(n), config=features, sample_rate=rate, range_s=chunk_s), int(n))


@pytest.mark.parametrize(("native_rate", "hours", "chunk_s"),
                         [(8000, 3.9, 600.0), (8000, 8.0, 600.0), (8000, 10.0, 600.0), (8000, 10.6, 600.0),
                          (8000, 12.0, 600.0), (8000, 24.0, 600.0), (8000, 20.5 / 60, 10.0), (16000, 20 / 60, 10.0),
                          (44100, 10.0, 600.0), (11025, 7.3, 1234.0)])
def test_the_planner_cuts_the_lengths_that_failed_into_chunks_inside_the_file(native_rate: int, hours: float,
                                                                               chunk_s: float) -> None:
    """The lengths the red team's files had: each chunk starts at a window of the file and they add
    up to its duration (what the summary counts)."""
    from ser_batch.audio.decode import AudioInfo

    frames = round(hours * 3600 * native_rate)
    info = AudioInfo(native_rate, 1, frames, frames / native_rate, "WAV", "PCM_16")
    units = score_plan.cut_units("call.wav", Path("/calls/call.wav"), 1, 1.0, info,
                                 config=CONFIG.replace(score={"chunk_s": chunk_s}), **GRID)
    assert len(units) > 1 and [u.chunk for u in units] == list(range(len(units)))
    _check_ranges([u.windows for u in units], info.samples_at(CONFIG.audio.sample_rate))
    assert sum(u.duration_s for u in units) == pytest.approx(info.duration_s)
    assert all(u.duration_s > 0 for u in units)

"""Planning a scoring run (ser_batch/pipeline/score_plan.py): once, read only, from one listing of the
input, one read of OUT and one probe per file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ser_batch.config import load_config
from ser_batch.data import score_folder
from ser_batch.pipeline import score_plan
from ser_batch.pipeline.score import run_score
from ser_batch.pipeline.score_plan import list_input, plan_score

from conftest import write_audio

CONFIG = load_config()


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
    plan = plan_score(archive, entries, score_folder.Committed(), config=config, settings_key="k", hop_s=0.5)
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
    again = plan_score(archive, entries, score_folder.Committed(), config=config, settings_key="k", hop_s=0.5)
    assert [s.key for s in again.shards] == [s.key for s in plan.shards]
    other = plan_score(archive, entries, score_folder.Committed(), config=config, settings_key="other", hop_s=0.5)
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
        plan = plan_score(archive, entries, committed, config=CONFIG, settings_key="k", hop_s=0.5,
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
    shutil.copytree(archive, tmp_path / "first")
    run_score(tmp_path / "first", out, config=CONFIG, progress=False, executor=_in_process())
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
    assert summary.files_scored == 1 and summary.files_skipped == 4  # first's rows are other paths: kept
    assert len(calls["list"]) == 1 and len(calls["read"]) == 1
    assert calls["probe"] == [str(archive / "c.wav")]


def _in_process():  # noqa: ANN202
    from ser_batch.cluster.engine import Executor

    return Executor(in_process=True)

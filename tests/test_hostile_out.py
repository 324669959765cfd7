"""Symbolic links inside an output folder (issue 16, point 2): nothing ser-batch writes, renames or
deletes may leave OUT, so a link where a job or ``report`` writes is refused before anything is touched.

Each test builds its own hostile OUT: a link at one of the names ser-batch manages, pointing to a
"victim" folder or file of somebody else, which must be left exactly as it was.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ser_batch.cli import main
from ser_batch.cluster import output
from ser_batch.cluster.engine import Executor
from ser_batch.data.parts import refuse_links
from ser_batch.errors import DatasetError

from conftest import write_audio

#: Every name ser-batch writes in an OUT, and whether it is a folder.
MANAGED = [("files", True), ("segments", True), ("report.html", False), ("_run.json", False),
           ("_score.json", False), (".lock", False), ("part-00000-0123456789ab.parquet", False),
           ("_manifest.json", False), ("_config.toml", False)]


def _victim(tmp_path: Path, is_dir: bool) -> Path:
    """Somebody else's folder (with a part in it) or file."""
    if is_dir:
        victim = tmp_path / "victim"
        victim.mkdir()
        (victim / "part-00000-keep.parquet").write_bytes(b"not yours")
        return victim
    victim = tmp_path / "victim.txt"
    victim.write_text("not yours\n")
    return victim


def _untouched(victim: Path) -> bool:
    if victim.is_dir():
        return [(p.name, p.read_bytes()) for p in victim.iterdir()] == [("part-00000-keep.parquet", b"not yours")]
    return victim.read_text() == "not yours\n"


def _assert_one_line(result: Result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(("name", "is_dir"), MANAGED)
def test_a_link_at_any_managed_name_is_refused(tmp_path: Path, name: str, is_dir: bool) -> None:
    out = tmp_path / "out"
    out.mkdir()
    victim = _victim(tmp_path, is_dir)
    (out / name).symlink_to(victim, target_is_directory=is_dir)
    with pytest.raises(DatasetError, match=rf"{out / name} is a symbolic link \(to {victim}\); ser-batch writes"):
        refuse_links(out)
    assert _untouched(victim)


@pytest.mark.parametrize("table", ["files", "segments"])
def test_a_link_inside_the_tables_is_refused(tmp_path: Path, table: str) -> None:
    out = tmp_path / "out"
    (out / table).mkdir(parents=True)
    victim = _victim(tmp_path, False)
    (out / table / "part-0123456789ab.parquet").symlink_to(victim)
    with pytest.raises(DatasetError, match=rf"{out / table / 'part-0123456789ab.parquet'} is a symbolic link"):
        refuse_links(out)


def test_out_itself_may_be_a_link_and_other_links_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / "disk").mkdir()
    (tmp_path / "out").symlink_to(tmp_path / "disk", target_is_directory=True)
    victim = _victim(tmp_path, False)
    (tmp_path / "disk" / "notes.txt").symlink_to(victim)  # not a name ser-batch touches
    assert refuse_links(tmp_path / "out") is None and refuse_links(tmp_path / "nothing-yet") is None
    # A whole run into that OUT writes through the link OUT itself, and leaves the other one be.
    write_audio(tmp_path / "in" / "a.wav", duration_s=0.5, seed=1)
    result = CliRunner().invoke(main, ["extract", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                                       "--no-progress", "--in-process"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out").is_symlink() and list((tmp_path / "disk").glob("part-*.parquet"))
    assert (tmp_path / "disk" / "notes.txt").is_symlink() and (tmp_path / "disk" / "notes.txt").resolve() == victim
    assert _untouched(victim)


@pytest.mark.parametrize("name", [".lock", "segments", "_run.json"])
def test_job_output_refuses_before_the_runtime_and_the_lock(tmp_path: Path, name: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The one place every job (extract, train, score) goes through, before any runtime starts."""
    out = tmp_path / "out"
    out.mkdir()
    victim = _victim(tmp_path, name == "segments")
    (out / name).symlink_to(victim)
    monkeypatch.setattr(Executor, "start", lambda self: pytest.fail("the runtime was started"))
    with pytest.raises(DatasetError, match="is a symbolic link"), output.job_output(out, job="train"):
        pytest.fail("the job ran")
    assert sorted(p.name for p in out.iterdir()) == [name] and _untouched(victim)


@pytest.fixture(scope="module")
def scored_out(tmp_path_factory: pytest.TempPathFactory, ray_session: None) -> tuple[Path, Path]:
    """An archive of two short files and the OUT of its score run (with a report)."""
    archive = tmp_path_factory.mktemp("archive")
    write_audio(archive / "a.wav", duration_s=2.0, seed=1)
    write_audio(archive / "b.wav", duration_s=2.0, seed=2)
    out = tmp_path_factory.mktemp("scores") / "out"
    result = CliRunner().invoke(main, ["score", str(archive), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert CliRunner().invoke(main, ["report", str(out)]).exit_code == 0
    return archive, out


@pytest.mark.parametrize(("name", "is_dir"), [("segments", True), ("files", True), ("_run.json", False),
                                              ("_score.json", False), (".lock", False)])
def test_score_refuses_a_link_in_out_and_leaves_its_target(scored_out: tuple[Path, Path], tmp_path: Path,
                                                           name: str, is_dir: bool) -> None:
    archive, scored = scored_out
    out = tmp_path / "out"
    shutil.copytree(scored, out, symlinks=True)
    victim = _victim(tmp_path, is_dir)
    if (out / name).is_dir():
        shutil.rmtree(out / name)
    else:
        (out / name).unlink(missing_ok=True)
    (out / name).symlink_to(victim, target_is_directory=is_dir)
    write_audio(tmp_path / "in" / "new.wav", duration_s=2.0, seed=3)  # new work for the re-run
    shutil.copytree(archive, tmp_path / "in", dirs_exist_ok=True)
    before = sorted(p.name for p in out.iterdir())
    result = CliRunner().invoke(main, ["score", str(tmp_path / "in"), "--out", str(out), "--no-progress"])
    _assert_one_line(result, f"{out / name} is a symbolic link (to {victim})")
    assert _untouched(victim) and sorted(p.name for p in out.iterdir()) == before
    rescore = CliRunner().invoke(main, ["score", str(tmp_path / "in"), "--out", str(out), "--no-progress",
                                        "--rescore"])
    _assert_one_line(rescore, "is a symbolic link")
    assert _untouched(victim)


def test_report_does_not_write_through_a_link(scored_out: tuple[Path, Path], tmp_path: Path) -> None:
    _, scored = scored_out
    out = tmp_path / "out"
    shutil.copytree(scored, out, symlinks=True)
    victim = _victim(tmp_path, False)
    (out / "report.html").unlink()
    (out / "report.html").symlink_to(victim)
    _assert_one_line(CliRunner().invoke(main, ["report", str(out)]), f"{out / 'report.html'} is a symbolic link")
    assert _untouched(victim) and (out / "report.html").is_symlink()


def test_extract_and_train_refuse_a_link_in_out(ray_session: None, tmp_path: Path) -> None:
    write_audio(tmp_path / "in" / "Actor_01" / "03-01-01-01-01-01-01.wav", duration_s=0.5, seed=1)
    write_audio(tmp_path / "in" / "Actor_02" / "03-01-05-01-01-01-02.wav", duration_s=0.5, seed=2)
    feats = tmp_path / "feats"
    assert CliRunner().invoke(main, ["extract", str(tmp_path / "in"), "--out", str(feats),
                                     "--no-progress"]).exit_code == 0
    part = next(feats.glob("part-*.parquet"))
    victim = tmp_path / "victim.parquet"
    part.rename(victim)
    part.symlink_to(victim)
    kept = victim.read_bytes()
    for options in (["--resume"], ["--overwrite"]):
        result = CliRunner().invoke(main, ["extract", str(tmp_path / "in"), "--out", str(feats), "--no-progress",
                                           "--set", "extract.shard_size=1", *options])
        _assert_one_line(result, f"{part} is a symbolic link (to {victim})")
        assert victim.read_bytes() == kept and part.is_symlink()

    part.unlink()
    victim.rename(part)
    model = tmp_path / "model"
    model.mkdir()
    (model / ".lock").symlink_to(_victim(tmp_path, False))
    result = CliRunner().invoke(main, ["train", str(feats), "--out", str(model), "--split", "none",
                                       "--overwrite"])
    _assert_one_line(result, f"{model / '.lock'} is a symbolic link")
    assert _untouched(tmp_path / "victim.txt") and sorted(p.name for p in model.iterdir()) == [".lock"]


@pytest.mark.parametrize("name", ["features", "scores", "calls"])
def test_the_demo_refuses_a_link_among_its_folders(tmp_path: Path, name: str) -> None:
    write_audio(tmp_path / "in" / "a.wav", duration_s=0.5)
    out = tmp_path / "out"
    out.mkdir()
    victim = _victim(tmp_path, True)
    (out / name).symlink_to(victim, target_is_directory=True)
    result = CliRunner().invoke(main, ["demo", "--input", str(tmp_path / "in"), "--out", str(out)])
    _assert_one_line(result, f"{out / name} is a symbolic link (to {victim})")
    assert _untouched(victim) and sorted(p.name for p in out.iterdir()) == [name]


# ------------------------------------------------- another run into the same OUT (issue 25)


def _tables_in(out: Path) -> set[str]:
    """Which jobs' tables ``out`` holds: "features" (extract's parts), "scores" (files/, segments/)."""
    held = set()
    if list(out.glob("part-*.parquet")) or (out / "_manifest.json").exists():
        held.add("features")
    if (out / "files").exists() or (out / "segments").exists() or (out / "_score.json").exists():
        held.add("scores")
    return held


def test_extract_into_a_score_folder_is_refused(tmp_path: Path) -> None:
    write_audio(tmp_path / "in/a.wav", duration_s=1.5)
    out = tmp_path / "out"
    runner = CliRunner()
    assert runner.invoke(main, ["score", str(tmp_path / "in"), "--out", str(out), "--in-process"]).exit_code == 0
    before = sorted(p.name for p in out.rglob("*"))
    result = runner.invoke(main, ["extract", str(tmp_path / "in"), "--out", str(out), "--in-process", "--overwrite"])
    assert result.exit_code == 1 and result.output == (
        f"error: {out} is a score output folder (it holds _score.json, files, segments, _run.json); extract writes "
        "its feature parts into a folder of their own: choose an empty or new --out\n")
    assert sorted(p.name for p in out.rglob("*")) == before


def test_what_out_holds_is_checked_again_once_it_is_locked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 25: score checked OUT before Ray started (10-15 s) and not again, so an extract into the
    same new OUT in between ended with three tables in one folder. An extract that finishes between
    score's first look and its lock: score loses, in one line, and OUT holds the features alone; and
    the other way round."""
    from ser_batch.config import load_config
    from ser_batch.pipeline import extract, score

    write_audio(tmp_path / "in/a.wav", duration_s=1.5)
    real_job_output = output.job_output

    def racing(other):  # noqa: ANN001, ANN202 - another run gets in just before this one locks OUT
        raced = []

        def job_output(out: Path, *, job: str):  # noqa: ANN202
            if not raced:  # (the other run's own lock is the real one)
                raced.append(job)
                other(out)
            return real_job_output(out, job=job)
        return job_output

    config, in_process = load_config(), Executor(in_process=True)
    out = tmp_path / "first"
    monkeypatch.setattr(output, "job_output", racing(
        lambda out: extract.run_extract(tmp_path / "in", out, config=config, executor=in_process, progress=False)))
    with pytest.raises(DatasetError, match=f"^{out} is not empty and is not a score output folder"):
        score.run_score(tmp_path / "in", out, config=config, executor=in_process, progress=False)
    assert _tables_in(out) == {"features"}
    monkeypatch.undo()
    out = tmp_path / "second"
    monkeypatch.setattr(output, "job_output", racing(
        lambda out: score.run_score(tmp_path / "in", out, config=config, executor=in_process, progress=False)))
    with pytest.raises(DatasetError, match=f"^{out} is a score output folder"):
        extract.run_extract(tmp_path / "in", out, config=config, executor=in_process, progress=False)
    assert _tables_in(out) == {"scores"}


def test_score_and_extract_started_together_into_a_new_out_one_loses_cleanly(tmp_path: Path) -> None:
    """The two commands at once, as processes: whichever order they meet in, one succeeds, the other
    ends with one error line, and OUT holds one job's tables."""
    import subprocess
    import sys

    for i in range(3):
        write_audio(tmp_path / f"in/c{i}.wav", duration_s=1.5, seed=i)
    out = tmp_path / "out"
    commands = [[sys.executable, "-m", "ser_batch.cli", job, str(tmp_path / "in"), "--out", str(out), "--in-process",
                 "--no-progress"] for job in ("score", "extract")]
    processes = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    results = [(p.wait(timeout=300), *p.communicate()) for p in processes]
    assert sorted(code for code, _, _ in results) == [0, 1], results
    _, _, stderr = next(r for r in results if r[0] == 1)
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    assert len(_tables_in(out)) == 1

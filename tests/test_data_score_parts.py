"""Damaged and foreign parts of a score folder (ser_batch/data/score_parts.py, issue 25): every part
`score` and `report` read is checked; damage is repaired by scoring its files again, or named in one
line. Each test damages a folder it scored itself, in process."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner, Result

from ser_batch.cli import main

from conftest import write_audio

#: Three parts of three files each in files/ and segments/.
SHARDS = ["--set", "score.shard_files=3"]


def _score(*args: str) -> Result:
    return CliRunner().invoke(main, ["score", *args, "--in-process", "--no-progress", *SHARDS])


def _report(out: Path) -> Result:
    return CliRunner().invoke(main, ["report", str(out)])


def _one_error_line(result: Result) -> str:
    """The output of a command that failed as it should: exit 1, one ``error:`` line, no traceback."""
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Nine files scored into three files parts and three segments parts (kept pristine: copy it)."""
    root = tmp_path_factory.mktemp("parts")
    for i in range(9):
        write_audio(root / "in" / f"c{i}.wav", duration_s=2.0, seed=i)
    result = _score(str(root / "in"), "--out", str(root / "out"))
    assert result.exit_code == 0, result.output
    assert len(list((root / "out/files").iterdir())) == len(list((root / "out/segments").iterdir())) == 3
    return root / "in", root / "out"


@pytest.fixture
def folder(scored: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    archive, out = scored
    shutil.copytree(out, tmp_path / "out")
    return archive, tmp_path / "out"


def _rows(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.read_parquet(out / "files"), pd.read_parquet(out / "segments")


def _part_of(out: Path, kind: str, index: int = 0) -> Path:
    return sorted((out / kind).glob("part-*.parquet"))[index]


def _random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


def test_a_windows_part_of_random_bytes_is_repaired_by_scoring_its_files_again(folder: tuple[Path, Path]) -> None:
    """Issue 25: a segments part overwritten with random bytes was not noticed ("nothing to do", exit 0,
    its windows silently gone). Its files are all in the input: the re-run deletes it and scores exactly
    those three files again, saying so; every window is back."""
    archive, out = folder
    files, segments = _rows(out)
    damaged = _part_of(out, "segments", 1)
    owners = set(pd.read_parquet(out / "files" / damaged.name).path)  # a shard's parts share its key
    _random_bytes(damaged)
    line = _one_error_line(_report(out))
    assert line.startswith(f"error: {damaged} cannot be read (Parquet magic bytes not found in footer): 3 files "
                           f"have rows there; `ser-batch score` of their input into {out} repairs it")
    result = _score(str(archive), "--out", str(out), "--fail-on-error", "--retry-errors")
    assert result.exit_code == 0, result.output
    assert (f"segments/{damaged.name} cannot be read (Parquet magic bytes not found in footer): deleted, and 3 files "
            "scored again") in result.output
    assert "3 files scored (6 already done), 0 errors" in result.output
    run = json.loads((out / "_run.json").read_text())
    assert run["files_scored"] == 3 and run["repaired"] and "cannot be read" in run["repaired"][0]
    again_files, again_segments = _rows(out)
    assert len(again_files) == len(files) and len(again_segments) == len(segments)
    assert set(again_segments.path) == set(files.path) and owners <= set(again_segments.path)
    assert not again_files.path.duplicated().any()
    assert _report(out).exit_code == 0


def test_a_missing_windows_part_is_repaired_and_a_page_that_cannot_be_read_is_one_line(
        folder: tuple[Path, Path]) -> None:
    archive, out = folder
    missing = _part_of(out, "segments", 0)
    missing.unlink()
    assert _one_error_line(_report(out)).startswith(f"error: {missing} is missing: 3 files have rows there")
    result = _score(str(archive), "--out", str(out))
    assert result.exit_code == 0 and f"segments/{missing.name} is missing: deleted, and 3 files scored again" \
        in result.output
    # Damage past the footer (its pages): the report says so in one line, not with Arrow's traceback.
    part = _part_of(out, "segments", 2)
    blob = bytearray(part.read_bytes())
    blob[8:200] = os.urandom(192)
    part.write_bytes(bytes(blob))
    assert _one_error_line(_report(out)).startswith(f"error: {part} cannot be read (")


def test_a_files_part_that_cannot_be_read_needs_repair_which_scores_its_files_again(
        folder: tuple[Path, Path]) -> None:
    """A files part of random bytes: its files cannot be known, so a run refuses in one line (report too)
    and --repair deletes it with the windows it owned; its files, with no row now, are scored again."""
    archive, out = folder
    files, segments = _rows(out)
    damaged = _part_of(out, "files", 0)
    _random_bytes(damaged)
    line = _one_error_line(_score(str(archive), "--out", str(out)))
    assert line == (f"error: {damaged} cannot be read (Parquet magic bytes not found in footer): the files it held "
                    "are unknown; --repair deletes it and the windows it owned, and its files are scored again when "
                    "an input lists them (or --rescore)")
    assert _one_error_line(_report(out)).startswith(f"error: {out / 'files' / damaged.name} cannot be read")
    repaired = _score(str(archive), "--out", str(out), "--repair")
    assert repaired.exit_code == 0, repaired.output
    assert f"files/{damaged.name} cannot be read (Parquet magic bytes not found in footer): deleted (--repair)" \
        in repaired.output and "3 files scored (6 already done)" in repaired.output
    again_files, again_segments = _rows(out)
    assert sorted(again_files.path) == sorted(files.path) and len(again_segments) == len(segments)


def test_a_sync_conflict_copy_and_an_extract_part_are_named_and_never_deleted(folder: tuple[Path, Path],
                                                                             tmp_path: Path) -> None:
    """Issue 25: a sync tool's conflict copy beside its part was merged (120 rows for 60 files, `report`
    crashed); an extract part dropped into files/ was counted as streams. Neither is ser-batch's: one
    line names it, for score and report, and it stays where it is."""
    archive, out = folder
    original = _part_of(out, "files", 0)
    copy = original.with_name(original.stem + ".sync-conflict-20240601-120000-ABCDEF.parquet")
    shutil.copy(original, copy)
    for result in (_score(str(archive), "--out", str(out)), _report(out)):
        line = _one_error_line(result)
        assert copy.name in line and "which ser-batch did not write (a copy made by a sync tool?)" in line
        assert f"move it out of {out / 'files'}" in line
    assert copy.exists()
    copy.unlink()
    extract = CliRunner().invoke(main, ["extract", str(archive), "--out", str(tmp_path / "features"), "--in-process",
                                        "--no-progress"])
    assert extract.exit_code == 0, extract.output
    feature_part = next((tmp_path / "features").glob("part-*.parquet"))
    shutil.copy(feature_part, out / "files" / feature_part.name)
    assert f"holds {feature_part.name}, which ser-batch did not write;" in _one_error_line(_report(out))
    # Under a name like the parts' own, it is known by its schema.
    os.rename(out / "files" / feature_part.name, out / "files/part-0123456789ab.parquet")
    for result in (_score(str(archive), "--out", str(out)), _report(out)):
        assert "part-0123456789ab.parquet is a features table's part, not one of files" in _one_error_line(result)
    assert (out / "files/part-0123456789ab.parquet").exists()


def test_rows_of_a_file_in_two_parts_are_scored_again_once(folder: tuple[Path, Path]) -> None:
    """A part restored beside its original under another name: the same files twice. Its files are in
    the input: their rows are dropped from both parts and they are scored again, once."""
    archive, out = folder
    files, segments = _rows(out)
    shutil.copy(_part_of(out, "files", 0), out / "files/part-0000000000aa.parquet")
    assert "holds rows of 3 files that files/" in _one_error_line(_report(out))
    result = _score(str(archive), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "holds rows of 3 files that files/part-0000000000aa.parquet holds too: its rows dropped, and 3 files " \
           "scored again" in result.output
    again_files, again_segments = _rows(out)
    assert sorted(again_files.path) == sorted(files.path) and len(again_segments) == len(segments)


def test_damage_of_files_this_input_does_not_list_is_repaired_only_with_repair(folder: tuple[Path, Path],
                                                                             tmp_path: Path) -> None:
    archive, out = folder
    damaged = _part_of(out, "segments", 0)
    owners = sorted(pd.read_parquet(out / "files" / damaged.name).path)
    _random_bytes(damaged)
    listing = archive / "some.txt"  # a list in the archive's folder: two of the three files, and another
    listing.write_text(f"{owners[0]}\n{owners[1]}\n")
    try:
        line = _one_error_line(_score(str(listing), "--out", str(out)))
        assert line.startswith(f"error: {out / 'segments' / damaged.name} cannot be read (Parquet magic bytes not "
                               f"found in footer): 3 files have rows there, 1 of them not in this input ({owners[2]});"
                               " --repair removes their rows and scores again those this input lists")
        result = _score(str(listing), "--out", str(out), "--repair")
    finally:
        listing.unlink()
    assert result.exit_code == 0, result.output
    assert "deleted, and 2 files scored again; the rows of 1 file this input does not list removed (--repair)" \
        in result.output
    files, _ = _rows(out)
    assert owners[2] not in set(files.path) and {owners[0], owners[1]} <= set(files.path)


@pytest.mark.parametrize(("change", "message"), [
    ({"audio_s": "abc"}, 'audio_s is "abc", not a number'),
    ({"wall_s": [1]}, "wall_s is [1], not a number"),
    ({"files_scored": 0, "last_work": {"started": 12}}, "last_work.started is 12, not text"),
])
def test_report_on_a_run_record_of_wrong_types_is_one_line(folder: tuple[Path, Path], change: dict,
                                                           message: str) -> None:
    _, out = folder
    record = json.loads((out / "_run.json").read_text())
    (out / "_run.json").write_text(json.dumps({**record, **change}))
    line = _one_error_line(_report(out))
    assert line == f"error: {out / '_run.json'}: {message}; fix or delete the file (`ser-batch score` writes it anew)"

"""Tests for :mod:`ser_batch.data.parts`: atomic idempotent writes and guarded output folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ser_batch.data import parts
from ser_batch.errors import DatasetError


def table(*values: int) -> pa.Table:
    return pa.table({"x": pa.array(values, pa.int64())})


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- keys and names ----------------------------------------------------------------


def test_content_key_is_stable_and_sensitive() -> None:
    key = parts.content_key(["a.wav", "b.wav"], {"n_fft": 2048, "recipe": "fast"}, 1)
    assert len(key) == 12 and all(c in "0123456789abcdef" for c in key)
    assert key == parts.content_key(["a.wav", "b.wav"], {"recipe": "fast", "n_fft": 2048}, 1)
    assert key != parts.content_key(["a.wav", "c.wav"], {"n_fft": 2048, "recipe": "fast"}, 1)
    assert key != parts.content_key(["a.wav", "b.wav"], {"n_fft": 1024, "recipe": "fast"}, 1)
    assert key != parts.content_key(["a.wav", "b.wav"], {"n_fft": 2048, "recipe": "fast"}, 2)


def test_content_key_is_the_same_in_another_process() -> None:
    # Part names must not depend on the interpreter (no hash(), no set order).
    items = (["Actor_01/x.wav"], [{"emotion": "angry", "actor": 1}], {"features": {"n_fft": 2048}}, 1)
    code = (
        "from ser_batch.data.parts import content_key; "
        "print(content_key(['Actor_01/x.wav'], [{'emotion': 'angry', 'actor': 1}], {'features': {'n_fft': 2048}}, 1))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "123"})
    assert other.stdout.strip() == parts.content_key(*items)


def test_part_name() -> None:
    assert parts.part_name(7, "0123456789ab") == "part-00007-0123456789ab.parquet"
    # Part names sort in shard order, which read_parts relies on.
    assert parts.part_name(9, "ffffffffffff") < parts.part_name(10, "000000000000")


# --- atomic writes ---------------------------------------------------------------------


def test_write_table_atomic_leaves_no_temp_files(tmp_path: Path) -> None:
    path = parts.write_table_atomic(table(1, 2, 3), tmp_path / "part-00000-0123456789ab.parquet")
    assert names(tmp_path) == ["part-00000-0123456789ab.parquet"]
    assert pq.read_table(path).column("x").to_pylist() == [1, 2, 3]


def test_rewriting_a_part_is_idempotent(tmp_path: Path) -> None:
    name = parts.part_name(0, "0123456789ab")
    parts.write_table_atomic(table(1, 2), tmp_path / name)
    parts.write_table_atomic(table(3, 4, 5), tmp_path / name)  # a retried task
    assert names(tmp_path) == [name]
    assert pq.read_table(tmp_path / name).column("x").to_pylist() == [3, 4, 5]


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    parts.write_text_atomic(path, "old")

    class Boom(Exception):
        pass

    def failing_write(tmp: Path) -> None:
        tmp.write_text("half")
        raise Boom

    with pytest.raises(Boom):
        parts._atomic_replace(path, failing_write)
    assert names(tmp_path) == ["notes.txt"]
    assert path.read_text() == "old"


def test_write_text_atomic(tmp_path: Path) -> None:
    path = parts.write_text_atomic(tmp_path / "_config.toml", "a = 'é'\n")
    parts.write_text_atomic(path, "b = 'ü'\n")
    assert names(tmp_path) == ["_config.toml"]
    assert path.read_text(encoding="utf-8") == "b = 'ü'\n"


# --- prepare_output --------------------------------------------------------------------


def fill(directory: Path, *file_names: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in file_names:
        (directory / name).write_text("x")


PART_A = parts.part_name(0, "aaaaaaaaaaaa")
PART_B = parts.part_name(1, "bbbbbbbbbbbb")
PART_OLD = parts.part_name(1, "000000000000")
TEMP = f".{PART_A}.tmp-1234abcd"


def test_prepare_creates_missing_folder(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    assert parts.prepare_output(out, overwrite=False, resume=False, planned=[PART_A]) == set()
    assert out.is_dir()


def test_prepare_accepts_empty_folder(tmp_path: Path) -> None:
    assert parts.prepare_output(tmp_path, overwrite=False, resume=False, planned=[PART_A]) == set()


@pytest.mark.parametrize("existing", [PART_A, parts.MANIFEST, parts.CONFIG, TEMP])
def test_prepare_refuses_previous_results_without_flags(tmp_path: Path, existing: str) -> None:
    fill(tmp_path, existing, "README.md")
    with pytest.raises(DatasetError, match="already holds results; pass --overwrite .* or --resume"):
        parts.prepare_output(tmp_path, overwrite=False, resume=False, planned=[PART_A])
    assert names(tmp_path) == sorted([existing, "README.md"])  # nothing deleted


def test_prepare_refuses_a_file(tmp_path: Path) -> None:
    fill(tmp_path, "out")
    with pytest.raises(DatasetError, match="exists and is not a folder"):
        parts.prepare_output(tmp_path / "out", overwrite=True, resume=False, planned=[])


def test_overwrite_removes_only_ser_batch_files(tmp_path: Path) -> None:
    fill(tmp_path, PART_A, PART_OLD, parts.MANIFEST, parts.CONFIG, TEMP,
         "README.md", "notes.parquet", "part-1.parquet")
    done = parts.prepare_output(tmp_path, overwrite=True, resume=False, planned=[PART_A])
    assert done == set()
    assert names(tmp_path) == ["README.md", "notes.parquet", "part-1.parquet"]


def test_resume_keeps_planned_parts_and_removes_the_rest(tmp_path: Path) -> None:
    fill(tmp_path, PART_A, PART_OLD, parts.MANIFEST, parts.CONFIG, TEMP, "README.md")
    done = parts.prepare_output(tmp_path, overwrite=False, resume=True, planned=[PART_A, PART_B])
    assert done == {PART_A}
    # The stale part of another plan would duplicate rows; the manifest would claim completion.
    assert names(tmp_path) == ["README.md", PART_A]


def test_overwrite_beats_resume(tmp_path: Path) -> None:
    fill(tmp_path, PART_A)
    assert parts.prepare_output(tmp_path, overwrite=True, resume=True, planned=[PART_A]) == set()
    assert names(tmp_path) == []


def test_existing_parts_ignores_other_files(tmp_path: Path) -> None:
    fill(tmp_path, PART_A, PART_B, TEMP, parts.MANIFEST, "part-00001-XYZ.parquet", "x.parquet")
    assert set(parts.existing_parts(tmp_path)) == {PART_A, PART_B}
    assert parts.existing_parts(tmp_path / "missing") == {}


# --- reading back ------------------------------------------------------------------------


def test_read_parts_in_part_order(tmp_path: Path) -> None:
    parts.write_table_atomic(table(3, 4), tmp_path / PART_B)
    parts.write_table_atomic(table(1, 2), tmp_path / PART_A)
    fill(tmp_path, "README.md")
    assert parts.read_parts(tmp_path).column("x").to_pylist() == [1, 2, 3, 4]


def test_read_parts_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="feature folder not found"):
        parts.read_parts(tmp_path / "nope")


def test_read_parts_empty_folder(tmp_path: Path) -> None:
    fill(tmp_path, parts.MANIFEST)
    with pytest.raises(DatasetError, match="no Parquet parts in"):
        parts.read_parts(tmp_path)


def test_read_parts_mismatched_schemas(tmp_path: Path) -> None:
    parts.write_table_atomic(table(1), tmp_path / PART_A)
    parts.write_table_atomic(pa.table({"y": ["a"]}), tmp_path / PART_B)
    with pytest.raises(DatasetError, match="different schemas"):
        parts.read_parts(tmp_path)


def test_read_manifest(tmp_path: Path) -> None:
    assert parts.read_manifest(tmp_path) is None
    parts.write_text_atomic(tmp_path / parts.MANIFEST, json.dumps({"files": 3}))
    assert parts.read_manifest(tmp_path) == {"files": 3}
    (tmp_path / parts.MANIFEST).write_text("{not json")
    with pytest.raises(DatasetError, match="unreadable manifest"):
        parts.read_manifest(tmp_path)


def test_parts_past_99999_are_read_in_shard_order(tmp_path: Path) -> None:
    import pyarrow as pa

    for index in (100000, 99999, 2):
        parts.write_table_atomic(pa.table({"i": [index]}), tmp_path / parts.part_name(index, "0" * 12))
    assert len(parts.existing_parts(tmp_path)) == 3
    assert parts.read_parts(tmp_path)["i"].to_pylist() == [2, 99999, 100000]

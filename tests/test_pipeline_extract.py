"""Tests for :mod:`ser_batch.pipeline.extract`: the Ray feature-extraction job, end to end.

One run over the mixed generated corpus (see ``conftest.build_corpus``) is shared by
the read-only checks; tests that change inputs or outputs make their own.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ser_batch import schema
from ser_batch.cluster import runtime
from ser_batch.config import Config, config_to_dict, load_config
from ser_batch.data import parts
from ser_batch.data.labels import discover_audio
from ser_batch.errors import DatasetError
from ser_batch.features.names import feature_names
from ser_batch.features.recipes import file_features
from ser_batch.pipeline.extract import ExtractSummary, plan_shards, run_extract
from ser_batch.pipeline.extract_shard import ExtractResult, ExtractRun

from conftest import CORPUS_BROKEN, CORPUS_GOOD, write_audio

#: Three files per task, so the 11-file corpus makes 4 parts and 4 Ray tasks.
CONFIG = Config().replace(extract={"shard_size": 3})
N_FILES = len(CORPUS_GOOD) + len(CORPUS_BROKEN)
N_PARTS = -(-N_FILES // 3)

#: Labels expected from the RAVDESS names of the corpus; other files have none.
RAVDESS_LABELS = {
    "Actor_01/03-01-05-01-01-01-01.wav": ("angry", "normal", 1, 1, 1, "male"),
    "Actor_01/03-01-01-01-02-02-01.wav": ("neutral", "normal", 2, 2, 1, "male"),
    "Actor_02/session_b/03-01-08-02-01-01-02.wav": ("surprised", "strong", 1, 1, 2, "female"),
    "Actor_02/session_b/take_2/03-01-03-02-02-01-02.wav": ("happy", "strong", 2, 1, 2, "female"),
    "Actor_03/03-01-04-02-01-02-03.wav": ("sad", "strong", 1, 2, 3, "male"),
    "Actor_05/03-01-06-01-01-01-05.flac": ("fearful", "normal", 1, 1, 5, "male"),
}


@pytest.fixture(scope="module")
def extracted(ray_session: None, corpus: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[ExtractSummary, Path]:
    out = tmp_path_factory.mktemp("extract") / "features"
    return run_extract(corpus, out, config=CONFIG, progress=False), out


@pytest.fixture(scope="module")
def rows(extracted: tuple[ExtractSummary, Path]) -> dict[str, dict]:
    table = parts.read_parts(extracted[1])
    return {row[schema.PATH]: row for row in table.to_pylist()}


def part_files(out: Path) -> list[str]:
    return sorted(parts.existing_parts(out))


# --- the shared run -------------------------------------------------------------------


def test_summary(extracted: tuple[ExtractSummary, Path]) -> None:
    summary, out = extracted
    assert (summary.files, summary.errors, summary.parts, summary.skipped_parts) == (N_FILES, 3, N_PARTS, 0)
    assert summary.out == out and summary.wall_s > 0
    line = summary.line()
    assert line.startswith(f"{N_FILES} files, 3 errors, {N_PARTS} parts in ") and line.endswith(f"-> {out}")
    # The failed files by name, in path order, with the reasons of their rows.
    assert summary.failures == tuple(sorted((p, r) for p, r in {
        "broken/empty.wav": "empty file", "broken/notes.wav": "not an audio file (unrecognised format)",
        "broken/random_bytes.wav": "not an audio file (unrecognised format)"}.items()))
    report = summary.failure_report().splitlines()
    assert report[0] == f"3 of {N_FILES} files failed:"
    assert report[1:] == [f"  {p}: {r}" for p, r in summary.failures]


@pytest.mark.parametrize(("files", "errors", "parts", "skipped", "expected"), [
    (1, 0, 1, 0, "1 file, 0 errors, 1 part in 2.0 s (0.5 files/s) -> out"),
    (3, 1, 2, 1, "3 files, 1 error, 2 parts, 1 kept from before in 2.0 s (1.5 files/s) -> out"),
    (3, 1, 2, 2, "nothing left to do: 2 parts of a finished run are in out (3 files, 1 error)"),
])
def test_summary_line_counts_in_words(files: int, errors: int, parts: int, skipped: int, expected: str) -> None:
    assert ExtractSummary(Path("out"), files, errors, parts, skipped, 2.0).line() == expected


def test_output_folder_layout(extracted: tuple[ExtractSummary, Path], corpus: Path) -> None:
    _, out = extracted
    names = part_files(out)
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, parts.MANIFEST, parts.CONFIG])
    planned = plan_shards(discover_audio(corpus, extensions=CONFIG.audio.extensions), config=CONFIG)
    assert names == [s.name for s in planned] and len(names) == N_PARTS
    # Every part holds at most shard_size rows.
    assert [pq.read_metadata(out / p).num_rows for p in names] == [3, 3, 3, 2]


def test_one_row_per_audio_file(rows: dict[str, dict], corpus: Path) -> None:
    assert sorted(rows) == sorted([*CORPUS_GOOD, *CORPUS_BROKEN])
    assert sorted(rows) == discover_audio(corpus, extensions=CONFIG.audio.extensions)
    assert not any(p.startswith(".") or "README" in p for p in rows)


def test_rows_are_in_sorted_path_order(extracted: tuple[ExtractSummary, Path]) -> None:
    paths = parts.read_parts(extracted[1]).column(schema.PATH).to_pylist()
    assert paths == sorted(paths)


@pytest.mark.parametrize(("path", "reason"), sorted(CORPUS_BROKEN.items()))
def test_error_rows(rows: dict[str, dict], path: str, reason: str) -> None:
    row = rows[path]
    assert reason in row[schema.ERROR]
    assert row[schema.FEATURES] is None
    assert row[schema.DURATION_S] is None and row[schema.SAMPLE_RATE_IN] is None
    assert row[schema.CHANNELS_IN] is None
    assert all(row[c] is None for c in schema.LABEL_COLUMNS)


def test_good_rows_have_finite_float32_features(extracted: tuple[ExtractSummary, Path],
                                                rows: dict[str, dict]) -> None:
    table = parts.read_parts(extracted[1])
    assert table.schema.field(schema.FEATURES).type == pa.list_(pa.float32(), 193)
    for path in CORPUS_GOOD:
        row = rows[path]
        assert row[schema.ERROR] is None, path
        vector = np.asarray(row[schema.FEATURES], dtype=np.float32)
        assert vector.shape == (193,) and np.isfinite(vector).all(), path


@pytest.mark.parametrize("path", ["Actor_03/03-01-04-02-01-02-03.wav", "phone/call_8k.wav",
                                  "Actor_05/03-01-06-01-01-01-05.flac"])
def test_features_equal_direct_computation(rows: dict[str, dict], corpus: Path, path: str) -> None:
    # Stereo 48 kHz, 8 kHz mu-law and 22.05 kHz FLAC: the task decodes exactly as file_features does.
    expected, _ = file_features(corpus / path, config=CONFIG)
    np.testing.assert_allclose(np.asarray(rows[path][schema.FEATURES]), expected.vector, rtol=1e-6, atol=1e-6)
    assert expected.segments is None and rows[path][schema.SEGMENTS] is None


@pytest.mark.parametrize("path", sorted(CORPUS_GOOD))
def test_audio_info_columns(rows: dict[str, dict], path: str) -> None:
    rate, channels, duration_s = CORPUS_GOOD[path]
    row = rows[path]
    assert row[schema.SAMPLE_RATE_IN] == rate
    assert row[schema.CHANNELS_IN] == channels
    assert row[schema.DURATION_S] == pytest.approx(duration_s, abs=1e-9)


def test_labels_from_ravdess_names(rows: dict[str, dict]) -> None:
    for path, expected in RAVDESS_LABELS.items():
        assert tuple(rows[path][c] for c in schema.LABEL_COLUMNS) == expected, path
    for path in ("misc/interview.wav", "phone/call_8k.wav"):
        assert all(rows[path][c] is None for c in schema.LABEL_COLUMNS), path


def test_schema_metadata(extracted: tuple[ExtractSummary, Path]) -> None:
    _, out = extracted
    for part in part_files(out):
        meta = schema.read_metadata(pq.read_schema(out / part))
        assert meta["schema_version"] == schema.SCHEMA_VERSION
        assert meta["table"] == "features"
        assert meta["recipe"] == "fast"
        assert meta["feature_names"] == feature_names(CONFIG.features)
        assert meta["config"] == config_to_dict(CONFIG)


def test_config_and_manifest_written(extracted: tuple[ExtractSummary, Path], corpus: Path) -> None:
    summary, out = extracted
    assert load_config(out / parts.CONFIG) == CONFIG
    manifest = parts.read_manifest(out)
    assert manifest is not None
    assert (manifest["job"], manifest["files"], manifest["errors"]) == ("extract", N_FILES, 3)
    assert manifest["parts"] == part_files(out)
    assert manifest["recipe"] == "fast" and manifest["schema_version"] == schema.SCHEMA_VERSION
    assert manifest["input_dir"] == str(corpus.resolve())
    # The tasks' CPU and wall time: inside the whole command's wall time, and recorded in the summary.
    assert 0 < manifest["task_cpu_s"] == round(summary.task_cpu_s, 3)
    assert 0 < manifest["tasks_wall_s"] == round(summary.tasks_wall_s, 3) < manifest["wall_s"]


def test_pandas_and_duckdb_read_the_folder(extracted: tuple[ExtractSummary, Path]) -> None:
    _, out = extracted
    frame = pd.read_parquet(out)
    assert len(frame) == N_FILES
    assert set(frame.columns) >= {schema.PATH, schema.EMOTION, schema.FEATURES, schema.ERROR}
    assert frame[schema.ERROR].notna().sum() == 3
    assert duckdb.sql(f"select count(*) from read_parquet('{out}/*.parquet')").fetchall() == [(N_FILES,)]
    labelled = duckdb.sql(
        f"select count(*) from read_parquet('{out}/*.parquet') where emotion is not null").fetchall()
    assert labelled == [(len(RAVDESS_LABELS),)]


# --- re-runs ------------------------------------------------------------------------------


def test_rerun_without_flags_refuses_and_keeps_results(extracted: tuple[ExtractSummary, Path],
                                                       corpus: Path) -> None:
    _, out = extracted
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(DatasetError, match="already holds results"):
        run_extract(corpus, out, config=CONFIG, progress=False)
    assert sorted(p.name for p in out.iterdir()) == before


def test_overwrite(ray_session: None, corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "features"
    run_extract(corpus, out, config=CONFIG, progress=False)
    (out / "notes.md").write_text("mine")
    # A different plan: its parts must replace, not join, the old ones.
    config = CONFIG.replace(extract={"shard_size": 4})
    summary = run_extract(corpus, out, config=config, overwrite=True, progress=False)
    assert (summary.parts, summary.skipped_parts, summary.errors) == (3, 0, 3)
    assert len(part_files(out)) == 3
    assert parts.read_parts(out).num_rows == N_FILES
    assert (out / "notes.md").read_text() == "mine"
    assert load_config(out / parts.CONFIG).extract.shard_size == 4


def test_resume_of_a_finished_run_keeps_everything(ray_session: None, corpus: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "features"
    first = run_extract(corpus, out, config=CONFIG, progress=False)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}

    def no_ray(**kwargs: object) -> None:
        raise AssertionError("a finished run must not start or join Ray")

    monkeypatch.setattr(runtime, "ray_runtime", no_ray)
    summary = run_extract(corpus, out, config=CONFIG, resume=True, progress=False)
    assert summary.nothing_to_do and summary.skipped_parts == summary.parts == N_PARTS
    assert summary.line().startswith(f"nothing left to do: {N_PARTS} parts of a finished run are in {out}")
    assert summary.errors == 3 and summary.failures == first.failures  # read from the kept parts
    # Nothing rewritten: parts, config, and the manifest with the first run's timings.
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()} == before


def test_resume_of_an_interrupted_run(ray_session: None, corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "features"
    run_extract(corpus, out, config=CONFIG, progress=False)
    names = part_files(out)
    # Simulate a crash: one part and the manifest missing, a temp file and a part of
    # another plan left behind.
    (out / names[1]).unlink()
    (out / parts.MANIFEST).unlink()
    (out / f".{names[1]}.tmp-0badf00d").write_bytes(b"half")
    shutil.copy(out / names[0], out / parts.part_name(7, "0123456789ab"))
    summary = run_extract(corpus, out, config=CONFIG, resume=True, progress=False)
    assert (summary.parts, summary.skipped_parts, summary.errors) == (N_PARTS, N_PARTS - 1, 3)
    assert not summary.nothing_to_do and len(summary.failures) == 3  # from kept and new parts alike
    assert part_files(out) == names
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, parts.MANIFEST, parts.CONFIG])
    paths = parts.read_parts(out).column(schema.PATH).to_pylist()
    assert sorted(paths) == sorted([*CORPUS_GOOD, *CORPUS_BROKEN])  # no duplicates, none missing


def test_resume_with_other_settings_recomputes(ray_session: None, corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "features"
    run_extract(corpus, out, config=CONFIG, progress=False)
    old = set(part_files(out))
    config = CONFIG.replace(features={"n_mfcc": 20})
    summary = run_extract(corpus, out, config=config, resume=True, progress=False)
    assert summary.skipped_parts == 0
    assert not old & set(part_files(out))
    table = parts.read_parts(out)
    assert table.num_rows == N_FILES
    assert table.schema.field(schema.FEATURES).type.list_size == 193 - 20


def test_extract_shard_twice_leaves_one_file(corpus: Path, tmp_path: Path) -> None:
    # What a Ray retry does: the same shard runs again and overwrites its own part.
    paths = discover_audio(corpus, extensions=CONFIG.audio.extensions)
    shard = plan_shards(paths, config=CONFIG)[0]
    job = ExtractRun(str(corpus), str(tmp_path), CONFIG)
    first = job.run_shard(shard)
    written = (tmp_path / shard.name).read_bytes()
    second = job.run_shard(shard)
    assert first == second == ExtractResult(shard.name, 3, 0, 0, ())
    assert [p.name for p in tmp_path.iterdir()] == [shard.name] and (tmp_path / shard.name).read_bytes() == written
    assert pq.read_table(tmp_path / shard.name).column(schema.PATH).to_pylist() == list(shard.sources)


def test_plan_shards_names_depend_on_content() -> None:
    paths = [f"{i}.wav" for i in range(7)]
    shards = plan_shards(paths, config=CONFIG)
    assert [s.sources for s in shards] == [tuple(paths[0:3]), tuple(paths[3:6]), tuple(paths[6:])]
    assert [s.index for s in shards] == [0, 1, 2]
    assert [s.name for s in plan_shards(paths, config=CONFIG)] == [s.name for s in shards]
    other = plan_shards(paths, config=CONFIG.replace(features={"recipe": "classic"}))
    assert not {s.name for s in other} & {s.name for s in shards}
    # Settings that do not change the rows (ray, output folder) keep the names.
    same = plan_shards(paths, config=CONFIG.replace(ray={"max_retries": 0}, extract={"out": "x"}))
    assert [s.name for s in same] == [s.name for s in shards]


# --- labels ------------------------------------------------------------------------------


LABELS_CSV_TEXT = (
    "path,label,actor,gender\n"
    "misc/interview.wav,calm,30,female\n"
    "Actor_01/03-01-05-01-01-01-01.wav,happy,,\n"
)


def test_labels_csv_at_input_root(ray_session: None, corpus_copy: Path, tmp_path: Path) -> None:
    (corpus_copy / "labels.csv").write_text(LABELS_CSV_TEXT)
    out = tmp_path / "features"
    summary = run_extract(corpus_copy, out, config=CONFIG, progress=False)
    assert summary.files == N_FILES  # labels.csv itself is not audio
    got = {r[schema.PATH]: r for r in parts.read_parts(out).to_pylist()}
    interview = got["misc/interview.wav"]
    assert (interview[schema.EMOTION], interview[schema.ACTOR], interview[schema.GENDER]) == ("calm", 30, "female")
    # The CSV beats the name, and leaves the other name-derived files alone.
    assert got["Actor_01/03-01-05-01-01-01-01.wav"][schema.EMOTION] == "happy"
    assert got["Actor_01/03-01-05-01-01-01-01.wav"][schema.ACTOR] is None
    assert got["Actor_01/03-01-01-01-02-02-01.wav"][schema.EMOTION] == "neutral"
    assert got["phone/call_8k.wav"][schema.EMOTION] is None


def test_labels_csv_argument_and_config(ray_session: None, corpus: Path, tmp_path: Path) -> None:
    csv_path = tmp_path / "elsewhere.csv"
    csv_path.write_text(LABELS_CSV_TEXT)
    by_argument = run_extract(corpus, tmp_path / "a", config=CONFIG, labels_csv=csv_path, progress=False)
    config = CONFIG.replace(extract={"labels_csv": str(csv_path)})
    by_config = run_extract(corpus, tmp_path / "b", config=config, progress=False)
    for summary in (by_argument, by_config):
        got = {r[schema.PATH]: r[schema.EMOTION] for r in parts.read_parts(summary.out).to_pylist()}
        assert got["misc/interview.wav"] == "calm", summary.out


def test_bad_labels_csv_fails_before_any_work(ray_session: None, corpus_copy: Path, tmp_path: Path) -> None:
    # (a file of the input: a CSV naming none of them is refused for that first)
    (corpus_copy / "labels.csv").write_text("path,label\nmisc/interview.wav,x\nmisc/interview.wav,y\n")
    with pytest.raises(DatasetError, match="duplicate path misc/interview.wav"):
        run_extract(corpus_copy, tmp_path / "out", config=CONFIG, progress=False)
    assert not (tmp_path / "out").exists()


def test_extract_says_how_a_labels_csv_fits_its_files(tmp_path: Path) -> None:
    """Issue 25, end to end: paths written with the input's name (or backslashes) label the files; a CSV
    that labels none is refused before anything is written; one that fits partly, or gives RAVDESS-named
    files other emotions, is a warning with counts on stderr and in the manifest."""
    import json

    from click.testing import CliRunner

    from ser_batch.cli import main

    calls = tmp_path / "calls"
    names = [f"call_{i:02d}.wav" for i in range(1, 4)] + ["03-01-05-01-01-01-01.wav"]  # the last: angry by its name
    for seed, name in enumerate(names):
        write_audio(calls / name, duration_s=0.5, seed=seed)
    run = CliRunner().invoke
    (tmp_path / "none.csv").write_text("path,label\n" + "".join(f"other/{n},sad\n" for n in names))
    refused = run(main, ["extract", str(calls), "--out", str(tmp_path / "o1"), "--labels", str(tmp_path / "none.csv"),
                         "--in-process", "--no-progress"])
    assert refused.exit_code == 1 and refused.stderr.startswith(
        f"error: labels file {tmp_path / 'none.csv'} labels none of the 4 audio files of {calls}: none of its 4 rows")
    assert not (tmp_path / "o1").exists()
    text = "path,label\n" + "".join(f"calls\\{n},sad\n" for n in names[1:]) + "calls/gone.wav,calm\n"
    (tmp_path / "some.csv").write_text(text)
    ok = run(main, ["extract", str(calls), "--out", str(tmp_path / "o2"), "--labels", str(tmp_path / "some.csv"),
                    "--in-process", "--no-progress"])
    assert ok.exit_code == 0, ok.stderr
    assert ok.stderr.splitlines() == [
        f"warning: labels file {tmp_path / 'some.csv'}: 1 of its 4 rows name no audio file of the input (first: "
        "'calls/gone.wav'); 3 of the 4 files are labelled by it",
        f"warning: labels file {tmp_path / 'some.csv'} gives 1 of the 1 files with RAVDESS names another emotion than "
        "their names do (first: 03-01-05-01-01-01-01.wav: sad in the file, angry by its name); the file's labels are "
        "used, as the explicit source"]
    rows = {r[schema.PATH]: r[schema.EMOTION] for r in parts.read_parts(tmp_path / "o2").to_pylist()}
    assert rows == {"call_01.wav": None, "call_02.wav": "sad", "call_03.wav": "sad", names[3]: "sad"}
    manifest = json.loads((tmp_path / "o2/_manifest.json").read_text())
    assert [f"warning: {w}" for w in manifest["warnings"]] == ok.stderr.splitlines()


# --- other inputs ------------------------------------------------------------------------------


def test_no_audio_files(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="no audio files .* found below"):
        run_extract(tmp_path / "in", tmp_path / "out", config=CONFIG, progress=False)


def test_missing_input_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="input folder not found"):
        run_extract(tmp_path / "nope", tmp_path / "out", config=CONFIG, progress=False)


def test_links_and_many_failures(ray_session: None, tmp_path: Path) -> None:
    # The input: links to actor folders kept elsewhere, a dangling link, and more
    # failed files (over several shards) than the summary names.
    store = tmp_path / "store"
    write_audio(store / "Actor_01/03-01-05-01-01-01-01.wav", duration_s=0.5)
    write_audio(store / "Actor_02/03-01-02-01-01-01-02.wav", duration_s=0.5, seed=1)
    root = tmp_path / "in"
    (root / "empty").mkdir(parents=True)
    for actor in ("Actor_01", "Actor_02"):
        (root / actor).symlink_to(store / actor, target_is_directory=True)
    (root / "Actor_02_old").symlink_to(store / "Actor_02", target_is_directory=True)  # same folder twice
    (root / "gone.wav").symlink_to(store / "moved.wav")
    for i in range(6):
        (root / "empty" / f"{i}.wav").write_bytes(b"")
    summary = run_extract(root, tmp_path / "out", config=CONFIG.replace(extract={"shard_size": 2}),
                          progress=False)
    assert (summary.files, summary.errors) == (9, 7)
    rows = {r[schema.PATH]: r for r in parts.read_parts(tmp_path / "out").to_pylist()}
    assert rows["Actor_01/03-01-05-01-01-01-01.wav"][schema.ERROR] is None
    assert rows["Actor_01/03-01-05-01-01-01-01.wav"][schema.EMOTION] == "angry"
    assert rows["gone.wav"][schema.ERROR] == "broken link"
    assert summary.failures == (*((f"empty/{i}.wav", "empty file") for i in range(5)),)
    report = summary.failure_report().splitlines()
    assert report[0] == "7 of 9 files failed; the first 5:"
    assert report[-1] == f"  ... and 2 more: every failed file and its reason is in the `error` column of {summary.out}"


def test_progress_callback_and_max_duration(ray_session: None, tmp_path: Path) -> None:
    for i in range(3):
        write_audio(tmp_path / "in" / f"{i}.wav", duration_s=2.0, seed=i)
    seen: list[int] = []
    config = CONFIG.replace(extract={"shard_size": 2}, audio={"max_duration_s": 0.5})
    summary = run_extract(tmp_path / "in", tmp_path / "out", config=config, progress=False,
                          on_progress=seen.append)
    assert sorted(seen) == [1, 2] and summary.parts == 2
    table = parts.read_parts(tmp_path / "out")
    # duration_s describes the file; the features only its first half second.
    assert table.column(schema.DURATION_S).to_pylist() == [2.0, 2.0, 2.0]
    expected, _ = file_features(tmp_path / "in" / "0.wav", config=config)
    np.testing.assert_allclose(np.asarray(table.column(schema.FEATURES)[0].as_py()), expected.vector, rtol=1e-6)
    full, _ = file_features(tmp_path / "in" / "0.wav", config=CONFIG)
    assert not np.allclose(expected.vector, full.vector)


def test_original_rows_have_no_augment_and_a_band(rows: dict[str, dict]) -> None:
    for path, row in rows.items():
        assert row[schema.AUGMENT] is None, path
        expected = None if path in CORPUS_BROKEN else "narrow" if path == "phone/call_8k.wav" else "wide"
        assert row[schema.BAND] == expected, path

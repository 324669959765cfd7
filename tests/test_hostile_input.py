"""Hostile and careless input to `score` and `extract` (issue 16): names that are not UTF-8,
headers that lie, failed rows to retry, files deleted since, odd input lists. Every input is
generated here, in ``tmp_path``."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import soundfile as sf
from click.testing import CliRunner

from ser_batch.cli import main
from ser_batch.cluster.engine import FAULT_ENV
from ser_batch.config import Config, load_config
from ser_batch.data.paths import stored_path
from ser_batch.errors import DatasetError
from ser_batch.inference.scoring import predict_files
from ser_batch.models.bundle import load_bundle
from ser_batch.pipeline.extract import run_extract
from ser_batch.pipeline.score import run_score
from ser_batch.pipeline.score_plan import list_input

from conftest import write_audio

BAD_NAME = b"bad\xffname.wav"  # Latin-1 era name: not UTF-8
BAD_BROKEN = b"bad\xfe_broken.wav"  # not UTF-8 and not audio either


def raw_path(folder: Path, name: bytes) -> Path:
    """``folder/name`` for a name of any bytes (a str with surrogate escapes, as os.listdir gives)."""
    return Path(os.fsdecode(os.path.join(os.fsencode(folder), name)))


def write_raw_named(folder: Path, name: bytes, **options: object) -> Path:
    """Generated audio under a name of any bytes (soundfile itself cannot write such a name)."""
    plain = write_audio(folder / "plain-name.wav", **options)  # type: ignore[arg-type]
    target = raw_path(folder, name)
    os.rename(plain, target)
    return target


def one_hz_wav(path: Path) -> Path:
    """7 KB of 16-bit samples whose header declares 1 Hz: an hour of audio, if believed."""
    data = np.random.default_rng(0).integers(-3000, 3000, 3500).astype("<i2").tobytes()
    path.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt "
                     + struct.pack("<IHHIIHH", 16, 1, 1, 1, 2, 2, 16) + b"data" + struct.pack("<I", len(data)) + data)
    return path


def days_flac(path: Path) -> Path:
    """A FLAC file of one second whose STREAMINFO claims 2**35 frames (24 days) in 132 bytes."""
    sf.write(path, np.zeros(16_000, dtype=np.float32), 16_000)
    blob = bytearray(path.read_bytes())
    info = blob.index(b"fLaC") + 8
    blob[info + 13] = (blob[info + 13] & 0xF0) | 8  # 2**35 >> 32
    blob[info + 14 : info + 18] = (0).to_bytes(4, "big")
    path.write_bytes(bytes(blob))
    return path


def hostile_archive(root: Path) -> Path:
    write_audio(root / "good.wav", duration_s=2.0, seed=1)
    write_raw_named(root, BAD_NAME, duration_s=2.0, seed=2)
    raw_path(root, BAD_BROKEN).write_text("not audio\n" * 20)
    one_hz_wav(root / "one_hz.wav")
    days_flac(root / "days.flac")
    return root


# ------------------------------------------------------------------------------ score


def test_score_a_name_that_is_not_utf8_is_scored_stored_printably_and_skipped_again(
        tmp_path: Path, ray_session: None) -> None:
    archive = hostile_archive(tmp_path / "archive")
    out = tmp_path / "out"
    runner = CliRunner()
    first = runner.invoke(main, ["score", str(archive), "--out", str(out), "--no-progress"])
    assert first.exit_code == 0, first.output
    # the summary names the broken one readably
    assert "bad\\xfe_broken.wav: not an audio file" in first.output
    assert "one_hz.wav: implausible header: sample rate 1 Hz is below 4000 Hz" in first.output
    assert "days.flac: implausible header: 34359738368 frames" in first.output
    files = pd.read_parquet(out / "files").set_index("path")
    assert sorted(files.index) == sorted(["good.wav", "bad\\xffname.wav", "bad\\xfe_broken.wav", "one_hz.wav",
                                          "days.flac"])
    assert pd.isna(files.loc["bad\\xffname.wav", "error"]) and files.loc["bad\\xffname.wav", "n_segments"] > 0
    assert files.loc["bad\\xffname.wav", "duration_s"] == pytest.approx(2.0)
    assert files.loc["one_hz.wav", "error"] == "implausible header: sample rate 1 Hz is below 4000 Hz"
    segments = pd.read_parquet(out / "segments")
    assert (segments.path == "bad\\xffname.wav").sum() == files.loc["bad\\xffname.wav", "n_segments"]
    # incremental: the same file matched by its stored path, skipped; nothing rewritten
    again = run_score(archive, out, config=load_config(), progress=False)
    assert (again.files_scored, again.files_skipped, again.failed_skipped) == (0, 5, 3)
    assert len(pd.read_parquet(out / "files")) == 5 and len(pd.read_parquet(out / "segments")) == len(segments)


def test_score_a_list_naming_a_file_that_is_not_utf8(tmp_path: Path, ray_session: None) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    write_raw_named(archive, BAD_NAME, duration_s=1.5, seed=3)
    listing = tmp_path / "list.txt"
    # as the path column shows it, and as raw bytes: one file
    listing.write_bytes(b"archive/bad\\xffname.wav\narchive/" + BAD_NAME + b"\n")
    summary = run_score(listing, tmp_path / "out", config=load_config(), progress=False)
    assert (summary.files_scored, summary.errors) == (1, [])
    assert pd.read_parquet(tmp_path / "out/files").path.tolist() == ["archive/bad\\xffname.wav"]


def test_predict_refuses_a_1_hz_header_as_an_error(tmp_path: Path) -> None:
    (row,) = predict_files([one_hz_wav(tmp_path / "one_hz.wav")], bundle=load_bundle())
    assert row["error"] == "implausible header: sample rate 1 Hz is below 4000 Hz" and not row["predictions"]


def test_retry_errors_rescores_a_file_whose_worker_died_and_replaces_its_row(
        tmp_path: Path, ray_session: None) -> None:
    archive = tmp_path / "archive"
    for i in range(2):
        write_audio(archive / f"f{i}.wav", duration_s=1.5, seed=i)
    write_audio(archive / "poison.wav", duration_s=3.0, seed=7)
    out = tmp_path / "out"
    # First run in its own Ray, whose workers die on poison.wav: a transient failure.
    env = dict(os.environ, **{FAULT_ENV: "poison"})
    died = subprocess.run([sys.executable, "-m", "ser_batch.cli", "score", str(archive), "--out", str(out),
                           "--num-cpus", "1", "--no-progress", "--set", "ray.max_retries=0"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert died.returncode == 0, died.stderr[-2000:]
    files = pd.read_parquet(out / "files").set_index("path")
    assert files.loc["poison.wav", "error"].startswith("the worker scoring this file died")

    runner = CliRunner()
    skipped = runner.invoke(main, ["score", str(archive), "--out", str(out), "--no-progress"])
    assert skipped.exit_code == 0, skipped.output
    assert "0 files scored (3 already done)" in skipped.output
    assert "1 file failed before and was skipped; --retry-errors scores it again" in skipped.output
    # --fail-on-error counts the folder's failed rows, as extract --resume --fail-on-error does
    failing = runner.invoke(main, ["score", str(archive), "--out", str(out), "--no-progress", "--fail-on-error"])
    assert failing.exit_code == 3
    assert f"error: 1 file in {out} could not be scored (0 in this run; --fail-on-error)" in failing.output

    healed = runner.invoke(main, ["score", str(archive), "--out", str(out), "--no-progress", "--retry-errors",
                                  "--fail-on-error"])
    assert healed.exit_code == 0, healed.output
    assert "1 file scored (2 already done)" in healed.output
    assert "1 file that failed before scored again (--retry-errors)" in healed.output
    files, segments = pd.read_parquet(out / "files"), pd.read_parquet(out / "segments")
    assert sorted(files.path) == ["f0.wav", "f1.wav", "poison.wav"] and files.error.isna().all()
    poison = files.set_index("path").loc["poison.wav"]
    assert (segments.path == "poison.wav").sum() == poison.n_segments > 0
    # idempotent: again with --retry-errors, nothing to do and nothing duplicated
    again = run_score(archive, out, config=load_config(), retry_errors=True, progress=False)
    assert (again.files_scored, again.retried) == (0, 0)
    assert len(pd.read_parquet(out / "files")) == 3 and len(pd.read_parquet(out / "segments")) == len(segments)


def test_rows_of_deleted_files_are_counted_and_pruned(tmp_path: Path, ray_session: None) -> None:
    archive = tmp_path / "archive"
    for i in range(3):
        write_audio(archive / f"f{i}.wav", duration_s=1.5, seed=i)
    out = tmp_path / "out"
    first = run_score(archive, out, config=load_config(), progress=False)
    assert first.files_scored == 3
    (archive / "f1.wav").unlink()
    kept = run_score(archive, out, config=load_config(), progress=False)
    assert (kept.files_gone, kept.files_pruned) == (1, 0)
    assert f"1 file in {out} no longer in the input (deleted or moved); --prune removes its rows" in kept.notes()
    assert "f1.wav" in set(pd.read_parquet(out / "files").path)
    # the no-op run did not lose the record of the run that did the work
    record = json.loads((out / "_run.json").read_text())
    assert record["files_scored"] == 0 and record["files_gone"] == 1
    assert record["last_work"]["files_scored"] == 3 and record["last_work"]["wall_s"] > 0

    pruned = run_score(archive, out, config=load_config(), prune=True, progress=False)
    assert pruned.files_pruned == 1 and pruned.notes() == ["1 file no longer in the input: its rows removed (--prune)"]
    files, segments = pd.read_parquet(out / "files"), pd.read_parquet(out / "segments")
    assert sorted(files.path) == ["f0.wav", "f2.wav"] and sorted(set(segments.path)) == ["f0.wav", "f2.wav"]
    record = json.loads((out / "_run.json").read_text())
    assert record["files_pruned"] == 1 and "last_work" not in record
    again = run_score(archive, out, config=load_config(), prune=True, progress=False)
    assert (again.files_gone, again.files_pruned, again.files_scored) == (0, 0, 0)
    assert len(pd.read_parquet(out / "files")) == 2 and len(pd.read_parquet(out / "segments")) == len(segments)
    assert json.loads((out / "_run.json").read_text())["last_work"]["files_pruned"] == 1


def test_rows_of_another_list_are_not_gone(tmp_path: Path, ray_session: None) -> None:
    for name in ("a.wav", "b.wav"):
        write_audio(tmp_path / name, duration_s=1.5)
    (tmp_path / "first.txt").write_text("a.wav\n")
    (tmp_path / "second.txt").write_text("b.wav\n")
    run_score(tmp_path / "first.txt", tmp_path / "out", config=load_config(), progress=False)
    summary = run_score(tmp_path / "second.txt", tmp_path / "out", config=load_config(), prune=True, progress=False)
    assert (summary.files_gone, summary.files_pruned) == (0, 0)
    assert sorted(pd.read_parquet(tmp_path / "out/files").path) == ["a.wav", "b.wav"]


def _in_process():  # noqa: ANN202
    from ser_batch.cluster.engine import Executor

    return Executor(in_process=True)


def _two_nights(root: Path) -> Path:
    """nights/n1 and nights/n2, both holding call_0001.wav and call_0002.wav (other audio), n1 a third."""
    for night, count in (("n1", 3), ("n2", 2)):
        for i in range(1, count + 1):
            write_audio(root / night / f"call_{i:04d}.wav", duration_s=1.5, seed=10 * len(night) + i + count)
    return root


def test_a_second_archive_of_the_same_names_is_refused_not_merged(tmp_path: Path) -> None:
    """Issue 25: `score nights/n1 --out X` then `score nights/n2 --out X` replaced night 1's rows with
    night 2's (the same stored paths), and --prune then deleted the rows of n1's third file although it
    exists. OUT records its input root; another archive is refused, nothing of OUT touched."""
    nights = _two_nights(tmp_path / "nights")
    out = tmp_path / "X"
    first = run_score(nights / "n1", out, config=load_config(), progress=False, executor=_in_process())
    assert first.files_scored == 3
    assert json.loads((out / "_score.json").read_text())["input_root"] == str((nights / "n1").resolve())
    before = sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*"))
    result = CliRunner().invoke(main, ["score", str(nights / "n2"), "--out", str(out), "--in-process", "--prune"])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"error: {out} holds the scores of another archive, below {nights / 'n1'} ")
    assert f"common folder {nights} into a new one" in result.output and len(result.output.splitlines()) == 1
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*")) == before
    # Both nights in one folder: their common root, the paths telling the nights apart.
    both = run_score(nights, tmp_path / "Y", config=load_config(), progress=False, executor=_in_process())
    assert both.files_scored == 5
    assert sorted(pd.read_parquet(tmp_path / "Y/files").path) == [
        "n1/call_0001.wav", "n1/call_0002.wav", "n1/call_0003.wav", "n2/call_0001.wav", "n2/call_0002.wav"]


def test_a_folder_inside_the_archive_scores_under_its_paths_and_prunes_only_its_own(tmp_path: Path) -> None:
    """A run over one night of an archive scored whole stores the archive's paths (nothing scored twice),
    and "no longer in the input" and --prune concern only that night's files."""
    nights = _two_nights(tmp_path / "nights")
    out = tmp_path / "X"
    run_score(nights, out, config=load_config(), progress=False, executor=_in_process())
    (nights / "n1/call_0003.wav").unlink()
    write_audio(nights / "n2/call_0003.wav", duration_s=1.5, seed=99)
    night = run_score(nights / "n2", out, config=load_config(), prune=True, progress=False, executor=_in_process())
    assert (night.files_scored, night.files_skipped, night.files_gone, night.files_pruned) == (1, 2, 0, 0)
    files = pd.read_parquet(out / "files")
    assert sorted(files.path) == ["n1/call_0001.wav", "n1/call_0002.wav", "n1/call_0003.wav",
                                  "n2/call_0001.wav", "n2/call_0002.wav", "n2/call_0003.wav"]
    assert json.loads((out / "_score.json").read_text())["input_root"] == str(nights.resolve())
    whole = run_score(nights, out, config=load_config(), prune=True, progress=False, executor=_in_process())
    assert (whole.files_scored, whole.files_pruned) == (0, 1)
    assert "n1/call_0003.wav" not in set(pd.read_parquet(out / "files").path)


def test_a_moved_archive_keeps_its_rows_and_a_folder_without_a_root_takes_this_one(tmp_path: Path) -> None:
    """The recorded root gone and the same files below another one: the archive moved, its rows stay
    (nothing scored again) and the new root is recorded, with a note. A folder made before OUT recorded
    its root takes the root of its next run."""
    nights = _two_nights(tmp_path / "nights")
    out = tmp_path / "X"
    run_score(nights / "n1", out, config=load_config(), progress=False, executor=_in_process())
    moved = tmp_path / "moved"
    os.rename(nights / "n1", moved)
    again = run_score(moved, out, config=load_config(), progress=False, executor=_in_process())
    assert (again.files_scored, again.files_skipped, again.files_gone) == (0, 3, 0)
    assert (f"the input root {out} recorded, {(nights / 'n1').resolve()}, no longer exists: its paths are now read "
            f"below {moved.resolve()} (the archive moved)") in again.notes()
    assert json.loads((out / "_score.json").read_text())["input_root"] == str(moved.resolve())
    record = json.loads((out / "_score.json").read_text())
    del record["input_root"]
    (out / "_score.json").write_text(json.dumps(record))
    adopted = run_score(moved, out, config=load_config(), progress=False, executor=_in_process())
    assert (adopted.files_scored, adopted.files_skipped) == (0, 3) and not adopted.root_moved_from
    assert json.loads((out / "_score.json").read_text())["input_root"] == str(moved.resolve())
    with pytest.raises(DatasetError, match="holds the scores of another archive"):
        run_score(nights / "n2", out, config=load_config(), progress=False, executor=_in_process())
    # ... but not the root of another archive of the same names: night 2 into a folder of night 1
    # made before roots were recorded was the issue's case (night 1's rows replaced, its third file
    # counted as gone).
    (out / "_score.json").write_text(json.dumps(record))
    rows = set(pd.read_parquet(out / "files").path)
    with pytest.raises(DatasetError, match="scored before it recorded its input root, and none of the 2 files"):
        run_score(nights / "n2", out, config=load_config(), progress=False, executor=_in_process())
    assert set(pd.read_parquet(out / "files").path) == rows and "input_root" not in json.loads(
        (out / "_score.json").read_text())


def test_names_are_stored_alike_under_any_locale_and_an_old_spelling_is_replaced(tmp_path: Path) -> None:
    """Issue 25: with PYTHONUTF8=0 under a POSIX locale, café.wav was stored as caf\\xc3\\xa9.wav and a
    later UTF-8 run added a second row for the same file, the old one never counted as gone. Both runs
    now store café.wav; a folder holding the old spelling has that row replaced, not doubled."""
    import pyarrow.parquet as pq

    write_audio(tmp_path / "in/café.wav", duration_s=1.5)
    write_audio(tmp_path / "in/plain.wav", duration_s=1.5, seed=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "PYTHONUTF8", "PYTHONIOENCODING"))}
    env.update(PYTHONUTF8="0", LC_ALL="C", LANG="C")
    probe = subprocess.run([sys.executable, "-c", "import sys; print(sys.getfilesystemencoding())"], env=env,
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "ascii"  # the locale the red team ran under
    out = tmp_path / "out"
    posix = subprocess.run([sys.executable, "-m", "ser_batch.cli", "score", str(tmp_path / "in"), "--out", str(out),
                            "--in-process", "--no-progress"], env=env, capture_output=True, text=True, timeout=300)
    assert posix.returncode == 0, posix.stderr
    assert sorted(pd.read_parquet(out / "files").path) == ["café.wav", "plain.wav"]
    again = run_score(tmp_path / "in", out, config=load_config(), progress=False, executor=_in_process())
    assert (again.files_scored, again.files_skipped) == (0, 2)
    # A folder scored by an older version under that locale: its row of the file under the old spelling.
    for part in [*(out / "files").glob("part-*"), *(out / "segments").glob("part-*")]:
        table = pq.read_table(part)
        old = [p.replace("café", "caf\\xc3\\xa9") for p in table.column("path").to_pylist()]
        pq.write_table(table.set_column(table.schema.get_field_index("path"), table.schema.field("path"),
                                        pa.array(old, pa.string())), part)
    assert sorted(pd.read_parquet(out / "files").path) == ["caf\\xc3\\xa9.wav", "plain.wav"]
    replaced = run_score(tmp_path / "in", out, config=load_config(), progress=False, executor=_in_process())
    assert (replaced.files_scored, replaced.files_skipped) == (1, 1)
    files, segments = pd.read_parquet(out / "files"), pd.read_parquet(out / "segments")
    assert sorted(files.path) == ["café.wav", "plain.wav"] and sorted(set(segments.path)) == ["café.wav", "plain.wav"]


# ------------------------------------------------------------------------- input lists


def test_list_comments_need_a_blank_after_the_hash_and_spellings_of_one_file_count_once(tmp_path: Path) -> None:
    for name in ("b.wav", "#hash.wav", "sub/c.wav"):
        write_audio(tmp_path / name, duration_s=0.5)
    (tmp_path / "a").mkdir()
    (tmp_path / "link.wav").symlink_to(tmp_path / "b.wav")
    listing = tmp_path / "list.txt"
    listing.write_text("# a comment\n#\n## a heading\n\t# indented comment\n#hash.wav\na/../b.wav\nb.wav\n"
                       f"link.wav\n{tmp_path / 'b.wav'}\nsub/c.wav\n./sub/c.wav\n")
    entries = list_input(listing, extensions=Config().audio.extensions)
    # the first spelling of each file is kept
    assert [rel for rel, _ in entries] == ["#hash.wav", "a/../b.wav", "sub/c.wav"]
    assert [source for _, source in entries] == [tmp_path / "#hash.wav", tmp_path / "b.wav", tmp_path / "sub/c.wav"]


def test_list_entries_of_files_that_do_not_exist_stay_distinct(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text("gone1.wav\ngone2.wav\ngone1.wav\n")
    assert [rel for rel, _ in list_input(tmp_path / "list.txt", extensions=(".wav",))] == ["gone1.wav", "gone2.wav"]


# ---------------------------------------------------------------------------- extract


def test_extract_a_name_that_is_not_utf8_and_lying_headers_then_resume(tmp_path: Path, ray_session: None) -> None:
    archive = hostile_archive(tmp_path / "archive")
    out = tmp_path / "features"
    config = Config().replace(extract={"shard_size": 2})
    summary = run_extract(archive, out, config=config, progress=False)
    assert (summary.files, summary.errors) == (5, 3)
    report = summary.failure_report()
    assert "bad\\xfe_broken.wav: not an audio file" in report
    assert "one_hz.wav: implausible header: sample rate 1 Hz is below 4000 Hz" in report
    assert "days.flac: implausible header: 34359738368 frames" in report
    rows = pd.read_parquet(out).set_index("path")
    assert sorted(rows.index) == sorted(stored_path(os.fsdecode(n)) for n in
                                        [b"good.wav", BAD_NAME, BAD_BROKEN, b"one_hz.wav", b"days.flac"])
    assert pd.isna(rows.loc["bad\\xffname.wav", "error"])
    assert np.isfinite(np.asarray(rows.loc["bad\\xffname.wav", "features"])).all()
    resumed = run_extract(archive, out, config=config, resume=True, progress=False)
    assert resumed.nothing_to_do and (resumed.files, resumed.errors) == (5, 3)
    assert len(pd.read_parquet(out)) == 5

"""Tests for ``extract --augment`` (:mod:`ser_batch.pipeline.extract` with ``extract.augment``):
one row per file and augmentation, deterministic, idempotent and resumable."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ser_batch import schema
from ser_batch.audio.telephony import augment_signal, augmentation_rng
from ser_batch.config import Config
from ser_batch.data import parts
from ser_batch.data.featureset import load_feature_set
from ser_batch.data.labels import discover_audio
from ser_batch.features.recipes import checked_features, decode_for_features
from ser_batch.pipeline.extract import ExtractSummary, plan_shards, run_extract
from ser_batch.pipeline.extract_shard import ExtractRun

from conftest import CORPUS_BROKEN, CORPUS_GOOD

AUGMENT = ("telephone-ulaw", "noise-20db", "tempo-1.05")
CONFIG = Config().replace(extract={"shard_size": 3, "augment": list(AUGMENT)})
N_FILES = len(CORPUS_GOOD) + len(CORPUS_BROKEN)
N_AUGMENTED = len(CORPUS_GOOD) * len(AUGMENT)


@pytest.fixture(scope="module")
def augmented(ray_session: None, corpus: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[ExtractSummary, Path]:
    out = tmp_path_factory.mktemp("augment") / "features"
    return run_extract(corpus, out, config=CONFIG, progress=False), out


def keyed_rows(out: Path) -> dict[tuple[str, str | None], dict]:
    rows = parts.read_parts(out).to_pylist()
    keys = Counter((r[schema.PATH], r[schema.AUGMENT]) for r in rows)
    assert max(keys.values()) == 1, "a (path, augment) pair twice"
    return {(r[schema.PATH], r[schema.AUGMENT]): r for r in rows}


def test_summary_counts_augmented_rows(augmented: tuple[ExtractSummary, Path]) -> None:
    summary, out = augmented
    assert (summary.files, summary.errors, summary.augmented) == (N_FILES, 3, N_AUGMENTED)
    assert summary.line().startswith(
        f"{N_FILES} files, 3 errors, {N_AUGMENTED} augmented rows (telephone-ulaw, noise-20db, tempo-1.05), ")
    manifest = json.loads((out / parts.MANIFEST).read_text())
    assert manifest["augment"] == list(AUGMENT) and manifest["augmented_rows"] == N_AUGMENTED


def test_one_row_per_file_and_augmentation(augmented: tuple[ExtractSummary, Path]) -> None:
    rows = keyed_rows(augmented[1])
    expected = {(p, a) for p in CORPUS_GOOD for a in (None, *AUGMENT)} | {(p, None) for p in CORPUS_BROKEN}
    assert set(rows) == expected
    # Error rows stay one per file; copies share the file's labels and audio info.
    for path in CORPUS_BROKEN:
        assert rows[path, None][schema.ERROR] is not None
    for path in CORPUS_GOOD:
        original = rows[path, None]
        for name in AUGMENT:
            row = rows[path, name]
            assert row[schema.ERROR] is None and np.isfinite(row[schema.FEATURES]).all()
            for column in (*schema.LABEL_COLUMNS, schema.DURATION_S, schema.SAMPLE_RATE_IN):
                assert row[column] == original[column]
            assert not np.allclose(row[schema.FEATURES], original[schema.FEATURES])
    paths = parts.read_parts(augmented[1]).column(schema.PATH).to_pylist()
    assert paths == sorted(paths)  # a file's copies follow its own row


def test_band_column(augmented: tuple[ExtractSummary, Path]) -> None:
    rows = keyed_rows(augmented[1])
    for (path, name), row in rows.items():
        if path in CORPUS_BROKEN:
            assert row[schema.BAND] is None
        elif name == "telephone-ulaw" or path == "phone/call_8k.wav":
            assert row[schema.BAND] == "narrow", (path, name)
        else:
            assert row[schema.BAND] == "wide", (path, name)


@pytest.mark.parametrize("name", AUGMENT)
def test_augmented_features_are_reproducible_outside_ray(augmented: tuple[ExtractSummary, Path], corpus: Path,
                                                          name: str) -> None:
    # Seeded from (path, augmentation): the driver computes what the Ray worker wrote.
    path = "Actor_03/03-01-04-02-01-02-03.wav"
    y, _ = decode_for_features(corpus / path, config=CONFIG)
    copy = augment_signal(y, CONFIG.audio.sample_rate, name, rng=augmentation_rng(path, name))
    expected = checked_features(copy, config=CONFIG).vector
    np.testing.assert_array_equal(np.asarray(keyed_rows(augmented[1])[path, name][schema.FEATURES],
                                             dtype=np.float32), expected)


def test_feature_set_of_augmented_output(augmented: tuple[ExtractSummary, Path]) -> None:
    data = load_feature_set(augmented[1])
    assert len(data.paths) == len(CORPUS_GOOD) * (1 + len(AUGMENT))
    assert Counter(data.augment) == {None: len(CORPUS_GOOD), **{a: len(CORPUS_GOOD) for a in AUGMENT}}
    originals = data.originals()
    assert sorted(originals.paths) == sorted(CORPUS_GOOD) and all(a is None for a in originals.augment)
    labelled = data.labelled()
    assert all(e is not None for e in labelled.emotion)
    assert len(labelled.augment) == len(labelled.band) == len(labelled.paths)
    narrow = data.subset(data.band == "narrow")
    # Every row of the 8 kHz file, and the telephone copy of every other.
    expected = {("phone/call_8k.wav", a) for a in (None, *AUGMENT)} | {(p, "telephone-ulaw") for p in CORPUS_GOOD}
    assert set(zip(narrow.paths, narrow.augment)) == expected and len(narrow.paths) == len(expected)


def test_resume_does_not_duplicate_augmented_rows(ray_session: None, corpus: Path, tmp_path: Path,
                                                  augmented: tuple[ExtractSummary, Path]) -> None:
    out = tmp_path / "features"
    run_extract(corpus, out, config=CONFIG, progress=False)
    names = sorted(parts.existing_parts(out))
    before = {p: pq.read_table(out / p) for p in names}
    (out / names[2]).unlink()
    (out / parts.MANIFEST).unlink()
    summary = run_extract(corpus, out, config=CONFIG, resume=True, progress=False)
    assert (summary.skipped_parts, summary.augmented, summary.errors) == (len(names) - 1, N_AUGMENTED, 3)
    assert sorted(parts.existing_parts(out)) == names
    assert len(keyed_rows(out)) == N_FILES + N_AUGMENTED
    # The recomputed part holds the same numbers as the first time (and as the other run).
    assert pq.read_table(out / names[2]).equals(before[names[2]])
    assert pq.read_table(augmented[1] / names[2]).equals(before[names[2]])
    again = run_extract(corpus, out, config=CONFIG, resume=True, progress=False)
    assert again.nothing_to_do and again.augmented == N_AUGMENTED
    assert "36 augmented rows" not in again.line() and f"{N_AUGMENTED} augmented rows" in again.line()


def test_resume_with_other_augmentations_recomputes(ray_session: None, corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "features"
    plain = CONFIG.replace(extract={"augment": []})
    run_extract(corpus, out, config=plain, progress=False)
    old = set(parts.existing_parts(out))
    summary = run_extract(corpus, out, config=CONFIG.replace(extract={"augment": ["gain--6db"]}), resume=True,
                          progress=False)
    assert summary.skipped_parts == 0 and summary.augmented == len(CORPUS_GOOD)
    assert not old & set(parts.existing_parts(out))
    assert Counter(parts.read_parts(out).column(schema.AUGMENT).to_pylist()) == {None: N_FILES,
                                                                                  "gain--6db": len(CORPUS_GOOD)}


def test_part_names_depend_on_augment() -> None:
    paths = [f"{i}.wav" for i in range(5)]
    names = {tuple(s.name for s in plan_shards(paths, config=CONFIG.replace(extract={"augment": a})))
             for a in ([], ["noise-20db"], ["noise-10db"], ["noise-20db", "gain-3db"], ["gain-3db", "noise-20db"])}
    assert len(names) == 5  # order matters too: it is the order of the rows


def test_extract_shard_with_augment_twice_is_idempotent(corpus: Path, tmp_path: Path) -> None:
    shard = plan_shards(discover_audio(corpus, extensions=CONFIG.audio.extensions), config=CONFIG)[0]
    job = ExtractRun(str(corpus), str(tmp_path), CONFIG)
    first = job.run_shard(shard)
    written = (tmp_path / shard.name).read_bytes()
    second = job.run_shard(shard)
    assert second == first and first.augmented == 3 * len(AUGMENT)
    assert [p.name for p in tmp_path.iterdir()] == [shard.name] and (tmp_path / shard.name).read_bytes() == written


def test_augmented_copy_that_fails_is_left_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from conftest import write_audio

    # 2100 samples: one analysis frame (2048) for the file, but not for its copy at 1.25x speed.
    write_audio(tmp_path / "in" / "short.wav", duration_s=2100 / 16000)
    config = CONFIG.replace(extract={"augment": ["tempo-1.25", "gain--3db"]})
    shard = plan_shards(["short.wav"], config=config)[0]
    result = ExtractRun(str(tmp_path / "in"), str(tmp_path), config).run_shard(shard)
    assert (result.errors, result.augmented) == (0, 1)
    table = pq.read_table(tmp_path / shard.name)
    assert table.column(schema.AUGMENT).to_pylist() == [None, "gain--3db"]
    assert "tempo-1.25 left out" in caplog.text


@pytest.mark.parametrize(("augmented", "augment", "expected"), [
    (0, (), "3 files, 1 error, 2 parts in 2.0 s (1.5 files/s) -> out"),
    (4, ("telephone-pcm", "telephone-ulaw"),
     "3 files, 1 error, 4 augmented rows (telephone-pcm, telephone-ulaw), 2 parts in 2.0 s (1.5 files/s) -> out"),
    (1, ("gain-3db",), "3 files, 1 error, 1 augmented row (gain-3db), 2 parts in 2.0 s (1.5 files/s) -> out"),
])
def test_summary_line_with_augment(augmented: int, augment: tuple[str, ...], expected: str) -> None:
    assert ExtractSummary(Path("out"), 3, 1, 2, 0, 2.0, (), augmented, augment).line() == expected

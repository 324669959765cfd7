"""Tests for :mod:`ser_batch.data.labels`: RAVDESS names, file discovery, label CSVs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ser_batch import schema
from ser_batch.config import Config, load_config
from ser_batch.data.labels import Labels, discover_audio, labels_for, load_labels_csv, parse_ravdess_name
from ser_batch.errors import DatasetError

EXTENSIONS = Config().audio.extensions


# --- RAVDESS names -----------------------------------------------------------


def test_parse_documented_example() -> None:
    assert parse_ravdess_name("03-01-05-01-02-01-12.wav") == Labels(
        emotion="angry", intensity="normal", statement=2, repetition=1, actor=12, gender="female"
    )


@pytest.mark.parametrize(
    "name",
    [
        "03-01-08-02-01-02-01.wav",
        "Actor_01/03-01-08-02-01-02-01.wav",
        "/data/ravdess/Audio_Speech_Actors_01-20_16k/Actor_01/03-01-08-02-01-02-01.wav",
        "03-01-08-02-01-02-01.FLAC",
        "03-01-08-02-01-02-01",
    ],
)
def test_parse_reads_only_the_stem(name: str) -> None:
    assert parse_ravdess_name(name) == Labels(
        emotion="surprised", intensity="strong", statement=1, repetition=2, actor=1, gender="male"
    )


@pytest.mark.parametrize(("code", "emotion"), [(f"{i + 1:02d}", e) for i, e in enumerate(schema.EMOTIONS)])
def test_parse_every_emotion(code: str, emotion: str) -> None:
    labels = parse_ravdess_name(f"03-01-{code}-01-01-01-01.wav")
    assert labels is not None and labels.emotion == emotion


def test_emotion_codes_follow_ravdess_order() -> None:
    assert schema.EMOTIONS == ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")


@pytest.mark.parametrize(("code", "intensity"), [("01", "normal"), ("02", "strong")])
def test_parse_intensity(code: str, intensity: str) -> None:
    labels = parse_ravdess_name(f"03-01-03-{code}-01-01-01.wav")
    assert labels is not None and labels.intensity == intensity


@pytest.mark.parametrize(("statement", "repetition"), [(1, 1), (1, 2), (2, 1), (2, 2)])
def test_parse_statement_and_repetition(statement: int, repetition: int) -> None:
    labels = parse_ravdess_name(f"03-01-03-01-{statement:02d}-{repetition:02d}-01.wav")
    assert labels is not None
    assert (labels.statement, labels.repetition) == (statement, repetition)


@pytest.mark.parametrize("actor", range(1, 25))
def test_parse_actor_and_gender(actor: int) -> None:
    labels = parse_ravdess_name(f"03-01-03-01-01-01-{actor:02d}.wav")
    assert labels is not None and labels.actor == actor
    assert labels.gender == ("male" if actor % 2 == 1 else "female")


@pytest.mark.parametrize(
    "name",
    [
        "00-01-05-01-01-01-01.wav",  # modality 0
        "04-01-05-01-01-01-01.wav",  # modality 4
        "03-03-05-01-01-01-01.wav",  # vocal channel 3
        "03-01-00-01-01-01-01.wav",  # emotion 0
        "03-01-09-01-01-01-01.wav",  # emotion 9
        "03-01-05-03-01-01-01.wav",  # intensity 3
        "03-01-05-01-03-01-01.wav",  # statement 3
        "03-01-05-01-01-00-01.wav",  # repetition 0
        "03-01-05-01-01-01-00.wav",  # actor 0
        "03-01-05-01-01-01-25.wav",  # actor 25
    ],
)
def test_parse_invalid_codes(name: str) -> None:
    assert parse_ravdess_name(name) is None


@pytest.mark.parametrize(
    "name",
    [
        "interview.wav",
        "03-01-05-01-01-01.wav",  # six fields
        "03-01-05-01-01-01-01-01.wav",  # eight fields
        "3-1-5-1-1-1-1.wav",  # one digit each
        "03-01-05-01-01-01-001.wav",
        "03_01_05_01_01_01_01.wav",
        "x03-01-05-01-01-01-01.wav",
        "03-01-05-01-01-01-01.backup.wav",
        "03-01-05-01-01-01-01/notes.txt",  # the folder looks RAVDESS, the file does not
        "",
    ],
)
def test_parse_non_ravdess_names(name: str) -> None:
    assert parse_ravdess_name(name) is None


def test_labels_as_row_uses_schema_columns() -> None:
    row = parse_ravdess_name("03-01-05-01-02-01-12.wav").as_row()  # type: ignore[union-attr]
    assert tuple(row) == schema.LABEL_COLUMNS
    assert Labels().as_row() == dict.fromkeys(schema.LABEL_COLUMNS)


# --- discovery -----------------------------------------------------------------


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_discover_recursive_sorted_posix(tmp_path: Path) -> None:
    touch(tmp_path, "b.wav", "a/z.flac", "a/b/c/deep.ogg", "A/upper.wav", "a/y.mp3")
    assert discover_audio(tmp_path, extensions=EXTENSIONS) == [
        "A/upper.wav", "a/b/c/deep.ogg", "a/y.mp3", "a/z.flac", "b.wav",
    ]


def test_discover_extensions_case_insensitive(tmp_path: Path) -> None:
    touch(tmp_path, "one.WAV", "two.Flac", "three.wav", "notes.txt", "wav", "archive.wav.zip", "x.wavx")
    assert discover_audio(tmp_path, extensions=[".wav", ".flac"]) == ["one.WAV", "three.wav", "two.Flac"]
    # Upper-case extensions in the config match too.
    assert discover_audio(tmp_path, extensions=[".WAV"]) == ["one.WAV", "three.wav"]


def test_discover_only_requested_extensions(tmp_path: Path) -> None:
    touch(tmp_path, "a.wav", "b.flac", "c.ogg")
    assert discover_audio(tmp_path, extensions=[".flac"]) == ["b.flac"]


def test_discover_skips_hidden_files_and_folders(tmp_path: Path) -> None:
    touch(tmp_path, "keep.wav", ".hidden.wav", ".cache/x.wav", "sub/.git/y.wav", "sub/ok.wav")
    assert discover_audio(tmp_path, extensions=EXTENSIONS) == ["keep.wav", "sub/ok.wav"]


def test_discover_skips_folders_named_like_audio(tmp_path: Path) -> None:
    (tmp_path / "folder.wav").mkdir()
    touch(tmp_path, "folder.wav/inner.wav")
    assert discover_audio(tmp_path, extensions=EXTENSIONS) == ["folder.wav/inner.wav"]


def test_discover_hidden_root_is_fine(tmp_path: Path) -> None:
    # Only names *below* the root count: an input folder may itself be hidden.
    root = tmp_path / ".data"
    touch(root, "a.wav")
    assert discover_audio(root, extensions=EXTENSIONS) == ["a.wav"]


def test_discover_empty_folder(tmp_path: Path) -> None:
    assert discover_audio(tmp_path, extensions=EXTENSIONS) == []


def test_discover_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="input folder not found"):
        discover_audio(tmp_path / "nope", extensions=EXTENSIONS)
    touch(tmp_path, "file.wav")
    with pytest.raises(DatasetError, match="input folder not found"):
        discover_audio(tmp_path / "file.wav", extensions=EXTENSIONS)


def test_discover_follows_symlinked_folders(tmp_path: Path) -> None:
    # An input folder of links to actor folders kept elsewhere (the issue's `extract DIR`).
    store = tmp_path / "store"
    touch(store, "Actor_01/a.wav", "Actor_02/b.wav", "Actor_02/deeper/c.flac")
    root = tmp_path / "input"
    root.mkdir()
    for actor in ("Actor_01", "Actor_02"):
        (root / actor).symlink_to(store / actor, target_is_directory=True)
    assert discover_audio(root, extensions=EXTENSIONS) == [
        "Actor_01/a.wav", "Actor_02/b.wav", "Actor_02/deeper/c.flac",
    ]


def test_discover_guards_against_symlink_cycles(tmp_path: Path) -> None:
    touch(tmp_path, "a/x.wav", "b/y.wav")
    (tmp_path / "a/up").symlink_to(tmp_path, target_is_directory=True)  # back to the root
    (tmp_path / "b/self").symlink_to(tmp_path / "b", target_is_directory=True)
    (tmp_path / "b/to_a").symlink_to(tmp_path / "a", target_is_directory=True)  # a second way to a/
    assert discover_audio(tmp_path, extensions=EXTENSIONS) == ["a/x.wav", "b/y.wav"]


def test_discover_skips_hidden_linked_folders(tmp_path: Path) -> None:
    touch(tmp_path, "elsewhere/z.wav", "root/keep.wav")
    (tmp_path / "root/.cache").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert discover_audio(tmp_path / "root", extensions=EXTENSIONS) == ["keep.wav"]


def test_discover_lists_dangling_links_and_odd_files(tmp_path: Path) -> None:
    # They must reach the audio checks and become error rows, not vanish.
    touch(tmp_path, "ok.wav")
    (tmp_path / "gone.wav").symlink_to(tmp_path / "missing.wav")
    (tmp_path / "loop.wav").symlink_to(tmp_path / "loop.wav")
    (tmp_path / "gone_folder").symlink_to(tmp_path / "missing_folder")  # no audio extension: ignored
    os.mkfifo(tmp_path / "pipe.wav")
    assert discover_audio(tmp_path, extensions=EXTENSIONS) == ["gone.wav", "loop.wav", "ok.wav", "pipe.wav"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root lists folders without permission")
def test_discover_warns_about_an_unreadable_folder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    touch(tmp_path, "ok.wav", "locked/x.wav")
    (tmp_path / "locked").chmod(0)
    try:
        assert discover_audio(tmp_path, extensions=EXTENSIONS) == ["ok.wav"]
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert "cannot list folder" in caplog.text and "locked" in caplog.text


def test_discover_warns_about_a_folder_it_cannot_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    # As root no permission bit stops a listing: simulate the refusal everyone else gets.
    touch(tmp_path, "ok.wav", "locked/x.wav")
    real_scandir = os.scandir

    def refuse(path: object) -> object:
        if Path(path).name == "locked":  # type: ignore[arg-type]
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", refuse)
    assert discover_audio(tmp_path, extensions=EXTENSIONS) == ["ok.wav"]
    assert "cannot list folder" in caplog.text and "Permission denied" in caplog.text


@pytest.mark.parametrize("extensions", [(".wav",), (".flac", ".ogg"), (".au",)])
def test_discover_honours_configured_extensions(tmp_path: Path, extensions: tuple[str, ...]) -> None:
    # audio.extensions is the one list of audio endings: discovery must follow it, not a copy.
    names = ["a.wav", "b.flac", "c.ogg", "d.au", "e.mp3"]
    touch(tmp_path, *names)
    config = load_config(overrides=[f"audio.extensions={list(extensions)!r}".replace("'", '"')])
    assert discover_audio(tmp_path, extensions=config.audio.extensions) == [
        n for n in names if Path(n).suffix in extensions]


def test_discover_with_default_config_finds_every_format_ser_batch_decodes(tmp_path: Path) -> None:
    names = [f"x{ext}" for ext in (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".opus")]
    touch(tmp_path, *names, "notes.txt", "clip.m4a")
    assert discover_audio(tmp_path, extensions=load_config().audio.extensions) == sorted(names)


# --- label CSV -------------------------------------------------------------------


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_labels_csv_minimal(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "labels.csv", "path,label\ncalls/a.wav,angry\nb.wav,calm\n")
    assert load_labels_csv(csv_path, root=tmp_path) == {
        "calls/a.wav": Labels(emotion="angry"),
        "b.wav": Labels(emotion="calm"),
    }


def test_labels_csv_optional_columns_and_blanks(tmp_path: Path) -> None:
    csv_path = write_csv(
        tmp_path / "labels.csv",
        "path,label,actor,gender\n"
        " a.wav , happy , 7 , female \n"
        "b.wav,sad,,\n"
        "c.wav,,3,male\n",
    )
    assert load_labels_csv(csv_path, root=tmp_path) == {
        "a.wav": Labels(emotion="happy", actor=7, gender="female"),
        "b.wav": Labels(emotion="sad"),
        "c.wav": Labels(actor=3, gender="male"),  # empty label means unknown
    }


def test_labels_csv_column_order_does_not_matter(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "labels.csv", "gender,label,path\nmale,sad,x.wav\n")
    assert load_labels_csv(csv_path) == {"x.wav": Labels(emotion="sad", gender="male")}


def test_labels_csv_absolute_paths_become_relative(tmp_path: Path) -> None:
    root = tmp_path / "input"
    absolute = (root / "calls" / "a.wav").resolve()
    csv_path = write_csv(tmp_path / "labels.csv", f"path,label\n{absolute},angry\n./b.wav,calm\n")
    assert load_labels_csv(csv_path, root=root) == {
        "calls/a.wav": Labels(emotion="angry"),
        "b.wav": Labels(emotion="calm"),
    }


def test_labels_csv_absolute_path_outside_root(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "labels.csv", "path,label\n/elsewhere/a.wav,angry\n")
    with pytest.raises(DatasetError, match=r"labels.csv:2: /elsewhere/a.wav is not inside"):
        load_labels_csv(csv_path, root=tmp_path / "input")


def test_labels_csv_missing_column(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "labels.csv", "file,emotion\na.wav,angry\n")
    with pytest.raises(DatasetError, match=r"needs the columns path,label \(got file, emotion\)"):
        load_labels_csv(csv_path)


def test_labels_csv_duplicate_path(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "labels.csv", "path,label\na.wav,angry\nb.wav,sad\n./a.wav,calm\n")
    with pytest.raises(DatasetError, match=r"labels.csv:4: duplicate path a.wav"):
        load_labels_csv(csv_path)


def test_labels_csv_bad_actor(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "labels.csv", "path,label,actor\na.wav,angry,7\nb.wav,sad,seven\n")
    with pytest.raises(DatasetError, match=r"labels.csv:3: actor must be an integer, got 'seven'"):
        load_labels_csv(csv_path)


@pytest.mark.parametrize("text", ["path,label\n,angry\n", "label,path\nangry\n"])
def test_labels_csv_empty_path(tmp_path: Path, text: str) -> None:
    # The second CSV has a short row: csv gives None for the missing path column.
    csv_path = write_csv(tmp_path / "labels.csv", text)
    with pytest.raises(DatasetError, match=r"labels.csv:2: empty path"):
        load_labels_csv(csv_path)


def test_labels_csv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="labels file not found"):
        load_labels_csv(tmp_path / "nope.csv")


def test_labels_csv_not_utf8(tmp_path: Path) -> None:
    csv_path = tmp_path / "labels.csv"
    csv_path.write_bytes(b"path,label\n\xff\xfe.wav,angry\n")
    with pytest.raises(DatasetError, match="cannot read labels file"):
        load_labels_csv(csv_path)


def test_labels_csv_header_only(tmp_path: Path) -> None:
    assert load_labels_csv(write_csv(tmp_path / "labels.csv", "path,label\n")) == {}


# --- labels_for -------------------------------------------------------------------


def test_labels_for_csv_beats_name() -> None:
    name = "Actor_01/03-01-05-01-01-01-01.wav"  # angry, actor 1 by its name
    csv_labels = {name: Labels(emotion="calm", actor=40)}
    assert labels_for(name, labels=csv_labels) == Labels(emotion="calm", actor=40)


def test_labels_for_falls_back_to_name() -> None:
    csv_labels = {"other.wav": Labels(emotion="calm")}
    assert labels_for("Actor_01/03-01-05-01-01-01-01.wav", labels=csv_labels).emotion == "angry"
    assert labels_for("Actor_01/03-01-05-01-01-01-01.wav").emotion == "angry"


def test_labels_for_unknown_file_is_all_none() -> None:
    assert labels_for("calls/interview.wav") == Labels()
    assert labels_for("calls/interview.wav", labels={}) == Labels()


def test_labels_csv_with_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_bytes("path,label\nclip.wav,happy\n".encode("utf-8-sig"))
    assert load_labels_csv(path)["clip.wav"].emotion == "happy"


# --- feature sets: augment and band ------------------------------------------------------


def _extracted_part(tmp_path: Path, *, augment: list[str]) -> Path:
    """A features folder of two generated files (8 kHz and 16 kHz) written by one shard, no Ray."""
    from ser_batch.pipeline.extract import plan_shards
    from ser_batch.pipeline.extract_shard import ExtractRun

    from conftest import write_audio

    write_audio(tmp_path / "in" / "03-01-05-01-01-01-01.wav", duration_s=0.5)
    write_audio(tmp_path / "in" / "call.wav", sample_rate=8000, duration_s=0.5, seed=1)
    config = Config().replace(extract={"augment": augment})
    shard = plan_shards(["03-01-05-01-01-01-01.wav", "call.wav"], config=config)[0]
    out = tmp_path / "features"
    out.mkdir()
    ExtractRun(str(tmp_path / "in"), str(out), config).run_shard(shard)
    return out / shard.name


def test_feature_set_reads_augment_and_band(tmp_path: Path) -> None:
    from ser_batch.data.featureset import load_feature_set

    part = _extracted_part(tmp_path, augment=["telephone-alaw"])
    data = load_feature_set(part.parent)
    assert list(data.paths) == ["03-01-05-01-01-01-01.wav"] * 2 + ["call.wav"] * 2
    assert list(data.augment) == [None, "telephone-alaw", None, "telephone-alaw"]
    assert list(data.band) == ["wide", "narrow", "narrow", "narrow"]
    labelled = data.labelled()  # only the RAVDESS-named file has a label
    assert list(labelled.augment) == [None, "telephone-alaw"] and list(labelled.band) == ["wide", "narrow"]
    assert list(data.originals().paths) == ["03-01-05-01-01-01-01.wav", "call.wav"]


def test_feature_set_of_a_table_without_augment_columns(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from ser_batch.data.featureset import load_feature_set

    part = _extracted_part(tmp_path, augment=[])
    table = pq.read_table(part)
    pq.write_table(table.drop_columns([schema.AUGMENT, schema.BAND]), part)
    data = load_feature_set(part.parent)
    assert list(data.augment) == [None, None] and list(data.band) == ["wide", "wide"]
    assert list(data.subset([1]).band) == ["wide"]


def test_feature_set_of_an_older_schema_is_refused_as_before(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from ser_batch.data.featureset import load_feature_set

    part = _extracted_part(tmp_path, augment=[])
    table = pq.read_table(part).drop_columns([schema.AUGMENT, schema.BAND])
    metadata = {**table.schema.metadata, schema.META_SCHEMA_VERSION: b"2"}
    pq.write_table(table.replace_schema_metadata(metadata), part)
    with pytest.raises(DatasetError, match="feature schema version 2, this ser-batch reads version 3; re-run"):
        load_feature_set(part.parent)


def test_feature_set_built_by_hand_defaults_augment_and_band() -> None:
    import numpy as np

    from ser_batch.data.featureset import FeatureSet

    data = FeatureSet(X=np.zeros((3, 2), np.float32), emotion=np.array(["a", None, "b"], dtype=object),
                      actor=np.array([1.0, 2.0, 3.0]), paths=np.array(["x", "y", "z"], dtype=object),
                      metadata={}, n_errors=0)
    assert list(data.augment) == [None] * 3 and list(data.band) == ["wide"] * 3
    assert list(data.labelled().paths) == ["x", "z"] and len(data.labelled().band) == 2


# --- a labels CSV read against the input's files (issue 25) -----------------------------


CALLS = [f"call_{i:02d}.wav" for i in range(1, 6)] + ["sub/deep.wav"]


@pytest.mark.parametrize("spell", [
    lambda p: p,                               # relative to INPUT
    lambda p: f"calls/{p}",                    # with INPUT's own name in front
    lambda p: ".\\" + p.replace("/", "\\"),    # as Windows writes it
    lambda p: "calls\\" + p.replace("/", "\\"),
    lambda p: f"./{p}",
])
def test_labels_csv_paths_are_matched_however_they_are_written(tmp_path: Path, spell) -> None:  # noqa: ANN001
    from ser_batch.data.labels import read_labels_csv

    root = tmp_path / "calls"
    rows = "".join(f"{spell(p)},angry\n" for p in CALLS)
    found = read_labels_csv(write_csv(tmp_path / "l.csv", "path,label\n" + rows), root=root, files=CALLS)
    assert found.labels == {p: Labels(emotion="angry") for p in CALLS}
    assert (found.rows, found.unmatched, found.first_unmatched) == (6, 0, None)


def test_labels_csv_absolute_paths_inside_the_input_match(tmp_path: Path) -> None:
    from ser_batch.data.labels import read_labels_csv

    root = tmp_path / "calls"
    root.mkdir()
    rows = "".join(f"{root.resolve() / p},sad\n" for p in CALLS)
    found = read_labels_csv(write_csv(tmp_path / "l.csv", "path,label\n" + rows), root=root, files=CALLS)
    assert set(found.labels) == set(CALLS)


def test_a_labels_csv_that_labels_none_of_the_input_is_refused_with_its_counts(tmp_path: Path) -> None:
    """Issue 25: `extract DIR --labels l.csv` labelled 0 of 20 rows and exited 0, in silence."""
    from ser_batch.data.labels import read_labels_csv

    rows = "".join(f"elsewhere/{p},angry\n" for p in CALLS)
    found = read_labels_csv(write_csv(tmp_path / "l.csv", "path,label\n" + rows), root=tmp_path / "calls",
                            files=CALLS)
    assert (found.rows, found.unmatched, found.labels) == (6, 6, {})
    with pytest.raises(DatasetError, match=r"labels file .*l.csv labels none of the 6 audio files of .*calls: none "
                                           r"of its 6 rows names one \(first: 'elsewhere/call_01.wav'\); write each "
                                           r"path relative to .*calls, e.g. calls/x.wav or x.wav"):
        found.check(tmp_path / "calls")


def test_a_labels_csv_that_fits_partly_or_disagrees_with_ravdess_names_is_a_warning(tmp_path: Path) -> None:
    from ser_batch.data.labels import read_labels_csv

    files = ["03-01-05-01-01-01-01.wav", "03-01-03-01-01-01-01.wav", "call.wav"]  # angry, happy, no name label
    text = ("path,label\n03-01-05-01-01-01-01.wav,sad\n03-01-03-01-01-01-01.wav,happy\n"
            "gone_1.wav,calm\ngone_2.wav,calm\n")
    found = read_labels_csv(write_csv(tmp_path / "l.csv", text), root=tmp_path, files=files)
    found.check(tmp_path)  # it labels some: not refused
    names = {f: n for f in files if (n := parse_ravdess_name(f)) is not None}
    assert found.notes(names) == [
        f"labels file {tmp_path / 'l.csv'}: 2 of its 4 rows name no audio file of the input (first: 'gone_1.wav'); "
        "2 of the 3 files are labelled by it",
        f"labels file {tmp_path / 'l.csv'} gives 1 of the 2 files with RAVDESS names another emotion than their names "
        "do (first: 03-01-05-01-01-01-01.wav: sad in the file, angry by its name); the file's labels are used, as "
        "the explicit source"]
    assert labels_for(files[0], labels=found.labels).emotion == "sad"


def test_a_large_labels_csv_is_streamed_keeping_only_the_input_s_rows(tmp_path: Path) -> None:
    """Issue 25: a 1,000,000-row CSV for 20 files cost 1 GB of driver memory: every row was kept. Read
    row by row, the memory is the input's rows', whatever the CSV's length."""
    import tracemalloc

    from ser_batch.data.labels import read_labels_csv

    csv_path = tmp_path / "big.csv"
    with csv_path.open("w") as handle:
        handle.write("path,label,actor\n")
        for i in range(200_000):
            handle.write(f"elsewhere/x_{i:07d}.wav,angry,{i % 24 + 1}\n")
        handle.writelines(f"{p},sad,3\n" for p in CALLS)
    tracemalloc.start()
    found = read_labels_csv(csv_path, root=tmp_path / "calls", files=CALLS)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(found.labels) == len(CALLS) and found.unmatched == 200_000
    assert peak < 2 * 2**20, f"{peak / 2**20:.1f} MiB to read a CSV for {len(CALLS)} files"

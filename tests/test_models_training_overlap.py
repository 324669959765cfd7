"""Scoring a bundle's own training files says so: by path, by content (a renamed copy), never
for other files; the bundle records its training files' content hashes at train time."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ser_batch.cli import main
from ser_batch.models import bundle as bundle_io
from ser_batch.models.training_overlap import TRAINING_HASHES, find_overlap, head_hash

from conftest import write_audio

#: RAVDESS-named clips (the name carries actor and emotion): 2 actors x 2 emotions x 2 takes.
CLIPS = [f"Actor_{a:02d}/03-01-{e:02d}-01-01-{t:02d}-{a:02d}.wav" for a in (1, 2) for e in (1, 5) for t in (1, 2)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, ray_session: None) -> tuple[Path, Path]:
    """(audio folder, bundle trained on all of it with the CLI, fast settings)."""
    root = tmp_path_factory.mktemp("overlap")
    audio = root / "audio"
    for seed, rel in enumerate(CLIPS):
        write_audio(audio / rel, duration_s=2.0, seed=seed)
    runner = CliRunner()
    result = runner.invoke(main, ["extract", str(audio), "--out", str(root / "features"), "--recipe", "rich"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["train", str(root / "features"), "--out", str(root / "bundle"), "--models", "sklearn",
                                  "--split", "none", "--set", "sklearn.max_iter=20",
                                  "--set", "sklearn.hidden_layer_sizes=[8]"])
    assert result.exit_code == 0, result.output
    return audio, root / "bundle"


def test_training_hashes_are_recorded_and_checksummed(trained: tuple[Path, Path]) -> None:
    audio, bundle = trained
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["training_data"]["hashes"]["count"] == len(CLIPS)
    assert TRAINING_HASHES in manifest["files"]  # covered by the manifest's checksums
    hashes = json.loads((bundle / TRAINING_HASHES).read_text())
    assert hashes[CLIPS[0]] == {"size": (audio / CLIPS[0]).stat().st_size, "sha256_head": head_hash(audio / CLIPS[0])}


def test_score_reports_training_files_by_path_and_content(trained: tuple[Path, Path], tmp_path: Path) -> None:
    audio, bundle = trained
    inbox = tmp_path / "inbox"
    shutil.copytree(audio / "Actor_01", inbox / "Actor_01")  # 4 by path: the folder's tail is the training path
    shutil.copy(audio / CLIPS[5], inbox / "call_0042.wav")  # renamed copy: by content
    write_audio(inbox / "Actor_01" / "03-01-05-01-02-01-01.wav", duration_s=2.0, seed=99)  # new take: no match
    write_audio(inbox / "other.wav", duration_s=2.0, seed=98)  # same size as the clips, other content
    assert (inbox / "other.wav").stat().st_size == (audio / CLIPS[0]).stat().st_size
    out = tmp_path / "scores"
    result = CliRunner().invoke(main, ["score", str(inbox), "--out", str(out), "--model", str(bundle),
                                       "--framework", "sklearn"])
    assert result.exit_code == 0, result.output
    assert ("5 of 7 files were in the bundle's training data (by path/content): their labels say nothing "
            "about accuracy") in result.output
    run = json.loads((out / "_run.json").read_text())
    # one definition of the time: the whole command, Ray start included and labelled
    assert f"incl. Ray start {run['ray_start_s']:.1f} s)" in result.output
    assert run["wall_s"] >= run["tasks_wall_s"] + run["ray_start_s"] > 0
    assert run["realtime_factor"] == pytest.approx(run["audio_s"] / run["wall_s"], rel=0.02)
    record = run["training_overlap"]
    assert {k: record[k] for k in ("files", "by_path", "by_content")} == {"files": 5, "by_path": 4, "by_content": 1}
    assert str(inbox / "call_0042.wav") in record["examples"]
    assert not any(p.endswith(("other.wav", "03-01-05-01-02-01-01.wav")) for p in record["examples"])


def test_no_overlap_no_line(trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, bundle = trained
    write_audio(tmp_path / "in" / "Actor_01" / "a.wav", duration_s=2.0, seed=77)
    found = find_overlap(bundle_io.load_bundle(bundle), [tmp_path / "in" / "Actor_01" / "a.wav"])
    assert (found.files, found.total, found.line()) == (0, 1, None)


def test_corpus_qualified_keys_match_by_their_path(trained: tuple[Path, Path], tmp_path: Path) -> None:
    audio, bundle = trained
    loaded = bundle_io.load_bundle(bundle)
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    names = [bundle_io.training_key("ravdess", n) for n in loaded.training_files()]
    (copy / bundle_io.TRAINING_FILES).write_text(json.dumps(names))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["training_data"]["files"]["keys"] = bundle_io.CORPUS_KEYS
    (copy / "manifest.json").write_text(json.dumps(manifest))
    fake = type("B", (), {"path": copy, "manifest": manifest, "training_files_qualified": True,
                          "training_files": lambda self: frozenset(names)})()
    found = find_overlap(fake, [audio / CLIPS[0], audio / "Actor_01"])
    assert (found.by_path, found.by_content) == (1, 0)


def test_predict_marks_training_files(trained: tuple[Path, Path], tmp_path: Path) -> None:
    audio, bundle = trained
    renamed = tmp_path / "renamed.wav"
    shutil.copy(audio / CLIPS[1], renamed)
    fresh = tmp_path / "fresh.wav"
    write_audio(fresh, duration_s=2.0, seed=55)
    files = [str(audio / CLIPS[0]), str(renamed), str(fresh)]
    runner = CliRunner()
    result = runner.invoke(main, ["predict", *files, "--model", str(bundle), "--framework", "sklearn"])
    assert result.exit_code == 0, result.output
    assert ("2 of 3 files were in the bundle's training data (by path/content): their labels say nothing "
            "about accuracy") in result.output
    result = runner.invoke(main, ["predict", *files, "--model", str(bundle), "--framework", "sklearn", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)  # one JSON document: no line besides it
    assert [e["in_training"] for e in listed] == ["path", "content", None]

"""Training job, splits, model bundles, evaluate and predict (ser_batch/pipeline/train.py, bundle.py,
evaluate.py, scoring.py), end to end through the CLI on a small RAVDESS subset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ser_batch.cli import main
from ser_batch.config import load_config
from ser_batch.data.featureset import FeatureSet, load_feature_set
from ser_batch.errors import BundleError, DatasetError
from ser_batch.models import bundle as bundle_io
from ser_batch.pipeline.train import split_rows

from conftest import SHARED, link_ravdess_actors, needs_shared, write_audio

ACTORS = (1, 2, 3, 4)
TEST_ACTOR = 4
FAST_TRAINING = ["--set", "keras.epochs=15",
                 "--set", "sklearn.max_iter=60"]


def _feature_set(actors: list[int], labels: list[str]) -> FeatureSet:
    n = len(actors)
    rng = np.random.default_rng(0)
    return FeatureSet(X=rng.normal(size=(n, 3)).astype(np.float32), emotion=np.array(labels, dtype=object),
                      actor=np.array(actors, dtype=float), paths=np.array([f"f{i}" for i in range(n)], dtype=object),
                      metadata={}, n_errors=0)


# ----------------------------------------------------------------------------- splits


def test_speaker_split_never_shares_an_actor() -> None:
    actors = [a for a in range(1, 11) for _ in range(8)]
    labels = ["happy", "sad"] * 40
    data = _feature_set(actors, labels)
    split = split_rows(data, config=load_config(overrides=["train.test_actors=[3,7]"]))
    train_actors, test_actors = set(data.actor[split.train]), set(data.actor[split.test])
    assert test_actors == {3.0, 7.0}
    assert not train_actors & test_actors
    assert len(split.train) + len(split.test) == len(actors)

    by_fraction = split_rows(data, config=load_config(overrides=["train.test_actors=[]",
                                                                 "train.test_actor_fraction=0.3"]))
    held = set(data.actor[by_fraction.test])
    assert len(held) == 3 and not held & set(data.actor[by_fraction.train])
    assert by_fraction.test_actors == tuple(sorted(int(a) for a in held))


def test_random_split_is_stratified() -> None:
    labels = ["a"] * 60 + ["b"] * 30 + ["c"] * 30
    data = _feature_set([1] * 120, labels)
    split = split_rows(data, config=load_config(overrides=['train.split="random"', "train.test_size=0.3"]))
    assert len(split.test) == 36
    test_labels = list(data.emotion[split.test])
    assert (test_labels.count("a"), test_labels.count("b"), test_labels.count("c")) == (18, 9, 9)
    assert not set(split.train) & set(split.test)


def test_speaker_split_errors() -> None:
    data = _feature_set([1, 1, 2, 2], ["a", "b", "a", "b"])
    with pytest.raises(DatasetError, match="not in the data"):
        split_rows(data, config=load_config(overrides=["train.test_actors=[9]"]))
    unknown = _feature_set([1, 2], ["a", "b"])
    object.__setattr__(unknown, "actor", np.array([1.0, np.nan]))
    with pytest.raises(DatasetError, match="needs an actor"):
        split_rows(unknown, config=load_config())


# ------------------------------------------------------------------ end to end (CLI)


@pytest.fixture(scope="session")
def small_features(tmp_path_factory: pytest.TempPathFactory, ray_session: None) -> Path:
    """Features of RAVDESS actors 01-04 (240 clips), extracted once per session."""
    if not SHARED.is_dir():
        pytest.skip("../shared/data/ravdess not present")
    from ser_batch.pipeline.extract import run_extract

    audio = tmp_path_factory.mktemp("ravdess_subset")
    link_ravdess_actors(audio, ACTORS)
    out = tmp_path_factory.mktemp("features") / "features"
    summary = run_extract(audio, out, config=load_config(), progress=False)
    assert summary.files == 240 and summary.errors == 0
    return out


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory: pytest.TempPathFactory, small_features: Path) -> Path:
    out = tmp_path_factory.mktemp("models") / "bundle"
    result = CliRunner().invoke(main, ["train", str(small_features), "--out", str(out),
                                       "--test-actors", str(TEST_ACTOR), *FAST_TRAINING])
    assert result.exit_code == 0, result.output
    assert "keras" in result.output and "sklearn" in result.output and "both" in result.output
    return out


@needs_shared
def test_train_writes_a_complete_verified_bundle(trained_bundle: Path, small_features: Path) -> None:
    for name in ("manifest.json", "keras_ann.keras", "keras_ann.h5", "sklearn_mlp.skops", "training_files.json",
                 "metrics.json", "confusion_keras.png", "confusion_sklearn.png", "f1_per_class.png", "training_curve.png",
                 "report.html"):
        assert (trained_bundle / name).is_file(), name
    manifest = json.loads((trained_bundle / "manifest.json").read_text())
    assert manifest["bundle_format"] == bundle_io.BUNDLE_FORMAT
    assert manifest["classes"] == sorted(manifest["classes"]) and len(manifest["classes"]) == 8
    assert manifest["models"] == ["keras", "sklearn"]
    assert manifest["features"]["recipe"] == "fast"
    assert manifest["features"]["sample_rate"] == 16000
    assert manifest["features"]["n_features"] == 193 == len(manifest["features"]["names"])
    assert manifest["config"]["audio"]["sample_rate"] == 16000
    assert manifest["split"]["kind"] == "speaker" and manifest["split"]["test_actors"] == [TEST_ACTOR]
    assert manifest["training_data"]["rows_test"] == 60 and manifest["training_data"]["rows_train"] == 180
    # the training rows are listed by path: exactly the clips of the other actors
    assert manifest["training_data"]["files"] == {"list": "training_files.json", "count": 180}
    listed = json.loads((trained_bundle / "training_files.json").read_text())
    data = load_feature_set(small_features)
    assert listed == sorted(data.paths[data.actor != TEST_ACTOR])
    assert not (trained_bundle / "sklearn_mlp.joblib").exists()  # train.export_joblib is off by default
    assert set(manifest["metrics"]) == {"keras", "sklearn", "both"}
    # every file but the manifest is listed with its real checksum
    listed = set(manifest["files"])
    assert listed == {p.name for p in trained_bundle.iterdir() if p.name != "manifest.json"}
    for name, digest in manifest["files"].items():
        assert bundle_io.sha256_of(trained_bundle / name) == digest
    assert not list(trained_bundle.parent.glob(".bundle.staging-*"))
    bundle = bundle_io.load_bundle(trained_bundle)
    assert bundle.frameworks == ["keras", "sklearn"]
    report = (trained_bundle / "report.html").read_text()
    assert "accuracy" in report and report.count("<img") >= 4


@needs_shared
def test_tampered_bundle_is_refused_before_reading(trained_bundle: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "tampered"
    shutil.copytree(trained_bundle, copy)
    blob = bytearray((copy / "sklearn_mlp.skops").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (copy / "sklearn_mlp.skops").write_bytes(bytes(blob))
    import skops.io

    monkeypatch.setattr(skops.io, "load", lambda *a, **k: pytest.fail("read a tampered bundle"))
    with pytest.raises(BundleError, match="checksum mismatch for sklearn_mlp.skops"):
        bundle_io.load_bundle(copy)
    wav = next((SHARED / "Audio_Speech_Actors_01-20_16k" / "Actor_04").glob("*.wav"))
    result = CliRunner().invoke(main, ["predict", str(wav), "--model", str(copy)])
    assert result.exit_code == 1
    assert "checksum mismatch" in result.output and "Traceback" not in result.output

    (copy / "keras_ann.h5").unlink()
    with pytest.raises(BundleError, match="missing"):
        bundle_io.load_bundle(copy)


@needs_shared
def test_feature_schema_mismatch_is_refused(trained_bundle: Path, small_features: Path) -> None:
    bundle = bundle_io.load_bundle(trained_bundle)
    metadata = load_feature_set(small_features).metadata
    bundle.check_features(metadata)  # the features it was trained on are fine
    for change, message in ((dict(recipe="classic"), "recipe"),
                            (dict(feature_names=metadata["feature_names"][:-1]), "feature columns"),
                            (dict(schema_version=99), "schema version"),
                            (dict(config={"audio": {"sample_rate": 8000}}), "sample rate")):
        with pytest.raises(BundleError, match=message):
            bundle.check_features({**metadata, **change})


@needs_shared
def test_evaluate_scores_only_held_out_rows_by_default(trained_bundle: Path, small_features: Path,
                                                       tmp_path: Path) -> None:
    runner, out = CliRunner(), tmp_path / "metrics.json"
    result = runner.invoke(main, ["evaluate", str(trained_bundle), str(small_features), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "rows: 60 rows the models did not train on; 180 training rows left out" in result.output
    assert "WARNING" not in result.output and "per-class F1" in result.output
    metrics = json.loads(out.read_text())
    assert metrics["rows"] == 60 and metrics["actors"] == [TEST_ACTOR]
    assert metrics["training_rows_included"] is False and metrics["training_rows_left_out"] == 180
    assert metrics["warnings"] == [] and len(metrics["paths"]) == 60
    assert all(p.startswith(f"Actor_{TEST_ACTOR:02d}/") for p in metrics["paths"])
    for name in ("keras", "sklearn", "both"):
        m = metrics["models"][name]
        assert 0 <= m["accuracy"] <= 1 and np.asarray(m["confusion"]).sum() == 60
        assert set(m["per_class"]) == set(m["classes"])
    # the held-out rows are the ones training reported on
    manifest = json.loads((trained_bundle / "manifest.json").read_text())
    assert metrics["models"]["sklearn"]["accuracy"] == pytest.approx(manifest["metrics"]["sklearn"]["accuracy"],
                                                                     abs=1e-6)

    everything = runner.invoke(main, ["evaluate", str(trained_bundle), str(small_features), "--all",
                                      "--out", str(out)])
    assert everything.exit_code == 0, everything.output
    assert "WARNING: 180 of the 240 rows scored were used to train these models" in everything.output
    metrics = json.loads(out.read_text())
    assert metrics["rows"] == 240 and metrics["training_rows_included"] is True
    assert "flatter" in metrics["warnings"][0]

    # --actors narrows the honest default; it never brings training rows back
    held = runner.invoke(main, ["evaluate", str(trained_bundle), str(small_features), "--actors",
                                str(TEST_ACTOR), "--out", str(out)])
    assert held.exit_code == 0 and json.loads(out.read_text())["rows"] == 60
    trained_actor = runner.invoke(main, ["evaluate", str(trained_bundle), str(small_features), "--actors", "1"])
    assert trained_actor.exit_code == 1 and "Traceback" not in trained_actor.output
    assert "no held-out rows: the models were trained on all 60 labelled rows of actors 1" in trained_actor.output
    assert "--all" in trained_actor.output
    both = runner.invoke(main, ["evaluate", str(trained_bundle), str(small_features), "--actors", "1,4",
                                "--out", str(out)])
    assert both.exit_code == 0 and json.loads(out.read_text())["actors"] == [TEST_ACTOR]
    missing = runner.invoke(main, ["evaluate", str(trained_bundle), str(small_features), "--actors", "19"])
    assert missing.exit_code == 1 and "no rows of actors 19" in missing.output


@pytest.fixture(scope="session")
def random_split_bundle(tmp_path_factory: pytest.TempPathFactory, small_features: Path) -> Path:
    """A scikit-learn-only bundle of a random 25% split, with the optional joblib export."""
    out = tmp_path_factory.mktemp("models") / "random"
    result = CliRunner().invoke(main, ["train", str(small_features), "--out", str(out), "--split", "random",
                                       "--test-size", "0.25", "--models", "sklearn", *FAST_TRAINING,
                                       "--set", "train.export_joblib=true"])
    assert result.exit_code == 0, result.output
    return out


@needs_shared
def test_evaluate_random_split_scores_its_test_rows(random_split_bundle: Path, small_features: Path,
                                                   tmp_path: Path) -> None:
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(main, ["evaluate", str(random_split_bundle), str(small_features),
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    manifest = json.loads((random_split_bundle / "manifest.json").read_text())
    assert metrics["rows"] == manifest["training_data"]["rows_test"] == 60
    assert metrics["training_rows_left_out"] == 180 and metrics["training_rows_included"] is False
    assert metrics["models"]["sklearn"]["accuracy"] == pytest.approx(manifest["metrics"]["sklearn"]["accuracy"],
                                                                     abs=1e-6)
    assert not set(metrics["paths"]) & set(json.loads((random_split_bundle / "training_files.json").read_text()))


@needs_shared
def test_joblib_export_is_optional_and_never_read(random_split_bundle: Path, small_features: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import joblib

    manifest = json.loads((random_split_bundle / "manifest.json").read_text())
    assert {"sklearn_mlp.skops", "sklearn_mlp.joblib"} <= set(manifest["files"])
    exported = joblib.load(random_split_bundle / "sklearn_mlp.joblib")
    monkeypatch.setattr(joblib, "load", lambda *a, **k: pytest.fail("ser-batch unpickled the joblib export"))
    bundle = bundle_io.load_bundle(random_split_bundle)
    X = load_feature_set(small_features).X[:20]
    np.testing.assert_allclose(bundle.model("sklearn").predict_proba(X), exported.predict_proba(X), atol=1e-6)


def as_format_1(source: Path, out: Path) -> Path:
    """A copy of a format-2 bundle as ser-batch wrote it before format 2: the scikit-learn
    model only as a joblib pickle, no list of training files."""
    import joblib

    from ser_batch.models.estimators import load_sklearn

    shutil.copytree(source, out)
    manifest = json.loads((out / "manifest.json").read_text())
    if (out / "sklearn_mlp.skops").exists():
        joblib.dump(load_sklearn(out / "sklearn_mlp.skops"), out / "sklearn_mlp.joblib")
        (out / "sklearn_mlp.skops").unlink()
    (out / "training_files.json").unlink()
    del manifest["training_data"]["files"]
    manifest["bundle_format"] = 1
    (out / "manifest.json").unlink()
    staging = bundle_io.staging_dir(out.with_name(out.name + "-new"))
    for file in out.iterdir():
        shutil.move(file, staging / file.name)
    out.rmdir()
    return bundle_io.finalize_bundle(staging, out, manifest={k: v for k, v in manifest.items() if k != "files"},
                                     overwrite=False)


@needs_shared
def test_format_1_bundle_needs_trust_pickle_and_falls_back_on_its_split(
        trained_bundle: Path, random_split_bundle: Path, small_features: Path, tmp_path: Path) -> None:
    legacy = as_format_1(trained_bundle, tmp_path / "legacy")
    runner, out = CliRunner(), tmp_path / "metrics.json"
    refused = runner.invoke(main, ["evaluate", str(legacy), str(small_features)])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "--trust-pickle" in refused.output and "unpickling a file runs whatever code it holds" in refused.output
    wav = SHARED / "Audio_Speech_Actors_01-20_16k" / "Actor_04" / "03-01-05-02-01-01-04.wav"
    keras_only = runner.invoke(main, ["predict", str(wav), "--model", str(legacy), "--framework", "keras"])
    assert keras_only.exit_code == 0, keras_only.output

    trusted = runner.invoke(main, ["evaluate", str(legacy), str(small_features), "--trust-pickle",
                                   "--out", str(out)])
    assert trusted.exit_code == 0, trusted.output
    metrics = json.loads(out.read_text())
    assert metrics["rows"] == 60 and metrics["actors"] == [TEST_ACTOR]  # its speaker split's held-out actor
    assert "speaker split, which held out actors 4" in metrics["selection"]
    # the same feature set at another path is still recognised as the training one
    moved = tmp_path / "moved-features"
    shutil.copytree(small_features, moved)
    runner.invoke(main, ["evaluate", str(legacy), str(moved), "--trust-pickle", "--out", str(out)])
    assert json.loads(out.read_text())["rows"] == 60

    # a random split cannot be reconstructed: every row, and a loud warning
    legacy_random = as_format_1(random_split_bundle, tmp_path / "legacy-random")
    loud = runner.invoke(main, ["evaluate", str(legacy_random), str(small_features), "--trust-pickle",
                                "--out", str(out)])
    assert loud.exit_code == 0, loud.output
    assert "WARNING: cannot tell which rows the models were trained on" in loud.output
    metrics = json.loads(out.read_text())
    assert metrics["rows"] == 240 and metrics["training_rows_included"] is None and metrics["warnings"]


@needs_shared
def test_evaluate_refuses_other_features(trained_bundle: Path, tmp_path: Path, ray_session: None) -> None:
    from ser_batch.pipeline.extract import run_extract

    audio = tmp_path / "audio"
    write_audio(audio / "03-01-05-01-01-01-09.wav", duration_s=0.5)
    other = tmp_path / "features"
    run_extract(audio, other, config=load_config(overrides=["features.n_mels=64"]), progress=False)
    result = CliRunner().invoke(main, ["evaluate", str(trained_bundle), str(other)])
    assert result.exit_code == 1
    assert result.output.startswith("error: features do not match model bundle")


@needs_shared
def test_predict_equals_model_on_extracted_row(trained_bundle: Path, small_features: Path) -> None:
    from ser_batch.inference.scoring import predict_files

    data = load_feature_set(small_features)
    bundle = bundle_io.load_bundle(trained_bundle)
    rows = [0, 100, 239]
    files = [SHARED / "Audio_Speech_Actors_01-20_16k" / data.paths[i] for i in rows]
    results = predict_files(files, bundle=bundle, framework="both")
    for i, entry in zip(rows, results):
        assert entry["error"] is None
        for name in ("keras", "sklearn", "both"):
            expected = bundle.predict_proba(data.X[i : i + 1], framework=name)[0]
            got = np.array([entry["predictions"][name]["probabilities"][c] for c in bundle.classes])
            np.testing.assert_allclose(got, expected, atol=1e-4)
            assert entry["predictions"][name]["label"] == bundle.classes[int(np.argmax(expected))]


@needs_shared
def test_predict_cli(trained_bundle: Path, tmp_path: Path) -> None:
    wav = SHARED / "Audio_Speech_Actors_01-20_16k" / "Actor_04" / "03-01-05-02-01-01-04.wav"
    runner = CliRunner()
    result = runner.invoke(main, ["predict", str(wav), "--model", str(trained_bundle), "--framework", "sklearn",
                                  "--json"])
    assert result.exit_code == 0, result.output
    [entry] = json.loads(result.output)
    assert list(entry["predictions"]) == ["sklearn"]
    assert abs(sum(entry["predictions"]["sklearn"]["probabilities"].values()) - 1) < 1e-3

    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"")
    result = runner.invoke(main, ["predict", str(wav), str(broken), "--model", str(trained_bundle)])
    assert result.exit_code == 1
    assert f"error: {broken}: empty file" in result.output
    assert "keras" in result.output and "both" in result.output


@needs_shared
def test_train_refuses_existing_bundle(trained_bundle: Path, small_features: Path) -> None:
    before = bundle_io.sha256_of(trained_bundle / "manifest.json")
    result = CliRunner().invoke(main, ["train", str(small_features), "--out", str(trained_bundle),
                                       "--models", "sklearn"])
    assert result.exit_code == 1 and "--overwrite" in result.output
    assert bundle_io.sha256_of(trained_bundle / "manifest.json") == before


def test_train_exit_codes(tmp_path: Path, ray_session: None) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["train", str(tmp_path / "missing")])
    assert result.exit_code == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(main, ["train", str(empty), "--out", str(tmp_path / "m")])
    assert result.exit_code == 1 and "no Parquet parts" in result.output and "Traceback" not in result.output
    result = runner.invoke(main, ["train", str(empty), "--models", "svm,keras"])
    assert result.exit_code == 2 and "train.models" in result.output  # a refused setting is bad usage
    result = runner.invoke(main, ["train", str(empty), "--test-actors", "x,y"])
    assert result.exit_code == 2

    # a feature set whose every row is an error row
    from ser_batch.pipeline.extract import run_extract

    audio = tmp_path / "audio"
    audio.mkdir()
    (audio / "a.wav").write_bytes(b"")
    run_extract(audio, tmp_path / "bad", config=load_config(), progress=False)
    result = runner.invoke(main, ["train", str(tmp_path / "bad"), "--out", str(tmp_path / "m")])
    assert result.exit_code == 1 and "no usable rows (1 error rows)" in result.output
    assert not (tmp_path / "m").exists()


@needs_shared
def test_h5_export_matches_keras_model(trained_bundle: Path, small_features: Path) -> None:
    import keras

    X = load_feature_set(small_features).X[:5]
    native = keras.models.load_model(trained_bundle / "keras_ann.keras", compile=False)
    legacy = keras.models.load_model(trained_bundle / "keras_ann.h5", compile=False)
    np.testing.assert_allclose(np.asarray(legacy(X)), np.asarray(native(X)), atol=1e-6)
    np.testing.assert_allclose(np.asarray(native(X)).sum(axis=1), 1.0, atol=1e-5)


def test_train_refuses_classes_seen_only_in_test(tmp_path: Path, ray_session: None) -> None:
    from ser_batch.pipeline.extract import run_extract

    audio = tmp_path / "audio"
    # actors 1 and 2 have happy and sad; actor 3 alone has angry
    for name, seed in (("03-01-03-01-01-01-01", 0), ("03-01-04-01-01-01-01", 1), ("03-01-03-01-01-01-02", 2),
                       ("03-01-04-01-01-01-02", 3), ("03-01-05-01-01-01-03", 4), ("03-01-03-01-01-01-03", 5)):
        write_audio(audio / f"{name}.wav", duration_s=0.5, seed=seed)
    run_extract(audio, tmp_path / "features", config=load_config(), progress=False)
    result = CliRunner().invoke(main, ["train", str(tmp_path / "features"), "--out", str(tmp_path / "m"),
                                       "--test-actors", "3", "--models", "sklearn"])
    assert result.exit_code == 1, result.output
    assert "classes angry occur only in the test rows" in result.output and "Traceback" not in result.output


@needs_shared
def test_bundle_must_list_its_model_files(trained_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(trained_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["files"]["sklearn_mlp.skops"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    bundle_io.load_bundle(copy)  # the array export alone is a model (train.export_native = false)
    del manifest["files"]["sklearn_mlp.npz"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="sklearn_mlp.skops not in its manifest"):
        bundle_io.load_bundle(copy)


@needs_shared
def test_bundle_records_library_versions_and_wraps_load_errors(trained_bundle: Path, tmp_path: Path) -> None:
    manifest = json.loads((trained_bundle / "manifest.json").read_text())
    assert {"scikit-learn", "skops", "keras"} <= set(manifest["library_versions"])
    copy = tmp_path / "bundle"
    shutil.copytree(trained_bundle, copy)
    (copy / "sklearn_mlp.npz").write_bytes(b"not an array file")
    # opening the bundle loads every model: the broken one is refused then, naming its file
    with pytest.raises(BundleError, match=r"cannot load the sklearn model of .* \(sklearn_mlp.npz\): not an array"):
        bundle_io.load_bundle(copy, verify=False)


@needs_shared
def test_train_prints_a_progress_line_per_model_when_not_a_terminal(small_features: Path, tmp_path: Path) -> None:
    """CliRunner's stderr is no terminal: each model fitted (of each model set) is one plain line,
    and the first comes at once, before any model is done."""
    import re

    result = CliRunner().invoke(main, ["train", str(small_features), "--out", str(tmp_path / "m"),
                                       "--test-actors", str(TEST_ACTOR), "--models", "sklearn",
                                       "--normalize", "speaker", "--set", "sklearn.max_iter=30"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("train (")]
    match = re.match(r"train \((\d+) model sets?\): 0/(\d+) models \(0%\), 0 s$", lines[0])
    assert match, lines
    total = int(match.group(2))
    assert total >= 2 and len(lines) == total + 1
    assert re.match(rf"train \(\d+ model sets?\): {total}/{total} models \(100%\), \S+ sklearn done, \d+ s$",
                    lines[-1]), lines
    assert "\x1b" not in result.output

"""Training job, splits, model bundles, evaluate and predict (ser_batch/train.py, bundle.py,
evaluate.py, scoring.py), end to end through the CLI on a small RAVDESS subset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SHARED, link_ravdess_actors, needs_shared, write_audio
from ser_batch import bundle as bundle_io
from ser_batch.cli import main
from ser_batch.config import load_config
from ser_batch.dataset import FeatureSet, load_feature_set
from ser_batch.errors import BundleError, DatasetError
from ser_batch.train import split_rows

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
    from ser_batch.extract import run_extract

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
    for name in ("manifest.json", "keras_ann.keras", "keras_ann.h5", "sklearn_mlp.joblib", "metrics.json",
                 "confusion_keras.png", "confusion_sklearn.png", "f1_per_class.png", "training_curve.png",
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
def test_tampered_bundle_is_refused_before_unpickling(trained_bundle: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "tampered"
    shutil.copytree(trained_bundle, copy)
    blob = bytearray((copy / "sklearn_mlp.joblib").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (copy / "sklearn_mlp.joblib").write_bytes(bytes(blob))
    import joblib

    monkeypatch.setattr(joblib, "load", lambda *a, **k: pytest.fail("unpickled a tampered bundle"))
    with pytest.raises(BundleError, match="checksum mismatch for sklearn_mlp.joblib"):
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
def test_evaluate_cli(trained_bundle: Path, small_features: Path, tmp_path: Path) -> None:
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(main, ["evaluate", str(trained_bundle), str(small_features), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "per-class F1" in result.output
    metrics = json.loads(out.read_text())
    assert metrics["rows"] == 240
    for name in ("keras", "sklearn", "both"):
        m = metrics["models"][name]
        assert 0 <= m["accuracy"] <= 1 and np.asarray(m["confusion"]).sum() == 240
        assert set(m["per_class"]) == set(m["classes"])

    held_out = CliRunner().invoke(main, ["evaluate", str(trained_bundle), str(small_features),
                                         "--actors", str(TEST_ACTOR), "--out", str(out)])
    assert held_out.exit_code == 0, held_out.output
    assert json.loads(out.read_text())["rows"] == 60
    assert json.loads(out.read_text())["actors"] == [TEST_ACTOR]
    # the held-out actor's metrics are the ones training reported
    manifest = json.loads((trained_bundle / "manifest.json").read_text())
    assert json.loads(out.read_text())["models"]["sklearn"]["accuracy"] == pytest.approx(
        manifest["metrics"]["sklearn"]["accuracy"], abs=1e-6)
    missing = CliRunner().invoke(main, ["evaluate", str(trained_bundle), str(small_features), "--actors", "19"])
    assert missing.exit_code == 1 and "no rows of actors 19" in missing.output


@needs_shared
def test_evaluate_refuses_other_features(trained_bundle: Path, tmp_path: Path, ray_session: None) -> None:
    from ser_batch.extract import run_extract

    audio = tmp_path / "audio"
    write_audio(audio / "03-01-05-01-01-01-09.wav", duration_s=0.5)
    other = tmp_path / "features"
    run_extract(audio, other, config=load_config(overrides=["features.n_mels=64"]), progress=False)
    result = CliRunner().invoke(main, ["evaluate", str(trained_bundle), str(other)])
    assert result.exit_code == 1
    assert result.output.startswith("error: features do not match model bundle")


@needs_shared
def test_predict_equals_model_on_extracted_row(trained_bundle: Path, small_features: Path) -> None:
    from ser_batch.scoring import predict_files

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
    assert result.exit_code == 1 and "train.models" in result.output
    result = runner.invoke(main, ["train", str(empty), "--test-actors", "x,y"])
    assert result.exit_code == 2

    # a feature set whose every row is an error row
    from ser_batch.extract import run_extract

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


def test_pretrained_bundle_ships_verified_and_predicts(tmp_path: Path) -> None:
    bundle = bundle_io.load_bundle()  # verifies every checksum
    assert bundle.path == bundle_io.default_bundle_path()
    assert (bundle.path / "NOTICE.md").read_text().count("CC BY-NC-SA") >= 1
    size = sum(p.stat().st_size for p in bundle.path.iterdir())
    assert size < 5 * 2**20, f"pretrained bundle is {size / 2**20:.1f} MiB"
    assert bundle.frameworks == ["keras", "sklearn"] and bundle.aggregation == "segments"
    assert bundle.manifest["features"]["recipe"] == "rich"
    assert bundle.manifest["training_data"]["actors"] == list(range(1, 21))
    wav = write_audio(tmp_path / "speech.wav", duration_s=2.0)
    result = CliRunner().invoke(main, ["predict", str(wav), "--framework", "sklearn", "--json"])
    assert result.exit_code == 0, result.output
    [entry] = json.loads(result.output)
    probabilities = entry["predictions"]["sklearn"]["probabilities"]
    assert list(probabilities) == bundle.classes and abs(sum(probabilities.values()) - 1) < 1e-3


def test_train_refuses_classes_seen_only_in_test(tmp_path: Path, ray_session: None) -> None:
    from ser_batch.extract import run_extract

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
    del manifest["files"]["sklearn_mlp.joblib"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="sklearn_mlp.joblib not in its manifest"):
        bundle_io.load_bundle(copy)


@needs_shared
def test_bundle_records_library_versions_and_wraps_load_errors(trained_bundle: Path, tmp_path: Path) -> None:
    manifest = json.loads((trained_bundle / "manifest.json").read_text())
    assert "scikit-learn" in manifest["library_versions"] and "keras" in manifest["library_versions"]
    copy = tmp_path / "bundle"
    shutil.copytree(trained_bundle, copy)
    (copy / "sklearn_mlp.joblib").write_bytes(b"not a pickle")
    bundle = bundle_io.load_bundle(copy, verify=False)
    with pytest.raises(BundleError, match="cannot load the sklearn model"):
        bundle.model("sklearn")

"""Model bundles (ser_batch/models/bundle.py): the shipped pretrained bundle's golden outputs,
safe loading (no pickle without an explicit opt-in), checksums, formats 1 and 2.

Golden outputs
--------------
``tests/golden/pretrained.json`` holds the probabilities the shipped pretrained bundle gives
for a fixed synthetic speech-like clip (always) and one RAVDESS clip (when ../shared is
there). A change to decoding, features or the stored models that moves them fails
:func:`test_pretrained_bundle_matches_golden_probabilities`. After retraining the
pretrained bundle on purpose, regenerate the file (it needs ../shared) with::

    SER_BATCH_REGENERATE_GOLDEN=1 PYTHONPATH=$PWD python -m pytest -q tests/test_models_bundle.py -k golden

and commit it with the new bundle.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ser_batch.errors import BundleError
from ser_batch.models import bundle as bundle_io

from conftest import SHARED, write_audio

GOLDEN = Path(__file__).parent / "golden" / "pretrained.json"
REGENERATE = os.environ.get("SER_BATCH_REGENERATE_GOLDEN") == "1"
#: predict_files rounds to 4 decimals; float32 networks differ across CPUs in the 7th.
GOLDEN_ATOL = 2e-4
RAVDESS_CLIP = "Audio_Speech_Actors_01-20_16k/Actor_01/03-01-05-02-01-01-01.wav"


def golden_inputs(folder: Path) -> dict[str, Path]:
    """The golden inputs: a generated 3 s speech-like clip, plus a RAVDESS clip when present."""
    inputs = {"synthetic_speech_3s": write_audio(folder / "speech.wav", kind="speech", duration_s=3.0, seed=11)}
    if SHARED.is_dir():
        inputs["ravdess_actor01_angry"] = SHARED / RAVDESS_CLIP
    return inputs


def golden_probabilities(bundle: bundle_io.Bundle, inputs: dict[str, Path]) -> dict[str, Any]:
    """``{input: {model: {class: probability}}}`` as ``predict`` reports them: every model of the
    bundle (``--framework NAME``; ``both`` shows only the ensemble's members) and ``both``."""
    from ser_batch.inference.scoring import predict_files

    out: dict[str, dict[str, Any]] = {name: {} for name in inputs}
    for framework in [*bundle.frameworks, "both"]:
        results = predict_files(list(inputs.values()), bundle=bundle, framework=framework)
        for name, entry in zip(inputs, results):
            assert entry["error"] is None, entry
            out[name][framework] = entry["predictions"][framework]["probabilities"]
    return out


def test_pretrained_bundle_matches_golden_probabilities(tmp_path: Path) -> None:
    bundle = bundle_io.load_bundle()
    got = golden_probabilities(bundle, golden_inputs(tmp_path))
    if REGENERATE:
        if "ravdess_actor01_angry" not in got:
            pytest.fail("regenerating the golden file needs ../shared/data/ravdess")
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps({"bundle_created": bundle.manifest["created"], "probabilities": got},
                                     indent=2) + "\n", encoding="utf-8")
        pytest.skip(f"regenerated {GOLDEN}")
    expected = json.loads(GOLDEN.read_text(encoding="utf-8"))["probabilities"]
    assert "synthetic_speech_3s" in got
    for name, models in got.items():
        assert set(models) == set(expected[name]) == {"keras", "sklearn", "cnn", "both"}
        for model, probabilities in models.items():
            want = expected[name][model]
            assert list(probabilities) == list(want) == bundle.classes
            np.testing.assert_allclose(list(probabilities.values()), list(want.values()), atol=GOLDEN_ATOL,
                                       err_msg=f"{name}, {model}: the pretrained bundle is out of step")


def test_pretrained_bundle_ships_verified_safe_and_predicts(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ser_batch.cli import main

    bundle = bundle_io.load_bundle()  # verifies every checksum
    assert bundle.path == bundle_io.default_bundle_path()
    assert (bundle.path / "NOTICE.md").read_text().count("CC BY-NC-SA") >= 1
    size = sum(p.stat().st_size for p in bundle.path.iterdir())
    # A few MB: each network in its framework's own file and as the arrays scoring evaluates.
    assert size < 6 * 2**20, f"pretrained bundle is {size / 2**20:.1f} MiB"
    assert {"keras_ann.npz", "sklearn_mlp.npz", "cnn.npz"} <= set(bundle.manifest["files"])
    assert {f: type(bundle.model(f)).__name__ for f in bundle.frameworks} == {
        "keras": "DenseNetwork", "sklearn": "DenseNetwork", "cnn": "StreamNetwork"}
    assert bundle.format == bundle_io.BUNDLE_FORMAT and not bundle.trust_pickle
    assert not list(bundle.path.glob("*.joblib")) and not list(bundle.path.glob("*.pkl"))
    assert bundle.frameworks == ["keras", "sklearn", "cnn"] and bundle.aggregation == "segments"
    assert bundle.config.features.speech_detector == "bands"
    assert bundle.manifest["features"]["recipe"] == "rich"
    # RAVDESS actors 1-20 and EMOVO's six (101-106), every clip, keyed by corpus and path.
    assert bundle.manifest["training_data"]["actors"] == list(range(1, 21)) + list(range(101, 107))
    assert len(bundle.training_files()) == 1788 and bundle.training_files_qualified
    assert "ravdess:Actor_20/03-01-08-02-02-02-20.wav" in bundle.training_files()
    wav = write_audio(tmp_path / "speech.wav", duration_s=2.0)
    result = CliRunner().invoke(main, ["predict", str(wav), "--framework", "sklearn", "--json"])
    assert result.exit_code == 0, result.output
    [entry] = json.loads(result.output)
    probabilities = entry["predictions"]["sklearn"]["probabilities"]
    assert list(probabilities) == bundle.classes and abs(sum(probabilities.values()) - 1) < 1e-3


# ------------------------------------------------------------------ untrusted bundles


class _Exploit:
    """Unpickling this creates ``marker``: stands in for any code a pickle can run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.marker),))


def _tiny_pipeline(n_features: int = 6) -> Any:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, n_features)).astype(np.float32)
    y = np.array(["happy", "sad", "angry"])[rng.integers(0, 3, 60)]
    mlp = MLPClassifier(hidden_layer_sizes=(8,), max_iter=50, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a few iterations make a model to store
        return Pipeline([("scaler", StandardScaler()), ("mlp", mlp)]).fit(X, y)


def _make_bundle(out: Path, *, fmt: int, sklearn_file: str, write: Any, n_features: int = 6) -> Path:
    """A sklearn-only bundle whose model file is written by ``write(path)``; checksums are
    correct, as an attacker shipping the manifest with the files would make them."""
    staging = bundle_io.staging_dir(out)
    write(staging / sklearn_file)
    manifest = {"bundle_format": fmt, "classes": ["angry", "happy", "sad"], "models": ["sklearn"],
                "aggregation": "clip", "features": {"n_features": n_features}}
    return bundle_io.finalize_bundle(staging, out, manifest=manifest, overwrite=False)


def test_format_1_pickle_is_never_unpickled_without_trust_pickle(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ser_batch.cli import main

    marker = tmp_path / "pwned"
    evil = _make_bundle(tmp_path / "evil", fmt=1, sklearn_file=bundle_io.SKLEARN_PICKLE,
                        write=lambda p: p.write_bytes(pickle.dumps(_Exploit(marker))))
    bundle = bundle_io.load_bundle(evil)  # checksums match: integrity is not origin
    with pytest.raises(BundleError, match="--trust-pickle"):
        bundle.model("sklearn")
    wav = write_audio(tmp_path / "speech.wav", duration_s=1.0)
    result = CliRunner().invoke(main, ["predict", str(wav), "--model", str(evil)])
    assert result.exit_code == 1 and "exists only as a pickle" in result.output
    assert not marker.exists()
    # the opt-in really is the only way in: with it the pickle runs (opening the bundle loads every
    # model), and what it made is then refused, as it is no classifier of the bundle's classes
    with pytest.raises(BundleError, match=r"\(sklearn_mlp.joblib\): its classes \(\) are not the bundle's"):
        bundle_io.load_bundle(evil, trust_pickle=True)
    assert marker.exists()


def test_format_2_bundle_never_unpickles(tmp_path: Path) -> None:
    # a pickle renamed to the skops file name is refused without being unpickled
    marker = tmp_path / "pwned"
    disguised = _make_bundle(tmp_path / "disguised", fmt=2, sklearn_file=bundle_io.SKLEARN_FILE,
                             write=lambda p: p.write_bytes(pickle.dumps(_Exploit(marker))))
    for trust in (False, True):  # trust_pickle never makes a format-2 bundle read a pickle
        with pytest.raises(BundleError, match="cannot load the sklearn model"):
            bundle_io.load_bundle(disguised, trust_pickle=trust).model("sklearn")
    assert not marker.exists()

    # a skops file naming a type outside scikit-learn/numpy is refused before it is built
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    untrusted = _make_bundle(tmp_path / "untrusted", fmt=2, sklearn_file=bundle_io.SKLEARN_FILE,
                             write=lambda p: sio.dump(FunctionTransformer(func=shutil.rmtree), p))
    with pytest.raises(BundleError, match="types outside scikit-learn and numpy: shutil.rmtree"):
        bundle_io.load_bundle(untrusted).model("sklearn")

    # a real skops pipeline loads and predicts as the fitted one
    pipeline = _tiny_pipeline()
    from ser_batch.models.estimators import save_sklearn

    good = _make_bundle(tmp_path / "good", fmt=2, sklearn_file=bundle_io.SKLEARN_FILE,
                        write=lambda p: save_sklearn(pipeline, p))
    X = np.random.default_rng(1).normal(size=(10, 6)).astype(np.float32)
    loaded = bundle_io.load_bundle(good)
    # save_sklearn also wrote the array export, which is what ser-batch evaluates
    assert type(loaded.model("sklearn")).__name__ == "DenseNetwork"
    np.testing.assert_allclose(loaded.predict_proba(X, framework="sklearn"), pipeline.predict_proba(X), atol=1e-6)
    assert loaded.training_files() is None


def test_upgrade_bundle_keeps_predictions_and_drops_the_pickle(tmp_path: Path) -> None:
    import joblib

    pipeline = _tiny_pipeline()
    old = _make_bundle(tmp_path / "old", fmt=1, sklearn_file=bundle_io.SKLEARN_PICKLE,
                       write=lambda p: joblib.dump(pipeline, p))
    new = bundle_io.upgrade_bundle(old, tmp_path / "new", training_files=["b.wav", "a.wav", "b.wav"])
    manifest = json.loads((new / "manifest.json").read_text())
    assert manifest["bundle_format"] == 2 and manifest["upgraded"]["from_format"] == 1
    assert set(manifest["files"]) == {bundle_io.SKLEARN_FILE, "sklearn_mlp.npz", bundle_io.TRAINING_FILES}
    upgraded = bundle_io.load_bundle(new)
    assert upgraded.training_files() == {"a.wav", "b.wav"}
    X = np.random.default_rng(2).normal(size=(20, 6)).astype(np.float32)
    # Scored through its array export: the same network to float32 rounding.
    np.testing.assert_allclose(upgraded.predict_proba(X, framework="sklearn"), pipeline.predict_proba(X), atol=1e-6)
    with pytest.raises(BundleError, match="already format 2"):
        bundle_io.upgrade_bundle(new, tmp_path / "again")
    kept = bundle_io.upgrade_bundle(old, tmp_path / "kept", keep_pickle=True)
    assert (kept / bundle_io.SKLEARN_PICKLE).is_file() and (kept / bundle_io.SKLEARN_FILE).is_file()


def test_bundle_format_and_file_list_errors(tmp_path: Path) -> None:
    from ser_batch.models.estimators import save_sklearn

    pipeline = _tiny_pipeline()
    good = _make_bundle(tmp_path / "b", fmt=2, sklearn_file=bundle_io.SKLEARN_FILE,
                        write=lambda p: save_sklearn(pipeline, p))
    manifest = json.loads((good / "manifest.json").read_text())
    for fmt, message in ((3, "newer than this ser-batch"), (0, "bundle_format 0")):
        (good / "manifest.json").write_text(json.dumps({**manifest, "bundle_format": fmt}))
        with pytest.raises(BundleError, match=message):
            bundle_io.load_bundle(good)
    # a format-1 manifest must list the pickle, not the skops file
    (good / "manifest.json").write_text(json.dumps({**manifest, "bundle_format": 1}))
    with pytest.raises(BundleError, match="sklearn_mlp.joblib not in its manifest"):
        bundle_io.load_bundle(good)
    (good / "broken.json").write_text('{"not": "a list"}')
    broken = {**manifest, "training_data": {"files": {"list": "broken.json", "count": 1}}}
    (good / "manifest.json").write_text(json.dumps(broken))
    with pytest.raises(BundleError, match="unreadable list of training files"):
        bundle_io.load_bundle(good, verify=False).training_files()


def test_a_bundle_older_than_the_speech_detector_key_keeps_the_level_detector(tmp_path: Path) -> None:
    """``features.speech_detector`` defaults to "bands" now; a bundle whose config has no such key was
    trained with the level detector and must score with it."""
    copy = tmp_path / "old"
    shutil.copytree(bundle_io.default_bundle_path(), copy)
    manifest = json.loads((copy / bundle_io.MANIFEST).read_text())
    manifest["config"]["features"].pop("speech_detector", None)
    (copy / bundle_io.MANIFEST).write_text(json.dumps(manifest))
    assert bundle_io.load_bundle(copy).config.features.speech_detector == "energy"
    manifest["config"]["features"]["speech_detector"] = "bands"
    (copy / bundle_io.MANIFEST).write_text(json.dumps(manifest))
    assert bundle_io.load_bundle(copy).config.features.speech_detector == "bands"

"""The classifiers (ser_batch/models/estimators.py): fitting, pickle-free saving and safe loading,
and the window helpers."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from ser_batch.config import KerasConfig, SklearnConfig
from ser_batch.models.estimators import (
    KerasANN,
    build_sklearn_mlp,
    load_sklearn,
    mean_by_row,
    save_sklearn,
    stack_segments,
)
from ser_batch.models.networks import DenseNetwork


def _blobs(n_per_class: int = 20, d: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well separated classes [shape=(3 n, d)] and their string labels."""
    rng = np.random.default_rng(seed)
    centres = np.eye(3, d) * 4.0
    X = np.concatenate([rng.normal(c, 0.5, size=(n_per_class, d)) for c in centres]).astype(np.float32)
    y = np.repeat(np.array(["angry", "happy", "sad"]), n_per_class)
    return X, y


def _fitted_pipeline() -> object:
    from sklearn.exceptions import ConvergenceWarning

    X, y = _blobs()
    params = SklearnConfig(hidden_layer_sizes=(16,), batch_size=32, max_iter=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return build_sklearn_mlp(params, seed=1).fit(X, y)


def test_sklearn_pipeline_round_trips_through_skops_exactly(tmp_path: Path) -> None:
    pipeline = _fitted_pipeline()
    assert pipeline[-1].hidden_layer_sizes == (16,) and pipeline[-1].random_state == 1
    written, arrays = save_sklearn(pipeline, tmp_path / "m.skops")
    assert not list(tmp_path.glob("*.joblib")) and arrays.name == "sklearn_mlp.npz"
    loaded = load_sklearn(written)
    X, _ = _blobs(seed=5)
    np.testing.assert_array_equal(loaded.predict_proba(X), pipeline.predict_proba(X))
    # The array export is the same network evaluated with numpy (what scoring uses).
    network = DenseNetwork.load(arrays, classes=["angry", "happy", "sad"])
    np.testing.assert_allclose(network.predict_proba(X * 2.0), pipeline.predict_proba(X * 2.0), atol=1e-5)
    assert list(loaded.classes_) == ["angry", "happy", "sad"]
    # the optimiser state is only needed to keep training; the saved copy drops it,
    # the caller's pipeline keeps it
    assert not hasattr(loaded[-1], "_optimizer") and hasattr(pipeline[-1], "_optimizer")


def test_two_class_mlp_exports_its_logistic_output(tmp_path: Path) -> None:
    X, y = _blobs(seed=7)
    keep = y != "sad"
    pipeline = build_sklearn_mlp(SklearnConfig(hidden_layer_sizes=(8,), max_iter=50), seed=1).fit(X[keep], y[keep])
    assert pipeline[-1].out_activation_ == "logistic"
    _, arrays = save_sklearn(pipeline, tmp_path / "m.skops")
    network = DenseNetwork.load(arrays, classes=["angry", "happy"])
    np.testing.assert_allclose(network.predict_proba(X), pipeline.predict_proba(X), atol=1e-6)


def test_joblib_export_is_written_only_when_asked(tmp_path: Path) -> None:
    import joblib

    pipeline = _fitted_pipeline()
    written = save_sklearn(pipeline, tmp_path / "m.skops", pickle_path=tmp_path / "m.joblib")
    assert [p.name for p in written] == ["m.skops", "sklearn_mlp.npz", "m.joblib"]
    X, _ = _blobs(seed=6)
    np.testing.assert_array_equal(joblib.load(tmp_path / "m.joblib").predict_proba(X), pipeline.predict_proba(X))


def test_load_sklearn_refuses_untrusted_types(tmp_path: Path) -> None:
    import os

    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    sio.dump(FunctionTransformer(func=os.system), tmp_path / "evil.skops")
    with pytest.raises(ValueError, match="outside scikit-learn and numpy: .*system"):
        load_sklearn(tmp_path / "evil.skops")


def test_keras_ann_fits_saves_and_loads_in_safe_mode(tmp_path: Path) -> None:
    X, y = _blobs()
    params = KerasConfig(hidden_layers=(16, 8), epochs=40, batch_size=16, learning_rate=0.01,
                         input_dropout=0.0, dropout=(0.0,))
    model = KerasANN.from_config(params, seed=3).fit(X, y)
    assert list(model.classes_) == ["angry", "happy", "sad"] and len(model.history_["loss"]) == 40
    proba = model.predict_proba(X)
    assert proba.shape == (60, 3) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert (model.predict(X) == y).mean() > 0.9  # separable blobs; the standardisation is inside

    paths = model.save(tmp_path)
    assert [p.name for p in paths] == ["keras_ann.keras", "keras_ann.npz", "keras_ann.h5"]
    assert [p.name for p in model.save(tmp_path / "x", h5=False)] == ["keras_ann.keras", "keras_ann.npz"]
    loaded = KerasANN.load(paths[0], classes=["angry", "happy", "sad"])
    np.testing.assert_allclose(loaded.predict_proba(X), proba, atol=1e-6)
    # The array export is the same network without TensorFlow (dropout off at inference).
    dropout = KerasANN.from_config(KerasConfig(hidden_layers=(16, 8), epochs=5, batch_size=16,
                                               input_dropout=0.2, dropout=(0.5, 0.2)), seed=3).fit(X, y)
    for fitted in (model, dropout):
        arrays = DenseNetwork.load(fitted.save(tmp_path)[1], classes=["angry", "happy", "sad"])
        np.testing.assert_allclose(arrays.predict_proba(X * 3.0), fitted.predict_proba(X * 3.0), atol=1e-5)


def test_keras_load_refuses_serialised_python_code(tmp_path: Path) -> None:
    import keras

    inputs = keras.Input(shape=(3,))
    outputs = keras.layers.Lambda(lambda x: x * 2.0)(inputs)  # a lambda is stored as bytecode
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match="safe_mode"):
        KerasANN.load(tmp_path / "lambda.keras", classes=["a", "b", "c"])


def test_window_helpers() -> None:
    segments = [np.ones((2, 4)), np.zeros((0, 4)), 2 * np.ones((3, 4))]
    stacked, rows = stack_segments(segments)
    assert stacked.shape == (5, 4) and rows.tolist() == [0, 0, 2, 2, 2]
    proba = np.array([[1.0, 0.0], [0.0, 1.0], [0.2, 0.8], [0.4, 0.6], [0.6, 0.4]])
    means = mean_by_row(proba, rows, 3)
    np.testing.assert_allclose(means, [[0.5, 0.5], [0.0, 0.0], [0.4, 0.6]])  # a row without windows: zeros
    # Only the kept windows (those with speech) of a row count, unless the row has none kept.
    keep = np.array([False, True, False, False, True])
    np.testing.assert_allclose(mean_by_row(proba, rows, 3, keep=keep), [[0.0, 1.0], [0.0, 0.0], [0.6, 0.4]])
    none_kept = np.zeros(5, dtype=bool)
    np.testing.assert_allclose(mean_by_row(proba, rows, 3, keep=none_kept), means)


def test_float16_arrays_halve_the_export_and_keep_the_probabilities(tmp_path: Path) -> None:
    from ser_batch.models.networks import cast_arrays

    pipeline = _fitted_pipeline()
    _, arrays = save_sklearn(pipeline, tmp_path / "m.skops")
    full = DenseNetwork.load(arrays, classes=["angry", "happy", "sad"])
    X, _ = _blobs(seed=7)
    before = full.predict_proba(X)
    cast_arrays(arrays, "float16")
    with np.load(arrays) as data:
        assert data["kernel_0"].dtype == np.float16 and data["mean"].dtype == np.float32
    half = DenseNetwork.load(arrays, classes=["angry", "happy", "sad"])
    after = half.predict_proba(X)
    assert after.dtype == np.float64 and np.allclose(after.sum(axis=1), 1.0)
    np.testing.assert_allclose(after, before, atol=5e-3)
    assert not np.array_equal(after, before)  # the weights really were rounded

"""The frame-sequence model: numpy equals Keras, export round trip, a small fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ser_batch.config import CnnConfig
from ser_batch.models.sequence import CNN_ARRAYS, SequenceClassifier, SequenceNetwork, build_network

pytest.importorskip("keras")


def _randomise_batch_norms(model, rng: np.random.Generator) -> None:
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.2, n), rng.normal(0, 0.3, n),
                               rng.uniform(0.5, 2.0, n)])


@pytest.mark.parametrize("floor_db", [0.0, 50.0])
def test_numpy_forward_equals_keras_for_full_and_short_windows(tmp_path, floor_db: float) -> None:
    rng = np.random.default_rng(0)
    params = CnnConfig(relative_floor_db=floor_db)
    model = build_network(params, n_bands=64, n_classes=8)
    _randomise_batch_norms(model, rng)
    classifier = SequenceClassifier(params=params)
    classifier.model_, classifier.classes_ = model, np.array([f"c{i}" for i in range(8)])
    classifier.save(tmp_path, native=False)
    network = SequenceNetwork.load(tmp_path / CNN_ARRAYS, classes=list(classifier.classes_))
    windows = (rng.normal(-2.0, 0.6, size=(5, 47, 64))).astype(np.float32)
    counts = np.array([47, 47, 47, 47, 20])
    windows[4, 20:] = 0.0
    expected = classifier.predict_proba(windows, counts)
    got = network.predict_proba(windows, counts)
    assert np.abs(got - expected).max() < 1e-5
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-9)
    # A short window is its own frames run alone: what it would give cut at its length.
    np.testing.assert_allclose(got[4], network.predict_proba(windows[4:5, :20])[0], atol=1e-7)


def test_tiny_fit_saves_both_files_and_its_arrays_predict_like_keras(tmp_path) -> None:
    rng = np.random.default_rng(1)
    rows, labels = [], []
    for i in range(24):
        x = rng.normal(-2.0, 0.3, size=(int(rng.integers(30, 80)), 16)).astype(np.float32)
        if i % 2:
            x[:, :8] += np.sin(np.arange(len(x)) / 2.0)[:, None]  # a modulation the band means do not remove
        rows.append(x)
        labels.append("b" if i % 2 else "a")
    params = CnnConfig(kernels=(3, 3), dilations=(1, 2), width=16, dense=16, epochs=15, batch_size=8,
                       learning_rate=0.01)
    model = SequenceClassifier(params=params, window=20, seed=0).fit(rows, np.array(labels))
    assert len(model.history_["loss"]) == 15
    paths = model.save(tmp_path)
    assert {p.name for p in paths} == {"cnn.npz", "cnn.keras"}
    from ser_batch.features.melframes import window_frames

    windows = np.concatenate([window_frames(r, np.array([0]), np.array([20]), width=20) for r in rows])
    network = SequenceNetwork.load(tmp_path / CNN_ARRAYS, classes=list(model.classes_))
    proba = network.predict_proba(windows)
    assert np.abs(proba - model.predict_proba(windows)).max() < 1e-5
    # (45 steps are too few for batch norm's moving statistics to settle: judge the training loss.)
    assert model.history_["loss"][-1] < model.history_["loss"][0]


# ------------------------------------------------------------------ end to end (CLI, generated audio)


@pytest.fixture(scope="module")
def cnn_bundle(tmp_path_factory: pytest.TempPathFactory, ray_session: None) -> tuple[Path, Path, Path]:
    """Rich features (with frames) of generated RAVDESS-named clips, and a keras+cnn bundle."""
    import soundfile as sf
    from click.testing import CliRunner

    from ser_batch.cli import main

    from conftest import speech_like

    audio = tmp_path_factory.mktemp("cnn_audio")
    for actor in (1, 2, 3):
        for emotion, f0 in (("01", 120.0), ("05", 260.0)):
            for rep in (1, 2):
                folder = audio / f"Actor_{actor:02d}"
                folder.mkdir(exist_ok=True)
                y = speech_like(sample_rate=16000, duration_s=2.2, f0_hz=f0 + 5 * actor, seed=actor * 10 + rep)
                sf.write(folder / f"03-01-{emotion}-01-01-{rep:02d}-{actor:02d}.wav", y, 16000)
    features = tmp_path_factory.mktemp("cnn_features") / "features"
    result = CliRunner().invoke(main, ["extract", str(audio), "--out", str(features), "--recipe", "rich",
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    bundle = tmp_path_factory.mktemp("cnn_models") / "bundle"
    result = CliRunner().invoke(main, ["train", str(features), "--out", str(bundle), "--test-actors", "3",
                                       "--models", "keras,cnn", "--set", "keras.epochs=3", "--set", "cnn.epochs=2",
                                       "--set", "cnn.width=16", "--set", "cnn.dense=16"])
    assert result.exit_code == 0, result.output
    assert "cnn" in result.output and "both" in result.output
    return audio, features, bundle


def test_train_score_predict_with_the_cnn_framework(cnn_bundle, tmp_path: Path) -> None:
    import json

    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from ser_batch.cli import main
    from ser_batch.data.featureset import load_feature_set
    from ser_batch.errors import BundleError
    from ser_batch.models.bundle import load_bundle

    audio, features, bundle_dir = cnn_bundle
    data = load_feature_set(features)
    assert data.frames is not None and data.frames[0].shape[1] == 64
    bundle = load_bundle(bundle_dir)
    assert bundle.frameworks == ["keras", "cnn"] and "cnn.npz" in bundle.manifest["files"]
    assert bundle.needs_frames
    wav = next(audio.rglob("*.wav"))
    result = CliRunner().invoke(main, ["predict", str(wav), "--model", str(bundle_dir), "--framework", "cnn",
                                       "--json"])
    assert result.exit_code == 0, result.output
    [entry] = json.loads(result.output)
    assert list(entry["predictions"]) == ["cnn"]
    out = tmp_path / "scores"
    result = CliRunner().invoke(main, ["score", str(audio), "--out", str(out), "--model", str(bundle_dir),
                                       "--framework", "cnn", "--no-progress"])
    assert result.exit_code == 0, result.output
    files = pq.read_table(out / "files").to_pandas()
    assert len(files) == 12 and files["error"].isna().all()
    # The ensemble of the bundle's models: keras and cnn averaged.
    both = bundle.predict_rows(data.X[:2], data.segments[:2], framework="both", frames=data.frames[:2])
    keras = bundle.predict_rows(data.X[:2], data.segments[:2], framework="keras", frames=data.frames[:2])
    cnn = bundle.predict_rows(data.X[:2], data.segments[:2], framework="cnn", frames=data.frames[:2])
    np.testing.assert_allclose(both, (keras + cnn) / 2, atol=1e-9)
    # A tampered cnn.npz is refused by the checksum before anything is read.
    copy = tmp_path / "tampered"
    import shutil

    shutil.copytree(bundle_dir, copy)
    with open(copy / "cnn.npz", "ab") as handle:
        handle.write(b"x")
    with pytest.raises(BundleError, match="checksum mismatch for cnn.npz"):
        load_bundle(copy)


def _im2col_forward(network: SequenceNetwork, x: np.ndarray) -> np.ndarray:
    """The cnn forward pass written the plain way: each window padded on its own ("same" zeros,
    Keras's split of an odd total), its taps side by side, one product per layer."""
    if network.floor > 0:
        x = np.maximum(x, x.max(axis=(1, 2), keepdims=True) - np.float32(network.floor))
    h = (x - x.mean(axis=1, keepdims=True)).astype(np.float64)
    n, t, _ = h.shape
    for kernel, bias, dilation in network.convs:
        total = dilation * (kernel.shape[0] - 1)
        padded = np.pad(h, ((0, 0), (total // 2, total - total // 2), (0, 0)))
        cols = np.concatenate([padded[:, j * dilation : j * dilation + t] for j in range(kernel.shape[0])], axis=2)
        h = np.maximum(cols.reshape(n * t, -1) @ kernel.reshape(-1, kernel.shape[2]) + bias, 0.0).reshape(n, t, -1)
    mean = h.mean(axis=1)
    std = np.sqrt(np.maximum((h * h).mean(axis=1) - mean * mean, 1e-6))
    z = np.maximum(np.concatenate([mean, std], axis=1) @ network.dense[0] + network.dense[1], 0.0)
    z = z @ network.out[0] + network.out[1]
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("floor", [0.0, 1.5])
def test_numpy_forward_shares_no_frames_between_windows_for_any_kernel_and_dilation(floor: float) -> None:
    """The forward pass lays all windows in one array with zero gaps between them: with even and odd
    kernels, dilations up to 4 and windows shorter than the gap, no window sees another's frames."""
    rng = np.random.default_rng(3)
    shapes = [(2, 6, 5, 1), (4, 5, 7, 3), (3, 7, 4, 4), (1, 4, 6, 1)]  # taps, in, out, dilation
    arrays = {"floor": np.float32(floor)}
    for i, (taps, width_in, width_out, dilation) in enumerate(shapes):
        arrays[f"conv_kernel_{i}"] = rng.normal(0, 0.5, (taps, width_in, width_out)).astype(np.float32)
        arrays[f"conv_bias_{i}"] = rng.normal(0, 0.1, width_out).astype(np.float32)
        arrays[f"conv_dilation_{i}"] = np.int64(dilation)
    arrays.update(dense_kernel=rng.normal(0, 0.5, (12, 9)).astype(np.float32),
                  dense_bias=rng.normal(0, 0.1, 9).astype(np.float32),
                  out_kernel=rng.normal(0, 0.5, (9, 3)).astype(np.float32), out_bias=np.zeros(3, np.float32))
    network = SequenceNetwork(arrays, ["a", "b", "c"], n_bands=6)
    assert network._gap == 5  # 4 taps at dilation 3 reach 4 frames before a frame and 5 after
    for t in (2, 9, 30):
        windows = rng.normal(0, 1.0, (7, t, 6)).astype(np.float32)
        got = network.predict_proba(windows)
        np.testing.assert_allclose(got, _im2col_forward(network, windows), atol=1e-5)
        # Each window alone gives what it gives among the others.
        np.testing.assert_allclose(got[3], network.predict_proba(windows[3:4])[0], atol=1e-6)

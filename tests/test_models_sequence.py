"""The frame network: numpy equals Keras, one encoder pass per stream whatever the stretches, the
export round trip, a small fit, and end to end through the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ser_batch.config import CnnConfig
from ser_batch.features.melframes import DB_SCALE, StreamFrames, normalize_frames
from ser_batch.models.sequence import (
    CNN_ARRAYS,
    SequenceClassifier,
    StreamNetwork,
    build_network,
    conv_reach,
    export_stream_network,
    load_frame_network,
    pooling_weights,
    training_crops,
)

pytest.importorskip("keras")


def _randomise_batch_norms(model, rng: np.random.Generator) -> None:
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.2, n), rng.normal(0, 0.3, n),
                               rng.uniform(0.5, 2.0, n)])


def _network(tmp_path: Path, params: CnnConfig, *, context: int = 31, seed: int = 0):
    model = build_network(params, n_bands=64, n_classes=8)
    _randomise_batch_norms(model, np.random.default_rng(seed))
    path = export_stream_network(model, tmp_path / CNN_ARRAYS, params=params, context=context)
    return model, load_frame_network(path, classes=[f"c{i}" for i in range(8)], n_bands=64)


def _stream(rng: np.random.Generator, n: int = 300) -> StreamFrames:
    frames = rng.normal(-2.0, 0.6, size=(n, 64)).astype(np.float32)
    frames[n // 3 : n // 3 + 40] += 1.5  # a loud stretch: the relative floor has something to do
    speech = rng.random(n) < 0.6
    speech[: n // 5] = False  # windows without any speech pool all their frames
    starts = np.arange(0, n - 47 + 1, 16)
    starts, ends = np.append(starts, starts[-1] + 16), np.append(starts + 47, n)  # a last, shorter window
    return StreamFrames.whole(frames, speech, starts, ends)


def _keras_inputs(stream: StreamFrames, params: CnnConfig, *, context: int) -> tuple[np.ndarray, np.ndarray]:
    """The Keras network's inputs for the stream's windows, made the plain way: the whole stream
    normalised, zeros past its ends, one crop per window with the encoder's reach each side."""
    r, n, width = conv_reach(params.kernels, params.dilations), len(stream.frames), 47
    norm = normalize_frames(stream.frames, context=context, floor=params.relative_floor_db / DB_SCALE)
    padded = np.zeros((n + 2 * r + width, 64), dtype=np.float32)
    padded[r : r + n] = norm
    x = np.stack([padded[s : s + width + 2 * r] for s in stream.starts])
    offsets = stream.starts[:, None] + np.arange(width)[None, :]
    valid = offsets < stream.ends[:, None]
    said = stream.speech[np.minimum(offsets, n - 1)] & valid
    return x, pooling_weights(said, valid, pooling=params.pooling)


@pytest.mark.parametrize("params", [CnnConfig(), CnnConfig(relative_floor_db=0.0, pooling="all"),
                                    CnnConfig(kernels=(3, 5, 3), dilations=(1, 1, 4), width=32, dense=16)])
def test_numpy_stream_network_equals_keras_on_every_window(tmp_path: Path, params: CnnConfig) -> None:
    model, network = _network(tmp_path, params)
    assert isinstance(network, StreamNetwork)
    assert network.reach == 2 * 31 + conv_reach(params.kernels, params.dilations)
    stream = _stream(np.random.default_rng(1))
    expected = np.asarray(model(list(_keras_inputs(stream, params, context=31)), training=False))
    got = network.predict_proba([stream])
    assert got.shape == (len(stream), 8)
    assert np.abs(got - expected).max() < 1e-5
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-9)


def test_stretches_of_a_stream_give_the_whole_streams_windows(tmp_path: Path) -> None:
    """The encoder's output depends on frames within ``reach``: a stream cut into stretches anywhere,
    each with ``reach`` frames past its windows (or the stream's end), gives the same probabilities,
    and so do several streams scored in one call."""
    _, network = _network(tmp_path, CnnConfig())
    rng = np.random.default_rng(2)
    stream = _stream(rng)
    whole = network.predict_proba([stream])
    n, reach = len(stream.frames), network.reach
    for cut in (1, 3, 7, 12):
        parts = []
        for chosen in (slice(0, cut), slice(cut, None)):
            starts, ends = stream.starts[chosen], stream.ends[chosen]
            lo, hi = max(0, int(starts.min()) - reach), min(n, int(ends.max()) + reach)
            parts.append(StreamFrames(stream.frames[lo:hi], lo, hi == n, starts, ends, stream.speech[lo:hi]))
        np.testing.assert_allclose(network.predict_proba(parts), whole, rtol=0, atol=1e-6)
    other = _stream(rng, n=140)
    both = network.predict_proba([other, stream, other])
    np.testing.assert_allclose(both[len(other) : len(other) + len(stream)], whole, rtol=0, atol=1e-6)
    np.testing.assert_allclose(both[: len(other)], network.predict_proba([other]), rtol=0, atol=1e-6)
    # A stretch without enough context is refused rather than scored differently.
    starts, ends = stream.starts[5:], stream.ends[5:]
    with pytest.raises(ValueError, match="too short"):
        network.predict_proba([StreamFrames(stream.frames[60:], 60, True, starts, ends, stream.speech[60:])])


def test_pooling_weights_fall_back_to_all_frames_of_a_window_without_speech() -> None:
    speech = np.array([[True, False, False], [False, False, False], [True, True, True]])
    valid = np.array([[True, True, True], [True, True, False], [True, True, False]])
    np.testing.assert_array_equal(pooling_weights(speech, valid, pooling="speech"),
                                  [[1, 0, 0], [1, 1, 0], [1, 1, 0]])
    np.testing.assert_array_equal(pooling_weights(speech, valid, pooling="all"), valid.astype(np.float32))


def test_training_crops_are_the_streams_inputs_of_a_window() -> None:
    """A training crop (without augmentation or masks) is what the scoring path feeds the encoder for
    the window at the crop's start: normalised frames with ``reach`` frames each side, zeros past the
    row's ends, and the window's pooling weights."""
    rng = np.random.default_rng(5)
    params = CnnConfig(freq_masks=0, time_masks=0)
    stream = _stream(rng, n=120)
    x, w = training_crops([stream.frames], [stream.speech], width=47, reach=8, context=31, params=params,
                          rng=np.random.default_rng(0))
    start = next(s for s in range(0, 120 - 47 + 1) if np.array_equal(
        x[0, 8:10], normalize_frames(stream.frames, context=31, floor=2.5)[s : s + 2]))
    crop = StreamFrames.whole(stream.frames, stream.speech, np.array([start]), np.array([start + 47]))
    expected_x, expected_w = _keras_inputs(crop, params, context=31)
    np.testing.assert_allclose(x, expected_x, atol=1e-6)
    np.testing.assert_array_equal(w, expected_w)
    assert stream.speech[start : start + 47].mean() >= 0.3  # crops are drawn where there is speech
    # A row shorter than the window: its frames, zeros after, weights on its frames only.
    x, w = training_crops([stream.frames[:20]], [np.ones(20, bool)], width=47, reach=8, context=31, params=params,
                          rng=np.random.default_rng(0))
    assert x.shape == (1, 63, 64) and np.all(x[0, 28:] == 0) and w[0, :20].all() and not w[0, 20:].any()


def test_tiny_fit_saves_both_files_and_its_arrays_predict_like_keras(tmp_path) -> None:
    rng = np.random.default_rng(1)
    rows, speech, labels = [], [], []
    for i in range(24):
        x = rng.normal(-2.0, 0.3, size=(int(rng.integers(30, 80)), 16)).astype(np.float32)
        if i % 2:
            x[:, :8] += np.sin(np.arange(len(x)) / 2.0)[:, None]  # a modulation the band means do not remove
        rows.append(x)
        speech.append(rng.random(len(x)) < 0.8)
        labels.append("b" if i % 2 else "a")
    params = CnnConfig(kernels=(3, 3), dilations=(1, 2), width=16, dense=16, epochs=15, batch_size=8,
                       learning_rate=0.01, norm_context_s=0.3, augment=())
    model = SequenceClassifier(params=params, window=20, seed=0).fit(rows, np.array(labels), speech=speech)
    assert len(model.history_["loss"]) == 15
    paths = model.save(tmp_path)
    assert {p.name for p in paths} == {"cnn.npz", "cnn.keras"}
    network = load_frame_network(tmp_path / CNN_ARRAYS, classes=list(model.classes_))
    streams = [StreamFrames.whole(r, s, np.array([0, 8]), np.array([20, min(28, len(r))]))
               for r, s in zip(rows, speech)]
    proba = network.predict_proba(streams)
    np.testing.assert_allclose(proba, model.predict_proba(streams), atol=1e-7)
    # (45 steps are too few for batch norm's moving statistics to settle: judge the training loss.)
    assert model.history_["loss"][-1] < model.history_["loss"][0]
    # The Keras file holds the same network (safe mode: only registered layers).
    import keras

    native = keras.models.load_model(tmp_path / "cnn.keras", compile=False, safe_mode=True)
    assert [w.shape for w in native.get_weights()] == [w.shape for w in model.model_.get_weights()]


@pytest.mark.parametrize("key,value,match", [("format", np.int64(1), "format"),
                                             ("conv_dilation_0", np.int64(2), "even"),
                                             ("context", np.int64(5000), "context")])
def test_arrays_that_are_not_a_stream_network_are_refused(tmp_path: Path, key: str, value, match: str) -> None:
    from ser_batch.models.networks import read_arrays

    _network(tmp_path, CnnConfig(kernels=(4, 3), dilations=(2, 1)))
    arrays = read_arrays(tmp_path / CNN_ARRAYS)
    arrays[key] = value
    if key == "conv_dilation_0":
        arrays["conv_kernel_0"] = arrays["conv_kernel_0"][:4]  # 4 taps at dilation 2: span 6 is even; make it odd
        arrays[key] = np.int64(1)
    with pytest.raises(ValueError, match=match):
        StreamNetwork(arrays, [f"c{i}" for i in range(8)], n_bands=64)


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
    assert data.frame_speech is not None and [len(f) for f in data.frame_speech] == [len(f) for f in data.frames]
    assert all(f.dtype == bool for f in data.frame_speech) and all(f.any() for f in data.frame_speech)
    bundle = load_bundle(bundle_dir)
    assert bundle.frameworks == ["keras", "cnn"] and "cnn.npz" in bundle.manifest["files"]
    assert bundle.needs_frames and bundle.frame_reach == 2 * 31 + 8  # +-1 s twice, then the encoder's reach
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
    rows = dict(frames=data.frames[:2], frame_speech=data.frame_speech[:2])
    both = bundle.predict_rows(data.X[:2], data.segments[:2], framework="both", **rows)
    keras = bundle.predict_rows(data.X[:2], data.segments[:2], framework="keras", **rows)
    cnn = bundle.predict_rows(data.X[:2], data.segments[:2], framework="cnn", **rows)
    np.testing.assert_allclose(both, (keras + cnn) / 2, atol=1e-9)
    # A tampered cnn.npz is refused by the checksum before anything is read.
    copy = tmp_path / "tampered"
    import shutil

    shutil.copytree(bundle_dir, copy)
    with open(copy / "cnn.npz", "ab") as handle:
        handle.write(b"x")
    with pytest.raises(BundleError, match="checksum mismatch for cnn.npz"):
        load_bundle(copy)


    # Rows without the frames' speech flags (features of an older ser-batch) are refused, with why.
    with pytest.raises(BundleError, match="frame_speech"):
        bundle.predict_rows(data.X[:2], data.segments[:2], framework="cnn", frames=data.frames[:2])


def test_scores_do_not_depend_on_the_block_size(cnn_bundle, tmp_path: Path) -> None:
    """A 70 s signal scored in blocks of 1, 7 and 60 s: the cnn's windows (encoder run once per stream,
    its context carried across blocks) and the summaries are the same."""
    import soundfile as sf

    from ser_batch.config import Config
    from ser_batch.inference.scoring import file_windows
    from ser_batch.models.bundle import load_bundle

    from conftest import speech_like

    _, _, bundle_dir = cnn_bundle
    bundle = load_bundle(bundle_dir)
    parts = [speech_like(sample_rate=16000, duration_s=2.0 + (i % 3), f0_hz=110 + 30 * (i % 5), seed=i)
             for i in range(24)]
    gaps = [np.zeros(int(16000 * (0.3 + 0.2 * (i % 4))), dtype=np.float32) for i in range(24)]
    y = np.concatenate([x for pair in zip(parts, gaps) for x in pair])[: 70 * 16000]
    path = tmp_path / "long.wav"
    sf.write(path, y, 16000)
    results = []
    for block_s in (1.0, 7.0, 60.0):
        config = Config().replace(score={"block_s": block_s, "framework": "cnn"})
        [stream] = file_windows(path, bundle=bundle, config=config, framework="cnn")
        results.append((stream.proba, stream.summary.mean_proba()))
    assert len(results[0][0]) > 100
    for proba, mean in results[1:]:
        np.testing.assert_allclose(proba, results[0][0], rtol=0, atol=1e-5)
        np.testing.assert_allclose(mean, results[0][1], rtol=0, atol=1e-6)

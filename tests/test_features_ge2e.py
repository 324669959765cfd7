"""The GE2E speaker encoder in numpy equals Resemblyzer's (torch) to 1e-4: mel frames and partial
embeddings of generated signals against the reference's outputs stored in
tests/golden/ge2e_reference.json (made once by benchmarks/ge2e_reference.py; no torch here)."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from ser_batch.errors import FeatureError
from ser_batch.features import ge2e

REFERENCE = Path(__file__).parent / "golden" / "ge2e_reference.json"


def reference_signal(seed: int, seconds: float = 3.2, rate: int = 16000) -> np.ndarray:
    """benchmarks/ge2e_reference.py's signal (kept the same: the stored hash checks it)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 110.0 + 40.0 * seed + 30.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    y = sum(np.sin(k * phase) / k for k in range(1, 12))
    y *= 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t) ** 2
    y += 0.02 * rng.standard_normal(len(t))
    return (0.1 * y / np.abs(y).max()).astype(np.float32)


@pytest.fixture(scope="module")
def encoder() -> ge2e.SpeakerEncoder:
    return ge2e.SpeakerEncoder(ge2e.read_checkpoint(ge2e.weights_path()))


@pytest.mark.parametrize("entry", json.loads(REFERENCE.read_text())["entries"], ids=lambda e: f"seed{e['seed']}")
def test_numpy_port_equals_the_reference_encoder(encoder: ge2e.SpeakerEncoder, entry: dict) -> None:
    y = reference_signal(entry["seed"])
    assert hashlib.sha256(y.tobytes()).hexdigest() == entry["signal_sha256"]
    mel = ge2e.encoder_mel(y)
    assert mel.shape == (entry["mel_frames"], 40)
    head = np.asarray(entry["mel_head"])
    np.testing.assert_allclose(mel[:12], head, rtol=1e-4, atol=1e-7)  # (stored to 7 decimals)
    assert float(mel.astype(np.float64).sum()) == pytest.approx(entry["mel_sum"], rel=1e-5)
    partials = np.stack([mel[s : s + ge2e.PARTIAL_FRAMES] for s in entry["partial_starts"]])
    got = encoder.embed(partials)
    expected = np.asarray(entry["embeddings"])
    assert np.abs(got - expected).max() < 1e-4
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_the_checkpoint_is_read_without_torch_and_holds_the_encoder(encoder: ge2e.SpeakerEncoder) -> None:
    import sys

    state = ge2e.read_checkpoint(ge2e.weights_path())
    assert "torch" not in sys.modules
    assert set(ge2e.ARRAY_SHAPES) <= set(state)
    assert all(state[k].shape == shape and state[k].dtype == np.float32 for k, shape in ge2e.ARRAY_SHAPES.items())


def test_a_checkpoint_that_asks_for_code_is_refused(tmp_path: Path) -> None:
    """The unpickler builds dicts and arrays only: a pickle naming any other callable is refused
    before it runs."""

    import os

    witness = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(witness),))

    path = tmp_path / "evil.pt"
    with path.open("wb") as handle:
        for item in (ge2e._MAGIC, 1001, {"protocol_version": 1001}, {"model_state": Evil()}):
            pickle.dump(item, handle, protocol=2)
    with pytest.raises(FeatureError, match=r"asks for \w+\.mkdir, which a state dict of arrays does not need"):
        ge2e.read_checkpoint(path)
    assert not witness.exists()
    (tmp_path / "not.pt").write_bytes(b"PK\x03\x04 not a legacy checkpoint")
    with pytest.raises(FeatureError, match="not a legacy PyTorch checkpoint"):
        ge2e.read_checkpoint(tmp_path / "not.pt")


def test_wrong_shapes_are_refused() -> None:
    state = {k: np.zeros(shape, np.float32) for k, shape in ge2e.ARRAY_SHAPES.items()}
    ge2e.encoder_arrays(state)
    state["linear.bias"] = np.zeros(3, np.float32)
    with pytest.raises(FeatureError, match="linear.bias"):
        ge2e.encoder_arrays(state)
    del state["linear.bias"]
    with pytest.raises(FeatureError, match="lack"):
        ge2e.encoder_arrays(state)


# ------------------------------------------------------------------ the ge2e model family, end to end


def test_window_embeddings_are_the_same_streamed_in_any_block_size(encoder: ge2e.SpeakerEncoder) -> None:
    from ser_batch.config import FeatureConfig
    from ser_batch.features.windows import WindowGrid, n_frames_of, stream_windows

    config = FeatureConfig(recipe="rich")
    y = np.concatenate([reference_signal(0), np.zeros(8000, np.float32), reference_signal(1)])
    grid = WindowGrid.of(config, 16000)
    n = n_frames_of(len(y), config.hop_length)
    starts, ends = grid.bounds(0, grid.n_windows(n), n)
    whole = ge2e.embed_windows(encoder, ge2e.window_samples(y, starts, ends, hop_length=config.hop_length))
    assert whole.shape == (len(starts), 256) and ends[-1] - starts[-1] < 47  # a last, shorter window too
    for step in (7000, 40000):
        batches = list(stream_windows((y[i : i + step] for i in range(0, len(y), step)), sample_rate=16000,
                                      config=config, vectors=False,
                                      embed=lambda pieces: ge2e.embed_windows(encoder, pieces)))
        np.testing.assert_allclose(np.concatenate([b.embeddings for b in batches]), whole, atol=1e-6)


def test_extract_train_score_with_the_ge2e_model(tmp_path: Path) -> None:
    """extract --set extract.embeddings=ge2e stores each window's embedding; train --models keras,ge2e
    fits an MLP on them and puts the encoder's weights in the bundle; score and predict embed the
    windows with the bundle's encoder and give what the model gives those embeddings."""
    import json

    import pandas as pd
    import soundfile as sf
    from click.testing import CliRunner

    from conftest import speech_like
    from ser_batch import schema
    from ser_batch.cli import main
    from ser_batch.data.featureset import load_feature_set
    from ser_batch.models.bundle import load_bundle

    audio = tmp_path / "audio"
    for actor in (1, 2, 3):
        for emotion, f0 in (("01", 110.0), ("05", 250.0)):
            folder = audio / f"Actor_{actor:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            y = speech_like(sample_rate=16000, duration_s=2.0, f0_hz=f0 + 7 * actor, seed=actor)
            sf.write(folder / f"03-01-{emotion}-01-01-01-{actor:02d}.wav", y, 16000)
    features = tmp_path / "features"
    runner = CliRunner()
    result = runner.invoke(main, ["extract", str(audio), "--out", str(features), "--recipe", "rich", "--in-process",
                                  "--no-progress", "--set", "extract.embeddings=ge2e"])
    assert result.exit_code == 0, result.output
    data = load_feature_set(features)
    assert data.embeddings is not None and [len(e) for e in data.embeddings] == [len(s) for s in data.segments]
    bundle_dir = tmp_path / "bundle"
    result = runner.invoke(main, ["train", str(features), "--out", str(bundle_dir), "--models", "keras,ge2e",
                                  "--test-actors", "3", "--in-process", "--set", "keras.epochs=2",
                                  "--set", "sklearn.max_iter=20"])
    assert result.exit_code == 0, result.output
    assert "ge2e" in result.output
    bundle = load_bundle(bundle_dir)
    assert bundle.frameworks == ["keras", "ge2e"] and bundle.needs_embeddings
    assert {"ge2e_mlp.npz", "ge2e_encoder.npz", "NOTICE-ge2e.md"} <= set(bundle.manifest["files"])
    assert "Apache License 2.0" in (bundle_dir / "NOTICE-ge2e.md").read_text()  # the weights' licence with them
    out = tmp_path / "scores"
    result = runner.invoke(main, ["score", str(audio), "--out", str(out), "--model", str(bundle_dir),
                                  "--framework", "ge2e", "--in-process", "--no-progress"])
    assert result.exit_code == 0, result.output
    segments = pd.read_parquet(out / "segments")
    path = "Actor_02/03-01-05-01-01-01-02.wav"
    got = segments[segments[schema.PATH] == path].sort_values(schema.START_S)
    row = int(np.flatnonzero(data.paths == path)[0])
    expected = bundle.model("ge2e").predict_proba(data.embeddings[row])
    columns = [schema.proba_column(c) for c in bundle.classes]
    order = [list(bundle.model("ge2e").classes_).index(c) for c in bundle.classes]
    np.testing.assert_allclose(got[columns].to_numpy(), expected[:, order], atol=1e-5)
    result = runner.invoke(main, ["predict", str(audio / path), "--model", str(bundle_dir), "--json"])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.output)[0]["predictions"]) == {"keras", "ge2e", "both"}

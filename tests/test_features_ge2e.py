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

    class Evil:
        def __reduce__(self):
            return (print, ("this must not run",))

    path = tmp_path / "evil.pt"
    with path.open("wb") as handle:
        for item in (ge2e._MAGIC, 1001, {"protocol_version": 1001}, {"model_state": Evil()}):
            pickle.dump(item, handle, protocol=2)
    with pytest.raises(FeatureError, match=r"asks for __builtin__\.print"):  # (protocol 2 names it so)
        ge2e.read_checkpoint(path)
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

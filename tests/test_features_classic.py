"""Tests for :mod:`ser_batch.features.classic`: the reference librosa recipe, and how it refuses what
librosa or scipy would turn into NaN or garbage.

Signals are generated (speech-like tones, triads of sines) at 16 and 8 kHz.
"""

from __future__ import annotations

from collections.abc import Callable

import librosa
import numpy as np
import pytest

from ser_batch.config import FeatureConfig
from ser_batch.errors import FeatureError
from ser_batch.features import classic

from conftest import speech_like

CLASSIC = FeatureConfig(recipe="classic")
N_FEATURES = 193
TONNETZ = slice(187, 193)


@pytest.fixture(scope="module")
def speech_16k() -> np.ndarray:
    return speech_like(sample_rate=16_000, duration_s=1.0)


def triad(root_midi: int, quality: str, *, sample_rate: int, duration_s: float = 1.0) -> np.ndarray:
    """Root, third (major or minor) and fifth as equal-amplitude sines, float32."""
    t = np.arange(round(duration_s * sample_rate)) / sample_rate
    notes = (root_midi, root_midi + (4 if quality == "major" else 3), root_midi + 7)
    return (0.2 * sum(np.sin(2 * np.pi * 440.0 * 2 ** ((m - 69) / 12) * t) for m in notes)).astype(np.float32)


def ideal_tonnetz(root_midi: int, quality: str) -> np.ndarray:
    """Tonnetz of a chroma with equal energy in the triad's three pitch classes, nowhere else:
    the mean of their points on the circles of fifths, minor thirds and major thirds (radius
    0.5), written out from Harte et al. (2006) rather than from librosa's code."""
    classes = np.array([root_midi, root_midi + (4 if quality == "major" else 3), root_midi + 7]) % 12
    angles = {"fifths": 7 * np.pi / 6 * classes, "minor": 3 * np.pi / 2 * classes, "major": 2 * np.pi / 3 * classes}
    return np.array([np.sin(angles["fifths"]).mean(), np.cos(angles["fifths"]).mean(),
                     np.sin(angles["minor"]).mean(), np.cos(angles["minor"]).mean(),
                     0.5 * np.sin(angles["major"]).mean(), 0.5 * np.cos(angles["major"]).mean()])


# --- the reference -----------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:n_fft=.* is too large:UserWarning")  # CQT's decimated octaves
def test_classic_equals_direct_librosa_calls(speech_16k: np.ndarray) -> None:
    y, sr = speech_16k, 16_000
    S = np.abs(librosa.stft(y))
    reference = np.concatenate([
        librosa.feature.mfcc(y=y, sr=sr, n_mfcc=40).mean(axis=1),
        librosa.feature.chroma_stft(S=S, sr=sr).mean(axis=1),
        librosa.feature.melspectrogram(y=y, sr=sr).mean(axis=1),
        librosa.feature.spectral_contrast(S=S, sr=sr).mean(axis=1),
        librosa.feature.tonnetz(y=librosa.effects.harmonic(y), sr=sr).mean(axis=1),
    ])
    assert reference.shape == (N_FEATURES,)
    ours = classic.classic_features(y, sr, config=CLASSIC)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sample_rate", [16_000, 8_000])
@pytest.mark.parametrize("kind", ["speech", "noise"])
def test_classic_shape_dtype_finite(make_signal: Callable[..., np.ndarray], sample_rate: int, kind: str) -> None:
    y = make_signal(kind, sample_rate=sample_rate, duration_s=1.0)
    vector = classic.classic_features(y, sample_rate, config=CLASSIC)
    assert vector.shape == (N_FEATURES,) and vector.dtype == np.float32
    assert np.isfinite(vector).all()
    assert np.ptp(vector) > 0  # not a constant placeholder


@pytest.mark.parametrize("sample_rate", [16_000, 8_000])
@pytest.mark.parametrize(("root", "quality"), [(60, "major"), (62, "minor"), (66, "major"), (71, "minor")])
def test_classic_tonnetz_of_a_triad(sample_rate: int, root: int, quality: str) -> None:
    # The constant-Q chroma of three pure tones is nearly the ideal three-class chroma, so
    # the exact tonnetz lands within 0.15 of its textbook value (measured: 0.06-0.09),
    # while any two of the 24 major and minor triads differ by at least 0.45 somewhere.
    y = triad(root, quality, sample_rate=sample_rate)
    tonnetz = classic.classic_features(y, sample_rate, config=CLASSIC)[TONNETZ]
    np.testing.assert_allclose(tonnetz, ideal_tonnetz(root, quality), rtol=0, atol=0.15)


# --- what it refuses -----------------------------------------------------------------------


@pytest.mark.parametrize("n_samples", [1, 100, 1000, 2047])
def test_classic_refuses_signals_shorter_than_a_frame(n_samples: int) -> None:
    y = np.random.default_rng(0).uniform(-0.5, 0.5, n_samples).astype(np.float32)
    with pytest.raises(FeatureError, match=r"^too short: [\d.]+ ms; at least 128 ms needed \(one analysis frame"):
        classic.classic_features(y, 16_000, config=CLASSIC)


def test_classic_accepts_exactly_one_frame() -> None:
    y = np.random.default_rng(0).uniform(-0.5, 0.5, 2048).astype(np.float32)
    vector = classic.classic_features(y, 16_000, config=CLASSIC)
    assert vector.shape == (N_FEATURES,) and np.isfinite(vector).all()


def test_classic_needs_three_frames_when_the_hop_is_long() -> None:
    # hop = n_fft: a signal of one frame has only two STFT frames, on which scipy's median
    # filter (harmonic separation) reads garbage; three frames are needed, 2 * hop samples.
    config = FeatureConfig(recipe="classic", n_fft=1024, hop_length=1024)
    assert classic.min_samples(config)[0] == 2048
    assert classic.min_samples(CLASSIC) == (2048, "")
    y = np.random.default_rng(0).uniform(-0.5, 0.5, 2048).astype(np.float32)
    with pytest.raises(FeatureError, match=r"^too short: 127 ms; at least 128 ms needed \(3 STFT frames"):
        classic.classic_features(y[:2047], 16_000, config=config)
    first = classic.classic_features(y, 16_000, config=config)
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(classic.classic_features(y, 16_000, config=config), first)


def test_non_finite_harmonic_part_is_a_feature_error(monkeypatch: pytest.MonkeyPatch,
                                                     speech_16k: np.ndarray) -> None:
    # What librosa.effects.harmonic returned for a 1000-sample signal, at random: NaN. It
    # must become a FeatureError (an error row), not librosa's ParameterError from tonnetz.
    monkeypatch.setattr(librosa.effects, "harmonic", lambda y, **_: np.full_like(y, np.nan))
    with pytest.raises(FeatureError, match=r"^harmonic part \(librosa.effects.harmonic\) values are not finite$"):
        classic.classic_features(speech_16k, 16_000, config=CLASSIC)


def test_non_finite_signal_is_a_feature_error(speech_16k: np.ndarray) -> None:
    y = speech_16k.copy()
    y[500] = np.inf
    with pytest.raises(FeatureError, match="^signal has NaN or infinite samples$"):
        classic.classic_features(y, 16_000, config=CLASSIC)

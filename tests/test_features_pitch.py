"""Tests for :mod:`ser_batch.features.pitch`: the numpy YIN equals ``librosa.yin`` bit for bit.

Signals are generated (speech-like harmonics, chirps, noise, silence) or, where ../shared is
present, real RAVDESS clips on the same 4 kHz soxr copy the rich recipe tracks.
"""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import soundfile as sf
import soxr

from ser_batch.errors import FeatureError
from ser_batch.features.pitch import yin
from ser_batch.features.rich import F0_MAX_HZ, F0_MIN_HZ, PITCH_RATE

from conftest import SHARED, needs_shared, noise, speech_like

#: The rich recipe's call at 16 kHz (n_fft 2048, hop 512: every other frame) and at 8 kHz.
RICH_CALLS = [{"frame_length": 512, "hop_length": 256}, {"frame_length": 1024, "hop_length": 256}]


def _chirp(n: int, *, seed: int) -> np.ndarray:
    """A glide from 50 to 700 Hz (past both ends of the search range) with a silent gap and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / PITCH_RATE
    f = np.geomspace(50.0, 700.0, n)
    y = 0.4 * np.sin(2 * np.pi * np.cumsum(f) / PITCH_RATE) + 0.05 * rng.standard_normal(n)
    y[n // 3 : n // 3 + 700] = 0.0
    return (y * (0.5 + 0.5 * np.sin(2 * np.pi * 2.0 * t))).astype(np.float32)


SIGNALS = {
    "speech": lambda seed: speech_like(sample_rate=PITCH_RATE, duration_s=2.0, f0_hz=110.0 + 40 * seed, seed=seed),
    "chirp": lambda seed: _chirp(9000, seed=seed),
    "noise": lambda seed: noise(sample_rate=PITCH_RATE, duration_s=1.5, seed=seed),
    "silence": lambda seed: np.zeros(3000, np.float32),
}


def _both(y: np.ndarray, **options: object) -> tuple[np.ndarray, np.ndarray]:
    arguments = {"fmin": F0_MIN_HZ, "fmax": F0_MAX_HZ, "sr": PITCH_RATE, "center": False} | options
    return yin(y, **arguments), librosa.yin(y, **arguments)


@pytest.mark.parametrize("kind", sorted(SIGNALS))
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("call", RICH_CALLS)
def test_yin_equals_librosa_on_the_rich_recipes_calls(kind: str, seed: int, call: dict[str, int]) -> None:
    ours, reference = _both(SIGNALS[kind](seed), **call)
    assert ours.dtype == reference.dtype == np.float64
    np.testing.assert_array_equal(ours, reference)


@pytest.mark.parametrize(("frame_length", "hop_length", "fmin", "fmax", "center"),
                         [(300, 77, 60.0, 600.0, True), (256, 128, 80.0, 1000.0, False), (2048, 1, 30.0, 2000.0, True),
                          (512, 512, 60.0, 2000.0, False)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_yin_equals_librosa_for_other_settings(frame_length: int, hop_length: int, fmin: float, fmax: float,
                                               center: bool, dtype: type) -> None:
    y = _chirp(6000, seed=3).astype(dtype)[: 6000 if hop_length > 1 else 2600]
    ours, reference = _both(y, frame_length=frame_length, hop_length=hop_length, fmin=fmin, fmax=fmax,
                            center=center)
    np.testing.assert_array_equal(ours, reference)


def test_yin_of_exactly_one_frame() -> None:
    y = SIGNALS["speech"](1)[1000:1512]
    ours, reference = _both(y, frame_length=512, hop_length=256)
    assert ours.shape == (1,)
    np.testing.assert_array_equal(ours, reference)


@needs_shared
def test_yin_equals_librosa_on_ravdess_clips() -> None:
    clips = sorted((SHARED / "Audio_Speech_Actors_01-20_16k").glob("Actor_0[1-4]/*.wav"))[::25]
    assert len(clips) >= 8
    for clip in clips:
        y, rate = sf.read(clip, dtype="float32", always_2d=True)
        y = y.mean(axis=1)
        for source_rate, call in zip((16_000, 8_000), RICH_CALLS):
            x = soxr.resample(y, rate, source_rate, quality="HQ") if source_rate != rate else y
            low = soxr.resample(x, source_rate, PITCH_RATE, quality="HQ").astype(np.float32)
            ours, reference = _both(low, **call)
            np.testing.assert_array_equal(ours, reference, err_msg=f"{clip.name} at {source_rate} Hz")


@pytest.mark.parametrize(("options", "message"), [
    ({"fmin": 60.0, "fmax": 2001.0}, r"^yin needs 0 < fmin < fmax <= sr/2, got fmin=60.0, fmax=2001.0, sr=4000$"),
    ({"fmin": 600.0, "fmax": 60.0}, r"^yin needs 0 < fmin < fmax"),
    ({"fmin": 7.0, "fmax": 600.0}, r"^yin: fmin=7.0 Hz is too low for frame_length=512 at sr=4000 Hz$"),
])
def test_yin_refuses_an_impossible_range(options: dict[str, float], message: str) -> None:
    with pytest.raises(FeatureError, match=message):
        yin(np.zeros(2000, np.float32), sr=PITCH_RATE, frame_length=512, hop_length=256, **options)


def test_yin_refuses_a_signal_shorter_than_a_frame() -> None:
    with pytest.raises(FeatureError, match=r"^yin: a signal of 511 samples is shorter than one frame \(512\)$"):
        yin(np.zeros(511, np.float32), fmin=F0_MIN_HZ, fmax=F0_MAX_HZ, sr=PITCH_RATE, frame_length=512,
            hop_length=256)

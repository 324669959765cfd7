"""Tests for :mod:`ser_batch.audio.telephony`: G.711, telephone copies, speed and the augmentation names."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from ser_batch.audio import telephony
from ser_batch.augmentations import parse_augmentation
from ser_batch.errors import ConfigError
from ser_batch.schema import band_of

from conftest import band_energy, speech_like

RATE = 16000


def grid() -> np.ndarray:
    """Float32 samples over the whole range, dense near zero too (every code boundary)."""
    rng = np.random.default_rng(5)
    return np.concatenate([np.linspace(-1, 1, 400_001), rng.normal(0, 0.01, 100_000).clip(-1, 1),
                           rng.uniform(-1, 1, 100_000)]).astype(np.float32)


def soundfile_round_trip(x: np.ndarray, subtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(codes in the data chunk, samples read back) of ``x`` written as an 8 kHz ``subtype`` WAV."""
    buffer = io.BytesIO()
    sf.write(buffer, x, telephony.TELEPHONE_RATE, subtype=subtype, format="WAV")
    data = buffer.getvalue()
    start = data.index(b"data")
    size = int.from_bytes(data[start + 4 : start + 8], "little")
    buffer.seek(0)
    return np.frombuffer(data[start + 8 : start + 8 + size], dtype=np.uint8), sf.read(buffer, dtype="float32")[0]


@pytest.mark.parametrize("subtype, encode, decode", [
    ("ULAW", telephony.ulaw_encode, telephony.ulaw_decode),
    ("ALAW", telephony.alaw_encode, telephony.alaw_decode),
])
def test_companding_matches_soundfile(subtype: str, encode, decode) -> None:
    x = grid()
    codes, read_back = soundfile_round_trip(x, subtype)
    np.testing.assert_array_equal(encode(x), codes)
    np.testing.assert_array_equal(decode(encode(x)), read_back)


@pytest.mark.parametrize("encode, decode, levels", [
    (telephony.ulaw_encode, telephony.ulaw_decode, 255),  # 0 has two codes (+0 and -0)
    (telephony.alaw_encode, telephony.alaw_decode, 256),
])
def test_companding_uses_every_code_and_is_monotonic(encode, decode, levels: int) -> None:
    x = np.linspace(-1, 1, 200_001).astype(np.float32)
    y = decode(encode(x))
    assert len(np.unique(y)) == levels
    assert np.all(np.diff(y) >= 0)
    # Relative error of a logarithmic code: a few percent at every level above the lowest segments.
    loud = np.abs(x) > 0.01
    assert np.max(np.abs(y[loud] - x[loud]) / np.abs(x[loud])) < 0.07


def test_companding_clips_and_handles_nan() -> None:
    codes = telephony.ulaw_encode(np.array([2.0, -2.0, np.nan], dtype=np.float32))
    decoded = telephony.ulaw_decode(codes)
    assert decoded[0] == telephony.ulaw_decode(telephony.ulaw_encode(np.float32([1.0])))[0]
    assert decoded[1] < -0.97 and decoded[2] == 0.0


def test_pcm_quantise_is_16_bit() -> None:
    x = np.random.default_rng(0).uniform(-1, 1, 1000)
    q = telephony.quantise(x, "pcm")
    np.testing.assert_array_equal(q * 32768, np.round(q * 32768))
    assert np.max(np.abs(q - x)) <= 0.5 / 32768 + 1e-9
    with pytest.raises(ConfigError, match="unknown codec"):
        telephony.quantise(x, "gsm")


@pytest.mark.parametrize("codec", telephony.CODECS)
def test_telephone_copy_is_narrow_band_and_keeps_length(codec: str) -> None:
    y = np.random.default_rng(1).normal(0, 0.2, RATE * 2 + 37).astype(np.float32)  # flat up to 8 kHz
    assert band_energy(y, 4000, 8001) > 0.45
    out = telephony.telephone_copy(y, RATE, codec=codec)
    assert out.shape == y.shape and out.dtype == np.float32
    assert band_energy(out, 4000, 8001) < 1e-6  # nothing above the telephone rate's Nyquist
    assert band_energy(out, 0, 150) > 0.01  # an 8-kHz recording keeps the low band ...
    banded = telephony.telephone_copy(y, RATE, codec=codec, band_pass=True)
    assert banded.shape == y.shape
    assert band_energy(banded, 4000, 8001) < 1e-6
    assert band_energy(banded, 0, 150) < 5e-3  # ... a band-passed line does not
    assert band_energy(banded, 300, 3400) > 0.9


def test_telephone_copy_of_a_tone_in_the_band_keeps_it() -> None:
    t = np.arange(RATE) / RATE
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    out = telephony.telephone_copy(tone, RATE, codec="ulaw", band_pass=True)
    # The band filter shifts the tone's phase; fit a 1 kHz sinusoid and call the rest noise.
    # μ-law keeps ~38 dB; the filter's start-up transient is skipped.
    steady = slice(1600, -1600)
    basis = np.stack([np.sin(2 * np.pi * 1000 * t), np.cos(2 * np.pi * 1000 * t)], axis=1)[steady]
    fit, *_ = np.linalg.lstsq(basis, out[steady], rcond=None)
    assert np.hypot(*fit) == pytest.approx(0.5, rel=0.02)  # 1 kHz is inside the pass band
    error = out[steady] - basis @ fit
    assert 10 * np.log10(np.mean((basis @ fit) ** 2) / np.mean(error**2)) > 30


def test_telephone_copy_at_8_khz_and_line_noise() -> None:
    y = speech_like(sample_rate=8000, duration_s=1.0)
    out = telephony.telephone_copy(y, 8000, codec="alaw")
    assert out.shape == y.shape
    # A-law codes only: every sample is one of its 256 values.
    assert set(np.unique(out)) <= set(telephony.alaw_decode(np.arange(256, dtype=np.uint8)))
    with pytest.raises(ConfigError, match="rng"):
        telephony.telephone_copy(y, 8000, line_noise_db=-60)
    a = telephony.telephone_copy(y, 8000, line_noise_db=-60, rng=np.random.default_rng(3))
    b = telephony.telephone_copy(y, 8000, line_noise_db=-60, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, out)


def test_change_speed_length_and_pitch() -> None:
    t = np.arange(RATE) / RATE
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    fast = telephony.change_speed(tone, 1.05, sample_rate=RATE)
    assert len(fast) == round(RATE / 1.05)
    peak = np.fft.rfftfreq(len(fast), 1 / RATE)[np.argmax(np.abs(np.fft.rfft(fast)))]
    assert peak == pytest.approx(440 * 1.05, abs=2)
    same = telephony.change_speed(tone, 1.0, sample_rate=RATE)  # factor 1: the signal itself
    assert len(same) == len(tone)
    np.testing.assert_allclose(same[100:-100], tone[100:-100], atol=2e-3)


@pytest.mark.parametrize("name, kind, value", [
    ("telephone-pcm", "telephone", "pcm"), ("telephone-ulaw", "telephone", "ulaw"),
    ("telephone-alaw", "telephone", "alaw"), ("telephone-ulaw-band", "telephone-band", "ulaw"),
    ("noise-20db", "noise", 20.0), ("noise-7.5db", "noise", 7.5),
    ("pink-10db", "pink", 10.0), ("brown-5db", "brown", 5.0), ("hum-20db", "hum", 20.0),
    ("tones-10db", "tones", 10.0), ("reverb-0.6s", "reverb", 0.6), ("gain--6db", "gain", -6.0),
    ("gain-3db", "gain", 3.0),
    ("tempo-0.95", "tempo", 0.95), ("tempo-1.05", "tempo", 1.05),
])
def test_parse_augmentation(name: str, kind: str, value: object) -> None:
    spec = parse_augmentation(name)
    assert (spec.name, spec.kind, spec.value) == (name, kind, value)


@pytest.mark.parametrize("name", ["telephone-gsm", "noise-20", "noise", "tempo-2", "tempo-0.5", "Gain-3db", "",
                                  "reverb-0.6", "reverb-9s", "babble-10db"])
def test_parse_augmentation_refuses(name: str) -> None:
    with pytest.raises(ConfigError, match="augmentation"):
        parse_augmentation(name)


@pytest.mark.parametrize("name", ["telephone-ulaw", "noise-20db", "pink-5db", "brown-5db", "hum-10db", "tones-10db",
                                  "reverb-0.5s", "gain--6db", "tempo-1.05"])
def test_augmentation_is_deterministic_per_path_and_name(name: str) -> None:
    y = speech_like(sample_rate=RATE, duration_s=1.0)
    first = telephony.augment_signal(y, RATE, name, rng=telephony.augmentation_rng("a/b.wav", name))
    again = telephony.augment_signal(y, RATE, name, rng=telephony.augmentation_rng("a/b.wav", name))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first[: len(y)], y[: len(first)])
    if name.startswith(("noise", "pink", "brown", "reverb")):
        other = telephony.augment_signal(y, RATE, name, rng=telephony.augmentation_rng("a/c.wav", name))
        assert not np.array_equal(first, other)


def test_band_of() -> None:
    assert band_of(16000, None) == "wide"
    assert band_of(8000, None) == "narrow"
    assert band_of(44100, "telephone-pcm") == "narrow"
    assert band_of(44100, "noise-20db") == "wide"
    assert band_of(None, None) is None

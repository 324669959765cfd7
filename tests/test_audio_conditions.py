"""Tests for :mod:`ser_batch.audio.conditions`: noise of every kind at the SNR asked, reverberation
that decays as asked, gain."""

from __future__ import annotations

import numpy as np
import pytest

from ser_batch.audio import conditions
from ser_batch.errors import ConfigError

from conftest import band_energy, speech_like

RATE = 16000


def _others() -> list[np.ndarray]:
    return [speech_like(sample_rate=RATE, duration_s=1.5 + i / 3, f0_hz=100 + 40 * i, seed=10 + i) for i in range(4)]


@pytest.mark.parametrize("snr_db", [0.0, 5.0, 10.0, 20.0])
@pytest.mark.parametrize("kind", conditions.NOISE_KINDS)
def test_noise_snr_is_as_asked_for_every_kind(snr_db: float, kind: str) -> None:
    """The SNR achieved (speech power of the clean signal over the mean power of what was added) is
    within 0.5 dB of the one asked, for every kind of noise."""
    y = speech_like(sample_rate=RATE, duration_s=2.0)
    noisy = conditions.add_noise(y, snr_db, np.random.default_rng(0), sample_rate=RATE, kind=kind,
                                 sources=_others())
    noise = noisy.astype(np.float64) - y
    measured = 10 * np.log10(conditions.speech_power(y, RATE) / np.mean(noise**2))
    assert measured == pytest.approx(snr_db, abs=0.5)


def test_noise_level_follows_speech_not_pauses() -> None:
    speech = speech_like(sample_rate=RATE, duration_s=1.0)
    padded = np.concatenate([np.zeros(RATE * 3, np.float32), speech])  # 75% silence
    assert conditions.speech_power(padded, RATE) == pytest.approx(conditions.speech_power(speech, RATE), rel=0.05)
    noisy = conditions.add_noise(padded, 20.0, np.random.default_rng(0), sample_rate=RATE)
    noise = noisy.astype(np.float64) - padded
    assert 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(noise**2)) == pytest.approx(20, abs=1)


def test_coloured_noises_tilt_as_their_colour_says() -> None:
    rng = np.random.default_rng(2)
    white, pink, brown = (conditions.noise_signal(kind, RATE * 4, rng, sample_rate=RATE)
                          for kind in ("white", "pink", "brown"))
    for noise in (white, pink, brown):
        assert np.mean(noise**2) == pytest.approx(1.0, rel=1e-6)
    tilt = [band_energy(n, 100, 200) / band_energy(n, 6000, 6100) for n in (white, pink, brown)]
    assert 0.5 < tilt[0] < 2.0  # flat
    assert tilt[1] > 10 and tilt[2] > 10 * tilt[1]  # 1/f, then 1/f^2 falls faster


def test_hum_is_mains_and_its_harmonics_and_tones_come_and_go() -> None:
    hum = conditions.noise_signal("hum", RATE * 2, np.random.default_rng(3), sample_rate=RATE)
    spectrum = np.abs(np.fft.rfft(hum))
    freqs = np.fft.rfftfreq(len(hum), 1 / RATE)
    peak = freqs[np.argmax(spectrum)]
    assert peak in (50.0, 60.0)
    assert spectrum[np.argmin(np.abs(freqs - 3 * peak))] > 20 * np.median(spectrum)  # a harmonic stands out
    assert band_energy(hum, 2000, 8000) < 0.01 * band_energy(hum, 0, 1000)
    tones = conditions.noise_signal("tones", RATE * 5, np.random.default_rng(4), sample_rate=RATE)
    frames = (tones[: len(tones) // 160 * 160].reshape(-1, 160) ** 2).mean(axis=1)
    assert (frames < 1e-6).mean() > 0.1 and (frames > 0.1).mean() > 0.1  # gaps and beeps


def test_babble_is_made_of_the_sources_and_needs_one() -> None:
    rng = np.random.default_rng(5)
    mix = conditions.babble(_others(), RATE, rng, sample_rate=RATE)
    assert len(mix) == RATE and np.mean(mix**2) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="babble"):
        conditions.babble([np.zeros(100)], 1000, rng, sample_rate=RATE)
    with pytest.raises(ConfigError, match="unknown noise"):
        conditions.noise_signal("rain", 10, rng, sample_rate=RATE)


def _schroeder_rt60(h: np.ndarray, sample_rate: int) -> float:
    """RT60 from the backward-integrated energy decay, fitted between -5 and -25 dB (T20 x 3)."""
    energy = np.cumsum((h[1:] ** 2)[::-1])[::-1]  # the tail only: the direct path would dominate the start
    decay = 10 * np.log10(energy / energy[0])
    t = np.arange(len(decay)) / sample_rate
    fit = (decay <= -5) & (decay >= -25)
    slope = np.polyfit(t[fit], decay[fit], 1)[0]
    return -60.0 / slope


@pytest.mark.parametrize("rt60_s", [0.2, 0.5, 1.0])
def test_room_impulse_response_decays_by_60_db_in_rt60(rt60_s: float) -> None:
    h = conditions.room_impulse_response(rt60_s, np.random.default_rng(6), sample_rate=RATE, drr_db=3.0)
    assert h[0] == 1.0
    assert _schroeder_rt60(h, RATE) == pytest.approx(rt60_s, rel=0.1)
    tail = float(np.sum(h[1:] ** 2))
    assert 10 * np.log10(1.0 / tail) == pytest.approx(3.0, abs=1e-6)  # direct-to-reverberant ratio


def test_reverberate_keeps_length_and_level_and_smears_in_time() -> None:
    y = speech_like(sample_rate=RATE, duration_s=2.0)
    wet = conditions.reverberate(y, 0.8, np.random.default_rng(7), sample_rate=RATE)
    assert wet.shape == y.shape and wet.dtype == np.float32
    assert conditions.speech_power(wet, RATE) == pytest.approx(conditions.speech_power(y, RATE), rel=0.02)
    click = np.zeros(RATE, np.float32)
    click[100] = 0.5
    smeared = conditions.reverberate(click, 0.5, np.random.default_rng(8), sample_rate=RATE)
    assert np.abs(smeared[RATE // 10 : RATE // 5]).max() > 1e-3  # energy 100-200 ms after the click
    with pytest.raises(ConfigError, match="positive"):
        conditions.room_impulse_response(0.0, np.random.default_rng(0), sample_rate=RATE)


def test_gain_and_clipping() -> None:
    y = np.array([0.1, -0.2, 0.5], dtype=np.float32)
    np.testing.assert_allclose(conditions.gain(y, -6.0206), y / 2, rtol=1e-4)
    np.testing.assert_allclose(conditions.gain(y, 12.0), [10 ** 0.6 * 0.1, -10 ** 0.6 * 0.2, 1.0], rtol=1e-6)

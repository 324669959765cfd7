"""The cnn's training augmentation in the frame domain: noise at the SNR asked, reverberation that
decays as asked, gain, babble of other speakers only, and the same draws for the same seed."""

from __future__ import annotations

import numpy as np
import pytest

from ser_batch.config import CnnConfig, FeatureConfig
from ser_batch.models import frame_augment
from ser_batch.models.frame_augment import FrameAugmenter, reverb_frames, to_frames, to_power

FLOOR = -80.0 / 20.0


def _rows(n: int = 6, t: int = 120, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    rows = [rng.normal(-2.0, 0.4, size=(t, 64)).astype(np.float32) for _ in range(n)]
    speech = [rng.random(t) < 0.7 for _ in range(n)]
    return rows, speech


@pytest.mark.parametrize("kind", ["white", "pink", "brown", "hum", "tones", "babble"])
@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_noise_is_added_at_the_snr_drawn(kind: str, snr_db: float) -> None:
    """The power the augmenter adds, over the row's speech level (its mean band power over speech
    frames), is the SNR drawn, within 0.5 dB, for every kind of noise (over a crop as long as the
    noise's bank: intermittent tones and brown noise's slow drifts average out there as in a file)."""
    rows, speech = _rows(t=1 + int(frame_augment.BANK_S * 16000) // 512)
    params = CnnConfig(augment=(kind,), noise_prob=1.0, snr_db=(snr_db, snr_db))
    augmenter = FrameAugmenter.of(params, rows=rows, speech=speech, speakers=np.arange(6),
                                  frame_s=0.032, features=FeatureConfig(recipe="rich"))
    rng = np.random.default_rng(1)
    clean = to_power(rows[2])
    noisy = to_power(augmenter(rows[2], 2, rng))
    added = noisy - clean
    level = frame_augment.speech_level(rows[2], speech[2])
    measured = 10 * np.log10(level / added.mean())
    assert measured == pytest.approx(snr_db, abs=0.5)


def test_noise_bank_is_the_recipes_frames_of_each_noise_at_unit_mean() -> None:
    config = FeatureConfig(recipe="rich")
    pink = frame_augment.noise_bank("pink", config, 16000)
    white = frame_augment.noise_bank("white", config, 16000)
    assert pink.shape[1] == white.shape[1] == 64 and pink.mean() == pytest.approx(1.0)
    # Pink noise holds more of its power in the low bands than white noise does.
    assert pink[:, :8].mean() / pink[:, -8:].mean() > 10 * white[:, :8].mean() / white[:, -8:].mean()


@pytest.mark.parametrize("rt60_s", [0.3, 0.8])
def test_reverberation_decays_by_60_db_in_rt60(rt60_s: float) -> None:
    """A single loud frame's tail falls by 60 dB in ``rt60_s`` and carries the direct-to-reverberant
    ratio asked."""
    power = np.zeros((200, 4))
    power[10] = 1.0
    out = reverb_frames(power, rt60_s=rt60_s, drr_db=5.0, frame_s=0.032)
    tail = out[11:, 0] - power[11:, 0]
    frames_60db = rt60_s / 0.032
    slope_db = 10 * np.log10(tail[8] / tail[2]) / 6  # dB per frame
    assert slope_db * frames_60db == pytest.approx(-60.0, rel=0.02)
    assert 10 * np.log10(1.0 / (out[10:, 0].sum() - 1.0)) == pytest.approx(5.0, abs=0.05)


def test_gain_shifts_levels_down_to_the_floor_and_babble_is_other_speakers() -> None:
    rows, speech = _rows()
    params = CnnConfig(augment=("gain",), gain_prob=1.0, gain_db=12.0)
    augmenter = FrameAugmenter.of(params, rows=rows, speech=speech, speakers=np.arange(6), frame_s=0.032)
    out = augmenter(rows[0], 0, np.random.default_rng(3))
    shift = out - rows[0]
    assert np.allclose(shift, shift[0, 0], atol=1e-6) and 0 < abs(shift[0, 0]) <= 12.0 / 20.0
    low = np.full((5, 64), FLOOR + 0.01, dtype=np.float32)
    assert np.all(FrameAugmenter.of(CnnConfig(augment=("gain",), gain_prob=1.0, gain_db=60.0), rows=[low],
                                    speech=[np.ones(5, bool)], speakers=None, frame_s=0.032)(
        low, 0, np.random.default_rng(0)) >= FLOOR)
    # Babble: the rows of other speakers, never the row's own speaker's.
    speakers = np.array([1, 1, 1, 2, 3, 3])
    babble = FrameAugmenter.of(CnnConfig(augment=("babble",)), rows=rows, speech=speech, speakers=speakers,
                               frame_s=0.032)
    used = []
    original = frame_augment._stretch
    frame_augment._stretch = lambda power, n, rng: (used.append(power), original(power, n, rng))[1]
    try:
        babble.noise("babble", 50, 0, np.random.default_rng(4))
    finally:
        frame_augment._stretch = original
    own = [to_power(rows[i]) for i in (0, 1, 2)]
    assert used and not any(np.array_equal(u, o) for u in used for o in own)
    # Nobody else to babble: no noise rather than the speaker's own voice.
    assert FrameAugmenter.of(CnnConfig(augment=("babble",)), rows=rows[:1], speech=speech[:1],
                             speakers=np.array([1]), frame_s=0.032).noise("babble", 10, 0,
                                                                          np.random.default_rng(0)) is None


def test_the_same_seed_draws_the_same_augmentation() -> None:
    rows, speech = _rows()
    params = CnnConfig(augment=("babble", "pink", "reverb", "gain"), noise_prob=1.0, reverb_prob=1.0, gain_prob=1.0)
    augmenter = FrameAugmenter.of(params, rows=rows, speech=speech, speakers=np.arange(6), frame_s=0.032)
    a = augmenter(rows[1], 1, np.random.default_rng(9))
    b = augmenter(rows[1], 1, np.random.default_rng(9))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, rows[1]) and a.dtype == np.float32 and np.all(a >= FLOOR)
    assert FrameAugmenter.of(CnnConfig(augment=()), rows=rows, speech=speech, speakers=None, frame_s=0.032) is None
    np.testing.assert_allclose(to_frames(to_power(rows[0]), floor=FLOOR), rows[0], atol=1e-6)

"""Augmentation of the cnn's training frames in the frame domain: noise, reverberation and gain
applied to the log-mel frames of a crop, afresh in every epoch, before the per-frame normalisation.

The frames (:func:`ser_batch.features.melframes.mel_frames`) are mel band levels in dB / 20, so a
band's power is ``10 ** (2 * x)``. Independent sounds add in power, so a noisy crop is the crop's
band powers plus the noise's, scaled to a signal-to-noise ratio drawn from ``cnn.snr_db``: the SNR
is the ratio of the row's mean band power over its speech frames to the noise's mean band power.
Noises (``cnn.augment``):

* ``babble``: the band powers of 3-6 other speakers' training rows (``speakers``), each levelled to
  its own speech level, summed;
* ``white``, ``pink``, ``brown``, ``hum``, ``tones``: frames of the noises of
  :func:`ser_batch.audio.conditions.noise_signal`, computed once per feature configuration with the
  recipe's own code (a random stretch of 20 s of each per use).

``reverb``: each band's power followed by an exponentially decaying tail, the frame-domain image
of :func:`ser_batch.audio.conditions.room_impulse_response`: a tail frame ``k`` frames after a frame
carries ``A * a ** k`` of its power, ``a = 10 ** (-6 * frame_s / rt60)`` (60 dB of decay in ``rt60``
seconds, drawn from ``cnn.rt60_s``) and ``A`` set by a direct-to-reverberant ratio drawn from
:data:`DRR_DB`. ``gain``: all values shifted by up to ``cnn.gain_db`` (only the fixed floor of the
frames makes that matter after normalisation).

Results are floored at the frames' floor (``features.db_floor``), as extracted frames are. Doing this
on frames rather than waveforms costs microseconds per crop, so every epoch sees new noise, rooms
and levels; the yardstick (``benchmarks/transfer.py``) tests on real waveform conditions.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ser_batch.config import CNN_AUGMENTATIONS, CnnConfig, FeatureConfig
from ser_batch.features.melframes import DB_SCALE

#: The noises among what ``cnn.augment`` may name (:data:`ser_batch.config.CNN_AUGMENTATIONS`).
FRAME_NOISES = tuple(k for k in CNN_AUGMENTATIONS if k not in ("reverb", "gain"))
#: Direct-to-reverberant ratios of the frame reverberation, dB (drawn uniformly).
DRR_DB = (-3.0, 10.0)
#: Talkers in one babble (drawn uniformly, inclusive).
BABBLE_TALKERS = (3, 6)
#: Seconds of each stationary noise computed for the bank.
BANK_S = 20.0


def to_power(frames: np.ndarray) -> np.ndarray:
    """Band powers of frames in dB / 20 (float64)."""
    return np.power(10.0, 2.0 * np.asarray(frames, dtype=np.float64))


def to_frames(power: np.ndarray, *, floor: float) -> np.ndarray:
    """Frames (dB / 20, float32) of band powers, floored at ``floor`` (dB / 20)."""
    return np.maximum(0.5 * np.log10(np.maximum(power, 1e-30)), floor).astype(np.float32)


def speech_level(frames: np.ndarray, speech: np.ndarray | None) -> float:
    """A row's mean band power over its speech frames (all frames when none is speech)."""
    power = to_power(frames)
    if speech is not None and np.any(speech):
        power = power[np.asarray(speech, dtype=bool)]
    return float(power.mean()) if power.size else 0.0


def reverb_frames(power: np.ndarray, *, rt60_s: float, drr_db: float, frame_s: float) -> np.ndarray:
    """Band powers ``(t, b)`` with a reverberant tail added (see the module's text)."""
    from scipy.signal import lfilter

    a = 10.0 ** (-6.0 * frame_s / rt60_s)
    scale = (1.0 - a) * 10.0 ** (-drr_db / 10.0)  # tail energy = scale / (1 - a) = 1 / DRR
    return power + lfilter([scale], [1.0, -a], power, axis=0)


@lru_cache(maxsize=16)
def noise_bank(kind: str, config: FeatureConfig, sample_rate: int) -> np.ndarray:
    """Band powers ``(t, b)`` of :data:`BANK_S` seconds of ``kind`` noise, frames as the recipe
    computes them, scaled to a mean band power of 1 (seed fixed: the same bank every time)."""
    from ser_batch.audio.conditions import noise_signal
    from ser_batch.features.melframes import mel_frames
    from ser_batch.features.windows import signal_frames

    rng = np.random.default_rng(FRAME_NOISES.index(kind))
    y = 0.1 * noise_signal(kind, int(BANK_S * sample_rate), rng, sample_rate=sample_rate)
    rich, _ = signal_frames(y.astype(np.float32), sample_rate, config=config)
    power = to_power(mel_frames(rich, config))
    return power / power.mean()


def _stretch(power: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` consecutive frames of ``power`` from a random frame on, looped when needed."""
    start = int(rng.integers(len(power)))
    return np.resize(np.roll(power, -start, axis=0), (n, power.shape[1]))


@dataclass
class FrameAugmenter:
    """Draws and applies one augmentation of a crop's raw frames: ``augmenter(frames, row, rng)``."""

    params: CnnConfig
    rows: list[np.ndarray]
    levels: np.ndarray
    speakers: np.ndarray | None
    banks: dict[str, np.ndarray]
    floor: float
    frame_s: float

    @classmethod
    def of(cls, params: CnnConfig, *, rows: list[np.ndarray], speech: list[np.ndarray],
           speakers: np.ndarray | None, frame_s: float, features: FeatureConfig | None = None,
           sample_rate: int = 16000) -> FrameAugmenter | None:
        """The augmenter of ``cnn.augment`` for these training rows; None when it names nothing."""
        if not params.augment:
            return None
        features = features or FeatureConfig(recipe="rich")
        banks = {kind: noise_bank(kind, features, sample_rate) for kind in params.augment
                 if kind in FRAME_NOISES and kind != "babble"}
        if rows and any(bank.shape[1] != rows[0].shape[1] for bank in banks.values()):
            raise ValueError(f"the training frames have {rows[0].shape[1]} bands and the noise frames of these feature "
                             f"settings {next(iter(banks.values())).shape[1]}: augment frames made with them")
        levels = np.array([speech_level(r, s) for r, s in zip(rows, speech)])
        return cls(params, rows, levels, None if speakers is None else np.asarray(speakers), banks,
                   features.db_floor / DB_SCALE, frame_s)

    def __call__(self, frames: np.ndarray, row: int, rng: np.random.Generator) -> np.ndarray:
        p = self.params
        noises = [k for k in p.augment if k in FRAME_NOISES]
        power = None
        if "reverb" in p.augment and rng.random() < p.reverb_prob:
            power = reverb_frames(to_power(frames), rt60_s=rng.uniform(*p.rt60_s), drr_db=rng.uniform(*DRR_DB),
                                  frame_s=self.frame_s)
        if noises and rng.random() < p.noise_prob:
            noise = self.noise(noises[int(rng.integers(len(noises)))], len(frames), row, rng)
            if noise is not None:
                power = to_power(frames) if power is None else power
                power += noise * (self.levels[row] / 10.0 ** (rng.uniform(*p.snr_db) / 10.0))
        out = frames if power is None else to_frames(power, floor=self.floor)
        if "gain" in p.augment and rng.random() < p.gain_prob:
            out = np.maximum(out + np.float32(rng.uniform(-p.gain_db, p.gain_db) / DB_SCALE), np.float32(self.floor))
        return np.asarray(out, dtype=np.float32)

    def noise(self, kind: str, n: int, row: int, rng: np.random.Generator) -> np.ndarray | None:
        """``n`` frames of band powers of ``kind`` noise with a mean of 1 (None: no babble to make)."""
        if kind != "babble":
            return _stretch(self.banks[kind], n, rng)
        others = np.arange(len(self.rows)) != row
        if self.speakers is not None:
            others &= self.speakers != self.speakers[row]
        pool = np.flatnonzero(others & (self.levels > 0))
        if not len(pool):
            return None
        talkers = rng.choice(pool, size=min(len(pool), int(rng.integers(BABBLE_TALKERS[0], BABBLE_TALKERS[1] + 1))),
                             replace=False)
        total = sum(_stretch(to_power(self.rows[j]), n, rng) / self.levels[j] for j in talkers)
        return total / max(float(total.mean()), 1e-30)

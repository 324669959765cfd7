"""Recording conditions made from a clean signal: additive noise of several kinds at a given SNR,
room reverberation, gain.

Pure numpy functions of float mono signals (samples in [-1, 1]); random parts come from a
:class:`numpy.random.Generator` the caller seeds. ``extract --augment`` names them (``noise-10db``,
``pink-5db``, ``brown-10db``, ``hum-20db``, ``tones-10db``, ``reverb-0.6s``, ``gain--20db``; see
:mod:`ser_batch.augmentations`), and ``benchmarks/transfer.py`` makes its test conditions with them.
The cnn's training augments in the frame domain instead (:mod:`ser_batch.models.frame_augment`),
with noise frames computed from :func:`noise_signal`.

The SNR is the ratio of the signal's speech power (:func:`speech_power`: its active 20 ms frames,
so that pauses do not lower it) to the noise's mean power.
"""

from __future__ import annotations

import numpy as np

from ser_batch.errors import ConfigError

#: Noises :func:`noise_signal` makes; ``babble`` needs other speakers' signals.
NOISE_KINDS = ("white", "pink", "brown", "hum", "tones", "babble")
#: Mains frequencies of ``hum`` (Hz), drawn at random.
MAINS_HZ = (50.0, 60.0)
#: Reverberation: a direct path, then an exponentially decaying tail from this many seconds on.
REVERB_PREDELAY_S = 0.003


def speech_power(y: np.ndarray, sample_rate: int, *, frame_s: float = 0.02, range_db: float = 30.0) -> float:
    """Mean power of the active frames of ``y``: frames (20 ms) within ``range_db`` of the
    loud level (95th percentile of frame power), so pauses do not lower the speech level.

    Returns the mean square of those frames (0.0 for a silent or empty signal).
    """
    x = np.asarray(y, dtype=np.float64)
    size = max(int(frame_s * sample_rate), 1)
    count = len(x) // size
    if count == 0:
        return float(np.mean(x * x)) if len(x) else 0.0
    power = np.mean(x[: count * size].reshape(count, size) ** 2, axis=1)
    loud = np.percentile(power, 95)
    if loud <= 0:
        return 0.0
    return float(power[power >= loud * 10.0 ** (-range_db / 10.0)].mean())


def _shaped(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Unit-power noise whose power falls as ``1 / f ** exponent``, shaped in the frequency domain
    (0: white, 1: pink, 2: brown), without a DC offset."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(len(spectrum), dtype=np.float64)
    freqs[0] = 1.0
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2.0), n)
    noise -= noise.mean()
    return noise / np.sqrt(max(np.mean(noise * noise), 1e-30))


def _hum(n: int, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Mains hum: 50 or 60 Hz and its harmonics (amplitudes falling as ``1 / k``, random phases)
    up to 1 kHz, with a little broadband noise, unit power."""
    base = MAINS_HZ[int(rng.integers(len(MAINS_HZ)))]
    t = np.arange(n) / sample_rate
    y = np.zeros(n)
    for k in range(1, int(min(1000.0, sample_rate / 2 - 1) // base) + 1):
        y += np.sin(2 * np.pi * base * k * t + rng.uniform(0, 2 * np.pi)) / k
    y += 0.05 * rng.standard_normal(n)
    return y / np.sqrt(np.mean(y * y))


def _tones(n: int, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Tones as telephones and equipment make them: beeps of 0.1-0.8 s at 300-3000 Hz (some as
    two-frequency pairs) with gaps of 0.1-1.5 s, unit power over the whole signal."""
    y = np.zeros(n)
    at = int(rng.uniform(0.0, 0.5) * sample_rate)
    while at < n:
        length = int(rng.uniform(0.1, 0.8) * sample_rate)
        t = np.arange(min(length, n - at)) / sample_rate
        freqs = rng.uniform(300.0, 3000.0, size=int(rng.integers(1, 3)))
        beep = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in freqs)
        ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.005)  # 5 ms fades: no clicks
        y[at : at + len(t)] = beep * ramp
        at += len(t) + int(rng.uniform(0.1, 1.5) * sample_rate)
    power = np.mean(y * y)
    return y / np.sqrt(power) if power > 0 else y


def babble(sources: list[np.ndarray], n: int, rng: np.random.Generator, *, sample_rate: int) -> np.ndarray:
    """Babble of ``n`` samples: the ``sources`` (other speakers' signals), each levelled to the same
    speech power, looped from a random offset and summed; unit power.

    Raises
    ------
    ConfigError
        Without any source that has signal.
    """
    y = np.zeros(n)
    used = 0
    for source in sources:
        x = np.asarray(source, dtype=np.float64)
        level = speech_power(x, sample_rate)
        if not len(x) or level <= 0:
            continue
        start = int(rng.integers(len(x)))
        looped = np.resize(np.roll(x, -start), n)
        y += looped / np.sqrt(level)
        used += 1
    if not used:
        raise ConfigError("babble needs at least one source signal with sound in it")
    return y / np.sqrt(max(np.mean(y * y), 1e-30))


def noise_signal(kind: str, n: int, rng: np.random.Generator, *, sample_rate: int,
                 sources: list[np.ndarray] | None = None) -> np.ndarray:
    """``n`` samples of unit-power noise of ``kind`` (one of :data:`NOISE_KINDS`; ``babble`` is made
    of ``sources``, other speakers' signals).

    Returns
    -------
    np.ndarray [shape=(n,)], float64, mean square 1 (0 for ``n == 0``)
    """
    if n <= 0:
        return np.zeros(0)
    if kind in ("white", "pink", "brown"):
        return _shaped(n, rng, {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind])
    if kind == "hum":
        return _hum(n, rng, sample_rate)
    if kind == "tones":
        return _tones(n, rng, sample_rate)
    if kind == "babble":
        return babble(sources or [], n, rng, sample_rate=sample_rate)
    raise ConfigError(f"unknown noise {kind!r} (one of {', '.join(NOISE_KINDS)})")


def add_noise(y: np.ndarray, snr_db: float, rng: np.random.Generator, *, sample_rate: int = 16000,
              kind: str = "white", sources: list[np.ndarray] | None = None) -> np.ndarray:
    """``y`` plus noise ``snr_db`` below its speech level (:func:`speech_power`).

    Parameters
    ----------
    y : np.ndarray [shape=(n,)], float mono signal
    snr_db : float, speech-to-noise power ratio, dB
    rng : numpy Generator the noise is drawn from
    sample_rate : int, Hz
    kind : one of :data:`NOISE_KINDS`
    sources : other speakers' signals, for ``babble``

    Returns
    -------
    np.ndarray [shape=(n,)], float32, clipped to [-1, 1]; ``y`` unchanged when it is silent
    """
    x = np.asarray(y, dtype=np.float64)
    level = speech_power(x, sample_rate)
    if level <= 0 or not len(x):
        return x.astype(np.float32)
    noise = noise_signal(kind, len(x), rng, sample_rate=sample_rate, sources=sources)
    noise *= np.sqrt(level / 10.0 ** (snr_db / 10.0))
    return np.clip(x + noise, -1.0, 1.0).astype(np.float32)


def room_impulse_response(rt60_s: float, rng: np.random.Generator, *, sample_rate: int,
                          drr_db: float = 0.0) -> np.ndarray:
    """A synthetic room impulse response: a unit direct path, then Gaussian noise decaying by 60 dB
    in ``rt60_s`` seconds (energy ``exp(-13.8 t / rt60)``) from :data:`REVERB_PREDELAY_S` on, scaled
    so that the direct path's energy is ``drr_db`` above the tail's.

    Returns
    -------
    np.ndarray [shape=(~1.2 * rt60_s * sample_rate,)], float64, ``h[0] = 1``
    """
    if rt60_s <= 0:
        raise ConfigError(f"reverberation time must be positive, got {rt60_s} s")
    n = max(2, int(1.2 * rt60_s * sample_rate))
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-3.0 * np.log(10.0) * t / rt60_s)  # amplitude: -60 dB at rt60
    tail[t < REVERB_PREDELAY_S] = 0.0
    energy = float(np.sum(tail * tail))
    h = tail * np.sqrt(10.0 ** (-drr_db / 10.0) / energy) if energy > 0 else tail
    h[0] = 1.0
    return h


def reverberate(y: np.ndarray, rt60_s: float, rng: np.random.Generator, *, sample_rate: int,
                drr_db: float = 0.0) -> np.ndarray:
    """``y`` as heard in a room (:func:`room_impulse_response`), cut to its length and levelled to
    its speech power (reverberation should not also change the level).

    Returns
    -------
    np.ndarray [shape=(n,)], float32, clipped to [-1, 1]
    """
    x = np.asarray(y, dtype=np.float64)
    if not len(x):
        return x.astype(np.float32)
    h = room_impulse_response(rt60_s, rng, sample_rate=sample_rate, drr_db=drr_db)
    size = 1 << int(np.ceil(np.log2(len(x) + len(h) - 1)))
    wet = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[: len(x)]
    before, after = speech_power(x, sample_rate), speech_power(wet, sample_rate)
    if before > 0 and after > 0:  # (a signal too sparse to have a speech level keeps the room's)
        wet *= np.sqrt(before / after)
    return np.clip(wet, -1.0, 1.0).astype(np.float32)


def gain(y: np.ndarray, db: float) -> np.ndarray:
    """``y`` ``[shape=(n,)]`` scaled by ``db`` decibels, clipped to [-1, 1] as a file would be; float32."""
    return np.clip(np.asarray(y, dtype=np.float64) * 10.0 ** (db / 20.0), -1.0, 1.0).astype(np.float32)

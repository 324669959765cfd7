"""Telephone audio and audio augmentation: G.711 companding, telephone-band copies and speed
changes of a decoded signal, and :func:`augment_signal`, which applies any ``extract --augment``
name (noise, reverberation and gain come from :mod:`ser_batch.audio.conditions`).

Everything here is a pure function of numpy arrays (float32 mono, samples in [-1, 1]);
random choices come from a :class:`numpy.random.Generator` the caller seeds, so the same
seed gives the same samples. ``extract --augment`` (:mod:`ser_batch.pipeline.extract`) names the
augmentations with :func:`parse_augmentation` and applies them with :func:`augment_signal`.

G.711 follows the ITU-T reference code exactly as libsndfile applies it to float samples:
μ-law codes the magnitude ``round(|x| * 32767 / 4)`` (14 bits), A-law ``round(|x| * 32767 / 16)``
(11 bits: A-law's two lowest segments drop the 12th), both products in float32; decoding
gives 16-bit values scaled by 1/32768. So :func:`ulaw_decode` of :func:`ulaw_encode` is
exactly what soundfile reads back from a ``ULAW`` WAV of the same samples (A-law likewise).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np

from ser_batch.audio.conditions import add_noise, gain, reverberate
from ser_batch.augmentations import parse_augmentation
from ser_batch.errors import ConfigError

#: Sample rate of telephone audio, Hz.
TELEPHONE_RATE = 8000
#: Pass band of the telephone channel, Hz (ITU-T G.712's 300-3400 Hz).
TELEPHONE_BAND_HZ = (300.0, 3400.0)
#: Codecs of :func:`telephone_copy`: 16-bit linear PCM, G.711 μ-law, G.711 A-law.
CODECS = ("pcm", "ulaw", "alaw")

# ----------------------------------------------------------------------------- G.711

# Segment ends of the ITU-T G.711 reference code (Sun's g711.c): μ-law on the 14-bit
# magnitude plus its bias of 33, A-law on the 12-bit magnitude.
_ULAW_SEGMENT_ENDS = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
_ALAW_SEGMENT_ENDS = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def _segment(value: int, ends: tuple[int, ...]) -> int:
    return next((i for i, end in enumerate(ends) if value <= end), len(ends))


@lru_cache(maxsize=1)
def _ulaw_tables() -> tuple[np.ndarray, np.ndarray]:
    """(code of each 14-bit magnitude 0..8192 of a positive sample, 16-bit value of each code)."""
    decode = np.empty(256, dtype=np.int16)
    for code in range(256):
        u = ~code & 0xFF
        t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
        decode[code] = (0x84 - t) if u & 0x80 else (t - 0x84)
    encode = np.empty(8193, dtype=np.uint8)
    for magnitude in range(8193):
        biased = min(magnitude, 8159) + 33
        segment = _segment(biased, _ULAW_SEGMENT_ENDS)
        value = 0x7F if segment >= 8 else (segment << 4) | ((biased >> (segment + 1)) & 0x0F)
        encode[magnitude] = value ^ 0xFF
    return encode, decode


@lru_cache(maxsize=1)
def _alaw_tables() -> tuple[np.ndarray, np.ndarray]:
    """(code of each 11-bit magnitude 0..2048 of a positive sample, 16-bit value of each code)."""
    decode = np.empty(256, dtype=np.int16)
    for code in range(256):
        a = code ^ 0x55
        t = (a & 0x0F) << 4
        segment = (a & 0x70) >> 4
        t = t + 8 if segment == 0 else (t + 0x108) << (segment - 1)
        decode[code] = t if a & 0x80 else -t
    encode = np.empty(2049, dtype=np.uint8)
    for half in range(2049):
        magnitude = half << 1  # the reference code's 12-bit magnitude
        segment = _segment(magnitude, _ALAW_SEGMENT_ENDS)
        if segment >= 8:
            value = 0x7F
        else:
            value = (segment << 4) | ((magnitude >> (1 if segment < 2 else segment)) & 0x0F)
        encode[half] = value ^ 0xD5
    return encode, decode


def _encode(x: np.ndarray, scale: float, table: np.ndarray) -> np.ndarray:
    x = np.clip(np.nan_to_num(np.asarray(x, dtype=np.float32)), -1.0, 1.0)
    # float32 product and round-half-even, as libsndfile's lrintf(normfact * x).
    magnitude = np.rint(np.abs(x) * np.float32(scale)).astype(np.int64)
    codes = table[magnitude]
    # The sign bit (0x80) is set for positive samples in both laws; negatives clear it.
    return np.where(x >= 0, codes, codes & 0x7F).astype(np.uint8)


def ulaw_encode(x: np.ndarray) -> np.ndarray:
    """G.711 μ-law codes of float samples.

    Parameters
    ----------
    x : np.ndarray [shape=(n,)], float samples in [-1, 1] (clipped; NaN codes as 0)

    Returns
    -------
    np.ndarray [shape=(n,)], uint8 codes as stored in a μ-law WAV
    """
    return _encode(x, 32767 / 4, _ulaw_tables()[0])


def ulaw_decode(codes: np.ndarray) -> np.ndarray:
    """Float32 samples ``[shape=(n,)]`` of μ-law codes ``[shape=(n,)]`` (16-bit value / 32768)."""
    return (_ulaw_tables()[1][np.asarray(codes, dtype=np.uint8)] / 32768.0).astype(np.float32)


def alaw_encode(x: np.ndarray) -> np.ndarray:
    """G.711 A-law codes ``[shape=(n,)]``, uint8, of float samples ``[shape=(n,)]`` in [-1, 1]."""
    return _encode(x, 32767 / 16, _alaw_tables()[0])


def alaw_decode(codes: np.ndarray) -> np.ndarray:
    """Float32 samples ``[shape=(n,)]`` of A-law codes ``[shape=(n,)]`` (16-bit value / 32768)."""
    return (_alaw_tables()[1][np.asarray(codes, dtype=np.uint8)] / 32768.0).astype(np.float32)


def quantise(x: np.ndarray, codec: str) -> np.ndarray:
    """``x`` ``[shape=(n,)]`` as stored with ``codec`` and read back: 16-bit linear PCM (``pcm``),
    μ-law or A-law. Returns float32 ``[shape=(n,)]``; samples outside [-1, 1] are clipped."""
    if codec == "ulaw":
        return ulaw_decode(ulaw_encode(x))
    if codec == "alaw":
        return alaw_decode(alaw_encode(x))
    if codec == "pcm":
        return (np.clip(np.rint(np.asarray(x, dtype=np.float64) * 32768.0), -32768, 32767) / 32768.0
                ).astype(np.float32)
    raise ConfigError(f"unknown codec {codec!r} (known: {', '.join(CODECS)})")


# ------------------------------------------------------------------- telephone channel


def _resample(y: np.ndarray, rate_in: float, rate_out: float) -> np.ndarray:
    import soxr

    return soxr.resample(np.ascontiguousarray(y, dtype=np.float32), rate_in, rate_out, quality="HQ")


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    """``y`` cut or zero-padded to ``n`` samples."""
    if len(y) >= n:
        return y[:n]
    return np.concatenate([y, np.zeros(n - len(y), dtype=y.dtype)])


@lru_cache(maxsize=4)
def _band_filter(rate: int) -> np.ndarray:
    from scipy.signal import butter

    # 4th order each side: ~24 dB per octave outside the band, and stable as second-order sections.
    return butter(4, TELEPHONE_BAND_HZ, btype="bandpass", fs=rate, output="sos")


def telephone_copy(y: np.ndarray, sample_rate: int, *, codec: str = "pcm", band_pass: bool = False,
                   line_noise_db: float | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
    """What ``y`` sounds like as 8-kHz telephone audio: ``codec`` quantisation at 8 kHz and,
    with ``band_pass``, the 300-3400 Hz band of an analogue line.

    The signal is resampled to 8 kHz (soxr), optionally filtered to the telephone band (a
    4th-order Butterworth band-pass, causal like a real channel) and given line noise,
    quantised (16-bit PCM, μ-law or A-law) and resampled back to ``sample_rate``. Without the
    band-pass it is what an 8-kHz recording or a digital (VoIP) leg holds: everything under
    4 kHz. Models trained on both kinds score both (docs/accuracy.md).

    Parameters
    ----------
    y : np.ndarray [shape=(n,)], float mono signal at ``sample_rate`` Hz
    sample_rate : int, Hz (any rate; at 8000 no resampling happens)
    codec : "pcm", "ulaw" or "alaw"
    band_pass : bool, keep only 300-3400 Hz
    line_noise_db : float, optional; white noise at this level (dB re full scale, e.g. -60)
        added at 8 kHz before quantisation, drawn from ``rng`` (which it then requires)
    rng : numpy Generator, only used for the line noise

    Returns
    -------
    np.ndarray [shape=(n,)], float32 at ``sample_rate``: same length as ``y``, no energy
    above 4 kHz (the soxr anti-imaging filter's stop band)

    Raises
    ------
    ConfigError
        On an unknown codec, or line noise without ``rng``.
    """
    from scipy.signal import sosfilt

    if codec not in CODECS:
        raise ConfigError(f"unknown codec {codec!r} (known: {', '.join(CODECS)})")
    n = len(y)
    narrow = y if sample_rate == TELEPHONE_RATE else _resample(y, sample_rate, TELEPHONE_RATE)
    if band_pass:
        narrow = sosfilt(_band_filter(TELEPHONE_RATE), narrow.astype(np.float64))
    if line_noise_db is not None:
        if rng is None:
            raise ConfigError("telephone_copy: line_noise_db needs an rng")
        narrow = narrow + rng.standard_normal(len(narrow)) * 10.0 ** (line_noise_db / 20.0)
    narrow = quantise(narrow, codec)
    out = narrow if sample_rate == TELEPHONE_RATE else _resample(narrow, TELEPHONE_RATE, sample_rate)
    return _fit_length(out.astype(np.float32), n)


# -------------------------------------------------------------------- augmentations

#: ``--augment`` kinds of additive noise and the noise each adds (``noise-20db`` is white noise).
NOISE_AUGMENTATIONS = {"noise": "white", "pink": "pink", "brown": "brown", "hum": "hum", "tones": "tones"}


def change_speed(y: np.ndarray, factor: float, *, sample_rate: int) -> np.ndarray:
    """``y`` played ``factor`` times as fast: tempo and pitch both scale by ``factor`` (the
    "speed perturbation" of speech recognition), by soxr resampling; cheaper than a
    pitch-keeping time stretch and as useful for augmentation.

    Returns float32 ``[shape=(round(n / factor),)]``.
    """
    if factor == 1.0:
        return np.asarray(y, dtype=np.float32)
    return _resample(y, float(sample_rate), sample_rate / factor).astype(np.float32)


def augmentation_rng(path: str, name: str) -> np.random.Generator:
    """The generator of augmentation ``name`` of the file ``path`` (relative to the input folder):
    seeded from both, so a retried or resumed task draws the same noise."""
    digest = hashlib.sha256(f"{path}\0{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def augment_signal(y: np.ndarray, sample_rate: int, name: str, *, rng: np.random.Generator) -> np.ndarray:
    """Apply the augmentation ``name`` (see :func:`parse_augmentation`) to ``y``.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)], float mono signal at ``sample_rate`` Hz
    rng : numpy Generator for random parts (noise); use :func:`augmentation_rng` for a
        deterministic draw per file

    Returns
    -------
    np.ndarray, float32 at ``sample_rate``: ``[shape=(n,)]``, except ``tempo-<f>`` which
    gives ``round(n / f)`` samples
    """
    spec = parse_augmentation(name)
    if spec.kind in ("telephone", "telephone-band"):
        return telephone_copy(y, sample_rate, codec=str(spec.value), band_pass=spec.kind == "telephone-band")
    if spec.kind in NOISE_AUGMENTATIONS:
        return add_noise(y, float(spec.value), rng, sample_rate=sample_rate, kind=NOISE_AUGMENTATIONS[spec.kind])
    if spec.kind == "reverb":
        return reverberate(y, float(spec.value), rng, sample_rate=sample_rate)
    if spec.kind == "gain":
        return gain(y, float(spec.value))
    return change_speed(y, float(spec.value), sample_rate=sample_rate)

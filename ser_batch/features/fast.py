"""The ``fast`` recipe: frame-level features from one shared STFT first, pooling second.

It gives the same 193 quantities as the reference ``classic`` recipe
(:mod:`ser_batch.features.classic`) with the default config, ~100x faster per core:

* one STFT per signal, shared by every feature, with the cached filterbanks of
  :mod:`ser_batch.features.filterbanks`;
* mel, MFCC, chroma and spectral contrast are the same formulas as librosa on the same
  STFT (chroma's tuning estimate is librosa's ``piptrack`` + ``pitch_tuning``, evaluated
  only on the 150-4000 Hz bins it looks at). The tuning estimate and the contrast follow
  librosa's arithmetic dtype by dtype, so on the same spectrum they agree bit for bit;
  the rest agrees to float32 rounding;
* **approximation**: tonnetz is computed from the STFT chroma of the signal itself,
  without the harmonic/percussive separation and the constant-Q transform of ``classic``
  (those two cost ~95% of the classic run time). It points the same way as the exact
  tonnetz but is shrunk (about half its length on a pure triad) and tracks it only
  loosely on speech.

:func:`frame_features` returns a ``(frames, 193)`` matrix so that later jobs can pool any
window of it (:func:`pool_mean`) without recomputing anything; :func:`clip_features` is
the clip vector of the ``fast`` or ``classic`` recipe.

At low sample rates (below 12.8 kHz, e.g. 8 kHz telephony) librosa's default
spectral-contrast bands would pass Nyquist; :func:`ser_batch.features.filterbanks.contrast_fmin`
lowers the first band edge by whole octaves until they fit (100 Hz at 8 kHz).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ser_batch.config import FeatureConfig
from ser_batch.errors import FeatureError
from ser_batch.features.checks import check_finite, check_signal, one_frame
from ser_batch.features.filterbanks import (
    chroma_basis_t,
    contrast_band_bins,
    contrast_fmin,
    dct_t,
    mel_blocks,
    stft_window,
    tonnetz_basis_t,
    tuning_bins,
)

#: piptrack's threshold, as used by librosa's chroma tuning estimate (relative to the
#: loudest bin of the frame).
_TUNING_THRESHOLD = 0.1
_TINY32 = float(np.finfo(np.float32).tiny)

# ------------------------------------------------------------------------ fast recipe


#: Frames per block in the fast recipe's STFT (and chroma product): a block's windowed
#: frames and spectrum (~0.5 MB) stay in cache from windowing to magnitude.
_BLOCK_FRAMES = 32


#: librosa's ``pitch_tuning`` histogram edges at its default 0.01 resolution ...
_TUNING_EDGES = np.linspace(-0.5, 0.5, 101)
#: ... and the smallest float32 at or above each: for a float32 ``x``, ``x < edge`` (in
#: float64, as np.histogram compares) exactly when ``x < edge32``.
_TUNING_EDGES32 = _TUNING_EDGES.astype(np.float32)
_TUNING_EDGES32[_TUNING_EDGES32 < _TUNING_EDGES] = np.nextafter(
    _TUNING_EDGES32[_TUNING_EDGES32 < _TUNING_EDGES], np.float32(np.inf)
)


def _frames(y: np.ndarray, *, n_fft: int, hop_length: int, center: bool = True) -> np.ndarray:
    """Centred, zero-padded frames as librosa.stft makes them: a view ``(frames, n_fft)``.

    With ``center=False`` the frames start at sample 0 with no padding (``y`` is then a
    stretch of an already padded signal, as :mod:`ser_batch.features.windows` streams it)."""
    if not center:
        y = np.ascontiguousarray(y, dtype=np.float32)
        n_frames = 1 + (y.shape[0] - n_fft) // hop_length
        step = y.itemsize
        return np.ndarray((n_frames, n_fft), dtype=np.float32, buffer=y, strides=(hop_length * step, step))
    pad = n_fft // 2
    # np.pad is ~8x slower than this for a 1-D signal.
    padded = np.empty(y.shape[0] + 2 * pad, dtype=np.float32)
    padded[:pad] = 0.0
    padded[pad:-pad] = y
    padded[-pad:] = 0.0
    n_frames = 1 + (padded.shape[0] - n_fft) // hop_length
    # sliding_window_view(padded, n_fft)[::hop_length], without its ~10 us of Python.
    step = padded.itemsize
    return np.ndarray((n_frames, n_fft), dtype=np.float32, buffer=padded, strides=(hop_length * step, step))


def stft_magnitude(y: np.ndarray, *, n_fft: int, hop_length: int, center: bool = True) -> np.ndarray:
    """Magnitude STFT, centred with zero padding like ``librosa.stft``.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)], float32
    n_fft, hop_length : int
        Window and hop in samples.
    center : bool
        Centre frames with zero padding (librosa's default); ``False``: frames from sample 0.

    Returns
    -------
    np.ndarray [shape=(1 + n // hop_length, 1 + n_fft // 2)], float32
        Time-major: one row per frame (``1 + (n - n_fft) // hop_length`` rows without centring).
    """
    from ser_batch.features.fft import rfft

    frames = _frames(y, n_fft=n_fft, hop_length=hop_length, center=center)
    n_frames = frames.shape[0]
    window = stft_window(n_fft)
    magnitude = np.empty((n_frames, n_fft // 2 + 1), dtype=np.float32)
    windowed = np.empty((min(_BLOCK_FRAMES, n_frames), n_fft), dtype=np.float32)
    for start in range(0, n_frames, _BLOCK_FRAMES):
        stop = min(start + _BLOCK_FRAMES, n_frames)
        block = windowed[: stop - start]
        np.multiply(frames[start:stop], window, out=block)
        # scipy's pocketfft keeps float32 and is ~2x faster than numpy's here.
        np.abs(rfft(block, axis=-1), out=magnitude[start:stop])
    return magnitude


def _piptrack_peaks(
    magnitude: np.ndarray, *, sample_rate: int, n_fft: int, row_max: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """librosa's ``piptrack`` peaks between 150 and 4000 Hz, in no particular order.

    Parameters
    ----------
    magnitude : np.ndarray [shape=(frames, 1 + n_fft/2)], float32
    row_max : np.ndarray [shape=(frames,)], optional
        ``magnitude.max(axis=1)``, when known.

    Returns
    -------
    pitch : np.ndarray [shape=(peaks,)], float32
        Parabolically interpolated peak frequency, Hz.
    mag : np.ndarray [shape=(peaks,)], float32
        Interpolated peak magnitude.

    The arithmetic follows librosa's dtypes step by step, so the values are bit for bit
    those of ``piptrack``.
    """
    lo, hi = tuning_bins(sample_rate, n_fft)
    if row_max is None:
        row_max = np.maximum.reduce(magnitude, axis=1)
    # Bins lo-1 .. hi (inclusive), so that every candidate bin has both neighbours, copied
    # once: the tests below then run over one contiguous array.
    band = magnitude[:, lo - 1 : hi + 1].copy()
    width = band.shape[1]
    # piptrack takes local maxima of the spectrum zeroed below ``ref``; for a bin above
    # ``ref`` that is the same as a local maximum of the raw spectrum.
    peaks = band > (_TUNING_THRESHOLD * row_max)[:, None]
    values = band.reshape(-1)
    rises = values[1:] > values[:-1]  # rises[i]: x[i + 1] > x[i]
    # x[i] > x[i - 1] and x[i] >= x[i + 1]  <=>  rises[i - 1] and not rises[i]
    flat_peaks = peaks.reshape(-1)
    flat_peaks[1:-1] &= rises[:-1] > rises[1:]
    peaks[:, 0] = peaks[:, -1] = False  # neighbours only; their own tests mixed frames
    at = np.flatnonzero(flat_peaks)
    x_prev, x_mid, x_next = values[at - 1], values[at], values[at + 1]
    # librosa's numba stencil: a = x[1] + x[-1] - 2 * x[0] adds the neighbours in float32
    # and goes on in float64, as does b = (x[1] - x[-1]) / 2; the shift -b / a is 0 unless
    # |b| < |a|, that is |b / a| < 1 (a float64 quotient of these keeps that order exactly).
    a = np.subtract(x_next + x_prev, np.multiply(x_mid, 2.0, dtype=np.float64))
    avg = (x_next - x_prev) * np.float32(0.5)  # np.gradient, float32 (halving is exact)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.divide(avg, a)  # b / a, float64
    shift = np.negative(ratio, out=np.zeros_like(ratio), where=np.abs(ratio) < 1.0).astype(np.float32)
    # float32((bin + shift) * sr / n_fft), bin + shift being exact in float64.
    pitch = np.add(np.remainder(at, width), shift, dtype=np.float64)
    pitch += lo - 1
    pitch *= float(sample_rate)
    pitch /= n_fft
    return pitch.astype(np.float32), x_mid + np.float32(0.5) * avg * shift


def _tuning_from_peaks(pitch: np.ndarray, mag: np.ndarray, *, n_chroma: int) -> float:
    """librosa's ``pitch_tuning`` over the peaks at or above the median peak magnitude."""
    count = mag.size
    if count == 0:
        return 0.0
    # np.median's value (the middle one, or the float32 mean of the middle two) from a
    # sort, which costs a fifth of np.median on these ~2000 values.
    ordered = np.sort(mag)
    half = count // 2
    median = ordered[half] if count % 2 else (ordered[half - 1] + ordered[half]) / np.float32(2)
    # Pitches are >= 150 Hz, so librosa's ``pitch > 0`` filters are no-ops.
    tones = n_chroma * np.log2(pitch[mag >= median] / np.float32(440.0 / 16))
    # np.mod(tones, 1.0) for tones > 0: both are exact.
    residual = tones - np.floor(tones)
    residual -= residual >= 0.5
    # np.histogram(residual, linspace(-0.5, 0.5, 101)) sorts the data and looks the edges
    # up in it, as here (residual < 0.5, so the last edge needs no special case).
    below = np.searchsorted(np.sort(residual), _TUNING_EDGES32)
    return float(_TUNING_EDGES[np.argmax(below[1:] - below[:-1])])


def estimate_tuning(magnitude: np.ndarray, *, sample_rate: int, n_fft: int, n_chroma: int) -> float:
    """librosa's ``estimate_tuning(S=magnitude.T)``, evaluated only on the bins it uses.

    Parameters
    ----------
    magnitude : np.ndarray [shape=(frames, 1 + n_fft/2)]

    Returns
    -------
    float
        Tuning offset in fractions of a chroma bin, on librosa's 0.01 grid in [-0.5, 0.5).
    """
    pitch, mag = _piptrack_peaks(magnitude, sample_rate=sample_rate, n_fft=n_fft)
    return _tuning_from_peaks(pitch, mag, n_chroma=n_chroma)


def power_to_db(power: np.ndarray, *, floor_db: float | None = None) -> np.ndarray:
    """``librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=80.0)`` without its checks.

    With ``floor_db`` the floor is that fixed level instead of 80 dB below the loudest value
    of ``power``: every value then depends on itself alone (local features)."""
    db = np.maximum(power, 1e-10)
    np.log10(db, out=db)
    db *= 10.0
    floor = np.maximum.reduce(db, axis=None) - 80.0 if floor_db is None else floor_db
    return np.maximum(db, floor, out=db)


@lru_cache(maxsize=16)
def _contrast_layout(
    bands: tuple[tuple[int, int, int], ...],
) -> tuple[bool, tuple[tuple[int, int], ...], np.ndarray, np.ndarray, np.ndarray]:
    """Where :func:`_contrast` sorts each band, and where it then finds the extremes.

    Returns
    -------
    in_place : bool
        The bands do not overlap, so each can be sorted where it lies in the spectrum.
        (Neighbouring bands share an edge bin when a band edge falls exactly on a bin.)
    segments : ``(start, stop)`` columns of each band in the sorted work matrix
    picks : np.ndarray [shape=(q_max * 2 * n_bands,)], int
        Columns of the ``q`` lowest values of each band (valleys), then of the ``q``
        highest (peaks), as a ``(q_max, 2 * n_bands)`` grid; ``keep`` zeroes the padding.
    keep : np.ndarray [shape=(q_max, 2 * n_bands, 1)], float32, 1 or 0
    counts : np.ndarray [shape=(2 * n_bands, 1)], float32
        ``q`` of each valley and peak.
    """
    in_place = all(nxt[0] >= cur[1] for cur, nxt in zip(bands, bands[1:]))
    if in_place:
        segments = tuple((lo, hi) for lo, hi, _ in bands)
    else:
        ends = np.cumsum([0] + [hi - lo for lo, hi, _ in bands]).tolist()
        segments = tuple(zip(ends[:-1], ends[1:]))
    n_bands = len(bands)
    q_max = max(q for _, _, q in bands)
    picks = np.empty((q_max, 2 * n_bands), dtype=np.intp)
    keep = np.zeros((q_max, 2 * n_bands, 1), dtype=np.float32)
    for k, ((start, stop), (_, _, q)) in enumerate(zip(segments, bands)):
        picks[:, k] = picks[:, n_bands + k] = start
        picks[:q, k] = start + np.arange(q)
        picks[:q, n_bands + k] = stop - q + np.arange(q)
        keep[:q, k] = keep[:q, n_bands + k] = 1.0
    counts = np.array([q for _, _, q in bands] * 2, dtype=np.float32)[:, None]
    return in_place, segments, picks.reshape(-1), keep, counts


def _contrast(
    magnitude: np.ndarray, bands: tuple[tuple[int, int, int], ...], *, overwrite: bool = False,
    floor_db: float | None = None,
) -> np.ndarray:
    """librosa's ``spectral_contrast`` (dB) of ``magnitude`` ``(frames, bins)``: ``(frames, bands)``.

    With ``overwrite``, the bands of ``magnitude`` are sorted in place (when they do not
    overlap), which saves a copy.
    """
    in_place, segments, picks, keep, counts = _contrast_layout(bands)
    if in_place:
        work = magnitude if overwrite else magnitude.copy()
        for start, stop in segments:
            # numpy's SIMD sort beats np.partition by 5-8x on these short float32 rows.
            work[:, start:stop].sort(axis=1)
    else:
        work = np.empty((magnitude.shape[0], segments[-1][1]), dtype=np.float32)
        for (lo, hi, _), (start, stop) in zip(bands, segments):
            segment = work[:, start:stop]
            segment[...] = magnitude[:, lo:hi]
            segment.sort(axis=1)
    # The q extreme values of every band in one gather, then summed over q in order (as
    # librosa's mean over the sorted axis -2 does; the zeroed padding adds nothing), so
    # the float32 means agree bit for bit.
    n_bands = len(bands)
    extremes = work.T[picks].reshape(keep.shape[0], 2 * n_bands, magnitude.shape[0])
    extremes *= keep
    means = (np.add.reduce(extremes, axis=0) / counts).astype(np.float64)  # librosa keeps float64
    return (power_to_db(means[n_bands:], floor_db=floor_db) - power_to_db(means[:n_bands], floor_db=floor_db)).T


def frame_features(y: np.ndarray, sample_rate: int, *, config: FeatureConfig) -> np.ndarray:
    """Frame-level features of the ``fast`` recipe from one shared STFT.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)], float32 mono signal at ``sample_rate`` Hz
    sample_rate : int, Hz
    config : FeatureConfig

    Returns
    -------
    np.ndarray [shape=(1 + n // hop_length, n_features)], float32
        Columns follow :func:`ser_batch.features.names.feature_names`; frame ``t`` is centred at
        ``t * hop_length / sample_rate`` seconds. Row means equal the ``fast`` clip vector.

    Notes
    -----
    Two quantities depend on the whole signal given, as in librosa: the 80 dB floor of the
    MFCC/contrast dB scales and the chroma tuning estimate. Pooling windows of a long
    signal therefore matches per-window extraction closely, not bit for bit.
    """
    return _fast_frames(y, sample_rate, config=config, keep_magnitude=False)[1]


def spectral_frames(y: np.ndarray, sample_rate: int, *, config: FeatureConfig,
                    local: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """:func:`frame_features` and the magnitude STFT they came from, for recipes that add to them.

    With ``local``, every frame depends only on its own samples: ``y`` is framed from its
    first sample without centring, the dB scales (MFCC, contrast) have the fixed floor
    ``features.db_floor`` and chroma is not retuned (tuning 0).

    Returns
    -------
    magnitude : np.ndarray [shape=(frames, 1 + n_fft/2)], float32
    frames : np.ndarray [shape=(frames, n_features)], float32
    """
    magnitude, frames = _fast_frames(y, sample_rate, config=config, keep_magnitude=True, local=local)
    assert magnitude is not None
    return magnitude, frames


def mel_columns(config: FeatureConfig) -> slice:
    """Columns of the mel bands in :func:`frame_features` (after MFCC and chroma)."""
    return slice(config.n_mfcc + config.n_chroma, config.n_mfcc + config.n_chroma + config.n_mels)


def _fast_frames(y: np.ndarray, sample_rate: int, *, config: FeatureConfig,
                 keep_magnitude: bool, local: bool = False) -> tuple[np.ndarray | None, np.ndarray]:
    check_signal(y, sample_rate, min_samples=config.n_fft, needed_for=one_frame(config.n_fft, sample_rate))
    n_fft, n_mfcc, n_chroma, n_mels = config.n_fft, config.n_mfcc, config.n_chroma, config.n_mels
    fmin = contrast_fmin(sample_rate, fmin=config.contrast_fmin, n_bands=config.contrast_bands)
    bands = contrast_band_bins(sample_rate, n_fft, config.contrast_bands, fmin)
    magnitude = stft_magnitude(y, n_fft=n_fft, hop_length=config.hop_length, center=not local)
    floor_db = config.db_floor if local else None
    n_frames = magnitude.shape[0]
    # One output matrix filled in place, in schema order: mfcc, chroma, mel, contrast, tonnetz.
    c0 = n_mfcc
    m0 = c0 + n_chroma
    k0 = m0 + n_mels
    t0 = k0 + len(bands)
    out = np.empty((n_frames, t0 + 6), dtype=np.float32)

    power = magnitude * magnitude
    mel = np.empty((n_frames, n_mels), dtype=np.float32)
    for mel_start, mel_stop, lo, hi, weights in mel_blocks(sample_rate, n_fft, n_mels):
        np.matmul(power[:, lo:hi], weights, out=mel[:, mel_start:mel_stop])
    del power  # its memory, still in cache, serves what follows
    out[:, m0:k0] = mel
    # librosa's mfcc is the orthonormal DCT-II of the float32 dB mel; as a float64 product
    # it is exact to float32 rounding (within ~1e-4 of scipy's float32 DCT) and cheaper.
    out[:, :c0] = power_to_db(mel, floor_db=floor_db).astype(np.float64) @ dct_t(n_mels, n_mfcc)

    tuning = 0.0
    if config.estimate_tuning and not local:
        pitch, mag = _piptrack_peaks(magnitude, sample_rate=sample_rate, n_fft=n_fft)
        tuning = _tuning_from_peaks(pitch, mag, n_chroma=n_chroma)
    # Chroma runs bins x frames, so that its short per-frame reductions run along rows.
    chroma_basis = chroma_basis_t(sample_rate, n_fft, n_chroma, tuning).T
    chroma = np.empty((n_chroma, n_frames), dtype=np.float32)
    for start in range(0, n_frames, _BLOCK_FRAMES):  # ~15% faster than one product
        block = slice(start, start + _BLOCK_FRAMES)
        np.matmul(chroma_basis, magnitude[block].T, out=chroma[:, block])
    # librosa.util.normalize(norm=inf); chroma >= 0, so no abs, and all-zero frames stay zero.
    norm = np.maximum.reduce(chroma, axis=0)
    norm[norm < _TINY32] = 1.0
    chroma /= norm
    out[:, c0:m0] = chroma.T
    norm = np.add.reduce(chroma, axis=0)
    norm[norm < _TINY32] = 1.0
    chroma /= norm
    out[:, t0:] = (tonnetz_basis_t(n_chroma).T @ chroma).T

    # Last, as it sorts the spectrum's bands in place (unless the caller keeps the spectrum).
    out[:, k0:t0] = _contrast(magnitude, bands, overwrite=not keep_magnitude, floor_db=floor_db)
    return (magnitude if keep_magnitude else None), out


def pool_mean(frames: np.ndarray, *, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Mean of frames ``[start, stop)`` of a :func:`frame_features` matrix, float32 ``(n_features,)``."""
    window = frames[start:stop]
    if window.shape[0] == 0:
        raise FeatureError("cannot pool an empty window of frames")
    # np.mean's sum and division without its Python-level bookkeeping: the same bits.
    return (np.add.reduce(window, axis=0, dtype=np.float64) / window.shape[0]).astype(np.float32)


def clip_features(y: np.ndarray, sample_rate: int, *, config: FeatureConfig) -> np.ndarray:
    """The clip vector of the ``fast`` recipe: its frames averaged over the clip.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)], float32 mono signal at ``sample_rate`` Hz, at least
        ``config.n_fft`` samples long

    Returns
    -------
    np.ndarray [shape=(n_features,)], float32, finite

    Raises
    ------
    FeatureError
        If the signal is empty, not mono, shorter than one analysis frame or not finite,
        or the settings cannot work (see :func:`ser_batch.features.filterbanks.contrast_band_bins`).
    """
    return check_finite(pool_mean(frame_features(y, sample_rate, config=config)), "fast features")

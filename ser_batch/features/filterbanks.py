"""What every feature recipe shares: cached analysis layouts and the checks on a signal.

Filterbanks, band edges and bin ranges depend only on the sample rate and the feature
settings, so each is built once per process (``lru_cache``) and reused for every clip.
Names ending in ``_t`` are transposed, ``(bins, bands)``, for time-major products.

A recipe analyses a signal in frames of ``features.n_fft`` samples; a signal shorter than
one frame has no spectrum worth the name (only zero padding), so every recipe refuses it
with :func:`check_signal` rather than return a vector of padding.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ser_batch.errors import FeatureError

#: piptrack's defaults, as used by librosa's chroma tuning estimate.
TUNING_FMIN_HZ = 150.0
TUNING_FMAX_HZ = 4000.0
_CONTRAST_QUANTILE = 0.02
#: Cost of one BLAS call in the blocked mel product (:func:`mel_blocks`), in weights.
_MEL_BLOCK_COST = 2000


# ------------------------------------------------------------------------ signal checks


# ------------------------------------------------------------------------ band layouts


def contrast_fmin(sample_rate: int, *, fmin: float, n_bands: int) -> float:
    """Lower edge (Hz) of the first spectral-contrast band that fits under Nyquist.

    librosa requires every band's lower edge ``fmin * 2**k`` (k < n_bands) to be below
    ``sample_rate / 2``. Rather than crash at 8 kHz, halve ``fmin`` until it holds, so the
    bands stay octaves and the vector keeps ``n_bands + 1`` values.
    """
    nyquist = 0.5 * sample_rate
    while fmin * 2.0 ** (n_bands - 1) >= nyquist:
        fmin /= 2.0
    return fmin


@lru_cache(maxsize=16)
def contrast_band_bins(
    sample_rate: int, n_fft: int, n_bands: int, fmin: float
) -> tuple[tuple[int, int, int], ...]:
    """``(first_bin, stop_bin, n_quantile)`` per spectral-contrast band, as librosa cuts them.

    Raises
    ------
    FeatureError
        If a band holds no STFT bin (``n_fft`` too small for ``fmin``).
    """
    freq = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    octa = np.zeros(n_bands + 2)
    octa[1:] = fmin * (2.0 ** np.arange(0, n_bands + 1))
    bands = []
    for k, (f_low, f_high) in enumerate(zip(octa[:-1], octa[1:])):
        idx = np.flatnonzero((freq >= f_low) & (freq <= f_high))
        if idx.size == 0:
            raise FeatureError(
                f"spectral-contrast band {k} ({f_low:.0f}-{f_high:.0f} Hz) has no STFT bin; "
                "increase features.n_fft or features.contrast_fmin"
            )
        start, stop = int(idx[0]), int(idx[-1]) + 1
        if k > 0:
            start -= 1
        if k == n_bands:
            stop = len(freq)
        count = stop - start
        if k < n_bands:
            stop -= 1  # librosa counts the shared edge bin but does not use it
        bands.append((start, stop, max(int(np.rint(_CONTRAST_QUANTILE * count)), 1)))
    return tuple(bands)


@lru_cache(maxsize=16)
def tuning_bins(sample_rate: int, n_fft: int) -> tuple[int, int]:
    """``(first, stop)`` STFT bins that librosa's tuning estimate looks at (150-4000 Hz),
    kept one bin away from DC and Nyquist so that every candidate has two neighbours."""
    freq = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    idx = np.flatnonzero((freq >= TUNING_FMIN_HZ) & (freq < min(TUNING_FMAX_HZ, sample_rate / 2)))
    return max(int(idx[0]), 1), min(int(idx[-1]) + 1, len(freq) - 1)


# ---------------------------------------------------------------------- filterbanks


@lru_cache(maxsize=16)
def stft_window(n_fft: int) -> np.ndarray:
    """librosa.stft's default window: periodic Hann, float32 ``(n_fft,)``.

    ``scipy.signal.get_window("hann", n_fft, fftbins=True)`` as scipy computes it (a symmetric
    window of ``n_fft + 1`` points without its last), in numpy: importing scipy.signal costs a
    worker ~70 ms, the rest of its first clip."""
    if n_fft <= 1:
        return np.ones(n_fft, dtype=np.float32)
    fac = np.linspace(-np.pi, np.pi, n_fft + 1, dtype=np.float64)
    w = np.zeros(n_fft + 1, dtype=np.float64)
    for k, a in enumerate((0.5, 0.5)):  # scipy's general_cosine with hann's coefficients
        w += a * np.cos(k * fac)
    return w[:-1].astype(np.float32)


#: Slaney's mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above (27 mels per
#: factor 6.4), as librosa's ``hz_to_mel(htk=False)``.
_MEL_F_SP = 200.0 / 3
_MEL_MIN_LOG_HZ = 1000.0
_MEL_MIN_LOG_MEL = _MEL_MIN_LOG_HZ / _MEL_F_SP
_MEL_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(frequencies: np.ndarray) -> np.ndarray:
    """Slaney mels of frequencies (Hz), float64: librosa's ``hz_to_mel(htk=False)``."""
    frequencies = np.atleast_1d(np.asarray(frequencies, dtype=np.float64))
    mels = frequencies / _MEL_F_SP
    log = frequencies >= _MEL_MIN_LOG_HZ
    mels[log] = _MEL_MIN_LOG_MEL + np.log(frequencies[log] / _MEL_MIN_LOG_HZ) / _MEL_LOGSTEP
    return mels


def mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """Frequencies (Hz) of Slaney mels, float64: librosa's ``mel_to_hz(htk=False)``."""
    mels = np.atleast_1d(np.asarray(mels, dtype=np.float64))
    freqs = _MEL_F_SP * mels
    log = mels >= _MEL_MIN_LOG_MEL
    freqs[log] = _MEL_MIN_LOG_HZ * np.exp(_MEL_LOGSTEP * (mels[log] - _MEL_MIN_LOG_MEL))
    return freqs


def mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Slaney-normalised triangular mel filters from 0 Hz to Nyquist, float32 ``(n_mels, 1 + n_fft/2)``.

    ``librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)`` (``htk=False``,
    ``norm="slaney"``) step by step in the same dtypes, without its empty-filter warning
    (many mel bands at a low sample rate leave some filters without a bin)."""
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    edges = hz_to_mel(np.array([0.0, float(sample_rate) / 2]))
    mel_f = mel_to_hz(np.linspace(edges[0], edges[1], n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    for i in range(n_mels):
        # Rising edge from band i's lower corner, falling edge to its upper one, floored at 0.
        weights[i] = np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]))
    # Slaney norm: each triangle's area ~ constant, 2 / (bandwidth in Hz); float64 product, float32 result.
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, np.newaxis]
    return weights


@lru_cache(maxsize=16)
def mel_basis(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """librosa's mel filterbank ``(n_mels, 1 + n_fft/2)``, float32 (:func:`mel_filters`)."""
    return mel_filters(sample_rate, n_fft, n_mels)


@lru_cache(maxsize=16)
def mel_blocks(sample_rate: int, n_fft: int, n_mels: int) -> tuple[tuple[int, int, int, int, np.ndarray], ...]:
    """librosa's mel filterbank cut into dense blocks along its diagonal.

    Each FFT bin feeds at most two neighbouring triangles, so the filterbank is a narrow
    band: a few dense products over the bins each run of mel bands covers beat one dense
    product (~10x the work) and a sparse one (which needs the power spectrum transposed).

    Returns
    -------
    tuple of ``(mel_start, mel_stop, bin_start, bin_stop, weights)``
        ``weights`` float32 ``(bin_stop - bin_start, mel_stop - mel_start)``; together they
        hold every non-zero weight. The cut minimises the total block area plus
        ``_MEL_BLOCK_COST`` per block (the cost of a BLAS call, in multiplications).
    """
    basis = mel_basis(sample_rate, n_fft, n_mels)
    n_bins = basis.shape[1]
    used = basis != 0
    nonempty = used.any(axis=1)
    first_bins = np.where(nonempty, used.argmax(axis=1), n_bins)
    last_bins = np.where(nonempty, n_bins - used[:, ::-1].argmax(axis=1), 0)
    first, last = first_bins.tolist(), last_bins.tolist()
    # best[j]: cheapest cut of mel bands [0, j) into runs; cut[j]: where its last run starts.
    # For each stop, every start at once (start = stop - 1 down to 0, the order ties are broken
    # in: the first minimum, i.e. the latest start): a worker's first clip paid ~30 ms for this
    # in a Python double loop.
    best = np.zeros(n_mels + 1)
    cut = [0] * (n_mels + 1)
    for stop in range(1, n_mels + 1):
        starts = np.arange(stop - 1, -1, -1)
        lo = np.minimum.accumulate(first_bins[starts])
        hi = np.maximum.accumulate(last_bins[starts])
        costs = best[starts] + (stop - starts) * np.maximum(hi - lo, 0) + _MEL_BLOCK_COST
        pick = int(np.argmin(costs))
        best[stop], cut[stop] = costs[pick], int(starts[pick])
    blocks = []
    stop = n_mels
    while stop > 0:
        start = cut[stop]
        lo, hi = min(first[start:stop]), max(last[start:stop])
        if hi <= lo:
            lo, hi = 0, 1  # only empty filters (many mel bands at a low sample rate)
        blocks.append((start, stop, lo, hi, np.ascontiguousarray(basis[start:stop, lo:hi].T)))
        stop = start
    return tuple(reversed(blocks))


#: librosa.filters.chroma's defaults: Gaussian octave weighting centred on octave 5 (C5, ~523
#: Hz), 2 octaves wide.
_CHROMA_CENTRE_OCTAVE = 5.0
_CHROMA_OCTAVE_WIDTH = 2.0


def chroma_filters(sample_rate: int, n_fft: int, n_chroma: int, tuning: float = 0.0) -> np.ndarray:
    """Chroma filters (pitch classes from C) over the STFT bins, float32 ``(n_chroma, 1 + n_fft/2)``.

    ``librosa.filters.chroma(sr=sample_rate, n_fft=n_fft, n_chroma=n_chroma, tuning=tuning)``
    (``ctroct=5``, ``octwidth=2``, ``norm=2``, ``base_c=True``) step by step in the same dtypes.
    ``tuning``: offset in fractions of a chroma bin."""
    frequencies = np.linspace(0, sample_rate, n_fft, endpoint=False)[1:]  # no DC
    a440 = 440.0 * 2.0 ** (tuning / n_chroma)
    frqbins = n_chroma * np.log2(frequencies / (float(a440) / 16))
    # DC gets a made-up bin 1.5 octaves below bin 1: 50% rotated from it, and broad.
    frqbins = np.concatenate(([frqbins[0] - 1.5 * n_chroma], frqbins))
    binwidthbins = np.concatenate((np.maximum(frqbins[1:] - frqbins[:-1], 1.0), [1]))
    distance = np.subtract.outer(frqbins, np.arange(0, n_chroma, dtype="d")).T
    half = np.round(float(n_chroma) / 2)
    # Into -n_chroma/2 .. n_chroma/2 (the 10 * n_chroma keeps the remainder's argument positive).
    distance = np.remainder(distance + half + 10 * n_chroma, n_chroma) - half
    wts = np.exp(-0.5 * (2 * distance / np.tile(binwidthbins, (n_chroma, 1))) ** 2)  # Gaussian bumps
    # librosa.util.normalize(norm=2, axis=0): unit columns; a column of norm < tiny is left as is.
    length = np.sum(np.abs(wts) ** 2, axis=0, keepdims=True) ** (1.0 / 2)
    length[length < np.finfo(wts.dtype).tiny] = 1.0
    wts = wts / length
    wts *= np.tile(np.exp(-0.5 * (((frqbins / n_chroma - _CHROMA_CENTRE_OCTAVE) / _CHROMA_OCTAVE_WIDTH) ** 2)),
                   (n_chroma, 1))
    wts = np.roll(wts, -3 * (n_chroma // 12), axis=0)  # start at C, not A
    return np.ascontiguousarray(wts[:, : int(1 + n_fft / 2)], dtype=np.float32)


@lru_cache(maxsize=256)
def chroma_basis_t(sample_rate: int, n_fft: int, n_chroma: int, tuning: float) -> np.ndarray:
    """librosa's chroma filterbank for one tuning offset, transposed: ``(1 + n_fft/2, n_chroma)``
    (:func:`chroma_filters`)."""
    return np.ascontiguousarray(chroma_filters(sample_rate, n_fft, n_chroma, tuning).T)


@lru_cache(maxsize=4)
def dct_t(n: int, k: int) -> np.ndarray:
    """First ``k`` rows of the orthonormal DCT-II of size ``n``, transposed: float64 ``(n, k)``."""
    from ser_batch.features.fft import dct_ortho

    return np.ascontiguousarray(dct_ortho(np.eye(n), axis=0)[:k].T)


@lru_cache(maxsize=4)
def tonnetz_basis_t(n_chroma: int) -> np.ndarray:
    """librosa's tonnetz projection ``phi`` transposed to ``(n_chroma, 6)``, float32.

    Rows of ``phi``: fifths (sin, cos), minor thirds (sin, cos), major thirds (sin, cos,
    radius 0.5), each a circle over the pitch classes.
    """
    dim_map = np.linspace(0, 12, num=n_chroma, endpoint=False)
    scale = np.asarray([7.0 / 6, 7.0 / 6, 3.0 / 2, 3.0 / 2, 2.0 / 3, 2.0 / 3])
    v = np.multiply.outer(scale, dim_map)
    v[::2] -= 0.5
    radii = np.array([1, 1, 1, 1, 0.5, 0.5])
    return np.ascontiguousarray((radii[:, None] * np.cos(np.pi * v)).T, dtype=np.float32)

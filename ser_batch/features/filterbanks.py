"""What every feature recipe shares: cached analysis layouts and the checks on a signal.

Filterbanks, band edges and bin ranges depend only on the sample rate and the feature
settings, so each is built once per process (``lru_cache``) and reused for every clip.
Names ending in ``_t`` are transposed, ``(bins, bands)``, for time-major products.

A recipe analyses a signal in frames of ``features.n_fft`` samples; a signal shorter than
one frame has no spectrum worth the name (only zero padding), so every recipe refuses it
with :func:`check_signal` rather than return a vector of padding.
"""

from __future__ import annotations

import warnings
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
    """librosa.stft's default window: periodic Hann, float32 ``(n_fft,)``."""
    import scipy.signal

    return scipy.signal.get_window("hann", n_fft, fftbins=True).astype(np.float32)


@lru_cache(maxsize=16)
def mel_basis(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """librosa's mel filterbank ``(n_mels, 1 + n_fft/2)``, float32."""
    import librosa

    with warnings.catch_warnings():
        # librosa warns about empty filters for many mel bands at low sample rates.
        warnings.simplefilter("ignore", UserWarning)
        basis = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)
    return basis.astype(np.float32)


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
    first = np.where(nonempty, used.argmax(axis=1), n_bins).tolist()
    last = np.where(nonempty, n_bins - used[:, ::-1].argmax(axis=1), 0).tolist()
    # best[j]: cheapest cut of mel bands [0, j) into runs; cut[j]: where its last run starts.
    best = [0.0] + [float("inf")] * n_mels
    cut = [0] * (n_mels + 1)
    for stop in range(1, n_mels + 1):
        lo, hi = n_bins, 0
        for start in range(stop - 1, -1, -1):
            lo, hi = min(lo, first[start]), max(hi, last[start])
            cost = best[start] + (stop - start) * max(hi - lo, 0) + _MEL_BLOCK_COST
            if cost < best[stop]:
                best[stop], cut[stop] = cost, start
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


@lru_cache(maxsize=256)
def chroma_basis_t(sample_rate: int, n_fft: int, n_chroma: int, tuning: float) -> np.ndarray:
    """librosa's chroma filterbank for one tuning offset, transposed: ``(1 + n_fft/2, n_chroma)``."""
    import librosa

    basis = librosa.filters.chroma(sr=sample_rate, n_fft=n_fft, tuning=tuning, n_chroma=n_chroma)
    return np.ascontiguousarray(basis.T, dtype=np.float32)


@lru_cache(maxsize=4)
def dct_t(n: int, k: int) -> np.ndarray:
    """First ``k`` rows of the orthonormal DCT-II of size ``n``, transposed: float64 ``(n, k)``."""
    import scipy.fft

    return np.ascontiguousarray(scipy.fft.dct(np.eye(n), type=2, norm="ortho", axis=0)[:k].T)


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

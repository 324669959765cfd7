"""YIN pitch tracking in numpy: ``librosa.yin``'s arithmetic without librosa (or numba).

:func:`yin` frames the signal, takes the difference function from an FFT autocorrelation,
normalises it by its cumulative mean, picks the first trough under the threshold (else the
global minimum) and refines it by parabolic interpolation, exactly as librosa 0.11 does, dtype
by dtype and with the same FFT (librosa's default FFT library, scipy's pocketfft, called through
:mod:`ser_batch.features.fft`; ``numpy.fft`` rounds differently), so the two agree to the last
bit. The scoring workers use it so that they never import librosa, whose import and numba
start-up cost more than a second per worker.
"""

from __future__ import annotations

import numpy as np

from ser_batch.errors import FeatureError
from ser_batch.features import fft

#: librosa.yin's default ``trough_threshold``.
TROUGH_THRESHOLD = 0.1


def yin(y: np.ndarray, *, fmin: float, fmax: float, sr: float, frame_length: int, hop_length: int,
        trough_threshold: float = TROUGH_THRESHOLD, center: bool = False) -> np.ndarray:
    """Fundamental frequency per frame by YIN, equal to ``librosa.yin`` with the same arguments.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)], float32 (or float64), the signal at ``sr``
    fmin, fmax : search range, Hz (``0 < fmin < fmax <= sr / 2``)
    sr : sample rate of ``y``, Hz
    frame_length, hop_length : samples; frame ``t`` is ``y[t * hop_length : t * hop_length + frame_length]``
    center : pad ``frame_length // 2`` zeros on both sides first (librosa's default
        ``pad_mode="constant"``)

    Returns
    -------
    f0 : np.ndarray [shape=(1 + (n - frame_length) // hop_length,)], float64, Hz

    Raises
    ------
    FeatureError
        If the range is not inside ``(0, sr / 2]``, one period of ``fmin`` does not fit in a
        frame, or the signal is shorter than one frame.
    """
    if not 0 < fmin < fmax <= sr / 2:
        raise FeatureError(f"yin needs 0 < fmin < fmax <= sr/2, got fmin={fmin}, fmax={fmax}, sr={sr}")
    if sr / fmin >= frame_length - 1:
        raise FeatureError(f"yin: fmin={fmin} Hz is too low for frame_length={frame_length} at sr={sr} Hz")
    y = np.asarray(y)
    if y.ndim != 1:
        raise FeatureError(f"yin takes a mono signal, got shape {y.shape}")
    if center:
        y = np.pad(y, (frame_length // 2, frame_length // 2))
    if len(y) < frame_length:
        raise FeatureError(f"yin: a signal of {len(y)} samples is shorter than one frame ({frame_length})")
    frames = np.lib.stride_tricks.sliding_window_view(y, frame_length)[::hop_length]  # (t, frame_length)
    min_period = int(np.floor(sr / fmax))
    max_period = min(int(np.ceil(sr / fmin)), frame_length - 1)

    # Autocorrelation by FFT, zero-padded past 2 * frame_length - 1 to a fast length. librosa
    # uses scipy.fft along the frame axis; each transform rounds alike in rows or columns.
    n_pad = fft.next_fast_len(2 * frame_length - 1)
    spectrum = fft.rfft(frames, n=n_pad, axis=-1)
    power = np.square(spectrum.real)
    power += np.square(spectrum.imag)  # librosa's numba abs2: re^2 + im^2 in the input's precision
    acf = fft.irfft(power, n=n_pad, axis=-1)[:, : max_period + 1]

    # Difference function d(k) = 2 (r(0) - r(k)) - sum_{m<k} y(m)^2, k = 1..max_period, in the
    # frames' dtype; the running sum is sequential, so its prefix is librosa's full cumsum's.
    # librosa zeroes the first running sum before it is read, so d(1) subtracts nothing.
    energy = np.cumsum(np.square(frames[:, :max_period]), axis=-1)
    energy[:, 0] = 0
    diff = 2 * (acf[:, :1] - acf[:, 1:]) - energy
    # Cumulative mean normalised difference d(k) / mean(d(1..k)); dividing by the int64 lag
    # promotes to float64, as in librosa.
    mean = np.cumsum(diff, axis=-1) / np.arange(1, max_period + 1)
    denominator = mean[:, min_period - 1 : max_period]
    cmnd = diff[:, min_period - 1 :] / (denominator + np.finfo(denominator.dtype).tiny)  # lags min..max

    # Troughs: local minima (strictly below the left neighbour, not above the right), the
    # first lag below its right neighbour, the last below its left one.
    trough = np.empty(cmnd.shape, dtype=bool)
    np.logical_and(cmnd[:, 1:-1] < cmnd[:, :-2], cmnd[:, 1:-1] <= cmnd[:, 2:], out=trough[:, 1:-1])
    trough[:, 0] = cmnd[:, 0] < cmnd[:, 1]
    trough[:, -1] = cmnd[:, -1] < cmnd[:, -2]
    trough &= cmnd < trough_threshold
    rows = np.arange(cmnd.shape[0])
    best = np.where(trough.any(axis=1), trough.argmax(axis=1), cmnd.argmin(axis=1))

    # Parabolic interpolation at the chosen lag only (librosa computes it for every lag and
    # takes this one): shift -b/a, 0 when it would leave [lag - 1, lag + 1] or at either end.
    inner = np.clip(best, 1, cmnd.shape[1] - 2)
    left, mid, right = cmnd[rows, inner - 1], cmnd[rows, inner], cmnd[rows, inner + 1]
    a = right + left - 2 * mid
    b = (right - left) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where((np.abs(b) < np.abs(a)) & (best == inner), -b / a, 0.0)
    return sr / ((min_period + best) + shift)

"""The ``rich`` recipe's local frames: 199 columns per STFT frame and a pitch track.

Every frame is **local**: the dB scales have the fixed floor ``features.db_floor`` and chroma
is not retuned, so a frame depends on its own samples only, and a window pooled from frames
(:mod:`ser_batch.features.windows`) is the same inside a long call as alone. The pitch
constants live here too: yin (:mod:`ser_batch.features.pitch`, librosa's YIN in numpy) runs on
a copy at :data:`PITCH_RATE` Hz, between :data:`F0_MIN_HZ` and :data:`F0_MAX_HZ`.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ser_batch.config import FeatureConfig
from ser_batch.features.checks import check_finite
from ser_batch.features.names import EXTRA_COLUMNS

#: Frames below this level get no pitch (yin would find one in rounding noise).
PITCH_GATE_DB = -80.0


#: Sample rate of the pitch track (yin needs only the band below ~1 kHz).
PITCH_RATE = 4000


#: yin's search range, Hz; frames outside (62, 590) Hz count as unvoiced.
F0_MIN_HZ, F0_MAX_HZ = 60.0, 600.0


VOICED_LO_HZ, VOICED_HI_HZ = 62.0, 590.0


@lru_cache(maxsize=8)
def _moment_basis(sample_rate: int, n_fft: int) -> np.ndarray:
    """Columns 1, f and f^2 (Hz) over the STFT bins, float32 ``(1 + n_fft/2, 3)``."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    return np.ascontiguousarray(np.stack([np.ones_like(freqs), freqs, freqs * freqs], axis=1), dtype=np.float32)


#: Bins summed per step of the roll-off search.
_ROLLOFF_BLOCK = 32


def _rolloff_bins(magnitude: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """Per frame, the number of bins whose cumulative magnitude stays under ``threshold``
    (librosa's roll-off bin), found block by block instead of by a cumulative sum over every bin."""
    n, n_bins = magnitude.shape
    width = (n_bins // _ROLLOFF_BLOCK) * _ROLLOFF_BLOCK
    blocks = magnitude[:, :width].reshape(n, -1, _ROLLOFF_BLOCK).sum(axis=2)
    cum_blocks = np.cumsum(blocks, axis=1)
    below = (cum_blocks < threshold[:, None]).sum(axis=1)  # whole blocks under the threshold
    before = np.where(below > 0, cum_blocks[np.arange(n), np.maximum(below - 1, 0)], 0.0)
    # The bins of the block where the threshold is crossed (the tail bins past the last block).
    index = np.minimum(below[:, None] * _ROLLOFF_BLOCK + np.arange(_ROLLOFF_BLOCK)[None, :], n_bins - 1)
    inside = np.cumsum(magnitude[np.arange(n)[:, None], index], axis=1) + before[:, None]
    tail = below * _ROLLOFF_BLOCK + (inside < threshold[:, None]).sum(axis=1)
    return np.minimum(tail, n_bins - 1)


def _zero_crossing_rate(segment: np.ndarray, n: int, *, n_fft: int, hop: int) -> np.ndarray:
    """Sign changes between the ``n_fft - 1`` sample pairs of each frame, as a rate.

    Counted once per hop of samples and summed over the hops a frame spans (a frame of
    ``n_fft`` samples starting every ``hop`` spans ``n_fft / hop`` of them), instead of a
    cumulative sum over every sample."""
    signs = np.signbit(segment)
    changes = np.zeros(len(segment), dtype=bool)  # pair (i, i + 1) at index i; none after the end
    np.not_equal(signs[1:], signs[:-1], out=changes[:-1])
    if n_fft % hop:
        starts = np.arange(n) * hop
        cumulative = np.concatenate([[0], np.cumsum(changes)])
        return (cumulative[starts + n_fft - 1] - cumulative[starts]) / (n_fft - 1)
    span = n_fft // hop
    per_hop = changes[: (n + span - 1) * hop].reshape(-1, hop).sum(axis=1, dtype=np.int64)
    counts = sum(per_hop[j : j + n] for j in range(span))
    # A frame's pairs stop one short of its last sample: leave out the pair starting there.
    counts -= changes[np.arange(n) * hop + n_fft - 1]
    return counts / (n_fft - 1)


def level_column(config: FeatureConfig) -> int:
    """Column of :func:`rich_segment_frames` holding the frame level (``rms_db``)."""
    from ser_batch.features.names import frame_column_names

    return len(frame_column_names(config))


#: Spectrum bins multiplied together before one logarithm (see :func:`_level_and_flatness`).
_LOG_GROUP = 4


def _level_and_flatness(magnitude: np.ndarray, n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """Per frame of a magnitude spectrum ``(t, 1 + n_fft/2)``: the RMS level in dB (as
    ``librosa.feature.rms(S=...)``: one-sided spectrum, DC and Nyquist counted once) and the log10
    spectral flatness of the power spectrum, float64 ``(t,)`` each."""
    n_bins = magnitude.shape[1]
    # In float32 (a quarter of the time of a float64 product; ~1e-6 relative, far under any threshold).
    sumsq = np.einsum("ij,ij->i", magnitude, magnitude).astype(np.float64)
    rms_power = (2.0 * sumsq - magnitude[:, 0].astype(np.float64) ** 2 - magnitude[:, -1].astype(np.float64) ** 2) \
        / n_fft**2
    # Flatness of the power spectrum floored at 1e-10 (magnitude at 1e-5), in log10; the floor
    # changes the arithmetic mean by at most 1e-10 per bin, so it is taken on the mean. The
    # geometric mean's logs are taken of products of 4 bins (float32 holds them: each factor is in
    # [1e-5, ~1e4]): a quarter of the logarithms, which were a tenth of a scoring worker's time.
    floored = np.maximum(magnitude, np.float32(1e-5))
    whole = n_bins // _LOG_GROUP * _LOG_GROUP
    groups = floored[:, :whole].reshape(len(floored), -1, _LOG_GROUP)
    products = groups[:, :, 0] * groups[:, :, 1]
    for j in range(2, _LOG_GROUP):
        products *= groups[:, :, j]
    log_sum = np.log(products).sum(axis=1, dtype=np.float64)
    if whole < n_bins:
        log_sum += np.log(floored[:, whole:]).sum(axis=1, dtype=np.float64)
    mean_power = np.maximum(sumsq / n_bins, 1e-10)
    flatness = np.exp(2.0 * log_sum / n_bins) / mean_power
    return 10.0 * np.log10(np.maximum(rms_power, 1e-20)), np.log10(np.maximum(flatness, 1e-10))


def lean_segment_frames(segment: np.ndarray, sample_rate: int, *, config: FeatureConfig) -> np.ndarray:
    """The columns of :func:`rich_segment_frames` that the speech detectors and the cnn's log-mel
    frames read (``mel_db_*``, ``rms_db``, ``flatness_log10``), the same numbers to the bit, the
    other columns 0: what scoring computes when no model reads window vectors (no MFCC, chroma,
    contrast, other extras or pitch: a quarter of the cost).

    Returns
    -------
    np.ndarray [shape=(t, 199)], float32
    """
    from ser_batch.features.fast import mel_columns, power_to_db, stft_magnitude
    from ser_batch.features.filterbanks import mel_blocks
    from ser_batch.features.names import frame_column_names

    magnitude = stft_magnitude(segment, n_fft=config.n_fft, hop_length=config.hop_length, center=False)
    n, width = magnitude.shape[0], len(frame_column_names(config))
    frames = np.zeros((n, width + len(EXTRA_COLUMNS)), dtype=np.float32)
    power = magnitude * magnitude
    mel = np.empty((n, config.n_mels), dtype=np.float32)
    for mel_start, mel_stop, lo, hi, weights in mel_blocks(sample_rate, config.n_fft, config.n_mels):
        np.matmul(power[:, lo:hi], weights, out=mel[:, mel_start:mel_stop])
    frames[:, mel_columns(config)] = power_to_db(mel, floor_db=config.db_floor)
    rms_db, flatness = _level_and_flatness(magnitude, config.n_fft)
    frames[:, width] = rms_db
    frames[:, width + EXTRA_COLUMNS.index("flatness_log10")] = flatness
    check_finite(frames, "frame values")
    return frames


def rich_segment_frames(segment: np.ndarray, low: np.ndarray, sample_rate: int, *, config: FeatureConfig,
                        first_frame: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Local ``rich`` frames of a stretch of padded signal: frame ``t`` is
    ``segment[t * hop : t * hop + n_fft]``, with no centring and no reference outside it.

    Parameters
    ----------
    segment : np.ndarray [shape=((t - 1) * hop_length + n_fft,)], float32, at ``sample_rate``
    low : np.ndarray, the same stretch at :data:`ser_batch.features.rich.PITCH_RATE` Hz (for pitch)
    first_frame : int, the signal's frame number of the first frame: pitch is tracked on the
        signal's even frames only (half the cost; the odd ones hold ``-1``, "not tracked")

    Returns
    -------
    frames : np.ndarray [shape=(t, 199)], float32, columns :func:`rich_frame_names` (mel in dB
        with the fixed floor ``features.db_floor``)
    f0 : np.ndarray [shape=(t,)], float32, Hz (:func:`ser_batch.features.pitch.yin`, equal to
        ``librosa.yin``, on the low-rate copy; 0 in near-silent
        frames; -1 in frames not tracked)
    """
    from ser_batch.features.fast import mel_columns, power_to_db, spectral_frames
    from ser_batch.features.pitch import yin
    from ser_batch.features.rich import F0_MAX_HZ, F0_MIN_HZ, PITCH_GATE_DB, PITCH_RATE

    n_fft, hop = config.n_fft, config.hop_length
    magnitude, base = spectral_frames(segment, sample_rate, config=config, local=True)
    n = base.shape[0]
    width = base.shape[1]
    frames = np.empty((n, width + len(EXTRA_COLUMNS)), dtype=np.float32)
    frames[:, :width] = base
    mel = mel_columns(config)
    frames[:, mel] = power_to_db(base[:, mel], floor_db=config.db_floor)

    # Row sums of |S|, |S| f, |S| f^2 and |S|^2 in two BLAS-speed passes over the spectrum.
    moments = magnitude @ _moment_basis(sample_rate, n_fft)
    total = np.maximum(moments[:, 0].astype(np.float64), 1e-12)
    rms_db, flatness = _level_and_flatness(magnitude, n_fft)
    centroid = moments[:, 1] / total
    bandwidth = np.sqrt(np.maximum(moments[:, 2] / total - centroid * centroid, 0.0))
    rolloff = _rolloff_bins(magnitude, 0.85 * moments[:, 0]) * (sample_rate / n_fft)
    zcr = _zero_crossing_rate(segment, n, n_fft=n_fft, hop=hop)
    frames[:, width:] = np.column_stack([rms_db, zcr, centroid, bandwidth, rolloff, flatness])
    check_finite(frames, "rich frame values")
    factor = sample_rate // PITCH_RATE
    f0 = np.full(n, -1.0, dtype=np.float32)
    odd = first_frame % 2  # the first frame of the segment that is even in the signal
    if n > odd:
        tracked = yin(low[odd * hop // factor :], fmin=F0_MIN_HZ, fmax=F0_MAX_HZ, sr=PITCH_RATE,
                      frame_length=n_fft // factor, hop_length=2 * hop // factor, center=False)
        f0[odd::2] = check_finite(tracked, "f0 values (yin)")[: len(f0[odd::2])]
        # Near-silent frames have no pitch: yin would read one into the resampler's rounding
        # noise, whose level depends on the loudest audio near it (not local).
        f0[odd::2][frames[odd::2, width] < PITCH_GATE_DB] = 0.0
    return frames, f0

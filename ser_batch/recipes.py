"""Feature recipes: which frame-level features, pooled how, into one vector per clip or window.

This module is the feature layer's entry point: :func:`file_features` decodes a file and
computes its features (the single code path of extraction and scoring), and
:func:`signal_features` does the same for a decoded signal with any recipe.

``classic`` (:mod:`ser_batch.classic`) and ``fast`` (:mod:`ser_batch.features`) give the
193 time-averaged values of the original recipe. ``rich`` keeps the frames of ``fast`` and
adds what they lose when averaged, for better accuracy at ~3x the cost of ``fast`` (still
~10x faster than classic):

* per frame, 199 columns: the 193 ``fast`` columns with the mel bands in dB (a mean of
  power is dominated by the loudest frames), plus RMS level (dB), zero-crossing rate,
  spectral centroid, bandwidth, 85% roll-off (Hz) and log10 spectral flatness, all from
  the same STFT; every frame is **local** (:func:`rich_segment_frames`): the dB scales have
  the fixed floor ``features.db_floor`` and chroma is not retuned, so a frame depends on its
  own samples only;
* pooled over the clip or a window: mean, standard deviation, mean absolute frame-to-
  frame change and standard deviation of that change of every column (4 x 199);
* pitch: 9 statistics of the log2 f0 track of ``librosa.yin`` (60-600 Hz, on a 4 kHz copy):
  mean, std, 10/50/90th percentiles, 90-10 range, mean absolute change, voiced fraction,
  and the duration in seconds.

805 values in all with the default config. Frames are computed once per signal and pooled
over the clip and over sliding windows (``features.window_s`` = 1.5 s every
``window_hop_s`` = 0.5 s) by :mod:`ser_batch.windows`, which also streams long recordings
block by block with the same numbers. Models trained on windows and averaging the windows'
probabilities per clip are ~8 points more accurate than models of whole-clip vectors
(docs/accuracy.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ser_batch.config import Config, FeatureConfig
from ser_batch.errors import AudioError
from ser_batch.filterbanks import check_finite

if TYPE_CHECKING:
    from ser_batch.audio import AudioInfo

EXTRA_COLUMNS = ("rms_db", "zcr", "centroid_hz", "bandwidth_hz", "rolloff_hz", "flatness_log10")
POOLED_STATS = ("mean", "std", "dabs", "dstd")
PITCH_STATS = ("f0_log2_mean", "f0_log2_std", "f0_log2_p10", "f0_log2_p50", "f0_log2_p90",
               "f0_log2_range", "f0_log2_dabs", "voiced_fraction", "duration_s")


def rich_frame_names(base_names: list[str]) -> list[str]:
    """Column names of :func:`rich_segment_frames`: the fast columns (mel in dB) and the extras."""
    return [n.replace("mel_", "mel_db_") if n.startswith("mel_") else n for n in base_names] + list(EXTRA_COLUMNS)


def rich_names(base_names: list[str]) -> list[str]:
    """Names of the pooled ``rich`` vector, in order: ``<column>__<stat>`` then pitch."""
    columns = rich_frame_names(base_names)
    return [f"{c}__{s}" for s in POOLED_STATS for c in columns] + list(PITCH_STATS)


@dataclass(frozen=True)
class FileFeatures:
    """Features of one signal.

    Attributes
    ----------
    vector : np.ndarray [shape=(n_features,)], float32, pooled over the whole signal
    segments : np.ndarray [shape=(n_windows, n_features)], float32, or None when the recipe
        has no windows (``fast``, ``classic``, or ``features.window_s = 0``)
    segment_starts_s : np.ndarray [shape=(n_windows,)], float32, window start times (s), or None
    segment_speech_ratio : np.ndarray [shape=(n_windows,)], float32, fraction of each window's
        frames judged speech (see :mod:`ser_batch.windows`), or None
    """

    vector: np.ndarray
    segments: np.ndarray | None = None
    segment_starts_s: np.ndarray | None = None
    segment_speech_ratio: np.ndarray | None = None


def signal_features(y: np.ndarray, sample_rate: int, *, config: FeatureConfig) -> FileFeatures:
    """Features of one decoded signal with ``config.recipe``: the clip vector, and for
    ``rich`` with ``window_s > 0`` also one vector per sliding window (frames are computed once).

    Parameters
    ----------
    y : np.ndarray [shape=(n,)], float32 mono signal at ``sample_rate`` Hz, at least
        ``config.n_fft`` samples (one analysis frame) long
    sample_rate : int, Hz

    Raises
    ------
    FeatureError
        If the signal is empty, not mono, shorter than one analysis frame (``too short:
        62.5 ms; at least 128 ms needed (...)``) or not finite, or the features are not.
    """
    from ser_batch.features import clip_features

    if config.recipe != "rich":
        return FileFeatures(clip_features(y, sample_rate, config=config))
    from ser_batch.windows import signal_windows

    vector, windows = signal_windows(y, sample_rate, config=config)
    if config.window_s <= 0:
        return FileFeatures(vector)
    return FileFeatures(vector, windows.vectors, windows.start_s.astype(np.float32), windows.speech_ratio)


def decode_for_features(path: Path, *, config: Config) -> tuple[np.ndarray, AudioInfo]:
    """Decode one file as every job feeds it to a recipe: mono at ``config.audio.sample_rate``
    (:func:`ser_batch.audio.load_audio`), refusing files over ``audio.max_file_s``.

    Returns
    -------
    y : np.ndarray [shape=(n,)], float32 at ``config.audio.sample_rate`` Hz
    info : AudioInfo of the original file

    Raises
    ------
    AudioError
        If the file cannot be decoded or is over ``audio.max_file_s``.
    """
    from ser_batch.audio import load_audio, probe_audio

    limit = config.audio.max_file_s
    if limit and not config.audio.max_duration_s:
        length = probe_audio(Path(path)).duration_s
        if length > limit:
            raise AudioError(f"file is {length:.0f} s long, over audio.max_file_s = {limit:.0f} s "
                             "(raise it, or set audio.max_duration_s to use the beginning)")
    return load_audio(
        Path(path), sample_rate=config.audio.sample_rate, max_duration_s=config.audio.max_duration_s or None
    )


def checked_features(y: np.ndarray, *, config: Config) -> FileFeatures:
    """:func:`signal_features` of a signal decoded by :func:`decode_for_features`, checked finite.

    Raises
    ------
    FeatureError
        If the signal yields no finite features (too short, for one).
    """
    feats = signal_features(y, config.audio.sample_rate, config=config.features)
    # Every recipe already refuses non-finite values; this guards the one contract all
    # jobs rely on (a row holds finite features or an error) against a recipe that forgets.
    check_finite(feats.vector, "features")
    if feats.segments is not None:
        check_finite(feats.segments, "window features")
    return feats


def file_features(path: Path, *, config: Config) -> tuple[FileFeatures, AudioInfo]:
    """Decode one file and compute its features: the single code path of every job.

    The file is decoded, downmixed and resampled to ``config.audio.sample_rate`` exactly as
    :func:`ser_batch.audio.load_audio` does, then :func:`signal_features` runs the recipe.

    Returns
    -------
    features : FileFeatures (clip vector, and window vectors for the ``rich`` recipe)
    info : AudioInfo of the original file

    Raises
    ------
    AudioError, FeatureError
        If the file cannot be decoded, is over ``audio.max_file_s`` or yields no finite
        features (too short, for one).
    """
    y, info = decode_for_features(path, config=config)
    return checked_features(y, config=config), info


# ------------------------------------------------------------ local frames (streamed)


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
    from ser_batch.schema import frame_column_names

    return len(frame_column_names(config))


def rich_segment_frames(segment: np.ndarray, low: np.ndarray, sample_rate: int, *, config: FeatureConfig,
                        first_frame: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Local ``rich`` frames of a stretch of padded signal: frame ``t`` is
    ``segment[t * hop : t * hop + n_fft]``, with no centring and no reference outside it.

    Parameters
    ----------
    segment : np.ndarray [shape=((t - 1) * hop_length + n_fft,)], float32, at ``sample_rate``
    low : np.ndarray, the same stretch at :data:`ser_batch.windows.PITCH_RATE` Hz (for pitch)
    first_frame : int, the signal's frame number of the first frame: pitch is tracked on the
        signal's even frames only (half the cost; the odd ones hold ``-1``, "not tracked")

    Returns
    -------
    frames : np.ndarray [shape=(t, 199)], float32, columns :func:`rich_frame_names` (mel in dB
        with the fixed floor ``features.db_floor``)
    f0 : np.ndarray [shape=(t,)], float32, Hz (yin on the low-rate copy; 0 in near-silent
        frames; -1 in frames not tracked)
    """
    import librosa

    from ser_batch.features import mel_columns, power_to_db, spectral_frames
    from ser_batch.windows import F0_MAX_HZ, F0_MIN_HZ, PITCH_GATE_DB, PITCH_RATE

    n_fft, hop = config.n_fft, config.hop_length
    magnitude, base = spectral_frames(segment, sample_rate, config=config, local=True)
    n = base.shape[0]
    width = base.shape[1]
    frames = np.empty((n, width + len(EXTRA_COLUMNS)), dtype=np.float32)
    frames[:, :width] = base
    mel = mel_columns(config)
    frames[:, mel] = power_to_db(base[:, mel], floor_db=config.db_floor)

    n_bins = magnitude.shape[1]
    # Row sums of |S|, |S| f, |S| f^2 and |S|^2 in two BLAS-speed passes over the spectrum.
    moments = magnitude @ _moment_basis(sample_rate, n_fft)
    total = np.maximum(moments[:, 0].astype(np.float64), 1e-12)
    sumsq = np.einsum("ij,ij->i", magnitude, magnitude, dtype=np.float64)
    # RMS as librosa.feature.rms(S=...): one-sided spectrum, DC and Nyquist counted once.
    rms_power = (2.0 * sumsq - magnitude[:, 0].astype(np.float64) ** 2 - magnitude[:, -1].astype(np.float64) ** 2) \
        / n_fft**2
    centroid = moments[:, 1] / total
    bandwidth = np.sqrt(np.maximum(moments[:, 2] / total - centroid * centroid, 0.0))
    rolloff = _rolloff_bins(magnitude, 0.85 * moments[:, 0]) * (sample_rate / n_fft)
    # Flatness of the power spectrum floored at 1e-10 (magnitude at 1e-5), in log10; the floor
    # changes the arithmetic mean by at most 1e-10 per bin, so it is taken on the mean.
    log_mag = np.log(np.maximum(magnitude, np.float32(1e-5)))
    mean_power = np.maximum(sumsq / n_bins, 1e-10)
    flatness = np.exp(2.0 * log_mag.mean(axis=1, dtype=np.float64)) / mean_power
    zcr = _zero_crossing_rate(segment, n, n_fft=n_fft, hop=hop)
    frames[:, width:] = np.column_stack([10.0 * np.log10(np.maximum(rms_power, 1e-20)), zcr, centroid,
                                         bandwidth, rolloff, np.log10(np.maximum(flatness, 1e-10))])
    check_finite(frames, "rich frame values")
    factor = sample_rate // PITCH_RATE
    f0 = np.full(n, -1.0, dtype=np.float32)
    odd = first_frame % 2  # the first frame of the segment that is even in the signal
    if n > odd:
        tracked = librosa.yin(low[odd * hop // factor :], fmin=F0_MIN_HZ, fmax=F0_MAX_HZ, sr=PITCH_RATE,
                              frame_length=n_fft // factor, hop_length=2 * hop // factor, center=False)
        f0[odd::2] = check_finite(tracked, "f0 values (librosa.yin)")[: len(f0[odd::2])]
        # Near-silent frames have no pitch: yin would read one into the resampler's rounding
        # noise, whose level depends on the loudest audio near it (not local).
        f0[odd::2][frames[odd::2, width] < PITCH_GATE_DB] = 0.0
    return frames, f0

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
  the same STFT;
* pooled over the clip (or window): mean, standard deviation, mean absolute frame-to-
  frame change and standard deviation of that change of every column (4 x 199);
* pitch: 9 statistics of the log2 f0 track of ``librosa.yin`` (60-600 Hz): mean, std,
  10/50/90th percentiles, 90-10 range, mean absolute change, voiced fraction, and the
  duration in seconds.

805 values in all with the default config. :func:`rich_frames` and :func:`pool_rich` are
separate so that frames are computed once per file and pooled over any window: besides
the clip vector, ``rich`` pools sliding windows (``features.window_s`` = 1.5 s every
``window_hop_s`` = 0.5 s). Models trained on windows and averaging the windows'
probabilities per clip are ~8 points more accurate than models of whole-clip vectors
(docs/accuracy.md), and long recordings are scored the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ser_batch.config import Config, FeatureConfig
from ser_batch.errors import AudioError, FeatureError
from ser_batch.filterbanks import check_finite

if TYPE_CHECKING:
    from ser_batch.audio import AudioInfo

EXTRA_COLUMNS = ("rms_db", "zcr", "centroid_hz", "bandwidth_hz", "rolloff_hz", "flatness_log10")
POOLED_STATS = ("mean", "std", "dabs", "dstd")
PITCH_STATS = ("f0_log2_mean", "f0_log2_std", "f0_log2_p10", "f0_log2_p50", "f0_log2_p90",
               "f0_log2_range", "f0_log2_dabs", "voiced_fraction", "duration_s")
#: yin search range, Hz (covers speaking voices); frames outside (62, 590) Hz count as unvoiced.
F0_MIN_HZ, F0_MAX_HZ = 60.0, 600.0
_VOICED_LO, _VOICED_HI = 62.0, 590.0


def rich_frame_names(base_names: list[str]) -> list[str]:
    """Column names of :func:`rich_frames`: the fast columns (mel in dB) and the extras."""
    return [n.replace("mel_", "mel_db_") if n.startswith("mel_") else n for n in base_names] + list(EXTRA_COLUMNS)


def rich_names(base_names: list[str]) -> list[str]:
    """Names of the pooled ``rich`` vector, in order: ``<column>__<stat>`` then pitch."""
    columns = rich_frame_names(base_names)
    return [f"{c}__{s}" for s in POOLED_STATS for c in columns] + list(PITCH_STATS)


def rich_frames(y: np.ndarray, sample_rate: int, *, config: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """Frame-level matrix and f0 track of the ``rich`` recipe.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)], float32 mono at ``sample_rate`` Hz

    Returns
    -------
    frames : np.ndarray [shape=(t, 199)], float32, columns :func:`rich_frame_names`
    f0 : np.ndarray [shape=(t,)], float32, Hz (yin's estimate; also for unvoiced frames)

    Raises
    ------
    FeatureError
        As :func:`ser_batch.features.frame_features` (which also guarantees the one
        ``n_fft`` frame that yin needs), or if a frame value or the f0 track is not finite.
    """
    import librosa

    from ser_batch.features import mel_columns, power_to_db, spectral_frames

    magnitude, base = spectral_frames(y, sample_rate, config=config)
    frames = np.empty((base.shape[0], base.shape[1] + len(EXTRA_COLUMNS)), dtype=np.float32)
    frames[:, : base.shape[1]] = base
    mel = mel_columns(config)
    frames[:, mel] = power_to_db(base[:, mel])

    power = magnitude.astype(np.float64) ** 2
    freqs = np.fft.rfftfreq(config.n_fft, 1.0 / sample_rate)
    # RMS as librosa.feature.rms(S=...): one-sided spectrum, DC and Nyquist counted once.
    edge = power[:, 0] + power[:, -1]
    rms_power = (2.0 * power.sum(axis=1) - edge) / config.n_fft**2
    total = np.maximum(magnitude.sum(axis=1, dtype=np.float64), 1e-12)
    weights = magnitude / total[:, None]
    centroid = weights @ freqs
    bandwidth = np.sqrt(np.maximum((weights * (freqs[None, :] - centroid[:, None]) ** 2).sum(axis=1), 0.0))
    cumulative = np.cumsum(magnitude, axis=1, dtype=np.float64)
    rolloff = freqs[np.minimum((cumulative < 0.85 * cumulative[:, -1:]).sum(axis=1), len(freqs) - 1)]
    clipped = np.maximum(power, 1e-10)
    flatness = np.exp(np.log(clipped).mean(axis=1)) / clipped.mean(axis=1)
    padded = np.pad(np.asarray(y, dtype=np.float32), config.n_fft // 2)
    windows = np.lib.stride_tricks.sliding_window_view(padded, config.n_fft)[:: config.hop_length]
    signs = np.signbit(windows)
    zcr = (signs[:, 1:] != signs[:, :-1]).mean(axis=1)
    extras = np.column_stack([10.0 * np.log10(np.maximum(rms_power, 1e-20)), zcr[: len(base)], centroid,
                              bandwidth, rolloff, np.log10(np.maximum(flatness, 1e-10))])
    frames[:, base.shape[1] :] = extras

    f0 = librosa.yin(y, fmin=F0_MIN_HZ, fmax=F0_MAX_HZ, sr=sample_rate, frame_length=config.n_fft,
                     hop_length=config.hop_length)
    return check_finite(frames, "rich frame values"), check_finite(f0[: len(frames)].astype(np.float32),
                                                                   "f0 values (librosa.yin)")


def pool_rich(frames: np.ndarray, f0: np.ndarray, *, hop_s: float, start: int = 0,
              stop: int | None = None) -> np.ndarray:
    """Pool frames ``[start, stop)`` of :func:`rich_frames` into the ``rich`` vector.

    Parameters
    ----------
    frames : np.ndarray [shape=(t, c)]
    f0 : np.ndarray [shape=(t,)], Hz
    hop_s : float, seconds between frames (for the duration value)

    Returns
    -------
    np.ndarray [shape=(4 * c + 9,)], float32
    """
    window = frames[start:stop].astype(np.float64)
    if window.shape[0] == 0:
        raise FeatureError("cannot pool an empty window of frames")
    delta = np.diff(window, axis=0) if window.shape[0] > 1 else np.zeros((1, window.shape[1]))
    track = f0[start:stop].astype(np.float64)
    voiced = (track > _VOICED_LO) & (track < _VOICED_HI)
    log_f0 = np.log2(track[voiced] if voiced.sum() >= 3 else np.maximum(track, 1.0))
    p10, p50, p90 = np.percentile(log_f0, [10, 50, 90])
    pitch = [log_f0.mean(), log_f0.std(), p10, p50, p90, p90 - p10,
             np.abs(np.diff(log_f0)).mean() if log_f0.size > 1 else 0.0,
             voiced.mean(), window.shape[0] * hop_s]
    return np.concatenate([window.mean(axis=0), window.std(axis=0), np.abs(delta).mean(axis=0),
                           delta.std(axis=0), pitch]).astype(np.float32)


def window_bounds(n_frames: int, *, window: int, hop: int) -> list[tuple[int, int]]:
    """``(start, stop)`` frame ranges of sliding windows over ``n_frames`` frames.

    With ``hop <= window`` (the config enforces it) every frame is in some window.

    Windows of ``window`` frames every ``hop`` frames; the last one is aligned to the end so
    the tail is covered; a signal shorter than one window gives a single window of it all.
    """
    if n_frames <= window:
        return [(0, n_frames)]
    starts = list(range(0, n_frames - window + 1, hop))
    if starts[-1] + window < n_frames:
        starts.append(n_frames - window)
    return [(s, s + window) for s in starts]


def window_frames(config: FeatureConfig, sample_rate: int) -> tuple[int, int]:
    """``features.window_s`` and ``window_hop_s`` in frames (at least 2 and 1)."""
    hop_s = config.hop_length / sample_rate
    return max(2, int(round(config.window_s / hop_s))), max(1, int(round(config.window_hop_s / hop_s)))


@dataclass(frozen=True)
class FileFeatures:
    """Features of one signal.

    Attributes
    ----------
    vector : np.ndarray [shape=(n_features,)], float32, pooled over the whole signal
    segments : np.ndarray [shape=(n_windows, n_features)], float32, or None when the recipe
        has no windows (``fast``, ``classic``, or ``features.window_s = 0``)
    segment_starts_s : np.ndarray [shape=(n_windows,)], float32, window start times (s), or None
    """

    vector: np.ndarray
    segments: np.ndarray | None = None
    segment_starts_s: np.ndarray | None = None


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
    frames, f0 = rich_frames(y, sample_rate, config=config)
    hop_s = config.hop_length / sample_rate
    vector = pool_rich(frames, f0, hop_s=hop_s)
    if config.window_s <= 0:
        return FileFeatures(vector)
    window, hop = window_frames(config, sample_rate)
    bounds = window_bounds(len(frames), window=window, hop=hop)
    segments = np.stack([pool_rich(frames, f0, hop_s=hop_s, start=a, stop=b) for a, b in bounds])
    starts = np.array([a * hop_s for a, _ in bounds], dtype=np.float32)
    return FileFeatures(vector, segments, starts)


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
    from ser_batch.audio import load_audio, probe_audio

    limit = config.audio.max_file_s
    if limit and not config.audio.max_duration_s:
        length = probe_audio(Path(path)).duration_s
        if length > limit:
            raise AudioError(f"file is {length:.0f} s long, over audio.max_file_s = {limit:.0f} s "
                             "(raise it, or set audio.max_duration_s to use the beginning)")
    y, info = load_audio(
        Path(path), sample_rate=config.audio.sample_rate, max_duration_s=config.audio.max_duration_s or None
    )
    feats = signal_features(y, config.audio.sample_rate, config=config.features)
    # Every recipe already refuses non-finite values; this guards the one contract all
    # jobs rely on (a row holds finite features or an error) against a recipe that forgets.
    check_finite(feats.vector, "features")
    if feats.segments is not None:
        check_finite(feats.segments, "window features")
    return feats, info

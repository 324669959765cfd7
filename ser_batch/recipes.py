"""Feature recipes: which frame-level features, pooled how, into one vector per clip or window.

``classic`` and ``fast`` (:mod:`ser_batch.features`) give the 193 time-averaged values of
the original recipe. ``rich`` keeps the frames of ``fast`` and adds what they lose when
averaged, for better accuracy at ~3x the cost of ``fast`` (still ~10x faster than classic):

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

import numpy as np

from ser_batch.config import FeatureConfig
from ser_batch.errors import FeatureError

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
    """
    import librosa

    from ser_batch.features import mel_columns, power_to_db, spectral_frames

    if y.size < config.n_fft:
        raise FeatureError(f"signal too short for pitch tracking ({y.size} < {config.n_fft} samples)")
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
    return frames, f0[: len(frames)].astype(np.float32)


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


def file_features(y: np.ndarray, sample_rate: int, *, config: FeatureConfig) -> FileFeatures:
    """Features of one signal with ``config.recipe``: the clip vector, and for ``rich`` with
    ``window_s > 0`` also one vector per sliding window (frames are computed once)."""
    from ser_batch.features import clip_features

    if y.ndim != 1 or y.size == 0:
        raise FeatureError(f"expected a non-empty mono signal, got shape {y.shape}")
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


# ------------------------------------------------------------ local frames (streamed)


def level_column(config: FeatureConfig) -> int:
    """Column of :func:`rich_segment_frames` holding the frame level (``rms_db``)."""
    from ser_batch.schema import frame_column_names

    return len(frame_column_names(config))


def rich_segment_frames(segment: np.ndarray, low: np.ndarray, sample_rate: int, *,
                        config: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """Local ``rich`` frames of a stretch of padded signal: frame ``t`` is
    ``segment[t * hop : t * hop + n_fft]``, with no centring and no reference outside it.

    Parameters
    ----------
    segment : np.ndarray [shape=((t - 1) * hop_length + n_fft,)], float32, at ``sample_rate``
    low : np.ndarray, the same stretch at :data:`ser_batch.windows.PITCH_RATE` Hz (for pitch)

    Returns
    -------
    frames : np.ndarray [shape=(t, 199)], float32, columns :func:`rich_frame_names` (mel in dB
        with the fixed floor ``features.db_floor``)
    f0 : np.ndarray [shape=(t,)], float32, Hz (yin on the low-rate copy)
    """
    import librosa

    from ser_batch.features import mel_columns, power_to_db, spectral_frames
    from ser_batch.windows import PITCH_RATE

    n_fft, hop = config.n_fft, config.hop_length
    magnitude, base = spectral_frames(segment, sample_rate, config=config, local=True)
    n = base.shape[0]
    width = base.shape[1]
    frames = np.empty((n, width + len(EXTRA_COLUMNS)), dtype=np.float32)
    frames[:, :width] = base
    mel = mel_columns(config)
    frames[:, mel] = power_to_db(base[:, mel], floor_db=config.db_floor)

    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate).astype(np.float32)
    power = magnitude * magnitude
    # RMS as librosa.feature.rms(S=...): one-sided spectrum, DC and Nyquist counted once.
    rms_power = (2.0 * power.sum(axis=1, dtype=np.float64) - power[:, 0] - power[:, -1]) / n_fft**2
    total = np.maximum(magnitude.sum(axis=1, dtype=np.float64), 1e-12)
    centroid = (magnitude @ freqs) / total
    spread = (magnitude @ (freqs * freqs)) / total - centroid * centroid
    bandwidth = np.sqrt(np.maximum(spread, 0.0))
    cumulative = np.cumsum(magnitude, axis=1)
    rolloff = freqs[np.minimum((cumulative < 0.85 * cumulative[:, -1:]).sum(axis=1), len(freqs) - 1)]
    # Flatness of the power spectrum floored at 1e-10 (magnitude at 1e-5), in log10.
    log_mag = np.log(np.maximum(magnitude, np.float32(1e-5)))
    clipped_mean = np.maximum(power, np.float32(1e-10)).mean(axis=1, dtype=np.float64)
    flatness = np.exp(2.0 * log_mag.mean(axis=1, dtype=np.float64)) / clipped_mean
    # Zero crossings inside each frame, from one pass over the samples.
    signs = np.signbit(segment)
    crossings = np.concatenate([[0], np.cumsum(signs[1:] != signs[:-1])])
    starts = np.arange(n) * hop
    zcr = (crossings[starts + n_fft - 1] - crossings[starts]) / (n_fft - 1)
    frames[:, width:] = np.column_stack([10.0 * np.log10(np.maximum(rms_power, 1e-20)), zcr, centroid,
                                         bandwidth, rolloff, np.log10(np.maximum(flatness, 1e-10))])
    if not np.all(np.isfinite(frames)):
        raise FeatureError("features are not finite")
    factor = sample_rate // PITCH_RATE
    f0 = librosa.yin(low, fmin=F0_MIN_HZ, fmax=F0_MAX_HZ, sr=PITCH_RATE, frame_length=n_fft // factor,
                     hop_length=hop // factor, center=False)
    return frames, np.asarray(f0[:n], dtype=np.float32)

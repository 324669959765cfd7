"""Log-mel frames of the frame-sequence model (``cnn``), taken from the ``rich`` recipe's frames.

No second STFT: the ``rich`` frames already hold the 128 mel bands in dB with the fixed floor
``features.db_floor``; adjacent bands are averaged in pairs (64 bands) and divided by 20 (about
unit scale). The frames are plain (local, like every ``rich`` frame): the per-window band-mean
subtraction is part of the network's input step (:mod:`ser_batch.models.sequence`), so a window's
frames are the same in any block size and inside a long call as alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ser_batch.config import FeatureConfig

#: Adjacent mel bands averaged into one band of the network's frames.
BAND_POOL = 2
#: dB divided by this: values of about unit scale.
DB_SCALE = 20.0


def n_bands(config: FeatureConfig) -> int:
    """Bands of the network frames: ``n_mels // 2`` (64 by default)."""
    return config.n_mels // BAND_POOL


def mel_frames(rich_frames: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """The network frames of ``rich`` frames.

    Parameters
    ----------
    rich_frames : np.ndarray [shape=(t, 199)], float32, columns of
        :func:`ser_batch.features.rich.rich_segment_frames` (mel in dB)

    Returns
    -------
    np.ndarray [shape=(t, n_mels // 2)], float32, mean dB of each band pair / 20
    """
    from ser_batch.features.fast import mel_columns

    mel = np.asarray(rich_frames[:, mel_columns(config)], dtype=np.float32)
    stop = n_bands(config) * BAND_POOL
    # The mean of each band pair as numpy's mean over a short last axis makes it (the values added
    # in order, then divided by the count), but by strided adds straight from the frame rows: the
    # mel columns are not contiguous in them, so the reshape for ``mean`` copied them first.
    pooled = np.add(mel[:, 0:stop:BAND_POOL], mel[:, 1:stop:BAND_POOL]) if BAND_POOL > 1 else mel[:, :stop].copy()
    for j in range(2, BAND_POOL):
        pooled += mel[:, j:stop:BAND_POOL]
    np.true_divide(pooled, np.intp(BAND_POOL), out=pooled, casting="unsafe")
    pooled /= np.float32(DB_SCALE)
    return pooled


def window_frames(frames: np.ndarray, starts: np.ndarray, ends: np.ndarray, *, width: int) -> np.ndarray:
    """The frames of each window, stacked: window ``i`` is ``frames[starts[i]:ends[i]]``, zeros past
    its end (a last window cut at the end of the signal is shorter than ``width``).

    Parameters
    ----------
    frames : np.ndarray [shape=(m, b)], float32
    starts, ends : np.ndarray [shape=(k,)], int, ``0 <= start < end <= m``, ``end - start <= width``

    Returns
    -------
    np.ndarray [shape=(k, width, b)], float32
    """
    starts, ends = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
    out = np.zeros((len(starts), width, frames.shape[1]), dtype=np.float32)
    if not len(starts):
        return out
    full = (ends - starts) == width
    if full.any():
        # Every full window is a (width, b) view of the frames: one gather of rows, no index array.
        frames = np.asarray(frames, dtype=np.float32)
        step, col = frames.strides
        windows = np.lib.stride_tricks.as_strided(frames, shape=(len(frames) - width + 1, width, frames.shape[1]),
                                                  strides=(step, step, col), writeable=False)
        if full.all():
            return windows[starts]
        out[full] = windows[starts[full]]
    for i in np.flatnonzero(~full):
        out[i, : ends[i] - starts[i]] = frames[starts[i] : ends[i]]
    return out



# --------------------------------------------------------------- per-frame normalisation


def sliding_max(values: np.ndarray, context: int) -> np.ndarray:
    """The maximum of ``values[t - context : t + context + 1]`` for every ``t`` (the window cut at
    the array's ends).

    Parameters
    ----------
    values : np.ndarray [shape=(t,)], float
    context : int >= 0, values each side

    Returns
    -------
    np.ndarray [shape=(t,)], the dtype of ``values``
    """
    values = np.asarray(values)
    if context <= 0 or len(values) <= 1:
        return values.copy()
    padded = np.full(len(values) + 2 * context, -np.inf, dtype=values.dtype)
    padded[context : context + len(values)] = values
    # A running maximum by doubling spans (1, 2, 4, ... values): log2(2 * context + 1) passes of
    # the whole array instead of one pass per value of the window.
    span, out = 1, padded.copy()
    width = 2 * context + 1
    while span * 2 <= width:
        np.maximum(out[:-span], out[span:], out=out[:-span])
        span *= 2
    rest = width - span
    result = out[: len(values)].copy()
    if rest:
        np.maximum(result, out[rest : rest + len(values)], out=result)
    return result


def sliding_mean(values: np.ndarray, context: int) -> np.ndarray:
    """The mean over ``values[t - context : t + context + 1]`` (rows, the window cut at the array's
    ends) of every row ``t``, per column, from float64 running sums.

    Parameters
    ----------
    values : np.ndarray [shape=(t, b)], float

    Returns
    -------
    np.ndarray [shape=(t, b)], float64
    """
    n = len(values)
    sums = np.zeros((n + 1, values.shape[1]))
    np.cumsum(values, axis=0, dtype=np.float64, out=sums[1:])
    index = np.arange(n)
    hi, lo = np.minimum(index + context + 1, n), np.maximum(index - context, 0)
    return (sums[hi] - sums[lo]) / (hi - lo)[:, None]


def normalize_frames(frames: np.ndarray, *, context: int, floor: float) -> np.ndarray:
    """The network's per-frame normalisation of consecutive log-mel frames (:func:`mel_frames`).

    1. A relative floor (``floor`` > 0): every value is raised to at least the loudest value of
       the frames within ``context`` of its frame, minus ``floor`` (in the frames' units: dB / 20).
       Background and line noise far below the speech stop mattering, whatever their level.
    2. Each band's mean over the frames within ``context`` subtracted: level and the channel's
       colouring (microphone, codec, room) are removed, the sliding counterpart of cepstral mean
       normalisation.

    Frame ``t``'s result depends only on frames ``t - 2 * context .. t + 2 * context``, and the
    windows are cut at the ends of ``frames``: given the frames of a whole stream it is the
    stream's normalisation; given a stretch with ``2 * context`` frames of the stream on each side
    of the frames wanted (or the stream's own end), it is the same numbers for those frames.

    Parameters
    ----------
    frames : np.ndarray [shape=(t, b)], float32
    context : int >= 0, frames each side (31: +-1 s of 32 ms frames)
    floor : float >= 0, 0 for no floor

    Returns
    -------
    np.ndarray [shape=(t, b)], float32
    """
    x = np.asarray(frames, dtype=np.float32)
    if not len(x):
        return x.copy()
    if floor > 0:
        level = sliding_max(x.max(axis=1), context) - np.float32(floor)
        x = np.maximum(x, level[:, None])
    return (x - sliding_mean(x, context)).astype(np.float32)


@dataclass(frozen=True)
class StreamFrames:
    """A stretch of one stream's log-mel frames and the windows over it that a frame network scores.

    Attributes
    ----------
    frames : np.ndarray [shape=(m, b)], float32, the stream's frames ``first .. first + m - 1``
        (:func:`mel_frames`); they reach ``reach`` frames (the network's, see
        :func:`ser_batch.models.sequence`) past the windows on each side, or the stream's own end
    first : int, the stream's frame number of ``frames[0]``
    at_end : bool, whether ``frames`` end where the stream ends (zeros follow, not more frames)
    starts, ends : np.ndarray [shape=(k,)], int, the windows' frames ``[start, end)`` (the stream's numbering)
    speech : np.ndarray [shape=(m,)], bool, frames judged speech (:mod:`ser_batch.features.speech`);
        only the frames inside some window are read
    """

    frames: np.ndarray
    first: int
    at_end: bool
    starts: np.ndarray
    ends: np.ndarray
    speech: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    @classmethod
    def whole(cls, frames: np.ndarray, speech: np.ndarray | None, starts: np.ndarray, ends: np.ndarray
              ) -> "StreamFrames":
        """A whole stream's frames (a stored row): from frame 0 to the stream's end."""
        speech = np.zeros(len(frames), dtype=bool) if speech is None else np.asarray(speech, dtype=bool)
        return cls(np.asarray(frames, dtype=np.float32), 0, True, np.asarray(starts, dtype=np.int64),
                   np.asarray(ends, dtype=np.int64), speech)

"""Log-mel frames of the frame-sequence model (``cnn``), taken from the ``rich`` recipe's frames.

No second STFT: the ``rich`` frames already hold the 128 mel bands in dB with the fixed floor
``features.db_floor``; adjacent bands are averaged in pairs (64 bands) and divided by 20 (about
unit scale). The frames are plain (local, like every ``rich`` frame): the per-window band-mean
subtraction is part of the network's input step (:mod:`ser_batch.models.sequence`), so a window's
frames are the same in any block size and inside a long call as alone.
"""

from __future__ import annotations

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


"""Sliding-window features of signals of any length: local, streamed, pooled in O(frames).

A window's vector depends only on the samples of the analysis frames inside it (frames
are centred every ``hop_length`` samples, ``n_fft`` long): there is no file-wide reference
(the dB scales have a fixed floor, chroma has no tuning estimate), so a window scored inside
an hour-long call, in any block size, equals the same stretch scored alone.

The grid is global to a stream: window ``k`` covers frames ``[k * hop, k * hop + window)``
(1.5 s every 0.5 s by default); windows start until one reaches the last frame, and that
last window is cut at the end of the signal, so a signal shorter than one window gives one
short window.

Frames are computed block by block (:func:`stream_windows`), pooled from per-hop partial sums
(one pass over the frames, whatever the number of windows), and each window also gets a
``speech_ratio``: the fraction of its frames whose level is ``features.speech_margin_db`` above a
noise floor, the 10th percentile of the frame levels within ``NOISE_CONTEXT_S`` of the
frame's window hop (silence below ``SILENCE_DB`` left out), and above that silence level.
That floor needs only frames near the window, so it is also the same in any block size.
That is the ``energy`` detector; ``features.speech_detector = "bands"`` (the default) judges
frames by the band-SNR detector of :mod:`ser_batch.features.speech` instead (robust to steady
noise, 110 frames of context each side), which is local too (:func:`speech_context` says how
many frames a stream keeps for it).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from ser_batch.audio.decode import SampleBuffer
from ser_batch.config import FeatureConfig
from ser_batch.errors import FeatureError
from ser_batch.features import speech
from ser_batch.features.melframes import StreamFrames
from ser_batch.features.rich import PITCH_RATE, VOICED_HI_HZ, VOICED_LO_HZ

#: Seconds of frame levels each side of a window hop used to estimate its noise floor.
NOISE_CONTEXT_S = 2.5
#: Percentile of frame levels taken as the noise floor.
NOISE_PERCENTILE = 10.0
#: Frames below this level (dB re full scale) are silence: never speech, and left out of the
#: noise floor (a clip's faded edges would otherwise pull the floor under the line noise).
SILENCE_DB = -75.0
#: Frames computed per block: bounds memory (~4 MB of spectrum per 1024 frames).
BLOCK_FRAMES = 2048


@dataclass(frozen=True)
class WindowGrid:
    """Window and hop lengths in frames, and the frame hop in seconds."""

    window: int
    hop: int
    frame_s: float

    @classmethod
    def of(cls, config: FeatureConfig, sample_rate: int) -> "WindowGrid":
        """``features.window_s`` / ``window_hop_s`` rounded to frames (at least 2 and 1)."""
        frame_s = config.hop_length / sample_rate
        window_s = config.window_s or 1.5
        return cls(max(2, int(round(window_s / frame_s))), max(1, int(round(config.window_hop_s / frame_s))),
                   frame_s)

    def n_windows(self, n_frames: int) -> int:
        """Windows over ``n_frames`` frames: they start every ``hop`` until one reaches the end."""
        if n_frames <= self.window:
            return 1
        return 1 + -(-(n_frames - self.window) // self.hop)

    def bounds(self, first: int, stop: int, n_frames: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Frame ranges ``[start, end)`` of windows ``first .. stop-1`` (ends cut at ``n_frames``)."""
        starts = np.arange(first, stop, dtype=np.int64) * self.hop
        ends = starts + self.window
        if n_frames is not None:
            ends = np.minimum(ends, n_frames)
        return starts, ends

    @property
    def context(self) -> int:
        """Frames of level needed each side of a window hop for its noise floor."""
        return int(round(NOISE_CONTEXT_S / self.frame_s))

    @property
    def hop_s(self) -> float:
        """Seconds between window starts: ``hop`` frames (0.512 s by default, not ``window_hop_s``)."""
        return self.hop * self.frame_s


def n_frames_of(n_samples: int, hop_length: int) -> int:
    """Frames of a centred STFT over ``n_samples`` samples (as ``librosa.stft``)."""
    return 1 + n_samples // hop_length


def window_ranges(n_samples: int, *, config: FeatureConfig, sample_rate: int, range_s: float
                  ) -> list[tuple[int, int | None]]:
    """The windows of a stream of ``n_samples`` samples (at ``sample_rate``), as consecutive ranges
    ``(first, stop)`` of about ``range_s`` seconds of window hops each, for :func:`stream_windows`;
    the last range runs to the end (``stop`` None) and holds up to one and a half ranges' windows.

    The same arithmetic as the stream's own (:class:`WindowGrid`, :func:`n_frames_of`), so every
    range starts at a window the stream has: none past the end, whatever the length.
    """
    grid = WindowGrid.of(config, sample_rate)
    total = grid.n_windows(n_frames_of(n_samples, config.hop_length))
    per_range = max(1, round(range_s / grid.hop_s))
    count = max(1, round(total / per_range))
    return [(j * per_range, None if j == count - 1 else (j + 1) * per_range) for j in range(count)]


# --------------------------------------------------------------------------- pooling


def pool_windows(frames: np.ndarray, f0: np.ndarray, starts: np.ndarray, ends: np.ndarray, *,
                 frame_s: float) -> np.ndarray:
    """Pool frame rows ``[starts[i], ends[i])`` into the ``rich`` vector of each window.

    Mean, standard deviation, mean absolute frame-to-frame change and standard deviation of
    that change of every column, then 9 pitch statistics (see :func:`pitch_stats`). Windows of
    a regular grid (same length, starts a fixed hop apart) are summed from per-hop partial sums:
    O(frames + windows), not O(frames x windows), and each window's sums depend on its own frames
    only, so they are the same whatever else is in ``frames``.

    Parameters
    ----------
    frames : np.ndarray [shape=(m, c)], float32
    f0 : np.ndarray [shape=(m,)], Hz
    starts, ends : np.ndarray [shape=(k,)], int, ``0 <= start < end <= m``
    frame_s : float, seconds per frame (for the duration value)

    Returns
    -------
    np.ndarray [shape=(k, 4 * c + 9)], float32
    """
    starts, ends = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
    if len(starts) and (np.any(ends <= starts) or starts.min() < 0 or ends.max() > len(frames)):
        raise FeatureError("cannot pool an empty or out-of-range window of frames")
    n = (ends - starts)[:, None].astype(np.float64)
    last = ends - 1  # a window of frames a..b-1 has the changes a..b-2
    sx, sxx, sd, sdd = _window_sums(frames, starts, ends)
    c = frames.shape[1]
    out = np.empty((len(starts), 4 * c + 9), dtype=np.float32)  # written in place: no float64 copy of it all
    mean = np.divide(sx, n, out=sx)
    out[:, :c] = mean
    var = np.divide(sxx, n, out=sxx)
    var -= mean * mean
    out[:, c : 2 * c] = np.sqrt(np.maximum(var, 0.0, out=var), out=var)
    nd = (last - starts)[:, None].astype(np.float64)
    has = nd > 0
    safe = np.where(has, nd, 1.0)
    none = ~has[:, 0]
    if len(frames) > 1:
        dabs, d2 = np.divide(sd, safe, out=sd), np.divide(sdd, safe, out=sdd)
        dabs[none] = d2[none] = 0.0
    else:
        dabs, d2 = np.zeros_like(mean), np.zeros_like(mean)
    out[:, 2 * c : 3 * c] = dabs
    dmean = frames[last].astype(np.float64)
    dmean -= frames[starts]  # the changes telescope
    dmean /= safe
    dmean[none] = 0.0
    dstd = np.subtract(d2, dmean * dmean, out=d2)
    dstd = np.sqrt(np.maximum(dstd, 0.0, out=dstd), out=dstd)
    dstd[none] = 0.0
    out[:, 3 * c : 4 * c] = dstd
    out[:, 4 * c :] = pitch_stats(f0, starts, ends, frame_s=frame_s)
    return out


#: Hop-long groups of frame rows whose float64 values :func:`_window_sums` makes at a time: the
#: temporaries of a few groups stay in the CPU cache (those of a whole block are megabytes).
_GROUPS_PER_CHUNK = 8


def _window_sums(frames: np.ndarray, starts: np.ndarray, ends: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sums, in float64, of ``x``, ``x * x`` over rows ``[starts[i], ends[i])`` of the frames ``x``
    ``(m, c)``, and of ``|d|``, ``d * d`` over rows ``[starts[i], ends[i] - 1)`` of their changes
    ``d = np.diff(x, axis=0)``: four ``(k, c)`` arrays.

    The windows of a regular grid (the common length, starts one hop apart) are sums of
    ``q`` consecutive hop-long groups minus the few rows past their end; the others (a last,
    shorter window; irregular windows) are summed directly. The groups' float64 values are made
    a few groups at a time from the float32 frames (never the whole block's ``x``, ``x * x``,
    ``d``, ``|d|``, ``d * d`` at once), in the same order of additions as summing whole float64
    arrays: the sums are the same to the bit."""
    k, c = len(starts), frames.shape[1]
    out = tuple(np.empty((k, c)) for _ in range(4))
    lengths = ends - starts
    regular = np.zeros(k, dtype=bool)
    if k >= 2:
        hop, width = int(starts[1] - starts[0]), int(lengths[0])
        regular = (lengths == width) & (starts - starts[0] == np.arange(k) * hop)
        regular &= np.cumprod(regular).astype(bool)  # a regular run from the first window
    count = int(regular.sum())
    if count >= 2 and hop > 0:
        first = int(starts[0])
        q_x, q_d = -(-width // hop), -(-(width - 1) // hop)  # groups per window of rows, of changes
        groups = count - 1 + q_x
        # Rows of a window's last group past its end: offsets [o_x, hop) of group i + q_x - 1 of
        # x for window i, offsets [o_d, hop) of group i + q_d - 1 of d.
        o_x, o_d = width - (q_x - 1) * hop, width - 1 - (q_d - 1) * hop
        tail = min(o_x, o_d) if q_d else o_x
        sums, tail_x, tail_d = _group_sums(frames, first, hop, groups, tail)
        for o, s, q, w in zip(out, sums, (q_x, q_x, q_d, q_d), (width, width, width - 1, width - 1)):
            total = s[:count].copy() if w > 0 else np.zeros((count, c))  # windows of one frame: no change
            for j in range(1, q):
                total += s[j : j + count]
            o[:count] = total
        for offset in range(o_x, hop):  # in the order of the rows, as summing them would
            x = tail_x[q_x - 1 : q_x - 1 + count, offset - tail]
            out[0][:count] -= x
            out[1][:count] -= x * x
        if q_d:
            for offset in range(o_d, hop):
                d = tail_d[q_d - 1 : q_d - 1 + count, offset - tail]
                out[2][:count] -= np.abs(d)
                out[3][:count] -= d * d
    else:
        count = 0
    for i in range(count, k):
        x = frames[starts[i] : ends[i]].astype(np.float64)
        d = np.diff(x, axis=0)
        out[0][i], out[1][i] = x.sum(axis=0), (x * x).sum(axis=0)
        out[2][i], out[3][i] = np.abs(d).sum(axis=0), (d * d).sum(axis=0)
    return out


def _group_sums(frames: np.ndarray, first: int, hop: int, groups: int, tail: int
                ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray, np.ndarray]:
    """Per hop-long group ``g`` of rows ``[first + g * hop, first + (g + 1) * hop)``: the sums
    of ``x``, ``x * x``, ``|d|``, ``d * d`` over its rows, in float64, rows past the frames (of
    ``x``; past the last change, of ``d``) adding zeros, ``(groups, c)`` each; and the float64
    rows of ``x`` and of ``d`` at offsets ``[tail, hop)`` of each group, ``(groups, hop - tail, c)``
    (the rows past a window's end, which its sums must lose)."""
    m, c = frames.shape
    out = tuple(np.empty((groups, c)) for _ in range(4))
    tail_x, tail_d = np.empty((groups, hop - tail, c)), np.empty((groups, hop - tail, c))
    chunk = min(groups, _GROUPS_PER_CHUNK) * hop
    x_buf, d_buf, t_buf = np.empty((chunk + 1, c)), np.empty((chunk, c)), np.empty((chunk, c))
    for g0 in range(0, groups, _GROUPS_PER_CHUNK):
        g1 = min(groups, g0 + _GROUPS_PER_CHUNK)
        a, rows = first + g0 * hop, (g1 - g0) * hop
        have = max(0, min(rows + 1, m - a))
        x, d, t = x_buf[: rows + 1], d_buf[:rows], t_buf[:rows]
        x[:have] = frames[a : a + have]
        x[have:] = 0.0
        np.subtract(x[1:], x[:-1], out=d)
        d[max(0, have - 1):] = 0.0  # no change past the last frame
        x = x[:rows]
        shape = (g1 - g0, hop, c)
        tail_x[g0:g1] = x.reshape(shape)[:, tail:]
        tail_d[g0:g1] = d.reshape(shape)[:, tail:]
        x.reshape(shape).sum(axis=1, out=out[0][g0:g1])
        np.multiply(x, x, out=t)
        t.reshape(shape).sum(axis=1, out=out[1][g0:g1])
        np.abs(d, out=t)
        t.reshape(shape).sum(axis=1, out=out[2][g0:g1])
        np.multiply(d, d, out=t)
        t.reshape(shape).sum(axis=1, out=out[3][g0:g1])
    return out, tail_x, tail_d


def pitch_stats(f0: np.ndarray, starts: np.ndarray, ends: np.ndarray, *, frame_s: float) -> np.ndarray:
    """9 pitch statistics per window: of log2 f0 over its voiced frames, mean, std, 10/50/90th
    percentiles, 90-10 range and mean absolute change between successive voiced frames (all 0
    with fewer than 3 voiced frames), then the voiced fraction (of the frames whose pitch was
    tracked, ``f0 >= 0``) and the duration in seconds.

    Returns
    -------
    np.ndarray [shape=(k, 9)], float64
    """
    k = len(starts)
    out = np.zeros((k, 9))
    if k == 0:
        return out
    lengths = ends - starts
    width = int(lengths.max())
    index = starts[:, None] + np.arange(width)[None, :]
    inside = index < ends[:, None]
    track = np.asarray(f0, dtype=np.float64)[np.minimum(index, len(f0) - 1)]
    tracked = (inside & (track >= 0)).sum(axis=1)  # frames whose pitch was tracked (f0 >= 0)
    voiced = inside & (track > VOICED_LO_HZ) & (track < VOICED_HI_HZ)
    count = voiced.sum(axis=1)
    log_f0 = np.where(voiced, np.log2(np.where(voiced, track, 1.0)), np.nan)
    enough = count >= 3
    safe = np.maximum(count, 1)
    filled = np.where(voiced, log_f0, 0.0)
    mean = filled.sum(axis=1) / safe
    var = np.where(voiced, (log_f0 - mean[:, None]) ** 2, 0.0).sum(axis=1) / safe
    ordered = np.sort(log_f0, axis=1)  # NaN (unvoiced) last
    p10, p50, p90 = _sorted_percentiles(ordered, count, (0.1, 0.5, 0.9)).T
    # Change between each voiced frame and the previous voiced frame of the window.
    position = np.where(voiced, np.arange(width)[None, :], -1)
    previous = np.maximum.accumulate(position, axis=1)
    previous = np.concatenate([np.full((k, 1), -1), previous[:, :-1]], axis=1)
    has_prev = voiced & (previous >= 0)
    prev_value = np.take_along_axis(filled, np.maximum(previous, 0), axis=1)
    changes = np.where(has_prev, np.abs(filled - prev_value), 0.0).sum(axis=1)
    dabs = changes / np.maximum(count - 1, 1)
    stats = np.column_stack([mean, np.sqrt(var), p10, p50, p90, p90 - p10, dabs])
    out[:, :7] = np.where(enough[:, None], stats, 0.0)
    out[:, 7] = count / np.maximum(tracked, 1)
    out[:, 8] = lengths * frame_s
    return out


def _sorted_percentile(ordered: np.ndarray, count: np.ndarray, q: float) -> np.ndarray:
    """numpy's linear percentile of the first ``count[i]`` values of each sorted row."""
    return _sorted_percentiles(ordered, count, (q,))[:, 0]


def _sorted_percentiles(ordered: np.ndarray, count: np.ndarray, qs: tuple[float, ...]) -> np.ndarray:
    """:func:`_sorted_percentile` for each of ``qs`` at once: ``(k, len(qs))`` (one pass of the
    same arithmetic, not one per percentile: these arrays are small, the calls are what cost)."""
    last = np.maximum(count - 1, 0)[:, None]
    pos = np.asarray(qs, dtype=np.float64)[None, :] * last
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, last)
    a, b = np.take_along_axis(ordered, lo, axis=1), np.take_along_axis(ordered, hi, axis=1)
    with np.errstate(invalid="ignore"):  # rows without values hold inf or NaN; masked below
        value = a + (b - a) * (pos - lo)
    return np.where(count[:, None] > 0, value, 0.0)


# ---------------------------------------------------------------------- speech ratio


def speech_frames(level_db: np.ndarray, first: int, *, grid: WindowGrid, margin_db: float,
                  n_frames: int | None, lo: int, hi: int) -> np.ndarray:
    """Which frames ``[lo, hi)`` are speech, by an energy detector with a local noise floor.

    Parameters
    ----------
    level_db : np.ndarray [shape=(m,)], frame levels (dB re full scale) of frames
        ``first .. first + m - 1``; must cover ``[hop_start(lo) - context, hop_end(hi) + context)``
        clipped to the signal
    first : int, absolute frame index of ``level_db[0]``
    lo, hi : int, absolute frame range to judge
    n_frames : total frames of the signal, when known (clips the context at the end)

    Returns
    -------
    np.ndarray [shape=(hi - lo,)], bool
    """
    hop, context = grid.hop, grid.context
    groups = np.arange(lo // hop, (hi - 1) // hop + 1)
    g_lo = np.maximum(groups * hop - context, 0)
    g_hi = groups * hop + hop + context
    if n_frames is not None:
        g_hi = np.minimum(g_hi, n_frames)
    g_hi = np.minimum(g_hi, first + len(level_db))
    if g_lo.min() < first:
        raise FeatureError("frame levels do not cover the noise context")
    width = int((g_hi - g_lo).max())
    index = (g_lo - first)[:, None] + np.arange(width)[None, :]
    values = level_db[np.minimum(index, len(level_db) - 1)]
    valid = (index < (g_hi - first)[:, None]) & (values > SILENCE_DB)
    values = np.where(valid, values, np.inf)
    count = valid.sum(axis=1)
    ordered = np.sort(values, axis=1)
    floor = np.where(count > 0, _sorted_percentile(ordered, count, NOISE_PERCENTILE / 100.0), SILENCE_DB)
    frame_floor = np.repeat(floor, hop)[(lo - groups[0] * hop):(lo - groups[0] * hop) + (hi - lo)]
    level = level_db[lo - first : hi - first]
    return (level > frame_floor + margin_db) & (level > SILENCE_DB)


def speech_context(grid: WindowGrid, config: FeatureConfig) -> int:
    """Frames of frame values the speech detector of ``features.speech_detector`` needs each
    side of a judged range: ``grid.context`` for ``energy``, more for ``bands``."""
    if config.speech_detector == "bands":
        return speech.needed_context(grid.hop, _band_params(grid))
    return grid.context


def judge_speech(frames: np.ndarray, first: int, *, grid: WindowGrid, config: FeatureConfig,
                 n_frames: int | None, lo: int, hi: int) -> np.ndarray:
    """Which frames ``[lo, hi)`` are speech, by the detector ``features.speech_detector`` names.

    Parameters
    ----------
    frames : np.ndarray [shape=(m, 199)], ``rich`` frame rows of frames ``first .. first + m - 1``;
        must cover :func:`speech_context` frames each side of ``[lo, hi)`` clipped to the signal
    n_frames : total frames of the signal, when known (clips the context at the end)

    Returns
    -------
    np.ndarray [shape=(hi - lo,)], bool
    """
    level, mel, flatness = _speech_columns(config)
    if config.speech_detector != "bands":
        return speech_frames(frames[:, level], first, grid=grid, margin_db=config.speech_margin_db,
                             n_frames=n_frames, lo=lo, hi=hi)
    return speech.speech_frames(frames[:, level], first, hop=grid.hop, margin_db=config.speech_margin_db,
                                n_frames=n_frames, lo=lo, hi=hi, mel_db=frames[:, mel:mel + config.n_mels],
                                flatness_log10=frames[:, flatness], params=_band_params(grid))


@functools.lru_cache(maxsize=64)
def _speech_columns(config: FeatureConfig) -> tuple[int, int, int]:
    """Columns of the ``rich`` frames the speech detectors read: ``rms_db``, ``mel_db_000`` (the
    first of the ``n_mels`` mel columns) and ``flatness_log10``.

    Cached per config (a frozen, hashable dataclass; equal configs share the entry): the names
    are a list of ~200 strings built in Python, which cost more than the ``energy`` detector
    itself on every batch. A tuple of ints, so no caller can change the cached value."""
    from ser_batch.features.names import frame_column_names, rich_frame_names
    from ser_batch.features.rich import level_column

    names = rich_frame_names(frame_column_names(config))
    return level_column(config), names.index("mel_db_000"), names.index("flatness_log10")


@functools.lru_cache(maxsize=64)
def _band_params(grid: WindowGrid) -> speech.VadParams:
    """The ``bands`` detector's parameters: its defaults, with this module's noise context
    (``NOISE_CONTEXT_S`` in frames), level-floor percentile and silence level. Cached per grid
    (both are frozen: the cached value cannot be changed by a caller)."""
    return speech.VadParams(context=grid.context, noise_percentile=NOISE_PERCENTILE, silence_db=SILENCE_DB)


# ------------------------------------------------------------------------- streaming


@dataclass(frozen=True)
class WindowBatch:
    """Consecutive windows of one stream.

    Attributes
    ----------
    index : np.ndarray [shape=(k,)], int, window numbers on the stream's grid
    start_s, end_s : np.ndarray [shape=(k,)], float64, seconds from the start of the stream
        (window frames' centres, so that windows tile the signal: end = start + frames * hop)
    vectors : np.ndarray [shape=(k, n_features)], float32
    speech_ratio : np.ndarray [shape=(k,)], float32
    speech_frames : int, frames judged speech among the frames this batch owns (each frame is
        owned by exactly one batch of a stream, for speech-duration totals)
    frames : StreamFrames or None: the stretch of the stream's log-mel frames
        (:func:`ser_batch.features.melframes.mel_frames`) that the batch's windows need, reaching
        ``frame_reach`` frames past them on each side (or the stream's ends), with the windows'
        frame ranges and the frames judged speech; only when asked (a bundle with a ``cnn`` model)
    embeddings : np.ndarray [shape=(k, d)], float32, or None: each window's embedding by a pretrained
        encoder of its audio (:mod:`ser_batch.features.ge2e`); only when asked (a ``ge2e`` model)
    """

    index: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    vectors: np.ndarray
    speech_ratio: np.ndarray
    speech_frames: int
    frames: StreamFrames | None = None
    embeddings: np.ndarray | None = None

    def without_inputs(self) -> "WindowBatch":
        """The batch without its vectors and frames (once scored: memory stays flat on long files)."""
        return dataclasses.replace(self, vectors=self.vectors[:, :0], frames=None, embeddings=None)


def stream_windows(blocks: Iterable[np.ndarray], *, sample_rate: int, config: FeatureConfig,
                   first_sample: int = 0, windows: tuple[int, int | None] = (0, None),
                   frame_reach: int | None = None, vectors: bool = True,
                   embed: Callable[[list[np.ndarray]], np.ndarray] | None = None) -> Iterator[WindowBatch]:
    """Window features of a stream of consecutive mono blocks, in window order.

    Parameters
    ----------
    blocks : iterable of np.ndarray [shape=(n_i,)], float32, consecutive samples at ``sample_rate``
        starting at sample ``first_sample`` of the signal, which must be
        :func:`first_sample_needed` of the first window (or earlier: the excess is skipped)
    windows : ``(first, stop)`` window numbers to produce (``stop=None``: to the end)
    frame_reach : also give the log-mel frames of the windows and this many frames each side
        (:attr:`WindowBatch.frames`; a frame network's ``reach``); None: no frames
    vectors : compute the windows' ``rich`` vectors; False when no model reads them (a frame network
        alone): only the frame columns the speech detector and the log-mel frames need are computed
        (:func:`ser_batch.features.rich.lean_segment_frames`, no pitch), and ``vectors`` is ``(k, 0)``
    embed : a function of the windows' audio (a list of each window's samples,
        :func:`ser_batch.features.ge2e.window_samples`) giving their embeddings
        (:attr:`WindowBatch.embeddings`); None: no embeddings

    Yields
    ------
    WindowBatch, about ``BLOCK_FRAMES`` frames' worth at a time
    """
    from ser_batch.features.rich import lean_segment_frames, rich_segment_frames

    n_fft, hop_length = config.n_fft, config.hop_length
    half = n_fft // 2
    grid = WindowGrid.of(config, sample_rate)
    # Frames kept and awaited each side: the speech detector's context, or the frame network's reach.
    context = max(speech_context(grid, config), frame_reach or 0)
    next_window, stop_window = windows
    first_frame = max(0, next_window * grid.hop - context)
    needed = max(0, first_frame * hop_length - half)
    if first_sample > needed:
        raise FeatureError(f"the stream starts at sample {first_sample}, after sample {needed} its windows need")
    # Signal in the padded domain (index = sample + n_fft/2, as a centred STFT sees it),
    # from the first sample of frame ``first_frame`` on.
    start = first_frame * hop_length
    signal = _Buffer(start, sample_rate, pitch=vectors)
    signal.push(np.zeros(max(0, half - start), dtype=np.float32))  # centred frames see zeros first
    skip = max(0, start - half) - first_sample
    kept = kept_f0 = None  # frame rows [kept_first, frames_done) still needed by later windows
    kept_first = frames_done = first_frame
    n_frames = None
    for block in _with_end(blocks):
        if block is not None:
            block = np.asarray(block, dtype=np.float32)
            if skip:
                drop = min(skip, len(block))
                block, skip = block[drop:], skip - drop
            signal.push(block)
            if signal.end() - frames_done * hop_length < BLOCK_FRAMES * hop_length + n_fft:
                continue
        else:
            n_frames = n_frames_of(signal.end() - half, hop_length)
            signal.push(np.zeros(half + n_fft, dtype=np.float32), last=True)
        stop_frame = signal.frames_available(hop_length, n_fft)
        if n_frames is not None:
            stop_frame = min(stop_frame, n_frames)
        if stop_frame > frames_done:
            seg, seg_low = signal.frame_samples(frames_done, stop_frame, hop_length, n_fft)
            if vectors:
                rows, f0 = rich_segment_frames(seg, seg_low, sample_rate, config=config, first_frame=frames_done)
            else:
                rows = lean_segment_frames(seg, sample_rate, config=config)
                f0 = np.zeros(len(rows), dtype=np.float32)
            kept = rows if kept is None else np.concatenate([kept, rows])
            kept_f0 = f0 if kept_f0 is None else np.concatenate([kept_f0, f0])
            frames_done = stop_frame
            # (Windows embedded from their audio keep it until they are given out.)
            keep = frames_done * hop_length
            if embed is not None:
                keep = min(keep, next_window * grid.hop * hop_length + half)
            signal.drop_before(keep)
        # Windows whose frames and noise context are all computed (or the signal ended).
        last = grid.n_windows(n_frames) if n_frames is not None else None
        if stop_window is not None:
            last = stop_window if last is None else min(last, stop_window)
        stop = next_window
        while last is None or stop < last:
            if n_frames is None and stop * grid.hop + grid.window + grid.hop + context > frames_done:
                break
            stop += 1
        if stop > next_window and kept is not None:
            starts, ends = grid.bounds(next_window, stop, n_frames)
            at_end = n_frames is not None and stop == grid.n_windows(n_frames)
            own_hi = n_frames if at_end else stop * grid.hop  # frames [starts[0], own_hi) are this batch's
            lo, hi = int(starts[0]), int(max(ends.max(), own_hi))
            flags = judge_speech(kept, kept_first, grid=grid, config=config, n_frames=n_frames, lo=lo, hi=hi)
            csum = np.concatenate([[0], np.cumsum(flags)])
            yield WindowBatch(
                index=np.arange(next_window, stop),
                start_s=starts * grid.frame_s,
                end_s=ends * grid.frame_s,
                vectors=pool_windows(kept, kept_f0, starts - kept_first, ends - kept_first, frame_s=grid.frame_s)
                if vectors else np.zeros((len(starts), 0), dtype=np.float32),
                speech_ratio=((csum[ends - lo] - csum[starts - lo]) / (ends - starts)).astype(np.float32),
                speech_frames=int(csum[own_hi - lo]),
                frames=None if frame_reach is None else _stream_frames(
                    kept, kept_first, starts, ends, reach=frame_reach, done=frames_done, n_frames=n_frames,
                    flags=flags, flags_first=lo, config=config),
                embeddings=None if embed is None else embed(signal.window_samples(starts, ends, hop_length, half)),
            )
            next_window = stop
            cut = max(0, next_window * grid.hop - context) - kept_first
            if cut > 0:
                kept, kept_f0, kept_first = kept[cut:], kept_f0[cut:], kept_first + cut
        if block is None or (last is not None and next_window >= last):
            return


def signal_frames(y: np.ndarray, sample_rate: int, *, config: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """Local ``rich`` frames and f0 of a whole signal in memory (centred frames, zeros outside),
    as :func:`stream_windows` computes them block by block.

    Returns
    -------
    frames : np.ndarray [shape=(1 + n // hop_length, 199)], float32
    f0 : np.ndarray [shape=(1 + n // hop_length,)], float32, Hz (0 in near-silent frames)

    Raises
    ------
    FeatureError
        If the signal is not mono, shorter than one analysis frame, or not finite.
    """
    from ser_batch.features.checks import check_signal, one_frame
    from ser_batch.features.rich import rich_segment_frames

    n_fft, hop_length = config.n_fft, config.hop_length
    check_signal(y, sample_rate, min_samples=n_fft, needed_for=one_frame(n_fft, sample_rate))
    signal = _Buffer(0, sample_rate)
    half = n_fft // 2
    signal.push(np.zeros(half, dtype=np.float32))
    signal.push(np.asarray(y, dtype=np.float32))
    signal.push(np.zeros(half + n_fft, dtype=np.float32), last=True)
    n_frames = n_frames_of(y.size, hop_length)
    return rich_segment_frames(*signal.frame_samples(0, n_frames, hop_length, n_fft), sample_rate, config=config)


def _stream_frames(rich: np.ndarray, first: int, starts: np.ndarray, ends: np.ndarray, *, reach: int, done: int,
                   n_frames: int | None, flags: np.ndarray, flags_first: int, config: FeatureConfig) -> StreamFrames:
    """:attr:`WindowBatch.frames` of windows ``[starts, ends)``: the log-mel frames from ``reach`` frames
    before the first window to ``reach`` after the last (cut at the stream's ends) of the ``rich``
    frame rows ``first ..`` (computed up to ``done``), and the speech flags of frames ``flags_first ..``."""
    from ser_batch.features.melframes import mel_frames

    lo = max(first, int(starts.min()) - reach)
    hi = min(done if n_frames is None else min(done, n_frames), int(ends.max()) + reach)
    speech = np.zeros(hi - lo, dtype=bool)
    a, b = max(lo, flags_first), min(hi, flags_first + len(flags))
    speech[a - lo : b - lo] = flags[a - flags_first : b - flags_first]
    return StreamFrames(mel_frames(rich[lo - first : hi - first], config), lo, n_frames is not None and hi == n_frames,
                        starts, ends, speech)


def row_stream(mel: np.ndarray, speech: np.ndarray | None, *, config: FeatureConfig, sample_rate: int
               ) -> StreamFrames:
    """A stored row's log-mel frames (the ``frames`` column) and speech flags (``frame_speech``) as one
    whole stream, with the grid of its window vectors: what :func:`stream_windows` gives for the
    same signal."""
    grid = WindowGrid.of(config, sample_rate)
    starts, ends = grid.bounds(0, grid.n_windows(len(mel)), len(mel))
    return StreamFrames.whole(mel, speech, starts, ends)


def signal_windows(y: np.ndarray, sample_rate: int, *, config: FeatureConfig, frames: bool = False
                   ) -> tuple[np.ndarray, WindowBatch]:
    """Features of a whole signal in memory: its clip vector (pooled over every frame) and its
    windows, equal to :func:`stream_windows` over it in any blocks (``frames``: with the whole
    stream's log-mel frames and speech flags too).

    Returns
    -------
    clip : np.ndarray [shape=(n_features,)], float32
    windows : WindowBatch of every window
    """
    rich, f0 = signal_frames(y, sample_rate, config=config)
    return frame_windows(rich, f0, sample_rate, config=config, frames=frames)


def frame_windows(rich: np.ndarray, f0: np.ndarray, sample_rate: int, *, config: FeatureConfig,
                  frames: bool = False) -> tuple[np.ndarray, WindowBatch]:
    """:func:`signal_windows` of the ``rich`` frames and f0 of :func:`signal_frames`."""
    frames, want_frames = rich, frames
    n_frames = len(frames)
    grid = WindowGrid.of(config, sample_rate)
    starts, ends = grid.bounds(0, grid.n_windows(n_frames), n_frames)
    flags = judge_speech(frames, 0, grid=grid, config=config, n_frames=n_frames, lo=0, hi=n_frames)
    csum = np.concatenate([[0], np.cumsum(flags)])
    stream = None
    if want_frames:
        from ser_batch.features.melframes import mel_frames

        stream = StreamFrames.whole(mel_frames(frames, config), flags, starts, ends)
    windows = WindowBatch(index=np.arange(len(starts)), start_s=starts * grid.frame_s, end_s=ends * grid.frame_s,
                          vectors=pool_windows(frames, f0, starts, ends, frame_s=grid.frame_s),
                          speech_ratio=((csum[ends] - csum[starts]) / (ends - starts)).astype(np.float32),
                          speech_frames=int(csum[-1]), frames=stream)
    clip = pool_windows(frames, f0, np.array([0]), np.array([n_frames]), frame_s=grid.frame_s)[0]
    return clip, windows


def _with_end(blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray | None]:
    yield from blocks
    yield None


class _Buffer:
    """The padded signal from padded index ``start`` on, and (``pitch``) its copy at ``PITCH_RATE``.

    One soxr stream makes the low-rate copy, so it is the same in any block size; frames
    are only handed out where both copies hold all their samples.
    """

    def __init__(self, start: int, sample_rate: int, *, pitch: bool = True) -> None:
        import soxr

        if pitch and sample_rate % PITCH_RATE:
            raise FeatureError(f"the rich recipe needs a sample rate that is a multiple of {PITCH_RATE} Hz, "
                               f"got {sample_rate}")
        self.pitch = pitch
        self.factor = sample_rate // PITCH_RATE if pitch else 1
        self.resampler = soxr.ResampleStream(sample_rate, PITCH_RATE, 1, dtype="float32", quality="HQ") \
            if pitch and self.factor > 1 else None
        self.start = start
        self.data = SampleBuffer()
        self.low = SampleBuffer()  # low[i] is padded index start + factor * i

    def push(self, block: np.ndarray, *, last: bool = False) -> None:
        self.data.push(block)
        if self.pitch:
            self.low.push(self.resampler.resample_chunk(block, last=last) if self.resampler is not None else block)

    def end(self) -> int:
        return self.start + len(self.data)

    def frames_available(self, hop_length: int, n_fft: int) -> int:
        """Frames (absolute index) before which every frame has all its samples here."""
        end = min(self.end(), self.start + len(self.low) * self.factor) if self.pitch else self.end()
        return max(0, (end - n_fft) // hop_length + 1)

    def frame_samples(self, first: int, stop: int, hop_length: int, n_fft: int) -> tuple[np.ndarray, np.ndarray]:
        """Samples of frames ``[first, stop)`` and their low-rate copy (empty without ``pitch``): views,
        valid until the next push."""
        a = first * hop_length - self.start
        b = (stop - 1) * hop_length + n_fft - self.start
        return self.data.view[a:b], self.low.view[a // self.factor : b // self.factor]

    def window_samples(self, starts: np.ndarray, ends: np.ndarray, hop_length: int, half: int) -> list[np.ndarray]:
        """Each window's audio (samples ``[start * hop, end * hop)`` of the signal, padded index
        ``+ half``), copied: as :func:`ser_batch.features.ge2e.window_samples` cuts a whole signal."""
        from ser_batch.features.ge2e import window_samples

        return window_samples(self.data.view, starts, ends, hop_length=hop_length, offset=half - self.start)

    def drop_before(self, index: int) -> None:
        cut = (index - self.start) // self.factor * self.factor
        if cut > 0:
            self.data.drop(cut)
            if self.pitch:
                self.low.drop(cut // self.factor)
            self.start += cut


def first_sample_needed(first_window: int, *, config: FeatureConfig, sample_rate: int,
                        frame_reach: int | None = None) -> int:
    """First signal sample a stream starting at window ``first_window`` needs (>= 0), for its speech
    detector and (``frame_reach``) a frame network's context."""
    grid = WindowGrid.of(config, sample_rate)
    first_frame = max(0, first_window * grid.hop - max(speech_context(grid, config), frame_reach or 0))
    return max(0, first_frame * config.hop_length - config.n_fft // 2)

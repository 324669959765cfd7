"""Local window features: grid arithmetic, O(frames) pooling, speech ratio, streaming = whole."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from ser_batch.config import FeatureConfig
from ser_batch.errors import FeatureError
from ser_batch.features.names import frame_column_names, rich_names
from ser_batch.features.windows import (
    WindowGrid,
    first_sample_needed,
    n_frames_of,
    pitch_stats,
    pool_windows,
    signal_windows,
    speech_frames,
    stream_windows,
)

RICH = FeatureConfig(recipe="rich")
SR = 16_000
GRID = WindowGrid.of(RICH, SR)
#: Samples between window starts (16 frames of 512).
WINDOW_HOP = GRID.hop * RICH.hop_length


def _stream(y: np.ndarray, block: int, *, first_sample: int = 0, windows: tuple[int, int | None] = (0, None)):
    blocks = [y[i : i + block] for i in range(first_sample, len(y), block)]
    batches = list(stream_windows(blocks, sample_rate=SR, config=RICH, first_sample=first_sample, windows=windows))
    cat = lambda name: np.concatenate([getattr(b, name) for b in batches])  # noqa: E731
    return cat("index"), cat("vectors"), cat("speech_ratio"), cat("start_s"), cat("end_s"), \
        sum(b.speech_frames for b in batches)


# ------------------------------------------------------------------------ the grid


def test_grid_of_the_default_config() -> None:
    assert (GRID.window, GRID.hop) == (47, 16)
    assert GRID.frame_s == pytest.approx(0.032)


@pytest.mark.parametrize(("n_frames", "expected"), [(1, 1), (47, 1), (48, 2), (63, 2), (64, 3), (110, 5)])
def test_windows_start_every_hop_until_one_reaches_the_end(n_frames: int, expected: int) -> None:
    assert GRID.n_windows(n_frames) == expected
    starts, ends = GRID.bounds(0, expected, n_frames)
    assert ends[-1] == n_frames  # the last window reaches the last frame ...
    assert (starts[:-1] + GRID.window < n_frames).all()  # ... and is the first to do so
    assert (ends - starts <= GRID.window).all() and (ends > starts).all()
    covered = np.zeros(n_frames, dtype=bool)
    for a, b in zip(starts, ends):
        covered[a:b] = True
    assert covered.all()


def test_last_partial_window_and_a_signal_shorter_than_a_window(make_signal: Callable[..., np.ndarray]) -> None:
    y = make_signal("speech", duration_s=3.5)
    _, windows = signal_windows(y, SR, config=RICH)
    n = n_frames_of(y.size, RICH.hop_length)
    assert windows.end_s[-1] == pytest.approx(n * GRID.frame_s)
    lengths = np.round((windows.end_s - windows.start_s) / GRID.frame_s).astype(int)
    assert (lengths[:-1] == GRID.window).all() and 0 < lengths[-1] <= GRID.window
    short = make_signal("speech", duration_s=0.5)
    clip, windows = signal_windows(short, SR, config=RICH)
    assert len(windows.index) == 1 and windows.start_s[0] == 0.0
    assert clip.shape == windows.vectors[0].shape == (len(rich_names(frame_column_names(RICH))),)
    np.testing.assert_allclose(clip, windows.vectors[0], rtol=1e-6)


def test_too_short_a_signal_is_a_clear_error() -> None:
    with pytest.raises(FeatureError, match=r"too short: 1 ms; at least 128 ms needed"):
        signal_windows(np.zeros(16, dtype=np.float32), SR, config=RICH)


# ------------------------------------------------------------------------- pooling


def _naive(frames: np.ndarray, a: int, b: int) -> np.ndarray:
    window = frames[a:b].astype(np.float64)
    delta = np.diff(window, axis=0) if b - a > 1 else np.zeros((1, window.shape[1]))
    return np.concatenate([window.mean(0), window.std(0), np.abs(delta).mean(0), delta.std(0)])


@pytest.mark.parametrize("grid", ["irregular", "regular"])
def test_pooling_equals_per_window_statistics(grid: str) -> None:
    rng = np.random.default_rng(0)
    frames = (rng.normal(size=(300, 7)) * [1, 10, 100, 1000, 0.01, 5, 2000] + [0, -40, 2000, 0, 1, 3, 8000])
    frames = frames.astype(np.float32)
    f0 = rng.uniform(50, 400, 300).astype(np.float32)
    if grid == "irregular":
        starts, ends = np.array([0, 16, 250, 299, 5]), np.array([47, 63, 300, 300, 6])
    else:  # the grid of a stream: 47 frames every 16 from frame 5, the last one cut at the end
        starts, ends = GRID.bounds(0, 17, None)
        starts, ends = starts + 5, np.minimum(ends + 5, 300)
    pooled = pool_windows(frames, f0, starts, ends, frame_s=0.032)
    for i, (a, b) in enumerate(zip(starts, ends)):
        np.testing.assert_allclose(pooled[i, :28], _naive(frames, a, b), rtol=2e-5, atol=2e-4)
        assert pooled[i, -1] == pytest.approx((b - a) * 0.032)
    with pytest.raises(FeatureError):
        pool_windows(frames, f0, np.array([3]), np.array([3]), frame_s=0.032)


def _sums_of_whole_arrays(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Window sums as pool_windows made them before it summed a few groups at a time: hop-long
    group sums of the whole float64 array (zeros past its end), q of them per window, minus the
    rows past the window's end; other windows summed directly."""
    k, out = len(starts), np.empty((len(starts), values.shape[1]))
    lengths, count = ends - starts, 0
    if k >= 2:
        hop, width = int(starts[1] - starts[0]), int(lengths[0])
        regular = np.cumprod((lengths == width) & (starts - starts[0] == np.arange(k) * hop)).astype(bool)
        count = int(regular.sum()) if hop > 0 else 0
    if count >= 2:
        q = -(-width // hop)
        span = values[starts[0] : starts[0] + (count - 1 + q) * hop]
        span = np.concatenate([span, np.zeros(((count - 1 + q) * hop - len(span), values.shape[1]))])
        sums = span.reshape(count - 1 + q, hop, -1).sum(axis=1)
        total = sums[:count].copy()
        for j in range(1, q):
            total += sums[j : j + count]
        for j in range(width, q * hop):
            total -= span[np.arange(count) * hop + j]
        out[:count] = total
    else:
        count = 0
    for i in range(count, k):
        out[i] = values[starts[i] : ends[i]].sum(axis=0)
    return out


@pytest.mark.parametrize(("m", "width", "hop", "first", "k"), [
    (1000, 47, 16, 0, 40),  # the default grid, whole windows only
    (1000, 47, 16, 5, 70),  # ... its last groups past the frames, the last windows cut at the end
    (700, 49, 16, 3, 44),  # 4 groups per window of frames, 3 per window of changes
    (700, 48, 16, 0, 44),  # windows of whole groups
    (300, 2, 1, 0, 300),  # one-frame hops; the last window of one frame
    (300, 5, 7, 1, 43),  # hops longer than the windows
    (1, 2, 1, 0, 1),  # a single frame
])
def test_pooling_is_the_float64_sums_of_whole_arrays_to_the_bit(m: int, width: int, hop: int, first: int,
                                                                k: int) -> None:
    """Summing a few hop-long groups at a time adds the same float64 values in the same order as
    summing the whole block's float64 arrays: the pooled vectors are the same to the bit."""
    rng = np.random.default_rng(m + width + hop)
    frames = (rng.normal(size=(m, 9)) * [1, 10, 100, 1000, 0.01, 5, 2000, 1e-4, 30]).astype(np.float32)
    f0 = rng.uniform(50, 400, m).astype(np.float32)
    starts = first + np.arange(k) * hop
    ends = np.minimum(starts + width, m)
    keep = starts < m
    starts, ends = starts[keep], ends[keep]
    x = frames.astype(np.float64)
    delta = np.diff(x, axis=0)
    n = (ends - starts)[:, None].astype(np.float64)
    mean = _sums_of_whole_arrays(x, starts, ends) / n
    std = np.sqrt(np.maximum(_sums_of_whole_arrays(x * x, starts, ends) / n - mean * mean, 0.0))
    nd = (ends - 1 - starts)[:, None].astype(np.float64)
    has, safe = nd > 0, np.where(nd > 0, nd, 1.0)
    if len(delta):
        dabs = np.where(has, _sums_of_whole_arrays(np.abs(delta), starts, ends - 1) / safe, 0.0)
        d2 = np.where(has, _sums_of_whole_arrays(delta * delta, starts, ends - 1) / safe, 0.0)
    else:
        dabs = d2 = np.zeros_like(mean)
    dmean = np.where(has, (x[ends - 1] - x[starts]) / safe, 0.0)
    dstd = np.where(has, np.sqrt(np.maximum(d2 - dmean * dmean, 0.0)), 0.0)
    expected = np.concatenate([mean, std, dabs, dstd, pitch_stats(f0, starts, ends, frame_s=0.032)], axis=1)
    np.testing.assert_array_equal(pool_windows(frames, f0, starts, ends, frame_s=0.032),
                                  expected.astype(np.float32))


def test_pitch_statistics_of_voiced_frames() -> None:
    f0 = np.array([100.0, 0.0, 200.0, 400.0, 700.0, 100.0], dtype=np.float32)  # 0 and 700 Hz: unvoiced
    stats = pitch_stats(f0, np.array([0, 0]), np.array([6, 3]), frame_s=0.5)
    voiced = np.log2([100.0, 200.0, 400.0, 100.0])
    expected = [voiced.mean(), voiced.std(), *np.percentile(voiced, [10, 50, 90]),
                np.percentile(voiced, 90) - np.percentile(voiced, 10), np.abs(np.diff(voiced)).mean(), 4 / 6, 3.0]
    np.testing.assert_allclose(stats[0], expected, rtol=1e-9)
    # Two voiced frames of three are too few for pitch statistics: zeros, but the fraction stays.
    np.testing.assert_allclose(stats[1], [0, 0, 0, 0, 0, 0, 0, 2 / 3, 1.5])
    # Frames whose pitch was not tracked (-1) count neither as voiced nor as unvoiced.
    half = np.array([100.0, -1, 0.0, -1, 200.0, -1, 300.0], dtype=np.float32)
    stats = pitch_stats(half, np.array([0]), np.array([7]), frame_s=0.5)
    assert stats[0, 7] == pytest.approx(3 / 4) and stats[0, 0] == pytest.approx(np.log2([100, 200, 300]).mean())


# -------------------------------------------------------------------- speech ratio


def test_speech_frames_follow_a_local_noise_floor(make_signal: Callable[..., np.ndarray]) -> None:
    rng = np.random.default_rng(1)
    n = 400
    level = rng.normal(-60.0, 0.5, n)  # line noise
    level[100:150] = -40.0  # a loud stretch
    level[300:320] = -200.0  # digital silence: neither speech nor part of the floor
    flags = speech_frames(level, 0, grid=GRID, margin_db=6.0, n_frames=n, lo=0, hi=n)
    assert flags[100:150].all()
    assert not flags[:90].any() and not flags[160:300].any() and not flags[300:320].any()
    # The same frames judged from a slice that holds their context: the same answer.
    part = speech_frames(level[20:], 20, grid=GRID, margin_db=6.0, n_frames=n, lo=112, hi=200)
    np.testing.assert_array_equal(part, flags[112:200])


def test_quiet_windows_have_no_speech(make_signal: Callable[..., np.ndarray]) -> None:
    y = np.concatenate([make_signal("noise", duration_s=3.0, seed=3) * 0.02,
                        make_signal("speech", duration_s=3.0) * 2, make_signal("noise", duration_s=3.0, seed=4) * 0.02])
    _, w = signal_windows(y.astype(np.float32), SR, config=RICH)
    middle = (w.start_s + w.end_s) / 2
    assert w.speech_ratio[(middle > 3.8) & (middle < 5.2)].min() > 0.5
    assert w.speech_ratio[(middle < 2.0) | (middle > 7.0)].max() < 0.1


# -------------------------------------------------------------- locality, streaming


def _call(make_signal: Callable[..., np.ndarray], clip: np.ndarray, before: int, after: float) -> np.ndarray:
    head = make_signal("noise", duration_s=before * WINDOW_HOP / SR, seed=5)
    tail = make_signal("noise", duration_s=after, seed=6, sample_rate=SR) * 9.0
    return np.concatenate([head, clip, tail]).astype(np.float32)


@pytest.mark.parametrize("block_s", [0.37, 5.0, 60.0])
def test_a_window_inside_a_long_file_equals_the_same_samples_alone(
        make_signal: Callable[..., np.ndarray], block_s: float) -> None:
    """With other audio before and after, in any block size, a window whose frames lie in the
    clip has the clip's own vector (float32 tolerance); its speech ratio too, when its noise
    context also lies in the clip."""
    # A quiet clip with a pause of digital silence, then loud audio: any file-wide reference
    # (a dB floor under the loudest moment, a tuning estimate) would move the clip's windows.
    speech = make_signal("speech", duration_s=12.0, seed=2) * 0.05
    speech[4 * SR : 6 * SR] = 0.0
    clip = speech.astype(np.float32)
    _, alone = signal_windows(clip, SR, config=RICH)
    shift = 5  # the clip starts 5 window hops into the call, so the grids line up
    call = _call(make_signal, clip, shift, 4.0)
    index, vectors, ratio, *_ = _stream(call, int(block_s * SR))
    n_clip_frames = n_frames_of(clip.size, RICH.hop_length)
    compared = ratios = 0
    for k in range(len(alone.index)):
        first, last = k * GRID.hop, k * GRID.hop + GRID.window - 1
        if first < 2 or last > n_clip_frames - 4:  # frames reaching past the clip's edges
            continue
        np.testing.assert_allclose(vectors[k + shift], alone.vectors[k], rtol=1e-4, atol=1e-3)
        compared += 1
        if first - GRID.context >= 2 and last + GRID.hop + GRID.context < n_clip_frames - 4:
            assert ratio[k + shift] == alone.speech_ratio[k]
            ratios += 1
    assert compared >= 18 and ratios >= 8


@pytest.mark.parametrize("block", [1000, 8192 * 3 + 5, 10**7])
def test_streaming_in_blocks_equals_the_whole_signal(make_signal: Callable[..., np.ndarray], block: int) -> None:
    y = np.concatenate([make_signal("speech", duration_s=7.3), make_signal("noise", duration_s=2.0) * 0.01])
    clip, whole = signal_windows(y.astype(np.float32), SR, config=RICH)
    index, vectors, ratio, start, end, speech = _stream(y.astype(np.float32), block)
    np.testing.assert_array_equal(index, whole.index)
    np.testing.assert_allclose(vectors, whole.vectors, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(ratio, whole.speech_ratio)
    np.testing.assert_allclose(start, whole.start_s)
    np.testing.assert_allclose(end, whole.end_s)
    assert speech == whole.speech_frames


def test_window_ranges_scored_apart_equal_the_whole(make_signal: Callable[..., np.ndarray]) -> None:
    y = make_signal("speech", duration_s=11.0).astype(np.float32)
    _, whole = signal_windows(y, SR, config=RICH)
    parts = []
    for first, stop in ((0, 6), (6, 13), (13, None)):
        start = first_sample_needed(first, config=RICH, sample_rate=SR)
        parts.append(_stream(y, 4096, first_sample=start, windows=(first, stop)))
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), whole.index)
    np.testing.assert_allclose(np.concatenate([p[1] for p in parts]), whole.vectors, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(np.concatenate([p[2] for p in parts]), whole.speech_ratio)
    assert sum(p[5] for p in parts) == whole.speech_frames  # each frame's speech counted once


def test_a_stream_that_starts_too_late_is_refused(make_signal: Callable[..., np.ndarray]) -> None:
    y = make_signal("speech", duration_s=3.0).astype(np.float32)
    with pytest.raises(FeatureError, match="after sample"):
        list(stream_windows([y[50_000:]], sample_rate=SR, config=RICH, first_sample=50_000, windows=(2, None)))


def test_window_features_are_finite_on_silence_and_clipping() -> None:
    silence = np.zeros(SR * 2, dtype=np.float32)
    square = np.sign(np.sin(np.arange(SR * 2) * 0.05)).astype(np.float32)
    for y in (silence, square):
        clip, w = signal_windows(y, SR, config=RICH)
        assert np.isfinite(clip).all() and np.isfinite(w.vectors).all()


def test_lean_frames_are_the_rich_frames_columns_the_detector_and_the_cnn_read() -> None:
    """Without window vectors (a cnn alone scores), a stream gets only the frame columns the speech
    detector and the log-mel frames read -- the same numbers to the bit -- so the windows' speech and
    frames are those of the full recipe, in any block size."""
    import soxr

    from ser_batch.features.names import frame_column_names, rich_frame_names
    from ser_batch.features.rich import lean_segment_frames, rich_segment_frames

    config = FeatureConfig(recipe="rich")
    rng = np.random.default_rng(5)
    t = np.arange(16000 * 12) / 16000
    y = (0.1 * np.sin(2 * np.pi * 150 * t) * (np.sin(2 * np.pi * 0.4 * t) > 0)
         + 0.003 * rng.standard_normal(len(t))).astype(np.float32)
    full, _ = rich_segment_frames(y, soxr.resample(y, 16000, 4000), 16000, config=config)
    lean = lean_segment_frames(y, 16000, config=config)
    names = rich_frame_names(frame_column_names(config))
    read = [i for i, n in enumerate(names) if n.startswith("mel_db_") or n in ("rms_db", "flatness_log10")]
    np.testing.assert_array_equal(lean[:, read], full[:, read])
    assert not lean[:, [i for i in range(len(names)) if i not in read]].any()
    whole = list(stream_windows([y], sample_rate=16000, config=config, frame_reach=70))
    for step in (16000, 5 * 16000 + 3):
        part = list(stream_windows((y[i : i + step] for i in range(0, len(y), step)), sample_rate=16000,
                                   config=config, frame_reach=70, vectors=False))
        assert all(b.vectors.shape[1] == 0 for b in part)
        np.testing.assert_array_equal(np.concatenate([b.speech_ratio for b in part]),
                                      np.concatenate([b.speech_ratio for b in whole]))
        assert sum(b.speech_frames for b in part) == sum(b.speech_frames for b in whole)
        stretch = {int(s): b.frames for b in part for s in b.frames.starts}
        for b in whole:
            for s in b.frames.starts:
                mine, theirs = stretch[int(s)], b.frames
                a = int(s) - mine.first
                np.testing.assert_array_equal(mine.frames[a : a + 47], theirs.frames[int(s) - theirs.first:][:47])

"""Log-mel frames of the frame network: from the rich frames, streamed in stretches, normalised per frame."""

from __future__ import annotations

import numpy as np
import pytest

from ser_batch.config import FeatureConfig
from ser_batch.features.melframes import mel_frames, n_bands, normalize_frames, sliding_max, sliding_mean, window_frames
from ser_batch.features.windows import row_stream, signal_frames, signal_windows, stream_windows

RATE = 16000
CONFIG = FeatureConfig(recipe="rich")


def _signal(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(t.size)
            ).astype(np.float32)


def test_mel_frames_average_band_pairs_of_the_mel_db_columns() -> None:
    rich, _ = signal_frames(_signal(1.0), RATE, config=CONFIG)
    mel = mel_frames(rich, CONFIG)
    assert mel.shape == (len(rich), n_bands(CONFIG)) == (len(rich), 64)
    first = rich[:, CONFIG.n_mfcc + CONFIG.n_chroma : CONFIG.n_mfcc + CONFIG.n_chroma + 2].mean(axis=1) / 20.0
    np.testing.assert_allclose(mel[:, 0], first, rtol=1e-6)
    # Strided adds give numpy's mean of each pair to the bit.
    pairs = np.ascontiguousarray(rich[:, CONFIG.n_mfcc + CONFIG.n_chroma:][:, :128]).reshape(len(rich), 64, 2)
    np.testing.assert_array_equal(mel, pairs.mean(axis=2) / np.float32(20.0))
    assert mel.dtype == np.float32 and mel.flags.c_contiguous


def test_window_frames_pad_a_short_last_window_with_zeros() -> None:
    frames = np.arange(20, dtype=np.float32).reshape(10, 2)
    out = window_frames(frames, np.array([0, 4]), np.array([6, 10]), width=6)
    assert out.shape == (2, 6, 2)
    np.testing.assert_array_equal(out[1, :6], frames[4:10])
    out = window_frames(frames, np.array([6]), np.array([10]), width=6)
    np.testing.assert_array_equal(out[0, 4:], 0.0)
    # Full windows only: each window's own rows, in an array of its own (not a view of the frames).
    out = window_frames(frames, np.array([0, 3, 4]), np.array([6, 9, 10]), width=6)
    np.testing.assert_array_equal(out, np.stack([frames[0:6], frames[3:9], frames[4:10]]))
    out[0, 0] = -1.0
    assert frames[0, 0] == 0.0 and out[1, 0, 0] == frames[3, 0]


@pytest.mark.parametrize("block_s", [0.37, 1.0, 2.9])
@pytest.mark.parametrize("reach", [0, 70])
def test_streamed_frame_stretches_hold_the_whole_signals_frames_and_speech(block_s: float, reach: int) -> None:
    """Each batch's stretch is the whole signal's frames and speech flags from ``reach`` frames before
    its first window to ``reach`` after its last (cut at the ends), in any block size."""
    y = _signal(9.3, seed=1)
    _, whole = signal_windows(y, RATE, config=CONFIG, frames=True)
    step = int(block_s * RATE)
    batches = list(stream_windows((y[i : i + step] for i in range(0, len(y), step)), sample_rate=RATE,
                                  config=CONFIG, frame_reach=reach))
    n = len(whole.frames.frames)
    starts = np.concatenate([b.frames.starts for b in batches])
    np.testing.assert_array_equal(starts, whole.frames.starts)
    np.testing.assert_array_equal(np.concatenate([b.frames.ends for b in batches]), whole.frames.ends)
    for b in batches:
        stretch = b.frames
        lo, hi = max(0, int(stretch.starts.min()) - reach), min(n, int(stretch.ends.max()) + reach)
        assert (stretch.first, stretch.first + len(stretch.frames), stretch.at_end) == (lo, hi, hi == n)
        np.testing.assert_array_equal(stretch.frames, whole.frames.frames[lo:hi])
        inside = slice(int(stretch.starts.min()) - lo, int(stretch.ends.max()) - lo)
        np.testing.assert_array_equal(stretch.speech[inside], whole.frames.speech[lo:hi][inside])
    rich, _ = signal_frames(y, RATE, config=CONFIG)
    row = row_stream(mel_frames(rich, CONFIG), whole.frames.speech, config=CONFIG, sample_rate=RATE)
    np.testing.assert_array_equal(row.frames, whole.frames.frames)
    np.testing.assert_array_equal(row.starts, whole.frames.starts)
    np.testing.assert_array_equal(row.ends, whole.frames.ends)
    assert whole.frames.ends[-1] - whole.frames.starts[-1] < 47  # the last window is cut at the end


def test_windows_have_no_frames_unless_asked() -> None:
    _, whole = signal_windows(_signal(2.0), RATE, config=CONFIG)
    assert whole.frames is None


@pytest.mark.parametrize("n", [1, 2, 7, 64, 301])
@pytest.mark.parametrize("context", [0, 1, 5, 31])
def test_sliding_max_and_mean_equal_the_plain_loops(n: int, context: int) -> None:
    rng = np.random.default_rng(n * 100 + context)
    values = rng.normal(size=n).astype(np.float32)
    expected = np.array([values[max(0, t - context) : t + context + 1].max() for t in range(n)])
    np.testing.assert_array_equal(sliding_max(values, context), expected)
    rows = rng.normal(size=(n, 3))
    expected = np.array([rows[max(0, t - context) : t + context + 1].mean(axis=0) for t in range(n)])
    np.testing.assert_allclose(sliding_mean(rows, context), expected, rtol=1e-12, atol=1e-12)


def test_normalize_frames_floors_relative_to_the_loudest_frame_near_and_removes_band_means() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(-2.0, 0.3, size=(200, 8)).astype(np.float32)
    x[100:110] += 2.0  # a loud stretch
    out = normalize_frames(x, context=10, floor=1.0)
    # Frame 105's neighbourhood holds the loud stretch: its floor is that stretch's maximum - 1.
    floored = np.maximum(x, max(x[t].max() for t in range(95, 116)) - 1.0)
    assert out.dtype == np.float32
    assert abs(float(out[105, 3]) - (floored[105, 3] - np.mean([
        np.maximum(x[u], max(x[v].max() for v in range(u - 10, u + 11)) - 1.0)[3] for u in range(95, 116)]))) < 1e-5
    # Without a floor, a constant offset of a band (level, channel colouring) disappears.
    plain = normalize_frames(x, context=10, floor=0.0)
    shifted = normalize_frames(x + np.linspace(-1, 1, 8, dtype=np.float32), context=10, floor=0.0)
    np.testing.assert_allclose(plain, shifted, atol=1e-5)


@pytest.mark.parametrize("context,floor", [(31, 2.5), (5, 0.0)])
def test_normalize_frames_of_a_stretch_equal_the_whole_streams_inside_it(context: int, floor: float) -> None:
    """Frame t depends only on frames within 2 * context: a stretch with that margin (or the stream's
    own end) gives the whole stream's numbers."""
    rng = np.random.default_rng(1)
    x = rng.normal(-2.0, 0.6, size=(400, 64)).astype(np.float32)
    whole = normalize_frames(x, context=context, floor=floor)
    m = 2 * context
    for lo, hi in ((0, 50), (100, 180), (350, 400), (m, 400 - m)):
        a, b = max(0, lo - m), min(400, hi + m)
        part = normalize_frames(x[a:b], context=context, floor=floor)
        np.testing.assert_allclose(part[lo - a : hi - a], whole[lo:hi], rtol=0, atol=2e-6)

"""Log-mel frames of the frame-sequence model: from the rich frames, per window, in any block size."""

from __future__ import annotations

import numpy as np
import pytest

from ser_batch.config import FeatureConfig
from ser_batch.features.melframes import mel_frames, n_bands, window_frames
from ser_batch.features.windows import row_windows, signal_frames, signal_windows, stream_windows

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
def test_streamed_frames_equal_whole_signal_frames_in_any_block_size(block_s: float) -> None:
    y = _signal(6.3, seed=1)
    _, whole = signal_windows(y, RATE, config=CONFIG, frames=True)
    step = int(block_s * RATE)
    batches = list(stream_windows((y[i : i + step] for i in range(0, len(y), step)), sample_rate=RATE,
                                  config=CONFIG, frames=True))
    frames = np.concatenate([b.frames for b in batches])
    counts = np.concatenate([b.frame_counts for b in batches])
    np.testing.assert_array_equal(counts, whole.frame_counts)
    np.testing.assert_array_equal(frames, whole.frames)
    assert counts[-1] < counts[0]  # the last window is cut at the end of the signal
    rich, _ = signal_frames(y, RATE, config=CONFIG)
    from_row, row_counts = row_windows(mel_frames(rich, CONFIG), config=CONFIG, sample_rate=RATE)
    np.testing.assert_array_equal(from_row, whole.frames)
    np.testing.assert_array_equal(row_counts, whole.frame_counts)


def test_windows_have_no_frames_unless_asked() -> None:
    _, whole = signal_windows(_signal(2.0), RATE, config=CONFIG)
    assert whole.frames is None and whole.frame_counts is None

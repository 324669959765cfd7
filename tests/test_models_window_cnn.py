"""The per-window cnn of bundles made before the stream encoder: its numpy forward, and that such a
bundle's arrays still score streams (each window cut out and run alone)."""

from __future__ import annotations

import numpy as np
import pytest

from ser_batch.features.melframes import StreamFrames, window_frames
from ser_batch.models.window_cnn import WindowNetwork


def _im2col_forward(network: WindowNetwork, x: np.ndarray) -> np.ndarray:
    """The cnn forward pass written the plain way: each window padded on its own ("same" zeros,
    Keras's split of an odd total), its taps side by side, one product per layer."""
    if network.floor > 0:
        x = np.maximum(x, x.max(axis=(1, 2), keepdims=True) - np.float32(network.floor))
    h = (x - x.mean(axis=1, keepdims=True)).astype(np.float64)
    n, t, _ = h.shape
    for kernel, bias, dilation in network.convs:
        total = dilation * (kernel.shape[0] - 1)
        padded = np.pad(h, ((0, 0), (total // 2, total - total // 2), (0, 0)))
        cols = np.concatenate([padded[:, j * dilation : j * dilation + t] for j in range(kernel.shape[0])], axis=2)
        h = np.maximum(cols.reshape(n * t, -1) @ kernel.reshape(-1, kernel.shape[2]) + bias, 0.0).reshape(n, t, -1)
    mean = h.mean(axis=1)
    std = np.sqrt(np.maximum((h * h).mean(axis=1) - mean * mean, 1e-6))
    z = np.maximum(np.concatenate([mean, std], axis=1) @ network.dense[0] + network.dense[1], 0.0)
    z = z @ network.out[0] + network.out[1]
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("floor", [0.0, 1.5])
def test_numpy_forward_shares_no_frames_between_windows_for_any_kernel_and_dilation(floor: float) -> None:
    """The forward pass lays all windows in one array with zero gaps between them: with even and odd
    kernels, dilations up to 4 and windows shorter than the gap, no window sees another's frames."""
    rng = np.random.default_rng(3)
    shapes = [(2, 6, 5, 1), (4, 5, 7, 3), (3, 7, 4, 4), (1, 4, 6, 1)]  # taps, in, out, dilation
    arrays = {"floor": np.float32(floor)}
    for i, (taps, width_in, width_out, dilation) in enumerate(shapes):
        arrays[f"conv_kernel_{i}"] = rng.normal(0, 0.5, (taps, width_in, width_out)).astype(np.float32)
        arrays[f"conv_bias_{i}"] = rng.normal(0, 0.1, width_out).astype(np.float32)
        arrays[f"conv_dilation_{i}"] = np.int64(dilation)
    arrays.update(dense_kernel=rng.normal(0, 0.5, (12, 9)).astype(np.float32),
                  dense_bias=rng.normal(0, 0.1, 9).astype(np.float32),
                  out_kernel=rng.normal(0, 0.5, (9, 3)).astype(np.float32), out_bias=np.zeros(3, np.float32))
    network = WindowNetwork(arrays, ["a", "b", "c"], n_bands=6)
    assert network._gap == 5  # 4 taps at dilation 3 reach 4 frames before a frame and 5 after
    for t in (2, 9, 30):
        windows = rng.normal(0, 1.0, (7, t, 6)).astype(np.float32)
        got = network.predict_windows(windows)
        np.testing.assert_allclose(got, _im2col_forward(network, windows), atol=1e-5)
        # Each window alone gives what it gives among the others.
        np.testing.assert_allclose(got[3], network.predict_windows(windows[3:4])[0], atol=1e-6)


def test_a_legacy_network_scores_stream_stretches_as_its_windows_cut_out(tmp_path) -> None:
    """Arrays without ``format`` load as the per-window network, which needs no context (``reach`` 0) and
    gives a stream's windows what it gives those windows cut out."""
    from ser_batch.models.sequence import load_frame_network

    rng = np.random.default_rng(4)
    arrays = {"floor": np.float32(2.5)}
    for i, (taps, width_in, width_out, dilation) in enumerate([(5, 8, 6, 1), (3, 6, 6, 2)]):
        arrays[f"conv_kernel_{i}"] = rng.normal(0, 0.5, (taps, width_in, width_out)).astype(np.float32)
        arrays[f"conv_bias_{i}"] = rng.normal(0, 0.1, width_out).astype(np.float32)
        arrays[f"conv_dilation_{i}"] = np.int64(dilation)
    arrays.update(dense_kernel=rng.normal(0, 0.5, (12, 5)).astype(np.float32),
                  dense_bias=rng.normal(0, 0.1, 5).astype(np.float32),
                  out_kernel=rng.normal(0, 0.5, (5, 3)).astype(np.float32), out_bias=np.zeros(3, np.float32))
    np.savez(tmp_path / "cnn.npz", **arrays)
    network = load_frame_network(tmp_path / "cnn.npz", classes=["a", "b", "c"], n_bands=8)
    assert isinstance(network, WindowNetwork) and network.reach == 0
    frames = rng.normal(-2, 0.5, (60, 8)).astype(np.float32)
    starts, ends = np.array([0, 16, 32, 48]), np.array([20, 36, 52, 60])
    stream = StreamFrames(frames[10:], 10, True, starts[1:], ends[1:], np.ones(50, dtype=bool))
    expected = network.predict_windows(window_frames(frames, starts[1:], ends[1:], width=20), ends[1:] - starts[1:])
    np.testing.assert_allclose(network.predict_proba([stream]), expected, atol=1e-7)

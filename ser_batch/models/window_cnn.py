"""The ``cnn`` of bundles made before the stream encoder (arrays without ``format``): a 1-D conv
net run on each window's log-mel frames alone, kept so that those bundles still score.

Input step: a floor at the window's loudest value minus ``floor``, then each band's mean over
the window subtracted; convolutions with 'same' zero padding per window, statistics pooling,
Dense ReLU, softmax. New bundles hold :class:`ser_batch.models.sequence.StreamNetwork` instead,
which runs its convolutions once per stream (a third of the work: windows overlap 3x).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ser_batch.features.melframes import StreamFrames, window_frames

#: Floor of the variance in the statistics pooling (keeps the square root's gradient finite).
STD_EPSILON = 1e-6


def _by_length(run: Any, windows: np.ndarray, counts: np.ndarray | None, n_classes: int) -> np.ndarray:
    """``run`` on the windows grouped by length (each group cut to its length)."""
    windows = np.asarray(windows, dtype=np.float32)
    counts = np.full(len(windows), windows.shape[1]) if counts is None else np.asarray(counts)
    out = np.zeros((len(windows), n_classes))
    for length in np.unique(counts):
        pick = np.flatnonzero(counts == length)
        out[pick] = run(windows[pick, : int(length)])
    return out


#: Widest reach of one convolution, in frames (the shipped design reaches 8; more would only pad).
MAX_CONV_REACH = 1024


def check_sequence(arrays: dict[str, np.ndarray], *, n_classes: int, n_bands: int | None = None) -> None:
    """Refuse arrays that are not one exported ``cnn``: convolutions ``(k, c_in, c_out)`` chained
    from ``n_bands`` inputs, the Dense layer on twice the last width (mean and std pooled), an
    output of ``n_classes``, integer dilations, finite float weights.

    Raises
    ------
    ValueError
        Naming the first array that does not fit.
    """
    from ser_batch.models.networks import check_conv_stack, check_finite, require_arrays

    count = sum(1 for k in arrays if k.startswith("conv_kernel_"))
    needed = ["floor", "dense_kernel", "dense_bias", "out_kernel", "out_bias"]
    needed += [f"conv_{kind}_{i}" for i in range(count) for kind in ("kernel", "bias", "dilation")]
    require_arrays(arrays, needed, layers=count, what="cnn network",
                   kinds=lambda key: "iu" if "dilation" in key else "f")

    def expect(key: str, shape: tuple[int, ...]) -> None:
        if arrays[key].shape != shape:
            raise ValueError(f"array {key!r} has shape {arrays[key].shape}, expected {shape}")

    expect("floor", ())
    width, layers = check_conv_stack(arrays, count, n_bands=n_bands)
    for i, (taps, dilation) in enumerate(layers):
        if dilation < 1 or dilation * (taps - 1) > MAX_CONV_REACH:
            raise ValueError(f"convolution {i} has dilation {dilation} over {taps} taps "
                             f"(a reach of at most {MAX_CONV_REACH} frames)")
    dense = arrays["dense_kernel"]
    if dense.ndim != 2 or dense.shape[0] != 2 * width:
        raise ValueError(f"array 'dense_kernel' has shape {dense.shape}, expected ({2 * width}, units)")
    expect("dense_bias", (dense.shape[1],))
    expect("out_kernel", (dense.shape[1], n_classes))
    expect("out_bias", (n_classes,))
    check_finite({k: arrays[k] for k in needed})
    if float(arrays["floor"]) < 0:
        raise ValueError("array 'floor' is negative")


class WindowNetwork:
    """An exported ``cnn`` network evaluated with numpy: ``predict_proba(windows, counts)``.

    Attributes
    ----------
    classes_ : np.ndarray of str, output order of the softmax
    """

    def __init__(self, arrays: dict[str, np.ndarray], classes: list[str], *, n_bands: int | None = None) -> None:
        check_sequence(arrays, n_classes=len(classes), n_bands=n_bands)
        self.floor = float(arrays["floor"])
        count = sum(1 for k in arrays if k.startswith("conv_kernel_"))
        self.convs = [(arrays[f"conv_kernel_{i}"].astype(np.float32), arrays[f"conv_bias_{i}"].astype(np.float32),
                       int(arrays[f"conv_dilation_{i}"])) for i in range(count)]
        self.dense = (arrays["dense_kernel"].astype(np.float32), arrays["dense_bias"].astype(np.float32))
        self.out = (arrays["out_kernel"].astype(np.float32), arrays["out_bias"].astype(np.float32))
        self.classes_ = np.asarray(classes)
        #: Zero rows between windows in :meth:`_forward`: the farthest any tap reaches past an edge.
        self._gap = max([-(-d * (k.shape[0] - 1) // 2) for k, _, d in self.convs] + [1])  # ceil(reach / 2)

    @classmethod
    def load(cls, path: Path, *, classes: list[str], n_bands: int | None = None) -> WindowNetwork:
        """The network of an array file, checked (:func:`~ser_batch.models.networks.read_arrays`,
        :func:`check_sequence`)."""
        from ser_batch.models.networks import read_arrays

        return cls(read_arrays(Path(path)), classes, n_bands=n_bands)

    #: Frames of context a stream must give past its windows: none, each window is run alone.
    reach = 0

    def predict_proba(self, streams: Sequence[StreamFrames]) -> np.ndarray:
        """Class probabilities ``(k, n_classes)`` of the windows of ``streams``, in order: each window's
        frames cut out and run alone (a shorter last window at its own length)."""
        windows, counts = [], []
        for stream in streams:
            if not len(stream):
                continue
            width = int((stream.ends - stream.starts).max())
            windows.append(window_frames(stream.frames, stream.starts - stream.first, stream.ends - stream.first,
                                         width=width))
            counts.append(stream.ends - stream.starts)
        if not windows:
            return np.zeros((0, len(self.out[1])))
        width = max(w.shape[1] for w in windows)
        stacked = np.zeros((sum(len(w) for w in windows), width, windows[0].shape[2]), dtype=np.float32)
        at = 0
        for w in windows:
            stacked[at : at + len(w), : w.shape[1]] = w
            at += len(w)
        return self.predict_windows(stacked, np.concatenate(counts))

    def predict_windows(self, windows: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
        """Class probabilities ``(k, n_classes)`` of windows ``(k, window, b)``; ``counts`` (frames of
        each window) runs a shorter window at its own length."""
        return _by_length(self._forward, windows, counts, len(self.out[1]))

    def _forward(self, x: np.ndarray) -> np.ndarray:
        """The network on windows ``(n, t, b)`` of one length: the same arithmetic as the Keras
        model ("same" zero padding per window), laid out so that every tap of every convolution
        is one matrix product over all windows at once with no copy of its input (no im2col).

        The windows sit one after another in a single ``(rows, channels)`` array with ``gap``
        zero rows before each (and after the last): enough zeros for the widest reach of any
        layer, so a tap that reads past a window's edge reads zeros, as Keras's padding does.
        A layer's output is computed for every row (the gap rows too) as the sum over its taps
        of the input shifted by the tap's offset times its kernel; the gap rows are zeroed again
        before the next layer."""
        if self.floor > 0:
            x = np.maximum(x, x.max(axis=(1, 2), keepdims=True) - np.float32(self.floor))
        n, t, _ = x.shape
        gap = self._gap
        stride = t + gap
        rows = n * stride + gap
        h = np.zeros((rows, x.shape[2]), dtype=np.float32)
        h[: n * stride].reshape(n, stride, -1)[:, gap:] = x - x.mean(axis=1, keepdims=True)
        for kernel, bias, dilation in self.convs:
            k = kernel.shape[0]
            before = dilation * (k - 1) // 2
            out = np.empty((rows, kernel.shape[2]), dtype=np.float32)
            body = out[gap : rows - gap]
            step = np.empty_like(body) if k > 1 else None
            for j in range(k):
                offset = gap - before + j * dilation
                shifted = h[offset : offset + rows - 2 * gap]
                if j == 0:
                    np.matmul(shifted, kernel[j], out=body)
                else:
                    np.matmul(shifted, kernel[j], out=step)
                    body += step
            body += bias
            np.maximum(body, 0.0, out=body)
            out[:gap] = 0.0
            out[rows - gap :] = 0.0
            out[: n * stride].reshape(n, stride, -1)[:, :gap] = 0.0
            h = out
        frames = h[: n * stride].reshape(n, stride, -1)[:, gap:]
        mean = frames.mean(axis=1)
        std = np.sqrt(np.maximum((frames * frames).mean(axis=1) - mean * mean, STD_EPSILON))
        z = np.maximum(np.concatenate([mean, std], axis=1) @ self.dense[0] + self.dense[1], 0.0)
        z = (z @ self.out[0] + self.out[1]).astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        return z / z.sum(axis=1, keepdims=True)

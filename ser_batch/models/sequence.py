"""The frame-sequence model (``cnn``): a small 1-D convolutional network over a window's log-mel frames.

Input step (in Keras and numpy alike): optionally a floor at the window's loudest value minus
``cnn.relative_floor_db``, then each band's mean over the window subtracted (a local spectral
mean normalisation: the frames stored and streamed stay plain). Then convolutions ('same'
padding, batch norm, ReLU), statistics pooling (mean and standard deviation over time), Dense
ReLU (batch norm), dropout, softmax.

A window shorter than the grid's (the last one of a signal, cut at its end) is run at its own
length: the network sees zeros past its edges as for every window, and pools only its frames.

:class:`SequenceClassifier` fits it (random window-long crops of the rows' frames, SpecAugment
masks, AdamW with cosine decay, label smoothing) and writes ``cnn.keras`` and ``cnn.npz``;
:class:`SequenceNetwork` evaluates the arrays with numpy (batch norms folded into the layers
before them), equal to Keras to float32 rounding, with no TensorFlow in the process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ser_batch.config import CnnConfig
from ser_batch.features.melframes import DB_SCALE

#: Array export inside a bundle, and the native Keras file.
CNN_ARRAYS = "cnn.npz"
CNN_KERAS = "cnn.keras"
#: Floor of the variance in the statistics pooling (keeps the square root's gradient finite).
STD_EPSILON = 1e-6


def _layers() -> tuple[Any, Any]:
    """The two custom layers, registered with Keras (so ``cnn.keras`` loads in safe mode)."""
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="ser_batch")
    class WindowNorm(keras.layers.Layer):
        """Floor at the window's maximum minus ``floor`` (0: none), then band means removed."""

        def __init__(self, floor: float = 0.0, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.floor = float(floor)

        def call(self, x: Any) -> Any:
            if self.floor > 0:
                x = ops.maximum(x, ops.max(x, axis=(1, 2), keepdims=True) - self.floor)
            return x - ops.mean(x, axis=1, keepdims=True)

        def get_config(self) -> dict[str, Any]:
            return dict(super().get_config(), floor=self.floor)

    @keras.saving.register_keras_serializable(package="ser_batch")
    class StatsPooling(keras.layers.Layer):
        """Mean and standard deviation over time, concatenated."""

        def call(self, x: Any) -> Any:
            mean = ops.mean(x, axis=1)
            std = ops.sqrt(ops.maximum(ops.mean(x * x, axis=1) - mean * mean, STD_EPSILON))
            return ops.concatenate([mean, std], axis=-1)

    return WindowNorm, StatsPooling


def build_network(params: CnnConfig, *, n_bands: int, n_classes: int) -> Any:
    """The Keras network, input ``(batch, time, n_bands)``, softmax output ``(batch, n_classes)``."""
    import keras
    from keras import layers

    WindowNorm, StatsPooling = _layers()
    inputs = keras.Input(shape=(None, n_bands), name="frames")
    x = WindowNorm(params.relative_floor_db / DB_SCALE, name="window_norm")(inputs)
    for i, (kernel, dilation) in enumerate(zip(params.kernels, params.dilations)):
        x = layers.Conv1D(params.width, kernel, dilation_rate=dilation, padding="same", use_bias=False,
                          name=f"conv_{i}")(x)
        x = layers.BatchNormalization(name=f"conv_bn_{i}")(x)
        x = layers.ReLU(name=f"conv_relu_{i}")(x)
    x = StatsPooling(name="stats_pool")(x)
    x = layers.Dense(params.dense, use_bias=False, name="dense")(x)
    x = layers.BatchNormalization(name="dense_bn")(x)
    x = layers.ReLU(name="dense_relu")(x)
    if params.dropout:
        x = layers.Dropout(params.dropout, name="dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="emotion")(x)
    return keras.Model(inputs, outputs, name="ser_cnn")


def training_crops(rows: list[np.ndarray], *, width: int, params: CnnConfig, rng: np.random.Generator) -> np.ndarray:
    """One random ``width``-frame crop of each row's frames, with SpecAugment masks: ``(n, width, b)``.

    A row shorter than ``width`` is repeated to fill the crop. Masks set frames or bands to the
    window's band mean (0 after the network's input step subtracts it: masked values carry no
    level), so they are applied after the band means are removed here, which the network's own
    input step then leaves unchanged."""
    out = np.empty((len(rows), width, rows[0].shape[1]), dtype=np.float32)
    for i, x in enumerate(rows):
        if len(x) > width:
            start = int(rng.integers(0, len(x) - width + 1))
            x = x[start : start + width]
        elif len(x) < width:
            x = np.concatenate([x] * (width // len(x) + 1))[:width]
        crop = x.astype(np.float32, copy=True)
        if params.relative_floor_db > 0:
            crop = np.maximum(crop, crop.max() - params.relative_floor_db / DB_SCALE)
        crop -= crop.mean(axis=0, keepdims=True)
        bands = crop.shape[1]
        for _ in range(params.freq_masks):
            w = int(rng.integers(0, min(params.freq_mask_bands, bands) + 1))
            f0 = int(rng.integers(0, bands - w + 1))
            crop[:, f0 : f0 + w] = 0.0
        for _ in range(params.time_masks):
            w = int(rng.integers(0, int(params.time_mask_fraction * width) + 1))
            t0 = int(rng.integers(0, width - w + 1))
            crop[t0 : t0 + w] = 0.0
        out[i] = crop
    return out


class SequenceClassifier:
    """The ``cnn`` network with sklearn's shape of API (``fit(rows, y)`` on per-row frame matrices,
    ``predict_proba(windows, counts)`` on windows of frames, ``classes_``), without subclassing
    sklearn: importing this module must not import scikit-learn into scoring workers (0.7 CPU s).

    Parameters
    ----------
    params : CnnConfig
    window : int, frames per training crop and scoring window (47: 1.5 s of 32 ms frames)
    seed, threads : random seed, TensorFlow CPU threads

    Attributes
    ----------
    classes_ : np.ndarray of str; model_ : keras.Model; history_ : dict of per-epoch ``loss``, ``accuracy``
    """

    def __init__(self, *, params: CnnConfig | None = None, window: int = 47, seed: int = 42, threads: int = 1) -> None:
        self.params = params
        self.window = window
        self.seed = seed
        self.threads = threads

    def fit(self, rows: list[np.ndarray], y: np.ndarray) -> "SequenceClassifier":
        """Fit on ``rows`` (list of ``(t_i, b)`` frame matrices) and string labels ``y`` ``(n,)``."""
        from ser_batch.models.estimators import configure_tensorflow

        configure_tensorflow(self.threads)
        import keras

        params = self.params or CnnConfig()
        keras.utils.set_random_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.classes_, codes = np.unique(np.asarray(y).astype(str), return_inverse=True)
        onehot = np.eye(len(self.classes_), dtype=np.float32)[codes]
        self.model_ = build_network(params, n_bands=rows[0].shape[1], n_classes=len(self.classes_))
        steps = params.epochs * -(-len(rows) // params.batch_size)
        schedule = keras.optimizers.schedules.CosineDecay(params.learning_rate, max(1, steps))
        self.model_.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=params.weight_decay),
                            loss=keras.losses.CategoricalCrossentropy(label_smoothing=params.label_smoothing),
                            metrics=["accuracy"])
        self.history_: dict[str, list[float]] = {"loss": [], "accuracy": []}
        for _ in range(params.epochs):  # fresh crops and masks every epoch
            crops = training_crops(rows, width=self.window, params=params, rng=rng)
            history = self.model_.fit(crops, onehot, epochs=1, batch_size=params.batch_size, shuffle=True, verbose=0)
            for key in self.history_:
                self.history_[key] += [float(v) for v in history.history.get(key, [])]
        return self

    def predict_proba(self, windows: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
        """Class probabilities ``(k, n_classes)`` of windows ``(k, window, b)`` (``counts``: frames of
        each; shorter windows are run at their own length)."""
        return _by_length(lambda x: np.asarray(self.model_(x, training=False), dtype=np.float64),
                          windows, counts, len(self.classes_))

    def save(self, directory: Path, *, native: bool = True) -> list[Path]:
        """Write ``cnn.npz`` (what ser-batch evaluates) and, with ``native``, ``cnn.keras``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = [export_sequence(self.model_, directory / CNN_ARRAYS)]
        if native:
            import keras

            model = keras.Model.from_config(self.model_.get_config())  # no optimiser state
            model.set_weights(self.model_.get_weights())
            model.save(directory / CNN_KERAS)
            paths.append(directory / CNN_KERAS)
        return paths


def _by_length(run: Any, windows: np.ndarray, counts: np.ndarray | None, n_classes: int) -> np.ndarray:
    """``run`` on the windows grouped by length (each group cut to its length)."""
    windows = np.asarray(windows, dtype=np.float32)
    counts = np.full(len(windows), windows.shape[1]) if counts is None else np.asarray(counts)
    out = np.zeros((len(windows), n_classes))
    for length in np.unique(counts):
        pick = np.flatnonzero(counts == length)
        out[pick] = run(windows[pick, : int(length)])
    return out


def export_sequence(model: Any, path: Path) -> Path:
    """Write the network as arrays (batch norms folded into the convolution or Dense before them)."""
    arrays: dict[str, np.ndarray] = {}
    layers = {layer.name: layer for layer in model.layers}
    arrays["floor"] = np.array(layers["window_norm"].floor, dtype=np.float32)

    def fold(kernel: np.ndarray, bn: Any) -> tuple[np.ndarray, np.ndarray]:
        gamma, beta, mean, var = (np.asarray(v, dtype=np.float64) for v in bn.get_weights())
        scale = gamma / np.sqrt(var + bn.epsilon)
        return (kernel * scale).astype(np.float32), (beta - mean * scale).astype(np.float32)

    i = 0
    while f"conv_{i}" in layers:
        conv = layers[f"conv_{i}"]
        kernel, bias = fold(np.asarray(conv.get_weights()[0], dtype=np.float64), layers[f"conv_bn_{i}"])
        arrays[f"conv_kernel_{i}"] = kernel  # (k, c_in, c_out)
        arrays[f"conv_bias_{i}"] = bias
        arrays[f"conv_dilation_{i}"] = np.array(conv.dilation_rate[0], dtype=np.int64)
        i += 1
    arrays["dense_kernel"], arrays["dense_bias"] = fold(np.asarray(layers["dense"].get_weights()[0], np.float64),
                                                        layers["dense_bn"])
    out_kernel, out_bias = layers["emotion"].get_weights()
    arrays["out_kernel"], arrays["out_bias"] = np.asarray(out_kernel, np.float32), np.asarray(out_bias, np.float32)
    np.savez_compressed(path, **arrays)
    return Path(path)


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
    from ser_batch.models.networks import check_finite, require_arrays

    count = sum(1 for k in arrays if k.startswith("conv_kernel_"))
    needed = ["floor", "dense_kernel", "dense_bias", "out_kernel", "out_bias"]
    needed += [f"conv_{kind}_{i}" for i in range(count) for kind in ("kernel", "bias", "dilation")]
    require_arrays(arrays, needed, layers=count, what="cnn network",
                   kinds=lambda key: "iu" if "dilation" in key else "f")

    def expect(key: str, shape: tuple[int, ...]) -> None:
        if arrays[key].shape != shape:
            raise ValueError(f"array {key!r} has shape {arrays[key].shape}, expected {shape}")

    expect("floor", ())
    width = n_bands
    for i in range(count):
        kernel = arrays[f"conv_kernel_{i}"]
        if kernel.ndim != 3 or (width is not None and kernel.shape[1] != width) or 0 in kernel.shape:
            raise ValueError(f"array 'conv_kernel_{i}' has shape {kernel.shape}, expected (taps, {width or 'bands'}, "
                             "channels)")
        width = kernel.shape[2]
        expect(f"conv_bias_{i}", (width,))
        expect(f"conv_dilation_{i}", ())
        dilation = int(arrays[f"conv_dilation_{i}"])
        if dilation < 1 or dilation * (kernel.shape[0] - 1) > MAX_CONV_REACH:
            raise ValueError(f"convolution {i} has dilation {dilation} over {kernel.shape[0]} taps "
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


class SequenceNetwork:
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
    def load(cls, path: Path, *, classes: list[str], n_bands: int | None = None) -> SequenceNetwork:
        """The network of an array file, checked (:func:`~ser_batch.models.networks.read_arrays`,
        :func:`check_sequence`)."""
        from ser_batch.models.networks import read_arrays

        return cls(read_arrays(Path(path)), classes, n_bands=n_bands)

    def predict_proba(self, windows: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
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

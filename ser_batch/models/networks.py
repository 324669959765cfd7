"""Both classifiers as plain arrays, evaluated with numpy: the scoring path's models.

The Keras ANN and the scikit-learn MLP are the same kind of network: standardise the
features, Dense layers with ReLU, a softmax output. At training time each is also written
as an ``.npz`` of those arrays (:func:`export_keras`, :func:`export_sklearn`); scoring
evaluates them here, which gives the same probabilities to float32 rounding without
importing TensorFlow or scikit-learn into a worker (seconds of start-up and hundreds of MB
per process), and without unpickling anything (``allow_pickle=False``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: Array exports inside a bundle.
KERAS_ARRAYS = "keras_ann.npz"
SKLEARN_ARRAYS = "sklearn_mlp.npz"
CNN_ARRAYS = "cnn.npz"  # the frame-sequence model (ser_batch.models.sequence)
ARRAYS = {"keras": KERAS_ARRAYS, "sklearn": SKLEARN_ARRAYS, "cnn": CNN_ARRAYS}

#: Hidden layers are ReLU; the output is softmax, or logistic for a two-class MLP (one unit).
_ACTIVATIONS = ("relu", "softmax", "logistic")


def _save(path: Path, mean: np.ndarray, scale: np.ndarray, layers: list[tuple[Any, Any, str]]) -> Path:
    arrays: dict[str, np.ndarray] = {"mean": np.asarray(mean, dtype=np.float32).reshape(-1),
                                     "scale": np.asarray(scale, dtype=np.float32).reshape(-1)}
    for i, (kernel, bias, activation) in enumerate(layers):
        if activation not in _ACTIVATIONS:
            raise ValueError(f"cannot export activation {activation!r} as arrays")
        arrays[f"kernel_{i}"] = np.asarray(kernel, dtype=np.float32)
        arrays[f"bias_{i}"] = np.asarray(bias, dtype=np.float32)
        arrays[f"activation_{i}"] = np.array(activation)
    np.savez_compressed(path, **arrays)
    return Path(path)


def export_keras(model: Any, path: Path) -> Path:
    """Write a Keras ANN (Normalization -> Dense ReLU x k -> Dense softmax; dropout does nothing
    at inference) as arrays. Any other layer is refused, so the export is exact or absent."""
    mean = scale = None
    layers = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in ("InputLayer", "Dropout"):
            continue
        if kind == "Normalization":
            # Keras' Normalization: (x - mean) / max(sqrt(variance), epsilon).
            mean = np.asarray(layer.mean).reshape(-1)
            scale = np.maximum(np.sqrt(np.asarray(layer.variance).reshape(-1)), 1e-7)
        elif kind == "Dense":
            kernel, bias = layer.get_weights()
            layers.append((kernel, bias, layer.activation.__name__))
        else:
            raise ValueError(f"cannot export layer {layer.name} ({kind}) as arrays")
    if mean is None:
        raise ValueError("the Keras model has no Normalization layer")
    return _save(path, mean, scale, layers)


def export_sklearn(pipeline: Any, path: Path) -> Path:
    """Write ``Pipeline(StandardScaler, MLPClassifier)`` as arrays (ReLU hidden layers, softmax out)."""
    scaler, mlp = pipeline[0], pipeline[-1]
    if mlp.activation != "relu" or mlp.out_activation_ not in ("softmax", "logistic") or len(pipeline) != 2:
        raise ValueError("only Pipeline(StandardScaler, MLPClassifier(activation='relu')) is exported")
    n = len(mlp.coefs_)
    layers = [(w, b, "relu" if i < n - 1 else mlp.out_activation_)
              for i, (w, b) in enumerate(zip(mlp.coefs_, mlp.intercepts_))]
    mean = scaler.mean_ if scaler.with_mean else np.zeros(scaler.n_features_in_)
    scale = scaler.scale_ if scaler.with_std else np.ones(scaler.n_features_in_)
    return _save(path, mean, scale, layers)


def cast_arrays(path: Path, dtype: str) -> Path:
    """Rewrite an exported network's weights as ``dtype`` ("float16" halves the file; the
    standardisation stays float32 and numpy evaluates in float32 either way)."""
    with np.load(Path(path), allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    for key in arrays:
        if "kernel" in key or "bias" in key:  # Dense exports and the cnn's conv_/dense_/out_ arrays
            arrays[key] = arrays[key].astype(dtype)
    np.savez_compressed(path, **arrays)
    return Path(path)


class DenseNetwork:
    """An exported network: ``predict_proba`` like the estimator it was exported from.

    Attributes
    ----------
    classes_ : np.ndarray of str, output order of the softmax
    """

    def __init__(self, arrays: dict[str, np.ndarray], classes: list[str]) -> None:
        self.mean = arrays["mean"]
        self.scale = arrays["scale"] if "scale" in arrays else np.maximum(np.sqrt(arrays["variance"]), 1e-7)
        count = sum(1 for k in arrays if k.startswith("kernel_"))
        self.layers = [(arrays[f"kernel_{i}"], arrays[f"bias_{i}"], str(arrays[f"activation_{i}"]))
                       for i in range(count)]
        if not self.layers or any(a not in _ACTIVATIONS for _, _, a in self.layers):
            raise ValueError("not an exported network of Dense ReLU/softmax layers")
        self.classes_ = np.asarray(classes)

    @classmethod
    def load(cls, path: Path, *, classes: list[str]) -> "DenseNetwork":
        with np.load(Path(path), allow_pickle=False) as data:
            return cls({k: data[k] for k in data.files}, classes)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities [shape=(n, n_classes)] in ``classes_`` order."""
        x = (np.asarray(X, dtype=np.float32) - self.mean) / self.scale
        for kernel, bias, activation in self.layers:
            x = x @ kernel.astype(np.float32, copy=False) + bias.astype(np.float32, copy=False)
            if activation == "relu":
                np.maximum(x, 0.0, out=x)
        x = x.astype(np.float64)
        if self.layers[-1][2] == "logistic":  # two classes, one unit: P(second class)
            p = 1.0 / (1.0 + np.exp(-x[:, 0]))
            return np.column_stack([1.0 - p, p])
        x -= x.max(axis=1, keepdims=True)
        np.exp(x, out=x)
        return x / x.sum(axis=1, keepdims=True)

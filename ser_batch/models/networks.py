"""Both classifiers as plain arrays, evaluated with numpy: the scoring path's models.

The Keras ANN and the scikit-learn MLP are the same kind of network: standardise the
features, Dense layers with ReLU, a softmax output. At training time each is also written
as an ``.npz`` of those arrays (:func:`export_keras`, :func:`export_sklearn`); scoring
evaluates them here, which gives the same probabilities to float32 rounding without
importing TensorFlow or scikit-learn into a worker (seconds of start-up and hundreds of MB
per process), and without unpickling anything (``allow_pickle=False``).

An array file comes from a bundle, which anyone can make: :func:`read_arrays` checks every
array's header (shape, dtype, and that the bytes it claims are the bytes stored) against
:data:`MAX_ARRAY_BYTES` before allocating anything, and the networks check that their arrays
fit together (each layer's input the previous one's output, the features and classes of the
bundle) and are finite, so a bad file is refused with its reason when the bundle is opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

#: Array exports inside a bundle.
KERAS_ARRAYS = "keras_ann.npz"
SKLEARN_ARRAYS = "sklearn_mlp.npz"
CNN_ARRAYS = "cnn.npz"  # the frame network (ser_batch.models.sequence)
GE2E_ARRAYS = "ge2e_mlp.npz"  # an MLP over the windows' GE2E embeddings (ser_batch.features.ge2e)
#: The GE2E speaker encoder's weights, in a bundle with a ``ge2e`` model (converted from Resemblyzer's).
GE2E_ENCODER = "ge2e_encoder.npz"
#: The licence note of the GE2E encoder's weights, beside them in a bundle.
GE2E_NOTICE = "NOTICE-ge2e.md"
ARRAYS = {"keras": KERAS_ARRAYS, "sklearn": SKLEARN_ARRAYS, "cnn": CNN_ARRAYS, "ge2e": GE2E_ARRAYS}

#: Hidden layers are ReLU; the output is softmax, or logistic for a two-class MLP (one unit).
_ACTIVATIONS = ("relu", "softmax", "logistic")
#: Most bytes the arrays of one model file may hold once read (the pretrained networks hold
#: under 2 MB; a 4096-4096 network on 805 features about 80 MB).
MAX_ARRAY_BYTES = 256 * 2**20
#: Most arrays one model file may hold.
MAX_ARRAYS = 1024
#: dtype kinds an exported network stores: floats (weights), integers (a dilation), text (an activation).
_KINDS = "fiuU"


def read_arrays(path: Path, *, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file, each header checked (:func:`check_archive`) before its
    array is allocated.

    Raises
    ------
    ValueError
        Saying which array is wrong and how, for anything but a plain archive of numeric or text arrays.
    """
    import zipfile

    with _open_archive(path, what="an array archive (.npz)") as archive:
        members = _checked_members(archive, max_bytes=max_bytes, arrays_only=True)
        arrays = {}
        for member in members:
            key = member.filename[: -len(".npy")]
            try:
                with archive.open(member) as handle:
                    arrays[key] = np.lib.format.read_array(handle, allow_pickle=False)
            except (OSError, EOFError, ValueError, zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
                raise ValueError(f"array {key!r} is unreadable: {type(exc).__name__}: {exc}") from None
    return arrays


def check_archive(path: Path, *, max_bytes: int | None = None) -> None:
    """Refuse a zip-based model file (skops, ``.keras``) whose members would unpack to more than
    ``max_bytes`` (default :data:`MAX_ARRAY_BYTES`), or whose ``.npy`` members' headers claim other
    bytes than they store: checked from the archive's directory and headers, nothing unpacked.

    Raises
    ------
    ValueError
        Saying which member is wrong and how.
    """
    with _open_archive(path, what="a zip archive") as archive:
        _checked_members(archive, max_bytes=max_bytes, arrays_only=False)


def _open_archive(path: Path, *, what: str) -> Any:
    import zipfile

    try:
        return zipfile.ZipFile(Path(path))
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise ValueError(f"not {what}: {exc}") from None


def _checked_members(archive: Any, *, max_bytes: int | None, arrays_only: bool) -> list[Any]:
    """The members of an open zip archive, once their sizes and array headers are checked.

    A ``.npy`` header states a shape and dtype, which is what numpy allocates; here the bytes it
    claims must be the bytes the archive stores for it, and all members together at most
    ``max_bytes``, so a small file claiming a huge shape is refused without allocating it."""
    import zipfile

    max_bytes = MAX_ARRAY_BYTES if max_bytes is None else max_bytes
    members = archive.infolist()
    if len(members) > MAX_ARRAYS:
        raise ValueError(f"it holds {len(members)} members (at most {MAX_ARRAYS})")
    names = [m.filename for m in members]
    if len(set(names)) != len(names):
        raise ValueError("it holds two members of the same name")
    stored = sum(m.file_size for m in members)
    if stored > max_bytes:
        raise ValueError(f"its arrays hold {stored / 2**20:.0f} MiB (at most {max_bytes / 2**20:.0f} MiB)")
    for member in members:
        if not member.filename.endswith(".npy"):
            if arrays_only:
                raise ValueError(f"{member.filename!r} is not an array (.npy)")
            continue
        key = member.filename[: -len(".npy")]
        try:
            with archive.open(member) as handle:
                shape, dtype, header = _array_header(handle)
        except (OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
            raise ValueError(f"array {key!r} is unreadable: {type(exc).__name__}: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"array {key!r}: {exc}") from None
        claimed = dtype.itemsize * int(np.prod(shape, dtype=object))
        if header + claimed != member.file_size:
            raise ValueError(f"array {key!r}: its header claims shape {shape} of {dtype} ({claimed} bytes) but "
                             f"{member.file_size - header} bytes are stored")
        if arrays_only and (dtype.hasobject or dtype.kind not in _KINDS or dtype.fields is not None):
            raise ValueError(f"array {key!r}: dtype {dtype} is not a plain number or text")
    return members


def _array_header(handle: Any) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and header length of the ``.npy`` stream ``handle`` (at its start)."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
    else:
        raise ValueError(f".npy format {version[0]}.{version[1]} is not read")
    return tuple(int(n) for n in shape), dtype, handle.tell()


def check_finite(arrays: dict[str, np.ndarray]) -> None:
    """Refuse NaN or infinite weights (they make every probability NaN)."""
    for key, value in arrays.items():
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise ValueError(f"array {key!r} holds NaN or infinite values")


def _shape_error(key: str, shape: tuple[int, ...], want: str) -> ValueError:
    return ValueError(f"array {key!r} has shape {shape}, expected {want}")


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


def require_arrays(arrays: dict[str, np.ndarray], needed: list[str], *, layers: int, what: str,
                   kinds: Callable[[str], str]) -> None:
    """Raise unless an export has at least one layer and every ``needed`` array, each of a dtype
    kind in ``kinds(key)`` (numpy's ``dtype.kind`` letters: "f" float, "U" text, "iu" integer).

    Raises
    ------
    ValueError
        Naming what is missing, or the first array of the wrong dtype.
    """
    missing = [k for k in needed if k not in arrays]
    if not layers or missing:
        raise ValueError(f"not an exported {what}" + (f" (no {', '.join(missing)})" if missing else ""))
    for key in needed:
        if arrays[key].dtype.kind not in kinds(key):
            raise ValueError(f"array {key!r} has dtype {arrays[key].dtype}")


def check_dense(arrays: dict[str, np.ndarray], *, n_classes: int, n_features: int | None = None) -> None:
    """Refuse arrays that are not one Dense ReLU network from ``n_features`` inputs to ``n_classes``
    outputs (one logistic unit for two classes), with finite weights.

    Raises
    ------
    ValueError
        Naming the first array that does not fit.
    """
    count = sum(1 for k in arrays if k.startswith("kernel_"))
    needed = ["mean", "scale" if "variance" not in arrays else "variance"]
    needed += [f"{kind}_{i}" for i in range(count) for kind in ("kernel", "bias", "activation")]
    require_arrays(arrays, needed, layers=count, what="network of Dense layers",
                   kinds=lambda key: "U" if key.startswith("activation_") else "f")
    width = n_features if n_features is not None else int(np.prod(arrays["mean"].shape))
    for key in needed[:2]:
        if arrays[key].shape != (width,):
            raise _shape_error(key, arrays[key].shape, f"({width},), one value per feature")
    for i in range(count):
        kernel, bias, activation = arrays[f"kernel_{i}"], arrays[f"bias_{i}"], arrays[f"activation_{i}"]
        if kernel.ndim != 2 or kernel.shape[0] != width:
            raise _shape_error(f"kernel_{i}", kernel.shape, f"({width}, units)")
        width = kernel.shape[1]
        if bias.shape != (width,):
            raise _shape_error(f"bias_{i}", bias.shape, f"({width},)")
        last = i == count - 1
        if activation.shape != () or str(activation) not in (("softmax", "logistic") if last else ("relu",)):
            raise ValueError(f"array 'activation_{i}' is {str(activation)[:20]!r}: hidden layers are relu, "
                             "the output softmax or logistic")
    logistic = str(arrays[f"activation_{count - 1}"]) == "logistic"
    if (width, n_classes) != ((1, 2) if logistic else (n_classes, n_classes)):
        raise ValueError(f"the network has {width} outputs for the bundle's {n_classes} classes")
    check_finite({k: arrays[k] for k in needed})
    scale = arrays["scale"] if "scale" in arrays else arrays["variance"]
    if np.any(scale <= 0 if "scale" in arrays else scale < 0):
        raise ValueError("array 'scale' holds values <= 0")


def check_conv_stack(arrays: dict[str, np.ndarray], count: int, *, n_bands: int | None) -> tuple[int | None,
                                                                                           list[tuple[int, int]]]:
    """The convolutions ``conv_kernel_i`` ``(taps, c_in, c_out)`` of an exported frame network, each
    reading the one before (the first ``n_bands``, when given), with a bias of ``c_out`` and a scalar
    integer dilation: the last width and each layer's ``(taps, dilation)`` (whose limits are the
    network's own to check).

    Raises
    ------
    ValueError
        Naming the first array that does not fit.
    """
    width, layers = n_bands, []
    for i in range(count):
        kernel = arrays[f"conv_kernel_{i}"]
        if kernel.ndim != 3 or (width is not None and kernel.shape[1] != width) or 0 in kernel.shape:
            raise ValueError(f"array 'conv_kernel_{i}' has shape {kernel.shape}, expected (taps, {width or 'bands'}, "
                             "channels)")
        width = kernel.shape[2]
        for key, shape in ((f"conv_bias_{i}", (width,)), (f"conv_dilation_{i}", ())):
            if arrays[key].shape != shape:
                raise ValueError(f"array {key!r} has shape {arrays[key].shape}, expected {shape}")
        layers.append((kernel.shape[0], int(arrays[f"conv_dilation_{i}"])))
    return width, layers


class DenseNetwork:
    """An exported network: ``predict_proba`` like the estimator it was exported from.

    Attributes
    ----------
    classes_ : np.ndarray of str, output order of the softmax
    """

    def __init__(self, arrays: dict[str, np.ndarray], classes: list[str], *, n_features: int | None = None) -> None:
        check_dense(arrays, n_classes=len(classes), n_features=n_features)
        # float16 exports are widened once here, not on every call (the arithmetic is float32 either way).
        self.mean = np.asarray(arrays["mean"], dtype=np.float32)
        scale = arrays["scale"] if "scale" in arrays else np.maximum(np.sqrt(arrays["variance"]), 1e-7)
        self.scale = np.asarray(scale, dtype=np.float32)
        count = sum(1 for k in arrays if k.startswith("kernel_"))
        self.layers = [(np.asarray(arrays[f"kernel_{i}"], dtype=np.float32),
                        np.asarray(arrays[f"bias_{i}"], dtype=np.float32), str(arrays[f"activation_{i}"]))
                       for i in range(count)]
        self.classes_ = np.asarray(classes)

    @classmethod
    def load(cls, path: Path, *, classes: list[str], n_features: int | None = None) -> DenseNetwork:
        """The network of an array file, checked (:func:`read_arrays`, :func:`check_dense`)."""
        return cls(read_arrays(Path(path)), classes, n_features=n_features)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities [shape=(n, n_classes)] in ``classes_`` order."""
        x = (np.asarray(X, dtype=np.float32) - self.mean) / self.scale
        for kernel, bias, activation in self.layers:
            x = x @ kernel + bias
            if activation == "relu":
                np.maximum(x, 0.0, out=x)
        x = x.astype(np.float64)
        if self.layers[-1][2] == "logistic":  # two classes, one unit: P(second class)
            p = 1.0 / (1.0 + np.exp(-x[:, 0]))
            return np.column_stack([1.0 - p, p])
        x -= x.max(axis=1, keepdims=True)
        np.exp(x, out=x)
        return x / x.sum(axis=1, keepdims=True)

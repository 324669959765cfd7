"""The two classifiers of the recipe, as scikit-learn-style estimators.

* :func:`build_sklearn_mlp`: ``Pipeline(StandardScaler, MLPClassifier)``, saved and loaded
  without pickle by :func:`save_sklearn` / :func:`load_sklearn` (skops).
* :class:`KerasANN`: Dense layers with ReLU (300-50-20-10 by default) and a softmax
  output, Adam, categorical cross-entropy (label smoothing), dropout and L2; a fixed number
  of epochs, or early stopping on a stratified validation part of the training rows. The
  scaler fitted on the training rows is baked into the network as a ``Normalization``
  layer, so the saved ``.keras``/``.h5`` files are self-contained.

No Ray here; TensorFlow is imported only when a Keras model is built or loaded.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ser_batch.config import KerasConfig, SklearnConfig


def build_sklearn_mlp(params: SklearnConfig, *, seed: int) -> Any:
    """An unfitted ``Pipeline(StandardScaler, MLPClassifier)`` from the config."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    mlp = MLPClassifier(
        hidden_layer_sizes=tuple(params.hidden_layer_sizes),
        alpha=params.alpha,
        learning_rate_init=params.learning_rate_init,
        batch_size=params.batch_size,
        max_iter=params.max_iter,
        early_stopping=params.early_stopping,
        validation_fraction=params.validation_fraction,
        n_iter_no_change=params.n_iter_no_change,
        random_state=seed,
    )
    return Pipeline([("scaler", StandardScaler()), ("mlp", mlp)])


def configure_tensorflow(threads: int) -> None:
    """Limit TensorFlow to ``threads`` CPU threads (Ray does not do it for TF).

    Must run before TensorFlow executes anything in this process; later calls are no-ops.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # oneDNN's reordered float sums make runs differ in the last bits (and it logs a notice
    # on import); for networks this small it buys nothing.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(max(1, threads))
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(threads, 2)))
    except RuntimeError:
        pass  # already initialised in this worker: the first setting stays


class KerasANN(ClassifierMixin, BaseEstimator):
    """Keras feed-forward classifier with the sklearn API (``fit``/``predict_proba``).

    Parameters
    ----------
    hidden_layers : tuple of int, Dense ReLU layer widths
    epochs, batch_size, learning_rate, input_dropout, dropout, l2, label_smoothing,
    early_stopping, patience, validation_fraction : see :class:`ser_batch.config.KerasConfig`
    seed : int
    threads : int, TensorFlow CPU threads

    Attributes
    ----------
    classes_ : np.ndarray of str, output order of the softmax
    model_ : keras.Model (includes the input standardisation)
    history_ : dict of per-epoch ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``
    """

    def __init__(self, *, hidden_layers: tuple[int, ...] = (300, 50, 20, 10), epochs: int = 50,
                 batch_size: int = 128, learning_rate: float = 1e-3, input_dropout: float = 0.2,
                 dropout: tuple[float, ...] = (0.5, 0.2), l2: float = 1e-4, label_smoothing: float = 0.1,
                 early_stopping: bool = False, patience: int = 30, validation_fraction: float = 0.15,
                 seed: int = 42, threads: int = 1) -> None:
        self.hidden_layers = hidden_layers
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.input_dropout = input_dropout
        self.dropout = dropout
        self.l2 = l2
        self.label_smoothing = label_smoothing
        self.early_stopping = early_stopping
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.seed = seed
        self.threads = threads

    @classmethod
    def from_config(cls, params: KerasConfig, *, seed: int, threads: int = 1) -> "KerasANN":
        return cls(hidden_layers=tuple(params.hidden_layers), epochs=params.epochs,
                   batch_size=params.batch_size, learning_rate=params.learning_rate,
                   input_dropout=params.input_dropout, dropout=tuple(params.dropout), l2=params.l2,
                   label_smoothing=params.label_smoothing, early_stopping=params.early_stopping,
                   patience=params.patience, validation_fraction=params.validation_fraction,
                   seed=seed, threads=threads)

    def _build(self, mean: np.ndarray, variance: np.ndarray, n_classes: int, *, masked: bool = False) -> Any:
        import keras

        regularizer = keras.regularizers.L2(self.l2) if self.l2 else None
        inputs = keras.Input(shape=(mean.shape[0],), name="features")
        x = keras.layers.Normalization(mean=mean, variance=variance, name="standardise")(inputs)
        if self.input_dropout:
            x = keras.layers.Dropout(self.input_dropout, name="input_dropout")(x)
        for i, width in enumerate(self.hidden_layers):
            x = keras.layers.Dense(width, activation="relu", kernel_regularizer=regularizer,
                                   name=f"dense_{i}")(x)
            rate = self.dropout[i] if i < len(self.dropout) else 0.0
            if rate:
                x = keras.layers.Dropout(rate, name=f"dropout_{i}")(x)
        outputs = keras.layers.Dense(n_classes, activation="softmax", name="emotion")(x)
        model = keras.Model(inputs, outputs, name="ser_ann")
        if masked:
            loss, metrics = masked_crossentropy(n_classes, label_smoothing=self.label_smoothing), [masked_accuracy(n_classes)]
        else:
            loss = keras.losses.CategoricalCrossentropy(label_smoothing=self.label_smoothing)
            metrics = ["accuracy"]
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=self.learning_rate), loss=loss, metrics=metrics)
        return model

    def fit(self, X: np.ndarray, y: np.ndarray, *, groups: np.ndarray | None = None) -> "KerasANN":
        """Fit on ``X`` [shape=(n, d)] and string labels ``y`` [shape=(n,)].

        ``groups`` [shape=(n,)] (the corpus of each row): a row's loss is the cross-entropy of the
        softmax restricted to the classes that occur in its group, so a corpus without ``calm``
        never pushes ``calm`` down (see :func:`masked_crossentropy`). When every group has every
        class this is the ordinary loss, and the same code runs as without ``groups``. Inference
        is unchanged: the network still gives a softmax over all classes.
        """
        from sklearn.model_selection import train_test_split

        configure_tensorflow(self.threads)
        import keras

        keras.utils.set_random_seed(self.seed)
        X = np.asarray(X, dtype=np.float32)
        self.classes_, codes = np.unique(np.asarray(y).astype(str), return_inverse=True)
        onehot = np.eye(len(self.classes_), dtype=np.float32)[codes]
        mask = None if groups is None else class_mask(codes, np.asarray(groups).astype(str), len(self.classes_))
        if mask is not None and mask.all():
            mask = None  # nothing absent: the plain loss, bit for bit
        if mask is not None:
            onehot = np.concatenate([onehot, mask], axis=1)  # the loss splits target and mask again
        fit_args: dict[str, Any] = {}
        if self.early_stopping:
            X, X_val, onehot, y_val = train_test_split(
                X, onehot, test_size=self.validation_fraction, stratify=codes, random_state=self.seed)
            fit_args = {"validation_data": (X_val, y_val), "callbacks": [keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=self.patience, restore_best_weights=True)]}
        mean, variance = X.mean(axis=0), X.var(axis=0)
        variance[variance == 0] = 1.0
        self.model_ = self._build(mean, variance, len(self.classes_), masked=mask is not None)
        self.masked_ = mask is not None
        history = self.model_.fit(X, onehot, epochs=self.epochs, batch_size=self.batch_size, verbose=0,
                                  shuffle=True, **fit_args)
        self.history_ = {k: [float(v) for v in vals] for k, vals in history.history.items()}
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities [shape=(n, n_classes)] in ``classes_`` order."""
        X = np.asarray(X, dtype=np.float32)
        return np.asarray(self.model_(X, training=False), dtype=np.float64)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def save(self, directory: Path, *, h5: bool = True) -> list[Path]:
        """Write ``keras_ann.keras``, its arrays ``keras_ann.npz`` (what ser-batch evaluates, see
        :mod:`ser_batch.models.networks`) and, with ``h5``, an HDF5 export for other tools; return their paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        import keras

        from ser_batch.models.networks import KERAS_ARRAYS, export_keras

        # An uncompiled copy: the Adam moments would triple the file size and are not
        # needed to predict.
        model = keras.Model.from_config(self.model_.get_config())
        model.set_weights(self.model_.get_weights())
        paths = [directory / "keras_ann.keras", export_keras(self.model_, directory / KERAS_ARRAYS)]
        model.save(paths[0])
        if h5:
            paths.append(directory / "keras_ann.h5")
            absl_logger = logging.getLogger("absl")
            level = absl_logger.level
            absl_logger.setLevel(logging.ERROR)  # the .h5 export is asked for; skip the "legacy" nag
            try:
                model.save(paths[-1])
            finally:
                absl_logger.setLevel(level)
        return paths

    @classmethod
    def load(cls, path: Path, *, classes: list[str], threads: int = 1) -> "KerasANN":
        """Load a saved ``.keras`` model in Keras' safe mode; ``classes`` is its output order
        (from the manifest)."""
        configure_tensorflow(threads)
        import keras

        model = cls(threads=threads)
        # safe_mode refuses Lambda layers and other serialised Python code in the file.
        model.model_ = keras.models.load_model(Path(path), compile=False, safe_mode=True)
        model.classes_ = np.asarray(classes)
        model.history_ = {}
        return model


def class_mask(codes: np.ndarray, groups: np.ndarray, n_classes: int) -> np.ndarray:
    """Per row, the classes its group has: float32 [shape=(n, n_classes)], 1 where class ``j``
    occurs among the rows of the row's group (``codes`` are class indices, ``groups`` names)."""
    mask = np.zeros((len(codes), n_classes), dtype=np.float32)
    for group in np.unique(groups):
        rows = groups == group
        mask[np.ix_(rows, np.unique(codes[rows]))] = 1.0
    return mask


def masked_crossentropy(n_classes: int, *, label_smoothing: float = 0.0) -> Any:
    """Keras loss on ``y_true = [one-hot | mask]`` [shape=(n, 2 * n_classes)] and softmax outputs
    ``y_pred`` [shape=(n, n_classes)]: the cross-entropy of the softmax restricted to the row's
    masked-in classes, ``p_i / sum_kept p_j`` (= ``exp(z_i) / sum_kept exp(z_j)``), with label
    smoothing spread over the kept classes only. An absent class contributes neither a target nor
    a term of the normaliser, so its logit gets no gradient from the row (zero up to float rounding).
    """
    import keras
    from keras import ops

    eps = keras.config.epsilon()

    def loss(y_true: Any, y_pred: Any) -> Any:
        target, mask = y_true[:, :n_classes], y_true[:, n_classes:]
        kept = ops.sum(mask, axis=-1, keepdims=True)
        target = target * (1.0 - label_smoothing) + label_smoothing * mask / kept
        kept_total = ops.sum(y_pred * mask, axis=-1, keepdims=True)
        restricted = ops.log(ops.clip(y_pred, eps, 1.0)) - ops.log(ops.clip(kept_total, eps, 1.0))
        return -ops.sum(target * mask * restricted, axis=-1)

    loss.__name__ = "masked_crossentropy"
    return loss


def masked_accuracy(n_classes: int) -> Any:
    """Keras metric ``accuracy`` for ``y_true = [one-hot | mask]``: the plain argmax over all classes."""
    from keras import ops

    def accuracy(y_true: Any, y_pred: Any) -> Any:
        return ops.cast(ops.argmax(y_true[:, :n_classes], axis=-1) == ops.argmax(y_pred, axis=-1), "float32")

    return accuracy


def stack_segments(segments: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Stack per-row window matrices into one training/scoring matrix.

    Returns
    -------
    stacked : np.ndarray [shape=(sum k_i, n_features)]
    rows : np.ndarray [shape=(sum k_i,)], the row each stacked vector came from
    """
    rows = np.repeat(np.arange(len(segments)), [len(s) for s in segments])
    stacked = np.concatenate(segments) if segments else np.zeros((0, 0), dtype=np.float32)
    return stacked, rows


def mean_by_row(proba: np.ndarray, rows: np.ndarray, n_rows: int, *, keep: np.ndarray | None = None) -> np.ndarray:
    """Average window probabilities per row: ``[shape=(n_rows, n_classes)]``.

    With ``keep`` (a mask over the windows, e.g. the windows with speech), a row is the mean
    of its kept windows, or of all its windows when none is kept: the rule by which ``score``
    summarises a file."""
    if keep is not None:
        kept_rows = np.bincount(rows[keep], minlength=n_rows)
        keep = keep | (kept_rows[rows] == 0)
        proba, rows = proba[keep], rows[keep]
    sums = np.zeros((n_rows, proba.shape[1]))
    np.add.at(sums, rows, proba)
    counts = np.bincount(rows, minlength=n_rows)[:, None]
    return sums / np.maximum(counts, 1)


def save_sklearn(pipeline: Any, path: Path, *, pickle_path: Path | None = None) -> list[Path]:
    """Write a fitted pipeline as a skops file and as arrays (``sklearn_mlp.npz``, see
    :mod:`ser_batch.models.networks`), and as a joblib pickle only if ``pickle_path`` is given.

    The optimiser state (needed only to keep training) is left out of both. skops stores
    the estimators as a description plus arrays, so loading it runs no code from the file.

    Returns
    -------
    list of Path, the files written
    """
    import copy
    import zipfile

    import skops.io as sio

    pipeline = copy.deepcopy(pipeline)
    for _, step in pipeline.steps:
        for attribute in ("_optimizer", "_best_coefs", "_best_intercepts"):
            if hasattr(step, attribute):
                delattr(step, attribute)
    sio.dump(pipeline, Path(path), compression=zipfile.ZIP_DEFLATED, compresslevel=6)
    written = [Path(path)]
    from ser_batch.models.networks import SKLEARN_ARRAYS, export_sklearn

    # The same network as arrays: what scoring evaluates (no scikit-learn import in workers).
    written.append(export_sklearn(pipeline, Path(path).with_name(SKLEARN_ARRAYS)))
    if pickle_path is not None:
        import joblib

        joblib.dump(pipeline, pickle_path, compress=3)
        written.append(Path(pickle_path))
    return written


def load_sklearn(path: Path) -> Any:
    """Load a pipeline written by :func:`save_sklearn` without unpickling anything.

    Only skops' default trusted types (scikit-learn estimators, numpy and builtin
    containers) are rebuilt; any other type in the file refuses the whole file.

    Raises
    ------
    ValueError
        Naming the untrusted types, if the file holds any.
    """
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=Path(path))
    if untrusted:
        raise ValueError(f"it holds types outside scikit-learn and numpy: {', '.join(untrusted)}")
    return sio.load(Path(path))

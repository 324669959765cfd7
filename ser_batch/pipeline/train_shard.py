"""What a ``train`` task does: fit one model of one model set, save it, score the test rows.

The run context (:class:`FitJob`) is built once on the driver of :mod:`ser_batch.pipeline.train`
and sent whole to the workers: every set's arrays, the settings, the bundle's staging folder and
the threads a fit may use. A shard is one model of one set; its result (:class:`FitResult`)
carries the test probabilities and history, not the model (its files are in the staging folder).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ser_batch.cluster.engine import ShardJob
from ser_batch.config import Config
from ser_batch.errors import ClusterError, DatasetError
from ser_batch.models import bundle
from ser_batch.features.melframes import StreamFrames
from ser_batch.models.estimators import mean_by_row
from ser_batch.pipeline.train_sets import CnnRows


@dataclass(frozen=True)
class FitResult:
    """What fitting one model gave: its classes, its test probabilities and history, its files."""

    set: str
    framework: str
    classes: list[str]
    #: Probabilities of the test rows [shape=(n_test_rows, n_classes)], in ``classes`` order.
    proba: np.ndarray
    history: dict[str, Any]
    fit_s: float
    #: Files written into the staging folder, relative to it.
    files: list[str]
    #: Models fitted with this one: a plain set's cnn fits its normalised set's cnn head.
    also: tuple["FitResult", ...] = ()


@dataclass(frozen=True)
class FitJob(ShardJob[tuple[str, str], FitResult]):
    """The run context of ``train``'s fits, sent whole to the workers: every set's arrays
    (:meth:`ser_batch.pipeline.train_sets.SetData.arrays`), the settings, the staging folder and
    the threads each fit uses. A shard is one ``(set name, framework)``: a model of a set."""

    sets: dict[str, dict[str, Any]]
    config: Config
    staging: str
    threads: int
    doing: ClassVar[str] = "fitting"
    task: ClassVar[str] = "fit_model"

    def run_shard(self, shard: tuple[str, str]) -> FitResult:
        """Fit the ``framework`` model of set ``name`` (``shard = (name, framework)``) on that set's data.
        Sets other than the root's keep only the array export of their models."""
        name, framework = shard
        data = dict(self.sets[name])
        directory = data.pop("dir")
        normalized = data.pop("cnn_normalized")
        test_groups = data.pop("test_groups")
        network: list[Any] = []
        fitted = fit_model(framework, **data, config=self.config, staging=str(Path(self.staging) / directory),
                           threads=self.threads, arrays_only=bool(directory) or not self.config.train.export_native,
                           keep_network=network)
        files = [f"{directory}/{f}" if directory else f for f in fitted.files]
        also = ()
        if framework == "cnn" and normalized is not None:
            also = (fit_normalized_cnn(network[0], data, test_groups, config=self.config, staging=Path(self.staging),
                                       set_name=normalized[0], directory=normalized[1], threads=self.threads),)
        return FitResult(name, framework, fitted.classes, fitted.proba, fitted.history, fitted.fit_s, files, also)

    def lost(self, shard: tuple[str, str], error: str) -> FitResult:
        name, framework = shard
        raise ClusterError(f"fitting {framework} of model set {name} failed: {error.replace('this file', 'it')}")


def fit_model(framework: str, *, X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray,
              test_rows: np.ndarray | None, config: Config, staging: str, threads: int,
              test_keep: np.ndarray | None = None, arrays_only: bool = False,
              groups_train: np.ndarray | None = None,
              frames_train: CnnRows | None = None,
              frames_test: list[StreamFrames] | None = None,
              embeddings_train: np.ndarray | None = None, embeddings_test: np.ndarray | None = None,
              keep_network: list[Any] | None = None) -> FitResult:
    """Fit the ``framework`` model (keras, sklearn or cnn), save it into ``staging`` and score the
    test rows (runs in a worker).

    With ``test_rows`` the test vectors are windows: row ``test_rows[i]`` owns vector ``i``
    and a row's probabilities are the mean over its windows with speech (``test_keep``), or
    over all of them when none has speech -- the rule ``score`` summarises files by.
    ``arrays_only`` keeps only the array export (``*.npz``, what scoring evaluates).
    ``groups_train`` (the corpus of each training vector) lets the Keras ANN leave out of a row's
    loss the classes its corpus lacks (``train.absent_classes = "mask"``); the scikit-learn MLP
    has no per-row loss and ignores it.
    The ``cnn``
    model trains on ``frames_train`` (each training row's log-mel frames, speech flags and label) and
    is tested on ``frames_test`` (each test row as one stream, windows in ``X_test``'s order); with
    ``keep_network`` (a list), its numpy network is appended to it. ``ge2e`` is a scikit-learn MLP
    (the ``[sklearn]`` settings) over ``embeddings_train``, the windows' GE2E embeddings, tested on
    ``embeddings_test``; it also writes the encoder's weights into the bundle's root.

    Returns
    -------
    FitResult
        Of the set ``""`` (:class:`FitJob` names it).
    """
    started = time.perf_counter()
    Path(staging).mkdir(parents=True, exist_ok=True)
    if framework == "cnn" and frames_train is None:
        raise DatasetError("the cnn model trains on each row's log-mel frames, and these features have none: "
                           "re-extract with the rich recipe (extract.store_frames = true)")
    if framework == "cnn":
        from ser_batch.features.windows import WindowGrid
        from ser_batch.models.sequence import SequenceClassifier

        if frames_train.speech is None and config.cnn.pooling == "speech":
            raise DatasetError("the cnn pools its windows over the frames judged speech, and these features do not "
                               "say which those are (no frame_speech column: extracted by an older ser-batch); "
                               "re-extract them, or train with --set cnn.pooling=all")
        grid = WindowGrid.of(config.features, config.audio.sample_rate)
        model = SequenceClassifier(params=config.cnn, window=grid.window, frame_s=grid.frame_s,
                                   features=config.features, sample_rate=config.audio.sample_rate,
                                   seed=config.train.seed, threads=threads)
        rows = frames_train
        model.fit(rows.frames, rows.labels, speech=rows.speech,
                  groups=rows.corpora if config.train.absent_classes == "mask" else None,
                  speakers=rows.speakers)
        files = [p.name for p in model.save(Path(staging), native=not arrays_only)]
        history = model.history_
        X_test = frames_test  # None without test rows (--split none)
        if keep_network is not None:
            keep_network.append(model.network_)
    elif framework == "ge2e":
        if embeddings_train is None:
            raise DatasetError("the ge2e model trains on each window's GE2E embedding, and these features have none: "
                               "re-extract with --set extract.embeddings=ge2e")
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        from ser_batch.features.ge2e import ENCODER_NOTICE, encoder_arrays, read_checkpoint, weights_path
        from ser_batch.models.estimators import build_sklearn_mlp
        from ser_batch.models.networks import GE2E_ARRAYS, GE2E_ENCODER, GE2E_NOTICE, export_sklearn

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = build_sklearn_mlp(config.sklearn, seed=config.train.seed).fit(embeddings_train, y_train.astype(str))
        export_sklearn(model, Path(staging) / GE2E_ARRAYS)
        # The encoder travels with the bundle (float32: scoring must embed as extraction did).
        np.savez_compressed(Path(staging) / GE2E_ENCODER, **encoder_arrays(read_checkpoint(weights_path())))
        (Path(staging) / GE2E_NOTICE).write_text(ENCODER_NOTICE)  # its licence travels with its weights
        files = [GE2E_ARRAYS, GE2E_ENCODER, GE2E_NOTICE]
        history = {"loss": [float(v) for v in model[-1].loss_curve_]}
        X_test = embeddings_test
    elif framework == "keras":
        from ser_batch.models.estimators import KerasANN

        groups = groups_train if config.train.absent_classes == "mask" else None
        model = KerasANN.from_config(config.keras, seed=config.train.seed, threads=threads).fit(X_train, y_train,
                                                                                              groups=groups)
        files = [p.name for p in model.save(Path(staging), h5=config.train.export_h5)]
        history = model.history_
    else:
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        from ser_batch.models.estimators import build_sklearn_mlp, save_sklearn

        with warnings.catch_warnings():
            # A fixed iteration budget is the tuned setting (docs/accuracy.md), not a failure.
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = build_sklearn_mlp(config.sklearn, seed=config.train.seed).fit(X_train, y_train.astype(str))
        pickle_path = Path(staging) / bundle.SKLEARN_PICKLE if config.train.export_joblib else None
        files = [p.name for p in save_sklearn(model, Path(staging) / bundle.SKLEARN_FILE,
                                              pickle_path=pickle_path)]
        history = {"loss": [float(v) for v in model[-1].loss_curve_]}
    if arrays_only and framework != "ge2e":
        from ser_batch.models.networks import ARRAYS

        for name in [f for f in files if f != ARRAYS[framework]]:
            (Path(staging) / name).unlink()
        files = [ARRAYS[framework]]
    if config.train.array_dtype != "float32":
        from ser_batch.models.networks import ARRAYS, cast_arrays

        cast_arrays(Path(staging) / ARRAYS[framework], config.train.array_dtype)
    fit_s = time.perf_counter() - started
    proba = np.zeros((0, len(model.classes_)))
    if X_test is not None and len(X_test):
        proba = np.asarray(model.predict_proba(X_test), dtype=np.float64)
        if test_rows is not None:
            proba = mean_by_row(proba, test_rows, int(test_rows.max()) + 1, keep=test_keep)
    return FitResult("", framework, [str(c) for c in model.classes_], proba.astype(np.float32), history, fit_s, files)


def fit_normalized_cnn(network: Any, data: dict[str, Any], test_groups: list[Any] | None, *, config: Config,
                       staging: Path, set_name: str, directory: str, threads: int) -> FitResult:
    """The normalised set ``set_name``'s cnn: a head on the plain cnn's encoder, for statistics z-scored
    per (speaker, recording) (:func:`ser_batch.models.sequence.fit_normalized_head`), written to
    ``staging/directory/cnn.npz`` and tested on the same test rows, each group z-scored by its own windows."""
    from ser_batch.features.windows import row_stream
    from ser_batch.models.networks import ARRAYS, cast_arrays
    from ser_batch.models.normalize import normalize_groups
    from ser_batch.models.sequence import StreamNetwork, fit_normalized_head

    started = time.perf_counter()
    rows: CnnRows = data["frames_train"]
    streams = [row_stream(f, None if rows.speech is None else rows.speech[i], config=config.features,
                          sample_rate=config.audio.sample_rate) for i, f in enumerate(rows.frames)]
    arrays = fit_normalized_head(network, streams, rows.labels, rows.groups, params=config.cnn,
                                 min_speech_ratio=config.score.min_speech_ratio,
                                 corpora=rows.corpora if config.train.absent_classes == "mask" else None,
                                 seed=config.train.seed, threads=threads)
    path = staging / directory / ARRAYS["cnn"]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    if config.train.array_dtype != "float32":
        cast_arrays(path, config.train.array_dtype)
    head = StreamNetwork(arrays, list(network.classes_))
    proba = np.zeros((0, len(network.classes_)), dtype=np.float32)
    tests: list[StreamFrames] | None = data.get("frames_test")
    if tests and test_groups is not None and data.get("test_rows") is not None:
        owner = np.repeat(np.arange(len(tests)), [len(t) for t in tests])
        keep = data["test_keep"]
        windows = head.predict_proba(tests, normalize=lambda pooled: normalize_groups(
            pooled, [test_groups[i] for i in owner], keep))
        proba = mean_by_row(windows, data["test_rows"], int(data["test_rows"].max()) + 1, keep=keep).astype(np.float32)
    return FitResult(set_name, "cnn", [str(c) for c in network.classes_], proba, {}, time.perf_counter() - started,
                     [f"{directory}/{ARRAYS['cnn']}"])

"""Which model sets a training run fits, and the training and test data of each.

The ``global`` set is what every bundle has. With ``train.narrowband = "separate"`` and
telephone-band rows in the features (``band == "narrow"``: 8 kHz inputs and telephone copies),
the global set is fitted on the wideband rows and a ``narrow`` set on the narrow ones; with
``"mixed"`` one global set sees every row. ``train.normalize = "speaker"`` adds the
normalised variant of each (``speaker``, ``narrow-speaker``), fitted on vectors z-scored by
their actor's own statistics (:mod:`ser_batch.models.normalize`), per band.

Rules that keep the test figures honest:

* statistics are taken separately on the training and on the test part, per actor and band,
  so a test actor is normalised by its own windows only and nothing is pooled across the split;
* test metrics use the original rows (``augment`` null) of the test part; augmented copies of
  test files are never trained on (the split keeps all rows of one path on one side). A
  narrow set whose test part has no original narrow row is measured on the telephone copies
  of the test files, and its entry says so.

Feature sets without ``band``/``augment`` (made before augmentation existed) are all wideband
originals.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ser_batch import schema
from ser_batch.config import Config
from ser_batch.data.featureset import FeatureSet
from ser_batch.errors import DatasetError
from ser_batch.features.melframes import StreamFrames
from ser_batch.models.estimators import stack_segments
from ser_batch.models.model_sets import GLOBAL, set_name
from ser_batch.models.normalize import normalize_groups
from ser_batch.schema import NARROW, WIDE

log = logging.getLogger(__name__)


def row_bands(data: FeatureSet) -> np.ndarray:
    """:data:`~ser_batch.schema.WIDE` / :data:`~ser_batch.schema.NARROW` per row [shape=(n_rows,)], object
    (rows of an unreadable file, with no band, count as wide)."""
    return np.array([NARROW if b == NARROW else WIDE for b in data.band], dtype=object)


def row_is_original(data: FeatureSet) -> np.ndarray:
    """Rows of the original audio, not augmented copies [shape=(n_rows,)], bool."""
    return np.array([a is None for a in data.augment], dtype=bool)


@dataclass
class CnnRows:
    """The ``cnn``'s training rows: per row its log-mel frames ``(t_i, b)`` and speech flags ``(t_i,)``
    (None: the features have none), and ``(n,)`` arrays of labels, corpora and speakers."""

    frames: list[np.ndarray]
    speech: list[np.ndarray] | None
    labels: np.ndarray
    corpora: np.ndarray
    speakers: np.ndarray
    #: ``(n,)`` each row's normalisation group, (actor, recording condition), as the normalised
    #: sets' dense models are z-scored (None without ``train.normalize = "speaker"``)
    groups: list[tuple[Any, Any]] | None = None


@dataclass
class SetData:
    """Training and test data of one model set (vectors are windows, or clips without windows).

    Attributes
    ----------
    X_train : np.ndarray [shape=(n_vectors, n_features)], float32
    y_train : np.ndarray [shape=(n_vectors,)], str
    X_test : np.ndarray [shape=(m_vectors, n_features)]
    test_rows : np.ndarray [shape=(m_vectors,)] or None, the test row (0..n_test-1) of each
        test vector when vectors are windows
    test_keep : np.ndarray of bool [shape=(m_vectors,)] or None, test windows with speech
    test_index : np.ndarray [shape=(n_test,)], rows of the feature set tested
    groups_train : np.ndarray [shape=(n_vectors,)], str, the corpus of each training vector
    """

    name: str
    dir: str
    band: str
    normalize: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    test_rows: np.ndarray | None
    test_keep: np.ndarray | None
    test_index: np.ndarray
    test_on: str
    groups_train: np.ndarray | None = None
    #: ``cnn`` inputs, when the features store frames (sets of plain features only): each training
    #: row's log-mel frames, speech flags, label, corpus, speaker and file (:class:`CnnRows`); each
    #: test row as one stream (their windows in ``X_test`` order).
    frames_train: CnnRows | None = None
    frames_test: list[StreamFrames] | None = None
    #: A plain set's cnn also fits the head of this normalised set (its name and folder), on the
    #: same rows z-scored per :attr:`CnnRows.groups`; ``test_groups``: the test rows' groups.
    cnn_normalized: tuple[str, str] | None = None
    test_groups: list[tuple[Any, Any]] | None = None
    #: ``ge2e`` inputs, when the features store window embeddings (plain sets only): the training and
    #: test windows' embeddings, in the order of ``X_train`` and ``X_test``.
    embeddings_train: np.ndarray | None = None
    embeddings_test: np.ndarray | None = None

    def arrays(self) -> dict[str, Any]:
        """What a fitting task needs (put in Ray's object store once)."""
        return {"X_train": self.X_train, "y_train": self.y_train, "X_test": self.X_test,
                "test_rows": self.test_rows, "test_keep": self.test_keep, "dir": self.dir,
                "groups_train": self.groups_train,
                "frames_train": self.frames_train, "frames_test": self.frames_test,
                "cnn_normalized": self.cnn_normalized, "test_groups": self.test_groups,
                "embeddings_train": self.embeddings_train, "embeddings_test": self.embeddings_test}

    def models(self, requested: tuple[str, ...]) -> list[str]:
        """The requested models this set holds (a normalised set's cnn is fitted by its band's plain
        set; ``ge2e`` is in plain sets only, a normalised set borrows its band's)."""
        return [m for m in requested if m != "ge2e" or self.normalize == "none"]

    def fitted(self, requested: tuple[str, ...]) -> list[str]:
        """The requested models this set's own tasks fit: ``cnn`` and ``ge2e`` only in plain sets (the
        cnn task fits the normalised set's cnn head too, on the same encoder)."""
        return [m for m in requested if m not in ("cnn", "ge2e") or self.normalize == "none"]

    def entry(self) -> dict[str, Any]:
        """This set's ``model_sets`` manifest entry, before its models and metrics are known."""
        return {"dir": self.dir, "band": self.band, "normalize": self.normalize,
                "vectors_train": int(len(self.X_train)), "rows_test": int(len(self.test_index)),
                "test_on": self.test_on}


def plan_sets(data: FeatureSet, train: np.ndarray, test: np.ndarray, *, config: Config,
              use_segments: bool) -> list[SetData]:
    """The sets to fit, global first, each with its data.

    Parameters
    ----------
    data : the labelled feature set
    train, test : row indices of the split's two parts (all rows of a path on one side)

    Raises
    ------
    DatasetError
        With ``train.normalize = "speaker"`` and a row without an actor, or when a narrow set
        would lack classes the global set has.
    """
    cfg = config.train
    normalizations = ["none", "speaker"] if cfg.normalize == "speaker" else ["none"]
    if cfg.normalize == "speaker":
        rows = np.concatenate([train, test])
        unknown = int(np.isnan(data.actor[rows]).sum())
        if unknown:
            raise DatasetError(
                f"--normalize speaker z-scores each speaker by their own statistics, so it needs the actor "
                f"column for every row; {unknown} rows have none (add actor to labels.csv, or train "
                "without --normalize)")
    bands = row_bands(data)
    separate = cfg.narrowband == "separate" and len(set(bands[train])) > 1
    band_rows = {WIDE: bands != NARROW, NARROW: bands == NARROW} if separate else {WIDE: np.ones(len(bands), dtype=bool)}
    labels = data.emotion.astype(str)
    classes = sorted(set(labels[train]))
    originals = row_is_original(data)
    planned = []
    for band, in_band in band_rows.items():
        train_rows = train[in_band[train]]
        test_rows, test_on = test[in_band[test] & originals[test]], "original rows of the test part"
        if band == NARROW and not len(test_rows):
            test_rows, test_on = test[in_band[test]], "telephone-band copies of the test files"
        missing = sorted(set(classes) - set(labels[train_rows]))
        if missing:
            raise DatasetError(f"the {band}band training rows have no {', '.join(missing)} rows; the {band} set "
                               "needs every class (or set train.narrowband = \"mixed\")")
        for normalize in normalizations:
            name = set_name(band, normalize != "none")
            planned.append(_set_data(data, name, band, normalize, train_rows, test_rows, test_on, bands,
                                     labels=labels, config=config, use_segments=use_segments))
    if cfg.normalize == "speaker":
        by_name = {s.name: s for s in planned}
        for plain in [s for s in planned if s.normalize == "none" and s.frames_train is not None]:
            normalized = by_name.get(set_name(plain.band, True))
            if normalized is not None:
                plain.cnn_normalized = (normalized.name, normalized.dir)
    planned.sort(key=lambda s: s.name != GLOBAL)
    for s in planned:
        log.info("model set %s: %d training vectors, %d test rows (%s)", s.name, len(s.X_train),
                 len(s.test_index), s.test_on)
    return planned


def _recording_groups(data: FeatureSet, rows: np.ndarray, bands: np.ndarray) -> list[tuple[Any, Any]]:
    """Each row's normalisation group: (actor, recording). Each copy (original, telephone-ulaw, ...)
    is one recording condition, as one stream is when scoring; one speaker on a telephone line sounds
    like another speaker."""
    recording = [a or b for a, b in zip(data.augment[rows], bands[rows])]
    return list(zip(data.actor[rows].tolist(), recording))


def _set_data(data: FeatureSet, name: str, band: str, normalize: str, train_rows: np.ndarray, test_rows: np.ndarray,
              test_on: str, bands: np.ndarray, *, labels: np.ndarray, config: Config, use_segments: bool) -> SetData:
    parts = []
    for rows in (train_rows, test_rows):
        if use_segments:
            X, owner = stack_segments([data.segments[i] for i in rows])
            keep = data.speech_windows(rows, min_speech_ratio=config.score.min_speech_ratio)
            if X.size == 0:
                X = np.zeros((0, data.X.shape[1]), dtype=np.float32)
        else:
            X, owner, keep = data.X[rows], np.arange(len(rows)), None
        if normalize == "speaker" and len(X):
            groups = _recording_groups(data, rows, bands)
            X = normalize_groups(X, [groups[i] for i in owner], keep)
        parts.append((X, owner, keep))
    (X_train, train_owner, _), (X_test, test_owner, test_keep) = parts
    frames_train = frames_test = None
    if use_segments and normalize == "none" and data.frames is not None:
        from ser_batch.features.windows import row_stream

        flags = data.frame_speech
        corpora = data.corpus.astype(str)
        frames_train = CnnRows(frames=[data.frames[i] for i in train_rows],
                               speech=None if flags is None else [flags[i] for i in train_rows],
                               labels=labels[train_rows], corpora=corpora[train_rows],
                               speakers=np.array([f"{c}:{a}" for c, a in
                                                  zip(corpora[train_rows], data.actor[train_rows])]),
                               groups=_recording_groups(data, train_rows, bands)
                               if config.train.normalize == "speaker" else None)
        frames_test = [row_stream(data.frames[i], None if flags is None else flags[i], config=config.features,
                                  sample_rate=config.audio.sample_rate) for i in test_rows]
    embeddings = [None, None]
    if use_segments and normalize == "none" and data.embeddings is not None:
        embeddings = [np.concatenate([data.embeddings[i] for i in rows]) if len(rows) else
                      np.zeros((0, schema.GE2E_SIZE), dtype=np.float32) for rows in (train_rows, test_rows)]
    return SetData(frames_train=frames_train, frames_test=frames_test,
                   embeddings_train=embeddings[0], embeddings_test=embeddings[1],
                   test_groups=_recording_groups(data, test_rows, bands) if frames_test is not None
                   and config.train.normalize == "speaker" else None,
                   name=name, dir="" if name == GLOBAL else name, band=band, normalize=normalize,
                   X_train=X_train, y_train=labels[train_rows][train_owner], X_test=X_test,
                   test_rows=test_owner if use_segments else None, test_keep=test_keep if use_segments else None,
                   test_index=test_rows, test_on=test_on,
                   groups_train=data.corpus.astype(str)[train_rows][train_owner])

"""A feature folder written by ``extract``, read back as arrays for training and evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ser_batch import schema
from ser_batch.errors import DatasetError
from ser_batch.schema import WIDE


@dataclass(frozen=True)
class FeatureSet:
    """The usable rows of a feature dataset, as arrays (error rows already dropped).

    Attributes
    ----------
    X : np.ndarray [shape=(n_rows, n_features)], float32
    emotion : np.ndarray [shape=(n_rows,)], object (str or None)
    actor : np.ndarray [shape=(n_rows,)], float64 (NaN where unknown)
    paths : np.ndarray [shape=(n_rows,)], object
    metadata : dict from :func:`ser_batch.schema.read_metadata` (recipe, feature names, ...)
    n_errors : int, rows dropped because their file could not be processed
    speech_ratio : list of np.ndarray [shape=(k_i,)] per row, the fraction of each window's frames
        judged speech (``rich`` recipe), or None
    segments : list of np.ndarray [shape=(k_i, n_features)] per row (sliding windows of the
        ``rich`` recipe), or None when the dataset has no windows
    augment : np.ndarray [shape=(n_rows,)], object: the augmentation of an augmented copy
        (``telephone-ulaw``, ``noise-20db``, ...), None on rows of a file's own audio
    band : np.ndarray [shape=(n_rows,)], str: ``wide`` or ``narrow`` (telephone copies and
        files of at most 8 kHz)

    corpus : np.ndarray [shape=(n_rows,)], object: the corpus of each row (``ravdess``, ``emovo``);
        a table written before the ``corpus`` column gets its folder's name

    Left out (tables written before ``extract --augment``), ``augment`` is all None and
    ``band`` all ``wide``; left out here, ``corpus`` is all None. With augmentations ``paths`` repeats: a
    file's copies share its path.
    """

    X: Any
    emotion: Any
    actor: Any
    paths: Any
    metadata: dict[str, Any]
    n_errors: int
    segments: list[Any] | None = None
    speech_ratio: list[Any] | None = None
    augment: Any = None
    band: Any = None
    corpus: Any = None
    #: list of np.ndarray [shape=(t_i, n_mels // 2)] per row: the log-mel frames of the ``cnn``
    #: model (column ``frames``, ``extract.store_frames``), or None when the table has none
    frames: list[Any] | None = None
    #: list of np.ndarray [shape=(t_i,)], bool, per row: which of those frames the speech detector
    #: keeps (column ``frame_speech``), or None when the table has none (written before the column)
    frame_speech: list[Any] | None = None
    #: list of np.ndarray [shape=(k_i, 256)] per row: each window's GE2E embedding (column ``ge2e``,
    #: ``extract.embeddings``), or None when the table has none
    embeddings: list[Any] | None = None

    def __post_init__(self) -> None:
        n = len(self.paths)
        if self.corpus is None:
            object.__setattr__(self, "corpus", np.full(n, None, dtype=object))
        if self.augment is None:
            object.__setattr__(self, "augment", np.full(n, None, dtype=object))
        if self.band is None:
            object.__setattr__(self, "band", np.full(n, WIDE, dtype="<U6"))

    def subset(self, keep: Any) -> "FeatureSet":
        """The rows selected by a boolean mask or index array."""
        index = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep)
        segments = [self.segments[i] for i in index] if self.segments is not None else None
        speech = [self.speech_ratio[i] for i in index] if self.speech_ratio is not None else None
        frames = [self.frames[i] for i in index] if self.frames is not None else None
        flags = [self.frame_speech[i] for i in index] if self.frame_speech is not None else None
        embeddings = [self.embeddings[i] for i in index] if self.embeddings is not None else None
        return FeatureSet(self.X[index], self.emotion[index], self.actor[index], self.paths[index],
                          self.metadata, self.n_errors, segments, speech, self.augment[index], self.band[index],
                          self.corpus[index], frames, flags, embeddings)

    def originals(self) -> "FeatureSet":
        """Only the rows of the files' own audio (no augmented copies)."""
        return self.subset(np.array([a is None for a in self.augment], dtype=bool))

    def speech_windows(self, rows: Any, *, min_speech_ratio: float) -> np.ndarray | None:
        """Mask over the windows of ``rows`` (stacked in order): those with at least
        ``min_speech_ratio`` of speech; None when the features have no windows or no ratios."""
        if self.segments is None or self.speech_ratio is None:
            return None
        ratios = [self.speech_ratio[i] for i in rows]
        if not ratios:
            return np.zeros(0, dtype=bool)
        return np.concatenate(ratios) >= min_speech_ratio

    def labelled(self) -> "FeatureSet":
        """Only the rows that have an emotion label."""
        return self.subset(np.array([e is not None for e in self.emotion], dtype=bool))


def _ragged(table: pa.Table, name: str, dtype: Any = None) -> list[np.ndarray]:
    """A list column of ``table`` as one array per row: ``(n_i, size)`` for a list of fixed-size
    lists (windows, frames, embeddings), ``(n_i,)`` for a list of values; as ``dtype`` (copied) when
    given."""
    column = table.column(name).combine_chunks()
    offsets = column.offsets.to_numpy()
    offsets = offsets - offsets[0]  # the array may be a slice of a larger buffer
    values = column.flatten()
    if pa.types.is_fixed_size_list(values.type):
        stacked = values.flatten().to_numpy().reshape(-1, values.type.list_size)
    else:
        stacked = values.to_numpy(zero_copy_only=False)
    if dtype is not None:
        stacked = stacked.astype(dtype)
    return [stacked[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def load_feature_set(directory: Path) -> FeatureSet:
    """Read an ``extract`` output folder into arrays, dropping error rows.

    Raises
    ------
    DatasetError
        If the folder is missing, has no parts, is not a features table, or has no usable row.
    """
    from ser_batch.data import parts

    table = parts.read_parts(Path(directory))
    metadata = schema.read_metadata(table.schema)
    if metadata.get("table") != "features" or schema.FEATURES not in table.column_names:
        raise DatasetError(f"{directory} is not a ser-batch feature dataset (no features table metadata)")
    if metadata["schema_version"] != schema.SCHEMA_VERSION:
        raise DatasetError(
            f"{directory} has feature schema version {metadata['schema_version']}, this ser-batch reads "
            f"version {schema.SCHEMA_VERSION}; re-run `ser-batch extract`"
        )
    errors = table.column(schema.ERROR).to_numpy(zero_copy_only=False)
    ok = np.array([e is None for e in errors], dtype=bool)
    n_errors = int((~ok).sum())
    table = table.filter(pa.array(ok))
    if table.num_rows == 0:
        raise DatasetError(f"{directory} has no usable rows ({n_errors} error rows)")
    width = table.schema.field(schema.FEATURES).type.list_size
    flat = table.column(schema.FEATURES).combine_chunks().flatten().to_numpy()
    X = np.ascontiguousarray(flat.reshape(-1, width), dtype=np.float32)
    actor = table.column(schema.ACTOR).to_numpy(zero_copy_only=False).astype(np.float64)
    segments = None
    if schema.SEGMENTS in table.column_names and table.column(schema.SEGMENTS).null_count == 0:
        segments = _ragged(table, schema.SEGMENTS, np.float32)
    speech = None
    if segments is not None and table.column(schema.SEGMENT_SPEECH_RATIO).null_count == 0:
        speech = _ragged(table, schema.SEGMENT_SPEECH_RATIO)
    frames = None
    # Tables written before the column existed (or without extract.store_frames) have no frames.
    if schema.FRAMES in table.column_names and table.column(schema.FRAMES).null_count == 0:
        frames = _ragged(table, schema.FRAMES, np.float32)
    frame_speech = None
    if frames is not None and schema.FRAME_SPEECH in table.column_names \
            and table.column(schema.FRAME_SPEECH).null_count == 0:
        frame_speech = _ragged(table, schema.FRAME_SPEECH, bool)
    embeddings = None
    if schema.GE2E in table.column_names and table.column(schema.GE2E).null_count == 0:
        embeddings = _ragged(table, schema.GE2E, np.float32)
    augment = band = None
    if schema.AUGMENT in table.column_names:
        augment = np.array(table.column(schema.AUGMENT).to_pylist(), dtype=object)
    if schema.BAND in table.column_names:
        band = np.array([b or WIDE for b in table.column(schema.BAND).to_pylist()], dtype="<U6")
    if schema.CORPUS in table.column_names:
        corpus = np.array(table.column(schema.CORPUS).to_pylist(), dtype=object)
    else:  # written before the column existed: the folder names the corpus
        corpus = np.full(table.num_rows, Path(directory).resolve().name, dtype=object)
    return FeatureSet(
        corpus=corpus,
        X=X,
        emotion=np.array(table.column(schema.EMOTION).to_pylist(), dtype=object),
        actor=actor,
        paths=np.array(table.column(schema.PATH).to_pylist(), dtype=object),
        metadata=metadata,
        n_errors=n_errors,
        segments=segments,
        speech_ratio=speech,
        augment=augment,
        band=band,
        frames=frames,
        frame_speech=frame_speech,
        embeddings=embeddings,
    )


def _comparable(metadata: dict[str, Any]) -> tuple[Any, ...]:
    config = metadata.get("config") or {}
    return (metadata.get("recipe"), metadata.get("feature_names"), config.get("audio"), config.get("features"))


def concat_feature_sets(sets: list[FeatureSet], *, names: list[str]) -> FeatureSet:
    """Several feature sets as one (rows in order, each keeping its ``corpus``), for training on
    more than one corpus. ``names`` (their folders) only word the errors.

    Raises
    ------
    DatasetError
        If the sets differ in recipe, feature names, audio or feature settings, if some have
        windows and others not, or if one file (corpus and path) is in two sets.
    """
    if len(sets) == 1:
        return sets[0]
    first = sets[0]
    for other, name in zip(sets[1:], names[1:]):
        if _comparable(other.metadata) != _comparable(first.metadata):
            a, b = first.metadata, other.metadata
            raise DatasetError(
                f"{name} was extracted with other settings than {names[0]} (recipe {b.get('recipe')!r} vs "
                f"{a.get('recipe')!r}, or its audio/feature settings differ): re-extract them alike to train on both")
    with_windows = [s.segments is not None for s in sets]
    if any(with_windows) and not all(with_windows):
        raise DatasetError("some feature sets have sliding windows and others not: re-extract them alike")
    keys = [(c, p) for s in sets for c, p, a in zip(s.corpus, s.paths, s.augment) if a is None]
    if len(set(keys)) != len(keys):
        seen: set[tuple[Any, Any]] = set()
        corpus, path = next(k for k in keys if k in seen or seen.add(k))
        raise DatasetError(f"{path} of corpus {corpus!r} is in two of the feature sets; give each corpus its own "
                           "name (extract --corpus NAME) or leave the duplicate out")
    speech = [s.speech_ratio is not None for s in sets]
    return FeatureSet(
        X=np.concatenate([s.X for s in sets]),
        emotion=np.concatenate([s.emotion for s in sets]),
        actor=np.concatenate([s.actor for s in sets]),
        paths=np.concatenate([s.paths for s in sets]),
        metadata=first.metadata,
        n_errors=sum(s.n_errors for s in sets),
        segments=[m for s in sets for m in s.segments] if all(with_windows) else None,
        speech_ratio=[r for s in sets for r in s.speech_ratio] if all(speech) and all(with_windows) else None,
        augment=np.concatenate([s.augment for s in sets]),
        band=np.concatenate([s.band for s in sets]),
        corpus=np.concatenate([s.corpus for s in sets]),
        # The cnn's frames, when every set stored them (train says so when cnn is asked without).
        frames=[f for s in sets for f in s.frames] if all(s.frames is not None for s in sets) else None,
        frame_speech=[f for s in sets for f in s.frame_speech] if all(s.frame_speech is not None for s in sets)
        else None,
        embeddings=[e for s in sets for e in s.embeddings] if all(s.embeddings is not None for s in sets) else None,
    )

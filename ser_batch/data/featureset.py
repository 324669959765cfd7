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

    Left out (tables written before ``extract --augment``), ``augment`` is all None and
    ``band`` all ``wide``. With augmentations ``paths`` repeats: a file's copies share its path.
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
    #: list of np.ndarray [shape=(t_i, n_mels // 2)] per row: the log-mel frames of the ``cnn``
    #: model (column ``frames``, ``extract.store_frames``), or None when the table has none
    frames: list[Any] | None = None

    def __post_init__(self) -> None:
        n = len(self.paths)
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
        return FeatureSet(self.X[index], self.emotion[index], self.actor[index], self.paths[index],
                          self.metadata, self.n_errors, segments, speech, self.augment[index], self.band[index],
                          frames)

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


def load_feature_set(directory: Path) -> FeatureSet:
    """Read an ``extract`` output folder into arrays, dropping error rows.

    Raises
    ------
    DatasetError
        If the folder is missing, has no parts, is not a features table, or has no usable row.
    """
    from ser_batch.data import parts as storage

    table = storage.read_parts(Path(directory))
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
        column = table.column(schema.SEGMENTS).combine_chunks()
        offsets = column.offsets.to_numpy()
        offsets = offsets - offsets[0]  # the array may be a slice of a larger buffer
        stacked = column.flatten().flatten().to_numpy().reshape(-1, width).astype(np.float32)
        segments = [stacked[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
    speech = None
    if segments is not None and table.column(schema.SEGMENT_SPEECH_RATIO).null_count == 0:
        column = table.column(schema.SEGMENT_SPEECH_RATIO).combine_chunks()
        offsets = column.offsets.to_numpy()
        values = column.values.to_numpy()
        speech = [values[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
    frames = None
    # Tables written before the column existed (or without extract.store_frames) have no frames.
    if schema.FRAMES in table.column_names and table.column(schema.FRAMES).null_count == 0:
        column = table.column(schema.FRAMES).combine_chunks()
        offsets = column.offsets.to_numpy()
        offsets = offsets - offsets[0]
        bands = column.type.value_type.list_size
        stacked = column.flatten().flatten().to_numpy().reshape(-1, bands).astype(np.float32)
        frames = [stacked[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
    augment = band = None
    if schema.AUGMENT in table.column_names:
        augment = np.array(table.column(schema.AUGMENT).to_pylist(), dtype=object)
    if schema.BAND in table.column_names:
        band = np.array([b or WIDE for b in table.column(schema.BAND).to_pylist()], dtype="<U6")
    return FeatureSet(
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
    )

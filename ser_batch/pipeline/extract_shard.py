"""What an ``extract`` task does with its shard: decode each file, compute its features (and those
of its augmented copies), and write the shard's Parquet part atomically.

The run context (:class:`ExtractRun`) is built once on the driver of :mod:`ser_batch.pipeline.extract`
and sent whole to every worker; a shard (:class:`Shard`) carries its files and their labels, and its
part's name hashes both. Only a few counters travel back (:class:`ExtractResult`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import pyarrow as pa

from ser_batch import schema
from ser_batch.audio.decode import AudioInfo
from ser_batch.cluster.engine import ShardJob, crash_if_asked
from ser_batch.config import Config, config_to_dict
from ser_batch.data import parts
from ser_batch.data.labels import Labels, labels_for
from ser_batch.data.paths import stored_path
from ser_batch.errors import SerBatchError
from ser_batch.features.names import feature_names
from ser_batch.features.recipes import FileFeatures, checked_features, decode_for_features, with_embeddings
from ser_batch.reports.failures import SHOWN

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    """Files processed by one task and their labels; ``name``, its part file, hashes all of it.

    ``sources`` are the names to open below the input folder (a byte that is not UTF-8 kept as
    a surrogate); rows store each one's printable ``path`` (:func:`ser_batch.data.paths.stored_path`).
    """

    index: int
    sources: tuple[str, ...]
    labels: tuple[Labels, ...]
    name: str


@dataclass(frozen=True)
class ExtractResult:
    """What a shard did: its part, its files, their errors (the first few named) and augmented rows."""

    part: str
    files: int
    errors: int
    augmented: int
    #: The shard's first :data:`~ser_batch.reports.failures.SHOWN` failed files, (path, reason).
    failures: tuple[tuple[str, str], ...]


def row_labels(path: str, *, labels: Mapping[str, Labels] | None, corpus: str | None) -> dict[str, Any]:
    """The label columns of a file plus its ``corpus``: labels.csv's, else ``corpus`` (the run's)."""
    return label_columns(labels_for(path, labels=labels), corpus)


def label_columns(found: Labels, corpus: str | None) -> dict[str, Any]:
    """The label columns of a file whose labels are ``found``, plus its ``corpus``."""
    return {**found.as_row(), schema.CORPUS: found.corpus or corpus}


@dataclass(frozen=True)
class ExtractRun(ShardJob[Shard, ExtractResult]):
    """The run context of ``extract``, sent whole to every worker: where the files are read and the
    parts written, the settings, and the ``corpus`` of rows that labels.csv gives none."""

    root: str
    out: str
    config: Config
    corpus: str | None = None
    doing: ClassVar[str] = "extracting"
    task: ClassVar[str] = "extract_shard"

    def run_shard(self, shard: Shard) -> ExtractResult:
        """Process one shard and write its part (no Ray in here).

        Each file gives one row of its own audio and, with ``extract.augment``, one row per
        augmentation computed from the same decoded signal (seeded from the file's path and the
        augmentation's name, so a retried task writes the same numbers). Errors of single files
        become one row with ``error`` set and no augmented rows, and the task goes on; that
        includes unexpected exceptions (logged with their traceback, reported as "internal
        error: ..."), so one odd file in an archive cannot sink the whole job. An augmented copy
        whose features fail (a ``tempo`` copy shorter than one frame, say) is left out and logged.
        """
        rows = _PartRows(self.config)
        for source, found in zip(shard.sources, shard.labels):
            path = stored_path(source)
            crash_if_asked(path)
            feats: FileFeatures | None = None
            info: AudioInfo | None = None
            y: np.ndarray | None = None
            error = None
            try:
                y, info = decode_for_features(Path(self.root) / source, config=self.config)
                feats = checked_features(y, config=self.config)
                if self.config.extract.embeddings:
                    feats = with_embeddings(feats, y, config=self.config)
            except SerBatchError as exc:
                error, feats = str(exc) or type(exc).__name__, None
            except Exception as exc:  # noqa: BLE001 - one odd file must not sink an overnight job
                log.exception("unexpected error on %s", path)
                error, feats = f"internal error: {type(exc).__name__}: {exc}", None
            label_row = label_columns(found, self.corpus)
            rows.add(path, label_row, info, None, feats, error)
            if feats is None or y is None:
                continue
            for name in self.config.extract.augment:
                copy = _augmented_features(path, y, name, config=self.config)
                if copy is not None:
                    rows.add(path, label_row, info, name, copy, None)
        return rows.write(Path(self.out) / shard.name)

    def split(self, shard: Shard) -> list[Shard]:
        return [Shard(shard.index, (source,), (found,),
                      parts.part_name(shard.index, parts.content_key(shard.name, source)))
                for source, found in zip(shard.sources, shard.labels)]

    def lost(self, shard: Shard, error: str) -> ExtractResult:
        """Error rows, written by the driver, for the files of a shard whose worker died on every try."""
        rows = _PartRows(self.config)
        for source, found in zip(shard.sources, shard.labels):
            rows.add(stored_path(source), label_columns(found, self.corpus), None, None, None, error)
        return rows.write(Path(self.out) / shard.name)


class _PartRows:
    """The column lists of one part, and the part written from them."""

    def __init__(self, config: Config) -> None:
        self.names = feature_names(config.features)
        self.bands = frame_bands(config)
        self.embeddings = bool(config.extract.embeddings) and config.features.recipe == "rich" \
            and config.features.window_s > 0
        self.schema = schema.features_schema(recipe=config.features.recipe, names=self.names,
                                             config=config_to_dict(config), frame_bands=self.bands,
                                             embeddings=self.embeddings)
        self.columns: dict[str, list[Any]] = {f.name: [] for f in self.schema}
        self.files = self.augmented = 0
        self.failures: list[tuple[str, str]] = []

    def add(self, path: str, label_row: Mapping[str, Any], info: AudioInfo | None, augment: str | None,
            feats: FileFeatures | None, error: str | None) -> None:
        """One row: a file's own audio when ``augment`` is None, else its augmented copy."""
        rows = self.columns
        if augment is None:
            self.files += 1
        else:
            self.augmented += 1
        if error is not None:
            self.failures.append((path, error))
        for key, value in label_row.items():
            rows[key].append(value)
        rows[schema.PATH].append(path)
        rows[schema.DURATION_S].append(info.duration_s if info else None)
        rows[schema.SAMPLE_RATE_IN].append(info.sample_rate if info else None)
        rows[schema.CHANNELS_IN].append(info.channels if info else None)
        rows[schema.AUGMENT].append(augment)
        rows[schema.BAND].append(schema.band_of(info.sample_rate if info else None, augment))
        rows[schema.FEATURES].append(feats.vector if feats else None)
        rows[schema.SEGMENTS].append(feats.segments if feats else None)
        rows[schema.SEGMENT_STARTS_S].append(feats.segment_starts_s if feats else None)
        rows[schema.SEGMENT_SPEECH_RATIO].append(feats.segment_speech_ratio if feats else None)
        rows[schema.ERROR].append(error)
        if schema.FRAMES in rows:
            rows[schema.FRAMES].append(feats.frames if feats else None)
            rows[schema.FRAME_SPEECH].append(feats.frame_speech if feats else None)
        if schema.GE2E in rows:
            rows[schema.GE2E].append(feats.embeddings if feats else None)

    def write(self, path: Path) -> ExtractResult:
        """Write the part atomically at ``path``; what it holds."""
        arrays = []
        for field in self.schema:
            values = self.columns[field.name]
            if field.name == schema.FEATURES:
                arrays.append(schema.vectors_array(values, len(self.names)))
            elif field.name == schema.SEGMENTS:
                arrays.append(schema.matrices_array(values, len(self.names)))
            elif field.name == schema.FRAMES:
                arrays.append(schema.matrices_array(values, self.bands))
            elif field.name == schema.GE2E:
                arrays.append(schema.matrices_array(values, schema.GE2E_SIZE))
            else:
                arrays.append(pa.array(values, field.type))
        parts.write_table_atomic(pa.Table.from_arrays(arrays, schema=self.schema), path)
        # Only the first few failures travel back: the summary names no more than that.
        return ExtractResult(path.name, self.files, len(self.failures), self.augmented, tuple(self.failures[:SHOWN]))


def frame_bands(config: Config) -> int:
    """Bands of the ``frames`` column this run writes: ``n_mels // 2`` with ``extract.store_frames``
    and a recipe with windows (``rich``), else 0 (no column)."""
    from ser_batch.features.melframes import n_bands

    if not config.extract.store_frames or config.features.recipe != "rich" or config.features.window_s <= 0:
        return 0
    return n_bands(config.features)


def _augmented_features(path: str, y: np.ndarray, name: str, *, config: Config) -> FileFeatures | None:
    """Features of the augmentation ``name`` of the decoded file ``path``; None (logged) if they fail."""
    from ser_batch.audio.telephony import augment_signal, augmentation_rng

    try:
        copy = augment_signal(y, config.audio.sample_rate, name, rng=augmentation_rng(path, name))
        feats = checked_features(copy, config=config)
        return with_embeddings(feats, copy, config=config) if config.extract.embeddings else feats
    except SerBatchError as exc:
        log.warning("%s: augmented copy %s left out: %s", path, name, exc)
    except Exception:  # noqa: BLE001 - as for the file itself: log, go on
        log.exception("%s: augmented copy %s left out after an unexpected error", path, name)
    return None



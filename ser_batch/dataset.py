"""Which files make up a corpus, and what their labels are.

* :func:`discover_audio` walks a folder recursively for audio files.
* :func:`parse_ravdess_name` reads labels from RAVDESS names (``MM-VV-EE-II-SS-RR-AA``).
* :func:`load_labels_csv` reads a ``path,label[,actor][,gender]`` CSV for other corpora.
* :func:`labels_for` combines the two into the label columns of one row.
* :func:`load_feature_set` reads an ``extract`` output back as arrays for training.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow as pa

from ser_batch import schema
from ser_batch.errors import DatasetError
from ser_batch.telephony import WIDE

log = logging.getLogger(__name__)

_RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
_INTENSITIES = {1: "normal", 2: "strong"}

#: Name of the optional label file looked for at the root of an input folder.
LABELS_CSV = "labels.csv"


@dataclass(frozen=True)
class Labels:
    """Label columns of one file; every field may be ``None`` (unknown)."""

    emotion: str | None = None
    intensity: str | None = None
    statement: int | None = None
    repetition: int | None = None
    actor: int | None = None
    gender: str | None = None

    def as_row(self) -> dict[str, Any]:
        """The values keyed by their column names in :mod:`ser_batch.schema`."""
        return {
            schema.EMOTION: self.emotion,
            schema.INTENSITY: self.intensity,
            schema.STATEMENT: self.statement,
            schema.REPETITION: self.repetition,
            schema.ACTOR: self.actor,
            schema.GENDER: self.gender,
        }


def parse_ravdess_name(name: str) -> Labels | None:
    """Labels encoded in a RAVDESS file name, or ``None`` if it is not one.

    ``03-01-05-01-02-01-12.wav`` is audio-only (03) speech (01), angry (05), normal
    intensity (01), statement 2, repetition 1, actor 12 (even: female).

    Parameters
    ----------
    name : str
        A file name or path; only the stem is read.
    """
    match = _RAVDESS_NAME.match(Path(name).stem)
    if not match:
        return None
    modality, channel, emotion, intensity, statement, repetition, actor = map(int, match.groups())
    valid = (
        1 <= modality <= 3
        and 1 <= channel <= 2
        and 1 <= emotion <= len(schema.EMOTIONS)
        and intensity in _INTENSITIES
        and statement in (1, 2)
        and repetition in (1, 2)
        and 1 <= actor <= 24
    )
    if not valid:
        return None
    return Labels(
        emotion=schema.EMOTIONS[emotion - 1],
        intensity=_INTENSITIES[intensity],
        statement=statement,
        repetition=repetition,
        actor=actor,
        gender="male" if actor % 2 else "female",
    )


def discover_audio(root: Path, *, extensions: Iterable[str]) -> list[str]:
    """Audio files below ``root``, recursively, as sorted POSIX paths relative to it.

    Symlinked folders are followed (an input folder may hold links to actor folders kept
    elsewhere), each real folder once, so a link back up the tree cannot loop. Hidden
    files and folders (names starting with ``.``, e.g. ``.git``, ``.cache``) are skipped.
    Every non-folder entry with an audio extension is listed, including a link whose
    target is missing: reading it fails, so it becomes an error row ("broken link")
    instead of a file that vanishes silently.
    A sub-folder that cannot be listed is logged as a warning and skipped.

    Parameters
    ----------
    root : Path
        The input folder.
    extensions : iterable of str
        File name endings such as ``".wav"`` (compared case-insensitively), normally
        ``config.audio.extensions``.

    Raises
    ------
    DatasetError
        If ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"input folder not found: {root}")
    wanted = {e.lower() for e in extensions}
    found: list[str] = []
    seen: set[tuple[int, int]] = set()  # (device, inode) of every folder walked: the cycle guard
    pending = [(root, PurePosixPath())]
    while pending:
        folder, rel = pending.pop()
        try:
            info = folder.stat()
            if (info.st_dev, info.st_ino) in seen:
                log.debug("%s: already walked through another link, skipped", folder)
                continue
            seen.add((info.st_dev, info.st_ino))
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot list folder %s (%s); its files are left out", folder, exc.strerror or exc)
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if _is_dir(entry):
                subfolders.append((Path(entry.path), rel / entry.name))
            elif Path(entry.name).suffix.lower() in wanted:
                # Not only regular files: a dangling link or a pipe named *.wav becomes an
                # error row saying so, rather than a file that silently is not there.
                found.append((rel / entry.name).as_posix())
        pending.extend(reversed(subfolders))
    return sorted(found)


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows symlinks
    except OSError:  # a link loop, for instance: left to the file checks
        return False


def load_labels_csv(path: Path, *, root: Path | None = None) -> dict[str, Labels]:
    """Read a label CSV: header ``path,label`` plus optional ``actor`` and ``gender``.

    Paths may be relative to ``root`` (the input folder) or absolute below it; they are
    returned relative, in POSIX form, to match :func:`discover_audio`.

    Raises
    ------
    DatasetError
        On a missing file, a missing column, an empty path, a bad actor number or a duplicate path.
    """
    path = Path(path)
    try:
        # utf-8-sig: spreadsheet programs often save CSV with a byte-order mark.
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise DatasetError(f"labels file not found: {path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read labels file {path}: {exc}") from None
    if rows and not {"path", "label"} <= set(rows[0]):
        raise DatasetError(f"labels file {path} needs the columns path,label (got {', '.join(rows[0])})")
    labels: dict[str, Labels] = {}
    for line, row in enumerate(rows, start=2):
        raw = (row["path"] or "").strip()  # None when a short row leaves the column out
        if not raw:
            raise DatasetError(f"{path}:{line}: empty path")
        rel = Path(raw)
        if rel.is_absolute() and root is not None:
            try:
                rel = rel.relative_to(Path(root).resolve())
            except ValueError:
                raise DatasetError(f"{path}:{line}: {rel} is not inside {root}") from None
        key = rel.as_posix()
        if key in labels:
            raise DatasetError(f"{path}:{line}: duplicate path {key}")
        actor = (row.get("actor") or "").strip()
        try:
            actor_id = int(actor) if actor else None
        except ValueError:
            raise DatasetError(f"{path}:{line}: actor must be an integer, got {actor!r}") from None
        label = (row["label"] or "").strip() or None
        labels[key] = Labels(emotion=label, actor=actor_id, gender=(row.get("gender") or "").strip() or None)
    return labels


def labels_for(rel_path: str, *, labels: Mapping[str, Labels] | None = None) -> Labels:
    """Labels of one file: the label CSV first, then the RAVDESS name, else all unknown."""
    if labels and rel_path in labels:
        return labels[rel_path]
    return parse_ravdess_name(rel_path) or Labels()


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
        return FeatureSet(self.X[index], self.emotion[index], self.actor[index], self.paths[index],
                          self.metadata, self.n_errors, segments, speech, self.augment[index], self.band[index])

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
    from ser_batch import storage

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
    )

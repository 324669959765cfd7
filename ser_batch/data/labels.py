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

from ser_batch import schema
from ser_batch.errors import DatasetError

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
    #: From a ``corpus`` column of labels.csv; not one of :data:`ser_batch.schema.LABEL_COLUMNS`.
    corpus: str | None = None

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
    """Read a label CSV: header ``path,label`` plus optional ``actor``, ``gender`` and ``corpus``.

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
        labels[key] = Labels(emotion=label, actor=actor_id, gender=(row.get("gender") or "").strip() or None,
                             corpus=(row.get("corpus") or "").strip() or None)
    return labels


def labels_for(rel_path: str, *, labels: Mapping[str, Labels] | None = None) -> Labels:
    """Labels of one file: the label CSV first, then the RAVDESS name, else all unknown."""
    if labels and rel_path in labels:
        return labels[rel_path]
    return parse_ravdess_name(rel_path) or Labels()



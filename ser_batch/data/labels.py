"""Which files make up a corpus, and what their labels are.

* :func:`discover_audio` walks a folder recursively for audio files.
* :func:`parse_ravdess_name` reads labels from RAVDESS names (``MM-VV-EE-II-SS-RR-AA``).
* :func:`read_labels_csv` reads a ``path,label[,actor][,gender]`` CSV for other corpora, row by
  row, against an input's files (:func:`load_labels_csv`: every row).
* :func:`labels_for` combines the two into the label columns of one row.
* :func:`load_feature_set` reads an ``extract`` output back as arrays for training.
"""

from __future__ import annotations

import csv
import logging
import os
import posixpath
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


@dataclass
class LabelsFile:
    """A labels CSV read against the files of an input: the labels of the files it names, and how
    well it fits them (:meth:`notes`, :meth:`check`)."""

    path: Path
    #: Stored path of an input file -> its labels (every row's when read without files).
    labels: dict[str, Labels]
    #: Data rows of the CSV, and those that name no file of the input (the first of them, as written).
    rows: int = 0
    unmatched: int = 0
    first_unmatched: str | None = None
    #: Files of the input (``None``: read without them).
    files: int | None = None

    def check(self, input_dir: Path) -> None:
        """Refuse a CSV that labels none of the input: a feature set without the labels asked for.

        Raises
        ------
        DatasetError
            Saying how many rows it has and how a path is matched.
        """
        if self.files and self.rows and not self.labels:
            raise DatasetError(
                f"labels file {self.path} labels none of the {self.files} audio files of {input_dir}: none of its "
                f"{self.rows} rows names one (first: {self.first_unmatched!r}); write each path relative to "
                f"{input_dir}, e.g. {Path(input_dir).name}/x.wav or x.wav for {input_dir}/x.wav (backslashes and "
                "absolute paths inside it are read too)")

    def notes(self, names: Mapping[str, Labels]) -> list[str]:
        """Warnings on a CSV that fits the input partly: rows naming no file, and labels that
        disagree with the RAVDESS labels in the file names (``names``: path -> labels from its name).
        The CSV's labels are used: ``--labels`` (or labels.csv) is the explicit source."""
        notes = []
        if self.unmatched:
            notes.append(f"labels file {self.path}: {self.unmatched} of its {self.rows} rows name no audio file of "
                         f"the input (first: {self.first_unmatched!r}); {len(self.labels)} of the {self.files} files "
                         "are labelled by it")
        disagree = [(p, self.labels[p], n) for p, n in sorted(names.items())
                    if p in self.labels and self.labels[p].emotion is not None and n.emotion != self.labels[p].emotion]
        if disagree:
            path, mine, theirs = disagree[0]
            notes.append(f"labels file {self.path} gives {len(disagree)} of the {len(names)} files with RAVDESS "
                         f"names another emotion than their names do (first: {path}: {mine.emotion} in the file, "
                         f"{theirs.emotion} by its name); the file's labels are used, as the explicit source")
        return notes


def read_labels_csv(path: Path, *, root: Path | None = None, files: Iterable[str] | None = None) -> LabelsFile:
    """Read a label CSV (header ``path,label`` plus optional ``actor``, ``gender`` and ``corpus``)
    row by row, keeping only the rows of ``files`` (stored paths relative to ``root``; ``None``: every
    row): a CSV of a million rows for twenty files costs seconds and no more memory than twenty rows.

    A row's path names a file when, backslashes read as ``/`` and ``./`` dropped, it is the file's
    path relative to ``root``, or that path after ``root``'s own name (``calls/x.wav`` for
    ``calls/x.wav`` below the folder ``calls``), or an absolute path inside ``root``.

    Raises
    ------
    DatasetError
        On a missing file, a missing column, an empty path, a bad actor number or a duplicate path
        among the rows kept, an absolute path outside ``root``.
    """
    path = Path(path)
    wanted = set(files) if files is not None else None
    where = _Root(root)
    result = LabelsFile(path, {}, files=None if wanted is None else len(wanted))
    try:
        # utf-8-sig: spreadsheet programs often save CSV with a byte-order mark.
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            columns = [c.strip() for c in next(reader, [])]
            if columns and not {"path", "label"} <= set(columns):
                raise DatasetError(f"labels file {path} needs the columns path,label (got {', '.join(columns)})")
            at = columns.index("path") if columns else 0
            for line, row in enumerate(reader, start=2):  # plain rows: a million cost seconds, not tens of them
                if not row:
                    continue
                result.rows += 1
                raw = row[at].strip() if at < len(row) else ""  # a short row leaves the column out
                if not raw:
                    raise DatasetError(f"{path}:{line}: empty path")
                key = where.key(raw, wanted=wanted, line=f"{path}:{line}")
                if key is None:
                    result.unmatched += 1
                    if result.first_unmatched is None:
                        result.first_unmatched = raw
                    continue
                if key in result.labels:
                    raise DatasetError(f"{path}:{line}: duplicate path {key}")
                result.labels[key] = _row_labels(dict(zip(columns, row)), where=f"{path}:{line}")
    except FileNotFoundError:
        raise DatasetError(f"labels file not found: {path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read labels file {path}: {exc}") from None
    return result


def load_labels_csv(path: Path, *, root: Path | None = None) -> dict[str, Labels]:
    """Every row of a label CSV (:func:`read_labels_csv` without files), keyed by its path relative
    to ``root`` in POSIX form, to match :func:`discover_audio`."""
    return read_labels_csv(path, root=root).labels


class _Root:
    """How a CSV's paths are read against an input folder (its absolute forms and name, once)."""

    def __init__(self, root: Path | None) -> None:
        self.root = Path(root) if root is not None else None
        self.resolved = self.root.resolve() if self.root is not None else None
        self.name = self.root.name if self.root is not None else None

    def key(self, raw: str, *, wanted: set[str] | None, line: str) -> str | None:
        """The file a CSV path names: its path relative to the root as :func:`discover_audio` gives
        it; ``None`` when ``wanted`` (the input's paths) holds none of its readings."""
        text = raw.replace("\\", "/") if "\\" in raw else raw
        if text.startswith("/") and self.root is not None:
            text = self._inside(text, raw, line)
        if text.startswith("./") or "/." in text or "//" in text:
            text = posixpath.normpath(text)
        if wanted is None or text in wanted:
            return text
        head, _, rest = text.partition("/")
        if rest and head == self.name and rest in wanted:
            return rest  # written with the input folder's own name in front
        return None

    def _inside(self, text: str, raw: str, line: str) -> str:
        for base in (self.resolved, self.root):
            try:
                return Path(text).relative_to(base).as_posix()
            except ValueError:
                continue
        raise DatasetError(f"{line}: {raw} is not inside {self.root}")


def _row_labels(row: Mapping[str, str | None], *, where: str) -> Labels:
    actor = (row.get("actor") or "").strip()
    try:
        actor_id = int(actor) if actor else None
    except ValueError:
        raise DatasetError(f"{where}: actor must be an integer, got {actor!r}") from None
    return Labels(emotion=(row.get("label") or "").strip() or None, actor=actor_id,
                  gender=(row.get("gender") or "").strip() or None, corpus=(row.get("corpus") or "").strip() or None)


def labels_for(rel_path: str, *, labels: Mapping[str, Labels] | None = None) -> Labels:
    """Labels of one file: the label CSV first, then the RAVDESS name, else all unknown."""
    if labels and rel_path in labels:
        return labels[rel_path]
    return parse_ravdess_name(rel_path) or Labels()



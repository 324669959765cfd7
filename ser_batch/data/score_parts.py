"""The parts of a score folder, checked before they are trusted (issue 25).

``OUT/files`` and ``OUT/segments`` hold only parts ``score`` wrote: ``part-<key>.parquet``, the key
12 hex digits of their content (:data:`PART_NAME`: letters and digits), and, while one is written,
its temporary ``.part-*.tmp-*``. Readers of the folders (pandas, duckdb, ``report``) read every
Parquet file there, so anything else would be read
as rows too: a sync tool's conflict copy (``part-x.sync-conflict-....parquet``) twice, an
``extract`` part as streams. Such a file is never deleted (ser-batch deletes only what it wrote);
it is named in one error.

A part of ``score``'s own name is checked as it is read: its footer and schema (the table, the
columns every part of it has, the folder's classes and bundle, :func:`part_problem`), and that no
file has rows in two ``files`` parts and no ``segments`` part has two owners. What fails is a
:class:`Damage`: which part, why, and the files whose rows it concerns. :func:`repair_plan` says
what a run does about it: a damaged part whose files this run's input lists is deleted and those
files scored again, which restores every row (automatic); other damage is repaired only with
``--repair`` (the rows of files this input does not list are then removed), else refused.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ser_batch import schema
from ser_batch.errors import DatasetError

#: The name of every part ``score`` writes (:func:`ser_batch.data.score_folder.part_path`): no dot,
#: hyphen or blank in its key, as in a sync tool's copy (``.sync-conflict-...``, `` (1)``) or an
#: ``extract`` part (``part-00000-<key>``).
PART_NAME = re.compile(r"^part-[0-9a-z]+\.parquet$")
#: Columns every part of each table has (parts written before a later column, such as
#: ``model_set``, lack that one).
REQUIRED = {
    schema.FILES_DIR: (schema.PATH, schema.CHANNEL, schema.SIZE_BYTES, schema.MTIME, schema.ERROR),
    schema.SEGMENTS_DIR: (schema.PATH, schema.CHANNEL, schema.START_S, schema.END_S, schema.SPEECH_RATIO,
                          schema.LABEL, schema.CONFIDENCE),
}
#: What a :class:`Damage` is: a part that cannot be read, one that is missing, rows of one file in two
#: parts (all repairable: the files are scored again).
UNREADABLE, MISSING, DUPLICATE = "unreadable", "missing", "duplicate"


def is_temporary(name: str) -> bool:
    """A part being written (``.part-<key>.parquet.tmp-<id>``), or left so by a killed run."""
    return name.startswith(".part-") and ".tmp-" in name


@dataclass(frozen=True)
class Expected:
    """What every part of a folder must be besides its table's: the folder's classes and bundle id
    (from ``_score.json``; ``None``: not checked)."""

    classes: tuple[str, ...] | None = None
    bundle_id: str | None = None

    @classmethod
    def of(cls, recorded: dict[str, Any] | None) -> Expected:
        recorded = recorded or {}
        classes, bundle = recorded.get("classes"), recorded.get("bundle_id")
        return cls(tuple(classes) if isinstance(classes, list) and all(isinstance(c, str) for c in classes) else None,
                   bundle if isinstance(bundle, str) else None)


def listing(out: Path, kind: str) -> list[Path]:
    """The parts of ``OUT/kind`` (``files`` or ``segments``), sorted; temporary files left out.

    Raises
    ------
    DatasetError
        If the folder holds anything else (not deleted: ser-batch deletes only what it wrote).
    """
    folder = Path(out) / kind
    if not folder.is_dir():
        return []
    try:
        names = sorted(entry.name for entry in folder.iterdir())
    except OSError as exc:
        raise DatasetError(f"cannot list {folder}: {exc.strerror or exc}") from None
    foreign = [n for n in names if not PART_NAME.match(n) and not is_temporary(n)]
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        copy = any("conflict" in n.lower() or "copy" in n.lower() or "(" in n for n in foreign)
        raise DatasetError(
            f"{folder} holds {shown}, which ser-batch did not write{' (a copy made by a sync tool?)' if copy else ''}; "
            f"readers of the folder (pandas, duckdb, report) would read {'them' if len(foreign) > 1 else 'it'} as "
            f"rows too: move {'them' if len(foreign) > 1 else 'it'} out of {folder} (ser-batch deletes only what it "
            "wrote)")
    return [folder / n for n in names if PART_NAME.match(n)]


def part_problem(path: Path, kind: str, expected: Expected) -> tuple[str, str] | None:
    """Why the part at ``path`` cannot be one of OUT's ``kind`` table: ``(UNREADABLE, reason)`` when its
    footer cannot be read; None when it can be.

    Raises
    ------
    DatasetError
        If it is readable but another table's (columns, classes or bundle not this folder's): such a
        part is not deleted, so the error says to move it away.
    """
    try:
        found = pq.read_schema(path)
    except FileNotFoundError:
        return MISSING, "is missing"
    except (OSError, pa.ArrowException) as exc:
        return UNREADABLE, f"cannot be read ({first_line(exc)})"
    meta = found.metadata or {}
    table = meta.get(schema.META_TABLE, b"").decode("utf-8", "replace")
    missing = [c for c in REQUIRED[kind] if c not in found.names]
    why = None
    if table != kind or missing:
        what = f"a {table} table's" if table else "no ser-batch table's"
        why = (f"is {what} part, not one of {kind}"
               + (f" (it lacks the columns {', '.join(missing[:4])})" if missing else ""))
    elif expected.classes is not None and _classes(meta) not in (None, expected.classes):
        why = f"holds the probabilities of other classes ({', '.join(_classes(meta) or ())}) than this folder's"
    elif expected.bundle_id is not None and meta.get(schema.META_BUNDLE_ID, b"").decode() not in \
            ("", expected.bundle_id):
        why = f"was made with another bundle ({meta.get(schema.META_BUNDLE_ID, b'').decode()}) than this folder's"
    if why:
        raise DatasetError(f"{path} {why}; it is not a part of this score folder, and ser-batch deletes only what it "
                           f"wrote: move it out of {path.parent}")
    return None


def _classes(meta: dict[bytes, bytes]) -> tuple[str, ...] | None:
    try:
        value = json.loads(meta[schema.META_CLASSES])
    except (KeyError, ValueError):
        return None
    return tuple(value) if isinstance(value, list) else None


def first_line(exc: BaseException) -> str:
    """The first sentence of an exception's message (Arrow's run over several lines and sentences)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0].split(". ")[0].rstrip(".") if lines else type(exc).__name__


def read_part(path: Path, **options: Any) -> pa.Table:
    """``pq.read_table(path, **options)``; a part whose pages cannot be read is a one-line error.

    Raises
    ------
    DatasetError
        Naming the part and Arrow's reason.
    """
    try:
        return pq.read_table(path, **options)
    except (OSError, pa.ArrowException) as exc:
        raise DatasetError(f"{path} cannot be read ({first_line(exc)})") from None


@dataclass(frozen=True)
class Damage:
    """A damaged part of a score folder: its table (``files``, ``segments``), name, what and why, and
    the paths of the files whose rows it concerns (a windows part: its owner's files; rows in two
    parts: those files; ``None``: unknown, a ``files`` part that cannot be read)."""

    kind: str
    name: str
    what: str
    reason: str
    paths: frozenset[str] | None

    def where(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass
class Repair:
    """What a run does about the damage of its folder: the parts it deletes (``(kind, name)``), the
    paths whose rows it drops (scored again when the input lists them), and a line for each."""

    delete: list[tuple[str, str]] = field(default_factory=list)
    paths: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


def repair_plan(out: Path, damage: list[Damage], *, listed: set[str], repair: bool) -> Repair:
    """How a run into ``out`` repairs ``damage``, its input listing the stored paths ``listed``.

    A damaged part whose files are all listed is repaired whatever ``repair`` says: deleted (a part
    that cannot be read; rows in two parts keep their parts) and its files' rows dropped, so that
    the run scores them again and every row is back. Other damage (files this input does not list,
    a ``files`` part whose files cannot be known) is repaired only with ``repair`` (``--repair``):
    their rows are removed, to be scored again by a run of their input.

    Raises
    ------
    DatasetError
        Without ``repair``, for the first damage it would need: one line naming the part, why, and
        what ``--repair`` would do.
    """
    plan = Repair()
    out = Path(out)
    for item in damage:
        paths = item.paths
        others = None if paths is None else sorted(p for p in paths if p not in listed)
        if not repair and (paths is None or others):
            if paths is None:
                consequence = ("the files it held are unknown; --repair deletes it and the windows it owned, and "
                               "its files are scored again when an input lists them")
            else:
                more = ", ..." if len(others) > 1 else ""
                consequence = (f"{_count(len(paths), 'file')} {'has' if len(paths) == 1 else 'have'} rows there, "
                               f"{len(others)} of them not in this input ({others[0]}{more}); --repair removes "
                               "their rows and scores again those this input lists")
            raise DatasetError(f"{out / item.kind / item.name} {item.reason}: {consequence} (or --rescore)")
        if item.what != DUPLICATE:
            plan.delete.append((item.kind, item.name))
        if paths is None:
            plan.notes.append(f"{item.where()} {item.reason}: deleted (--repair) with the windows it owned; its files "
                              "are scored again when an input lists them")
            continue
        plan.paths |= paths
        again = len(paths) - len(others or [])
        done = "its rows dropped" if item.what == DUPLICATE else "deleted"
        note = f"{item.where()} {item.reason}: {done}, and {_count(again, 'file')} scored again"
        if others:
            note += f"; the rows of {_count(len(others), 'file')} this input does not list removed (--repair)"
        plan.notes.append(note)
    return plan


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"

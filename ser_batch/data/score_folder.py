"""The output folder of ``score``: what is committed, what is left over, what may be reused.

Layout::

    OUT/segments/part-<key>.parquet   one row per window of each stream
    OUT/files/part-<key>.parquet      one row per file (per channel with --channels split)
    OUT/_score.json                   bundle and settings every row was made with
    OUT/_run.json                     the record of the last run (rewritten at its end; a run with
                                      nothing to do keeps the last run that did work as ``last_work``)
    OUT/report.html                   ``ser-batch report OUT``

A file is done when its ``files`` row is committed, unless that row is an error row and the
run retries errors (``score --retry-errors``): then the row is replaced by the new one.
Each ``files`` part names, in its Parquet metadata, the ``segments`` parts that hold its
files' windows; those are written first, so a ``segments`` part that no ``files`` part names
is what a killed run left behind, and is deleted before the next run starts (its files were
not committed, so they are redone).
Every part is written under a temporary name and renamed, with a name derived from its
content, so a retried task overwrites its own parts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ser_batch import schema
from ser_batch.data import parts, score_parts
from ser_batch.errors import DatasetError
from ser_batch.schema import FILES_DIR, RUN_RECORD, SEGMENTS_DIR, SETTINGS  # noqa: F401  (the folder names, re-exported)

#: Parquet metadata key of a files part: the segments parts its rows own (JSON list).
META_SEGMENT_PARTS = b"ser_batch.segment_parts"


def part_path(out: Path, table: str, key: str) -> Path:
    return Path(out) / table / f"part-{key}.parquet"


def write_part(table: pa.Table, out: Path, kind: str, key: str, *, segment_parts: list[str] | None = None) -> str:
    """Write one part atomically; a files part records the segments parts it commits."""
    if segment_parts is not None:
        metadata = dict(table.schema.metadata or {})
        metadata[META_SEGMENT_PARTS] = json.dumps(sorted(segment_parts)).encode()
        table = table.replace_schema_metadata(metadata)
    path = part_path(out, kind, key)
    if path.parent.is_symlink():  # the job refused it at start; a link put there since is not followed either
        raise DatasetError(f"{path.parent} is a symbolic link; ser-batch writes only inside --out")
    path.parent.mkdir(parents=True, exist_ok=True)
    parts.write_table_atomic(table, path)
    return path.name


@dataclass
class Committed:
    """What earlier runs committed in an output folder."""

    #: (path, channel) -> (size_bytes, mtime) of every files row.
    identities: dict[str, tuple[int | None, float | None]] = field(default_factory=dict)
    #: files part name -> the paths of its rows.
    part_paths: dict[str, set[str]] = field(default_factory=dict)
    #: files part name -> segments part names it owns.
    part_segments: dict[str, list[str]] = field(default_factory=dict)
    #: paths whose committed row is an error row.
    failed: set[str] = field(default_factory=set)
    rows: int = 0
    errors: int = 0
    #: Parts found damaged (:class:`ser_batch.data.score_parts.Damage`).
    damaged: list[score_parts.Damage] = field(default_factory=list)

    def is_done(self, path: str, size: int | None, mtime: float | None, *, retry_errors: bool = False) -> bool:
        """Whether the file ``path`` (of that size and mtime) needs no new row: it has one, made
        from the same file, and it is not an error row to retry."""
        if retry_errors and path in self.failed:
            return False
        return self.identities.get(path) == (size, mtime)


def read_committed(out: Path) -> Committed:
    """What ``out`` holds (empty for a new folder): every ``files`` part's rows, each part checked
    as it is read (:mod:`ser_batch.data.score_parts`), and each ``segments`` part a ``files`` part
    owns checked too (its footer). A part that cannot be read or is missing, and rows of one file
    in two parts, are :attr:`Committed.damaged` (the run repairs them or refuses:
    :func:`ser_batch.data.score_parts.repair_plan`).

    Raises
    ------
    DatasetError
        If ``files/`` or ``segments/`` holds a file ser-batch did not write, or a part of another
        table, classes or bundle (never deleted: the message says to move it away).
    """
    committed = Committed()
    expected = score_parts.Expected.of(read_settings(out))
    holder: dict[str, str] = {}  # path -> the first files part holding it
    doubled: dict[tuple[str, str], set[str]] = {}
    for part in score_parts.listing(out, FILES_DIR):
        problem = score_parts.part_problem(part, FILES_DIR, expected)
        if problem is None:
            try:
                table = pq.read_table(part, columns=[schema.PATH, schema.SIZE_BYTES, schema.MTIME, schema.ERROR])
                owned = json.loads((pq.read_schema(part).metadata or {}).get(META_SEGMENT_PARTS, b"[]"))
            except (OSError, pa.ArrowException, ValueError) as exc:
                problem = (score_parts.UNREADABLE, f"cannot be read ({score_parts.first_line(exc)})")
        if problem is not None:
            committed.damaged.append(score_parts.Damage(FILES_DIR, part.name, *problem, None))
            continue
        paths = table.column(schema.PATH).to_pylist()
        sizes = table.column(schema.SIZE_BYTES).to_pylist()
        mtimes = table.column(schema.MTIME).to_pylist()
        errors = table.column(schema.ERROR).to_pylist()
        for path, size, mtime, error in zip(paths, sizes, mtimes, errors):
            first = holder.setdefault(path, part.name)
            if first != part.name:
                doubled.setdefault((first, part.name), set()).add(path)
            committed.identities[path] = (size, mtime)
            if error is not None:
                committed.failed.add(path)
        committed.part_paths[part.name] = set(paths)
        committed.part_segments[part.name] = [str(name) for name in owned] if isinstance(owned, list) else []
        committed.rows += len(paths)
        committed.errors += sum(e is not None for e in errors)
    for (first, second), paths in doubled.items():
        committed.damaged.append(score_parts.Damage(
            FILES_DIR, second, score_parts.DUPLICATE,
            f"holds rows of {len(paths)} file{'s' if len(paths) > 1 else ''} that {FILES_DIR}/{first} holds too",
            frozenset(paths)))
    doubled_paths = {p for item in committed.damaged for p in item.paths or ()}
    # (a windows part owned by two files parts that hold the same files is the same damage, said once)
    committed.damaged += [item for item in _damaged_windows(out, committed, expected)
                          if not (item.what == score_parts.DUPLICATE and item.paths <= doubled_paths)]
    return committed


def _damaged_windows(out: Path, committed: Committed, expected: score_parts.Expected) -> list[score_parts.Damage]:
    """The ``segments`` parts that ``files`` parts own and that are missing, cannot be read, or have two
    owners, each with its owners' paths."""
    owners: dict[str, list[str]] = {}
    for name, owned in committed.part_segments.items():
        for segment in owned:
            owners.setdefault(segment, []).append(name)
    present = {p.name for p in score_parts.listing(out, SEGMENTS_DIR)}
    damaged = []
    for segment, names in sorted(owners.items()):
        paths = frozenset(p for name in names for p in committed.part_paths[name])
        if len(names) > 1:
            problem: tuple[str, str] | None = (score_parts.DUPLICATE, f"is owned by {len(names)} parts of {FILES_DIR}")
        elif segment not in present:
            problem = (score_parts.MISSING, "is missing")
        else:
            problem = score_parts.part_problem(Path(out) / SEGMENTS_DIR / segment, SEGMENTS_DIR, expected)
        if problem is not None:
            damaged.append(score_parts.Damage(SEGMENTS_DIR, segment, *problem, paths))
    return damaged


def check_whole(out: Path) -> Committed:
    """:func:`read_committed`, refusing any damage: for readers (``report``), which repair nothing.

    Raises
    ------
    DatasetError
        One line naming the first damaged part and how to repair it.
    """
    committed = read_committed(out)
    if committed.damaged:
        item = committed.damaged[0]
        n = len(item.paths or ())
        files = "its files are unknown" if item.paths is None else \
            f"{n} file{'s' if n != 1 else ''} {'has' if n == 1 else 'have'} rows there"
        raise DatasetError(f"{Path(out) / item.kind / item.name} {item.reason}: {files}; `ser-batch score` of their "
                           f"input into {out} repairs it by scoring them again (--repair where it needs to)")
    return committed


def remove_leftovers(out: Path, committed: Committed) -> int:
    """Delete segments parts no files part owns and temporary files; returns how many."""
    owned = {name for names in committed.part_segments.values() for name in names}
    removed = 0
    for kind in (SEGMENTS_DIR, FILES_DIR):
        folder = Path(out) / kind
        if not folder.is_dir() or folder.is_symlink():  # never deletes in a folder a link points to
            continue
        for path in folder.iterdir():
            stale_tmp = path.name.startswith(".part-") and ".tmp-" in path.name
            orphan = kind == SEGMENTS_DIR and path.name.startswith("part-") and path.name not in owned
            if stale_tmp or orphan:
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def drop_paths(out: Path, committed: Committed, paths: set[str]) -> None:
    """Remove the rows of ``paths`` (files that changed since they were scored, error rows to
    retry, rows of files that are gone with ``--prune``) from every part that holds them,
    rewriting those parts atomically (files part last); a second call finds nothing to do."""
    import pyarrow.compute as pc

    for name, part_paths in list(committed.part_paths.items()):
        if not part_paths & paths:
            continue
        keep = pa.array(sorted(part_paths - paths), pa.string())
        for seg in committed.part_segments.get(name, []):
            seg_path = Path(out) / SEGMENTS_DIR / seg
            if seg_path.is_file():  # (a damaged one, deleted before, is not)
                table = score_parts.read_part(seg_path)
                parts.write_table_atomic(table.filter(pc.is_in(table[schema.PATH], keep)), seg_path)
        files_path = Path(out) / FILES_DIR / name
        table = score_parts.read_part(files_path)
        remaining = table.filter(pc.is_in(table[schema.PATH], keep))
        if remaining.num_rows:
            parts.write_table_atomic(remaining, files_path)
        else:
            files_path.unlink()
            for seg in committed.part_segments.get(name, []):
                (Path(out) / SEGMENTS_DIR / seg).unlink(missing_ok=True)
        for path in part_paths & paths:
            committed.identities.pop(path, None)
            committed.failed.discard(path)
        committed.part_paths[name] = part_paths - paths


#: What ``score`` itself puts in OUT: a folder holding only these is a score folder (or one a
#: killed run began), whatever it holds besides ``_score.json``.
OWN_NAMES = frozenset({SEGMENTS_DIR, FILES_DIR, SETTINGS, RUN_RECORD, "report.html", schema.LOCK_NAME})


def refuse_foreign(out: Path) -> None:
    """Refuse an ``out`` that exists and is neither empty nor a score folder, before anything is
    written: a folder of notes or audio, an ``extract`` output, a model bundle. A score folder
    has ``_score.json`` (or holds only what ``score`` writes: a run killed before it wrote one).

    Raises
    ------
    DatasetError
        Naming the folder and some of what it holds.
    """
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise DatasetError(f"output path exists and is not a folder: {out}")
    if (out / SETTINGS).is_file():
        return
    try:
        foreign = sorted(p.name for p in out.iterdir() if not _own_name(p.name))
    except OSError as exc:
        raise DatasetError(f"cannot list the output folder {out}: {exc}") from None
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise DatasetError(f"{out} is not empty and is not a score output folder (no {SETTINGS}; it holds {shown}); "
                           "choose an empty or new --out")


def _own_name(name: str) -> bool:
    """Whether ``name`` in OUT is one ``score`` writes (its temporary files and lock files included)."""
    return (name in OWN_NAMES or name.startswith(f"{schema.LOCK_NAME}.")
            or (name.startswith(".") and ".tmp-" in name and name[1:].split(".tmp-")[0] in OWN_NAMES))


def settings_conflict(out: Path, settings: dict[str, Any]) -> None:
    """Raise, writing nothing, if ``out`` holds results made with other settings than ``settings``
    or of unknown settings (what :func:`check_settings` refuses without ``rescore``)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DatasetError(f"output path exists and is not a folder: {out}")
    record = out / SETTINGS
    if record.is_file():
        try:
            previous = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DatasetError(f"unreadable {record}: {exc}; pass --rescore to start over") from None
        if not isinstance(previous, dict):
            raise DatasetError(f"unreadable {record}: not a JSON object; pass --rescore to start over")
        if previous.get("key") != settings["key"]:
            differs = [k for k in ("bundle_id", "framework", "channels", "normalize", "min_normalize_s", "classes")
                       if previous.get(k) != settings.get(k)]
            what = ", ".join(f"{k} {previous.get(k)!r} -> {settings.get(k)!r}" for k in differs) or "settings"
            raise DatasetError(f"{out} holds results made with another bundle or other settings ({what}); "
                               "pass --rescore to replace them, or choose another --out")
    elif (out / FILES_DIR).is_dir() or (out / SEGMENTS_DIR).is_dir():
        raise DatasetError(f"{out} holds results of unknown settings (no {SETTINGS}); "
                           "pass --rescore to replace them, or choose another --out")


def read_settings(out: Path) -> dict[str, Any] | None:
    """``OUT/_score.json``, or None when it is missing or not a JSON object (callers that need it
    refuse such a folder through :func:`settings_conflict`)."""
    try:
        recorded = json.loads((Path(out) / SETTINGS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) else None


def check_settings(out: Path, settings: dict[str, Any], *, rescore: bool) -> None:
    """Make ``out`` ready for results made with ``settings`` (bundle id and every setting
    that changes a number).

    A folder holding results of another bundle or other settings is refused unless
    ``rescore``, which deletes them; so is a path that is not a folder.
    """
    import shutil

    out = Path(out)
    record = out / SETTINGS
    if rescore:
        if out.exists() and not out.is_dir():
            raise DatasetError(f"output path exists and is not a folder: {out}")
        for name in (SEGMENTS_DIR, FILES_DIR):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in (SETTINGS, RUN_RECORD, "report.html"):
            (out / name).unlink(missing_ok=True)
    else:
        settings_conflict(out, settings)
    out.mkdir(parents=True, exist_ok=True)
    parts.write_text_atomic(record, json.dumps(settings, indent=2, sort_keys=True) + "\n")


def read_table(out: Path, kind: str, *, committed: Committed | None = None) -> pa.Table:
    """All parts of ``OUT/segments`` (those a ``files`` part owns) or ``OUT/files`` as one table, every
    part checked first (:func:`check_whole`: a damaged part is one error).

    Raises
    ------
    DatasetError
        If the folder holds no results, or a damaged or foreign part.
    """
    committed = committed if committed is not None else check_whole(out)
    folder = Path(out) / kind
    found = owned_parts(out, kind, committed)
    if not found:
        what = "per-file" if kind == FILES_DIR else "per-window"
        raise DatasetError(f"{out} holds no scores: no {what} results in {folder} (run `ser-batch score` first)")
    return pa.concat_tables([score_parts.read_part(p) for p in found], promote_options="default")


def owned_parts(out: Path, kind: str, committed: Committed) -> list[Path]:
    """The committed parts of ``OUT/kind``: every ``files`` part, or the ``segments`` parts one owns
    (a windows part no files part owns is a killed run's, whose files were not committed)."""
    if kind == FILES_DIR:
        names = sorted(committed.part_paths)
    else:
        names = sorted({n for owned in committed.part_segments.values() for n in owned})
    return [Path(out) / kind / n for n in names]

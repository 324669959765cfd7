"""Output folders of Parquet parts: atomic, idempotent writes and guarded re-use.

A job's output folder holds ``part-NNNNN-<key>.parquet`` files, one per shard, plus
``_manifest.json`` (written last, so its presence means the run completed) and
``_config.toml`` (the resolved config). Names starting with ``_`` or ``.`` are skipped by
Arrow's dataset discovery, so ``pandas.read_parquet(folder)`` and duckdb's
``read_parquet('folder/*.parquet')`` see exactly the rows.

Every part is written to a hidden temporary name and renamed into place, so a reader
never sees half a file, and its name is derived from the shard's content key, so a
retried task overwrites its own part instead of adding a duplicate.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from ser_batch import schema
from ser_batch.errors import DatasetError

MANIFEST = "_manifest.json"
CONFIG = "_config.toml"
_PART = re.compile(r"^part-(\d{5,})-([0-9a-f]{12})\.parquet$")


def content_key(*items: Any) -> str:
    """A 12-hex-digit key of JSON-serialisable ``items`` (stable across processes)."""
    blob = json.dumps(items, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def part_name(index: int, key: str) -> str:
    """File name of shard ``index`` whose inputs hash to ``key``."""
    return f"part-{index:05d}-{key}.parquet"


def _atomic_replace(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_table_atomic(table: pa.Table, path: Path) -> Path:
    """Write ``table`` as Parquet at ``path`` via a temporary file and a rename."""
    path = Path(path)
    _atomic_replace(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) at ``path`` via a temporary file and a rename."""
    path = Path(path)
    _atomic_replace(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


#: Names ser-batch writes, renames or deletes directly inside an output folder (besides the
#: patterns of :func:`_managed`): the score folder's tables and records, the lock, the report.
MANAGED_NAMES = frozenset({schema.LOCK_NAME, schema.FILES_DIR, schema.SEGMENTS_DIR, schema.SETTINGS,
                           schema.RUN_RECORD, schema.REPORT_HTML, MANIFEST, CONFIG})
#: Sub-folders every entry of which is ser-batch's.
MANAGED_DIRS = (schema.FILES_DIR, schema.SEGMENTS_DIR)


def _managed(name: str) -> bool:
    """Whether ser-batch may write, rename or delete ``OUT/name``: the names above, parts
    (``part-*``), ``_*`` records, temporary files (``.*.tmp-*``) and stale locks (``.lock.*``)."""
    return (name in MANAGED_NAMES or name.startswith(("part-", ".part-", "_", f"{schema.LOCK_NAME}."))
            or (name.startswith(".") and ".tmp-" in name))


def refuse_links(out: Path, *, also: Iterable[str] = ()) -> None:
    """Raise unless nothing ser-batch would write, rename or delete in ``out`` is a symbolic link
    (the names of :func:`_managed`, and ``also``: e.g. the demo's sub-folders).

    A link at ``OUT/segments`` (or ``OUT/report.html``, ``OUT/.lock``, a part, ...) would make a
    run delete and write files in the folder it points to; writes stay inside OUT instead, so such
    a link is refused before anything is touched. ``out`` itself may be a link (to a disk with room,
    say): it is the folder the user named. Called by every job (:func:`ser_batch.cluster.output.job_output`)
    and by ``report`` before they write.

    Raises
    ------
    DatasetError
        Naming the first link found and where it points.
    """
    out = Path(out)
    if not out.is_dir():
        return  # nothing in it yet (or not a folder: the callers say so)
    also = set(also)
    links = [out / e.name for e in os.scandir(out) if (_managed(e.name) or e.name in also) and e.is_symlink()]
    for name in MANAGED_DIRS:
        folder = out / name
        if folder.is_dir() and not folder.is_symlink():
            links += [folder / e.name for e in os.scandir(folder) if e.is_symlink()]
    if links:
        first = min(links)
        raise DatasetError(f"{first} is a symbolic link (to {os.readlink(first)}); ser-batch writes and deletes "
                           "only inside --out and never through links there: remove it (or move the real "
                           "folder there), or choose another --out")


#: What ``score`` writes into its OUT (a score folder), none of which an ``extract`` OUT holds.
SCORE_NAMES = (schema.SETTINGS, schema.FILES_DIR, schema.SEGMENTS_DIR, schema.RUN_RECORD)


def refuse_score_folder(directory: Path) -> None:
    """Refuse a feature output folder that holds ``score`` results: feature parts beside its
    ``files/`` and ``segments/`` would make ``pandas.read_parquet(OUT)`` read three tables as one.
    Called under OUT's lock, so a ``score`` started into the same new folder a moment before is
    seen.

    Raises
    ------
    DatasetError
        Naming what of a score folder it holds.
    """
    directory = Path(directory)
    found = [n for n in SCORE_NAMES if (directory / n).exists()] if directory.is_dir() else []
    if found:
        raise DatasetError(f"{directory} is a score output folder (it holds {', '.join(found)}); extract writes its "
                           "feature parts into a folder of their own: choose an empty or new --out")


def existing_parts(directory: Path) -> dict[str, Path]:
    """Part files in ``directory`` keyed by file name."""
    directory = Path(directory)
    if not directory.is_dir():
        return {}
    return {p.name: p for p in directory.iterdir() if _PART.match(p.name)}


def _ours(path: Path) -> bool:
    name = path.name
    return bool(_PART.match(name)) or name in (MANIFEST, CONFIG) or (name.startswith(".part-") and ".tmp-" in name)


def prepare_output(directory: Path, *, overwrite: bool, resume: bool, planned: Iterable[str]) -> set[str]:
    """Make ``directory`` ready for a run that will write the ``planned`` part names.

    * new or empty folder: created;
    * ``resume``: parts already present under a planned name are kept (their shard is
      skipped); parts of another plan, temporary files and the old manifest are removed,
      so no row can appear twice;
    * ``overwrite``: every ser-batch file in it is removed first (other files are kept);
    * otherwise a folder that already holds ser-batch results is an error, so nothing is
      lost silently (other files in it are left alone either way).

    Returns
    -------
    set of str
        Planned part names that are already complete (empty unless ``resume``).
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise DatasetError(f"output path exists and is not a folder: {directory}")
    directory.mkdir(parents=True, exist_ok=True)
    ours = [p for p in directory.iterdir() if _ours(p)]
    if ours and not (overwrite or resume):
        raise DatasetError(
            f"output folder {directory} already holds results; "
            "pass --overwrite to replace them or --resume to finish an interrupted run"
        )
    planned = set(planned)
    done = set()
    for path in ours:
        if resume and not overwrite and path.name in planned:
            done.add(path.name)
        else:
            path.unlink()
    return done


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The run manifest of ``directory``, or ``None`` if the run did not complete."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"unreadable manifest {path}: {exc}") from None


def read_parts(directory: Path) -> pa.Table:
    """All parts of ``directory`` as one table, in part order, with their shared schema.

    Raises
    ------
    DatasetError
        If the folder is missing or holds no part.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"feature folder not found: {directory}")
    # By shard number: past 99999 shards the names grow a digit and stop sorting as text.
    parts = sorted(existing_parts(directory).values(), key=lambda p: int(_PART.match(p.name).group(1)))
    if not parts:
        raise DatasetError(f"no Parquet parts in {directory} (run `ser-batch extract` first)")
    tables = [pq.read_table(p) for p in parts]
    try:
        return pa.concat_tables(tables)
    except pa.ArrowInvalid as exc:
        raise DatasetError(f"parts in {directory} have different schemas: {exc}") from None

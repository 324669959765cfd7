"""Planning a scoring run, once: the input's files, what OUT holds, the units of work and shards.

The driver of :mod:`ser_batch.pipeline.score` lists the input once (:func:`list_input`), keys every
output row by the bundle and the settings that change a number (:func:`settings_of`), and, from
one read of what OUT holds, makes the plan (:func:`plan_score`): which files are done, which
changed or failed before, which are gone; each file to score is probed once (its header travels
to the worker in its :class:`Unit`), a long file is cut into chunks -- ranges of windows that
separate tasks score (:func:`cut_units`) -- and units are packed into shards of about
``score.shard_s`` seconds (:func:`plan_shards`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ser_batch import schema
from ser_batch.audio.decode import AudioInfo
from ser_batch.config import Config, FeatureConfig, config_to_dict
from ser_batch.data import parts, score_folder, score_root
from ser_batch.data.paths import fs_path, stored_path
from ser_batch.errors import DatasetError


@dataclass(frozen=True)
class Unit:
    """One file, or one chunk of a long file (a range of its windows), to score.

    ``path`` is the name the tables store, ``source`` the absolute path the file is opened at;
    ``info`` is the driver's probe of its header (``None`` when that failed: the worker makes the
    file's error row).
    """

    path: str
    source: str
    size: int | None
    mtime: float | None
    duration_s: float
    windows: tuple[int, int | None] = (0, None)
    chunk: int = -1  # -1: the whole file
    info: AudioInfo | None = field(default=None, compare=False)

    def key(self, settings_key: str) -> str:
        return parts.content_key(self.path, self.size, self.mtime, self.windows, settings_key)


@dataclass(frozen=True)
class Shard:
    """Units scored by one task; ``key`` (its parts' names) hashes their keys."""

    units: tuple[Unit, ...]
    key: str


def list_input(input_path: Path, *, extensions: tuple[str, ...]) -> list[tuple[str, Path]]:
    """``(reported path, absolute path)`` of every file to score.

    INPUT is a folder (searched recursively, as ``extract`` does) or a text file listing one
    path per line, as archives are often selected by a query. In a list, relative paths are
    relative to the list's folder; blank lines are skipped, and so are comments: a line whose
    first character (after blanks) is ``#`` followed by a blank, another ``#`` or nothing
    (``# kept for later``). A line ``#name.wav`` is a file name, not a comment. A line is read as
    the ``path`` column shows a name (:func:`ser_batch.data.paths.stored_path`: ``\\xff`` for a
    byte that is not UTF-8; raw bytes are accepted too). The same file listed under several
    spellings (``a/../b.wav`` and ``b.wav``, a link and its target) is scored once, under the
    spelling that comes first in the list.

    The reported path is the stored form of the name: printable UTF-8, lossless
    (:mod:`ser_batch.data.paths`); the absolute path is the one to open.
    """
    from ser_batch.data.labels import discover_audio

    input_path = Path(input_path)
    if input_path.is_dir():
        root = input_path.resolve()
        return [(stored_path(rel), root / rel) for rel in discover_audio(input_path, extensions=extensions)]
    if not input_path.is_file():
        raise DatasetError(f"input not found: {input_path}")
    try:
        raw = input_path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read the list of files {input_path}: {exc}") from None
    # Any bytes: a name that is not UTF-8 may be listed as it is on disk.
    lines = raw.decode("utf-8-sig", errors="surrogateescape").splitlines()
    base = input_path.resolve().parent
    entries, seen = [], set()
    for line in lines:
        text = line.strip()
        if not text or _is_comment(text):
            continue
        name = fs_path(text)
        source = Path(os.path.abspath(base / name))
        real = os.path.realpath(source)  # one file, however it is spelled
        if real in seen:
            continue
        seen.add(real)
        entries.append((stored_path(name), source))
    return entries


def _is_comment(line: str) -> bool:
    """``#``, ``# text`` or ``## text``: a comment of an input list; ``#name.wav`` is a file."""
    return line.startswith("#") and (len(line) == 1 or line[1].isspace() or line[1] == "#")


def identity_of(path: Path) -> tuple[int | None, float | None]:
    """(size, mtime) of a file, of the link itself when it dangles; ``(None, None)`` if gone."""
    for stat in (os.stat, os.lstat):
        try:
            st = stat(path)
            return int(st.st_size), round(st.st_mtime, 6)
        except OSError:
            continue
    return None, None


def plan_shards(units: list[Unit], *, config: Config, settings_key: str) -> list[Shard]:
    """Pack units into shards of about ``score.shard_s`` seconds (at most ``shard_files`` files),
    longest first so that the last tasks to start are short ones."""
    shards, current, seconds = [], [], 0.0
    for unit in units:
        current.append(unit)
        seconds += max(unit.duration_s, 1.0)
        if seconds >= config.score.shard_s or len(current) >= config.score.shard_files or unit.chunk >= 0:
            shards.append(current)
            current, seconds = [], 0.0
    if current:
        shards.append(current)
    planned = [Shard(tuple(s), parts.content_key([u.key(settings_key) for u in s])) for s in shards]
    return sorted(planned, key=lambda s: -sum(u.duration_s for u in s.units))


def cut_units(path: str, source: Path, size: int | None, mtime: float | None, info: AudioInfo | None, *,
              config: Config, features: FeatureConfig, sample_rate: int) -> list[Unit]:
    """One unit for a file, or chunks of about ``score.chunk_s``: ranges of its windows on the grid
    of the bundle's ``features`` at its ``sample_rate``, from the same arithmetic as the window
    stream (:func:`ser_batch.features.windows.window_ranges`), so no chunk starts past the end.

    A file scored with ``score.normalize = "file"`` is never cut: its statistics need all of
    its windows (the task streams it block by block, keeping only window vectors)."""
    from ser_batch.features.windows import WindowGrid, window_ranges

    duration_s = info.duration_s if info is not None else 0.0
    if info is None or duration_s <= config.score.chunk_s or config.score.normalize == "file":
        return [Unit(path, str(source), size, mtime, duration_s, info=info)]
    ranges = window_ranges(info.samples_at(sample_rate), config=features, sample_rate=sample_rate,
                           range_s=config.score.chunk_s)
    if len(ranges) == 1:
        return [Unit(path, str(source), size, mtime, duration_s, info=info)]
    hop_s = WindowGrid.of(features, sample_rate).hop_s
    # Seconds each chunk owns: its windows' hops, the last one the rest of the file (shard packing).
    return [Unit(path, str(source), size, mtime, duration_s - first * hop_s if stop is None else (stop - first) * hop_s,
                 windows=(first, stop), chunk=j, info=info) for j, (first, stop) in enumerate(ranges)]


def settings_of(bundle: Any, bundle_id: str, config: Config, subset: tuple[str, ...] | None) -> dict[str, Any]:
    """What every row of an output folder depends on, and its key (``subset``: the classes
    ``score.classes`` keeps, ``None`` for all the bundle's)."""
    score = config_to_dict(config)["score"]
    numbers = {k: score[k] for k in ("framework", "channels", "min_speech_ratio")}
    normalizing = {k: score[k] for k in ("normalize", "min_normalize_s")} if score["normalize"] != "none" else {}
    # Without normalisation the key is the one of results made before it existed, so those
    # folders stay incremental; with it, its settings are part of the key.
    # Likewise a class subset is part of the key only when there is one.
    key = parts.content_key(bundle_id, numbers, schema.SCHEMA_VERSION, *([normalizing] if normalizing else []),
                            *([{"classes": list(subset)}] if subset else []))
    return {"key": key, "bundle_id": bundle_id, "bundle_path": str(bundle.path), **numbers,
            "normalize": score["normalize"], "min_normalize_s": score["min_normalize_s"],
            "classes": list(subset) if subset else bundle.classes, "schema_version": schema.SCHEMA_VERSION}


@dataclass
class ScorePlan:
    """What a run will do, from one listing of the input and one read of OUT."""

    #: What OUT held (empty with ``--rescore``); rows of ``changed`` files leave it when dropped.
    committed: score_folder.Committed
    shards: list[Shard]
    files_total: int
    #: Files already scored (same path, size and mtime); of those, the ones whose row is an error row.
    files_skipped: int = 0
    failed_skipped: int = 0
    #: Files whose error row is scored again (``--retry-errors``).
    retried: int = 0
    #: Paths whose rows go before the run: files changed since, error rows retried, gone files pruned.
    changed: set[str] = field(default_factory=set)
    #: Paths of rows whose file is gone from the input, and how many of them are removed (``--prune``).
    gone: set[str] = field(default_factory=set)
    pruned: int = 0

    @property
    def files(self) -> int:
        """Files to score (a file cut into chunks counts once)."""
        return len({u.path for s in self.shards for u in s.units})


def plan_score(entries: list[tuple[str, Path]], committed: score_folder.Committed, *, config: Config,
               settings_key: str, features: FeatureConfig, sample_rate: int, scope: score_root.Scope,
               retry_errors: bool = False, prune: bool = False) -> ScorePlan:
    """The plan of a run over ``entries`` (:func:`list_input` of its input, paths as OUT stores them:
    :meth:`ser_batch.data.score_root.Scope.stored`) into an OUT that holds ``committed``: read
    only, nothing written.

    Files already scored under the same bundle and settings (same path, size and mtime) are
    skipped; files changed since are scored again and their old rows replaced. A file whose row
    is an error row (unreadable, or its worker died, or the run's own settings failed it) is
    skipped too unless ``retry_errors``, which scores it again and replaces its row. Rows of
    files under this run's input (``scope``) that it no longer lists, with no file at their path,
    are counted, and removed with ``prune``. Each file to score is probed here, once; ``features``
    and ``sample_rate`` are the bundle's (the grid of windows a long file is cut on).
    """
    from ser_batch.audio.decode import probe_audio
    from ser_batch.errors import AudioError

    plan = ScorePlan(committed, [], len(entries))
    units: list[Unit] = []
    respelled = _respelled(committed)
    for path, source in entries:
        size, mtime = identity_of(source)
        if committed.is_done(path, size, mtime, retry_errors=retry_errors):
            plan.files_skipped += 1
            plan.failed_skipped += path in committed.failed
            continue
        if path in committed.identities:
            plan.changed.add(path)
            plan.retried += path in committed.failed and committed.is_done(path, size, mtime)
        elif path in respelled:  # its row under the old spelling goes: one file, one row
            plan.changed.add(respelled[path])
        try:
            info: AudioInfo | None = probe_audio(source)
        except (AudioError, OSError):
            info = None  # the task makes its error row
        units += cut_units(path, source, size, mtime, info, config=config, features=features,
                           sample_rate=sample_rate)
    plan.gone = gone_rows(scope, committed, listed={path for path, _ in entries})
    if prune:
        plan.pruned = len(plan.gone)
        plan.changed |= plan.gone
    plan.shards = plan_shards(units, config=config, settings_key=settings_key)
    return plan


def _respelled(committed: score_folder.Committed) -> dict[str, str]:
    """Rows stored under a spelling of their name that depended on the locale (a run under
    ``PYTHONUTF8=0`` and a POSIX locale stored ``caf\\xc3\\xa9.wav`` for ``café.wav``): the name they
    are stored under now -> the old one."""
    return {new: old for old in committed.identities
            if "\\x" in old and (new := stored_path(fs_path(old))) != old}


def gone_rows(scope: score_root.Scope, committed: score_folder.Committed, *, listed: set[str]) -> set[str]:
    """Paths of ``committed`` rows of files under this run's input (``scope``) that it does not list
    (``listed``) and that are gone: nothing (not even a dangling link) at the path the row names,
    read below OUT's input root. A row of a file that is still there but not listed (another list
    scored into the same OUT) is not gone, and neither is a row of another folder of the archive
    than the one this run scores."""
    return {path for path in committed.identities
            if path not in listed and scope.holds(path)
            and not os.path.lexists(os.path.join(scope.root, fs_path(path)))}


def archive_root(input_path: Path) -> Path:
    """The folder the paths :func:`list_input` reports are relative to: INPUT itself, or the folder of
    a list (resolved)."""
    input_path = Path(input_path)
    return input_path.resolve() if input_path.is_dir() else input_path.resolve().parent

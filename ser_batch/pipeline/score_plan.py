"""Planning a scoring run: the input's files, the units of work and shards, and the settings key.

The driver of :mod:`ser_batch.pipeline.score` lists the input (:func:`list_input`), cuts long files into
window ranges (:func:`cut_units`), packs units into shards of about ``score.shard_s`` seconds
(:func:`plan_shards`), and keys every output row by the bundle and the settings that change a
number (:func:`settings_of`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ser_batch import schema
from ser_batch.config import Config, config_to_dict
from ser_batch.data import parts as storage
from ser_batch.data.paths import fs_path, stored_path
from ser_batch.errors import DatasetError


@dataclass(frozen=True)
class Unit:
    """One file, or one range of windows of a long file, to score."""

    path: str  # as reported in the tables
    source: str  # absolute path to read
    size: int | None
    mtime: float | None
    duration_s: float
    windows: tuple[int, int | None] = (0, None)
    chunk: int = -1  # -1: the whole file

    def key(self, settings_key: str) -> str:
        return storage.content_key(self.path, self.size, self.mtime, self.windows, settings_key)


@dataclass(frozen=True)
class Shard:
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
    planned = [Shard(tuple(s), storage.content_key([u.key(settings_key) for u in s])) for s in shards]
    return sorted(planned, key=lambda s: -sum(u.duration_s for u in s.units))


def cut_units(path: str, source: Path, size: int | None, mtime: float | None, duration_s: float, *,
              config: Config, bundle_config: Config) -> list[Unit]:
    """One unit for a file, or window ranges of about ``score.chunk_s`` for a longer one.

    A file scored with ``score.normalize = "file"`` is never cut: its statistics need all of
    its windows (the task streams it block by block, keeping only window vectors)."""
    hop_s = bundle_config.features.window_hop_s
    if duration_s <= config.score.chunk_s or config.score.normalize == "file":
        return [Unit(path, str(source), size, mtime, duration_s)]
    per_chunk = max(1, int(round(config.score.chunk_s / hop_s)))
    n_chunks = max(1, int(round(duration_s / hop_s / per_chunk)))
    units = []
    for j in range(n_chunks):
        stop = None if j == n_chunks - 1 else (j + 1) * per_chunk
        length = (duration_s - j * per_chunk * hop_s) if stop is None else per_chunk * hop_s
        units.append(Unit(path, str(source), size, mtime, length, windows=(j * per_chunk, stop), chunk=j))
    return units


def settings_of(bundle: Any, bundle_id: str, config: Config) -> dict[str, Any]:
    """What every row of an output folder depends on, and its key."""
    from ser_batch.inference.scoring import class_subset

    score = config_to_dict(config)["score"]
    subset = class_subset(bundle, config.score)
    numbers = {k: score[k] for k in ("framework", "channels", "min_speech_ratio")}
    normalizing = {k: score[k] for k in ("normalize", "min_normalize_s")} if score["normalize"] != "none" else {}
    # Without normalisation the key is the one of results made before it existed, so those
    # folders stay incremental; with it, its settings are part of the key.
    # Likewise a class subset is part of the key only when there is one.
    key = storage.content_key(bundle_id, numbers, schema.SCHEMA_VERSION, *([normalizing] if normalizing else []),
                              *([{"classes": list(subset)}] if subset else []))
    return {"key": key, "bundle_id": bundle_id, "bundle_path": str(bundle.path), **numbers,
            "normalize": score["normalize"], "min_normalize_s": score["min_normalize_s"],
            "classes": list(subset) if subset else bundle.classes, "schema_version": schema.SCHEMA_VERSION}

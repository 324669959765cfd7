"""Which input files a bundle was trained on: by path, or by content (a renamed copy).

A bundle lists its training rows in ``training_files.json`` (paths relative to the extracted
folder, ``corpus:path`` keys in a multi-corpus bundle); bundles trained since ser-batch
recorded them also carry ``training_hashes.json``: each training file's size and the sha256 of its first
:data:`HEAD_BYTES` bytes, written at train time when the audio is still where ``extract`` read it.

Matching an input file, cheaply:

* by path: the training path's components equal the last components of the input's absolute
  path (``.../Actor_18/03-01-...wav`` matches ``Actor_18/03-01-...wav``), whatever folder was given;
* by content: only files not matched by path and whose size equals a training file's recorded
  size are read, and only their first :data:`HEAD_BYTES` bytes (one stat per input file, one
  1 MiB read per size match).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ser_batch.errors import BundleError

TRAINING_HASHES = "training_hashes.json"
#: Bytes of each file hashed for a content match (sound clips differ within their first MiB).
HEAD_BYTES = 1 << 20


def head_hash(path: Path) -> str:
    """sha256 of the first :data:`HEAD_BYTES` bytes of ``path``."""
    with Path(path).open("rb") as handle:
        return hashlib.sha256(handle.read(HEAD_BYTES)).hexdigest()


def write_training_hashes(directory: Path, files: Iterable[tuple[str, Path]]) -> dict[str, Any] | None:
    """Write ``training_hashes.json`` ({key: {size, sha256_head}}) for the training files still
    readable at ``path``; return the manifest entry, or ``None`` when none was readable."""
    hashes: dict[str, dict[str, Any]] = {}
    for key, path in files:
        try:
            hashes[key] = {"size": Path(path).stat().st_size, "sha256_head": head_hash(path)}
        except OSError:
            continue
    if not hashes:
        return None
    (Path(directory) / TRAINING_HASHES).write_text(json.dumps(hashes, indent=0, sort_keys=True) + "\n",
                                                   encoding="utf-8")
    return {"list": TRAINING_HASHES, "count": len(hashes), "head_bytes": HEAD_BYTES}


def path_part(key: str, *, qualified: bool) -> str:
    """The path of a training key (``corpus:path`` keys lose their corpus)."""
    return key.split(":", 1)[1] if qualified and ":" in key else key


@dataclass
class TrainingOverlap:
    """Input files found in a bundle's training data."""

    files: int = 0
    by_path: int = 0
    #: Matched by content and not by path (renamed or moved copies).
    by_content: int = 0
    total: int = 0
    #: Whether the bundle lists its training files at all (format 1 does not).
    known: bool = True
    paths: list[str] = field(default_factory=list)

    def line(self) -> str | None:
        """The summary line, or ``None`` when no input file was in the training data."""
        if not self.files:
            return None
        how = "/".join(k for k, n in (("path", self.by_path), ("content", self.by_content)) if n)
        return (f"{self.files} of {self.total} files were in the bundle's training data (by {how}): "
                "their labels say nothing about accuracy")

    def record(self) -> dict[str, Any]:
        """The ``_run.json`` entry."""
        return {"files": self.files, "by_path": self.by_path, "by_content": self.by_content,
                "examples": self.paths[:10]}


def _training_index(bundle: Any) -> tuple[set[tuple[str, ...]], set[int], dict[tuple[int, str], str]] | None:
    names = bundle.training_files()
    if names is None:
        return None
    qualified = bundle.training_files_qualified
    parts = {tuple(Path(path_part(n, qualified=qualified)).parts) for n in names}
    entry = bundle.manifest.get("training_data", {}).get("hashes") or {}
    by_content: dict[tuple[int, str], str] = {}
    if entry:
        try:
            stored = json.loads((bundle.path / entry["list"]).read_text(encoding="utf-8"))
            for key, value in stored.items():
                by_content[(int(value["size"]), str(value["sha256_head"]))] = key
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BundleError(f"bundle {bundle.path} has an unreadable {TRAINING_HASHES}: {exc}") from None
    return parts, {size for size, _ in by_content}, by_content


def matches(bundle: Any, sources: Sequence[Path]) -> dict[str, str] | None:
    """``{str(source): "path" | "content"}`` for the ``sources`` the bundle was trained on;
    ``None`` when the bundle does not list its training files (format 1)."""
    index = _training_index(bundle)
    if index is None:
        return None
    parts, sizes, hashes = index
    lengths = sorted({len(p) for p in parts})
    found: dict[str, str] = {}
    for source in sources:
        tail = Path(source).absolute().parts
        if any(tail[-n:] in parts for n in lengths if n <= len(tail)):
            found[str(source)] = "path"
            continue
        if not sizes:
            continue
        try:
            size = Path(source).stat().st_size
            if size in sizes and (size, head_hash(source)) in hashes:
                found[str(source)] = "content"
        except OSError:
            continue  # not readable: scoring it makes the error
    return found


def find_overlap(bundle: Any, sources: Sequence[Path]) -> TrainingOverlap:
    """Which of ``sources`` (input files) the bundle was trained on, counted."""
    found = matches(bundle, sources)
    if found is None:
        return TrainingOverlap(total=len(sources), known=False)
    return overlap_of(found, total=len(sources))


def overlap_of(found: dict[str, str], *, total: int) -> TrainingOverlap:
    """The counts of :func:`matches`' answer for ``total`` input files."""
    kinds = list(found.values())
    return TrainingOverlap(files=len(found), by_path=kinds.count("path"), by_content=kinds.count("content"),
                           total=total, paths=list(found))

"""One score folder, one archive: the folder OUT's stored paths are relative to (issue 25).

Stored paths are relative to the input (``call_0001.wav``), so two archives scored into one OUT
would share paths: night 2's ``call_0001.wav`` would replace night 1's rows, and night 1's other
files would look deleted. So ``_score.json`` records the input root (:data:`INPUT_ROOT`) and a run
gets its :class:`Scope` in OUT from it (:func:`input_scope`): the same root, a folder inside it
(its paths stored with the folder's path in front), a root that replaced a recorded one that no
longer exists (an archive moved); another archive is refused.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

from ser_batch.data.score_folder import read_settings
from ser_batch.errors import DatasetError
from ser_batch.schema import SETTINGS

#: Key of ``_score.json``: the folder the stored paths of OUT are relative to (absolute, resolved).
INPUT_ROOT = "input_root"


@dataclass(frozen=True)
class Scope:
    """Where a run's files sit in an OUT's archive.

    ``root`` is the folder every relative ``path`` of OUT is relative to (recorded in ``_score.json``
    as ``input_root``), ``prefix`` the run's input folder below it (``""``: the root itself), which
    the run's stored paths start with, and the only part of OUT that "no longer in the input" and
    ``--prune`` concern. ``moved_from``: the recorded root, when it no longer exists and this run's
    took its place (an archive moved); ``adopted``: OUT recorded no root (made before there was one)."""

    root: Path
    prefix: str = ""
    moved_from: str | None = None
    adopted: bool = False

    def stored(self, path: str) -> str:
        """The ``path`` OUT stores for a name relative to the run's input (absolute names stay)."""
        if not self.prefix or path.startswith("/"):
            return path
        joined = posixpath.normpath(posixpath.join(self.prefix, path))
        return joined if not joined.startswith("../") else str(self.root / joined)

    def holds(self, path: str) -> bool:
        """Whether a stored ``path`` of OUT is of a file under the run's input."""
        if not self.prefix:
            return True
        if path.startswith("/"):
            return path.startswith(str(self.root / self.prefix) + "/")
        return path.startswith(self.prefix + "/")


def input_scope(out: Path, root: Path) -> Scope:
    """The :class:`Scope` of a run whose stored paths are relative to ``root`` (an input folder, or a
    list's folder; resolved), in ``out``: one folder holds the rows of one archive.

    A new or empty OUT (or one without a recorded root: made before there was one) takes ``root``;
    a ``root`` inside the recorded one gets the path between them as its prefix (scoring one night's
    folder of an archive scored whole stores the same paths); a recorded root that no longer exists
    is replaced (the archive moved: its files keep their paths below the new root).

    Raises
    ------
    DatasetError
        If ``out`` holds the rows of another archive root that still exists: the same stored path
        (``call_0001.wav``) would name a file of each, and one would replace the other's rows.
    """
    recorded = read_settings(out) or {}
    previous = recorded.get(INPUT_ROOT)
    root = Path(root)
    if not isinstance(previous, str) or not previous:
        if recorded:
            _refuse_another_archive(out, root)
        return Scope(root, adopted=bool(recorded))
    before = Path(previous)
    if root == before:
        return Scope(root)
    if before in root.parents:
        return Scope(before, root.relative_to(before).as_posix())
    if not before.exists():
        return Scope(root, moved_from=previous)
    raise DatasetError(
        f"{out} holds the scores of another archive, below {before} (its input root, in {SETTINGS}); this input "
        f"is below {root}: the same stored path (call_0001.wav in each) would name two files. Score it into another "
        f"--out, or score their common folder {_common(before, root)} into a new one (--rescore replaces the rows)")


def _refuse_another_archive(out: Path, root: Path) -> None:
    """An OUT made before it recorded its root takes this run's, unless its rows are plainly of
    another archive: some of its stored paths name files below ``root`` and none of those is the
    file that was scored (size and modification time), as when night 2's ``call_0001.wav`` meets
    night 1's rows. (Files of the same names all changed since: ``--rescore`` says so.) A folder
    that cannot be read is left to the checks that name its damage."""
    from ser_batch.data.score_folder import read_committed

    try:
        identities = read_committed(out).identities
    except (DatasetError, OSError):
        return
    present = matching = 0
    for path, (size, mtime) in identities.items():
        if path.startswith("/"):
            continue
        try:
            st = (root / path).stat()
        except OSError:
            continue
        present += 1
        matching += (int(st.st_size), round(st.st_mtime, 6)) == (size, mtime)
    if present and not matching:
        raise DatasetError(
            f"{out} was scored before it recorded its input root, and none of the {present} file"
            f"{'s' if present > 1 else ''} its rows name below {root} is the file scored then (size and time differ): "
            "its rows look like another archive's of the same names, which this run would replace. Score this input "
            "into another --out, or --rescore to replace every row")


def _common(a: Path, b: Path) -> str:
    return os.path.commonpath([str(a), str(b)])

"""Per-group normalisation of window features: the one implementation train, evaluate and score use.

Most of what separates two speakers' feature vectors is the speaker, not the emotion. Z-scoring
each group's vectors (a speaker's in training and ``evaluate``, a stream's -- a file or one
channel -- in ``score``) by that group's own statistics removes that offset and scale. The
statistics are taken over the group's *speech* windows only (silence and line noise say nothing
about the voice), and every standard deviation is floored so that a feature that hardly varies
within a group is not blown up into noise.

Pure numpy: no Ray, no models. STYLE.md rule 13: this is an explicit, named, optional file-level
step; window features themselves stay local.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Sequence

import numpy as np

from ser_batch.errors import DatasetError

#: Smallest standard deviation a feature is divided by (feature units). Features near-constant
#: inside one group (a band a telephone line removed, a pitch statistic of a monotone speaker)
#: would otherwise be divided by almost nothing.
STD_FLOOR = 1e-2


@dataclass(frozen=True)
class GroupStats:
    """Mean and floored standard deviation of one group's vectors.

    Attributes
    ----------
    mean : np.ndarray [shape=(n_features,)], float64
    std : np.ndarray [shape=(n_features,)], float64, >= the floor
    n : int, vectors the statistics were taken over
    speech_only : bool, whether they were the group's speech windows (False: it had none, so all)
    """

    mean: np.ndarray
    std: np.ndarray
    n: int
    speech_only: bool

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """``(vectors - mean) / std`` as float32 ``[shape=(k, n_features)]``."""
        return ((np.asarray(vectors, dtype=np.float64) - self.mean) / self.std).astype(np.float32)


def fit_stats(vectors: np.ndarray, speech: np.ndarray | None = None, *, std_floor: float = STD_FLOOR) -> GroupStats:
    """Statistics of one group.

    Parameters
    ----------
    vectors : np.ndarray [shape=(k, n_features)], the group's window (or clip) vectors
    speech : np.ndarray of bool [shape=(k,)], the windows with speech; None = all. A group
        without any speech window falls back on all its windows.
    std_floor : smallest standard deviation kept (see :data:`STD_FLOOR`)

    Raises
    ------
    DatasetError
        If the group has no vector.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2 or len(vectors) == 0:
        raise DatasetError("cannot take normalisation statistics of a group without vectors")
    speech_only = speech is not None and bool(np.any(speech))
    used = vectors[np.asarray(speech, dtype=bool)] if speech_only else vectors
    return GroupStats(mean=used.mean(axis=0), std=np.maximum(used.std(axis=0), std_floor), n=int(len(used)),
                      speech_only=speech_only)


@dataclass(frozen=True)
class StatsSums:
    """Running sums (float64) of the speech windows' vectors of many streams, to be merged across
    shards and turned into one group's statistics: ``score --normalize archive`` reduces them over
    the whole archive. ``fit_stats`` of all the vectors at once and ``stats()`` of the merged sums of
    any split of them agree to float64 rounding.

    Attributes
    ----------
    n : int, vectors summed (speech windows; see :meth:`add`)
    total, squares : np.ndarray [shape=(n_features,)], float64, sums of the vectors and of their squares
    """

    n: int
    total: np.ndarray
    squares: np.ndarray

    @classmethod
    def empty(cls, n_features: int) -> "StatsSums":
        return cls(0, np.zeros(n_features), np.zeros(n_features))

    @classmethod
    def of(cls, vectors: np.ndarray, speech: np.ndarray) -> "StatsSums":
        """The sums of the ``speech`` rows of ``vectors`` ``(k, n_features)`` (windows with speech only:
        an archive's silences and line noise say nothing about its voices)."""
        used = np.asarray(vectors, dtype=np.float64)[np.asarray(speech, dtype=bool)]
        return cls(int(len(used)), used.sum(axis=0), (used * used).sum(axis=0))

    def merge(self, other: "StatsSums") -> "StatsSums":
        return StatsSums(self.n + other.n, self.total + other.total, self.squares + other.squares)

    def stats(self, *, std_floor: float = STD_FLOOR) -> GroupStats:
        """The group's mean and floored standard deviation.

        Raises
        ------
        DatasetError
            If no speech window was summed.
        """
        if self.n <= 0:
            raise DatasetError("the archive has no window with speech to take normalisation statistics of")
        mean = self.total / self.n
        var = np.maximum(self.squares / self.n - mean * mean, 0.0)
        return GroupStats(mean=mean, std=np.maximum(np.sqrt(var), std_floor), n=self.n, speech_only=True)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready record (floats as written by Python: the round trip is exact)."""
        return {"n": self.n, "total": [float(v) for v in self.total], "squares": [float(v) for v in self.squares]}

    @classmethod
    def from_json(cls, entry: Any) -> "StatsSums":
        """Read :meth:`to_json`'s record back.

        Raises
        ------
        DatasetError
            If it is not such a record.
        """
        try:
            total = np.asarray(entry["total"], dtype=np.float64)
            squares = np.asarray(entry["squares"], dtype=np.float64)
            n = int(entry["n"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"unreadable archive statistics: {exc}") from None
        if total.ndim != 1 or total.shape != squares.shape or n < 0 or not np.all(np.isfinite(total)) \
                or not np.all(np.isfinite(squares)):
            raise DatasetError("unreadable archive statistics: arrays of different shapes or not finite")
        return cls(n, total, squares)


def fit_group_stats(vectors: np.ndarray, groups: Sequence[Hashable] | np.ndarray, speech: np.ndarray | None = None,
                    *, std_floor: float = STD_FLOOR) -> dict[Any, GroupStats]:
    """Statistics of every group, each from its own vectors only.

    Parameters
    ----------
    vectors : np.ndarray [shape=(k, n_features)]
    groups : [shape=(k,)], the group of each vector (an actor, ``(actor, band)``, a stream id)
    speech : np.ndarray of bool [shape=(k,)] or None, see :func:`fit_stats`
    """
    keys = _keys(groups, len(vectors))
    codes, order = _codes(keys)
    stats = {}
    for code, key in enumerate(order):
        mine = codes == code
        stats[key] = fit_stats(np.asarray(vectors)[mine], None if speech is None else np.asarray(speech)[mine],
                               std_floor=std_floor)
    return stats


def normalize_groups(vectors: np.ndarray, groups: Sequence[Hashable] | np.ndarray, speech: np.ndarray | None = None,
                     *, std_floor: float = STD_FLOOR) -> np.ndarray:
    """Z-score every vector by the statistics of its own group: float32 ``[shape=(k, n_features)]``.

    Groups never share statistics: callers that split data (training and test parts) call
    this on each part separately, so no statistic crosses the split.
    """
    keys = _keys(groups, len(vectors))
    stats = fit_group_stats(vectors, keys, speech, std_floor=std_floor)
    codes, order = _codes(keys)
    out = np.empty(np.shape(vectors), dtype=np.float32)
    for code, key in enumerate(order):
        group = stats[key]
        mine = codes == code
        out[mine] = group.apply(np.asarray(vectors)[mine])
    return out


def _codes(keys: list[Hashable]) -> tuple[np.ndarray, list[Hashable]]:
    """Each key's group number [shape=(k,)] and the groups in order of first appearance: one
    pass over the keys, then a vectorised mask per group."""
    number: dict[Hashable, int] = {}
    codes = np.fromiter((number.setdefault(k, len(number)) for k in keys), dtype=np.int64, count=len(keys))
    return codes, list(number)


def _keys(groups: Sequence[Hashable] | np.ndarray, n: int) -> list[Hashable]:
    keys = [tuple(g) if isinstance(g, (list, np.ndarray)) else g for g in groups]
    if len(keys) != n:
        raise ValueError(f"{len(keys)} group keys for {n} vectors")
    return keys

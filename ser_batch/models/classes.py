"""Class subsets: scoring with fewer classes than a bundle knows (``--classes angry,happy,neutral,sad``).

A bundle's networks give probabilities over all of its classes. Many uses want fewer: a call
centre's four-class taxonomy, or a corpus that lacks some of the bundle's classes (EMOVO has no
``calm``). Restricting is done on the probabilities, after the networks: the kept classes'
probabilities are renormalised to sum to one, which is the softmax restricted to those classes
(``p_i / sum_kept p_j`` = ``exp(z_i) / sum_kept exp(z_j)``) for one network and, for an averaged
ensemble, the average renormalised.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ser_batch.errors import ConfigError


def parse_classes(text: str | Sequence[str] | None, available: Sequence[str]) -> tuple[str, ...] | None:
    """The subset named by ``text`` (``"angry,happy"`` or a list), in the bundle's order; ``None``
    for all classes (no text).

    Raises
    ------
    ConfigError
        If a name is not one of ``available``, is given twice, or fewer than two classes are left.
    """
    if text is None:
        return None
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ConfigError(f"unknown class {', '.join(map(repr, unknown))}: the bundle's classes are "
                          f"{', '.join(available)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--classes names a class twice: {','.join(names)}")
    if len(names) < 2:
        raise ConfigError("--classes needs at least two classes (one class is no decision)")
    return tuple(c for c in available if c in names)


def restrict(proba: np.ndarray, classes: Sequence[str], keep: Sequence[str] | None) -> np.ndarray:
    """Probabilities ``[shape=(n, len(classes))]`` restricted to ``keep`` and renormalised:
    ``[shape=(n, len(keep))]`` in ``keep``'s order (``proba`` itself when ``keep`` is None).

    A row whose kept probabilities are all zero gets equal probabilities (no evidence either way).
    """
    if keep is None:
        return proba
    index = [list(classes).index(c) for c in keep]
    kept = np.asarray(proba, dtype=np.float64)[:, index]
    total = kept.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, kept / np.where(total > 0, total, 1.0), 1.0 / len(index))
    return out

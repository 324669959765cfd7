"""Telling people which files failed: the first few with their reasons, and where the rest are.

Jobs that turn each unreadable file into a row with ``error`` set (``extract``, and the
scoring job) report failures the same way through :func:`format_failures`; the CLI
prints its text on stderr.
"""

from __future__ import annotations

from typing import Iterable

#: Failed files listed by name in a summary; a job needs to keep at most this many.
SHOWN = 5


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` with its noun in the right number: ``counted(1, "file") == "1 file"``."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def format_failures(
    failures: Iterable[tuple[str, str]],
    *,
    total: int,
    failed: int | None = None,
    shown: int = SHOWN,
    where: str = "the `error` column of the output",
) -> str:
    """A short report of the files that failed, or ``""`` when none did.

    Parameters
    ----------
    failures : iterable of (path, reason)
        Failed files in the order to show them (a job may pass only the first ``shown``).
    total : int
        Files the job processed, failed or not.
    failed : int, optional
        How many files failed in all; default: the number of ``failures`` given.
    shown : int
        Files listed by name; the rest are counted and pointed to ``where``.
    where : str
        Where every failed file and its reason can be found.

    Returns
    -------
    str
        Lines separated by newlines, no trailing newline, e.g.::

            2 of 1200 files failed:
              broken/empty.wav: empty file
              Actor_03/gone.wav: broken link
    """
    listed = list(failures)
    failed = len(listed) if failed is None else failed
    if failed <= 0:
        return ""
    listed = listed[: min(shown, failed)]
    if failed == total:
        head = "1 file failed" if total == 1 else f"all {total} files failed"
    else:
        head = f"{failed} of {counted(total, 'file')} failed"
    if not listed:
        return f"{head}: see {where}"
    lines = [f"{head}:" if len(listed) == failed else f"{head}; the first {len(listed)}:"]
    lines += [f"  {path}: {reason}" for path, reason in listed]
    rest = failed - len(listed)
    if rest:
        lines.append(f"  ... and {rest} more: every failed file and its reason is in {where}")
    return "\n".join(lines)

"""Progress of long jobs, on stderr: a tqdm bar on a terminal, a plain line every few seconds
otherwise (a log file, CI, ``make demo`` piped), so that no stage is silent for minutes."""

from __future__ import annotations

import sys
import time
from typing import Any

#: Seconds between two plain progress lines when stderr is not a terminal.
PLAIN_EVERY_S = 5.0


class PlainProgress:
    """A progress bar's interface (``update``, ``set_postfix_str``, ``close``) printing one plain
    line, ``score: 12/60 files (20%), 0.02 h audio, 14 s``, at most every ``every_s`` seconds
    (every update with ``every_s=0``), and a last one at ``close`` if it printed any."""

    def __init__(self, *, total: int, desc: str, unit: str = "file", every_s: float | None = None,
                 announce: bool = False) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.every_s = PLAIN_EVERY_S if every_s is None else every_s
        self.n = 0
        self.postfix = ""
        self.started = self.last = time.perf_counter()
        self.printed_n: int | None = None
        if announce:  # a first line at once: the first unit may take a minute
            self._print()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self.last >= self.every_s:
            self.last = now
            self._print()

    def set_postfix_str(self, text: str, refresh: bool = False) -> None:  # tqdm's signature
        self.postfix = text

    def write(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.printed_n is not None and self.printed_n != self.n:
            self._print()

    def _print(self) -> None:
        self.printed_n = self.n
        units = self.unit if self.total == 1 else f"{self.unit}s"
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        self.write(f"{self.desc}: {self.n}/{self.total} {units}{share}{extra}, "
                   f"{time.perf_counter() - self.started:.0f} s")


def progress_bar(*, total: int, desc: str, enabled: bool, unit: str = "file", every_s: float | None = None,
                 announce: bool = False) -> Any:
    """A tqdm bar of ``total`` units on a terminal, :class:`PlainProgress` lines when stderr is
    not one (every ``every_s`` seconds, default :data:`PLAIN_EVERY_S`; with ``announce``, a first
    line at once); nothing when not ``enabled``."""
    from tqdm import tqdm

    if enabled and not _is_terminal(sys.stderr):
        return PlainProgress(total=total, desc=desc, unit=unit, every_s=every_s, announce=announce)
    return tqdm(total=total, unit=unit, desc=desc, disable=not enabled, smoothing=0.1, dynamic_ncols=True)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False

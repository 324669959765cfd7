"""Progress bars of long jobs, on stderr."""

from __future__ import annotations

from typing import Any


def progress_bar(*, total: int, desc: str, enabled: bool, unit: str = "file") -> Any:
    """A tqdm bar of ``total`` units (hidden when not ``enabled``, and when stderr is not a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, disable=not enabled or None, smoothing=0.1, dynamic_ncols=True)

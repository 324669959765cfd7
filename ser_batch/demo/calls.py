"""Synthetic calls made of labelled clips, and accuracy per clip inside them.

Acted corpora hold short clips; calls are long streams in which emotions change. A call is
built by joining one speaker's clips with short gaps of low noise, and a truth table says
where each clip lies, so that window scores inside the call can be checked clip by clip.
``make demo`` and ``benchmarks/score.py`` use it.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

#: Columns of a truth table (one row per clip inside a call).
TRUTH_COLUMNS = ("call", "clip", "start_s", "end_s", "emotion")


@dataclass(frozen=True)
class TruthRow:
    """Where one labelled clip lies in a call (seconds from the call's start)."""

    call: str
    clip: str
    start_s: float
    end_s: float
    emotion: str


def build_call(clips: Sequence[tuple[Path, str]], path: Path, *, sample_rate: int = 16_000, gap_s: tuple[float, float]
               = (0.4, 1.6), noise: float = 0.002, seed: int = 0, subtype: str | None = None) -> list[TruthRow]:
    """Join ``clips`` ((file, emotion) pairs) into one call written at ``path``.

    Each clip is preceded by a gap of ``gap_s`` seconds (uniform) of Gaussian noise of
    standard deviation ``noise``; clips are downmixed and resampled (soxr) to 16 kHz first,
    and the call to ``sample_rate`` at the end. ``subtype`` is soundfile's (``"ULAW"``,
    ``"PCM_16"``, ...; default: the format's own).

    Returns
    -------
    list of TruthRow, in time order (times in the written file)
    """
    import soundfile as sf
    import soxr

    rng = np.random.default_rng(seed)
    parts, truth, at = [], [], 0
    for clip, emotion in clips:
        # By its bytes: soundfile cannot encode a name that is not UTF-8 given as str.
        y, rate = sf.read(os.fsencode(clip), dtype="float32", always_2d=True)
        y = y.mean(axis=1)
        if rate != 16_000:
            y = soxr.resample(y, rate, 16_000)
        gap = rng.normal(0.0, noise, int(rng.uniform(*gap_s) * 16_000)).astype(np.float32)
        parts += [gap, y.astype(np.float32)]
        at += len(gap)
        truth.append(TruthRow(path.name, Path(clip).name, at / 16_000, (at + len(y)) / 16_000, emotion))
        at += len(y)
    signal = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    if sample_rate != 16_000:
        signal = soxr.resample(signal, 16_000, sample_rate)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(signal, -1.0, 1.0), sample_rate, subtype=subtype)
    return truth


def write_truth(rows: Sequence[TruthRow], path: Path) -> Path:
    """Write a truth table as CSV (``TRUTH_COLUMNS``)."""
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(TRUTH_COLUMNS)
        writer.writerows((r.call, r.clip, f"{r.start_s:.4f}", f"{r.end_s:.4f}", r.emotion) for r in rows)
    return Path(path)


def clip_predictions(segments: "object", truth: Sequence[TruthRow], classes: Sequence[str], *,
                     speech_only: bool = True) -> list[tuple[TruthRow, str | None]]:
    """The emotion predicted for each truth clip: the argmax of the mean probabilities of the
    windows whose centre lies inside the clip (with ``speech_only``, only windows with a label
    when there are any).

    Parameters
    ----------
    segments : pandas.DataFrame of ``score``'s ``segments`` table (``path`` ends with the call's name)
    """
    from ser_batch import schema

    columns = [schema.proba_column(c) for c in classes]
    by_call = {name: group for name, group in segments.groupby(segments[schema.PATH].map(lambda p: Path(p).name))}
    out = []
    for row in truth:
        windows = by_call.get(row.call)
        if windows is None:
            out.append((row, None))
            continue
        middle = (windows[schema.START_S] + windows[schema.END_S]) / 2
        inside = windows[(middle >= row.start_s) & (middle <= row.end_s)]
        if speech_only and inside[schema.LABEL].notna().any():
            inside = inside[inside[schema.LABEL].notna()]
        if inside.empty:
            out.append((row, None))
            continue
        out.append((row, classes[int(np.argmax(inside[columns].to_numpy().mean(axis=0)))]))
    return out

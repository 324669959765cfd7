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


def join_clips(signals: Sequence[np.ndarray], *, rng: np.random.Generator, gap_s: tuple[float, float] = (0.4, 1.6),
               noise: float = 0.002, lead_gap: bool = True, sample_rate: int = 16_000
               ) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Join mono ``signals`` (float32 at ``sample_rate``) into one call, each preceded by a gap of
    ``gap_s`` seconds (uniform) of Gaussian noise of standard deviation ``noise`` (the first clip
    too, unless ``lead_gap`` is false), drawn from ``rng``.

    Returns
    -------
    signal : np.ndarray [shape=(n,), dtype=float32]
    spans : list of (start_s, end_s), where each clip lies in ``signal``
    """
    parts, spans, at = [], [], 0
    for i, y in enumerate(signals):
        if i or lead_gap:
            gap = rng.normal(0.0, noise, int(rng.uniform(*gap_s) * sample_rate)).astype(np.float32)
            parts.append(gap)
            at += len(gap)
        parts.append(np.asarray(y, dtype=np.float32))
        spans.append((at / sample_rate, (at + len(y)) / sample_rate))
        at += len(y)
    return (np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)), spans


def build_call(clips: Sequence[tuple[Path, str]], path: Path, *, sample_rate: int = 16_000, gap_s: tuple[float, float]
               = (0.4, 1.6), noise: float = 0.002, seed: int = 0, subtype: str | None = None) -> list[TruthRow]:
    """Join ``clips`` ((file, emotion) pairs) into one call written at ``path`` (:func:`join_clips`).

    Clips are downmixed and resampled (soxr) to 16 kHz first, and the call to ``sample_rate`` at
    the end. ``subtype`` is soundfile's (``"ULAW"``, ``"PCM_16"``, ...; default: the format's own).

    Returns
    -------
    list of TruthRow, in time order (times in the written file)
    """
    import soundfile as sf
    import soxr

    signals = []
    for clip, _ in clips:
        # By its bytes: soundfile cannot encode a name that is not UTF-8 given as str.
        y, rate = sf.read(os.fsencode(clip), dtype="float32", always_2d=True)
        y = y.mean(axis=1)
        signals.append(soxr.resample(y, rate, 16_000) if rate != 16_000 else y)
    signal, spans = join_clips(signals, rng=np.random.default_rng(seed), gap_s=gap_s, noise=noise)
    if sample_rate != 16_000:
        signal = soxr.resample(signal, 16_000, sample_rate)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(signal, -1.0, 1.0), sample_rate, subtype=subtype)
    return [TruthRow(path.name, Path(clip).name, start, end, emotion)
            for (clip, emotion), (start, end) in zip(clips, spans)]


def write_truth(rows: Sequence[TruthRow], path: Path) -> Path:
    """Write a truth table as CSV (``TRUTH_COLUMNS``)."""
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(TRUTH_COLUMNS)
        writer.writerows((r.call, r.clip, f"{r.start_s:.4f}", f"{r.end_s:.4f}", r.emotion) for r in rows)
    return Path(path)


def clip_predictions(segments: "object", truth: Sequence[TruthRow], classes: Sequence[str], *,
                     speech_only: bool = True, whole: bool = False) -> list[tuple[TruthRow, str | None]]:
    """The emotion predicted for each truth clip: the argmax of the mean probabilities of the
    windows whose centre lies inside the clip (``whole``: of the windows wholly inside it, no gap
    or neighbour in them); with ``speech_only``, only windows with a label when there are any.

    Parameters
    ----------
    segments : pandas.DataFrame of ``score``'s ``segments`` table; a truth row's ``call`` is the
        ``path`` of its windows, or the file name that path ends with
    """
    from ser_batch import schema

    columns = [schema.proba_column(c) for c in classes]
    by_path = dict(iter(segments.groupby(schema.PATH)))
    by_name = dict(iter(segments.groupby(segments[schema.PATH].map(lambda p: Path(p).name))))
    out = []
    for row in truth:
        windows = by_path.get(row.call, by_name.get(row.call))
        if windows is None:
            out.append((row, None))
            continue
        if whole:
            start, end = windows[schema.START_S], windows[schema.END_S]
            inside = windows[(start >= row.start_s - 1e-6) & (end <= row.end_s + 1e-6)]
        else:
            middle = (windows[schema.START_S] + windows[schema.END_S]) / 2
            inside = windows[(middle >= row.start_s) & (middle <= row.end_s)]
        if speech_only and inside[schema.LABEL].notna().any():
            inside = inside[inside[schema.LABEL].notna()]
        if inside.empty:
            out.append((row, None))
            continue
        out.append((row, classes[int(np.argmax(inside[columns].to_numpy().mean(axis=0)))]))
    return out

"""The figures of ``ser-batch report OUT``: what a scoring run found, for the person who listens to the calls.

The figures of one score folder, per stream (a file, or a channel of it with ``--channels
split``): the share of its speech windows labelled with each emotion, the share labelled
angry or fearful, and its longest stretch of high arousal (consecutive speech windows labelled
angry, fearful, surprised or happy with confidence at least :data:`HIGH_CONFIDENCE`). Streams
are ranked by those two figures (:func:`listen_first_order`): the calls to listen to first.
With a truth table (``--truth CSV``: file,start_s,end_s,emotion, as the demo writes for its
calls), each stream also gets its agreement with the truth. The page itself is drawn by
:mod:`ser_batch.reports.score_page`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ser_batch import schema
from ser_batch.data import score_folder, score_parts
from ser_batch.errors import DatasetError

#: Labels of high arousal: a stretch of speech windows with these labels is worth hearing.
HIGH_AROUSAL = ("angry", "fearful", "surprised", "happy")
#: Labels whose share of a stream's speech ranks it first.
ALARM = ("angry", "fearful")
#: A window counts towards a high-arousal stretch from this confidence (its label's probability).
HIGH_CONFIDENCE = 0.5
#: Ribbons drawn by default (the first streams in listen-first order): each is one SVG row.
MAX_RIBBONS = 20
#: Rows of the per-file table (in listen-first order); the Parquet files have them all.
MAX_TABLE_ROWS = 2000
#: Window hop (s) assumed when no stream has two windows to measure it from.
DEFAULT_HOP_S = 0.512

#: Columns of a truth table; ``call`` (the demo's name for it) is read as ``file``.
TRUTH_COLUMNS = ("file", "start_s", "end_s", "emotion")
_WINDOW_COLUMNS = [schema.PATH, schema.CHANNEL, schema.START_S, schema.END_S, schema.LABEL, schema.CONFIDENCE]
#: Channel value of a mixed-down stream in the frames below (the tables hold null).
MIXED = -1


@dataclass
class ScoreResults:
    """What the report shows of one score folder.

    ``streams``: one row per scored stream in listen-first order (``rank`` from 1), with
    ``speech_windows``, ``share_<class>`` (fractions of its speech windows), ``alarm_share``,
    ``arousal_s``/``arousal_at_s`` (longest high-arousal stretch and where it starts, seconds)
    and, with a truth table, ``truth_clips``, ``truth_right``, ``truth_windows``,
    ``truth_windows_right``. ``windows``: the windows of the streams drawn as ribbons.
    """

    out: Path
    files: pd.DataFrame
    classes: list[str]
    streams: pd.DataFrame
    windows: dict[tuple[str, int], pd.DataFrame]
    ribbons: list[tuple[str, int]]
    hop_s: float
    minutes_by_label: dict[str, float]
    run: dict[str, Any]
    #: Length of a window (s): the median over the windows.
    window_s: float = 1.504
    truth: pd.DataFrame | None = None
    truth_path: Path | None = None
    truth_unmatched: list[str] = field(default_factory=list)

    @property
    def scored(self) -> pd.DataFrame:
        return self.files[self.files[schema.ERROR].isna()]

    @property
    def failed(self) -> pd.DataFrame:
        return self.files[self.files[schema.ERROR].notna()]


def _read_windows(parts: list[Path], columns: list[str], paths: list[str] | None = None) -> pd.DataFrame:
    """The ``columns`` of the ``segments`` ``parts`` (only rows of ``paths`` when given), channel null
    as :data:`MIXED`."""
    filters = [(schema.PATH, "in", paths)] if paths is not None else None
    tables = [score_parts.read_part(p, columns=columns, filters=filters) for p in parts]
    if not tables:
        frame = pd.DataFrame({c: pd.Series(dtype=object if c in (schema.PATH, schema.LABEL) else float)
                              for c in columns})
    else:
        frame = pa.concat_tables(tables, promote_options="default").to_pandas()
    frame[schema.CHANNEL] = frame[schema.CHANNEL].fillna(MIXED).astype(int)
    return frame


def window_hop_s(windows: pd.DataFrame) -> float:
    """The hop between a stream's windows (s): the median step between consecutive starts."""
    w = windows.sort_values([schema.PATH, schema.CHANNEL, schema.START_S])
    same = (w[schema.PATH].to_numpy()[1:] == w[schema.PATH].to_numpy()[:-1]) & (
        w[schema.CHANNEL].to_numpy()[1:] == w[schema.CHANNEL].to_numpy()[:-1])
    steps = np.diff(w[schema.START_S].to_numpy())[same]
    steps = steps[steps > 0]
    return float(np.median(steps)) if len(steps) else DEFAULT_HOP_S


def longest_stretches(windows: pd.DataFrame) -> pd.DataFrame:
    """Per stream, its longest run of consecutive high-arousal windows (:data:`HIGH_AROUSAL`,
    confidence >= :data:`HIGH_CONFIDENCE`; each window overlapping or touching the previous one):
    a frame indexed by (path, channel) with ``arousal_s`` (first start to last end, seconds) and
    ``arousal_at_s`` (its start)."""
    w = windows.sort_values([schema.PATH, schema.CHANNEL, schema.START_S]).reset_index(drop=True)
    if w.empty:
        return pd.DataFrame(columns=["arousal_s", "arousal_at_s"],
                            index=pd.MultiIndex.from_arrays([[], []], names=[schema.PATH, schema.CHANNEL]))
    high = (w[schema.LABEL].isin(HIGH_AROUSAL) & (w[schema.CONFIDENCE] >= HIGH_CONFIDENCE)).to_numpy()
    same = np.r_[False, (w[schema.PATH].to_numpy()[1:] == w[schema.PATH].to_numpy()[:-1])
                 & (w[schema.CHANNEL].to_numpy()[1:] == w[schema.CHANNEL].to_numpy()[:-1])]
    touches = np.r_[False, w[schema.START_S].to_numpy()[1:] <= w[schema.END_S].to_numpy()[:-1] + 1e-6]
    continues = same & touches & np.r_[False, high[:-1]]
    run = np.cumsum(high & ~continues)
    runs = w[high].assign(run=run[high]).groupby("run").agg(
        path=(schema.PATH, "first"), channel=(schema.CHANNEL, "first"),
        start=(schema.START_S, "min"), end=(schema.END_S, "max"))
    runs["arousal_s"] = runs["end"] - runs["start"]
    best = runs.sort_values("arousal_s", ascending=False, kind="stable").groupby(["path", "channel"]).head(1)
    best = best.rename(columns={"path": schema.PATH, "channel": schema.CHANNEL, "start": "arousal_at_s"})
    return best.set_index([schema.PATH, schema.CHANNEL])[["arousal_s", "arousal_at_s"]]


def listen_first_order(streams: pd.DataFrame) -> pd.DataFrame:
    """``streams`` ranked for listening: the share of speech labelled angry or fearful first,
    then the longest high-arousal stretch, then minutes of speech; ``rank`` counts from 1."""
    ranked = streams.sort_values(["alarm_share", "arousal_s", schema.SPEECH_S, schema.PATH],
                                 ascending=[False, False, False, True], kind="stable").reset_index(drop=True)
    ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
    return ranked


def stream_table(files: pd.DataFrame, windows: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """One row per scored stream of ``files`` with its shares, alarm share and longest stretch (unranked)."""
    ok = files[files[schema.ERROR].isna()].copy()
    ok[schema.CHANNEL] = ok[schema.CHANNEL].fillna(MIXED).astype(int)
    ok = ok.set_index([schema.PATH, schema.CHANNEL])
    speech = windows[windows[schema.LABEL].notna()]
    counts = speech.groupby([schema.PATH, schema.CHANNEL, schema.LABEL]).size().unstack(schema.LABEL, fill_value=0)
    counts = counts.reindex(index=ok.index, columns=classes, fill_value=0).fillna(0)
    total = counts.sum(axis=1)
    shares = counts.div(total.where(total > 0, 1), axis=0)
    streams = ok[[schema.DURATION_S, schema.SPEECH_S, schema.LABEL, schema.CONFIDENCE]].copy()
    streams["speech_windows"] = total.astype(int)
    for c in classes:
        streams[f"share_{c}"] = shares[c]
    streams["alarm_share"] = shares[[c for c in classes if c in ALARM]].sum(axis=1) if any(
        c in ALARM for c in classes) else 0.0
    stretch = longest_stretches(windows).reindex(ok.index)
    streams["arousal_s"] = stretch["arousal_s"].fillna(0.0).astype(float)
    streams["arousal_at_s"] = stretch["arousal_at_s"].astype(float)
    for column in (schema.DURATION_S, schema.SPEECH_S):
        streams[column] = streams[column].fillna(0.0).astype(float)
    return streams.reset_index()


# ---------------------------------------------------------------------------- truth


def read_truth(path: Path, paths: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """The rows of a truth CSV (``file,start_s,end_s,emotion``; ``call`` is read as ``file``),
    each ``file`` matched to one of ``paths`` (the files table's): the same path, else the one
    path ending with it (``call_01.flac`` matches ``calls/call_01.flac``).

    Returns
    -------
    (frame with columns path, start_s, end_s, emotion; the truth files matching no path)

    Raises
    ------
    DatasetError
        Naming the table and the reason: unreadable, a column missing, a line whose times are not
        numbers or end before they start, a name that matches several files, no row matching any file.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            header = list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read truth table {path}: {exc}") from None
    header = ["file" if h == "call" and "file" not in header else h for h in header]
    missing = [c for c in TRUTH_COLUMNS if c not in header]
    if not rows or missing:
        what = "it has no rows" if not rows else f"column {', '.join(missing)} missing"
        raise DatasetError(f"truth table {path}: {what}; it needs the columns {','.join(TRUTH_COLUMNS)}")
    by_suffix: dict[str, list[str]] = {}
    for p in paths:
        parts = PurePosixPath(p).parts
        for i in range(len(parts)):
            by_suffix.setdefault("/".join(parts[i:]), []).append(p)
    out, unmatched = [], []
    for line, row in enumerate(rows, start=2):
        name = (row.get("file") if "file" in row else row.get("call")) or ""
        try:
            start, end = float(row["start_s"]), float(row["end_s"])
        except (TypeError, ValueError):
            raise DatasetError(f"truth table {path} line {line}: start_s {row['start_s']!r} and end_s "
                               f"{row['end_s']!r} must be numbers (seconds)") from None
        if not (np.isfinite(start) and np.isfinite(end) and end > start >= 0):
            raise DatasetError(f"truth table {path} line {line}: end_s {end:g} must be after start_s {start:g} >= 0")
        matches = [name] if name in paths else by_suffix.get(name.strip("/"), [])
        if len(set(matches)) > 1:
            raise DatasetError(f"truth table {path} line {line}: {name} matches {len(set(matches))} files "
                               f"({', '.join(sorted(set(matches))[:2])}, ...); name it by its path as in the path "
                               "column")
        if not matches:
            unmatched.append(name)
            continue
        out.append({schema.PATH: matches[0], schema.START_S: start, schema.END_S: end, "emotion": row["emotion"]})
    if not out:
        raise DatasetError(f"truth table {path}: none of its files ({unmatched[0]}, ...) is among the scored files; "
                           "name them by their path as in the path column, or by their file name")
    return pd.DataFrame(out), sorted(set(unmatched))


def truth_agreement(truth: pd.DataFrame, windows: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Per stream with truth rows: ``truth_clips`` (rows), ``truth_right`` (rows whose emotion is
    the argmax of the mean probabilities of the windows centred inside them, speech windows only
    when there are any: as ``ser_batch.demo.calls.clip_predictions`` counts them),
    ``truth_windows`` (speech windows centred inside a truth row) and ``truth_windows_right``
    (of those, the ones labelled with its emotion). Indexed by (path, channel)."""
    columns = [schema.proba_column(c) for c in classes]
    rows = []
    for (path, channel), w in windows.groupby([schema.PATH, schema.CHANNEL]):
        middle = ((w[schema.START_S] + w[schema.END_S]) / 2).to_numpy()
        clips = right = n_windows = windows_right = 0
        for t in truth[truth[schema.PATH] == path].itertuples(index=False):
            inside = w[(middle >= t.start_s) & (middle <= t.end_s)]
            speech = inside[inside[schema.LABEL].notna()]
            clips += 1
            n_windows += len(speech)
            windows_right += int((speech[schema.LABEL] == t.emotion).sum())
            chosen = speech if len(speech) else inside
            if len(chosen):
                right += classes[int(np.argmax(chosen[columns].to_numpy().mean(axis=0)))] == t.emotion
        rows.append({schema.PATH: path, schema.CHANNEL: channel, "truth_clips": clips, "truth_right": right,
                     "truth_windows": n_windows, "truth_windows_right": windows_right})
    frame = pd.DataFrame(rows, columns=[schema.PATH, schema.CHANNEL, "truth_clips", "truth_right", "truth_windows",
                                        "truth_windows_right"])
    return frame.set_index([schema.PATH, schema.CHANNEL])


# ------------------------------------------------------------------------- reading


#: Keys of ``_run.json`` the report shows, and the type each must have (``None`` allowed too).
_RUN_NUMBERS = ("files_total", "files_scored", "files_skipped", "errors", "audio_s", "wall_s", "realtime_factor",
                "realtime_factor_per_core", "task_cpu_s")
_RUN_TEXTS = ("started", "finished", "bundle_id", "realtime_basis")


def run_record(out: Path) -> dict[str, Any]:
    """``OUT/_run.json`` of the last run that scored (a run with nothing to do carries it as
    ``last_work``); empty when there is none or it is not a JSON object.

    Raises
    ------
    DatasetError
        If a value the report shows has the wrong type (``"audio_s": "abc"``): one line naming it.
    """
    path = Path(out) / score_folder.RUN_RECORD
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(run, dict):
        return {}
    last = run.get("last_work")
    record = last if isinstance(last, dict) else run
    for key in (*_RUN_NUMBERS, *_RUN_TEXTS):
        value = record.get(key)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if value is not None and not (number if key in _RUN_NUMBERS else isinstance(value, str)):
            where = "last_work." if record is last else ""
            raise DatasetError(f"{path}: {where}{key} is {json.dumps(value)[:40]}, not "
                               f"{'a number' if key in _RUN_NUMBERS else 'text'}; fix or delete the file "
                               "(`ser-batch score` writes it anew)")
    return record


def read_results(out: Path, *, file_path: str | None = None, truth: Path | None = None,
                 max_ribbons: int = MAX_RIBBONS) -> ScoreResults:
    """Read a score folder (and a truth table) into what the report shows.

    ``file_path``: a file drawn first whatever its rank; ``max_ribbons``: how many streams get
    a ribbon (the first in listen-first order).

    Raises
    ------
    DatasetError
        If ``out`` holds no results, ``file_path`` is not one of its files, or the truth table
        is unusable (:func:`read_truth`).
    """
    out = Path(out)
    committed = score_folder.check_whole(out)  # every part checked: a damaged one is one error, not a traceback
    table = score_folder.read_table(out, score_folder.FILES_DIR, committed=committed)
    window_parts = score_folder.owned_parts(out, score_folder.SEGMENTS_DIR, committed)
    files = table.to_pandas()
    classes = json.loads((table.schema.metadata or {}).get(schema.META_CLASSES, b"[]"))
    if file_path is not None and file_path not in set(files[schema.PATH]):
        raise DatasetError(f"{file_path} is not in {out / score_folder.FILES_DIR} (use its path as in the path column)")
    windows = _read_windows(window_parts, _WINDOW_COLUMNS)
    hop_s = window_hop_s(windows)
    labelled = windows[schema.LABEL].dropna()
    minutes_by_label = {c: float((labelled == c).sum()) * hop_s / 60 for c in classes}
    streams = stream_table(files, windows, classes)
    truth_frame, unmatched = None, []
    if truth is not None:
        truth_frame, unmatched = read_truth(truth, sorted(set(files[schema.PATH])))
        truth_paths = sorted(set(truth_frame[schema.PATH]))
        probabilities = _read_windows(window_parts, _WINDOW_COLUMNS + [schema.proba_column(c) for c in classes],
                                      truth_paths)
        agreement = truth_agreement(truth_frame, probabilities, classes)
        streams = streams.join(agreement, on=[schema.PATH, schema.CHANNEL])
    streams = listen_first_order(streams)
    keys = list(zip(streams[schema.PATH], streams[schema.CHANNEL]))
    ribbons = keys[:max(0, max_ribbons)]
    if file_path is not None:
        chosen = [k for k in keys if k[0] == file_path]
        ribbons = chosen + [k for k in ribbons if k[0] != file_path]
    drawn = set(ribbons)
    key_of = list(zip(windows[schema.PATH], windows[schema.CHANNEL]))
    mask = np.fromiter((k in drawn for k in key_of), dtype=bool, count=len(key_of))
    by_stream = {k: g.sort_values(schema.START_S) for k, g in windows[mask].groupby([schema.PATH, schema.CHANNEL])}
    window_s = float((windows[schema.END_S] - windows[schema.START_S]).median()) if len(windows) else 1.504
    return ScoreResults(out, files, classes, streams, by_stream, ribbons, hop_s, minutes_by_label, run_record(out),
                        window_s, truth_frame, Path(truth) if truth is not None else None, unmatched)

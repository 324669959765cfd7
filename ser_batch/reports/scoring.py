"""``ser-batch report OUT``: one self-contained HTML page of a scoring run's results.

The page holds the emotion distribution over files (their dominant emotion) and over hours
of speech (the windows' labels, each window standing for one window hop), a timeline of
one file's windows with their class probabilities (default: the longest file) and the table
of files that could not be scored. Pictures are PNGs embedded as data URIs, so the page can
be mailed or archived alone.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ser_batch import schema
from ser_batch.data import score_folder as results
from ser_batch.data.parts import refuse_links, write_text_atomic
from ser_batch.errors import DatasetError

#: Rows of the error table shown in the page (the files table has them all).
MAX_ERRORS = 200


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="chart" src="data:image/png;base64,{data}">'


@dataclass
class ScoreResults:
    """What a report shows of one score folder: its files and the windows of the file on the timeline."""

    out: Path
    files: pd.DataFrame
    classes: list[str]
    segments: pa.Table
    file_path: str
    timeline: pd.DataFrame

    @property
    def scored(self) -> pd.DataFrame:
        return self.files[self.files[schema.ERROR].isna()]

    @property
    def failed(self) -> pd.DataFrame:
        return self.files[self.files[schema.ERROR].notna()]


def read_results(out: Path, *, file_path: str | None = None) -> ScoreResults:
    """Read a score folder, and the windows of ``file_path`` (default: the longest scored file).

    Raises
    ------
    DatasetError
        If ``out`` holds no results, or ``file_path`` is not one of its files.
    """
    import pyarrow.compute as pc

    out = Path(out)
    table = results.read_table(out, results.FILES_DIR)
    files = table.to_pandas()
    classes = json.loads((table.schema.metadata or {}).get(schema.META_CLASSES, b"[]"))
    ok = files[files[schema.ERROR].isna()]
    if file_path is None:
        if ok.empty:
            raise DatasetError(f"{out} has no scored file to show (every file failed)")
        file_path = str(ok.sort_values(schema.DURATION_S, ascending=False)[schema.PATH].iloc[0])
    elif file_path not in set(files[schema.PATH]):
        raise DatasetError(f"{file_path} is not in {out / results.FILES_DIR} (use its path as in the path column)")
    segments = results.read_table(out, results.SEGMENTS_DIR)
    timeline = segments.filter(pc.equal(segments[schema.PATH], file_path)).to_pandas()
    return ScoreResults(out, files, classes, segments, file_path, timeline)


def distribution_chart(data: ScoreResults) -> str:
    """Bars of the files by dominant emotion and of the hours of speech by window emotion, as an <img>."""
    from ser_batch.reports.training import _pyplot

    plt = _pyplot()
    classes = data.classes
    labelled = data.scored[data.scored[schema.LABEL].notna()]
    by_files = labelled[schema.LABEL].value_counts().reindex(classes, fill_value=0)
    # Windows overlap; each one stands for one window hop of audio (0.5 s by default).
    starts = np.sort(data.timeline[schema.START_S].to_numpy())
    hop_s = float(np.median(np.diff(starts))) if len(starts) > 1 else 0.5
    counts = data.segments.group_by(schema.LABEL).aggregate([(schema.START_S, "count")]).to_pandas()
    counts = counts[counts[schema.LABEL].notna()].set_index(schema.LABEL)[f"{schema.START_S}_count"]
    by_hours = counts.reindex(classes, fill_value=0) * hop_s / 3600
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), dpi=100)
    axes[0].bar(classes, by_files.values, color="#4c72b0")
    axes[0].set_title("files by dominant emotion")
    axes[1].bar(classes, by_hours.values, color="#dd8452")
    axes[1].set_title("hours of speech by window emotion")
    for ax in axes:
        ax.tick_params(axis="x", rotation=40)
    fig.tight_layout()
    image = _png(fig)
    plt.close(fig)
    return image


def timeline_chart(data: ScoreResults) -> str:
    """The class probabilities of the timeline file's windows (first channel), as an <img>."""
    from ser_batch.reports.training import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=100)
    timeline = data.timeline
    if not timeline.empty:
        timeline = timeline.sort_values([schema.CHANNEL, schema.START_S], na_position="first")
        first_channel = timeline[schema.CHANNEL].iloc[0]
        if not np.isnan(first_channel if first_channel is not None else np.nan):
            timeline = timeline[timeline[schema.CHANNEL] == first_channel]
        middle = (timeline[schema.START_S] + timeline[schema.END_S]).to_numpy() / 2
        stack = np.vstack([timeline[schema.proba_column(c)].to_numpy() for c in data.classes])
        ax.stackplot(middle, stack, labels=data.classes, alpha=0.85)
        silent = timeline[schema.LABEL].isna().to_numpy()
        ax.scatter(middle[silent], np.full(silent.sum(), 1.02), marker="|", color="grey", label="no speech")
        ax.set_xlim(middle.min(), middle.max())
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("probability")
    ax.set_title(f"windows of {data.file_path}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    image = _png(fig)
    plt.close(fig)
    return image


def report_page(data: ScoreResults, *, distribution: str, timeline: str) -> str:
    """The self-contained HTML page around the two charts, with the run's figures and the errors."""
    out, ok, failed = data.out, data.scored, data.failed
    error_rows = "".join(f"<tr><td>{html.escape(str(p))}</td><td>{html.escape(str(e))}</td></tr>"
                         for p, e in failed[[schema.PATH, schema.ERROR]].head(MAX_ERRORS).itertuples(index=False))
    run = {}
    if (out / results.RUN_RECORD).is_file():
        run = json.loads((out / results.RUN_RECORD).read_text(encoding="utf-8"))
        # A run that had nothing to do carries the one that did: show that one's figures.
        run = run.get("last_work") or run
    hours = float(ok[schema.DURATION_S].sum()) / 3600
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>ser-batch scores: {html.escape(str(out))}</title>
<style>body{{font-family:sans-serif;max-width:64em;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .8em;text-align:left}}img{{max-width:100%}}</style></head>
<body><h1>ser-batch scores</h1>
<p>{len(data.files)} file rows ({len(ok)} scored, {len(failed)} failed), {hours:.2f} h of audio,
{float(ok[schema.SPEECH_S].sum()) / 3600:.2f} h of speech. Bundle <code>{html.escape(str(run.get('bundle_id', '')))}</code>;
last run that scored {html.escape(str(run.get('finished', '?')))}: {run.get('files_scored', '?')} files scored in
{run.get('wall_s', '?')} s ({run.get('realtime_factor', '?')}x realtime).</p>
<h2>Emotions over files and hours</h2>{distribution}
<h2>Timeline of <code>{html.escape(data.file_path)}</code></h2>
<p>Probabilities of each 1.5 s window (stacked); grey ticks mark windows without speech
(no label). Another file: <code>ser-batch report {html.escape(str(out))} --file PATH</code>.</p>
{timeline}
<h2>Errors</h2>
{f'<table><tr><th>path</th><th>error</th></tr>{error_rows}</table>' if len(failed) else '<p>None.</p>'}
{f'<p>First {MAX_ERRORS} of {len(failed)} shown; all are in the error column of files/.</p>'
 if len(failed) > MAX_ERRORS else ''}
</body></html>
"""


def write_score_report(out: Path, *, file_path: str | None = None) -> Path:
    """Write ``out/report.html`` from ``out/files`` and ``out/segments`` (read, draw, write).

    Raises
    ------
    DatasetError
        If ``out`` holds no results, ``file_path`` is not one of its files, or a name the
        report reads or writes in ``out`` is a symbolic link.
    """
    refuse_links(out)  # a link at OUT/report.html (or OUT/files) is not followed
    data = read_results(out, file_path=file_path)
    body = report_page(data, distribution=distribution_chart(data), timeline=timeline_chart(data))
    return write_text_atomic(Path(out) / schema.REPORT_HTML, body)

"""``ser-batch report OUT``: the page ``OUT/report.html`` (:mod:`ser_batch.reports.score_figures` reads its figures).

One self-contained page: inline SVG and CSS, a few lines of inline script to sort the tables,
no external URL, so it can be mailed or archived alone. Sections: the run's figures, the calls
to listen to first, one emotion ribbon per stream (coloured by the window's label, opacity its
confidence, blank where there is no speech; the truth as a thin second ribbon), the emotion
distribution, the per-file table and the errors.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ser_batch import schema
from ser_batch.data.parts import refuse_links, write_text_atomic
from ser_batch.reports import score_figures
from ser_batch.reports.score_figures import ScoreResults

#: Colour of each emotion: no two alike, and none grey or white (no speech is drawn blank).
COLOURS = {"neutral": "#7fb3d5", "calm": "#2ca02c", "happy": "#e6b800", "sad": "#1f4e9c", "angry": "#d62728",
           "fearful": "#8e44ad", "disgust": "#8c564b", "surprised": "#ff7f0e"}
#: Colours of classes outside the eight RAVDESS emotions, in turn.
EXTRA_COLOURS = ("#e377c2", "#17becf", "#bcbd22", "#9edae5", "#ff9896", "#c5b0d5")
#: Background of a ribbon: what a window without speech shows.
BLANK = "#ffffff"
#: Rows of the listen-first table and of the error table.
LISTEN_FIRST, MAX_ERRORS = 10, 200
#: Width of a ribbon in SVG units (the page scales it to its column).
WIDTH = 1000

_SORT_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var down = th.dataset.dir !== 'desc';
    th.closest('tr').querySelectorAll('th').forEach(function (h) { delete h.dataset.dir; });
    th.dataset.dir = down ? 'desc' : 'asc';
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (isNaN(nx) || isNaN(ny)) ? String(x).localeCompare(String(y)) : nx - ny;
      return down ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:78em;margin:1.5em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
td.n,th.n{text-align:right;white-space:nowrap}.wide{overflow-x:auto}th{background:#f5f5f5;white-space:nowrap}
#files{font-size:.8em}#files th{white-space:normal;vertical-align:bottom}#files td{white-space:nowrap}
table.sortable th{cursor:pointer}
table.sortable th:after{content:' \\2195';color:#aaa}
.figures td:first-child{color:#555}.note{color:#555;font-size:.9em}
.ribbon{margin:.9em 0}.ribbon .title{font-size:.9em;margin-bottom:.15em}
.legend span{display:inline-block;margin-right:1em;font-size:.9em}
.sw{display:inline-block;width:1.1em;height:.9em;vertical-align:middle;margin-right:.3em;border:1px solid #999}
svg{display:block;width:100%;height:auto}
"""


def colours_of(classes: Sequence[str]) -> dict[str, str]:
    """A distinct colour for each class (the eight emotions keep theirs)."""
    extra = iter(EXTRA_COLOURS * (1 + len(classes) // len(EXTRA_COLOURS)))
    return {c: COLOURS.get(c) or next(extra) for c in classes}


def minutes(seconds: float) -> str:
    """A duration in minutes for the page: ``12.3 min`` (two decimals under a minute)."""
    value = float(seconds) / 60
    return f"{value:.2f} min" if value < 1 else f"{value:.1f} min"


def clock(seconds: float) -> str:
    """A time inside a call as minutes:seconds (``3:07``)."""
    seconds = max(0, round(float(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


def tick_step(span_s: float, *, most: int = 10) -> float:
    """A time step (s) of 1, 2, 5, 10, 15, 30 s or whole minutes giving at most ``most`` ticks over ``span_s``."""
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if span_s / step <= most:
            return float(step)
    return 3600.0 * math.ceil(span_s / 3600 / most)


def stream_name(path: str, channel: int) -> str:
    return path if channel == score_figures.MIXED else f"{path} · channel {channel}"


def _cell(value: Any, text: str | None = None, *, numeric: bool = False) -> str:
    shown = html.escape(text if text is not None else str(value))
    sort_value = html.escape(str(value), quote=True)
    return f'<td{" class=n" if numeric else ""} data-v="{sort_value}">{shown}</td>'


def _known(x: Any) -> bool:
    """Whether a figure is there (not None, not NaN)."""
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def _label(row: Any) -> str:
    """A stream's label, or "" when it has no speech window."""
    return row[schema.LABEL] if isinstance(row[schema.LABEL], str) else ""


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%" if _known(x) else ""


def ribbon_svg(windows: pd.DataFrame, duration_s: float, *, hop_s: float, colours: dict[str, str],
               truth: pd.DataFrame | None = None) -> str:
    """One stream's ribbon as inline SVG: a bar per run of windows with the same label and opacity
    (each window drawn over the hop around its centre), nothing where a window has no speech; a thin
    truth ribbon below when ``truth`` rows are given; minute:second ticks under it."""
    span = max(float(duration_s), float(windows[schema.END_S].max()) if len(windows) else 0.0, 1e-3)
    x_of = WIDTH / span
    height, truth_h, gap = 26, 7 if truth is not None else 0, 3 if truth is not None else 0
    axis_y = height + gap + truth_h + 2
    parts = [f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="{BLANK}" stroke="#bbb"/>']
    speech = windows[windows[schema.LABEL].notna()]
    if len(speech):
        middle = ((speech[schema.START_S] + speech[schema.END_S]) / 2).to_numpy()
        labels = speech[schema.LABEL].to_numpy()
        # Opacity in 5 steps from 0.2 (no better than chance) to 1: runs of equal steps merge into one bar.
        opacity = np.clip(np.round(speech[schema.CONFIDENCE].to_numpy().astype(float) * 5) / 5, 0.2, 1.0)
        left, right = middle - hop_s / 2, middle + hop_s / 2
        start = 0
        for i in range(1, len(labels) + 1):
            if i < len(labels) and labels[i] == labels[start] and opacity[i] == opacity[start] \
                    and left[i] <= right[i - 1] + 1e-6:
                continue
            x, w = left[start] * x_of, (right[i - 1] - left[start]) * x_of
            conf = speech[schema.CONFIDENCE].iloc[start:i].mean()
            label = html.escape(str(labels[start]))
            parts.append(f'<rect x="{x:.1f}" y="1" width="{max(w, 0.8):.1f}" height="{height - 2}" '
                         f'fill="{colours.get(labels[start], "#000")}" fill-opacity="{opacity[start]:.1f}">'
                         f'<title>{clock(left[start])}-{clock(right[i - 1])} {label} '
                         f'(confidence {conf:.2f})</title></rect>')
            start = i
    if truth is not None:
        parts.append(f'<rect x="0" y="{height + gap}" width="{WIDTH}" height="{truth_h}" fill="{BLANK}" '
                     'stroke="#ddd"/>')
        for t in truth.itertuples(index=False):
            parts.append(f'<rect x="{t.start_s * x_of:.1f}" y="{height + gap}" '
                         f'width="{max((t.end_s - t.start_s) * x_of, 0.8):.1f}" height="{truth_h}" '
                         f'fill="{colours.get(t.emotion, "#000")}"><title>truth {clock(t.start_s)}-{clock(t.end_s)} '
                         f'{html.escape(str(t.emotion))}</title></rect>')
    step = tick_step(span)
    for k in range(int(span // step) + 1):
        x = k * step * x_of
        anchor = "start" if k == 0 else "middle"
        parts.append(f'<line x1="{x:.1f}" y1="{axis_y - 2}" x2="{x:.1f}" y2="{axis_y + 2}" stroke="#888"/>'
                     f'<text x="{x:.1f}" y="{axis_y + 13}" font-size="11" fill="#555" '
                     f'text-anchor="{anchor}">{clock(k * step)}</text>')
    total_h = axis_y + 16
    return (f'<svg viewBox="0 0 {WIDTH} {total_h}" role="img">'
            + "".join(parts) + "</svg>")


def bar_chart(values: dict[str, float], *, colours: dict[str, str], unit: str, decimals: int) -> str:
    """Horizontal bars, one per class, each with its value written at its end (no axis to misread)."""
    top = max(values.values(), default=0) or 1
    row, label_w, bar_w = 22, 90, 300
    parts = []
    for i, (name, value) in enumerate(values.items()):
        y = i * row
        w = bar_w * value / top
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" font-size="12" text-anchor="end">{html.escape(name)}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" fill="{colours[name]}"/>'
                     f'<text x="{label_w + w + 5:.1f}" y="{y + 15}" font-size="12">{value:.{decimals}f} {unit}</text>')
    return (f'<svg viewBox="0 0 {label_w + bar_w + 90} {row * len(values)}" style="max-width:32em" role="img">'
            + "".join(parts) + "</svg>")


def legend(colours: dict[str, str]) -> str:
    swatches = "".join(f'<span><i class="sw" style="background:{c}"></i>{html.escape(n)}</span>'
                       for n, c in colours.items())
    return (f'<p class="legend">{swatches}<span><i class="sw" style="background:{BLANK}"></i>no speech (blank)</span>'
            f'<span>paler = less confident</span></p>')


def _figures(data: ScoreResults) -> str:
    ok, failed, run = data.scored, data.failed, data.run
    rows = [("streams in the folder", f"{len(data.files)} rows: {len(ok)} scored, {len(failed)} failed"),
            ("audio in the folder", minutes(ok[schema.DURATION_S].fillna(0).sum())),
            ("speech in the folder", minutes(ok[schema.SPEECH_S].fillna(0).sum())
             + " (frames judged speech)")]
    if run:
        wall = run.get("wall_s")
        rtf = run.get("realtime_factor")
        rows += [("last run that scored", (f"{run.get('started', '?')} to {run.get('finished', '?')}, bundle "
                                           f"{run.get('bundle_id', '?')}")),
                 ("files in that run", (f"{run.get('files_total', '?')} listed, {run.get('files_scored', '?')} "
                                        f"scored, {run.get('files_skipped', '?')} already done, "
                                        f"{run.get('errors', '?')} errors")),
                 ("audio scored in that run", minutes(run.get("audio_s") or 0))]
        if rtf is not None:
            basis = run.get("realtime_basis") or (f"audio_s / wall_s: {minutes(run.get('audio_s') or 0)} of audio "
                                                  f"over the run's wall time, wall_s = {wall} s")
            rows.append(("realtime factor", f"{rtf}x ({basis}, as _run.json records it)"))
        if run.get("realtime_factor_per_core"):
            rows.append(("per core", (f"{run['realtime_factor_per_core']}x (audio_s / task_cpu_s, "
                                      f"{run.get('task_cpu_s')} s of CPU in the tasks)")))
    else:
        rows.append(("last run", "no _run.json in the folder"))
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f'<table class="figures">{body}</table>'


def _truth_summary(data: ScoreResults) -> str:
    if data.truth is None:
        return ""
    s = data.streams
    clips, right = int(s["truth_clips"].fillna(0).sum()), int(s["truth_right"].fillna(0).sum())
    windows, windows_right = int(s["truth_windows"].fillna(0).sum()), int(s["truth_windows_right"].fillna(0).sum())
    unmatched = (f" {len(data.truth_unmatched)} truth files are not among the scored files "
                 f"({html.escape(', '.join(data.truth_unmatched[:3]))}"
                 f"{', ...' if len(data.truth_unmatched) > 3 else ''})."
                 if data.truth_unmatched else "")
    return (f"<p>Truth from <code>{html.escape(str(data.truth_path))}</code>: <b>{right} of {clips} clips right"
            f" ({_pct(right / clips if clips else float('nan'))})</b> (a clip is right when the mean probabilities "
            f"of the speech windows centred inside it pick its emotion); {windows_right} of {windows} speech windows "
            f"inside clips labelled with the clip's emotion "
            f"({_pct(windows_right / windows if windows else float('nan'))})."
            f"{unmatched}</p>")


def _agreement(row: Any) -> str:
    clips = row.get("truth_clips")
    if clips is None or (isinstance(clips, float) and math.isnan(clips)) or not clips:
        return ""
    return f"{int(row['truth_right'])} of {int(clips)} clips"


def _listen_first(data: ScoreResults) -> str:
    s = data.streams
    if s.empty:
        return "<p>No file was scored: see the errors below.</p>"
    worth = s[(s["alarm_share"] > 0) | (s["arousal_s"] > 0)].head(LISTEN_FIRST)
    if worth.empty:
        return ("<p>No stream has speech labelled angry or fearful, nor a stretch of high arousal: nothing stands "
                "out.</p>")
    truth = data.truth is not None
    head = ("<tr><th class=n>rank</th><th>file</th><th class=n>speech</th><th class=n>angry or fearful</th>"
            "<th class=n>longest high-arousal stretch</th><th class=n>starts at</th><th>file label</th>"
            + ("<th>truth agreement</th>" if truth else "") + "</tr>")
    rows = []
    for _, r in worth.iterrows():
        at = r["arousal_at_s"]
        rows.append("<tr>" + _cell(r["rank"], numeric=True) + _cell(stream_name(r[schema.PATH], r[schema.CHANNEL]))
                    + _cell(r[schema.SPEECH_S], minutes(r[schema.SPEECH_S]), numeric=True)
                    + _cell(r["alarm_share"], _pct(r["alarm_share"]), numeric=True)
                    + _cell(r["arousal_s"], clock(r["arousal_s"]) if r["arousal_s"] > 0 else "none", numeric=True)
                    + _cell(at if _known(at) else -1, clock(at) if _known(at) else "", numeric=True)
                    + _cell(_label(r), _label(r) or "no speech")
                    + (_cell(r.get("truth_right", 0) / r["truth_clips"] if _agreement(r) else -1, _agreement(r))
                       if truth else "") + "</tr>")
    return (f"<p class=note>Ranked by the share of speech labelled {' or '.join(score_figures.ALARM)}, then by the "
            f"longest stretch of consecutive speech windows labelled {', '.join(score_figures.HIGH_AROUSAL)} with "
            "confidence at "
            f"least {score_figures.HIGH_CONFIDENCE:g} (m:ss). Click a column to sort.</p>"
            f'<div class=wide><table class="sortable"><thead>{head}</thead><tbody>{"".join(rows)}</tbody>'
            "</table></div>")


def _ribbons(data: ScoreResults, colours: dict[str, str]) -> str:
    s = data.streams.set_index([schema.PATH, schema.CHANNEL])
    blocks = []
    for key in data.ribbons:
        r = s.loc[key]
        windows = data.windows.get(key, pd.DataFrame(columns=[schema.START_S, schema.END_S, schema.LABEL,
                                                               schema.CONFIDENCE]))
        truth = None
        if data.truth is not None:
            truth = data.truth[data.truth[schema.PATH] == key[0]]
        agreement = _agreement(r)
        title = (f"<b>{int(r['rank'])}.</b> <code>{html.escape(stream_name(*key))}</code> · "
                 f"{minutes(r[schema.DURATION_S])}, speech {minutes(r[schema.SPEECH_S])} · "
                 f"{_pct(r['alarm_share'])} angry or fearful"
                 + (f" · longest high arousal {clock(r['arousal_s'])} at {clock(r['arousal_at_s'])}"
                    if r["arousal_s"] > 0 else "")
                 + (f" · truth: {agreement}" if agreement else ""))
        svg = ribbon_svg(windows, r[schema.DURATION_S], hop_s=data.hop_s, colours=colours,
                         truth=truth if truth is not None and len(truth) else None)
        blocks.append(f'<div class="ribbon" data-stream="{html.escape(stream_name(*key), quote=True)}">'
                      f'<div class="title">{title}</div>{svg}</div>')
    total = len(data.streams)
    shown = (f"The first {len(data.ribbons)} of {total} streams in listen-first order are drawn "
             f"(<code>ser-batch report {html.escape(str(data.out))} --ribbons N</code> for more, "
             f"<code>--file PATH</code> to put one first)." if len(data.ribbons) < total
             else f"All {total} streams are drawn, in listen-first order.")
    truth_note = " The thin ribbon under a stream is the truth table's emotion." if data.truth is not None else ""
    return (f"<p class=note>One bar per {data.window_s:.1f} s window (every {data.hop_s:.2f} s), coloured by its "
            f"label, paler when less confident; blank where the window has too little speech to label. {shown}"
            f"{truth_note} Hover a bar for its times.</p>"
            + legend(colours) + "".join(blocks))


def _file_table(data: ScoreResults) -> str:
    s = data.streams.head(score_figures.MAX_TABLE_ROWS)
    truth = data.truth is not None
    head = ("<tr><th class=n>rank</th><th>file</th><th class=n>audio</th><th class=n>speech</th><th>label</th>"
            "<th class=n>confidence</th>" + "".join(f"<th class=n>{html.escape(c)}</th>" for c in data.classes)
            + "<th class=n>angry or fearful</th><th class=n>high-arousal stretch</th>"
            + ("<th>truth agreement</th>" if truth else "") + "</tr>")
    rows = []
    for _, r in s.iterrows():
        label = _label(r)
        conf = r[schema.CONFIDENCE]
        cells = [_cell(r["rank"], numeric=True), _cell(stream_name(r[schema.PATH], r[schema.CHANNEL])),
                 _cell(r[schema.DURATION_S], minutes(r[schema.DURATION_S]), numeric=True),
                 _cell(r[schema.SPEECH_S], minutes(r[schema.SPEECH_S]), numeric=True),
                 _cell(label, label or "no speech"),
                 _cell(conf if _known(conf) else -1, f"{conf:.2f}" if _known(conf) else "", numeric=True)]
        cells += [_cell(r[f"share_{c}"], _pct(r[f"share_{c}"]) if r["speech_windows"] else "", numeric=True)
                  for c in data.classes]
        cells += [_cell(r["alarm_share"], _pct(r["alarm_share"]), numeric=True),
                  _cell(r["arousal_s"], clock(r["arousal_s"]), numeric=True)]
        if truth:
            agreement = _agreement(r)
            cells.append(_cell(r["truth_right"] / r["truth_clips"] if agreement else -1, agreement))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = (f"<p class=note>The first {score_figures.MAX_TABLE_ROWS} of {len(data.streams)} streams in listen-first "
            "order; "
            f"all are in {html.escape(str(data.out / 'files'))}.</p>"
            if len(data.streams) > score_figures.MAX_TABLE_ROWS else "")
    return (f"<p class=note>Shares are of each stream's speech windows. Click a column to sort (again to reverse)."
            f"</p>{more}<div class=wide><table class=\"sortable\" id=\"files\"><thead>{head}</thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _distribution(data: ScoreResults, colours: dict[str, str]) -> str:
    labels = data.streams[schema.LABEL].dropna()
    by_files = {c: int((labels == c).sum()) for c in data.classes}
    silent = int(data.streams[schema.LABEL].isna().sum())
    return (f"<h3>Streams by their label (mean over their speech windows)</h3>"
            f"{bar_chart(by_files, colours=colours, unit='', decimals=0)}"
            + (f"<p class=note>{silent} streams have no speech window and no label.</p>" if silent else "")
            + f"<h3>Minutes of speech by window label</h3>"
            f"{bar_chart(data.minutes_by_label, colours=colours, unit='min', decimals=1)}"
            f"<p class=note>Each labelled window stands for one hop ({data.hop_s:.3f} s) of audio.</p>")


def _errors(data: ScoreResults) -> str:
    failed = data.failed
    if failed.empty:
        return "<p>None.</p>"
    rows = "".join(f"<tr><td>{html.escape(str(p))}</td><td>{html.escape(str(e))}</td></tr>"
                   for p, e in failed[[schema.PATH, schema.ERROR]].head(MAX_ERRORS).itertuples(index=False))
    more = (f"<p class=note>First {MAX_ERRORS} of {len(failed)} shown; all are in the error column of files/.</p>"
            if len(failed) > MAX_ERRORS else "")
    return f"<table><tr><th>path</th><th>error</th></tr>{rows}</table>{more}"


def report_page(data: ScoreResults) -> str:
    """The whole page."""
    colours = colours_of(data.classes)
    out = html.escape(str(data.out))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ser-batch scores: {out}</title>
<style>{_STYLE}</style></head>
<body><h1>ser-batch scores</h1><p class=note><code>{out}</code></p>
<h2>The run</h2>{_figures(data)}
<h2 id="listen-first">Calls to listen to first</h2>{_truth_summary(data)}{_listen_first(data)}
<h2 id="ribbons">Emotion over time</h2>{_ribbons(data, colours)}
<h2 id="distribution">Emotions overall</h2>{_distribution(data, colours)}
<h2 id="per-file">Per file</h2>{_file_table(data)}
<h2 id="errors">Errors</h2>{_errors(data)}
<script>{_SORT_SCRIPT}</script>
</body></html>
"""


def write_score_report(out: Path, *, file_path: str | None = None, truth: Path | None = None,
                       max_ribbons: int = score_figures.MAX_RIBBONS) -> Path:
    """Write ``out/report.html`` from ``out/files``, ``out/segments`` and ``out/_run.json``.

    Raises
    ------
    DatasetError
        If ``out`` holds no results, ``file_path`` is not one of its files, the truth table is
        unusable, or a name the report reads or writes in ``out`` is a symbolic link.
    """
    refuse_links(out)  # a link at OUT/report.html (or OUT/files) is not followed
    data = score_figures.read_results(out, file_path=file_path, truth=truth, max_ribbons=max_ribbons)
    return write_text_atomic(Path(out) / schema.REPORT_HTML, report_page(data))

"""The scoring report (``ser-batch report OUT``), on score folders written with the schema module."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from click.testing import CliRunner

from ser_batch import schema
from ser_batch.cli import main
from ser_batch.data import score_folder
from ser_batch.reports import score_figures, score_page
from ser_batch.reports.score_page import BLANK, COLOURS, colours_of

CLASSES = list(schema.EMOTIONS)
HOP, WINDOW = 0.512, 1.504


def _probabilities(label: str | None, confidence: float, *, silent_like: str = "angry") -> dict[str, float]:
    """Probabilities whose argmax is ``label`` at ``confidence``; a window without speech gets a
    high ``silent_like`` probability, as the noise between clips does."""
    top = label or silent_like
    rest = (1 - confidence) / (len(CLASSES) - 1)
    return {schema.proba_column(c): confidence if c == top else rest for c in CLASSES}


def write_score_folder(out: Path, streams: dict[tuple[str, int | None], list[tuple[str | None, float]]], *,
                       errors: dict[str, str] | None = None, run: dict | None = None) -> Path:
    """A score folder as ``score`` writes it: one window every ``HOP`` s per (label, confidence)."""
    seg_rows, file_rows = [], []
    for (path, channel), windows in streams.items():
        for i, (label, confidence) in enumerate(windows):
            seg_rows.append({schema.PATH: path, schema.CHANNEL: channel, schema.START_S: i * HOP,
                             schema.END_S: i * HOP + WINDOW, schema.SPEECH_RATIO: 0.9 if label else 0.0,
                             schema.LABEL: label, schema.CONFIDENCE: confidence, **_probabilities(label, confidence)})
        speech = [(lab, c) for lab, c in windows if lab]
        mean = {c: float(np.mean([_probabilities(lab, conf)[schema.proba_column(c)] for lab, conf in speech]))
                for c in CLASSES} if speech else {}
        best = max(mean, key=mean.get) if mean else None
        file_rows.append({schema.PATH: path, schema.CHANNEL: channel, schema.SIZE_BYTES: 100, schema.MTIME: 1.0,
                          schema.DURATION_S: (len(windows) - 1) * HOP + WINDOW, schema.SAMPLE_RATE_IN: 16000,
                          schema.CHANNELS_IN: 1 if channel is None else 2, schema.N_SEGMENTS: len(windows),
                          schema.SPEECH_S: len(speech) * HOP, schema.LABEL: best,
                          schema.CONFIDENCE: mean.get(best) if best else None,
                          **{schema.proba_column(c): mean.get(c) for c in CLASSES},
                          schema.NORMALIZED: False, schema.MODEL_SET: "global", schema.ERROR: None,
                          schema.BUNDLE_ID: "b" * 16})
    for path, error in (errors or {}).items():
        file_rows.append({schema.PATH: path, schema.ERROR: error, schema.BUNDLE_ID: "b" * 16})
    settings = {"classes": CLASSES, "bundle_id": "b" * 16, "config": {}}
    segments = pa.Table.from_pylist(seg_rows, schema=schema.segments_schema(**settings))
    score_folder.write_part(segments, out, score_folder.SEGMENTS_DIR, "s0")
    files = pa.Table.from_pylist(file_rows, schema=schema.files_schema(**settings))
    score_folder.write_part(files, out, score_folder.FILES_DIR, "f0", segment_parts=["part-s0.parquet"])
    if run is not None:
        (out / score_folder.RUN_RECORD).write_text(json.dumps(run))
    return out


class _Page(HTMLParser):
    """Ribbons (their rects' fills and titles) and table cells of a report page."""

    def __init__(self) -> None:
        super().__init__()
        self.ribbons: dict[str, list[dict[str, str]]] = {}
        self.tables: dict[str, list[list[dict[str, str]]]] = {}
        self.headers: dict[str, list[str]] = {}
        self._ribbon = self._table = None
        self._in_th = False
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "div" and "data-stream" in a:
            self._ribbon = a["data-stream"]
            self.ribbons[self._ribbon] = []
        elif tag == "rect" and self._ribbon is not None:
            self.ribbons[self._ribbon].append(a)
        elif tag == "table":
            self._table = a.get("id") or f"table{len(self.tables)}"
            self.tables[self._table], self.headers[self._table] = [], []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag == "td" and self._table is not None:
            self.tables[self._table][-1].append(a)
            self._text = ""
        elif tag == "th":
            self._in_th, self._text = True, ""

    def handle_data(self, data: str) -> None:
        self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._ribbon = None
        elif tag == "table":
            self._table = None
        elif tag == "th" and self._table is not None:
            self.headers[self._table].append(self._text.strip())
            self._in_th = False
        elif tag == "td" and self._table is not None:
            self.tables[self._table][-1][-1]["text"] = self._text.strip()


def parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    return parser


def emotion_bars(rects: list[dict[str, str]]) -> list[dict[str, str]]:
    """The rects of a ribbon that show a predicted emotion (not the background, not the truth)."""
    return [r for r in rects if r.get("fill") in set(COLOURS.values()) and r.get("y") == "1"]


def report(out: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["report", str(out), *args])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"report written to {out / 'report.html'}"
    return (out / "report.html").read_text(encoding="utf-8")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Four streams: A half angry, B long happy stretch with some fearful, C neutral, D no speech;
    and one failed file."""
    a = [("angry", 0.8), ("neutral", 0.7)] * 5 + [(None, 0.9)] * 4
    b = [("fearful", 0.6)] + [("happy", 0.8)] * 12 + [("calm", 0.9)] * 7
    c = [("neutral", 0.7)] * 8 + [(None, 0.9)] * 3
    d = [(None, 0.95)] * 10
    run = {"job": "score", "files_total": 5, "files_scored": 5, "files_skipped": 0, "errors": 1, "audio_s": 90.0,
           "wall_s": 2.5, "realtime_factor": 36.0, "task_cpu_s": 1.5, "realtime_factor_per_core": 60.0,
           "bundle_id": "b" * 16, "started": "2026-01-01T00:00:00+0000", "finished": "2026-01-01T00:00:03+0000"}
    return write_score_folder(tmp_path / "scores", {("calls/a.wav", None): a, ("calls/b.wav", None): b,
                                                    ("calls/c.wav", None): c, ("calls/d.wav", None): d},
                              errors={"calls/bad.wav": "not audio"}, run=run)


def test_the_page_is_self_contained(folder: Path) -> None:
    page = report(folder)
    for needle in ("http://", "https://", "src=", "<link", "@import", "url(", "data:image"):
        assert needle not in page, needle
    assert page.count("<svg") >= 6 and "<script>" in page


def test_colours_are_distinct_and_none_is_blank_or_grey() -> None:
    colours = colours_of(CLASSES + ["other", "more"])
    assert len(set(colours.values())) == len(colours)
    for value in colours.values():
        r, g, b = (int(value[i:i + 2], 16) for i in (1, 3, 5))
        assert value != BLANK and not (abs(r - g) < 16 and abs(g - b) < 16), value
    assert colours["surprised"] != colours["neutral"]


def test_windows_without_speech_are_drawn_blank(folder: Path) -> None:
    ribbons = parse(report(folder)).ribbons
    # d.wav: every window has angry at 0.95 but no speech: nothing but the blank background.
    assert emotion_bars(ribbons["calls/d.wav"]) == []
    assert ribbons["calls/d.wav"][0]["fill"] == BLANK
    # a.wav: bars only over its first ten (speech) windows, alternating angry and neutral.
    bars = emotion_bars(ribbons["calls/a.wav"])
    assert [b["fill"] for b in bars] == [COLOURS["angry"], COLOURS["neutral"]] * 5
    duration = 13 * HOP + WINDOW
    right_edge = max(float(b["x"]) + float(b["width"]) for b in bars)
    assert right_edge == pytest.approx((9 * HOP + WINDOW / 2 + HOP / 2) / duration * 1000, abs=0.2)
    # Confidence as opacity: angry at 0.8, neutral at 0.7 (in fifths, rounded).
    assert {b["fill-opacity"] for b in bars} == {"0.8", "0.6"}


def test_runs_of_one_label_merge_into_one_bar(folder: Path) -> None:
    bars = emotion_bars(parse(report(folder)).ribbons["calls/b.wav"])
    assert [b["fill"] for b in bars] == [COLOURS["fearful"], COLOURS["happy"], COLOURS["calm"]]


def test_shares_and_stretches(folder: Path) -> None:
    data = score_figures.read_results(folder)
    s = data.streams.set_index(schema.PATH)
    assert s.loc["calls/a.wav", "share_angry"] == pytest.approx(0.5)
    assert s.loc["calls/a.wav", "alarm_share"] == pytest.approx(0.5)
    assert s.loc["calls/b.wav", "alarm_share"] == pytest.approx(1 / 20)
    # a.wav: each angry window stands alone (neutral between): one window long.
    assert s.loc["calls/a.wav", "arousal_s"] == pytest.approx(WINDOW)
    # b.wav: fearful at 0.6 then 12 happy at 0.8 form one stretch of 13 windows, from 0 s.
    assert s.loc["calls/b.wav", "arousal_s"] == pytest.approx(12 * HOP + WINDOW)
    assert s.loc["calls/b.wav", "arousal_at_s"] == pytest.approx(0.0)
    assert s.loc["calls/d.wav", "speech_windows"] == 0 and s.loc["calls/d.wav", "arousal_s"] == 0
    assert list(data.streams[schema.PATH]) == ["calls/a.wav", "calls/b.wav", "calls/c.wav", "calls/d.wav"]
    assert data.hop_s == pytest.approx(HOP)


def test_low_confidence_and_no_speech_break_a_stretch(tmp_path: Path) -> None:
    windows = [("angry", 0.9)] * 3 + [("angry", 0.3)] + [("surprised", 0.9)] * 5 + [(None, 0.9)] + [("angry", 0.9)] * 4
    out = write_score_folder(tmp_path / "o", {("x.wav", None): windows})
    stretch = score_figures.read_results(out).streams.iloc[0]
    assert stretch["arousal_s"] == pytest.approx(4 * HOP + WINDOW) and stretch["arousal_at_s"] == pytest.approx(4 * HOP)


def test_listen_first_ranks_and_leaves_out_calm_calls(folder: Path) -> None:
    page = report(folder)
    listen = page[page.index('id="listen-first"'):page.index('id="ribbons"')]
    rows = parse(listen).tables["table0"][1:]
    assert [r[1]["text"] for r in rows] == ["calls/a.wav", "calls/b.wav"]  # c (neutral) and d (silent) left out
    assert [r[3]["text"] for r in rows] == ["50%", "5%"]
    assert rows[1][4]["text"] == "0:08"  # 12 hops + one window = 7.6 s, as m:ss
    assert "Ranked by the share of speech labelled angry or fearful" in listen
    assert "One bar per 1.5 s window (every 0.51 s)" in page


def test_nothing_stands_out_says_so(tmp_path: Path) -> None:
    out = write_score_folder(tmp_path / "o", {("x.wav", None): [("neutral", 0.9)] * 4})
    assert "nothing stands out" in report(out)


def test_a_folder_where_every_file_failed_still_gets_a_page(tmp_path: Path) -> None:
    out = write_score_folder(tmp_path / "o", {}, errors={"a.wav": "not audio", "b.wav": "broken link"})
    page = report(out)
    assert "No file was scored: see the errors below." in page and "broken link" in page
    assert parse(page).ribbons == {} and "2 rows: 0 scored, 2 failed" in page


def test_a_file_not_in_the_results_is_one_line(folder: Path) -> None:
    code, output = _invoke(str(folder), "--file", "calls/nope.wav")
    assert code == 1
    assert output == f"error: calls/nope.wav is not in {folder / 'files'} (use its path as in the path column)\n"


def test_the_per_file_table_is_sortable_by_each_share(folder: Path) -> None:
    page = report(folder)
    parsed = parse(page)
    header = parsed.headers["files"]
    assert all(c in header for c in CLASSES) and "angry or fearful" in header
    rows = {r[1]["text"]: r for r in parsed.tables["files"][1:]}
    assert set(rows) == {"calls/a.wav", "calls/b.wav", "calls/c.wav", "calls/d.wav"}
    angry = header.index("angry")
    assert float(rows["calls/a.wav"][angry]["data-v"]) == pytest.approx(0.5)
    assert rows["calls/a.wav"][angry]["text"] == "50%"
    assert float(rows["calls/b.wav"][header.index("happy")]["data-v"]) == pytest.approx(12 / 20)
    assert 'class="sortable" id="files"' in page and "addEventListener('click'" in page


def test_durations_are_in_minutes(folder: Path) -> None:
    page = report(folder)
    rows = {r[1]["text"]: r for r in parse(page).tables["files"][1:]}
    assert rows["calls/b.wav"][2]["text"] == f"{(19 * HOP + WINDOW) / 60:.2f} min"
    assert "1.5 min" in page  # the run's 90 s of audio
    assert not re.search(r"\d h\b|hours", page)


def test_counts_are_whole_numbers_and_minutes_labelled(folder: Path) -> None:
    page = report(folder)
    dist = page[page.index('id="distribution"'):page.index('id="per-file"')]
    counts = re.findall(r">([\d.]+) </text>", dist)
    assert counts and all(re.fullmatch(r"\d+", c) for c in counts)
    assert re.search(r">0\.\d min</text>", dist)


def test_the_run_figures(folder: Path) -> None:
    page = report(folder)
    run = page[page.index("<h2>The run"):page.index('id="listen-first"')]
    assert "5 rows: 4 scored, 1 failed" in run and "36.0x" in run and "wall_s = 2.5 s" in run
    assert "5 listed, 5 scored, 0 already done, 1 errors" in run and "1.5 min" in run
    assert "calls/bad.wav" in page and "not audio" in page


def test_file_names_are_escaped(tmp_path: Path) -> None:
    name = 'calls/<b>"x" & y</b>.wav'
    out = write_score_folder(tmp_path / "o", {(name, None): [("angry", 0.9)] * 3})
    page = report(out)
    assert '<b>"x"' not in page and "&lt;b&gt;&quot;x&quot; &amp; y&lt;/b&gt;.wav" in page
    assert list(parse(page).ribbons) == [name]


def test_channels_split_get_a_ribbon_each(tmp_path: Path) -> None:
    out = write_score_folder(tmp_path / "o", {("call.wav", 0): [("angry", 0.9)] * 3,
                                              ("call.wav", 1): [("sad", 0.9)] * 3})
    ribbons = parse(report(out)).ribbons
    assert set(ribbons) == {"call.wav · channel 0", "call.wav · channel 1"}
    assert [b["fill"] for b in emotion_bars(ribbons["call.wav · channel 1"])] == [COLOURS["sad"]]


def test_ribbons_are_capped_and_file_put_first(folder: Path) -> None:
    page = report(folder, "--ribbons", "2")
    assert list(parse(page).ribbons) == ["calls/a.wav", "calls/b.wav"]
    assert "The first 2 of 4 streams in listen-first order are drawn" in page
    page = report(folder, "--ribbons", "1", "--file", "calls/d.wav")
    assert list(parse(page).ribbons) == ["calls/d.wav", "calls/a.wav"]


def test_truth_overlay_and_agreement(folder: Path, tmp_path: Path) -> None:
    from ser_batch.demo.calls import TruthRow, clip_predictions, write_truth

    # The demo's own format (call,clip,...; calls named by file name). a.wav: windows 0-9 alternate
    # angry/neutral; b.wav: windows 1-12 are happy.
    truth = [TruthRow("a.wav", "1", 0.0, 5.0, "angry"), TruthRow("a.wav", "2", 5.5, 6.5, "sad"),
             TruthRow("b.wav", "3", 1.0, 6.0, "happy"), TruthRow("gone.wav", "4", 0.0, 1.0, "sad")]
    csv_path = write_truth(truth, tmp_path / "truth.csv")
    page = report(folder, "--truth", str(csv_path))
    parsed = parse(page)
    truth_bars = [r for r in parsed.ribbons["calls/a.wav"] if "y" in r and r["y"] != "0" and r["y"] != "1"
                  and r.get("fill") != BLANK]
    assert [r["fill"] for r in truth_bars] == [COLOURS["angry"], COLOURS["sad"]]
    data = score_figures.read_results(folder, truth=csv_path)
    s = data.streams.set_index(schema.PATH)
    # As the demo counts clips: the argmax of the mean probabilities of the windows over each.
    segments = pd.read_parquet(folder / "segments")
    segments[schema.PATH] = segments[schema.PATH].str.replace("calls/", "")
    expected = clip_predictions(segments, truth[:3], CLASSES)
    assert s.loc["calls/a.wav", "truth_clips"] == 2 and s.loc["calls/b.wav", "truth_clips"] == 1
    assert s.loc["calls/a.wav", "truth_right"] + s.loc["calls/b.wav", "truth_right"] == sum(
        label == row.emotion for row, label in expected)
    # b.wav: the windows centred in 1-6 s are windows 1 to 10, all happy.
    assert s.loc["calls/b.wav", "truth_right"] == 1 and s.loc["calls/b.wav", "truth_windows_right"] == 10
    files = {r[1]["text"]: r for r in parsed.tables["files"][1:]}
    assert files["calls/b.wav"][-1]["text"] == "1 of 1 clips" and files["calls/c.wav"][-1]["text"] == ""
    assert "1 truth files are not among the scored files (gone.wav)" in page
    assert re.search(r"<b>\d of 3 clips right", page)


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["report", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize("content, reason", [
    ("file,start_s,end_s\na.wav,0,1\n", "column emotion missing; it needs the columns file,start_s,end_s,emotion"),
    ("file,start_s,end_s,emotion\n", "it has no rows"),
    ("file,start_s,end_s,emotion\ncalls/a.wav,zero,1,angry\n", "line 2: start_s 'zero' and end_s '1' must be numbers"),
    ("file,start_s,end_s,emotion\ncalls/a.wav,3,1,angry\n", "line 2: end_s 1 must be after start_s 3 >= 0"),
    ("file,start_s,end_s,emotion\nnope.wav,0,1,angry\n", "none of its files (nope.wav, ...) is among the scored"),
    ("file,start_s,end_s,emotion\nx.wav,0,1,angry\n", "line 2: x.wav matches 2 files (one/x.wav, two/x.wav, ...)"),
])
def test_an_unusable_truth_table_is_one_line(tmp_path: Path, content: str, reason: str) -> None:
    out = write_score_folder(tmp_path / "o", {("one/x.wav", None): [("angry", 0.9)], ("two/x.wav", None):
                                              [("sad", 0.9)], ("calls/a.wav", None): [("sad", 0.9)]})
    truth = tmp_path / "t.csv"
    truth.write_text(content)
    code, output = _invoke(str(out), "--truth", str(truth))
    assert code == 1 and output.count("\n") == 1, output
    assert output.startswith(f"error: truth table {truth}") and reason in output, output
    assert not (out / "report.html").exists()


def test_the_cli_default_matches_the_library() -> None:
    option = next(p for p in main.commands["report"].params if p.name == "max_ribbons")
    assert option.default == score_figures.MAX_RIBBONS


def test_minutes_and_clock_and_ticks() -> None:
    assert score_page.minutes(9) == "0.15 min" and score_page.minutes(600) == "10.0 min"
    assert score_page.clock(187.4) == "3:07"
    assert score_page.tick_step(55) == 10 and score_page.tick_step(3600) == 600


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium on PATH (apt-get install -y chromium)")
def test_the_page_renders_and_sorts_in_a_headless_browser(folder: Path, tmp_path: Path) -> None:
    """A real browser: the page renders to a PNG, and clicking a share's header sorts the table by it."""
    from benchmarks.report_screenshot import CHROMIUM_FLAGS, screenshot

    page = report(folder)
    png = tmp_path / "report.png"
    screenshot(folder / "report.html", png, width=1200, height=1600)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    happy = parse(page).headers["files"].index("happy")
    clicked = tmp_path / "clicked.html"
    clicked.write_text(page.replace("</body>", f"<script>document.querySelectorAll('#files th')[{happy}].click()"
                                               "</script></body>"), encoding="utf-8")
    dom = subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                          clicked.as_uri()], check=True, capture_output=True, text=True, timeout=120).stdout
    order = [r[1]["text"] for r in parse(dom).tables["files"][1:]]
    assert order[0] == "calls/b.wav"  # 60% happy; before the click, a.wav (rank 1, no happy window) is first
    assert 'data-stream="calls/a.wav"' in dom and "<svg" in dom


def test_a_real_score_run_draws_its_noise_blank(ray_session: None, tmp_path: Path) -> None:
    """The score job on generated audio: speech, 4 s of low noise, speech. The windows it leaves
    unlabelled get no bar, whatever their probabilities, and the shares match the segments table."""
    import soundfile as sf

    from ser_batch.config import load_config
    from ser_batch.pipeline.score import run_score

    from conftest import noise, speech_like

    rate = 16_000
    call = np.concatenate([speech_like(sample_rate=rate, duration_s=4.0, seed=1),
                           noise(sample_rate=rate, duration_s=4.0, amp=0.002, seed=2),
                           speech_like(sample_rate=rate, duration_s=4.0, f0_hz=240.0, seed=3)])
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "call.wav", call, rate)
    sf.write(tmp_path / "in" / "other.wav", speech_like(sample_rate=rate, duration_s=3.0, seed=4), rate)
    out = tmp_path / "scores"
    run_score(tmp_path / "in", out, config=load_config(), progress=False)
    segments = pd.read_parquet(out / "segments")
    windows = segments[segments[schema.PATH] == "call.wav"].sort_values(schema.START_S)
    middle = (windows[schema.START_S] + windows[schema.END_S]) / 2
    assert windows[(middle > 5.5) & (middle < 6.5)][schema.LABEL].isna().all()  # the noise: no label
    assert windows[schema.LABEL].notna().sum() >= 4
    page = report(out)
    # The ribbon spans the file, or its last window when that reaches past the end (padded).
    duration = max(len(call) / rate, float(windows[schema.END_S].max()))
    bars = emotion_bars(parse(page).ribbons["call.wav"])
    assert bars
    hop = score_figures.window_hop_s(segments.assign(channel=-1))
    spans = [(m - hop / 2, m + hop / 2) for m in middle[windows[schema.LABEL].notna()]]
    for bar in bars:  # each bar lies over labelled windows only
        left = float(bar["x"]) / 1000 * duration
        right = left + float(bar["width"]) / 1000 * duration
        assert any(a - 0.01 <= left <= b for a, b in spans) and any(a <= right <= b + 0.01 for a, b in spans)
        assert not (left < 6.0 < right)  # nothing over the middle of the noise
    labelled = segments[segments[schema.LABEL].notna()]
    share = labelled.groupby(schema.PATH)[schema.LABEL].apply(lambda s: s.isin(["angry", "fearful"]).mean())
    streams = score_figures.read_results(out).streams.set_index(schema.PATH)
    for path, value in share.items():
        assert streams.loc[path, "alarm_share"] == pytest.approx(value)

"""Synthetic calls from labelled clips, and accuracy per clip from window scores."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from ser_batch import schema
from ser_batch.demo.calls import TRUTH_COLUMNS, TruthRow, build_call, clip_predictions, write_truth

from conftest import write_audio


def test_a_call_holds_its_clips_where_the_truth_says(tmp_path: Path) -> None:
    a = write_audio(tmp_path / "a.wav", duration_s=1.0, seed=1)
    b = write_audio(tmp_path / "b.wav", duration_s=0.5, sample_rate=48_000, channels=2, seed=2)
    truth = build_call([(a, "happy"), (b, "sad")], tmp_path / "call.flac", seed=3)
    assert [(r.clip, r.emotion) for r in truth] == [("a.wav", "happy"), ("b.wav", "sad")]
    assert 0.4 <= truth[0].start_s <= 1.6 and truth[0].end_s - truth[0].start_s == pytest.approx(1.0)
    assert 0.4 <= truth[1].start_s - truth[0].end_s <= 1.6
    call, rate = sf.read(tmp_path / "call.flac", dtype="float32")
    assert rate == 16_000 and len(call) / rate == pytest.approx(truth[1].end_s, abs=1e-3)
    clip, _ = sf.read(a, dtype="float32")
    start = round(truth[0].start_s * rate)
    np.testing.assert_allclose(call[start : start + len(clip)], clip, atol=1e-4)  # FLAC is 16-bit
    assert np.abs(call[: start - 10]).max() < 0.02  # the gap is low noise


def test_narrow_band_mu_law_call(tmp_path: Path) -> None:
    a = write_audio(tmp_path / "a.wav", duration_s=1.0)
    truth = build_call([(a, "angry")], tmp_path / "call.wav", sample_rate=8000, subtype="ULAW")
    info = sf.info(tmp_path / "call.wav")
    assert (info.samplerate, info.subtype) == (8000, "ULAW")
    assert info.duration == pytest.approx(truth[0].end_s, abs=1e-3)
    write_truth(truth, tmp_path / "truth.csv")
    rows = list(csv.reader((tmp_path / "truth.csv").open()))
    assert tuple(rows[0]) == TRUTH_COLUMNS and rows[1][:2] == ["call.wav", "a.wav"]


def test_clip_predictions_average_the_windows_over_each_clip() -> None:
    classes = ["angry", "sad"]
    windows = pd.DataFrame({
        schema.PATH: ["x/call.wav"] * 4,
        schema.START_S: [0.0, 0.5, 1.0, 3.0],
        schema.END_S: [1.5, 2.0, 2.5, 4.5],
        schema.LABEL: ["angry", None, "sad", "sad"],
        schema.proba_column("angry"): [0.9, 0.1, 0.4, 0.2],
        schema.proba_column("sad"): [0.1, 0.9, 0.6, 0.8],
    })
    truth = [TruthRow("call.wav", "c1", 0.0, 2.0, "angry"), TruthRow("call.wav", "c2", 3.5, 4.0, "sad"),
             TruthRow("call.wav", "c3", 8.0, 9.0, "sad"), TruthRow("other.wav", "c4", 0.0, 1.0, "sad")]
    got = [label for _, label in clip_predictions(windows, truth, classes)]
    # c1: windows centred at 0.75, 1.25 and 1.75; the one without speech (1.25) is left out,
    # so angry (0.9 + 0.4) / 2 beats sad (0.1 + 0.6) / 2. c3 and c4 have no window.
    assert got == ["angry", "sad", None, None]
    everything = [label for _, label in clip_predictions(windows, truth, classes, speech_only=False)]
    assert everything[0] == "sad"  # with it: angry 1.4 / 3 against sad 1.6 / 3

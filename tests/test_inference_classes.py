"""Restricted classes (--classes) through the one scoring path: score tables, re-runs, predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from ser_batch.cli import main

from conftest import write_audio

FOUR = ["angry", "happy", "neutral", "sad"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("classes_archive")
    write_audio(root / "a.wav", duration_s=3.0, seed=1)
    write_audio(root / "b.wav", duration_s=2.0, seed=2)
    return root


def test_score_with_classes_and_rerun(archive: Path, tmp_path: Path, ray_session: None) -> None:
    runner, out = CliRunner(), tmp_path / "out"
    result = runner.invoke(main, ["score", str(archive), "--out", str(out), "--no-progress",
                                  "--classes", "sad,angry,neutral,happy"])
    assert result.exit_code == 0, result.output
    for kind in ("segments", "files"):
        table = pd.read_parquet(out / kind)
        p = table[[f"p_{c}" for c in FOUR]].to_numpy()
        assert not {"p_calm", "p_disgust", "p_fearful", "p_surprised"} & set(table.columns)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
        assert set(table.label.dropna()) <= set(FOUR)
    assert json.loads((out / "_score.json").read_text())["classes"] == FOUR

    again = runner.invoke(main, ["score", str(archive), "--out", str(out), "--no-progress"])
    assert again.exit_code == 1 and "classes" in again.output and "Traceback" not in again.output
    redo = runner.invoke(main, ["score", str(archive), "--out", str(out), "--no-progress", "--rescore"])
    assert redo.exit_code == 0, redo.output
    assert "p_calm" in pd.read_parquet(out / "files").columns


def test_predict_classes_json_and_unknown_class(archive: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["predict", str(archive / "a.wav"), "--classes", "angry,happy,neutral,sad",
                                  "--json"])
    assert result.exit_code == 0, result.output
    [entry] = json.loads(result.output)
    for pred in entry["predictions"].values():
        assert list(pred["probabilities"]) == FOUR and pred["label"] in FOUR
        assert abs(sum(pred["probabilities"].values()) - 1) < 1e-3
    bad = runner.invoke(main, ["predict", str(archive / "a.wav"), "--classes", "angry,bored"])
    assert bad.exit_code == 2 and "unknown class 'bored'" in bad.output  # a bad option value: bad usage
    assert len(bad.output.strip().splitlines()) == 1

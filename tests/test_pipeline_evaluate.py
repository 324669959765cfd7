"""Honest evaluation (ser_batch/pipeline/evaluate.py): which rows are scored and why, the metrics,
and the pretrained bundle on the RAVDESS clips it was trained on.

The end-to-end runs with a freshly trained bundle are in tests/test_pipeline_train.py, next to the
session fixture that trains it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from ser_batch.cli import main
from ser_batch.config import load_config
from ser_batch.data.featureset import FeatureSet
from ser_batch.errors import DatasetError
from ser_batch.models import bundle as bundle_io
from ser_batch.models.metrics import classification_metrics
from ser_batch.pipeline.evaluate import format_metrics, select_rows

from conftest import link_ravdess_actors, needs_shared

CLASSES = ["angry", "happy", "sad"]


def _features(actors: list[int], labels: list[str | None], *, n_errors: int = 0) -> FeatureSet:
    paths = [f"Actor_{a:02d}/clip_{i}.wav" for i, a in enumerate(actors)]
    return FeatureSet(X=np.zeros((len(actors), 2), dtype=np.float32), emotion=np.array(labels, dtype=object),
                      actor=np.array(actors, dtype=float), paths=np.array(paths, dtype=object), metadata={},
                      n_errors=n_errors)


#: 4 actors x 3 clips, every class once per actor; actor 4 is the held-out one.
FEATURES = _features([a for a in (1, 2, 3, 4) for _ in range(3)], CLASSES * 4)


def _bundle(folder: Path, *, split: dict[str, Any], trained_on: list[str] | None, fmt: int = 2,
            features_dir: str = "/elsewhere/features") -> bundle_io.Bundle:
    folder.mkdir(exist_ok=True)
    training: dict[str, Any] = {"features_dir": features_dir, "rows": 12, "error_rows": 0, "actors": [1, 2, 3, 4]}
    if trained_on is not None:
        training["files"] = bundle_io.write_training_files(folder, trained_on)
    manifest = {"bundle_format": fmt, "classes": CLASSES, "models": ["sklearn"], "split": split,
                "training_data": training}
    return bundle_io.Bundle(path=folder, manifest=manifest)


SPEAKER = {"kind": "speaker", "test_actors": [4]}


def _select(bundle: bundle_io.Bundle, features: FeatureSet = FEATURES, **options: Any) -> Any:
    return select_rows(bundle, features, features.labelled(), features_dir=Path("/data/features"), **options)


def test_listed_training_files_are_left_out(tmp_path: Path) -> None:
    trained = [p for p in FEATURES.paths if not p.startswith("Actor_04/")]
    bundle = _bundle(tmp_path, split=SPEAKER, trained_on=trained)
    selection = _select(bundle)
    assert selection.keep.tolist() == [False] * 9 + [True] * 3
    assert selection.training_rows_included is False and selection.warnings == []
    assert "3 rows the models did not train on; 9 training rows left out" in selection.reason
    assert "list of its 9 training files" in selection.reason

    everything = _select(bundle, include_training=True)
    assert everything.keep.all() and everything.training_rows_included is True
    assert "9 of the 12 rows scored were used to train these models" in everything.warnings[0]

    assert _select(bundle, actors=[4, 1]).keep.sum() == 3  # --actors narrows, never adds training rows
    with pytest.raises(DatasetError, match=r"no held-out rows: .* all 3 labelled rows of actors 2 .*--all"):
        _select(bundle, actors=[2])
    with pytest.raises(DatasetError, match="no rows of actors 9 labelled"):
        _select(bundle, actors=[9])


def test_training_files_match_by_path_on_any_feature_set(tmp_path: Path) -> None:
    # another extraction of the same corpus: different row order, unlabelled and unknown-class rows
    bundle = _bundle(tmp_path, split={"kind": "random"}, trained_on=["Actor_01/clip_0.wav", "Actor_02/clip_4.wav"])
    other = _features([2, 1, 1, 3], ["happy", "angry", None, "bored"])
    object.__setattr__(other, "paths", np.array(["Actor_02/clip_4.wav", "Actor_01/clip_0.wav",
                                                 "Actor_01/clip_1.wav", "Actor_03/clip_9.wav"], dtype=object))
    with pytest.raises(DatasetError, match="no held-out rows"):
        _select(bundle, other)  # the two labelled, known-class rows are both training rows
    assert _select(bundle, other, include_training=True).keep.tolist() == [True, True, False]


def test_format_1_bundles_fall_back_on_their_split_record(tmp_path: Path) -> None:
    # recognised as the training set by its shape (rows, error rows, actors)
    speaker = _bundle(tmp_path / "s", split=SPEAKER, trained_on=None, fmt=1)
    selection = _select(speaker)
    assert selection.keep.tolist() == [False] * 9 + [True] * 3
    assert "speaker split, which held out actors 4" in selection.reason

    everything = _bundle(tmp_path / "n", split={"kind": "none"}, trained_on=None, fmt=1)
    with pytest.raises(DatasetError, match=r"no held-out rows: .*every row \(--split none\).*--all"):
        _select(everything)
    assert _select(everything, include_training=True).training_rows_included is True

    for split in ({"kind": "random"}, SPEAKER):
        bundle = _bundle(tmp_path / split["kind"], split=split, trained_on=None, fmt=1)
        # a random split's test rows cannot be recovered; another feature set cannot be checked
        features = FEATURES if split["kind"] == "random" else _features([4, 5], ["sad", "happy"])
        unknown = _select(bundle, features)
        assert unknown.keep.all() and unknown.trained is None and unknown.training_rows_included is None
        assert "cannot tell which rows the models were trained on" in unknown.warnings[0]

    # the recorded features_dir identifies the training set even when its shape changed
    recorded = _bundle(tmp_path / "r", split=SPEAKER, trained_on=None, fmt=1, features_dir="/data/features")
    assert _select(recorded, _features([4, 1], ["sad", "happy"])).keep.tolist() == [True, False]


def test_classification_metrics_and_table() -> None:
    proba = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    m = classification_metrics(["angry", "happy", "happy", "sad"], proba, CLASSES)
    assert m["n"] == 4 and m["accuracy"] == 0.75
    assert m["confusion"] == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert m["per_class"]["happy"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    table = format_metrics({"models": {"sklearn": m}})
    assert "sklearn        0.750" in table and "per-class F1" in table


@pytest.fixture(scope="module")
def rich_actor_01(tmp_path_factory: pytest.TempPathFactory, ray_session: None) -> Path:
    """``rich`` features (the pretrained bundle's settings) of RAVDESS actor 01: 60 clips."""
    from conftest import SHARED

    if not SHARED.is_dir():
        pytest.skip("../shared/data/ravdess not present")
    from ser_batch.pipeline.extract import run_extract

    audio = link_ravdess_actors(tmp_path_factory.mktemp("actor01"), (1,))
    out = tmp_path_factory.mktemp("rich") / "features"
    run_extract(audio, out, config=load_config(overrides=['features.recipe="rich"']), progress=False)
    return out


@needs_shared
def test_pretrained_bundle_has_no_held_out_ravdess_rows(rich_actor_01: Path, tmp_path: Path) -> None:
    pretrained = str(bundle_io.default_bundle_path())
    runner, out = CliRunner(), tmp_path / "metrics.json"
    refused = runner.invoke(main, ["evaluate", pretrained, str(rich_actor_01)])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert refused.output.startswith("error: no held-out rows: the models were trained on all 60 labelled rows")
    assert "1788 training files" in refused.output and "pass --all" in refused.output

    flattering = runner.invoke(main, ["evaluate", pretrained, str(rich_actor_01), "--all", "--out", str(out)])
    assert flattering.exit_code == 0, flattering.output
    assert "WARNING: 60 of the 60 rows scored were used to train these models" in flattering.output
    metrics = json.loads(out.read_text())
    assert metrics["rows"] == 60 and metrics["training_rows_included"] is True and metrics["warnings"]
    assert set(metrics["models"]) == {"keras", "sklearn", "cnn", "both"}


@needs_shared
def test_evaluate_classes_scores_only_those_rows_with_the_argmax_restricted(rich_actor_01: Path,
                                                                           tmp_path: Path) -> None:
    pretrained = str(bundle_io.default_bundle_path())
    runner, out = CliRunner(), tmp_path / "metrics.json"
    result = runner.invoke(main, ["evaluate", pretrained, str(rich_actor_01), "--all", "--classes",
                                  "sad,angry,neutral,happy", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "classes: angry, happy, neutral, sad (argmax restricted to 4 of the bundle's 8)" in result.output
    metrics = json.loads(out.read_text())
    assert metrics["rows"] == 4 + 8 + 8 + 8  # actor 01: 4 neutral clips, 8 of every other emotion
    assert metrics["classes"]["restricted"] is True
    for model in metrics["models"].values():
        assert model["classes"] == ["angry", "happy", "neutral", "sad"]  # the bundle's order
        assert sum(map(sum, model["confusion"])) == 28
    refused = runner.invoke(main, ["evaluate", pretrained, str(rich_actor_01), "--all", "--classes", "angry,bored"])
    assert refused.exit_code == 2 and "unknown class 'bored'" in refused.output and "Traceback" not in refused.output

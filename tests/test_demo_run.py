"""Tests for :mod:`ser_batch.demo.run` and the ``demo`` command that ``make demo`` runs.

The plans are checked as pure functions; two end-to-end runs on generated audio (one
labelled with RAVDESS names, one unlabelled) go through the CLI as ``make demo`` does.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner, Result

from ser_batch.cli import main
from ser_batch.cluster import runtime
from ser_batch.config import Config
from ser_batch.demo.run import DemoRun, TrainingPlan, choose_examples, plan_stages, plan_training, run_demo

from conftest import write_audio


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


# --- which training ---------------------------------------------------------------------


def test_no_labels_no_training() -> None:
    plan, reason = plan_training([None, None, None], [None, None, None])
    assert plan is None and "no emotion labels" in reason and "labels.csv" in reason


def test_one_emotion_no_training() -> None:
    plan, reason = plan_training(["sad"] * 4, [1, 2, 3, 4])
    assert plan is None and "only one emotion (sad)" in reason


def test_a_class_with_one_file_no_training() -> None:
    plan, reason = plan_training(["sad", "sad", "calm"], [None] * 3)
    assert plan is None and "calm: only one file" in reason


def test_ravdess_holds_out_actors_17_to_20() -> None:
    emotions = [e for _ in range(20) for e in ("angry", "calm", "sad")]
    actors = [a for a in range(1, 21) for _ in range(3)]
    plan, _ = plan_training(emotions, actors)
    assert plan == TrainingPlan("speaker", (17, 18, 19, 20), "speaker split, actors 17,18,19,20 held out")


def test_few_actors_hold_out_one() -> None:
    plan, _ = plan_training(["angry", "sad"] * 3, [1, 1, 2, 2, 3, 3])
    assert plan is not None and (plan.split, plan.test_actors) == ("speaker", (3,))
    assert plan.description == "speaker split, actor 3 held out"


@pytest.mark.parametrize(("actors", "why"), [
    ([None] * 8, "actors unknown"),
    ([1, 1, 1, 1, 2, 2, 2, 2], "only 2 actors"),
    ([1, 2, 3, 3, 1, 2, 3, 3], None),  # actor 3 holds the only "calm" clips
])
def test_random_split_when_actors_do_not_allow_a_speaker_split(actors: list, why: str | None) -> None:
    emotions = ["angry", "sad", "calm", "calm", "angry", "sad", "calm", "calm"]
    if why is None:
        emotions = ["angry", "sad", "calm", "calm", "angry", "sad", "sad", "calm"]
    plan, _ = plan_training(emotions, actors)
    assert plan is not None and plan.split == "random" and plan.test_actors == ()
    assert (why or "held-out actors would miss") in plan.description


def test_too_few_files_for_a_random_test_part() -> None:
    plan, reason = plan_training(["a", "a", "b", "b", "c", "c"], [None] * 6)
    assert plan is None and "stratified" in reason


def test_unlabelled_files_among_labelled_ones_are_ignored() -> None:
    plan, _ = plan_training(["angry", None, "sad", "angry", None, "sad"] * 2, [1, 9, 1, 2, 9, 2] * 2)
    assert plan is not None and plan.split == "random"


# --- which examples -------------------------------------------------------------------------


def test_examples_come_from_held_out_actors_with_different_emotions_and_voices() -> None:
    paths = [f"{a}/{e}{i}.wav" for a in (1, 2, 3) for e in ("x", "y") for i in (0, 1)]
    emotions = [p.split("/")[1][0] for p in paths]
    actors = [int(p[0]) for p in paths]
    assert choose_examples(paths, emotions, actors, held_out=(2, 3), count=3) == ["2/x0.wav", "3/y0.wav", "2/x1.wav"]
    # One held-out voice: different emotions first, then any file.
    assert choose_examples(paths, emotions, actors, held_out=(3,), count=3) == ["3/x0.wav", "3/y0.wav", "3/x1.wav"]


def test_examples_without_labels_are_the_first_files() -> None:
    paths = ["a.wav", "b.wav", "c.wav"]
    assert choose_examples(paths, [None] * 3, [None] * 3, count=5) == paths
    assert choose_examples(paths, [None] * 3, [None] * 3, count=2) == paths[:2]


# --- stages ---------------------------------------------------------------------------------


def make_run(plan: TrainingPlan | None) -> DemoRun:
    return DemoRun(data=Path("in"), out=Path("out"), config=Config(), say=print, warn=print, plan=plan)


def test_stage_lists() -> None:
    assert [s.name for s in plan_stages(make_run(None))] == ["extract", "predict", "score"]
    run = make_run(TrainingPlan("speaker", (17, 18), "speaker split, actors 17,18 held out"))
    stages = plan_stages(run)
    assert [s.name for s in stages] == ["extract", "train", "evaluate", "predict", "score"]
    assert [s.title(run) for s in stages] == [
        "extract (fast features): in -> out/features",
        "train: speaker split, actors 17,18 held out -> out/model",
        "evaluate on the held-out actors (17,18)",
        "predict 3 held-out clips with out/model",
        "score calls made of held-out clips -> out/scores (and report.html)",
    ]
    run = make_run(TrainingPlan("random", (), "random stratified split"))
    assert plan_stages(run)[-2].title(run) == "predict 3 clips with out/model (a random split may have trained on them)"
    assert plan_stages(run)[-1].title(run) == ("score calls made of clips -> out/scores (and report.html; a random "
                                               "split may have trained on them)")
    assert plan_stages(run)[2].title(run) == "evaluate on the held-out files"


def test_no_audio_is_a_message_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_ray(**kwargs: object) -> None:
        raise AssertionError("nothing to do: Ray must not start")

    monkeypatch.setattr(runtime, "ray_runtime", no_ray)
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "README.md").write_text("put audio here")
    said: list[str] = []
    summary = run_demo(corpus=tmp_path / "absent", input_dir=tmp_path / "input", out=tmp_path / "out",
                       say=said.append, warn=said.append)
    assert summary.data is None and summary.stages == ()
    assert len(said) == 1 and said[0].startswith(f"No audio found in {tmp_path / 'input'}/: put audio files (.wav")
    assert f"or place the RAVDESS copy at {tmp_path / 'absent'}" in said[0]
    assert not (tmp_path / "out").exists()


def test_cli_without_audio_exits_zero(tmp_path: Path) -> None:
    result = invoke("demo", "--input", tmp_path / "missing", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("No audio found in") and not result.stderr


# --- end to end -------------------------------------------------------------------------------


def stage_headers(result: Result) -> list[str]:
    return [line.split(" ", 2)[1] + " " + line.split(" ", 2)[2].split(" ")[0].rstrip(":")
            for line in result.stdout.splitlines() if line.startswith("== ")]


def test_labelled_input_trains_evaluates_and_predicts(ray_session: None, tmp_path: Path) -> None:
    # RAVDESS names in input/, reached through a symlinked folder, plus one unreadable file:
    # the shell demo said "input/ has no labels to train on" and failed with make's Error 123.
    store = tmp_path / "store"
    for actor in (1, 2, 3):
        for emotion in (1, 4, 5):
            for repetition in (1, 2):
                name = f"Actor_{actor:02d}/03-01-{emotion:02d}-01-01-{repetition:02d}-{actor:02d}.wav"
                write_audio(store / name, duration_s=1.6, seed=actor * 10 + emotion + repetition)
    data = tmp_path / "input"
    data.mkdir()
    for actor in (1, 2, 3):
        (data / f"Actor_{actor:02d}").symlink_to(store / f"Actor_{actor:02d}", target_is_directory=True)
    (data / "broken.wav").write_text("not audio")
    out = tmp_path / "output"
    result = invoke("demo", "--corpus", tmp_path / "absent", "--input", data, "--out", out,
                    "--set", "keras.epochs=3", "--set", "sklearn.max_iter=20")
    assert result.exit_code == 0, result.output
    assert stage_headers(result) == ["1/5 extract", "2/5 train", "3/5 evaluate", "4/5 predict", "5/5 score"]
    assert "== 2/5 train: speaker split, actor 3 held out" in result.stdout
    assert "19 files, 1 error, 1 part in" in result.stdout
    progress = re.compile(r"^(extract|train \(\d+ model sets?\)|score): \d+/\d+ ")
    assert [line for line in result.stderr.splitlines() if not progress.match(line)][:2] == [
        "1 of 19 files failed:", "  broken.wav: not an audio file (unrecognised format)"]
    # The first line comes before Ray starts; training (minutes on real data) says which model is done.
    assert result.stdout.splitlines()[0] == f"{data}: 19 audio files, 5 stages; starting Ray..."
    fitted = [line for line in result.stderr.splitlines() if line.startswith("train (2 model sets): ")]
    assert fitted[0].startswith("train (2 model sets): 0/4 models (0%)") and len(fitted) == 5
    assert fitted[-1].startswith("train (2 model sets): 4/4 models (100%), ")
    assert "\x1b" not in result.output
    assert "6 clips of voices never heard in training:" in result.stdout
    predicted = [line for line in result.stdout.splitlines() if line.startswith("Actor_")]
    assert [line.split(" ")[0] for line in predicted] == [
        "Actor_03/03-01-01-01-01-01-03.wav", "Actor_03/03-01-04-01-01-01-03.wav",
        "Actor_03/03-01-05-01-01-01-03.wav"]
    assert all("both" in line for line in predicted)
    assert (out / "model" / "manifest.json").is_file() and result.stdout.rstrip().endswith(f"results in {out}/")
    # The held-out clips, joined into a call, scored as an archive with the trained model.
    assert "6 held-out clips joined into 1 call with noise between them" in result.stdout
    assert (out / "scores" / "report.html").is_file() and (out / "calls" / "truth.csv").is_file()
    assert f"Truth from <code>{out / 'calls' / 'truth.csv'}</code>" in (out / "scores" / "report.html").read_text()
    assert "1 file scored (0 already done), 0 errors" in result.stdout
    assert " of 6 clips (" in result.stdout and "get their emotion from the windows over them" in result.stdout
    # The speaker split also trained normalised models; the call is scored again with them
    # (about 10 s of speech: under score.min_normalize_s, so the global models score it).
    assert f"with --normalize file ({out / 'scores-normalized'}): " in result.stdout
    normalized = pd.read_parquet(out / "scores-normalized" / "files")
    assert normalized["normalized"].tolist() == [False] and normalized["model_set"].tolist() == ["global"]


def test_unlabelled_input_predicts_with_the_pretrained_bundle(ray_session: None, tmp_path: Path) -> None:
    data = tmp_path / "input"
    write_audio(data / "calls" / "a.wav", duration_s=2.0)
    write_audio(data / "calls" / "b.flac", duration_s=1.5, seed=1)
    (data / "calls" / "empty.wav").write_bytes(b"")
    said: list[str] = []
    warned: list[str] = []
    summary = run_demo(corpus=None, input_dir=data, out=tmp_path / "output", say=said.append, warn=warned.append)
    assert summary.stages == ("extract", "predict", "score") and summary.file_errors == 1
    assert said[0].endswith("no training: the files carry no emotion labels (RAVDESS names or labels.csv); "
                            "at least two emotions are needed to train")
    assert [s for s in said if s.startswith("== ")] == [
        f"== 1/3 extract (rich features): {data} -> {tmp_path / 'output' / 'features'}",
        "== 2/3 predict up to 5 files with the pretrained bundle",
        f"== 3/3 score {data} with the pretrained bundle -> {tmp_path / 'output' / 'scores'}"]
    assert warned == ["1 of 3 files failed:\n  calls/empty.wav: empty file"] * 2
    assert (tmp_path / "output" / "scores" / "report.html").is_file()
    predictions = [s for s in said if s.startswith("calls/")]
    assert [p.split(":")[0] for p in predictions] == ["calls/a.wav", "calls/b.flac"]
    assert all(" both " in p for p in predictions)
    assert not (tmp_path / "output" / "model").exists()


def test_random_split_is_evaluated_on_the_training_runs_held_out_files() -> None:
    # evaluate cannot pick the random split's test files out of the features: the demo shows
    # the metrics the training run computed on them instead of scoring training files.
    import numpy as np

    from ser_batch.demo.run import _evaluate
    from ser_batch.models.metrics import classification_metrics

    said: list[str] = []
    run = DemoRun(data=Path("in"), out=Path("out"), config=Config(), say=said.append, warn=said.append,
                  plan=TrainingPlan("random", (), "random"), model=Path("out/model"),
                  train_metrics={"sklearn": classification_metrics(["a", "b", "b"], np.eye(2)[[0, 1, 0]], ["a", "b"])})
    _evaluate(run)
    assert said[0] == "the random split's held-out files (scored by the training run):"
    assert said[1].splitlines()[1].split() == ["sklearn", "0.667", "0.667", "3"]

"""The end-to-end demo behind ``make demo`` and ``ser-batch demo``.

It runs the same library functions as the CLI commands, as a list of stages:

* on a labelled corpus (RAVDESS names or a ``labels.csv``, at least two emotions):
  extract (``rich``) -> train (speaker split when actors are known and there are enough
  of them, else a random split) -> evaluate on the held-out part -> predict a few
  held-out clips; on the RAVDESS copy in ``../shared`` that is actors 17-20 held out;
* on unlabelled audio: extract -> predict with the pretrained bundle;
* then score: calls made of held-out clips (joined by short gaps of noise) are scored as an
  archive with the trained model, the report is written and the windows over each clip are
  checked against its label; without a trained model the audio folder itself is scored.

Files that cannot be read are named and the demo goes on; a folder without audio gets
a message saying what to do. Stages are plain functions over a shared
:class:`DemoRun`, so a later job (scoring) is one more entry in :func:`plan_stages`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ser_batch import schema
from ser_batch.config import ENSEMBLE, Config, load_config
from ser_batch.data.labels import LABELS_CSV, discover_audio, labels_for, parse_ravdess_name, read_labels_csv
from ser_batch.data.paths import fs_path, stored_path

if TYPE_CHECKING:
    from ser_batch.cluster.engine import Executor
    from ser_batch.pipeline.extract import ExtractSummary

#: A labelled corpus needs this many actors before whole actors are held out.
MIN_ACTORS_FOR_SPEAKER_SPLIT = 3
#: Share of actors held out by the speaker split (the highest-numbered ones: 17-20 of 20).
HELD_OUT_ACTOR_SHARE = 0.2
#: Share of files held out by the random split (the original recipe's 70/30).
RANDOM_TEST_SIZE = 0.3
#: Clips predicted after training; files predicted with the pretrained bundle.
N_PREDICT_TRAINED = 3
N_PREDICT_PRETRAINED = 5


@dataclass(frozen=True)
class TrainingPlan:
    """How the demo trains on a labelled corpus: a ``speaker`` or ``random`` split."""

    split: str
    test_actors: tuple[int, ...] = ()
    description: str = ""


def plan_training(emotions: Sequence[str | None], actors: Sequence[int | None]) -> tuple[TrainingPlan | None, str]:
    """Decide whether and how to train on files with these labels.

    Parameters
    ----------
    emotions : emotion label per file, ``None`` when unknown
    actors : speaker number per file, ``None`` when unknown

    Returns
    -------
    plan : TrainingPlan, or None when the files cannot train a model
    reason : why, in words (for the stage's message)
    """
    rows = [(e, a) for e, a in zip(emotions, actors) if e is not None]
    classes = sorted({e for e, _ in rows})
    if len(classes) < 2:
        what = "no emotion labels" if not classes else f"only one emotion ({classes[0]})"
        return None, (f"the files carry {what} (RAVDESS names or {LABELS_CSV}); at least two "
                      "emotions are needed to train")
    counts = {c: sum(e == c for e, _ in rows) for c in classes}
    if min(counts.values()) < 2:
        thin = ", ".join(c for c, n in counts.items() if n < 2)
        return None, f"too few labelled files to hold any out for testing ({thin}: only one file)"
    speakers = sorted({a for _, a in rows if a is not None})
    if len(speakers) >= MIN_ACTORS_FOR_SPEAKER_SPLIT and all(a is not None for _, a in rows):
        held = tuple(speakers[-max(1, round(HELD_OUT_ACTOR_SHARE * len(speakers))):])
        train_classes = {e for e, a in rows if a not in held}
        test_classes = {e for e, a in rows if a in held}
        if len(train_classes) >= 2 and test_classes <= train_classes:
            who = f"actor{'s' if len(held) > 1 else ''} {','.join(map(str, held))}"
            return (TrainingPlan("speaker", held, f"speaker split, {who} held out"),
                    f"{len(rows)} labelled files of {len(speakers)} actors")
    n_test = math.ceil(RANDOM_TEST_SIZE * len(rows))
    if n_test < len(classes) or len(rows) - n_test < len(classes):
        return None, (f"too few labelled files ({len(rows)}) for a stratified {RANDOM_TEST_SIZE:.0%} test "
                      f"part of {len(classes)} emotions")
    why = ("actors unknown" if not speakers else f"only {len(speakers)} actors" if len(speakers)
           < MIN_ACTORS_FOR_SPEAKER_SPLIT else "held-out actors would miss some emotions in training")
    return (TrainingPlan("random", (), f"random stratified split, {RANDOM_TEST_SIZE:.0%} of files held out "
                         f"({why})"), f"{len(rows)} labelled files")


def choose_examples(paths: Sequence[str], emotions: Sequence[str | None], actors: Sequence[int | None], *,
                    held_out: Sequence[int] = (), count: int) -> list[str]:
    """A few files to predict: from the held-out actors if any, one per actor and emotion first.

    Files are taken in path order, preferring an emotion and an actor not chosen yet, so the
    examples show different voices and labels; with no held-out actors any file may be chosen.
    """
    pool = [(p, e, a) for p, e, a in zip(paths, emotions, actors) if not held_out or a in held_out]
    chosen: list[tuple[str, str | None, int | None]] = []

    def new(value: Any, index: int) -> bool:
        return value is None or all(value != c[index] for c in chosen)

    # Passes from strict to loose: a new emotion and a new voice, then a new emotion, then any file.
    for accept in (lambda e, a: new(e, 1) and new(a, 2), lambda e, a: new(e, 1), lambda e, a: True):
        for path, emotion, actor in pool:
            if len(chosen) < count and new(path, 0) and accept(emotion, actor):
                chosen.append((path, emotion, actor))
    return [c[0] for c in chosen]


#: What the demo writes inside its OUT (each a job's output folder, or the calls it builds).
DEMO_FOLDERS = ("features", "model", "calls", "scores", "scores-normalized")


@dataclass
class DemoRun:
    """What the stages share: where things are, and what earlier stages produced."""

    data: Path
    out: Path
    config: Config
    say: Callable[[str], None]
    warn: Callable[[str], None]
    plan: TrainingPlan | None = None
    plan_reason: str = ""
    #: Where every job's shards run (None: Ray as ``config.ray`` says).
    executor: Executor | None = None
    extract: ExtractSummary | None = None
    usable: dict[str, Any] = field(default_factory=dict)  # paths/emotions/actors of readable files
    model: Path | None = None  # None: the pretrained bundle
    train_metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def features(self) -> Path:
        return self.out / "features"


@dataclass(frozen=True)
class Stage:
    """One step of the demo: a name, a title (given the run) and what it does."""

    name: str
    title: Callable[[DemoRun], str]
    run: Callable[[DemoRun], None]


def _extract(run: DemoRun) -> None:
    from ser_batch.pipeline.extract import run_extract

    summary = run_extract(run.data, run.features, config=run.config, overwrite=True, executor=run.executor)
    run.extract = summary
    run.say(summary.line())
    report = summary.failure_report()
    if report:
        run.warn(report)
    if summary.errors < summary.files:
        from ser_batch.data.parts import read_parts

        table = read_parts(run.features).select([schema.PATH, schema.EMOTION, schema.ACTOR, schema.ERROR])
        rows = [r for r in table.to_pylist() if r[schema.ERROR] is None]
        run.usable = {"paths": [r[schema.PATH] for r in rows], "emotions": [r[schema.EMOTION] for r in rows],
                      "actors": [r[schema.ACTOR] for r in rows]}


def _train(run: DemoRun) -> None:
    from ser_batch.pipeline.train import run_train

    if not run.usable:
        run.say("skipped: no file could be read")
        return
    # Plan again on the files that were read: failed files may have taken a class or an actor.
    plan, reason = plan_training(run.usable["emotions"], run.usable["actors"])
    if plan is None:
        run.plan = None
        run.say(f"skipped: {reason}; the pretrained bundle predicts instead")
        return
    if plan != run.plan:
        run.say(f"(with the files that could be read: {plan.description})")
    run.plan = plan
    # With actors known, also fit the per-speaker normalised models that score --normalize file uses.
    config = run.config.replace(train={"split": plan.split, "test_actors": list(plan.test_actors),
                                       "test_size": RANDOM_TEST_SIZE,
                                       "normalize": "speaker" if plan.split == "speaker" else "none"})
    summary = run_train(run.features, run.out / "model", config=config, overwrite=True, executor=run.executor)
    run.model, run.train_metrics = summary.out, summary.metrics
    for line in summary.lines():
        run.say(line)


def _evaluate(run: DemoRun) -> None:
    from ser_batch.pipeline.evaluate import evaluate_bundle, format_metrics

    if run.model is None or run.plan is None:
        run.say("skipped: no model was trained")
        return
    if run.plan.split == "speaker":
        results = evaluate_bundle(run.model, run.features, actors=run.plan.test_actors)
        run.say(f"{results['rows']} clips of voices never heard in training:")
    else:
        # Which files a random split held out is known only to the training run: show its test metrics.
        results = {"models": run.train_metrics}
        run.say("the random split's held-out files (scored by the training run):")
    run.say(format_metrics(results))


def _predict(run: DemoRun) -> None:
    from ser_batch.inference.scoring import predict_files
    from ser_batch.models import training_overlap
    from ser_batch.models.bundle import load_bundle

    if not run.usable:
        run.say("skipped: no file could be read")
        return
    held = run.plan.test_actors if run.model is not None and run.plan is not None else ()
    count = N_PREDICT_TRAINED if run.model is not None else N_PREDICT_PRETRAINED
    chosen = choose_examples(run.usable["paths"], run.usable["emotions"], run.usable["actors"],
                             held_out=held, count=count)
    truth = dict(zip(run.usable["paths"], run.usable["emotions"]))
    bundle = load_bundle(run.model)
    # Table paths are stored names (bytes that are not UTF-8 as \xHH): open by the real name.
    sources = [run.data / fs_path(p) for p in chosen]
    heard = training_overlap.matches(bundle, sources) or {}
    if heard:
        run.say(training_overlap.overlap_of(heard, total=len(sources)).line())
    for entry in predict_files(sources, bundle=bundle, framework=ENSEMBLE):
        rel = stored_path(Path(entry["path"]).relative_to(run.data).as_posix())
        if entry["error"]:
            run.warn(f"{rel}: {entry['error']}")
            continue
        known = f" (labelled {truth[rel]})" if truth.get(rel) else ""
        known += " (in the bundle's training data)" if entry["path"] in heard else ""
        votes = "  ".join(f"{name} {p['label']} {max(p['probabilities'].values()):.2f}"
                          for name, p in entry["predictions"].items())
        run.say(f"{rel}{known}: {votes}")


#: Calls built from held-out clips for the scoring stage, and clips per call (30: ~40 s of speech,
#: enough for score --normalize file, which needs score.min_normalize_s = 20 s).
N_CALLS, CLIPS_PER_CALL = 4, 30


def _score(run: DemoRun) -> None:
    """Score calls made of held-out clips (or, without a trained model, the audio folder
    itself), write the report, and check the windows against the clips' labels."""
    import pandas as pd

    from ser_batch.demo.calls import build_call, clip_predictions, write_truth
    from ser_batch.models.bundle import load_bundle
    from ser_batch.pipeline.score import run_score
    from ser_batch.reports.failures import counted
    from ser_batch.reports.score_page import write_score_report

    if not run.usable:
        run.say("skipped: no file could be read")
        return
    truth = []
    target = run.data
    if run.model is not None and run.plan is not None:
        held = set(run.plan.test_actors)
        pool = [(p, e, a) for p, e, a in zip(run.usable["paths"], run.usable["emotions"], run.usable["actors"])
                if e is not None and (not held or a in held)]
        target = run.out / "calls"
        by_actor: dict[Any, list[tuple[Path, str]]] = {}
        for path, emotion, actor in pool:
            by_actor.setdefault(actor, []).append((run.data / fs_path(path), emotion))
        for number, (actor, clips) in enumerate(sorted(by_actor.items(), key=lambda kv: str(kv[0]))[:N_CALLS]):
            name = f"call_{number + 1:02d}" + (f"_actor{actor:02d}" if actor is not None else "") + ".flac"
            truth += build_call(clips[:CLIPS_PER_CALL], target / name, seed=number)
        write_truth(truth, target / "truth.csv")
        calls = len({row.call for row in truth})
        which = "held-out clips" if held else "clips"
        run.say(f"{len(truth)} {which} joined into {counted(calls, 'call')} with noise between them -> {target}")
    out = run.out / "scores"
    summary = run_score(target, out, config=run.config, model_dir=run.model, rescore=True, executor=run.executor)
    for note in summary.notes():
        run.say(note)
    run.say(summary.line())
    report = summary.failure_report()
    if report:
        run.warn(report)
    run.say(f"report: {write_score_report(out, truth=target / 'truth.csv' if truth else None)}")
    if not truth:
        return
    bundle = load_bundle(run.model)

    def right_in(folder: Path) -> int:
        predicted = clip_predictions(pd.read_parquet(folder / schema.SEGMENTS_DIR), truth, bundle.classes)
        return sum(label == row.emotion for row, label in predicted)

    right = right_in(out)
    run.say(f"inside the calls, {right} of {len(truth)} clips ({right / len(truth):.0%}) get their emotion "
            "from the windows over them")
    if bundle.has_normalized:
        # Each call is one voice: score it again z-scored by its own speech (score --normalize file).
        normalized = run.out / "scores-normalized"
        config = run.config.replace(score={"normalize": "file"})
        summary = run_score(target, normalized, config=config, model_dir=run.model, rescore=True,
                            executor=run.executor)
        right = right_in(normalized)
        run.say(f"with --normalize file ({normalized}): {right} of {len(truth)} clips ({right / len(truth):.0%})")
        for note in summary.notes():  # how many calls had enough speech to be normalised
            run.say(note)


def _title_score(run: DemoRun) -> str:
    if run.plan is None:
        return f"score {run.data} with the pretrained bundle -> {run.out / 'scores'}"
    if run.plan.split == "speaker":
        return f"score calls made of held-out clips -> {run.out / 'scores'} (and report.html)"
    return (f"score calls made of clips -> {run.out / 'scores'} (and report.html; a random split may have "
            "trained on them)")


def _title_train(run: DemoRun) -> str:
    return f"train: {run.plan.description} -> {run.out / 'model'}" if run.plan else "train"


def _title_evaluate(run: DemoRun) -> str:
    if run.plan is not None and run.plan.test_actors:
        return f"evaluate on the held-out actors ({','.join(map(str, run.plan.test_actors))})"
    return "evaluate on the held-out files"


def _title_predict(run: DemoRun) -> str:
    if run.plan is None:
        return f"predict up to {N_PREDICT_PRETRAINED} files with the pretrained bundle"
    if run.plan.split == "speaker":
        return f"predict {N_PREDICT_TRAINED} held-out clips with {run.out / 'model'}"
    return f"predict {N_PREDICT_TRAINED} clips with {run.out / 'model'} (a random split may have trained on them)"


def plan_stages(run: DemoRun) -> list[Stage]:
    """The stages for this run: with training when the labels allow it (``run.plan``)."""
    stages = [Stage("extract", lambda r: f"extract ({r.config.features.recipe} features): {r.data} -> {r.features}",
                    _extract)]
    if run.plan is not None:
        stages += [
            Stage("train", _title_train, _train),
            Stage("evaluate", _title_evaluate, _evaluate),
        ]
    stages.append(Stage("predict", _title_predict, _predict))
    stages.append(Stage("score", _title_score, _score))
    return stages


@dataclass(frozen=True)
class DemoSummary:
    """What the demo did: the audio folder (None when it found no audio) and the stages run."""

    data: Path | None
    stages: tuple[str, ...]
    file_errors: int = 0


def run_demo(*, corpus: Path | None, input_dir: Path, out: Path, config: Config | None = None,
             executor: Executor | None = None, say: Callable[[str], None] = print,
             warn: Callable[[str], None] = print) -> DemoSummary:
    """Run the demo on ``corpus`` if it is a folder, else on ``input_dir``.

    Parameters
    ----------
    corpus : the RAVDESS copy (``../shared/data/ravdess/Audio_Speech_Actors_01-20_16k``), optional
    input_dir : the user's audio folder, used when ``corpus`` is absent
    out : results folder (``features/`` and ``model/`` inside are replaced)
    config : settings; the feature recipe is always ``rich``
    executor : where every job's shards run (default: Ray as ``config.ray`` says)
    say, warn : where progress lines and warnings (failed files) go

    Raises
    ------
    SerBatchError
        When a stage fails for another reason than unreadable files (e.g. no disk space).
    """
    from ser_batch.cluster.engine import Executor
    from ser_batch.data.parts import refuse_links

    refuse_links(out, also=DEMO_FOLDERS)  # the jobs below write only inside OUT, never through a link
    config = (config or load_config()).replace(features={"recipe": "rich"})
    data = Path(corpus) if corpus is not None and Path(corpus).is_dir() else Path(input_dir)
    paths = discover_audio(data, extensions=config.audio.extensions) if data.is_dir() else []
    if not paths:
        where = f"{input_dir}/" if data == Path(input_dir) else str(data)
        hint = f", or place the RAVDESS copy at {corpus}" if corpus is not None else ""
        say(f"No audio found in {where}: put audio files ({' '.join(config.audio.extensions)}) there{hint}, "
            "then run the demo again.")
        return DemoSummary(None, ())
    labels = None
    if (data / LABELS_CSV).is_file():
        read = read_labels_csv(data / LABELS_CSV, root=data, files=[stored_path(p) for p in paths])
        read.check(data)
        for note in read.notes({stored_path(p): n for p in paths if (n := parse_ravdess_name(p)) is not None}):
            warn(f"warning: {note}")
        labels = read.labels
    found = [labels_for(stored_path(p), labels=labels) for p in paths]
    executor = executor or Executor.of(config.ray)
    run = DemoRun(data=data, out=Path(out), config=config, say=say, warn=warn, executor=executor)
    run.plan, run.plan_reason = plan_training([f.emotion for f in found], [f.actor for f in found])
    stages = plan_stages(run)
    if run.plan is None:
        say(f"{data}: {len(paths)} audio files; no training: {run.plan_reason}")
    # A first line at once: Ray takes seconds to start. Then each stage shows its progress on
    # stderr (a plain line every few seconds, or one per model fitted, when it is not a terminal).
    starting = "running in this process" if executor.in_process else "starting Ray..."
    say(f"{data}: {len(paths)} audio files, {len(stages)} stages; {starting}")
    # One Ray runtime for every stage: each job would otherwise start (and pay for) its own.
    with executor.start():
        for number, stage in enumerate(stages, start=1):
            say(f"== {number}/{len(stages)} {stage.title(run)}")
            stage.run(run)
    say(f"Done: results in {out}/")
    errors = run.extract.errors if run.extract is not None else 0
    return DemoSummary(data, tuple(s.name for s in stages), errors)

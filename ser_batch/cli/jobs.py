"""The job commands: ``extract``, ``train``, ``score`` (Ray jobs) and ``demo`` (all of them in a row).

Each registers on the root group (:mod:`ser_batch.cli.root`), parses its options and calls one
library function; heavy imports happen inside the command so that ``--help`` is instant.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ser_batch.augmentations import AUGMENT_FORMS
from ser_batch.cli.root import (
    EXIT_FILE_ERRORS,
    RuntimeOptions,
    config_options,
    handle_errors,
    load_cli_config,
    main,
    parse_test_actors,
    runtime_options,
)
from ser_batch.config import (
    ABSENT_CLASSES,
    CHANNELS,
    NARROWBAND,
    RECIPE_NAMES,
    SCORE_FRAMEWORKS,
    SCORE_NORMALIZE,
    SPLITS,
    TRAIN_NORMALIZE,
    AudioConfig,
)
from ser_batch.reports.failures import counted


@main.command(epilog="Audio file endings (audio.extensions): " + " ".join(AudioConfig().extensions))
@click.argument("input_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder for the Parquet parts  [default: extract.out of the config, "
                   "output/features]")
@click.option("--recipe", type=click.Choice(RECIPE_NAMES), default=None,
              help="Feature recipe: fast (the 193 classic values from one shared STFT), classic "
                   "(the reference librosa calls) or rich (805 pooled statistics and pitch; "
                   "best accuracy)  [default: features.recipe of the config, fast]")
@click.option("--labels", "labels_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV with path,label[,actor][,gender] for files whose names carry no "
                   "RAVDESS labels  [default: INPUT_DIR/labels.csv if present]")
@click.option("--corpus", default=None, metavar="NAME",
              help="Value of the `corpus` column for files that labels.csv gives no corpus (e.g. ravdess, "
                   "emovo)  [default: extract.corpus, else the name of INPUT_DIR]")
@click.option("--augment", default=None, metavar="NAME[,NAME...]",
              help="Also write one row per file and augmentation, computed from the same decoded "
                   "audio (column `augment`; the file's own row has it null). Names: "
                   + ", ".join(AUGMENT_FORMS) + " (telephone: 8 kHz, 300-3400 Hz band, 16-bit PCM or "
                   "G.711 mu-law/A-law, back to audio.sample_rate; noise: white (pink: 1/f) noise at "
                   "that SNR below the speech level; tempo: speed and pitch times the factor, "
                   "0.8-1.25), e.g. --augment telephone-pcm,telephone-ulaw,noise-20db. Seeded by "
                   "file and name: a rerun gives the same rows  [default: extract.augment, none]")
@click.option("--overwrite", is_flag=True, help="Replace results already in --out.")
@click.option("--resume", is_flag=True,
              help="Keep parts of an interrupted run with the same files and settings; do the rest.")
@click.option("--fail-on-error", is_flag=True,
              help=f"Exit with code {EXIT_FILE_ERRORS} if any file could not be processed.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@runtime_options
@config_options
@handle_errors
def extract(input_dir: Path, out: Path | None, recipe: str | None, labels_csv: Path | None,
            corpus: str | None, augment: str | None, overwrite: bool, resume: bool, fail_on_error: bool,
            no_progress: bool, config_path: Path | None, overrides: tuple[str, ...], runtime: RuntimeOptions) -> None:
    """Extract emotion features of every audio file below INPUT_DIR into Parquet.

    Files are found recursively (following symlinked folders; audio.extensions, listed
    below), decoded to mono at audio.sample_rate, and processed in parallel Ray tasks,
    one Parquet part per shard. A file that cannot be read becomes a row with its
    `error` set; the job goes on, and the first few failed files are named on stderr.

    Example: ser-batch extract ../shared/data/ravdess/Audio_Speech_Actors_01-20_16k
    --out output/features
    """
    from ser_batch.pipeline.extract import run_extract

    if overwrite and resume:
        raise click.UsageError("--overwrite and --resume exclude each other")
    names = None if augment is None else [n.strip() for n in augment.split(",") if n.strip()]
    config = load_cli_config(config_path, overrides, runtime, features={"recipe": recipe},
                             extract={"augment": names, "corpus": corpus})
    summary = run_extract(input_dir, out or Path(config.extract.out), config=config, overwrite=overwrite,
                          resume=resume, labels_csv=labels_csv, executor=runtime.executor(config),
                          progress=not no_progress)
    for note in summary.notes:
        click.echo(f"warning: {note}", err=True)
    click.echo(summary.line())
    report = summary.failure_report()
    if report:
        click.echo(report, err=True)
    if fail_on_error and summary.errors:
        click.echo(f"error: {counted(summary.errors, 'file')} failed (--fail-on-error)", err=True)
        sys.exit(EXIT_FILE_ERRORS)


@main.command()
@click.argument("features_dirs", metavar="FEATURES_DIR...", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("output/model"),
              help="Folder of the model bundle to write.")
@click.option("--models", default=None, metavar="LIST",
              help="Comma-separated models to fit: keras, sklearn, cnn (frame-sequence network; needs rich features with frames)  [default: train.models: keras,sklearn]")
@click.option("--split", type=click.Choice(SPLITS), default=None,
              help="speaker: hold out whole actors (honest); random: stratified rows (the original "
                   "recipe, optimistic); corpus: hold out the whole --test-corpus; none: train on "
                   "everything, no test metrics  [default: train.split, speaker]")
@click.option("--test-corpus", default=None, metavar="NAME",
              help="Corpus held out by --split corpus (its `corpus` column), e.g. emovo  [default: train.test_corpus]")
@click.option("--absent-classes", type=click.Choice(ABSENT_CLASSES), default=None,
              help="Classes a corpus lacks (EMOVO has no calm): mask = the Keras ANN's loss leaves them out of "
                   "that corpus's rows, so its clips never teach 'not calm'; none = every class for every row. "
                   "The scikit-learn MLP always sees every class  [default: train.absent_classes, mask]")
@click.option("--test-size", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Fraction of files held out by --split random (with their augmented copies)  [default: 0.3]")
@click.option("--test-actors", default=None, metavar="IDS|FRACTION",
              help="Actors held out by --split speaker: 17,18,19,20 or a fraction such as 0.2 "
                   "[default: 17,18,19,20]")
@click.option("--seed", type=int, default=None, help="Random seed of split and models  [default: 42]")
@click.option("--normalize", type=click.Choice(TRAIN_NORMALIZE), default=None,
              help="speaker: besides the global models, fit models on window features z-scored by each "
                   "actor's own statistics (needs the actor column), stored in the bundle as its "
                   "'speaker' set(s) for `score --normalize file` and `evaluate --normalize speaker`  "
                   "[default: train.normalize, none]")
@click.option("--narrowband", type=click.Choice(NARROWBAND), default=None,
              help="Telephone-band rows (8 kHz inputs, telephone copies): separate = their own 'narrow' "
                   "set(s), chosen for inputs at 8 kHz or below; mixed = trained into the global models  "
                   "[default: train.narrowband, separate]")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle at --out.")
@runtime_options
@config_options
@handle_errors
def train(features_dirs: tuple[Path, ...], out: Path, models: str | None, split: str | None,
          test_corpus: str | None, absent_classes: str | None, test_size: float | None,
          test_actors: str | None, seed: int | None, normalize: str | None, narrowband: str | None,
          overwrite: bool, config_path: Path | None, overrides: tuple[str, ...], runtime: RuntimeOptions) -> None:
    """Fit the Keras ANN and the scikit-learn MLP on `extract` outputs, in parallel.

    Several FEATURES_DIRs (one per corpus, extracted with the same recipe and settings) are
    trained on together, each row keeping its `corpus`.

    Writes a model bundle (models, manifest with checksums, metrics, confusion matrices,
    report.html) to --out and prints test accuracy and macro-F1 of each model and of
    their averaged ensemble ("both").

    Example: ser-batch train output/features --out output/model --split speaker
    """
    from ser_batch.pipeline.train import run_train

    train_section: dict[str, Any] = {"split": split, "test_corpus": test_corpus, "absent_classes": absent_classes,
                                     "test_size": test_size, "seed": seed, "normalize": normalize,
                                     "narrowband": narrowband, **parse_test_actors(test_actors)}
    if models is not None:
        train_section["models"] = [m.strip() for m in models.split(",") if m.strip()]
    config = load_cli_config(config_path, overrides, runtime, train=train_section)
    summary = run_train(list(features_dirs), out, config=config, overwrite=overwrite,
                        executor=runtime.executor(config))
    for line in summary.lines():
        click.echo(line)


@main.command()
@click.option("--corpus", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Labelled corpus used when it exists (`make demo` passes the RAVDESS copy in ../shared).")
@click.option("--input", "input_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("input"),
              help="Audio folder used when --corpus is not given or absent.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("output"),
              help="Results folder; its features/ and model/ are replaced.")
@runtime_options
@config_options
@handle_errors
def demo(corpus: Path | None, input_dir: Path, out: Path, config_path: Path | None, overrides: tuple[str, ...],
         runtime: RuntimeOptions) -> None:
    """Run the whole pipeline on a corpus or on your audio: what `make demo` runs.

    On labelled audio (RAVDESS names or a labels.csv, two emotions or more): extract rich
    features, train both models with held-out actors (or files), evaluate them on the
    held-out part and predict a few held-out clips. On unlabelled audio: extract, then
    predict with the pretrained bundle. Unreadable files are named on stderr and the demo
    goes on (exit 0); a folder without audio gets a message saying what to do.

    Example: ser-batch demo --corpus ../shared/data/ravdess/Audio_Speech_Actors_01-20_16k
    """
    from ser_batch.demo.run import run_demo

    config = load_cli_config(config_path, overrides, runtime)
    run_demo(corpus=corpus, input_dir=input_dir, out=out, config=config, executor=runtime.executor(config),
             say=click.echo, warn=lambda text: click.echo(text, err=True))


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder (segments/, files/, _run.json)  [default: score.out of the config, output/scores]")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=None,
              help="Model bundle folder  [default: the pretrained bundle shipped with ser-batch]")
@click.option("--framework", type=click.Choice(SCORE_FRAMEWORKS), default=None,
              help="Which model scores: keras, sklearn, cnn or both (the average of the bundle's models)  "
                   "[default: score.framework, both]")
@click.option("--channels", type=click.Choice(CHANNELS), default=None,
              help="mix: average the channels into one stream (channel is null); split: score each "
                   "channel as its own stream, e.g. agent and customer  [default: score.channels, mix]")
@click.option("--normalize", type=click.Choice(SCORE_NORMALIZE), default=None,
              help="file: z-score each stream (file, or channel with --channels split) by the statistics of "
                   "its own speech windows and score it with the bundle's normalised models. For one voice per "
                   "stream with at least score.min_normalize_s (20 s) of speech; a stream with less falls back "
                   "to the global models (files.normalized says which). Not for mono recordings that mix "
                   "speakers. archive: a first pass takes the statistics of the speech windows of the whole "
                   "input (kept in OUT/_score.json and reused by later runs into OUT), the second scores every "
                   "stream z-scored by them: for archives of short clips from many voices  "
                   "[default: score.normalize, none]")
@click.option("--classes", default=None, metavar="LIST",
              help="Score over these of the bundle's classes only, e.g. angry,happy,neutral,sad: probabilities "
                   "renormalised over them, p_<class> columns only for them  [default: score.classes, all]")
@click.option("--rescore", is_flag=True,
              help="Score everything again, replacing earlier results in --out (also needed to reuse an "
                   "--out made with another bundle or other settings).")
@click.option("--retry-errors", is_flag=True,
              help="Score again the files whose rows in --out are error rows (unreadable then, a worker that "
                   "died, settings that failed), replacing those rows; without it a re-run skips them.")
@click.option("--prune", is_flag=True,
              help="Remove the rows of files that are gone (no longer in INPUT, nothing at their path).")
@click.option("--repair", is_flag=True,
              help="Repair damaged parts of --out (a part that cannot be read or is missing, rows of a file in two "
                   "parts) also where this INPUT does not list all their files: delete them and score again the "
                   "files INPUT lists, removing the others' rows. Without it only damage whose files INPUT all lists "
                   "is repaired (at once, with a note); the rest is refused with one line.")
@click.option("--fail-on-error", is_flag=True,
              help=f"Exit with code {EXIT_FILE_ERRORS} if any row of --out is an error row after the run "
                   "(this run's or an earlier one's), as `extract --resume --fail-on-error` does.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@runtime_options
@config_options
@handle_errors
def score(input_path: Path, out: Path | None, model_dir: Path | None, framework: str | None, channels: str | None,
          normalize: str | None, classes: str | None, rescore: bool, retry_errors: bool, prune: bool,
          repair: bool, fail_on_error: bool, no_progress: bool, config_path: Path | None, overrides: tuple[str, ...],
          runtime: RuntimeOptions) -> None:
    """Score every recording of INPUT: an emotion per window and per file, as Parquet.

    INPUT is a folder (searched recursively, symlinked folders followed) or a text file
    listing audio paths, one per line. Long files are streamed in blocks and cut into
    chunks (score.chunk_s) scored in parallel; each 1.5 s window gets class probabilities and a speech
    ratio (windows without speech get no label), each file the mean over its speech
    windows. Runs are incremental: files already scored (same path, size and mtime) are
    skipped, so the same command every night scores only what is new. A file that cannot
    be read becomes a row with its `error`; the job goes on, and later runs skip it unless
    --retry-errors. Rows of files deleted since are counted (--prune removes them). Inputs at 8 kHz or below are
    scored by the bundle's narrow-band models when it has them (files.model_set says which).

    Example: ser-batch score /archive/calls --out output/scores --channels split --normalize file
    """
    from ser_batch.pipeline.score import run_score

    config = load_cli_config(config_path, overrides, runtime,
                             score={"framework": framework, "channels": channels, "normalize": normalize,
                                    "classes": classes})
    summary = run_score(input_path, out or Path(config.score.out), config=config, model_dir=model_dir,
                        rescore=rescore, retry_errors=retry_errors, prune=prune, repair=repair,
                        executor=runtime.executor(config),
                        progress=not no_progress)
    report = summary.failure_report()
    if report:
        click.echo(report, err=True)
    for note in summary.notes():  # before the summary, which stays the last line
        click.echo(note)
    click.echo(summary.line())
    failed = max(summary.errors_in_folder, len(summary.errors))
    if fail_on_error and failed:
        click.echo(f"error: {counted(failed, 'file')} in {summary.out} could not be scored "
                   f"({len(summary.errors)} in this run; --fail-on-error)", err=True)
        sys.exit(EXIT_FILE_ERRORS)

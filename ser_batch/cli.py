"""The ``ser-batch`` command line: parses options and calls one library function per verb.

Heavy imports (Ray, librosa, TensorFlow) happen inside the commands so that ``--help``
is instant. Every :class:`~ser_batch.errors.SerBatchError` becomes a one-line message on
stderr and exit code 1; bad usage exits with 2 (click's convention).
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import click

from ser_batch import __version__
from ser_batch.config import AUGMENT_FORMS, AudioConfig
from ser_batch.errors import SerBatchError
from ser_batch.failures import counted

#: Exit code when the job ran but some files failed and ``--fail-on-error`` was given.
EXIT_FILE_ERRORS = 3
_ADDRESS_HELP = ("Ray cluster to run on instead of an embedded local Ray: its GCS address HOST:PORT (or auto), "
                 "as printed by `ser-batch cluster start` or `ray start`; not the dashboard's http:// address, "
                 "which `ser-batch submit --jobs-address` takes. INPUT and --out must then be on storage every "
                 "node shares.")


def _handle_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except SerBatchError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except OSError as exc:  # disk full, permissions, unreadable folders: not a bug
            click.echo(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), err=True)
            sys.exit(1)

    return wrapper


def _config_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option(
        "--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
        help="Override one config value (TOML syntax for the value); repeatable, "
             "e.g. --set audio.sample_rate=8000 --set extract.shard_size=16.",
    )(command)
    command = click.option(
        "--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="TOML config file (see configs/); defaults are used for anything it leaves out.",
    )(command)
    return command


def _load_config(config_path: Path | None, overrides: tuple[str, ...], **extra: dict[str, Any]) -> Any:
    from ser_batch.config import load_config

    config = load_config(config_path, overrides=overrides)
    extra = {section: {k: v for k, v in values.items() if v is not None} for section, values in extra.items()}
    return config.replace(**{s: v for s, v in extra.items() if v})


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="ser-batch")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Speech emotion recognition over large audio archives, as Ray batch jobs.

    Typical flow: `extract` features from an audio folder into Parquet, `train` models
    on them, then `predict` or score new audio. Jobs run on an embedded local Ray unless
    --address (or RAY_ADDRESS) names a cluster.
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@main.command(epilog="Audio file endings (audio.extensions): " + " ".join(AudioConfig().extensions))
@click.argument("input_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder for the Parquet parts  [default: extract.out of the config, "
                   "output/features]")
@click.option("--recipe", type=click.Choice(["fast", "classic", "rich"]), default=None,
              help="Feature recipe: fast (the 193 classic values from one shared STFT), classic "
                   "(the reference librosa calls) or rich (805 pooled statistics and pitch; "
                   "best accuracy)  [default: features.recipe of the config, fast]")
@click.option("--labels", "labels_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV with path,label[,actor][,gender] for files whose names carry no "
                   "RAVDESS labels  [default: INPUT_DIR/labels.csv if present]")
@click.option("--augment", default=None, metavar="NAME[,NAME...]",
              help="Also write one row per file and augmentation, computed from the same decoded "
                   "audio (column `augment`; the file's own row has it null). Names: "
                   + ", ".join(AUGMENT_FORMS) + " (telephone: 8 kHz, 300-3400 Hz band, 16-bit PCM or "
                   "G.711 mu-law/A-law, back to audio.sample_rate; noise: white (pink: 1/f) noise at "
                   "that SNR below the speech level; tempo: speed and pitch times the factor, "
                   "0.8-1.25), e.g. --augment telephone-pcm,telephone-ulaw,noise-20db. Seeded by "
                   "file and name: a rerun gives the same rows  [default: extract.augment, none]")
@click.option("--num-cpus", type=click.IntRange(min=1), default=None,
              help="CPUs of the embedded local Ray  [default: all]")
@click.option("--address", default=None, envvar="RAY_ADDRESS", show_envvar=True,
              metavar="HOST:PORT", help=_ADDRESS_HELP)
@click.option("--overwrite", is_flag=True, help="Replace results already in --out.")
@click.option("--resume", is_flag=True,
              help="Keep parts of an interrupted run with the same files and settings; do the rest.")
@click.option("--fail-on-error", is_flag=True,
              help=f"Exit with code {EXIT_FILE_ERRORS} if any file could not be processed.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@_config_options
@_handle_errors
def extract(input_dir: Path, out: Path | None, recipe: str | None, labels_csv: Path | None,
            augment: str | None, num_cpus: int | None, address: str | None, overwrite: bool, resume: bool,
            fail_on_error: bool, no_progress: bool, config_path: Path | None,
            overrides: tuple[str, ...]) -> None:
    """Extract emotion features of every audio file below INPUT_DIR into Parquet.

    Files are found recursively (following symlinked folders; audio.extensions, listed
    below), decoded to mono at audio.sample_rate, and processed in parallel Ray tasks,
    one Parquet part per shard. A file that cannot be read becomes a row with its
    `error` set; the job goes on, and the first few failed files are named on stderr.

    Example: ser-batch extract ../shared/data/ravdess/Audio_Speech_Actors_01-20_16k
    --out output/features
    """
    from ser_batch.extract import run_extract

    if overwrite and resume:
        raise click.UsageError("--overwrite and --resume exclude each other")
    names = None if augment is None else [n.strip() for n in augment.split(",") if n.strip()]
    config = _load_config(config_path, overrides, features={"recipe": recipe},
                          ray={"num_cpus": num_cpus}, extract={"augment": names})
    summary = run_extract(input_dir, out or Path(config.extract.out), config=config,
                          overwrite=overwrite, resume=resume, labels_csv=labels_csv,
                          address=address or config.ray.address or None, progress=not no_progress)
    click.echo(summary.line())
    report = summary.failure_report()
    if report:
        click.echo(report, err=True)
    if fail_on_error and summary.errors:
        click.echo(f"error: {counted(summary.errors, 'file')} failed (--fail-on-error)", err=True)
        sys.exit(EXIT_FILE_ERRORS)


def _parse_test_actors(text: str | None) -> dict[str, Any]:
    """``17,18,19,20`` -> explicit actors; ``0.2`` -> that fraction of actors at random."""
    if text is None:
        return {}
    text = text.strip()
    try:
        if "," not in text and "." in text:
            return {"test_actors": [], "test_actor_fraction": float(text)}
        return {"test_actors": [int(a) for a in text.split(",") if a.strip()]}
    except ValueError:
        raise click.BadParameter("use actor numbers like 17,18,19,20 or a fraction like 0.2",
                                 param_hint="--test-actors") from None


@main.command()
@click.argument("features_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("output/model"),
              help="Folder of the model bundle to write.")
@click.option("--models", default=None, metavar="LIST",
              help="Comma-separated models to fit: keras, sklearn  [default: train.models, both]")
@click.option("--split", type=click.Choice(["speaker", "random", "none"]), default=None,
              help="speaker: hold out whole actors (honest); random: stratified rows (the original "
                   "recipe, optimistic); none: train on everything, no test metrics  "
                   "[default: train.split, speaker]")
@click.option("--test-size", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Fraction of files held out by --split random (with their augmented copies)  [default: 0.3]")
@click.option("--test-actors", default=None, metavar="IDS|FRACTION",
              help="Actors held out by --split speaker: 17,18,19,20 or a fraction such as 0.2 "
                   "[default: 17,18,19,20]")
@click.option("--seed", type=int, default=None, help="Random seed of split and models  [default: 42]")
@click.option("--normalize", type=click.Choice(["none", "speaker"]), default=None,
              help="speaker: besides the global models, fit models on window features z-scored by each "
                   "actor's own statistics (needs the actor column), stored in the bundle as its "
                   "'speaker' set(s) for `score --normalize file` and `evaluate --normalize speaker`  "
                   "[default: train.normalize, none]")
@click.option("--narrowband", type=click.Choice(["separate", "mixed"]), default=None,
              help="Telephone-band rows (8 kHz inputs, telephone copies): separate = their own 'narrow' "
                   "set(s), chosen for inputs at 8 kHz or below; mixed = trained into the global models  "
                   "[default: train.narrowband, separate]")
@click.option("--num-cpus", type=click.IntRange(min=1), default=None,
              help="CPUs of the embedded local Ray  [default: all]")
@click.option("--address", default=None, envvar="RAY_ADDRESS", show_envvar=True,
              metavar="HOST:PORT", help=_ADDRESS_HELP)
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle at --out.")
@_config_options
@_handle_errors
def train(features_dir: Path, out: Path, models: str | None, split: str | None, test_size: float | None,
          test_actors: str | None, seed: int | None, normalize: str | None, narrowband: str | None,
          num_cpus: int | None, address: str | None,
          overwrite: bool, config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Fit the Keras ANN and the scikit-learn MLP on an `extract` output, in parallel.

    Writes a model bundle (models, manifest with checksums, metrics, confusion matrices,
    report.html) to --out and prints test accuracy and macro-F1 of each model and of
    their averaged ensemble ("both").

    Example: ser-batch train output/features --out output/model --split speaker
    """
    from ser_batch.train import run_train

    train_section: dict[str, Any] = {"split": split, "test_size": test_size, "seed": seed, "normalize": normalize,
                                     "narrowband": narrowband, **_parse_test_actors(test_actors)}
    if models is not None:
        train_section["models"] = [m.strip() for m in models.split(",") if m.strip()]
    config = _load_config(config_path, overrides, train=train_section, ray={"num_cpus": num_cpus})
    from ser_batch.launch import absolute

    summary = run_train(absolute(features_dir), absolute(out), config=config, overwrite=overwrite,
                        address=address or config.ray.address or None)
    for line in summary.lines():
        click.echo(line)


_TRUST_PICKLE_HELP = ("Allow loading the scikit-learn pickle of an old (format-1) bundle. Unpickling "
                      "runs any code the file holds: only for bundles from a source you trust.")


@main.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("features_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--actors", default=None, metavar="IDS",
              help="Only rows of these actors, e.g. 17,18,19,20 (still only rows the bundle did not train on).")
@click.option("--all", "include_training", is_flag=True,
              help="Also score rows the models were trained on (the figures then flatter them; "
                   "the output and JSON say so).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the metrics as JSON to this file.")
@click.option("--normalize", type=click.Choice(["none", "speaker"]), default="none",
              help="speaker: z-score each actor's windows by that actor's own statistics and score them with "
                   "the bundle's normalised models (a bundle trained with --normalize speaker; needs the "
                   "actor column).")
@click.option("--trust-pickle", is_flag=True, help=_TRUST_PICKLE_HELP)
@_handle_errors
def evaluate(model_dir: Path, features_dir: Path, actors: str | None, include_training: bool, out: Path | None,
             normalize: str, trust_pickle: bool) -> None:
    """Score a model bundle on a labelled feature set (e.g. held-out actors, another corpus).

    Only rows the bundle did not train on are scored (it lists its training files), and
    the output says which rows were used and why. Prints accuracy, macro-F1 and per-class
    F1 of each model and of their ensemble; --out writes everything, including per-class
    precision/recall, confusion matrices and the rows used, as JSON.
    """
    import json

    from ser_batch.evaluate import evaluate_bundle, format_metrics

    actor_ids = _parse_test_actors(actors).get("test_actors") if actors else None
    if actors and not actor_ids:
        raise click.BadParameter("use actor numbers like 17,18,19,20", param_hint="--actors")
    results = evaluate_bundle(model_dir, features_dir, actors=actor_ids, include_training=include_training,
                              trust_pickle=trust_pickle, normalize=normalize)
    click.echo(f"rows: {results['selection']}")
    click.echo("model sets: " + ", ".join(f"{band}band rows -> {name}"
                                          for band, name in results["model_sets"].items()))
    other = results["rows_left_out"] - results["training_rows_left_out"]
    click.echo(f"{results['rows']} rows of {len(results['actors'])} actors "
               f"({results['error_rows']} error rows dropped, {other} other rows left out)")
    for warning in results["warnings"]:
        click.echo(f"WARNING: {warning}")
    click.echo(format_metrics(results))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        click.echo(f"metrics written to {out}")


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Model bundle folder  [default: the pretrained bundle shipped with ser-batch]")
@click.option("--framework", type=click.Choice(["keras", "sklearn", "both"]), default="both",
              help="Which model answers; both = each model plus their averaged ensemble.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per file in a list).")
@click.option("--trust-pickle", is_flag=True, help=_TRUST_PICKLE_HELP)
@_handle_errors
def predict(files: tuple[Path, ...], model_dir: Path | None, framework: str, as_json: bool,
            trust_pickle: bool) -> None:
    """Predict the emotion of each audio FILE, with class probabilities.

    A file's emotion is the mean over its 1.5 s windows with speech, exactly as `score`
    summarises files, with the settings stored in the model bundle. Exits with 1 if any
    file could not be read. For folders and archives, use `score`.

    Example: ser-batch predict call.wav --framework keras
    """
    import json

    folders = [f for f in files if f.is_dir()]
    if folders:
        raise click.BadParameter(f"{folders[0]} is a folder; predict takes audio files. To score every file of a "
                                 f"folder, use: ser-batch score {folders[0]} --out output/scores",
                                 param_hint="FILES")

    from ser_batch.bundle import load_bundle
    from ser_batch.scoring import predict_files

    bundle = load_bundle(model_dir, trust_pickle=trust_pickle)
    results = predict_files(list(files), bundle=bundle, framework=framework)
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        for entry in results:
            if entry["error"]:
                click.echo(f"error: {entry['path']}: {entry['error']}", err=True)
                continue
            for name, pred in entry["predictions"].items():
                top = sorted(pred["probabilities"].items(), key=lambda kv: -kv[1])[:3]
                click.echo(f"{entry['path']}  {name:7s} {pred['label']:9s} "
                           + "  ".join(f"{c} {p:.2f}" for c, p in top))
    if any(entry["error"] for entry in results):
        sys.exit(1)


@main.command()
@click.option("--corpus", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Labelled corpus used when it exists (`make demo` passes the RAVDESS copy in ../shared).")
@click.option("--input", "input_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("input"),
              help="Audio folder used when --corpus is not given or absent.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("output"),
              help="Results folder; its features/ and model/ are replaced.")
@click.option("--num-cpus", type=click.IntRange(min=1), default=None,
              help="CPUs of the embedded local Ray  [default: all]")
@click.option("--address", default=None, envvar="RAY_ADDRESS", show_envvar=True,
              metavar="HOST:PORT", help=_ADDRESS_HELP)
@_config_options
@_handle_errors
def demo(corpus: Path | None, input_dir: Path, out: Path, num_cpus: int | None, address: str | None,
         config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Run the whole pipeline on a corpus or on your audio: what `make demo` runs.

    On labelled audio (RAVDESS names or a labels.csv, two emotions or more): extract rich
    features, train both models with held-out actors (or files), evaluate them on the
    held-out part and predict a few held-out clips. On unlabelled audio: extract, then
    predict with the pretrained bundle. Unreadable files are named on stderr and the demo
    goes on (exit 0); a folder without audio gets a message saying what to do.

    Example: ser-batch demo --corpus ../shared/data/ravdess/Audio_Speech_Actors_01-20_16k
    """
    from ser_batch.demo import run_demo

    config = _load_config(config_path, overrides, ray={"num_cpus": num_cpus})
    run_demo(corpus=corpus, input_dir=input_dir, out=out, config=config,
             address=address or config.ray.address or None,
             say=click.echo, warn=lambda text: click.echo(text, err=True))


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder (segments/, files/, _run.json)  [default: score.out of the config, output/scores]")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=None,
              help="Model bundle folder  [default: the pretrained bundle shipped with ser-batch]")
@click.option("--framework", type=click.Choice(["keras", "sklearn", "both"]), default=None,
              help="Which model scores: keras, sklearn or both (their averaged probabilities)  "
                   "[default: score.framework, both]")
@click.option("--channels", type=click.Choice(["mix", "split"]), default=None,
              help="mix: average the channels into one stream (channel is null); split: score each "
                   "channel as its own stream, e.g. agent and customer  [default: score.channels, mix]")
@click.option("--normalize", type=click.Choice(["none", "file"]), default=None,
              help="file: z-score each stream (file, or channel with --channels split) by the statistics of "
                   "its own speech windows and score it with the bundle's normalised models. For one voice per "
                   "stream with at least score.min_normalize_s (20 s) of speech; a stream with less falls back "
                   "to the global models (files.normalized says which). Not for mono recordings that mix "
                   "speakers  [default: score.normalize, none]")
@click.option("--rescore", is_flag=True,
              help="Score everything again, replacing earlier results in --out (also needed to reuse an "
                   "--out made with another bundle or other settings).")
@click.option("--num-cpus", type=click.IntRange(min=1), default=None,
              help="CPUs of the embedded local Ray  [default: all]")
@click.option("--address", default=None, envvar="RAY_ADDRESS", show_envvar=True,
              metavar="HOST:PORT", help=_ADDRESS_HELP)
@click.option("--fail-on-error", is_flag=True,
              help=f"Exit with code {EXIT_FILE_ERRORS} if any file could not be scored.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@_config_options
@_handle_errors
def score(input_path: Path, out: Path | None, model_dir: Path | None, framework: str | None, channels: str | None,
          normalize: str | None, rescore: bool, num_cpus: int | None, address: str | None, fail_on_error: bool,
          no_progress: bool, config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Score every recording of INPUT: an emotion per window and per file, as Parquet.

    INPUT is a folder (searched recursively, symlinked folders followed) or a text file
    listing audio paths, one per line. Long files are streamed in blocks and cut into
    ranges scored in parallel; each 1.5 s window gets class probabilities and a speech
    ratio (windows without speech get no label), each file the mean over its speech
    windows. Runs are incremental: files already scored (same path, size and mtime) are
    skipped, so the same command every night scores only what is new. A file that cannot
    be read becomes a row with its `error`; the job goes on. Inputs at 8 kHz or below are
    scored by the bundle's narrow-band models when it has them (files.model_set says which).

    Example: ser-batch score /archive/calls --out output/scores --channels split --normalize file
    """
    from ser_batch.score import run_score

    config = _load_config(config_path, overrides,
                          score={"framework": framework, "channels": channels, "normalize": normalize},
                          ray={"num_cpus": num_cpus})
    summary = run_score(input_path, out or Path(config.score.out), config=config, model_dir=model_dir,
                        rescore=rescore, address=address or config.ray.address or None, progress=not no_progress)
    report = summary.failure_report()
    if report:
        click.echo(report, err=True)
    click.echo(summary.line())
    if fail_on_error and summary.errors:
        click.echo(f"error: {len(summary.errors)} file(s) could not be scored", err=True)
        sys.exit(EXIT_FILE_ERRORS)


@main.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--file", "file_path", default=None, metavar="PATH",
              help="File whose windows the timeline shows (its path as in the files table)  [default: the longest]")
@_handle_errors
def report(out: Path, file_path: str | None) -> None:
    """Write OUT/report.html for the results of `score` in OUT.

    A self-contained page: the emotion distribution over files and over hours of speech,
    a timeline of one file's windows with their probabilities, and the table of errors.
    """
    from ser_batch.score_report import write_score_report

    path = write_score_report(out, file_path=file_path)
    click.echo(f"report written to {path}")


# The cluster commands (submit, jobs, cluster) live in their own module and register on `main`.
from ser_batch import cli_cluster  # noqa: E402,F401  (imported last: it uses the helpers above)

if __name__ == "__main__":  # pragma: no cover
    # `python -m ser_batch.cli` runs this file as __main__; the commands are registered on the
    # `main` of the module ser_batch.cli, so run that one.
    from ser_batch.cli import main as _main

    _main()

"""Commands on models and results: ``evaluate`` a bundle, ``predict`` files, ``report`` a scoring run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ser_batch.cli.root import TRUST_PICKLE_HELP, handle_errors, main, parse_test_actors
from ser_batch.config import ENSEMBLE, SCORE_FRAMEWORKS


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
@click.option("--normalize", type=click.Choice(("none", "speaker", "archive")), default="none",
              help="speaker: z-score each actor's windows by that actor's own statistics and score them with "
                   "the bundle's normalised models (a bundle trained with --normalize speaker; needs the "
                   "actor column); archive: z-score all rows by the statistics of all of them, as "
                   "`score --normalize archive` does an archive.")
@click.option("--classes", default=None, metavar="LIST",
              help="Only rows labelled with these classes (a subset of the bundle's, e.g. angry,happy,neutral,sad), "
                   "with the argmax restricted to them (probabilities renormalised over the subset).")
@click.option("--trust-pickle", is_flag=True, help=TRUST_PICKLE_HELP)
@handle_errors
def evaluate(model_dir: Path, features_dir: Path, actors: str | None, include_training: bool, out: Path | None,
             normalize: str, classes: str | None, trust_pickle: bool) -> None:
    """Score a model bundle on a labelled feature set (e.g. held-out actors, another corpus).

    Only rows the bundle did not train on are scored (it lists its training files), and
    the output says which rows were used and why. Prints accuracy, macro-F1 and per-class
    F1 of each model and of their ensemble; --out writes everything, including per-class
    precision/recall, confusion matrices and the rows used, as JSON.
    """
    import json

    from ser_batch.pipeline.evaluate import evaluate_bundle, format_corpus_metrics, format_metrics

    actor_ids = parse_test_actors(actors).get("test_actors") if actors else None
    if actors and not actor_ids:
        raise click.BadParameter("use actor numbers like 17,18,19,20", param_hint="--actors")
    results = evaluate_bundle(model_dir, features_dir, actors=actor_ids, include_training=include_training,
                              trust_pickle=trust_pickle, normalize=normalize, classes=classes)
    click.echo(f"rows: {results['selection']}")
    click.echo(f"classes: {results['classes']['description']}")
    click.echo("model sets: " + ", ".join(f"{band}band rows -> {name}"
                                          for band, name in results["model_sets"].items()))
    other = results["rows_left_out"] - results["training_rows_left_out"]
    click.echo(f"{results['rows']} rows of {len(results['actors'])} actors "
               f"({results['error_rows']} error rows dropped, {other} other rows left out)")
    for warning in results["warnings"]:
        click.echo(f"WARNING: {warning}")
    click.echo(format_metrics(results))
    per_corpus = format_corpus_metrics(results, n_classes=len(next(iter(results["models"].values()))["classes"]))
    if per_corpus:
        click.echo("")
        click.echo(per_corpus)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        click.echo(f"metrics written to {out}")


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Model bundle folder  [default: the pretrained bundle shipped with ser-batch]")
@click.option("--framework", type=click.Choice(SCORE_FRAMEWORKS), default=ENSEMBLE,
              help="Which model answers; both = each model plus their averaged ensemble.")
@click.option("--classes", default=None, metavar="LIST",
              help="Probabilities over these of the bundle's classes only, renormalised, e.g. angry,happy,neutral,sad.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per file in a list).")
@click.option("--trust-pickle", is_flag=True, help=TRUST_PICKLE_HELP)
@handle_errors
def predict(files: tuple[Path, ...], model_dir: Path | None, framework: str, classes: str | None, as_json: bool,
            trust_pickle: bool) -> None:
    """Predict the emotion of each audio FILE, with class probabilities.

    A file's emotion is the mean over its 1.5 s windows with speech, exactly as `score`
    summarises files, with the settings stored in the model bundle. Exits with 1 if any
    file could not be read. Files the bundle was trained on (by path or content) are counted in
    a line on stderr (with --json: `in_training` of each file instead): their labels say nothing about accuracy. For
    folders and archives, use `score`.

    A file without speech gets a line saying so (`no speech`), never none.

    Example: ser-batch predict call.wav --framework keras
    """
    import json

    folders = [f for f in files if f.is_dir()]
    if folders:
        raise click.BadParameter(f"{folders[0]} is a folder; predict takes audio files. To score every file of a "
                                 f"folder, use: ser-batch score {folders[0]} --out output/scores",
                                 param_hint="FILES")

    from ser_batch.config import Config
    from ser_batch.inference.scoring import predict_files
    from ser_batch.models.bundle import load_bundle

    config = Config().replace(score={"classes": classes or ()})
    bundle = load_bundle(model_dir, trust_pickle=trust_pickle)
    results = predict_files(list(files), bundle=bundle, framework=framework, config=config)
    overlap = _training_overlap(bundle, results)
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        for entry in results:
            if entry["error"]:
                click.echo(f"error: {entry['path']}: {entry['error']}", err=True)
                continue
            if not entry["predictions"]:  # a line for every file: one without speech says so
                windows = entry["windows"]
                which = "its one window has none" if windows == 1 else f"none of its {windows} windows has any"
                click.echo(f"{entry['path']}  no speech ({which}: no emotion to give)")
                continue
            for name, pred in entry["predictions"].items():
                top = sorted(pred["probabilities"].items(), key=lambda kv: -kv[1])[:3]
                click.echo(f"{entry['path']}  {name:7s} {pred['label']:9s} "
                           + "  ".join(f"{c} {p:.2f}" for c, p in top))
    if overlap and not as_json:  # --json carries it as in_training, and stays one JSON document
        click.echo(overlap, err=True)
    if any(entry["error"] for entry in results):
        sys.exit(1)


def _training_overlap(bundle: Any, results: list[dict[str, Any]]) -> str | None:
    """Mark each result ``in_training`` ("path", "content" or None) and return the summary line
    when some file was in the bundle's training data."""
    from ser_batch.models.training_overlap import matches, overlap_of

    paths = [Path(entry["path"]) for entry in results]
    found = matches(bundle, paths) or {}
    for entry in results:
        entry["in_training"] = found.get(entry["path"])
    return overlap_of(found, total=len(paths)).line() if found else None


@main.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--truth", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None, metavar="CSV",
              help="Truth table (columns file,start_s,end_s,emotion, as the demo writes in calls/truth.csv): drawn "
                   "under each ribbon, with each file's agreement.")
@click.option("--ribbons", "max_ribbons", type=click.IntRange(min=0), default=20, show_default=True,
              help="Streams drawn as emotion ribbons (the first in listen-first order).")
@click.option("--file", "file_path", default=None, metavar="PATH",
              help="Draw this file's ribbon first (its path as in the files table).")
@handle_errors
def report(out: Path, truth: Path | None, max_ribbons: int, file_path: str | None) -> None:
    """Write OUT/report.html for the results of `score` in OUT.

    A self-contained page for whoever listens to the calls: the run's figures, the calls
    to listen to first (most speech labelled angry or fearful, longest high-arousal stretch),
    an emotion ribbon per file (blank where there is no speech), the emotions overall, a
    per-file table sortable by each emotion's share, and the errors.

    Example: ser-batch report output/scores --truth output/calls/truth.csv
    """
    from ser_batch.reports.score_page import write_score_report

    path = write_score_report(out, file_path=file_path, truth=truth, max_ribbons=max_ribbons)
    click.echo(f"report written to {path}")

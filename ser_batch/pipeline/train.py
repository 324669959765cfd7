"""The training job: feature Parquet in, a verified model bundle out.

Rows with errors are dropped (and counted), the labelled rows are split (speaker-
independent or random stratified), and the requested models are fitted in parallel, one
shard of the engine (:mod:`ser_batch.cluster.engine`) per model of each set, each writing its
model files into the bundle's staging folder and returning only its test-set probabilities
and training history.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ser_batch import __version__
from ser_batch.cluster import output
from ser_batch.cluster.engine import Executor, Progress, Workers, run_shards
from ser_batch.config import ENSEMBLE, Config, config_from_dict, config_to_dict
from ser_batch.config_rules import parse_ensemble
from ser_batch.data.featureset import FeatureSet, concat_feature_sets, load_feature_set
from ser_batch.errors import BundleError, DatasetError
from ser_batch.models import bundle
from ser_batch.models.metrics import classification_metrics
from ser_batch.models.model_sets import GLOBAL
from ser_batch.pipeline.train_sets import SetData, plan_sets
from ser_batch.pipeline.train_shard import FitJob, FitResult
from ser_batch.reports import training
from ser_batch.reports.failures import counted

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """Row indices of the training and test parts, and how they were chosen."""

    train: np.ndarray
    test: np.ndarray
    kind: str
    description: str
    test_actors: tuple[int, ...] = ()
    test_corpus: str = ""


def split_rows(data: FeatureSet, *, config: Config) -> Split:
    """Split labelled rows: whole actors held out (``speaker``), a whole corpus (``corpus``, with
    ``train.test_corpus``) or stratified (``random``).

    The random split lets one actor's clips fall on both sides, which flatters accuracy;
    the speaker split measures what happens with voices never heard in training. ``none``
    trains on everything (for a final model whose accuracy was measured beforehand).

    Raises
    ------
    DatasetError
        If the split leaves a side empty or a class with too few rows.
    """
    train_cfg = config.train
    n = len(data.emotion)
    if train_cfg.split == "corpus":
        corpora = data.corpus.astype(str)
        present = sorted(set(corpora))
        if train_cfg.test_corpus not in present:
            raise DatasetError(f"test corpus {train_cfg.test_corpus!r} is not in the data (corpora: {', '.join(present)})")
        is_test = corpora == train_cfg.test_corpus
        if is_test.all():
            raise DatasetError(f"--split corpus holds out {train_cfg.test_corpus!r}, the only corpus: nothing left to "
                               "train on; give train several feature sets")
        return Split(np.flatnonzero(~is_test), np.flatnonzero(is_test), "corpus",
                     f"corpus {train_cfg.test_corpus} held out", test_corpus=train_cfg.test_corpus)
    if train_cfg.split == "none":
        return Split(np.arange(n), np.arange(0), "none", "all rows used for training; no test part")
    if train_cfg.split == "random":
        from sklearn.model_selection import train_test_split

        # Files, not rows, are drawn: augmented copies share their original's path and must
        # fall on its side (a test file's copies are never trained on).
        paths = data.paths.astype(str)
        first = dict.fromkeys(paths)
        index_of = {p: i for i, p in enumerate(first)}
        file_of_row = np.array([index_of[p] for p in paths], dtype=np.int64)
        file_label = np.empty(len(first), dtype=object)
        file_label[file_of_row[::-1]] = data.emotion.astype(str)[::-1]  # each file's first row's label
        try:
            _, test_files = train_test_split(np.arange(len(first)), test_size=train_cfg.test_size,
                                             stratify=file_label.astype(str), random_state=train_cfg.seed)
        except ValueError as exc:
            raise DatasetError(f"cannot make a stratified {train_cfg.test_size:.0%} split: {exc}") from None
        is_test = np.isin(file_of_row, test_files)
        return Split(np.flatnonzero(~is_test), np.flatnonzero(is_test), "random",
                     f"stratified, {train_cfg.test_size:.0%} of files held out, seed {train_cfg.seed}")
    known = ~np.isnan(data.actor)
    if not known.all():
        raise DatasetError(
            f"speaker split needs an actor for every row; {int((~known).sum())} rows have none "
            "(add an actor column to labels.csv, or use --split random)")
    actors = np.unique(data.actor.astype(int))
    _check_actors_unique(data)
    if train_cfg.test_actors:
        held = tuple(sorted(set(train_cfg.test_actors)))
        missing = sorted(set(held) - set(actors.tolist()))
        if missing:
            raise DatasetError(f"test actors {missing} are not in the data (actors present: "
                               f"{', '.join(map(str, actors))})")
        how = "actors " + ",".join(map(str, held)) + " held out"
    else:
        rng = np.random.default_rng(train_cfg.seed)
        count = max(1, int(round(train_cfg.test_actor_fraction * len(actors))))
        held = tuple(sorted(int(a) for a in rng.choice(actors, size=count, replace=False)))
        how = f"{count} of {len(actors)} actors held out at random (seed {train_cfg.seed}): " + ",".join(map(str, held))
    is_test = np.isin(data.actor.astype(int), held)
    if is_test.all() or not is_test.any():
        raise DatasetError("the speaker split leaves no training or no test rows")
    return Split(np.flatnonzero(~is_test), np.flatnonzero(is_test), "speaker", how, held)


def _check_actors_unique(data: FeatureSet) -> None:
    """Refuse an actor number shared by two corpora: the speaker split would take them for one voice."""
    seen: dict[int, str] = {}
    for actor, corpus in zip(data.actor.astype(int), data.corpus):
        if seen.setdefault(int(actor), str(corpus)) != str(corpus):
            raise DatasetError(f"actor {int(actor)} is in corpora {seen[int(actor)]!r} and {str(corpus)!r}: number "
                               "the actors of each corpus apart (EMOVO's are 101-106) or use --split corpus/random")


def runtime_versions() -> dict[str, str]:
    """Versions of the libraries whose files a bundle holds (skops, pickles and Keras files)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("scikit-learn", "skops", "keras", "tensorflow-cpu", "tensorflow", "numpy", "librosa"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


@dataclass(frozen=True)
class TrainSummary:
    out: Path
    metrics: dict[str, dict[str, Any]]
    rows_train: int
    rows_test: int
    error_rows: int
    wall_s: float
    #: Test metrics of the other model sets (``speaker``, ``narrow``, ...), by set and model.
    set_metrics: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"{self.rows_train} training rows, {self.rows_test} test rows, {self.error_rows} error rows dropped"]
        out += [f"{name:8s} accuracy {m['accuracy']:.3f}  macro-F1 {m['macro_f1']:.3f}"
                for name, m in self.metrics.items()]
        out += [f"{name:8s} accuracy {m['accuracy']:.3f}  macro-F1 {m['macro_f1']:.3f}  (model set {set_name})"
                for set_name, models in self.set_metrics.items() for name, m in models.items()]
        out.append(f"bundle written to {self.out} in {self.wall_s:.1f} s (report: {self.out / 'report.html'})")
        return out


def run_train(features_dir: Path | Sequence[Path], out: Path, *, config: Config, overwrite: bool = False,
              executor: Executor | None = None, progress: bool = True) -> TrainSummary:
    """Fit the configured models on ``features_dir`` (one feature folder or several, e.g. one per
    corpus, extracted alike) and write a bundle to ``out``. With ``progress``, each model fitted
    (of each model set) moves a bar on stderr, or prints a line there when it is not a terminal.
    ``executor``: where the fits run (default: Ray as ``config.ray`` says).

    Raises
    ------
    DatasetError
        If the feature set is missing, empty, unlabelled or cannot be split.
    BundleError
        If ``out`` exists and ``overwrite`` is false.
    """
    started = time.perf_counter()
    executor = executor or Executor.of(config.ray)
    out = output.output_path(out)  # absolute; refused if relative inside a Ray job
    if out.exists() and not overwrite:
        raise BundleError(f"model folder {out} already exists; pass --overwrite to replace it")
    dirs = [output.absolute(d) for d in ([features_dir] if isinstance(features_dir, (str, Path)) else features_dir)]
    features = concat_feature_sets([load_feature_set(d) for d in dirs], names=[str(d) for d in dirs])
    data = features.labelled()
    if len(set(data.emotion.astype(str))) < 2:
        raise DatasetError(f"the features in {', '.join(map(str, dirs))} need labelled rows of at least two classes "
                           "to train on")
    for spec in (config.train.ensemble, config.train.ensemble_normalized):
        parse_ensemble(spec, config.train.models)  # members must be among the models trained
    # The bundle carries the audio/feature settings the features were made with.
    extracted = config_from_dict(features.metadata["config"])
    config = config.with_sections(audio=extracted.audio, features=extracted.features)
    split = split_rows(data, config=config)
    labels = data.emotion.astype(str)
    classes = sorted(set(labels[split.train]))
    unseen = sorted(set(labels[split.test]) - set(classes))
    if unseen:
        raise DatasetError(f"classes {', '.join(unseen)} occur only in the test rows ({split.description}); "
                           "hold out other actors or use --split random")
    log.info("training %s on %d rows, testing on %d (%s)", ",".join(config.train.models), len(split.train),
             len(split.test), split.description)

    use_segments = config.train.use_segments and data.segments is not None
    # Train on every window with its clip's label; score a clip by its windows' mean.
    sets = plan_sets(data, split.train, split.test, config=config, use_segments=use_segments)
    with output.job_output(out, job="train") as held, \
            output.start_workers(executor, held=held, inputs=dirs) as workers:
        staging = bundle.staging_dir(out)
        try:
            results = _fit_sets(sets, staging, config=config, workers=workers, progress=progress)
            ensembles = {s.name: set_ensemble(s, results, config=config) for s in sets}
            set_metrics = {s.name: set_test_metrics(s, [r for r in results if r.set == s.name], labels, classes,
                                                    weights=ensembles[s.name])
                           for s in sets}
            metrics = set_metrics[GLOBAL]
            history = next((r.history for r in results if r.framework == "keras" and r.set == GLOBAL), None)
            manifest = {
                "bundle_format": bundle.BUNDLE_FORMAT,
                "ser_batch_version": __version__,
                "library_versions": runtime_versions(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "classes": classes,
                "models": [r.framework for r in results if r.set == GLOBAL],
                "ensemble": ensembles,
                "aggregation": "segments" if use_segments else "clip",
                "features": bundle.feature_contract(config, features.metadata),
                "config": config_to_dict(config),
                "training_data": _training_data(features, data, split, sets, classes, features_dirs=dirs,
                                                staging=staging),
                "split": {"kind": split.kind, "description": split.description,
                          "test_actors": list(split.test_actors), "seed": config.train.seed,
                          **({"test_corpus": split.test_corpus} if split.test_corpus else {})},
                "absent_classes": _absent_classes(data, split, classes, config=config),
                "metrics": _headline(metrics),
                "model_sets": {s.name: dict(s.entry(), models=s.models(config.train.models),
                                            metrics=_headline(set_metrics[s.name])) for s in sets},
            }
            (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
            training.write_report(staging, manifest=manifest, metrics=metrics, history=history)
            bundle.finalize_bundle(staging, out, manifest=manifest, overwrite=overwrite)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return TrainSummary(out, metrics, len(split.train), len(split.test), features.n_errors,
                        time.perf_counter() - started,
                        {name: m for name, m in set_metrics.items() if name != GLOBAL})


def _fit_sets(sets: list[SetData], staging: Path, *, config: Config, workers: Workers,
              progress: bool = True) -> list[FitResult]:
    """Fit every model of every set in parallel, writing into ``staging``; their results, in the
    order of the sets and their models."""
    shards = [(s.name, framework) for s in sets for framework in s.fitted(config.train.models)]
    threads = min(max(1, workers.info.cpus // len(shards)), workers.largest_node_cpus())
    job = FitJob({s.name: s.arrays() for s in sets}, config, str(staging.resolve()), threads)
    fitted: dict[tuple[str, str], FitResult] = {}

    def commit(result: FitResult) -> int:
        fitted[result.set, result.framework] = result
        return 1

    def postfix() -> str:
        name, framework = list(fitted)[-1]
        return f"{name} {framework} done"

    # One line per model fitted when stderr is not a terminal: a model may take minutes.
    run_shards(job, shards, workers=workers, commit=commit, max_retries=config.ray.max_retries, postfix=postfix,
               cpus_per_task=threads, progress=Progress(len(shards), f"train ({counted(len(sets), 'model set')})",
                                                        progress, unit="model", every_s=0, announce=True))
    # A plain set's cnn task also fits its normalised set's cnn head (on the same encoder).
    results = [r for shard in shards for r in (fitted[shard], *fitted[shard].also)]
    missing = [f for r in results for f in r.files if not (staging / f).is_file()]
    if missing:
        raise BundleError(f"model files {', '.join(missing)} were written where the driver cannot see "
                          f"them; on a cluster, --out must be on a filesystem shared by all nodes")
    return results


def _headline(metrics: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The manifest's figures of each model: accuracy, macro-F1 and the number of test rows."""
    return {name: {k: m[k] for k in ("accuracy", "macro_f1", "n")} for name, m in metrics.items()}


def _absent_classes(data: FeatureSet, split: Split, classes: list[str], *, config: Config) -> dict[str, Any]:
    """The manifest's record of the classes each training corpus lacks, and how they were handled."""
    corpora = data.corpus.astype(str)[split.train]
    labels = data.emotion.astype(str)[split.train]
    lacking = {c: sorted(set(classes) - set(labels[corpora == c])) for c in sorted(set(corpora))}
    return {"keras": config.train.absent_classes, "sklearn": "none",
            "by_corpus": {c: missing for c, missing in lacking.items() if missing}}


def _training_data(features: FeatureSet, data: FeatureSet, split: Split, sets: list[SetData], classes: list[str], *,
                   features_dirs: list[Path], staging: Path) -> dict[str, Any]:
    """The manifest's record of what the models were trained on (and the list of training files).

    With more than one corpus the listed files are corpus-qualified (``corpus:path``, see
    :func:`ser_batch.models.bundle.training_key`): two corpora may both hold ``f1/a.wav``."""
    corpora = sorted({str(c) for c in data.corpus})
    train_paths = data.paths[split.train].tolist()
    qualified = len(corpora) > 1
    if qualified:
        train_paths = [bundle.training_key(c, p) for c, p in zip(data.corpus[split.train], train_paths)]
    return {
        "features_dir": str(features_dirs[0].resolve()),
        "features_dirs": [str(d.resolve()) for d in features_dirs],
        "corpora": corpora,
        "rows": int(len(features.emotion)), "rows_labelled": int(len(data.emotion)),
        "rows_train": int(len(split.train)), "rows_test": int(len(split.test)),
        "vectors_train": int(len(sets[0].X_train)),
        "error_rows": features.n_errors,
        "class_counts": {c: int((data.emotion.astype(str) == c).sum()) for c in classes},
        "actors": sorted(int(a) for a in np.unique(data.actor[~np.isnan(data.actor)])),
        # evaluate leaves exactly these rows out of any feature set of the same corpus
        "files": bundle.write_training_files(staging, train_paths, qualified=qualified),
        **_training_hashes(data, split, features_dirs, train_paths, staging=staging),
    }


def _training_hashes(data: FeatureSet, split: Split, features_dirs: list[Path], keys: list[str], *,
                     staging: Path) -> dict[str, Any]:
    """``{"hashes": entry}`` when the training audio is still where ``extract`` read it (its
    manifest's ``input_dir``), so scoring can tell a renamed copy of a training file
    (:mod:`ser_batch.models.training_overlap`); empty otherwise. Costs one 1 MiB read per training file."""
    from ser_batch.data.parts import read_manifest
    from ser_batch.models.training_overlap import write_training_hashes

    manifests = [read_manifest(d) or {} for d in features_dirs]
    inputs = [Path(m["input_dir"]) for m in manifests if m.get("input_dir")]
    roots = {str(m.get("corpus")): Path(m["input_dir"]) for m in manifests if m.get("input_dir")}
    rows = zip(keys, data.corpus[split.train], data.paths[split.train])
    if len(features_dirs) == 1 and inputs:  # one folder: its rows' corpus may come from labels.csv
        files = {key: inputs[0] / p for key, _, p in rows}
    else:
        files = {key: roots[str(c)] / p for key, c, p in rows if str(c) in roots}
    entry = write_training_hashes(staging, sorted(files.items()))
    return {"hashes": entry} if entry else {}


def set_ensemble(model_set: SetData, results: list[FitResult], *, config: Config) -> dict[str, float]:
    """The weights of ``both`` in one set (the manifest's ``ensemble`` entry): ``train.ensemble`` for a
    plain set, ``train.ensemble_normalized`` for a normalised one, over the models the set holds (a
    normalised set without a cnn of its own borrows its band's plain one: Bundle.ensemble)."""
    held = [r.framework for r in results if r.set == model_set.name]
    spec = config.train.ensemble
    if model_set.normalize != "none":
        spec = config.train.ensemble_normalized
        if "cnn" in config.train.models and "cnn" not in held:
            held.append("cnn")
    return parse_ensemble([e for e in spec if e.partition(":")[0] in held], held)


def set_test_metrics(model_set: SetData, results: list[FitResult], labels: np.ndarray,
                     classes: list[str], *, weights: dict[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """Test metrics of each model of one set, and of their ensemble (``both``, averaged with ``weights``,
    equal without); empty without test rows."""
    if not len(model_set.test_index):
        return {}
    y_test = labels[model_set.test_index]
    metrics: dict[str, dict[str, Any]] = {}
    probas = []
    for result in results:
        proba = result.proba[:, [result.classes.index(c) for c in classes]]
        probas.append(proba)
        metrics[result.framework] = classification_metrics(y_test, proba, classes)
        metrics[result.framework]["fit_s"] = round(result.fit_s, 2)
    weights = {r.framework: (weights or {}).get(r.framework, 0.0 if weights else 1.0) for r in results}
    if len(probas) > 1 and sum(weights.values()) > 0:  # (a normalised set's own models may weigh nothing)
        mixed = sum(weights[r.framework] * p for r, p in zip(results, probas)) / sum(weights.values())
        metrics[ENSEMBLE] = classification_metrics(y_test, mixed, classes)
    return metrics

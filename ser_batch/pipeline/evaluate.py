"""Honest numbers: classification metrics, and the ``evaluate`` job over a labelled feature set.

``evaluate`` scores only rows a bundle did not train on unless asked otherwise: a bundle
lists its training files, so the training rows can be left out of any feature set of the
same corpus, and a figure that includes them says so.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ser_batch.config import ENSEMBLE
from ser_batch.data.featureset import FeatureSet, load_feature_set
from ser_batch.errors import DatasetError
from ser_batch.models.bundle import Bundle, load_bundle
from ser_batch.models.metrics import classification_metrics


@dataclass(frozen=True)
class RowSelection:
    """Which labelled rows an evaluation scores, and why.

    Attributes
    ----------
    keep : np.ndarray of bool [shape=(n_rows,)], the rows scored
    trained : np.ndarray of bool [shape=(n_rows,)], rows the bundle trained on, or None
        when that cannot be told (a format-1 bundle on a feature set it did not record)
    reason : str, one sentence for people
    warnings : list of str, things that make the figures flatter than held-out ones
    """

    keep: np.ndarray
    trained: np.ndarray | None
    reason: str
    warnings: list[str]

    @property
    def training_rows_included(self) -> bool | None:
        """True/False, or None when unknown."""
        return None if self.trained is None else bool((self.keep & self.trained).any())


def _actor_list(actors: Any) -> str:
    return ",".join(str(int(a)) for a in sorted(set(actors)))


def _is_training_set(bundle: Bundle, features: FeatureSet, features_dir: Path) -> bool:
    """Whether a feature set is (a copy of) the one a format-1 bundle was trained on."""
    recorded = bundle.manifest.get("training_data", {})
    if recorded.get("features_dir") == str(Path(features_dir).resolve()):
        return True
    actors = sorted(int(a) for a in np.unique(features.actor[~np.isnan(features.actor)]))
    return (recorded.get("rows") == len(features.emotion) and recorded.get("error_rows") == features.n_errors
            and recorded.get("actors") == actors)


def training_rows(bundle: Bundle, features: FeatureSet, data: FeatureSet,
                  features_dir: Path) -> tuple[np.ndarray | None, str]:
    """Mark the rows of ``data`` (labelled rows of ``features``) that ``bundle`` trained on.

    A bundle that lists its training files is matched by path (relative to the extracted
    folder, so only a feature set of the same corpus matches). Older bundles fall back on
    their split record, on the feature set they were trained on only.

    Returns
    -------
    trained : np.ndarray of bool [shape=(n,)], or None when it cannot be told
    how : str, where the answer came from
    """
    listed = bundle.training_files()
    if listed is not None:
        if bundle.training_files_qualified:
            # A multi-corpus bundle lists corpus:path keys: f1/a.wav of one corpus is not that of another.
            from ser_batch.models.bundle import training_key

            paths = data.paths.astype(str)
            keys = np.array([training_key(c, p) for c, p in zip(data.corpus, paths)], dtype=object)
            trained = np.isin(keys, list(listed))
            # The same audio extracted under another corpus name (RAVDESS without --corpus ravdess is
            # named after its folder) must not pass for unseen: such rows match by path alone.
            known = {key.split(":", 1)[0] for key in listed}
            unknown = np.array([(c or "") not in known for c in data.corpus], dtype=bool)
            if unknown.any():
                by_path = np.isin(paths, [key.split(":", 1)[1] for key in listed])
                trained |= unknown & by_path
            return (trained, f"the bundle's list of its {len(listed)} training files (by corpus and path; by "
                             "path alone for corpora it does not name)")
        return (np.isin(data.paths.astype(str), list(listed)),
                f"the bundle's list of its {len(listed)} training files")
    split = bundle.manifest.get("split", {})
    if not _is_training_set(bundle, features, features_dir):
        return None, (f"bundle format {bundle.format} records no training files and this is not the "
                      "feature set it was trained on")
    if split.get("kind") == "speaker":
        held = split.get("test_actors") or []
        return (~np.isin(data.actor, held),
                f"the bundle's speaker split, which held out actors {_actor_list(held)}")
    if split.get("kind") == "none":
        return np.ones(len(data.emotion), dtype=bool), "the bundle was trained on every row (--split none)"
    return None, (f"bundle format {bundle.format} records no training files, so the test rows of its "
                  f"{split.get('kind', 'unknown')} split cannot be identified")


def select_rows(bundle: Bundle, features: FeatureSet, data: FeatureSet, *, features_dir: Path,
                actors: Sequence[int] | None = None, include_training: bool = False,
                classes: Sequence[str] | None = None) -> RowSelection:
    """Choose the rows to score: by default only those the bundle did not train on.

    Raises
    ------
    DatasetError
        If no row is left, saying why (and suggesting ``--all`` when only training rows remain).
    """
    known = np.isin(data.emotion.astype(str), list(classes or bundle.classes))
    if actors:
        known &= np.isin(data.actor, list(actors))
    which = f" of actors {_actor_list(actors)}" if actors else ""
    if not known.any():
        raise DatasetError(f"{features_dir} has no rows{which} labelled with the model's classes "
                           f"({', '.join(bundle.classes)})")
    trained, how = training_rows(bundle, features, data, features_dir)
    warnings: list[str] = []
    if trained is None:
        keep = known
        reason = f"all {int(keep.sum())} labelled rows{which}: {how}"
        warnings.append(f"cannot tell which rows the models were trained on ({how}); these figures may "
                        "include training rows and then flatter the models")
    elif include_training:
        keep = known
        n_trained = int((keep & trained).sum())
        reason = f"all {int(keep.sum())} labelled rows{which}, training rows included (--all)"
        if n_trained:
            warnings.append(f"{n_trained} of the {int(keep.sum())} rows scored were used to train these models "
                            f"(from {how}): these figures flatter the models; without --all only held-out "
                            "rows are scored")
    else:
        keep = known & ~trained
        n_trained = int((known & trained).sum())
        if not keep.any():
            raise DatasetError(
                f"no held-out rows: the models were trained on all {n_trained} labelled rows{which} of "
                f"{features_dir} (from {how}). Evaluate on other speakers or another corpus, or pass --all "
                "to score training rows anyway (the figures will flatter the models)")
        reason = (f"{int(keep.sum())} rows{which} the models did not train on"
                  + (f"; {n_trained} training rows left out (from {how}; --all includes them)" if n_trained
                     else f" (from {how})"))
    return RowSelection(keep=keep, trained=trained, reason=reason, warnings=warnings)


def evaluate_bundle(model_dir: Path | None, features_dir: Path, *, frameworks: Sequence[str] | None = None,
                    actors: Sequence[int] | None = None, include_training: bool = False,
                    trust_pickle: bool = False, normalize: str = "none",
                    classes: str | Sequence[str] | None = None, probabilities: bool = False) -> dict[str, Any]:
    """Metrics of each model of a bundle (and their ensemble) on a labelled feature set.

    ``classes`` (``"angry,happy,neutral,sad"``, any subset of the bundle's classes) scores only
    rows labelled with those classes and restricts the argmax to them (probabilities
    renormalised over the subset, as ``score --classes`` does); ``results["classes"]`` says so.

    By default only rows the bundle did not train on are scored (see :func:`select_rows`);
    ``include_training`` scores them all, with a warning in ``results["warnings"]``.
    Rows whose label is not one of the bundle's classes are left out; ``actors`` keeps
    only those speakers' rows. Telephone-band rows are scored by the bundle's narrow set when
    it has one. ``normalize="speaker"`` z-scores every row's windows by the statistics of its
    actor's speech windows among the rows scored (per band) and scores them with the
    bundle's normalised set(s), as ``train --normalize speaker`` measured them.

    Returns
    -------
    dict
        JSON-ready: ``rows``, ``actors``, ``paths`` (the rows scored), ``selection`` (why),
        ``training_rows_included`` (bool, or None when unknown), ``training_rows_left_out``,
        ``rows_left_out``, ``error_rows``, ``warnings``, ``models`` (metrics per model, argmax over
        all the bundle's classes) and ``corpora`` (the same per corpus, plus ``restricted``: the
        argmax restricted to the corpus's classes when it has fewer; see :func:`corpus_metrics`).
        With ``probabilities``, also ``probabilities`` (``{framework: array (rows, classes)}``, not
        JSON-ready), ``labels`` and ``corpus`` of the rows scored, for benchmarks that combine models.

    Raises
    ------
    DatasetError
        If no labelled row the models know is left to score, or ``normalize="speaker"`` and a
        row has no actor.
    BundleError
        If the bundle is invalid or its feature contract does not match, or ``normalize`` is
        asked of a bundle without normalised models.
    """
    if normalize not in ("none", "speaker", "archive"):
        raise DatasetError(f"evaluate normalises per speaker, over the whole feature set or not at all "
                           f"(normalize none|speaker|archive), not {normalize!r}")
    bundle = load_bundle(model_dir, trust_pickle=trust_pickle)
    from ser_batch.models.classes import parse_classes, restrict

    subset = parse_classes(classes, bundle.classes)
    if normalize != "none":
        bundle.require_normalized()
    features = load_feature_set(features_dir)
    bundle.check_features(features.metadata)
    data = features.labelled()
    selection = select_rows(bundle, features, data, features_dir=Path(features_dir), actors=actors,
                            include_training=include_training, classes=subset)
    left_out_training = 0 if selection.trained is None else int((selection.trained & ~selection.keep).sum())
    # Augmented copies (extract --augment) are training material; the figures are of the
    # recordings themselves, as train's test metrics are.
    from ser_batch.pipeline.train_sets import row_is_original

    copies = selection.keep & ~row_is_original(data)
    if copies.any():
        selection = dataclasses.replace(
            selection, keep=selection.keep & ~copies,
            reason=selection.reason + f"; {int(copies.sum())} augmented copies left out (originals only)")
        if not selection.keep.any():
            raise DatasetError(f"{features_dir} holds only augmented copies among the rows to score")
    scored_classes = list(subset or bundle.classes)
    corpus_classes = classes_by_corpus(data, scored_classes)
    data = data.subset(selection.keep)
    y = data.emotion
    frameworks = list(frameworks or bundle.frameworks)
    if len(bundle.frameworks) > 1 and ENSEMBLE not in frameworks:
        frameworks.append(ENSEMBLE)
    results: dict[str, Any] = {
        "model_dir": str(bundle.path),
        "features_dir": str(features_dir),
        "rows": int(len(y)),
        "actors": sorted(int(a) for a in np.unique(data.actor) if not np.isnan(a)),
        "selection": selection.reason,
        "training_rows_included": selection.training_rows_included,
        "training_rows_left_out": left_out_training,
        "rows_left_out": int(len(features.emotion) - len(y)),
        "error_rows": features.n_errors,
        "warnings": selection.warnings,
        "paths": [str(p) for p in data.paths],
        "models": {},
        "classes": {"classes": scored_classes, "restricted": subset is not None,
                    "description": (f"{', '.join(scored_classes)} (argmax restricted to {len(scored_classes)} of the "
                                    f"bundle's {len(bundle.classes)})") if subset else
                    f"all {len(bundle.classes)} of the bundle's classes"},
    }
    groups = band_groups(bundle, data, normalize=normalize if normalize != "none" else False)
    results["normalize"] = normalize
    results["model_sets"] = {band: name for band, (name, _, _, _, _) in groups.items()}
    probas = {}
    for framework in frameworks:
        proba = np.zeros((len(y), len(bundle.classes)))
        for name, rows, (X_band, segments), keep, window_groups in groups.values():
            frames = [data.frames[i] for i in rows] if data.frames is not None else None
            flags = [data.frame_speech[i] for i in rows] if data.frame_speech is not None else None
            pooled = None
            if window_groups is not None:
                from ser_batch.models.normalize import normalize_groups

                def pooled(values: np.ndarray, groups: Any = window_groups, speech: Any = keep) -> np.ndarray:
                    return normalize_groups(values, groups, speech)
            proba[rows] = bundle.predict_rows(X_band, segments, framework=framework, keep=keep, model_set=name,
                                              frames=frames, frame_speech=flags, normalize=pooled,
                                              embeddings=[data.embeddings[i] for i in rows]
                                              if data.embeddings is not None else None)
        proba = restrict(proba, bundle.classes, subset)
        results["models"][framework] = classification_metrics(y, proba, scored_classes)
        probas[framework] = proba
    results["corpora"] = corpus_metrics(y, probas, data.corpus, scored_classes, corpus_classes)
    if probabilities:
        results.update(probabilities=probas, labels=np.asarray(y), corpus=np.asarray(data.corpus, dtype=object))
    return results


def classes_by_corpus(data: FeatureSet, classes: Sequence[str]) -> dict[str, list[str]]:
    """The bundle's classes that each corpus's labelled rows have (all of them, not only those scored),
    in the bundle's order: ``{corpus: classes}`` (corpus ``None`` shows as ``"?"``)."""
    corpora = np.array([str(c) if c is not None else "?" for c in data.corpus], dtype=object)
    labels = data.emotion.astype(str)
    return {c: [k for k in classes if k in set(labels[corpora == c])] for c in sorted(set(corpora))}


def restricted_metrics(y: Sequence[str], proba: np.ndarray, classes: Sequence[str],
                       keep: Sequence[str]) -> dict[str, Any]:
    """Metrics of the argmax restricted to ``keep`` (:func:`ser_batch.models.classes.restrict`): the
    figure of a model asked to choose only among the classes a corpus has."""
    from ser_batch.models.classes import restrict

    return classification_metrics(y, restrict(proba, classes, keep), list(keep))


def corpus_metrics(y: np.ndarray, probas: dict[str, np.ndarray], corpora: np.ndarray, classes: Sequence[str],
                   corpus_classes: dict[str, list[str]]) -> dict[str, Any]:
    """Metrics per corpus of the rows scored: ``{corpus: {"rows", "classes", "models": {framework:
    metrics with the argmax over all the bundle's classes}, and, for a corpus whose labels cover
    fewer classes than the bundle, "restricted_to": its classes, "restricted": {framework: metrics
    with the argmax restricted to them}}}``."""
    names = np.array([str(c) if c is not None else "?" for c in corpora], dtype=object)
    out: dict[str, Any] = {}
    for corpus in sorted(set(names)):
        rows = names == corpus
        has = corpus_classes.get(corpus, list(classes))
        entry: dict[str, Any] = {"rows": int(rows.sum()), "classes": has,
                                 "models": {f: classification_metrics(y[rows], p[rows], classes)
                                            for f, p in probas.items()}}
        if 2 <= len(has) < len(classes):
            entry["restricted_to"] = has
            entry["restricted"] = {f: restricted_metrics(y[rows], p[rows], classes, has) for f, p in probas.items()}
        out[corpus] = entry
    return out


def format_corpus_metrics(results: dict[str, Any], *, n_classes: int) -> str:
    """Per-corpus table: one line per corpus and model with the argmax over all classes, and for a
    corpus with fewer classes one more line with the argmax restricted to its classes; ``""`` when
    one corpus has all the classes (the overall table says it all)."""
    corpora = results.get("corpora") or {}
    if len(corpora) < 2 and not any("restricted" in e for e in corpora.values()):
        return ""
    lines = [f"{'corpus':12s} {'model':10s} {'accuracy':>9s} {'macro-F1':>9s} {'n':>6s}  argmax over"]
    for corpus, entry in corpora.items():
        for framework, m in entry["models"].items():
            lines.append(f"{corpus[:12]:12s} {framework:10s} {m['accuracy']:9.3f} {m['macro_f1']:9.3f} {m['n']:6d}  "
                         f"all {n_classes} classes")
        for framework, m in entry.get("restricted", {}).items():
            missing = results_missing(entry, n_classes)
            lines.append(f"{corpus[:12]:12s} {framework:10s} {m['accuracy']:9.3f} {m['macro_f1']:9.3f} {m['n']:6d}  "
                         f"restricted: its {len(entry['restricted_to'])} classes{missing}")
    return "\n".join(lines)


def results_missing(entry: dict[str, Any], n_classes: int) -> str:
    all_classes = next(iter(entry["models"].values()))["classes"]
    absent = [c for c in all_classes if c not in entry["restricted_to"]]
    return f" (no {', '.join(absent)})" if absent else ""


def band_groups(bundle: Bundle, data: FeatureSet, *, normalize: bool | str
                ) -> dict[str, tuple[str, np.ndarray, Any, Any, Any]]:
    """The rows of each band with the model set that scores them and their inputs:
    ``{band: (model_set, rows, (X, segments), speech mask over the rows' stacked windows, groups)}``.

    With ``normalize`` (``"speaker"`` or True), clip vectors and windows are z-scored per (actor, band),
    each actor by the speech windows of its own rows here (:mod:`ser_batch.models.normalize`); with
    ``"archive"``, all rows of a band as one group, as ``score --normalize archive`` does an archive.
    ``groups`` is then each stacked window's group (a normalised cnn z-scores its pooled statistics
    by them), else None."""
    from ser_batch.models.estimators import stack_segments
    from ser_batch.models.normalize import normalize_groups
    from ser_batch.pipeline.train_sets import row_bands

    archive = normalize == "archive"
    if normalize and not archive and np.isnan(data.actor).any():
        raise DatasetError(f"--normalize speaker needs the actor of every row; {int(np.isnan(data.actor).sum())} "
                           "rows have none (add actor to labels.csv, or evaluate without --normalize)")
    bands = row_bands(data)
    groups = {}
    for band in sorted(set(bands)):
        rows = np.flatnonzero(bands == band)
        # Clips are summarised as score summarises files: the mean over their windows with speech.
        keep = data.speech_windows(rows, min_speech_ratio=bundle.config.score.min_speech_ratio)
        X = data.X[rows]
        segments = [data.segments[i] for i in rows] if data.segments is not None else None
        window_groups = None
        if normalize:
            row_groups = np.zeros(len(rows)) if archive else data.actor[rows]
            X = normalize_groups(X, row_groups)
            if segments is not None:
                stacked, owner = stack_segments(segments)
                window_groups = row_groups[owner]
                stacked = normalize_groups(stacked, window_groups, keep)
                bounds = np.cumsum([0] + [len(s) for s in segments])
                segments = [stacked[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        groups[band] = (bundle.choose_set(band=band, normalize=bool(normalize)), rows, (X, segments), keep,
                        window_groups)
    return groups


def format_metrics(results: dict[str, Any]) -> str:
    """A readable table: one line per model, then per-class F1."""
    models = results["models"]
    lines = [f"{'model':10s} {'accuracy':>9s} {'macro-F1':>9s} {'n':>6s}"]
    for name, m in models.items():
        lines.append(f"{name:10s} {m['accuracy']:9.3f} {m['macro_f1']:9.3f} {m['n']:6d}")
    if models:
        classes = next(iter(models.values()))["classes"]
        lines.append("")
        lines.append("per-class F1  " + " ".join(f"{c[:9]:>9s}" for c in classes))
        for name, m in models.items():
            lines.append(f"{name:13s} " + " ".join(f"{m['per_class'][c]['f1']:9.2f}" for c in classes))
    return "\n".join(lines)

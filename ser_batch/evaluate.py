"""Honest numbers: classification metrics, and the ``evaluate`` job over a labelled feature set."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ser_batch.bundle import load_bundle
from ser_batch.dataset import load_feature_set
from ser_batch.errors import DatasetError


def classification_metrics(y_true: Sequence[str], proba: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    Parameters
    ----------
    y_true : true labels [shape=(n,)]
    proba : np.ndarray [shape=(n, n_classes)], probabilities in ``classes`` order
    classes : class names

    Returns
    -------
    dict
        JSON-ready; ``confusion[i][j]`` counts rows of true class ``i`` predicted as ``j``.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    classes = list(classes)
    y_true = np.asarray(y_true).astype(str)
    y_pred = np.asarray(classes)[np.argmax(proba, axis=1)]
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, zero_division=0)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "per_class": {
            c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for c, p, r, f, s in zip(classes, precision, recall, f1, support)
        },
        "classes": classes,
        "confusion": confusion_matrix(y_true, y_pred, labels=classes).tolist(),
    }


def evaluate_bundle(model_dir: Path | None, features_dir: Path, *, frameworks: Sequence[str] | None = None,
                    actors: Sequence[int] | None = None) -> dict[str, Any]:
    """Metrics of each model of a bundle (and their ensemble) on a labelled feature set.

    Rows whose label is not one of the bundle's classes are counted and left out;
    ``actors`` keeps only those speakers' rows (e.g. the actors the bundle held out).

    Raises
    ------
    DatasetError
        If the feature set has no labelled row the models know.
    BundleError
        If the bundle is invalid or its feature contract does not match.
    """
    bundle = load_bundle(model_dir)
    features = load_feature_set(features_dir)
    bundle.check_features(features.metadata)
    data = features.labelled()
    known = np.isin(data.emotion.astype(str), bundle.classes)
    if actors:
        known &= np.isin(data.actor, list(actors))
    if not known.any():
        which = f" of actors {', '.join(map(str, actors))}" if actors else ""
        raise DatasetError(f"{features_dir} has no rows{which} labelled with the model's classes "
                           f"({', '.join(bundle.classes)})")
    data = data.subset(known)
    X, y = data.X, data.emotion
    frameworks = list(frameworks or bundle.frameworks)
    if len(bundle.frameworks) > 1 and "both" not in frameworks:
        frameworks.append("both")
    results: dict[str, Any] = {
        "model_dir": str(bundle.path),
        "features_dir": str(features_dir),
        "rows": int(len(y)),
        "actors": sorted(int(a) for a in np.unique(data.actor) if not np.isnan(a)),
        "rows_left_out": int(len(features.emotion) - len(y)),
        "error_rows": features.n_errors,
        "models": {},
    }
    for framework in frameworks:
        proba = bundle.predict_rows(X, data.segments, framework=framework)
        results["models"][framework] = classification_metrics(y, proba, bundle.classes)
    return results


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

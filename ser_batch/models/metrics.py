"""Classification metrics, as train reports them and evaluate prints them."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


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

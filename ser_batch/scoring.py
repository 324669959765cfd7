"""Scoring audio with a model bundle: single files now, whole archives next.

Features are computed by the same function as the extraction job
(:func:`ser_batch.recipes.file_features`), with the bundle's own audio and feature
settings, so a file scores exactly as its extracted row would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ser_batch.bundle import Bundle, FRAMEWORKS
from ser_batch.errors import BundleError, SerBatchError
from ser_batch.recipes import file_features


def predict_files(paths: Sequence[Path], *, bundle: Bundle, framework: str = "both") -> list[dict[str, Any]]:
    """Emotion label and class probabilities for each file.

    Parameters
    ----------
    paths : audio files
    bundle : a loaded model bundle
    framework : "keras", "sklearn" or "both" (each model, plus their averaged ensemble)

    Returns
    -------
    list of dict
        One per file: ``{"path", "duration_s", "predictions": {name: {"label", "probabilities"}},
        "error"}``; a file that cannot be read has ``error`` set and no predictions.
    """
    if framework not in (*FRAMEWORKS, "both"):
        raise BundleError(f"unknown framework {framework!r}; use keras, sklearn or both")
    names = bundle.frameworks if framework == "both" else [framework]
    for name in names:
        bundle.model(name)  # fail early (missing model) before any audio is decoded
    config = bundle.config
    if bundle.aggregation != "segments":
        # A whole-clip model never looks at windows: do not pool them for every file.
        config = config.replace(features={"window_s": 0.0})
    results = []
    for path in paths:
        entry: dict[str, Any] = {"path": str(path), "duration_s": None, "predictions": {}, "error": None}
        try:
            features, info = file_features(Path(path), config=config)
        except SerBatchError as exc:
            entry["error"] = str(exc)
            results.append(entry)
            continue
        entry["duration_s"] = round(info.duration_s, 3)
        probas = {}
        segments = None if features.segments is None else [features.segments]
        for name in names:
            probas[name] = bundle.predict_rows(features.vector[None, :], segments, framework=name)[0]
        if len(names) > 1:
            probas["both"] = np.mean(list(probas.values()), axis=0)
        for name, proba in probas.items():
            entry["predictions"][name] = {
                "label": bundle.classes[int(np.argmax(proba))],
                "probabilities": {c: round(float(p), 4) for c, p in zip(bundle.classes, proba)},
            }
        results.append(entry)
    return results

"""Class subsets: parsing against a bundle's classes, and renormalised probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from ser_batch.errors import ConfigError
from ser_batch.models.classes import parse_classes, restrict

CLASSES = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")


def test_parse_keeps_the_bundle_order_and_refuses_bad_names() -> None:
    assert parse_classes("sad, angry,neutral,happy", CLASSES) == ("neutral", "happy", "sad", "angry")
    assert parse_classes(None, CLASSES) is None
    with pytest.raises(ConfigError, match="unknown class 'bored'"):
        parse_classes("angry,bored", CLASSES)
    with pytest.raises(ConfigError, match="twice"):
        parse_classes("angry,angry,sad", CLASSES)
    with pytest.raises(ConfigError, match="at least two"):
        parse_classes("angry", CLASSES)


def test_restrict_is_the_softmax_over_the_kept_classes() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, len(CLASSES)))
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    keep = ("neutral", "happy", "sad", "angry")
    out = restrict(proba, CLASSES, keep)
    index = [CLASSES.index(c) for c in keep]
    expected = np.exp(logits[:, index]) / np.exp(logits[:, index]).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    assert restrict(proba, CLASSES, None) is proba


def test_a_row_without_evidence_for_any_kept_class_is_uniform() -> None:
    proba = np.zeros((1, len(CLASSES)))
    proba[0, CLASSES.index("calm")] = 1.0
    np.testing.assert_allclose(restrict(proba, CLASSES, ("angry", "sad")), [[0.5, 0.5]])

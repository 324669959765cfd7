"""More than one corpus (issue: multi-corpus training): the corpus column, concatenated feature sets,
--split corpus, the Keras loss mask of absent classes and per-corpus evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ser_batch import schema
from ser_batch.config import load_config
from ser_batch.data.featureset import FeatureSet, concat_feature_sets
from ser_batch.data.labels import Labels, load_labels_csv
from ser_batch.errors import ConfigError, DatasetError
from ser_batch.models import bundle as bundle_io
from ser_batch.pipeline.evaluate import corpus_metrics, format_corpus_metrics, training_rows
from ser_batch.pipeline.extract import corpus_name
from ser_batch.pipeline.extract_shard import row_labels
from ser_batch.pipeline.train import split_rows

META = {"recipe": "fast", "feature_names": ["a", "b"], "config": {"audio": {"sample_rate": 16000}, "features": {}}}


def _set(corpus: str, actors: list[int], labels: list[str], *, paths: list[str] | None = None) -> FeatureSet:
    n = len(actors)
    return FeatureSet(X=np.random.default_rng(0).normal(size=(n, 2)).astype(np.float32),
                      emotion=np.array(labels, dtype=object), actor=np.array(actors, dtype=float),
                      paths=np.array(paths or [f"a{a}/c{i}.wav" for i, a in enumerate(actors)], dtype=object),
                      metadata=META, n_errors=0, corpus=np.full(n, corpus, dtype=object))


RAV = _set("ravdess", [1, 1, 2, 2, 3, 3], ["calm", "sad"] * 3)
EMO = _set("emovo", [101, 101, 102, 102], ["sad", "happy"] * 2)


def test_corpus_from_labels_csv_option_or_folder(tmp_path: Path) -> None:
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label,actor,corpus\na.wav,sad,101,emovo\nb.wav,happy,102,\n")
    labels = load_labels_csv(csv)
    assert labels["a.wav"].corpus == "emovo" and labels["b.wav"].corpus is None
    assert "corpus" not in Labels().as_row()  # not a label column
    assert row_labels("a.wav", labels=labels, corpus="other")[schema.CORPUS] == "emovo"
    assert row_labels("b.wav", labels=labels, corpus="other")[schema.CORPUS] == "other"
    assert corpus_name(tmp_path / "emovo", config=load_config()) == "emovo"
    assert corpus_name(tmp_path / "x", config=load_config(overrides=['extract.corpus="ravdess"'])) == "ravdess"
    assert schema.CORPUS in schema.features_schema(recipe="fast", names=["a"], config={}).names
    assert schema.SCHEMA_VERSION == 3  # the pretrained bundle's feature contract is unchanged


def test_concat_keeps_corpora_and_refuses_mismatches() -> None:
    both = concat_feature_sets([RAV, EMO], names=["r", "e"])
    assert len(both.paths) == 10 and list(both.corpus).count("emovo") == 4
    other = FeatureSet(**{**EMO.__dict__, "metadata": {**META, "recipe": "rich"}})
    with pytest.raises(DatasetError, match="other settings"):
        concat_feature_sets([RAV, other], names=["r", "e"])
    with pytest.raises(DatasetError, match="in two of the feature sets"):
        concat_feature_sets([RAV, RAV], names=["r", "r2"])
    # The cnn's frames go along when every set has them (they were dropped: train refused cnn).
    frames = lambda s, k: FeatureSet(**{**s.__dict__, "frames": [np.full((3, 2), k + i) for i in range(len(s.paths))]})
    joined = concat_feature_sets([frames(RAV, 0), frames(EMO, 100)], names=["r", "e"])
    assert [int(f[0, 0]) for f in joined.frames] == [0, 1, 2, 3, 4, 5, 100, 101, 102, 103]
    assert concat_feature_sets([frames(RAV, 0), EMO], names=["r", "e"]).frames is None


def test_split_corpus_and_speaker_split_across_corpora() -> None:
    both = concat_feature_sets([RAV, EMO], names=["r", "e"])
    split = split_rows(both, config=load_config(overrides=['train.split="corpus"', 'train.test_corpus="emovo"']))
    assert set(both.corpus[split.test]) == {"emovo"} and set(both.corpus[split.train]) == {"ravdess"}
    assert split.kind == "corpus" and split.test_corpus == "emovo"
    with pytest.raises(DatasetError, match="not in the data"):
        split_rows(both, config=load_config(overrides=['train.split="corpus"', 'train.test_corpus="x"']))
    with pytest.raises(ConfigError, match="test_corpus"):
        load_config(overrides=['train.split="corpus"'])
    speaker = split_rows(both, config=load_config(overrides=["train.test_actors=[3,102]"]))
    assert set(both.actor[speaker.test]) == {3.0, 102.0}
    clash = concat_feature_sets([RAV, _set("emovo", [1, 1], ["sad", "happy"], paths=["x", "y"])], names=["r", "e"])
    with pytest.raises(DatasetError, match="actor 1 is in corpora"):
        split_rows(clash, config=load_config(overrides=["train.test_actors=[2]"]))


def test_masked_loss_gives_an_absent_class_no_gradient() -> None:
    import tensorflow as tf

    from ser_batch.models.estimators import class_mask, masked_crossentropy

    codes = np.array([1, 2, 0, 1])  # classes 0 calm, 1 happy, 2 sad
    groups = np.array(["emovo", "emovo", "ravdess", "ravdess"])
    mask = class_mask(codes, groups, 3)
    assert mask.tolist() == [[0, 1, 1], [0, 1, 1], [1, 1, 0], [1, 1, 0]]
    onehot = np.eye(3, dtype=np.float32)[codes]
    logits = tf.Variable(np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32))
    loss = masked_crossentropy(3, label_smoothing=0.1)
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(loss(np.concatenate([onehot, mask], axis=1), tf.nn.softmax(logits)))
    grad = tape.gradient(value, logits).numpy()
    assert np.abs(grad[:2, 0]).max() < 1e-6  # EMOVO rows never push calm down
    assert np.abs(grad[2:, 2]).max() < 1e-6
    assert np.abs(grad[:2, 1:]).min() > 1e-3
    plain = tf.keras.losses.CategoricalCrossentropy(label_smoothing=0.1)
    with tf.GradientTape() as tape:
        value = plain(onehot, tf.nn.softmax(logits))
    assert (tape.gradient(value, logits).numpy()[:2, 0] > 1e-3).all()  # unmasked: calm is pushed down
    full = np.ones((4, 3), dtype=np.float32)  # nothing absent: the masked loss is the plain one
    np.testing.assert_allclose(loss(np.concatenate([onehot, full], axis=1), tf.nn.softmax(logits)).numpy().mean(),
                               plain(onehot, tf.nn.softmax(logits)).numpy(), rtol=1e-5)


def test_training_files_are_corpus_qualified(tmp_path: Path) -> None:
    both = concat_feature_sets([RAV, _set("emovo", [101, 102], ["sad", "happy"], paths=list(RAV.paths[:2]))],
                               names=["r", "e"])
    listed = [bundle_io.training_key("ravdess", p) for p in RAV.paths[:2]] + [bundle_io.training_key("emovo", "x.wav")]
    manifest = {"bundle_format": 2, "classes": ["calm", "happy", "sad"], "models": ["sklearn"],
                "training_data": {"files": bundle_io.write_training_files(tmp_path, listed, qualified=True)}}
    bundle = bundle_io.Bundle(path=tmp_path, manifest=manifest)
    trained, how = training_rows(bundle, both, both, tmp_path)
    assert trained.tolist() == [True, True] + [False] * 6  # the same paths in emovo are not training rows
    assert "by corpus and path" in how
    # RAVDESS extracted without --corpus (named after its folder) is still recognised by path.
    renamed = _set("Audio_Speech_Actors_01-20_16k", [1, 1, 2], ["calm", "sad", "calm"], paths=list(RAV.paths[:3]))
    trained, _ = training_rows(bundle, renamed, renamed, tmp_path)
    assert trained.tolist() == [True, True, False]


def test_per_corpus_metrics_with_restricted_argmax() -> None:
    classes = ["calm", "happy", "sad"]
    y = np.array(["sad", "happy", "calm", "sad"], dtype=object)
    corpora = np.array(["emovo", "emovo", "ravdess", "ravdess"], dtype=object)
    # emovo row 0 is sad but calm scores highest: wrong over all classes, right restricted to emovo's
    proba = np.array([[.5, .1, .4], [.1, .8, .1], [.7, .2, .1], [.1, .1, .8]])
    results = corpus_metrics(y, {"keras": proba}, corpora, classes, {"emovo": ["happy", "sad"], "ravdess": classes})
    assert results["emovo"]["models"]["keras"]["accuracy"] == 0.5
    assert results["emovo"]["restricted"]["keras"]["accuracy"] == 1.0
    assert results["emovo"]["restricted_to"] == ["happy", "sad"] and "restricted" not in results["ravdess"]
    text = format_corpus_metrics({"corpora": results}, n_classes=3)
    assert "all 3 classes" in text and "restricted: its 2 classes (no calm)" in text

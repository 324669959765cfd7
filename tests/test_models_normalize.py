"""Per-speaker / per-file normalisation and model sets (ser_batch/models/normalize.py, model_sets.py,
train_sets.py, and their use in bundle.py, train.py, evaluate.py, scoring.py and score.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from click.testing import CliRunner

from ser_batch import schema
from ser_batch.cli import main
from ser_batch.config import Config, config_to_dict, load_config
from ser_batch.data import parts as storage
from ser_batch.data.featureset import FeatureSet
from ser_batch.errors import BundleError, DatasetError
from ser_batch.features.names import feature_names
from ser_batch.models import bundle as bundle_io
from ser_batch.models.networks import ARRAYS, DenseNetwork
from ser_batch.models.normalize import STD_FLOOR, fit_group_stats, fit_stats, normalize_groups
from ser_batch.pipeline.train import split_rows
from ser_batch.pipeline.train_sets import plan_sets

from conftest import write_audio

# ------------------------------------------------------------------ the statistics


def test_stats_come_from_speech_windows_with_a_floored_std() -> None:
    rng = np.random.default_rng(0)
    speech = rng.normal(5.0, 2.0, size=(200, 3))
    silence = np.full((50, 3), -80.0)
    vectors = np.concatenate([speech, silence])
    mask = np.r_[np.ones(200, bool), np.zeros(50, bool)]
    stats = fit_stats(vectors, mask)
    assert stats.speech_only and stats.n == 200
    np.testing.assert_allclose(stats.mean, speech.mean(axis=0))
    z = stats.apply(speech)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=0), 1, atol=1e-5)
    # a group without speech falls back on all its windows; a constant feature is not blown up
    constant = fit_stats(np.ones((10, 2)), np.zeros(10, bool))
    assert not constant.speech_only and np.all(constant.std == STD_FLOOR)
    with pytest.raises(DatasetError):
        fit_stats(np.zeros((0, 3)))


def test_each_group_is_normalised_by_its_own_statistics_only() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, (40, 2)), rng.normal(100, 10, (60, 2))
    vectors, groups = np.concatenate([a, b]), ["a"] * 40 + ["b"] * 60
    z = normalize_groups(vectors, groups)
    np.testing.assert_allclose(z[:40], fit_stats(a).apply(a), rtol=1e-5)
    np.testing.assert_allclose(z[40:], fit_stats(b).apply(b), rtol=1e-5)
    assert set(fit_group_stats(vectors, groups)) == {"a", "b"}


# ------------------------------------------------------------- training sets, splits


def _windows_set(actors: list[int], labels: list[str], *, paths: list[str] | None = None,
                 bands: list[str] | None = None, augment: list[str | None] | None = None) -> FeatureSet:
    """Rows of 4 windows each; actor ``a``'s windows sit around ``10 * a`` (a speaker offset)."""
    rng = np.random.default_rng(0)
    n = len(actors)
    segments = [rng.normal(10.0 * a, 1.0 + a, size=(4, 3)).astype(np.float32) for a in actors]
    data = FeatureSet(X=np.stack([s.mean(axis=0) for s in segments]), emotion=np.array(labels, dtype=object),
                      actor=np.array(actors, dtype=float),
                      paths=np.array(paths or [f"f{i}.wav" for i in range(n)], dtype=object), metadata={},
                      n_errors=0, segments=segments, speech_ratio=[np.ones(4, dtype=np.float32)] * n)
    # The columns the augmentation branch adds (absent: all wide originals).
    if bands is not None:
        object.__setattr__(data, "band", np.array(bands, dtype=object))
    if augment is not None:
        object.__setattr__(data, "augment", np.array(augment, dtype=object))
    return data


def test_speaker_sets_use_per_actor_stats_never_pooled_across_the_split() -> None:
    actors = [a for a in (1, 2, 3) for _ in range(6)]
    data = _windows_set(actors, ["happy", "sad"] * 9)
    config = load_config(overrides=['train.split="random"', "train.test_size=0.34", 'train.normalize="speaker"'])
    split = split_rows(data, config=config)
    # the random split puts actors on both sides: their two parts must get separate statistics
    assert set(data.actor[split.train]) & set(data.actor[split.test])
    sets = {s.name: s for s in plan_sets(data, split.train, split.test, config=config, use_segments=True)}
    assert list(sets) == ["global", "speaker"]
    speaker = sets["speaker"]
    train_actor = np.repeat(data.actor[split.train], 4)
    for actor in set(train_actor):
        part = speaker.X_train[train_actor == actor]
        np.testing.assert_allclose(part.mean(axis=0), 0, atol=1e-4)
        np.testing.assert_allclose(part.std(axis=0), 1, atol=1e-3)
    # the test windows are exactly those of the test rows normalised on their own, per actor
    test_windows = np.concatenate([data.segments[i] for i in split.test])
    groups = list(zip(np.repeat(data.actor[split.test], 4), ["wide"] * len(test_windows)))
    expected = normalize_groups(test_windows, groups)
    np.testing.assert_allclose(speaker.X_test, expected, rtol=1e-5)
    # changing training rows changes nothing in the test part
    moved = _windows_set(actors, ["happy", "sad"] * 9)
    for i in split.train:
        moved.segments[i][:] += 1000.0
    again = {s.name: s for s in plan_sets(moved, split.train, split.test, config=config, use_segments=True)}
    np.testing.assert_array_equal(again["speaker"].X_test, speaker.X_test)
    # the global set is untouched
    np.testing.assert_array_equal(sets["global"].X_test, test_windows)


def test_speaker_normalisation_needs_actors() -> None:
    data = _windows_set([1, 1, 2, 2], ["happy", "sad"] * 2)
    data.actor[0] = np.nan
    config = load_config(overrides=['train.normalize="speaker"'])
    with pytest.raises(DatasetError, match="actor column"):
        plan_sets(data, np.arange(2), np.arange(2, 4), config=config, use_segments=True)


def test_narrow_rows_get_their_own_sets_unless_mixed() -> None:
    actors = [a for a in (1, 2) for _ in range(8)]
    labels = [("happy", "sad")[(i // 2) % 2] for i in range(16)]
    paths = [f"f{i // 2}.wav" for i in range(16)]  # every file once as is and once as a telephone copy
    bands = ["wide", "narrow"] * 8
    augment = [None, "telephone-ulaw"] * 8
    data = _windows_set(actors, labels, paths=paths, bands=bands, augment=augment)
    train, test = np.flatnonzero(data.actor == 1), np.flatnonzero(data.actor == 2)
    config = load_config(overrides=['train.normalize="speaker"'])
    sets = {s.name: s for s in plan_sets(data, train, test, config=config, use_segments=True)}
    assert list(sets) == ["global", "speaker", "narrow", "narrow-speaker"]
    assert len(sets["global"].X_train) == len(sets["narrow"].X_train) == 4 * 4
    # wide metrics on the original test rows only; narrow ones on the telephone copies of test files
    assert all(augment[i] is None for i in sets["global"].test_index)
    assert all(bands[i] == "narrow" for i in sets["narrow"].test_index)
    assert "telephone" in sets["narrow"].test_on
    mixed = plan_sets(data, train, test, config=config.replace(train={"narrowband": "mixed"}), use_segments=True)
    assert [s.name for s in mixed] == ["global", "speaker"]
    assert len(mixed[0].X_train) == 8 * 4 and len(mixed[0].test_index) == 4


def test_random_split_keeps_every_copy_of_a_file_on_one_side() -> None:
    paths = [f"f{i // 3}.wav" for i in range(60)]
    labels = [("happy", "sad")[(i // 3) % 2] for i in range(60)]
    data = _windows_set([1] * 60, labels, paths=paths, augment=[None, "noise-20db", "telephone-ulaw"] * 20)
    split = split_rows(data, config=load_config(overrides=['train.split="random"']))
    assert not set(data.paths[split.train]) & set(data.paths[split.test])
    assert len(split.test) == 3 * 6


# ------------------------------------------------------------------- bundle model sets


def make_set_bundle(out: Path, *, sets: dict[str, dict[str, str]]) -> Path:
    """The pretrained bundle's global models plus extra model sets (arrays only; ``sets={}``: a
    bundle with global models only). A set with normalize "speaker" gets the global networks
    without their standardisation (inputs arrive z-scored already)."""
    source = bundle_io.default_bundle_path()
    staging = bundle_io.staging_dir(out)
    manifest = json.loads((source / bundle_io.MANIFEST).read_text())
    manifest.pop("model_sets", None)
    manifest.pop("ensemble", None)  # every model of each set, equal weights
    # The dense models only: these tests are about sets (the cnn has tests of its own).
    manifest["models"] = [m for m in manifest["models"] if m != "cnn"]
    for name in manifest["files"]:
        if "/" not in name and name != ARRAYS["cnn"]:  # the root's files: the global set
            shutil.copy2(source / name, staging / name)
    entries = {"global": {"dir": "", "band": "wide", "normalize": "none", "models": manifest["models"]}}
    for name, entry in sets.items():
        (staging / name).mkdir()
        for framework in manifest["models"]:
            with np.load(source / ARRAYS[framework]) as arrays:
                saved = {k: arrays[k] for k in arrays.files}
            if entry["normalize"] == "speaker":
                saved["mean"], saved["scale"] = np.zeros_like(saved["mean"]), np.ones_like(saved["scale"])
            np.savez_compressed(staging / name / ARRAYS[framework], **saved)
        entries[name] = dict(entry, dir=name, models=manifest["models"])
    manifest = {k: v for k, v in manifest.items() if k != "files"}
    manifest["model_sets"] = entries
    return bundle_io.finalize_bundle(staging, out, manifest=manifest, overwrite=False)


ALL_SETS = {"speaker": {"band": "wide", "normalize": "speaker"}, "narrow": {"band": "narrow", "normalize": "none"},
            "narrow-speaker": {"band": "narrow", "normalize": "speaker"}}


@pytest.fixture(scope="module")
def set_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_set_bundle(tmp_path_factory.mktemp("sets") / "bundle", sets=ALL_SETS)


def test_bundle_round_trip_of_model_sets(set_bundle: Path, tmp_path: Path) -> None:
    bundle = bundle_io.load_bundle(set_bundle)
    assert set(bundle.model_sets) == {"global", *ALL_SETS} and bundle.has_normalized
    assert bundle.choose_set(16000) == "global" and bundle.choose_set(8000) == "narrow"
    assert bundle.choose_set(44100, True) == "speaker" and bundle.choose_set(8000, True) == "narrow-speaker"
    X = np.random.default_rng(0).normal(size=(5, bundle.manifest["features"]["n_features"])).astype(np.float32)
    direct = DenseNetwork.load(set_bundle / "speaker" / ARRAYS["keras"], classes=bundle.classes).predict_proba(X)
    np.testing.assert_allclose(bundle.predict_proba(X, framework="keras", model_set="speaker"), direct, rtol=1e-6)
    assert not np.allclose(bundle.predict_proba(X, framework="keras"), direct)
    with pytest.raises(BundleError, match="no model set 'nope'"):
        bundle.predict_proba(X, framework="keras", model_set="nope")
    # a wideband-only bundle scores 8 kHz inputs with its global models; normalised wide serves narrow
    only_speaker = bundle_io.load_bundle(make_set_bundle(tmp_path / "b", sets={"speaker": ALL_SETS["speaker"]}))
    assert only_speaker.choose_set(8000) == "global" and only_speaker.choose_set(8000, True) == "speaker"
    # without sets (format 2 without the key): global only, normalising refused
    plain = bundle_io.load_bundle(make_set_bundle(tmp_path / "plain", sets={}))
    assert list(plain.model_sets) == ["global"] and plain.choose_set(8000) == "global"
    with pytest.raises(BundleError, match="no normalised models"):
        plain.choose_set(16000, True)
    # a set's files are checksummed like the rest
    copy = tmp_path / "tampered"
    shutil.copytree(set_bundle, copy)
    (copy / "narrow" / ARRAYS["sklearn"]).write_bytes(b"x")
    with pytest.raises(BundleError, match="narrow/sklearn_mlp.npz"):
        bundle_io.load_bundle(copy)


# ----------------------------------------------------------------- scoring (Ray)


def _expected_stream_proba(bundle: bundle_io.Bundle, path: Path, *, normalize: bool, model_set: str) -> np.ndarray:
    from ser_batch.inference.scoring import file_windows

    stream = file_windows(path, bundle=bundle, config=Config())[0]
    vectors = np.concatenate([w.vectors for w in stream.windows])
    if normalize:
        vectors = fit_stats(vectors, stream.speech).apply(vectors)
    return bundle.predict_proba(vectors, framework="both", model_set=model_set)


def test_score_normalize_file_with_enough_and_too_little_speech(set_bundle: Path, tmp_path: Path,
                                                                 ray_session: None) -> None:
    archive = tmp_path / "calls"
    long = write_audio(archive / "long.wav", duration_s=12.0, seed=1)
    short = write_audio(archive / "short.wav", duration_s=2.0, seed=2)
    write_audio(archive / "phone.wav", duration_s=12.0, sample_rate=8000, subtype="ULAW", seed=3)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["score", str(archive), "--out", str(out), "--model", str(set_bundle),
                                       "--normalize", "file", "--set", "score.min_normalize_s=4.0",
                                       "--set", "score.chunk_s=3.0", "--no-progress"])
    assert result.exit_code == 0, result.output
    files = pd.read_parquet(out / "files").set_index("path")
    assert files.loc["long.wav", schema.SPEECH_S] >= 4.0 > files.loc["short.wav", schema.SPEECH_S]
    assert files.loc["long.wav", schema.NORMALIZED] and files.loc["long.wav", schema.MODEL_SET] == "speaker"
    assert not files.loc["short.wav", schema.NORMALIZED] and files.loc["short.wav", schema.MODEL_SET] == "global"
    assert files.loc["phone.wav", schema.MODEL_SET] == "narrow-speaker" and files.loc["phone.wav", schema.NORMALIZED]
    # the whole stream was scored at once (not cut by chunk_s) on its own z-scored windows
    bundle = bundle_io.load_bundle(set_bundle)
    segments = pd.read_parquet(out / "segments")
    columns = [schema.proba_column(c) for c in bundle.classes]
    for path, normalize, model_set in ((long, True, "speaker"), (short, False, "global")):
        got = segments[segments[schema.PATH] == path.name].sort_values(schema.START_S)[columns].to_numpy()
        np.testing.assert_allclose(got, _expected_stream_proba(bundle, path, normalize=normalize,
                                                               model_set=model_set), atol=1e-5)
    # normalising is part of the folder's settings: a plain run into it is refused
    again = CliRunner().invoke(main, ["score", str(archive), "--out", str(out), "--model", str(set_bundle),
                                      "--no-progress"])
    assert again.exit_code == 1 and "normalize 'file' -> 'none'" in again.output


def test_telephony_input_picks_the_narrow_set_without_normalising(set_bundle: Path, tmp_path: Path,
                                                                   ray_session: None) -> None:
    from ser_batch.pipeline.score import run_score

    write_audio(tmp_path / "in" / "phone.wav", duration_s=3.0, sample_rate=8000, subtype="ULAW", seed=3)
    write_audio(tmp_path / "in" / "wide.flac", duration_s=3.0, seed=4)
    run_score(tmp_path / "in", tmp_path / "out", config=Config(), model_dir=set_bundle, progress=False)
    files = pd.read_parquet(tmp_path / "out" / "files").set_index("path")
    assert files.loc["phone.wav", schema.MODEL_SET] == "narrow" and files.loc["wide.flac", schema.MODEL_SET] == "global"
    assert not files[schema.NORMALIZED].any()


def test_normalize_file_is_refused_without_normalised_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ser_batch.audio.decode as audio

    write_audio(tmp_path / "in" / "a.wav", duration_s=1.0)
    monkeypatch.setattr(audio, "iter_audio_blocks", lambda *a, **k: pytest.fail("decoded audio"))
    monkeypatch.setattr(audio, "probe_audio", lambda *a, **k: pytest.fail("read a header"))
    plain = make_set_bundle(tmp_path / "plain", sets={})
    result = CliRunner().invoke(main, ["score", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                                       "--model", str(plain), "--normalize", "file", "--no-progress"])
    assert result.exit_code == 1
    assert "has no normalised models" in result.output and "--normalize speaker" in result.output
    assert not (tmp_path / "out" / "files").exists()
    from ser_batch.inference.scoring import predict_files

    with pytest.raises(BundleError, match="no normalised models"):
        predict_files([tmp_path / "in" / "a.wav"], bundle=bundle_io.load_bundle(plain),
                      config=load_config(overrides=['score.normalize="file"']))


# ------------------------------------------------------- train and evaluate (Ray, tiny)


def _write_features(out: Path, data_rows: int = 48) -> Path:
    """A synthetic rich feature set: 4 actors, 2 emotions, 4 windows per clip, each actor offset."""
    cfg = load_config(overrides=['features.recipe="rich"'])
    names = feature_names(cfg.features)
    table_schema = schema.features_schema(recipe=cfg.features.recipe, names=names, config=config_to_dict(cfg))
    rng = np.random.default_rng(0)
    rows: dict[str, list] = {f.name: [] for f in table_schema}
    for i in range(data_rows):
        actor, emotion = 1 + i % 4, ("happy", "sad")[(i // 4) % 2]
        windows = rng.normal(5.0 * actor + (2.0 if emotion == "happy" else 0.0), 1.0, (4, len(names)))
        values = {schema.PATH: f"Actor_{actor:02d}/clip_{i}.wav", schema.EMOTION: emotion, schema.ACTOR: actor,
                  schema.DURATION_S: 3.0, schema.SAMPLE_RATE_IN: 16000, schema.CHANNELS_IN: 1,
                  schema.FEATURES: windows.mean(axis=0).tolist(), schema.SEGMENTS: windows.tolist(),
                  schema.SEGMENT_STARTS_S: [0.0, 0.5, 1.0, 1.5], schema.SEGMENT_SPEECH_RATIO: [1.0] * 4}
        for name in rows:
            rows[name].append(values.get(name))
    out.mkdir(parents=True)
    storage.write_table_atomic(pa.Table.from_pydict(rows, schema=table_schema), out / storage.part_name(0, "0" * 12))
    return out


def test_train_and_evaluate_normalize_speaker(tmp_path: Path, ray_session: None) -> None:
    features = _write_features(tmp_path / "features")
    out = tmp_path / "bundle"
    result = CliRunner().invoke(main, ["train", str(features), "--out", str(out), "--models", "sklearn",
                                       "--normalize", "speaker", "--test-actors", "4",
                                       "--set", "sklearn.max_iter=30", "--set", "sklearn.hidden_layer_sizes=[8]"])
    assert result.exit_code == 0, result.output
    assert "(model set speaker)" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["model_sets"]) == {"global", "speaker"}
    assert manifest["model_sets"]["speaker"]["normalize"] == "speaker"
    assert manifest["model_sets"]["speaker"]["metrics"]["sklearn"]["n"] == 12
    # the extra set keeps only its array export
    assert sorted(p.name for p in (out / "speaker").iterdir()) == ["sklearn_mlp.npz"]
    bundle = bundle_io.load_bundle(out)
    assert bundle.choose_set(16000, True) == "speaker"

    from ser_batch.pipeline.evaluate import evaluate_bundle

    plain = evaluate_bundle(out, features)
    normalised = evaluate_bundle(out, features, normalize="speaker")
    assert plain["model_sets"] == {"wide": "global"} and normalised["model_sets"] == {"wide": "speaker"}
    # evaluate reproduces the figure training measured for the set
    assert normalised["models"]["sklearn"]["accuracy"] == pytest.approx(
        manifest["model_sets"]["speaker"]["metrics"]["sklearn"]["accuracy"])
    # the actor offset dominates the raw features; per-actor z-scoring removes it
    assert normalised["models"]["sklearn"]["accuracy"] > plain["models"]["sklearn"]["accuracy"]
    plain = make_set_bundle(tmp_path / "plain", sets={})
    refused = CliRunner().invoke(main, ["evaluate", str(plain), str(features),
                                        "--normalize", "speaker"])
    assert refused.exit_code == 1 and "no normalised models" in refused.output


def _streams(rng: np.random.Generator, windows: int) -> list:
    """One stream of ``windows`` full windows (every 16 frames) of random log-mel frames, all speech."""
    from ser_batch.features.melframes import StreamFrames

    n = 16 * (windows - 1) + 47
    starts = np.arange(windows) * 16
    return [StreamFrames.whole(rng.normal(-3.0, 1.0, size=(n, 64)).astype(np.float32), np.ones(n, dtype=bool),
                               starts, starts + 47)]


def test_pretrained_bundle_has_every_model_set_and_scores_telephony_with_the_narrow_ones() -> None:
    bundle = bundle_io.load_bundle()
    assert set(bundle.model_sets) == {"global", "speaker", "narrow", "narrow-speaker"}
    assert bundle.choose_set(8000) == "narrow" and bundle.choose_set(8000, True) == "narrow-speaker"
    assert bundle.choose_set(16000) == "global" and bundle.choose_set(48000, True) == "speaker"
    # The ensembles chosen on the transfer yardstick (docs/accuracy.md): the cnn alone in the plain
    # sets, so scoring skips the window vectors; all three, each set's own, in the normalised ones.
    assert bundle.ensemble_weights("global") == bundle.ensemble_weights("narrow") == {"cnn": 1.0}
    assert bundle.ensemble("speaker") == [("keras", "speaker"), ("sklearn", "speaker"), ("cnn", "speaker")]
    assert bundle.ensemble_weights("narrow-speaker") == pytest.approx({"keras": 1 / 3, "sklearn": 1 / 3, "cnn": 1 / 3})
    assert not bundle.reads_vectors("both") and bundle.reads_vectors("both", normalize=True)
    X = np.random.default_rng(2).normal(size=(4, bundle.manifest["features"]["n_features"])).astype(np.float32)
    frames = _streams(np.random.default_rng(3), 4)

    def zscore(pooled: np.ndarray) -> np.ndarray:
        return (pooled - pooled.mean(axis=0)) / (pooled.std(axis=0) + 1e-6)

    outputs = {name: bundle.predict_proba(X, framework="both", model_set=name, frames=frames,
                                          normalize=zscore if entry.normalized else None)
               for name, entry in bundle.model_sets.items()}
    assert all(np.allclose(o.sum(axis=1), 1.0) for o in outputs.values())
    assert not np.allclose(outputs["global"], outputs["narrow"])  # four different networks, not one copied
    assert not np.allclose(outputs["speaker"], outputs["narrow-speaker"])


def test_a_normalised_set_without_a_cnn_borrows_its_bands_plain_cnn(tmp_path: Path) -> None:
    """A normalised set without a cnn of its own (bundles before `train --normalize speaker` fitted
    one) borrows its band's plain cnn: without it a normalised stream (`score --normalize file`)
    lost the cnn's 7 points (docs/accuracy.md)."""
    bundle = bundle_io.load_bundle(_cnn_set_bundle(tmp_path / "bundle", speaker_cnn=False))
    assert bundle.ensemble("global") == [("keras", "global"), ("sklearn", "global"), ("cnn", "global")]
    assert bundle.ensemble("speaker") == [("keras", "speaker"), ("sklearn", "speaker"), ("cnn", "global")]
    X = np.random.default_rng(4).normal(size=(3, bundle.manifest["features"]["n_features"])).astype(np.float32)
    frames = _streams(np.random.default_rng(5), 3)
    both = bundle.predict_proba(X, framework="both", model_set="speaker", frames=frames)
    parts = [bundle.predict_proba(X, framework="keras", model_set="speaker"),
             bundle.predict_proba(X, framework="sklearn", model_set="speaker"),
             bundle.predict_proba(X, framework="cnn", model_set="global", frames=frames)]
    np.testing.assert_allclose(both, np.mean(parts, axis=0), rtol=1e-6)
    # `--framework cnn` on a normalised set is the plain set's cnn, not an error.
    np.testing.assert_allclose(bundle.predict_proba(X, framework="cnn", model_set="speaker", frames=frames),
                               parts[2], rtol=1e-6)


# -------------------------------------------------- archive statistics, a normalised cnn


def test_archive_sums_of_any_split_equal_the_statistics_of_all() -> None:
    from ser_batch.models.normalize import StatsSums

    rng = np.random.default_rng(7)
    vectors = rng.normal(3.0, 2.0, size=(500, 6)) * np.array([1, 10, 0.001, 1, 1, 1])
    speech = rng.random(500) < 0.7
    whole = fit_stats(vectors, speech)
    for cuts in ([250], [1, 499], [100, 101, 300, 450]):
        parts = [StatsSums.of(v, s) for v, s in zip(np.split(vectors, cuts), np.split(speech, cuts))]
        merged = parts[0]
        for part in parts[1:]:
            merged = merged.merge(part)
        got = merged.stats()
        assert got.n == whole.n == int(speech.sum())
        np.testing.assert_allclose(got.mean, whole.mean, rtol=1e-12)
        np.testing.assert_allclose(got.std, whole.std, rtol=1e-9)
        again = StatsSums.from_json(json.loads(json.dumps(merged.to_json())))
        assert again.n == merged.n and np.array_equal(again.total, merged.total)
        assert np.array_equal(again.squares, merged.squares)
    with pytest.raises(DatasetError, match="no window with speech"):
        StatsSums.empty(6).stats()
    with pytest.raises(DatasetError, match="unreadable"):
        StatsSums.from_json({"n": 1, "total": [1.0, float("nan")], "squares": [1.0, 1.0]})


def _cnn_set_bundle(out: Path, *, speaker_cnn: bool = True) -> Path:
    """The pretrained bundle's dense models, plus a random stream cnn in the global set and, in the
    speaker set (unless not ``speaker_cnn``), the same encoder with another head that reads
    normalised statistics."""
    from ser_batch.config import CnnConfig
    from ser_batch.models.networks import read_arrays
    from ser_batch.models.sequence import build_network, export_stream_network

    base = make_set_bundle(out.with_name(out.name + "-base"), sets={"speaker": ALL_SETS["speaker"]})
    staging = bundle_io.staging_dir(out)
    manifest = json.loads((base / bundle_io.MANIFEST).read_text())
    for name in manifest["files"]:
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(base / name, staging / name)
    params = CnnConfig(width=16, dense=8, kernels=(3, 3), dilations=(1, 2))
    model = build_network(params, n_bands=64, n_classes=len(manifest["classes"]))
    export_stream_network(model, staging / ARRAYS["cnn"], params=params, context=31)
    arrays = read_arrays(staging / ARRAYS["cnn"])
    rng = np.random.default_rng(11)
    arrays["dense_kernel"] = rng.normal(0, 0.3, arrays["dense_kernel"].shape).astype(np.float32)
    arrays["normalized"] = np.array(1, dtype=np.int64)
    if speaker_cnn:
        np.savez_compressed(staging / "speaker" / ARRAYS["cnn"], **arrays)
    manifest = {k: v for k, v in manifest.items() if k != "files"}
    manifest["models"] = [*manifest["models"], "cnn"]
    for name, entry in manifest["model_sets"].items():
        if speaker_cnn or name == "global":
            entry["models"] = [*entry["models"], "cnn"]
    return bundle_io.finalize_bundle(staging, out, manifest=manifest, overwrite=False)


def test_a_normalised_sets_own_cnn_scores_z_scored_pooled_statistics(tmp_path: Path) -> None:
    """A normalised set's own cnn (`train --normalize speaker` fits one) replaces the borrowed plain
    one; its head reads pooled statistics z-scored per stream (--normalize file) or by the archive's
    statistics (--normalize archive), and refuses to score without them."""
    from ser_batch.inference.scoring import ArchiveStats, archive_sums, attach_probabilities, file_windows
    from ser_batch.models.normalize import StatsSums

    bundle = bundle_io.load_bundle(_cnn_set_bundle(tmp_path / "bundle"))
    assert bundle.ensemble("speaker") == [("keras", "speaker"), ("sklearn", "speaker"), ("cnn", "speaker")]
    cnn = bundle.model("cnn", "speaker")
    assert cnn.normalized and not bundle.model("cnn").normalized
    path = write_audio(tmp_path / "call.wav", duration_s=25.0, seed=4)
    config = Config().replace(score={"normalize": "file", "min_normalize_s": 5.0})
    [stream] = file_windows(path, bundle=bundle, config=config)
    attach_probabilities(bundle, [stream], framework="cnn", score=config.score)
    assert stream.summary.normalized and stream.summary.model_set == "speaker"
    frames = [w.frames for w in stream.windows]
    pooled = cnn.pool(frames)
    expected = cnn.head(fit_stats(pooled, stream.speech).apply(pooled))
    np.testing.assert_allclose(stream.proba, expected, atol=1e-6)
    with pytest.raises(BundleError, match="normalised statistics"):
        bundle.predict_proba(np.zeros((len(pooled), 0)), framework="cnn", model_set="speaker", frames=frames)

    # --normalize archive: the first pass's sums are those of the speech windows' inputs; the second
    # pass z-scores each window by them, as the blocks come.
    sums = archive_sums(path, bundle=bundle, config=Config().replace(score={"normalize": "archive"}))
    vectors = np.concatenate([w.vectors for w in stream.windows])
    expected_sums = {"vectors": StatsSums.of(vectors, stream.speech), "cnn": StatsSums.of(pooled, stream.speech)}
    assert set(sums) == {"speaker"} and set(sums["speaker"]) == set(expected_sums)
    for kind, want in expected_sums.items():
        np.testing.assert_allclose(sums["speaker"][kind].total, want.total, rtol=1e-6)
    archive = ArchiveStats.from_sums(sums)
    config = Config().replace(score={"normalize": "archive", "block_s": 7.0})
    [scored] = file_windows(path, bundle=bundle, config=config, framework="both", archive=archive)
    weights = bundle.ensemble_weights("speaker")
    stats_v, stats_p = archive.of("speaker", "vectors"), archive.of("speaker", "cnn")
    z = stats_v.apply(vectors)
    expected = sum(weights[f] * bundle.predict_proba(z, framework=f, model_set="speaker") for f in ("keras", "sklearn"))
    expected = expected + weights["cnn"] * cnn.head(stats_p.apply(pooled))
    assert scored.summary.normalized and scored.summary.model_set == "speaker"
    np.testing.assert_allclose(scored.proba, expected, atol=1e-5)
    with pytest.raises(BundleError, match="archive's statistics"):
        file_windows(path, bundle=bundle, config=config, framework="both")


def test_score_normalize_archive_two_passes_one_statistic_reused_and_kept(tmp_path: Path) -> None:
    """`score --normalize archive`: a first pass takes the statistics of every speech window of the
    input (the same in one shard or many), the second scores every stream z-scored by them; they are
    recorded in _score.json and reused by a later run into the folder (new files normalised alike);
    a folder whose rows were normalised by statistics it no longer records is refused."""
    from ser_batch.inference.scoring import ArchiveStats, archive_sums, file_windows, merge_archive_sums

    bundle_dir = _cnn_set_bundle(tmp_path / "bundle")
    archive = tmp_path / "clips"
    for i in range(4):
        write_audio(archive / f"clip{i}.wav", duration_s=3.0 + i, seed=20 + i)
    runs = {}
    for name, shard_files in (("one", 100), ("many", 1)):
        out = tmp_path / name
        result = CliRunner().invoke(main, ["score", str(archive), "--out", str(out), "--model", str(bundle_dir),
                                           "--normalize", "archive", "--in-process", "--no-progress",
                                           "--set", f"score.shard_files={shard_files}"])
        assert result.exit_code == 0, result.output
        assert "--normalize archive: statistics of" in result.output
        runs[name] = json.loads((out / "_score.json").read_text())["archive_stats"]
    for kind in ("vectors", "cnn"):
        one, many = runs["one"]["speaker"][kind], runs["many"]["speaker"][kind]
        assert one["n"] == many["n"] > 0
        np.testing.assert_allclose(one["total"], many["total"], rtol=1e-9)
        np.testing.assert_allclose(one["squares"], many["squares"], rtol=1e-9)
    # The second pass z-scored every stream by those statistics (what the library gives, in process).
    bundle = bundle_io.load_bundle(bundle_dir)
    config = Config().replace(score={"normalize": "archive"})
    sums = merge_archive_sums([archive_sums(p, bundle=bundle, config=config) for p in sorted(archive.iterdir())])
    stats = ArchiveStats.from_sums(sums)
    np.testing.assert_allclose(sums["speaker"]["cnn"].total, runs["one"]["speaker"]["cnn"]["total"], rtol=1e-9)
    out = tmp_path / "one"
    segments = pd.read_parquet(out / "segments")
    files = pd.read_parquet(out / "files").set_index("path")
    assert files[schema.NORMALIZED].all() and set(files[schema.MODEL_SET]) == {"speaker"}
    columns = [schema.proba_column(c) for c in bundle.classes]
    [stream] = file_windows(archive / "clip2.wav", bundle=bundle, config=config, framework="both", archive=stats)
    got = segments[segments[schema.PATH] == "clip2.wav"].sort_values(schema.START_S)[columns].to_numpy()
    np.testing.assert_allclose(got, stream.proba, atol=1e-5)
    record = json.loads((out / "_run.json").read_text())
    assert record["archive_statistics"] == {"windows": runs["one"]["speaker"]["vectors"]["n"], "reused": False}
    # A later run with a new file reuses the recorded statistics: the new file is normalised as the others.
    write_audio(archive / "clip9.wav", duration_s=4.0, seed=29)
    again = CliRunner().invoke(main, ["score", str(archive), "--out", str(out), "--model", str(bundle_dir),
                                      "--normalize", "archive", "--in-process", "--no-progress"])
    assert again.exit_code == 0, again.output
    assert "1 file scored (4 already done)" in again.output and "recorded by the first run" in again.output
    assert json.loads((out / "_score.json").read_text())["archive_stats"] == runs["one"]
    assert json.loads((out / "_run.json").read_text())["archive_statistics"]["reused"] is True
    [new] = file_windows(archive / "clip9.wav", bundle=bundle, config=config, framework="both", archive=stats)
    segments = pd.read_parquet(out / "segments")
    got = segments[segments[schema.PATH] == "clip9.wav"].sort_values(schema.START_S)[columns].to_numpy()
    np.testing.assert_allclose(got, new.proba, atol=1e-5)
    # Rows normalised by statistics the folder no longer records: refused, nothing scored.
    settings = json.loads((out / "_score.json").read_text())
    del settings["archive_stats"]
    (out / "_score.json").write_text(json.dumps(settings))
    write_audio(archive / "clip10.wav", duration_s=3.0, seed=30)
    refused = CliRunner().invoke(main, ["score", str(archive), "--out", str(out), "--model", str(bundle_dir),
                                        "--normalize", "archive", "--in-process", "--no-progress"])
    assert refused.exit_code != 0 and "does not record" in refused.output
    assert not (segments[schema.PATH] == "clip10.wav").any()


def test_a_file_of_a_band_the_archive_statistics_lack_is_an_error_row_not_unnormalised(tmp_path: Path) -> None:
    """`--normalize archive` with statistics of the wideband set only (the first pass met no speech at
    8 kHz, or a folder's stored statistics came from wideband runs): an 8 kHz file is one clear error,
    neither scored un-normalised nor told to use the --normalize it was given."""
    from ser_batch.errors import FeatureError
    from ser_batch.inference.scoring import ArchiveStats, archive_sums, file_windows

    bundle = bundle_io.load_bundle()
    config = Config().replace(score={"normalize": "archive"})
    wide = write_audio(tmp_path / "wide.wav", duration_s=4.0, seed=3)
    archive = ArchiveStats.from_sums(archive_sums(wide, bundle=bundle, config=config))
    assert set(archive.sets) == {"speaker"}
    [scored] = file_windows(wide, bundle=bundle, config=config, framework="both", archive=archive)
    assert scored.summary.normalized and scored.summary.model_set == "speaker"
    narrow = write_audio(tmp_path / "call.wav", duration_s=4.0, sample_rate=8000, seed=4)
    with pytest.raises(FeatureError, match="have no speech windows of the 'narrow-speaker' model set"):
        file_windows(narrow, bundle=bundle, config=config, framework="both", archive=archive)

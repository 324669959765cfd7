"""Tests for :mod:`ser_batch.features.recipes` (the ``rich`` recipe and its sliding windows, the entry
points ``signal_features`` and ``file_features`` of every recipe, a cold numba cache) and for
the code that carries windows downstream: the ``segments`` columns of :mod:`ser_batch.schema`,
``FeatureSet.segments`` (dataset.py), ``stack_segments``/``mean_by_row`` (models.py),
``Bundle.predict_rows``/``check_features`` (bundle.py) and training on windows (train.py).

Signals are generated; the end-to-end run reads RAVDESS actors 01-03 from ../shared and
trains only the scikit-learn model (no TensorFlow).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from click.testing import CliRunner

from ser_batch import schema
from ser_batch.audio.decode import AudioInfo
from ser_batch.cli import main
from ser_batch.config import Config, FeatureConfig, config_to_dict, load_config
from ser_batch.data import parts as storage
from ser_batch.data.featureset import load_feature_set
from ser_batch.errors import AudioError, BundleError, FeatureError
from ser_batch.features import fast as features
from ser_batch.features import pitch, recipes
from ser_batch.features.names import feature_names, frame_column_names, rich_frame_names, rich_names
from ser_batch.features.windows import signal_frames, signal_windows
from ser_batch.models import bundle as bundle_io
from ser_batch.models.estimators import mean_by_row, stack_segments

from conftest import SHARED, link_ravdess_actors, needs_shared, write_audio

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RICH = FeatureConfig(recipe="rich")
#: The telephony config (8 kHz, n_fft 1024, hop 256) with the rich recipe.
RICH_8K = load_config(CONFIGS / "telephony.toml", overrides=['features.recipe="rich"'])
N_RICH = 805
N_FRAME_COLUMNS = 199
EXTRAS = ("rms_db", "zcr", "centroid_hz", "bandwidth_hz", "rolloff_hz", "flatness_log10")
PITCH = ["f0_log2_mean", "f0_log2_std", "f0_log2_p10", "f0_log2_p50", "f0_log2_p90", "f0_log2_range",
         "f0_log2_dabs", "voiced_fraction", "duration_s"]


def extra_column(name: str) -> int:
    """Column of an extra in the 199-column frame matrix of the default config."""
    return 193 + EXTRAS.index(name)


# --- names ----------------------------------------------------------------------------


def test_rich_names_default_config() -> None:
    names = rich_names(frame_column_names(FeatureConfig()))
    assert len(names) == N_RICH == len(set(names))
    assert names[0] == "mfcc_00__mean"
    assert names[-9:] == PITCH
    # Four blocks of 199 pooled columns, one per statistic, in this order.
    for block, stat in enumerate(("mean", "std", "dabs", "dstd")):
        chunk = names[block * N_FRAME_COLUMNS : (block + 1) * N_FRAME_COLUMNS]
        assert all(n.endswith(f"__{stat}") for n in chunk), stat
        assert chunk[0] == f"mfcc_00__{stat}" and chunk[-1] == f"flatness_log10__{stat}"
        assert [f"{e}__{stat}" for e in EXTRAS] == chunk[-6:]
        assert f"mel_db_000__{stat}" in chunk and f"mel_db_127__{stat}" in chunk
    # Mel bands are renamed (they are in dB here); nothing else is.
    assert not any(n.startswith("mel_0") or n.startswith("mel_1") for n in names)
    assert sum(n.startswith("mel_db_") for n in names) == 4 * 128
    assert "chroma_11__dstd" in names and "tonnetz_5__mean" in names and "contrast_6__std" in names
    # (feature_names of each recipe is pinned by a hash in test_features_fast.py.)


def test_rich_frame_names_match_frame_columns() -> None:
    names = rich_frame_names(frame_column_names(RICH))
    assert len(names) == N_FRAME_COLUMNS
    assert names[52:54] == ["mel_db_000", "mel_db_001"] and names[-6:] == list(EXTRAS)


# --- frames ---------------------------------------------------------------------------


def test_rich_frames_extend_the_local_fast_frames(make_signal: Callable[..., np.ndarray]) -> None:
    y = make_signal("speech", sample_rate=16_000, duration_s=2.0)
    frames, f0 = signal_frames(y, 16_000, config=RICH)
    n_frames = 1 + y.size // RICH.hop_length
    assert frames.shape == (n_frames, N_FRAME_COLUMNS) and frames.dtype == np.float32
    assert f0.shape == (n_frames,) and f0.dtype == np.float32
    assert np.isfinite(frames).all() and np.isfinite(f0).all()

    # Local frames are the fast frames without the tuning estimate (chroma at tuning 0) and
    # with the fixed dB floor in MFCC and contrast; mel, chroma and tonnetz are the same numbers.
    base = features.frame_features(y, 16_000, config=FeatureConfig(recipe="rich", estimate_tuning=False))
    mel = features.mel_columns(RICH)
    same = np.r_[RICH.n_mfcc:mel.start, 193 - 6:193]
    np.testing.assert_allclose(frames[:, same], base[:, same], rtol=1e-5, atol=1e-6)
    # Mel bands in dB with the fixed floor (db_floor), not 80 dB under the loudest frame.
    db = 10.0 * np.log10(np.maximum(base[:, mel].astype(np.float64), 1e-10))
    np.testing.assert_allclose(frames[:, mel], np.maximum(db, RICH.db_floor), rtol=0, atol=1e-4)
    assert frames[:, mel].min() == pytest.approx(RICH.db_floor) or frames[:, mel].min() > RICH.db_floor


def test_rich_frame_extras_match_librosa(make_signal: Callable[..., np.ndarray]) -> None:
    sr, n_fft, hop = 16_000, RICH.n_fft, RICH.hop_length
    y = make_signal("speech", sample_rate=sr, duration_s=2.0)
    frames, _ = signal_frames(y, sr, config=RICH)
    S = features.stft_magnitude(y, n_fft=n_fft, hop_length=hop).T

    rms = librosa.feature.rms(S=S, frame_length=n_fft)[0]
    np.testing.assert_allclose(frames[:, extra_column("rms_db")], 20 * np.log10(rms), rtol=0, atol=1e-3)
    centroid = librosa.feature.spectral_centroid(S=S, sr=sr)[0]
    np.testing.assert_allclose(frames[:, extra_column("centroid_hz")], centroid, rtol=1e-3)
    bandwidth = librosa.feature.spectral_bandwidth(S=S, sr=sr)[0]
    np.testing.assert_allclose(frames[:, extra_column("bandwidth_hz")], bandwidth, rtol=1e-3)
    rolloff = librosa.feature.spectral_rolloff(S=S, sr=sr, roll_percent=0.85)[0]
    np.testing.assert_allclose(frames[:, extra_column("rolloff_hz")], rolloff, rtol=0, atol=sr / n_fft)
    flatness = librosa.feature.spectral_flatness(S=S)[0]
    np.testing.assert_allclose(frames[:, extra_column("flatness_log10")], np.log10(flatness), rtol=0, atol=1e-3)

    # The zero-crossing rate pads with zeros (librosa: edge values), so only frames that
    # lie wholly inside the signal compare; librosa also divides the count by n_fft, not by
    # the n_fft - 1 sample pairs, which is worth at most 1/n_fft.
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=n_fft, hop_length=hop)[0]
    assert zcr.shape == (frames.shape[0],)
    t = np.arange(frames.shape[0])
    inside = (t * hop >= n_fft // 2) & (t * hop + n_fft // 2 <= y.size)
    assert inside.sum() >= frames.shape[0] - 5
    np.testing.assert_allclose(frames[inside, extra_column("zcr")], zcr[inside], rtol=0, atol=1.0 / n_fft)
    assert 0 < zcr[inside].mean() < 1


@pytest.mark.parametrize("f0_hz", [110.0, 200.0, 330.0])
def test_rich_frames_f0_of_a_harmonic_tone(f0_hz: float) -> None:
    """Pitch is tracked on a 4 kHz copy: still within 1% of the truth on voiced frames."""
    sr = 16_000
    t = np.arange(2 * sr) / sr
    y = (0.3 * sum(np.sin(2 * np.pi * f0_hz * k * t) / k for k in range(1, 6))).astype(np.float32)
    _, f0 = signal_frames(y, sr, config=RICH)
    # Pitch is tracked on every other frame (the signal's even frames); the rest hold -1.
    assert (f0[1::2] == -1).all() and (f0[::2] >= 0).all()
    voiced = (f0 > 62) & (f0 < 590)
    assert voiced[::2].mean() > 0.9
    np.testing.assert_allclose(f0[voiced], f0_hz, rtol=0.01)


def test_near_silent_frames_have_no_pitch() -> None:
    y = np.zeros(16_000, dtype=np.float32)
    y[8000:] = 0.3 * np.sin(2 * np.pi * 200 * np.arange(8000) / 16_000)
    _, f0 = signal_frames(y, 16_000, config=RICH)
    assert (f0[:12:2] == 0).all() and ((f0[20:28:2] > 190) & (f0[20:28:2] < 210)).all()


# --- signal_features ----------------------------------------------------------------------


def test_signal_features_rich_pools_clip_and_windows(make_signal: Callable[..., np.ndarray]) -> None:
    sr = 16_000
    y = make_signal("speech", sample_rate=sr, duration_s=3.0)
    result = recipes.signal_features(y, sr, config=RICH)
    clip, windows = signal_windows(y, sr, config=RICH)
    np.testing.assert_array_equal(result.vector, clip)
    assert result.vector.shape == (N_RICH,) and result.vector.dtype == np.float32
    assert result.segments is not None and result.segment_starts_s is not None
    np.testing.assert_array_equal(result.segments, windows.vectors)
    np.testing.assert_array_equal(result.segment_speech_ratio, windows.speech_ratio)
    # 94 frames: windows start every 16 frames until one reaches the end (the last is 46 frames).
    np.testing.assert_allclose(result.segment_starts_s, [0.0, 0.512, 1.024, 1.536], atol=1e-6)
    assert result.segment_starts_s.dtype == np.float32
    hop_s = RICH.hop_length / sr
    np.testing.assert_allclose(result.segments[:, -1], [47 * hop_s] * 3 + [46 * hop_s], rtol=1e-6)

    clip_only = recipes.signal_features(y, sr, config=FeatureConfig(recipe="rich", window_s=0.0))
    assert clip_only.segments is None and clip_only.segment_starts_s is None
    np.testing.assert_array_equal(clip_only.vector, result.vector)

    fast = recipes.signal_features(y, sr, config=FeatureConfig())
    assert fast.segments is None and fast.segment_starts_s is None
    np.testing.assert_array_equal(fast.vector, features.clip_features(y, sr, config=FeatureConfig()))


def test_signal_features_rich_at_8k(make_signal: Callable[..., np.ndarray]) -> None:
    y8 = make_signal("speech", sample_rate=8000, duration_s=3.0)
    result = recipes.signal_features(y8, 8000, config=RICH_8K.features)
    assert result.vector.shape == (N_RICH,) and np.isfinite(result.vector).all()
    assert result.segments is not None and result.segments.shape == (4, N_RICH)
    assert np.isfinite(result.segments).all()
    # Same analysis windows in seconds as the default config at 16 kHz.
    np.testing.assert_allclose(result.segment_starts_s, [0.0, 0.512, 1.024, 1.536], atol=1e-6)
    assert result.vector[-1] == pytest.approx((1 + y8.size // 256) * 256 / 8000)


def test_signal_features_refuses_short_or_bad_signals(make_signal: Callable[..., np.ndarray]) -> None:
    y = make_signal("speech", sample_rate=16_000, duration_s=1.0)
    with pytest.raises(FeatureError, match=r"^too short: 127 ms; at least 128 ms needed"):
        recipes.signal_features(y[: RICH.n_fft - 1], 16_000, config=RICH)
    exact = recipes.signal_features(y[: RICH.n_fft], 16_000, config=RICH)
    assert exact.segments is not None and exact.segments.shape == (1, N_RICH)
    with pytest.raises(FeatureError, match="non-empty mono"):
        recipes.signal_features(np.zeros(0, dtype=np.float32), 16_000, config=RICH)
    with pytest.raises(FeatureError, match="non-empty mono"):
        recipes.signal_features(np.zeros((2, 4096), dtype=np.float32), 16_000, config=RICH)
    bad = y.copy()
    bad[2000] = np.nan
    with pytest.raises(FeatureError, match="^signal has NaN or infinite samples$"):
        recipes.signal_features(bad, 16_000, config=RICH)


@pytest.mark.parametrize("recipe", ["fast", "classic", "rich"])
@pytest.mark.parametrize(("sample_rate", "n_fft", "n_samples", "shown"),
                         [(16_000, 2048, 16, "1"), (16_000, 2048, 1000, "62.5"), (8_000, 1024, 1023, "127")])
def test_every_recipe_refuses_a_signal_shorter_than_a_frame(recipe: str, sample_rate: int, n_fft: int,
                                                            n_samples: int, shown: str) -> None:
    # The same message from every recipe; the telephony config's frame is 1024 samples at 8 kHz.
    config = FeatureConfig(recipe=recipe, n_fft=n_fft, hop_length=n_fft // 4)
    y = np.random.default_rng(0).uniform(-0.5, 0.5, n_samples).astype(np.float32)
    with pytest.raises(FeatureError) as info:
        recipes.signal_features(y, sample_rate, config=config)
    assert str(info.value) == (f"too short: {shown} ms; at least 128 ms needed (one analysis frame, "
                               f"features.n_fft = {n_fft} samples at {sample_rate} Hz)")


def test_non_finite_f0_is_a_feature_error(monkeypatch: pytest.MonkeyPatch,
                                          make_signal: Callable[..., np.ndarray]) -> None:
    monkeypatch.setattr(pitch, "yin", lambda y, **kw: np.full(1 + (y.size - kw["frame_length"]) // kw["hop_length"],
                                                              np.nan))
    with pytest.raises(FeatureError, match=r"^f0 values \(yin\) are not finite$"):
        recipes.signal_features(make_signal("speech", duration_s=1.0), 16_000, config=RICH)


# --- file_features: the path-level entry point of every job ---------------------------------


def test_file_features_decodes_then_runs_the_recipe(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "a.wav", sample_rate=48_000, channels=2, duration_s=1.0)
    config = Config().replace(features={"recipe": "rich"})
    feats, info = recipes.file_features(path, config=config)
    assert isinstance(info, AudioInfo) and (info.sample_rate, info.channels, info.duration_s) == (48_000, 2, 1.0)
    from ser_batch.audio.decode import load_audio

    y, _ = load_audio(path, sample_rate=16_000)
    expected = recipes.signal_features(y, 16_000, config=config.features)
    np.testing.assert_array_equal(feats.vector, expected.vector)
    np.testing.assert_array_equal(feats.segments, expected.segments)


def test_file_features_errors(tmp_path: Path) -> None:
    short = write_audio(tmp_path / "blip.wav", duration_s=0.05)
    with pytest.raises(FeatureError, match=r"^too short: 50 ms; at least 128 ms needed"):
        recipes.file_features(short, config=Config())
    long = write_audio(tmp_path / "long.wav", duration_s=3.0)
    with pytest.raises(AudioError, match="file is 3 s long, over audio.max_file_s = 2 s"):
        recipes.file_features(long, config=Config().replace(audio={"max_file_s": 2.0}))
    (tmp_path / "notes.wav").write_text("not audio\n" * 20)
    with pytest.raises(AudioError, match="not an audio file"):
        recipes.file_features(tmp_path / "notes.wav", config=Config())


def test_file_features_refuses_non_finite_features(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Its last guard, for a recipe that would forget its own checks.
    path = write_audio(tmp_path / "a.wav", duration_s=1.0)
    monkeypatch.setattr(recipes, "signal_features",
                        lambda y, sr, *, config: recipes.FileFeatures(np.full(193, np.nan, np.float32)))
    with pytest.raises(FeatureError, match="^features are not finite$"):
        recipes.file_features(path, config=Config())


# --- a cold numba cache ------------------------------------------------------------------------

COLD_RUN = textwrap.dedent("""
    import json, sys, warnings
    import numpy as np
    from ser_batch.config import FeatureConfig
    from ser_batch.errors import FeatureError
    from ser_batch.features.recipes import signal_features

    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    speech = np.load(sys.argv[1])
    results = {}
    for recipe in ("fast", "classic", "rich"):
        config = FeatureConfig(recipe=recipe)
        for name, y in (("speech", speech), ("noise_1000", rng.uniform(-0.5, 0.5, 1000).astype(np.float32)),
                        ("noise_2048", rng.uniform(-0.5, 0.5, 2048).astype(np.float32))):
            try:
                feats = signal_features(y, 16000, config=config)
                results[f"{recipe}/{name}"] = "finite" if np.isfinite(feats.vector).all() else "NOT FINITE"
            except FeatureError as exc:
                results[f"{recipe}/{name}"] = f"FeatureError: {exc}"
    print(json.dumps(results))
""")


@pytest.mark.slow
def test_recipes_from_a_cold_numba_cache(tmp_path: Path, make_signal: Callable[..., np.ndarray]) -> None:
    # librosa compiles its numba kernels (piptrack, yin, localmax, overlap-add ...) on first
    # use and caches them; CI starts from nothing. A fresh NUMBA_CACHE_DIR in a new process
    # is that first run: short signals must still give a FeatureError, others finite values.
    cache = tmp_path / "numba_cache"
    cache.mkdir()
    speech = tmp_path / "speech.npy"
    np.save(speech, make_signal("speech", sample_rate=16_000, duration_s=1.0))
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", COLD_RUN, str(speech)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    too_short = ("FeatureError: too short: 62.5 ms; at least 128 ms needed "
                 "(one analysis frame, features.n_fft = 2048 samples at 16000 Hz)")
    for recipe in ("fast", "classic", "rich"):
        assert results[f"{recipe}/speech"] == "finite", results
        assert results[f"{recipe}/noise_1000"] == too_short, results
        assert results[f"{recipe}/noise_2048"] == "finite", results
    # The run really compiled from scratch into the fresh folder.
    assert any(cache.rglob("*.nbi")), "numba wrote no cache: the run was not cold"


# --- extraction with windows ----------------------------------------------------------------

GOOD_FILES = ("Actor_01/03-01-05-01-01-01-01.wav", "Actor_01/03-01-03-02-01-02-01.wav",
              "Actor_02/03-01-04-01-02-01-02.wav")
BROKEN_FILE = "broken/noise.wav"
SHORT_FILE = "short/blip.wav"  # decodes, but is shorter than one STFT window
RICH_CONFIG = Config().replace(features={"recipe": "rich"}, extract={"shard_size": 2})


@pytest.fixture(scope="module")
def rich_extracted(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Three 2 s files, a broken and a too-short one, extracted with ``rich`` in 3 parts."""
    from ser_batch.pipeline.extract import run_extract

    root = tmp_path_factory.mktemp("rich_audio")
    for seed, rel in enumerate(GOOD_FILES):
        write_audio(root / rel, duration_s=2.0 + 0.25 * seed, seed=seed)
    (root / BROKEN_FILE).parent.mkdir(parents=True)
    (root / BROKEN_FILE).write_bytes(np.random.default_rng(3).bytes(2048))
    write_audio(root / SHORT_FILE, duration_s=0.1)
    out = tmp_path_factory.mktemp("rich_features") / "features"
    summary = run_extract(root, out, config=RICH_CONFIG, progress=False)
    assert (summary.files, summary.errors, summary.parts) == (5, 2, 3)
    return root, out


def test_extract_rich_writes_segments(rich_extracted: tuple[Path, Path]) -> None:
    root, out = rich_extracted
    table = storage.read_parts(out)
    assert table.schema.field(schema.SEGMENTS).type == pa.list_(pa.list_(pa.float32(), N_RICH))
    assert table.schema.field(schema.FEATURES).type == pa.list_(pa.float32(), N_RICH)
    assert table.schema.field(schema.SEGMENT_STARTS_S).type == pa.list_(pa.float32())
    metadata = schema.read_metadata(table.schema)
    assert metadata["recipe"] == "rich" and len(metadata["feature_names"]) == N_RICH
    rows = {row[schema.PATH]: row for row in table.to_pylist()}
    assert set(rows) == {*GOOD_FILES, BROKEN_FILE, SHORT_FILE}

    for rel in GOOD_FILES:
        row = rows[rel]
        assert row[schema.ERROR] is None
        expected, _ = recipes.file_features(root / rel, config=RICH_CONFIG)
        segments = np.array(row[schema.SEGMENTS], dtype=np.float32)
        starts = np.array(row[schema.SEGMENT_STARTS_S], dtype=np.float32)
        assert segments.shape == (len(starts), N_RICH) == expected.segments.shape
        # Same code path; the tolerance only allows for BLAS thread counts (workers use one).
        np.testing.assert_allclose(segments, expected.segments, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(starts, expected.segment_starts_s)
        np.testing.assert_allclose(np.array(row[schema.FEATURES]), expected.vector, rtol=1e-5, atol=1e-5)
    # 63, 71 and 79 frames: 2 windows (exact tiling), 3 (one end-aligned), 3 (exact tiling).
    assert [len(rows[rel][schema.SEGMENT_STARTS_S]) for rel in GOOD_FILES] == [2, 3, 3]

    for rel, reason in ((BROKEN_FILE, "not an audio file"), (SHORT_FILE, "too short")):
        row = rows[rel]
        assert reason in row[schema.ERROR]
        assert row[schema.FEATURES] is None and row[schema.SEGMENTS] is None
        assert row[schema.SEGMENT_STARTS_S] is None


def test_pandas_reads_rich_features(rich_extracted: tuple[Path, Path]) -> None:
    _, out = rich_extracted
    frame = pd.read_parquet(out).set_index(schema.PATH)
    assert len(frame) == 5 and frame[schema.ERROR].notna().sum() == 2
    assert frame.loc[BROKEN_FILE, schema.SEGMENTS] is None
    segments = np.stack(list(frame.loc[GOOD_FILES[1], schema.SEGMENTS]))
    assert segments.shape == (3, N_RICH)


def test_load_feature_set_aligns_segments(rich_extracted: tuple[Path, Path]) -> None:
    root, out = rich_extracted
    data = load_feature_set(out)
    assert data.n_errors == 2 and sorted(data.paths) == sorted(GOOD_FILES)
    assert data.X.shape == (3, N_RICH)
    assert data.segments is not None and len(data.segments) == 3
    for i, rel in enumerate(data.paths):
        expected, _ = recipes.file_features(root / rel, config=RICH_CONFIG)
        assert data.segments[i].dtype == np.float32
        np.testing.assert_allclose(data.segments[i], expected.segments, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(data.X[i], expected.vector, rtol=1e-5, atol=1e-5)

    picked = data.subset([2, 0])
    assert list(picked.paths) == [data.paths[2], data.paths[0]]
    for j, i in enumerate([2, 0]):
        np.testing.assert_array_equal(picked.segments[j], data.segments[i])
        np.testing.assert_array_equal(picked.X[j], data.X[i])
    masked = data.subset(np.array([False, True, True]))
    assert list(masked.paths) == list(data.paths[1:])
    assert [s.shape for s in masked.segments] == [s.shape for s in data.segments[1:]]
    np.testing.assert_array_equal(masked.segments[1], data.segments[2])


def test_fast_extraction_has_no_segments(ray_session: None, tmp_path: Path) -> None:
    from ser_batch.pipeline.extract import run_extract

    write_audio(tmp_path / "audio" / "03-01-05-01-01-01-01.wav", duration_s=0.5)
    run_extract(tmp_path / "audio", tmp_path / "out", config=Config(), progress=False)
    table = storage.read_parts(tmp_path / "out")
    assert table.column(schema.SEGMENTS).null_count == 1
    assert load_feature_set(tmp_path / "out").segments is None


# --- window vectors in models and bundles -------------------------------------------------


def test_stack_segments_and_mean_by_row() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.full((1, 3), 10.0, dtype=np.float32)
    c = -np.arange(9, dtype=np.float32).reshape(3, 3)
    stacked, rows = stack_segments([a, b, c])
    np.testing.assert_array_equal(stacked, np.vstack([a, b, c]))
    np.testing.assert_array_equal(rows, [0, 0, 1, 2, 2, 2])

    proba = np.array([[0.2, 0.8], [0.6, 0.4], [1.0, 0.0], [0.1, 0.9], [0.3, 0.7], [0.5, 0.5]])
    means = mean_by_row(proba, rows, 3)
    np.testing.assert_allclose(means, [[0.4, 0.6], [1.0, 0.0], [0.3, 0.7]], rtol=0, atol=1e-15)


CLASSES = ["sad", "angry", "happy"]  # not sklearn's sorted order, so columns get reordered


@pytest.fixture(scope="module")
def fitted_pipeline() -> object:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    labels = np.array(CLASSES)[np.arange(90) % 3]
    X = rng.normal(size=(90, 4)) + (np.arange(90) % 3)[:, None]
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(X, labels)


def make_bundle(tmp_path: Path, model: object, *, aggregation: str,
                features: dict | None = None) -> bundle_io.Bundle:
    manifest = {"classes": CLASSES, "models": ["sklearn"], "aggregation": aggregation,
                "features": features or {}}
    return bundle_io.Bundle(path=tmp_path, manifest=manifest, _models={"sklearn": model})


def test_predict_rows_averages_window_probabilities(tmp_path: Path, fitted_pipeline: object) -> None:
    model = fitted_pipeline
    rng = np.random.default_rng(1)
    segments = [rng.normal(size=(k, 4)).astype(np.float32) + 1 for k in (3, 1, 5)]
    X = rng.normal(size=(3, 4)).astype(np.float32)
    order = [list(model.classes_).index(c) for c in CLASSES]

    windows = make_bundle(tmp_path, model, aggregation="segments")
    assert windows.aggregation == "segments"
    got = windows.predict_rows(X, segments, framework="sklearn")
    expected = np.stack([model.predict_proba(s)[:, order].mean(axis=0) for s in segments])
    assert got.shape == (3, 3)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.sum(axis=1), 1.0)
    with pytest.raises(BundleError, match="sliding windows"):
        windows.predict_rows(X, None, framework="sklearn")

    clips = make_bundle(tmp_path, model, aggregation="clip")
    np.testing.assert_allclose(clips.predict_rows(X, segments, framework="sklearn"),
                               model.predict_proba(X)[:, order], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(clips.predict_rows(X, None, framework="sklearn"),
                                  clips.predict_proba(X, framework="sklearn"))
    # A manifest without the key (older bundles) means whole-clip vectors.
    legacy = bundle_io.Bundle(path=tmp_path, manifest={"classes": CLASSES, "models": ["sklearn"]},
                              _models={"sklearn": model})
    assert legacy.aggregation == "clip"


def _metadata(config: Config) -> dict:
    return schema.read_metadata(schema.features_schema(recipe=config.features.recipe, names=feature_names(config.features), config=config_to_dict(config)))


def test_check_features_refuses_other_windows(tmp_path: Path, fitted_pipeline: object) -> None:
    config = Config().replace(features={"recipe": "rich"})
    metadata = _metadata(config)
    contract = bundle_io.feature_contract(config, metadata)
    assert (contract["window_s"], contract["window_hop_s"], contract["n_features"]) == (1.5, 0.5, N_RICH)
    windows = make_bundle(tmp_path, fitted_pipeline, aggregation="segments", features=contract)
    windows.check_features(metadata)

    for change, shown in (({"window_s": 1.0}, "window_s 1.0 != 1.5"),
                          ({"window_hop_s": 0.25}, "window_hop_s 0.25 != 0.5"),
                          ({"window_s": 0.0}, "window_s 0.0 != 1.5")):
        other = _metadata(config.replace(features=change))
        with pytest.raises(BundleError, match="features do not match") as info:
            windows.check_features(other)
        assert shown in str(info.value)
        # A bundle of whole-clip vectors does not care about the window settings.
        make_bundle(tmp_path, fitted_pipeline, aggregation="clip", features=contract).check_features(other)

    # Any other feature setting changes the numbers, for either kind of bundle.
    for change, shown in (({"hop_length": 256}, "hop_length 256 != 512"),
                          ({"estimate_tuning": False}, "estimate_tuning False != True"),
                          ({"contrast_fmin": 100.0}, "contrast_fmin 100.0 != 200.0")):
        other = _metadata(config.replace(features=change))
        for aggregation in ("segments", "clip"):
            with pytest.raises(BundleError, match="feature settings differ") as info:
                make_bundle(tmp_path, fitted_pipeline, aggregation=aggregation, features=contract).check_features(other)
            assert shown in str(info.value)


# --- end to end: extract rich, train on windows, predict, evaluate ---------------------------

E2E_ACTORS = (1, 2, 3)
E2E_TEST_ACTOR = 3


@pytest.fixture(scope="module")
def rich_ravdess(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``rich`` features of RAVDESS actors 01-03 (180 clips), extracted through the CLI."""
    if not SHARED.is_dir():
        pytest.skip("../shared/data/ravdess not present")
    audio = tmp_path_factory.mktemp("ravdess_rich")
    link_ravdess_actors(audio, E2E_ACTORS)
    out = tmp_path_factory.mktemp("ravdess_rich_features") / "features"
    result = CliRunner().invoke(main, ["extract", str(audio), "--out", str(out), "--recipe", "rich",
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("180 files, 0 errors")
    return out


@pytest.fixture(scope="module")
def window_bundle(rich_ravdess: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rich_models") / "bundle"
    result = CliRunner().invoke(main, ["train", str(rich_ravdess), "--out", str(out), "--models", "sklearn",
                                       "--test-actors", str(E2E_TEST_ACTOR), "--set", "sklearn.max_iter=30"])
    assert result.exit_code == 0, result.output
    return out


@needs_shared
def test_rich_training_uses_windows(window_bundle: Path, rich_ravdess: Path) -> None:
    manifest = json.loads((window_bundle / "manifest.json").read_text())
    assert manifest["aggregation"] == "segments"
    assert manifest["models"] == ["sklearn"]
    contract = manifest["features"]
    assert contract["recipe"] == "rich" and contract["n_features"] == N_RICH == len(contract["names"])
    assert (contract["window_s"], contract["window_hop_s"]) == (1.5, 0.5)
    trained = manifest["training_data"]
    assert (trained["rows_train"], trained["rows_test"]) == (120, 60)
    data = load_feature_set(rich_ravdess)
    windows_of_training_actors = sum(len(s) for s, a in zip(data.segments, data.actor) if a != E2E_TEST_ACTOR)
    assert trained["vectors_train"] == windows_of_training_actors > trained["rows_train"]
    assert manifest["metrics"]["sklearn"]["n"] == 60


@needs_shared
def test_rich_predict_and_evaluate_match_the_bundle(window_bundle: Path, rich_ravdess: Path,
                                                    tmp_path: Path) -> None:
    data = load_feature_set(rich_ravdess)
    bundle = bundle_io.load_bundle(window_bundle)
    i = int(np.flatnonzero(data.actor == E2E_TEST_ACTOR)[7])
    wav = SHARED / "Audio_Speech_Actors_01-20_16k" / data.paths[i]
    result = CliRunner().invoke(main, ["predict", str(wav), "--model", str(window_bundle),
                                       "--framework", "sklearn", "--json"])
    assert result.exit_code == 0, result.output
    [entry] = json.loads(result.output)
    assert entry["error"] is None
    got = np.array([entry["predictions"]["sklearn"]["probabilities"][c] for c in bundle.classes])
    # The same rule as score: the mean over the clip's windows with speech.
    keep = data.speech_windows([i], min_speech_ratio=bundle.config.score.min_speech_ratio)
    assert keep is not None and 0 < keep.sum()
    expected = bundle.predict_rows(data.X[i : i + 1], [data.segments[i]], framework="sklearn", keep=keep)[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert entry["predictions"]["sklearn"]["label"] == bundle.classes[int(np.argmax(expected))]

    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(main, ["evaluate", str(window_bundle), str(rich_ravdess),
                                       "--actors", str(E2E_TEST_ACTOR), "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["rows"] == 60 and metrics["actors"] == [E2E_TEST_ACTOR]
    manifest = json.loads((window_bundle / "manifest.json").read_text())
    assert metrics["models"]["sklearn"]["accuracy"] == pytest.approx(
        manifest["metrics"]["sklearn"]["accuracy"], abs=1e-9)

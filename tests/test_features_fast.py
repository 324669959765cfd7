"""Tests for :mod:`ser_batch.features.fast`, the ``fast`` recipe (and the feature names of
:mod:`ser_batch.schema`).

Signals are generated at 16 kHz and 8 kHz; the fast-vs-classic agreement over real
speech reads RAVDESS clips from ../shared. The classic recipe itself is tested in
test_features_classic.py, the shared filterbanks in test_features_filterbanks.py.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

import librosa
import numpy as np
import pytest
from test_features_classic import ideal_tonnetz, triad

from ser_batch.audio.decode import load_audio
from ser_batch.config import FeatureConfig
from ser_batch.errors import FeatureError
from ser_batch.features import classic
from ser_batch.features import fast as features
from ser_batch.features.names import feature_names
from ser_batch.features.recipes import RECIPES, signal_features

from conftest import SHARED, needs_shared, sine, speech_like

DEFAULT = FeatureConfig()
CLASSIC = FeatureConfig(recipe="classic")
N_FEATURES = 193

#: Column ranges of the default 193-vector, per feature.
BLOCKS = {
    "mfcc": slice(0, 40),
    "chroma": slice(40, 52),
    "mel": slice(52, 180),
    "contrast": slice(180, 187),
    "tonnetz": slice(187, 193),
}


@pytest.fixture(scope="module")
def speech_16k() -> np.ndarray:
    return speech_like(sample_rate=16_000, duration_s=1.0)


# --- names ---------------------------------------------------------------------


def test_feature_names_default_order() -> None:
    names = feature_names(DEFAULT)
    assert len(names) == N_FEATURES == len(set(names))
    expected = (
        [f"mfcc_{i:02d}" for i in range(40)]
        + [f"chroma_{i:02d}" for i in range(12)]
        + [f"mel_{i:03d}" for i in range(128)]
        + [f"contrast_{i}" for i in range(7)]
        + [f"tonnetz_{i}" for i in range(6)]
    )
    assert names == expected
    assert (names[0], names[39], names[40], names[51], names[52], names[179]) == (
        "mfcc_00", "mfcc_39", "chroma_00", "chroma_11", "mel_000", "mel_127"
    )
    assert (names[180], names[186], names[187], names[192]) == ("contrast_0", "contrast_6", "tonnetz_0",
                                                                "tonnetz_5")
    for block, columns in BLOCKS.items():
        assert all(re.fullmatch(rf"{block}_\d+", n) for n in names[columns]), block


#: sha256 of the names joined by "\n", pinned: a trained bundle refuses features whose
#: names differ, so any rename or reorder must be deliberate (and change these). The rich
#: one is also that of the names in ser_batch/pretrained/manifest.json.
NAMES_SHA256 = {
    "fast": "ffa147e6f6289daee86dd79f8295e222d838ab8e8557c66e32490e9d2c9152c7",
    "classic": "ffa147e6f6289daee86dd79f8295e222d838ab8e8557c66e32490e9d2c9152c7",
    "rich": "6421bcd77dee08e46c141712f4c2a164e11ba53decc318f1d479cb12cf2d8b36",
}


@pytest.mark.parametrize(("recipe", "count", "first", "last"), [
    ("fast", 193, "mfcc_00", "tonnetz_5"),
    ("classic", 193, "mfcc_00", "tonnetz_5"),
    ("rich", 805, "mfcc_00__mean", "duration_s"),
])
def test_feature_names_are_pinned(recipe: str, count: int, first: str, last: str) -> None:
    names = feature_names(FeatureConfig(recipe=recipe))
    assert (len(names), names[0], names[-1]) == (count, first, last)
    assert hashlib.sha256("\n".join(names).encode()).hexdigest() == NAMES_SHA256[recipe]


def test_feature_names_follow_config() -> None:
    config = FeatureConfig(n_mfcc=13, n_chroma=24, n_mels=64, contrast_bands=4)
    names = feature_names(config)
    assert len(names) == 13 + 24 + 64 + 5 + 6
    assert names[12] == "mfcc_12" and names[13] == "chroma_00" and names[-7] == "contrast_4"


# --- shapes, dtypes, both recipes, both rates -----------------------------------


@pytest.mark.parametrize("sample_rate", [16_000, 8_000])
@pytest.mark.parametrize("kind", ["speech", "noise"])
def test_clip_features_shape_dtype_finite(make_signal: Callable[..., np.ndarray], sample_rate: int,
                                          kind: str) -> None:
    y = make_signal(kind, sample_rate=sample_rate, duration_s=1.0)
    vector = features.clip_features(y, sample_rate, config=DEFAULT)
    assert vector.shape == (N_FEATURES,)
    assert vector.dtype == np.float32
    assert np.isfinite(vector).all()
    assert np.ptp(vector) > 0  # not a constant placeholder


@pytest.mark.parametrize("sample_rate", [16_000, 8_000])
def test_frame_features_shape_and_pooling(make_signal: Callable[..., np.ndarray], sample_rate: int) -> None:
    y = make_signal("speech", sample_rate=sample_rate, duration_s=1.3)
    frames = features.frame_features(y, sample_rate, config=DEFAULT)
    assert frames.shape == (1 + y.size // DEFAULT.hop_length, N_FEATURES)
    assert frames.dtype == np.float32 and np.isfinite(frames).all()
    clip = features.clip_features(y, sample_rate, config=DEFAULT)
    # pool_mean is np.mean without its bookkeeping: the same bits, not just close.
    np.testing.assert_array_equal(clip, frames.mean(axis=0, dtype=np.float64).astype(np.float32))


def test_frame_features_follow_hop_length(make_signal: Callable[..., np.ndarray]) -> None:
    y = make_signal("speech", sample_rate=16_000, duration_s=1.0)
    config = FeatureConfig(n_fft=1024, hop_length=160)
    assert features.frame_features(y, 16_000, config=config).shape == (1 + 16_000 // 160, N_FEATURES)


def test_pool_mean_window(speech_16k: np.ndarray) -> None:
    frames = features.frame_features(speech_16k, 16_000, config=DEFAULT)
    np.testing.assert_allclose(features.pool_mean(frames, start=3, stop=10), frames[3:10].mean(axis=0),
                               rtol=1e-6, atol=1e-6)
    with pytest.raises(FeatureError, match="empty window"):
        features.pool_mean(frames, start=5, stop=5)


def test_features_are_deterministic(speech_16k: np.ndarray) -> None:
    # The recipe sorts spectra in place and caches filterbanks: neither may leak into the
    # next call or into the caller's signal.
    y = speech_16k.copy()
    first = features.clip_features(y, 16_000, config=DEFAULT)
    np.testing.assert_array_equal(y, speech_16k)
    np.testing.assert_array_equal(first, features.clip_features(y, 16_000, config=DEFAULT))


def test_the_registry_has_every_recipe_the_config_allows() -> None:
    from ser_batch.config import RECIPE_NAMES

    assert tuple(RECIPES) == RECIPE_NAMES
    assert [name for name, recipe in RECIPES.items() if recipe.windows] == ["rich"]
    for name in RECIPE_NAMES:  # and each has its names
        assert feature_names(FeatureConfig(recipe=name))


def test_the_recipe_registry_runs_classic_when_asked(speech_16k: np.ndarray) -> None:
    via_dispatch = signal_features(speech_16k, 16_000, config=CLASSIC).vector
    np.testing.assert_array_equal(via_dispatch, classic.classic_features(speech_16k, 16_000, config=CLASSIC))
    fast = signal_features(speech_16k, 16_000, config=DEFAULT).vector
    assert np.abs(via_dispatch[BLOCKS["tonnetz"]] - fast[BLOCKS["tonnetz"]]).max() > 0.01


# --- fast path pieces equal librosa ----------------------------------------------


@pytest.mark.parametrize("sample_rate", [16_000, 8_000])
def test_stft_magnitude_equals_librosa(make_signal: Callable[..., np.ndarray], sample_rate: int) -> None:
    y = make_signal("speech", sample_rate=sample_rate, duration_s=1.0)
    for n_fft, hop in [(2048, 512), (512, 128)]:
        ours = features.stft_magnitude(y, n_fft=n_fft, hop_length=hop)
        reference = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop)).T
        assert ours.shape == reference.shape == (1 + y.size // hop, 1 + n_fft // 2)
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-5 * reference.max())


@pytest.mark.parametrize("sample_rate", [16_000, 8_000])
@pytest.mark.parametrize(("kind", "seed"), [("speech", 0), ("speech", 1), ("noise", 0), ("sine", 0)])
def test_estimate_tuning_equals_librosa(
    make_signal: Callable[..., np.ndarray], sample_rate: int, kind: str, seed: int
) -> None:
    y = make_signal(kind, sample_rate=sample_rate, duration_s=1.0, seed=seed)
    magnitude = features.stft_magnitude(y, n_fft=2048, hop_length=512)
    ours = features.estimate_tuning(magnitude, sample_rate=sample_rate, n_fft=2048, n_chroma=12)
    reference = librosa.estimate_tuning(S=np.abs(librosa.stft(y)), sr=sample_rate, n_fft=2048,
                                        bins_per_octave=12)
    assert ours == pytest.approx(reference, abs=1e-9)


def test_estimate_tuning_detects_a_detuned_tone() -> None:
    # A quarter of a semitone sharp of A4; librosa's grid has 0.01-bin steps.
    y = sine(440.0 * 2 ** (0.25 / 12), sample_rate=16_000, duration_s=1.0)
    magnitude = features.stft_magnitude(y, n_fft=2048, hop_length=512)
    tuning = features.estimate_tuning(magnitude, sample_rate=16_000, n_fft=2048, n_chroma=12)
    assert tuning == pytest.approx(0.25, abs=0.03)


@pytest.mark.parametrize("sample_rate", [16_000, 8_000])
@pytest.mark.parametrize("kind", ["speech", "noise"])
def test_fast_blocks_equal_classic(make_signal: Callable[..., np.ndarray], sample_rate: int, kind: str) -> None:
    # Pure tones are left out: their contrast valleys sit at the float32 FFT noise floor,
    # where two correct implementations differ by several dB.
    y = make_signal(kind, sample_rate=sample_rate, duration_s=1.0, seed=3)
    fast = features.clip_features(y, sample_rate, config=DEFAULT)
    reference = classic.classic_features(y, sample_rate, config=CLASSIC)
    for block in ("mfcc", "chroma", "mel", "contrast"):
        columns = BLOCKS[block]
        scale = np.abs(reference[columns]).max()
        np.testing.assert_allclose(fast[columns], reference[columns], rtol=1e-4, atol=1e-5 * scale,
                                   err_msg=block)


TRIADS = [(root, quality) for root in range(60, 72) for quality in ("major", "minor")]


@pytest.mark.parametrize("sample_rate", [16_000, 8_000])
@pytest.mark.parametrize(("root", "quality"), [(60, "major"), (62, "minor"), (66, "major"), (71, "minor")])
def test_fast_tonnetz_of_a_triad(sample_rate: int, root: int, quality: str) -> None:
    # The documented approximation (STFT chroma, no harmonic separation, no constant-Q)
    # points the same way as the textbook tonnetz of the chord, but shorter: the STFT
    # chroma of a pure tone leaks into neighbouring pitch classes. Measured at 16 and
    # 8 kHz: cosine 0.959-0.983, length 0.50-0.62 of the ideal, next-best triad cosine <= 0.73.
    config = FeatureConfig(n_fft=2048 * sample_rate // 16_000, hop_length=512 * sample_rate // 16_000)
    y = triad(root, quality, sample_rate=sample_rate)
    tonnetz = features.clip_features(y, sample_rate, config=config)[BLOCKS["tonnetz"]].astype(np.float64)
    ideal = ideal_tonnetz(root, quality)
    cosine = tonnetz @ ideal / np.linalg.norm(tonnetz) / np.linalg.norm(ideal)
    assert cosine > 0.93
    assert 0.4 < np.linalg.norm(tonnetz) / np.linalg.norm(ideal) < 0.75
    # ... and it tells the chord from every other major and minor triad.
    others = [ideal_tonnetz(r, q) for r, q in TRIADS if (r - root) % 12 or q != quality]
    assert max(tonnetz @ o / np.linalg.norm(tonnetz) / np.linalg.norm(o) for o in others) < 0.8


def test_estimate_tuning_off_uses_zero_tuning(speech_16k: np.ndarray) -> None:
    magnitude = features.stft_magnitude(speech_16k, n_fft=2048, hop_length=512)
    tuning = features.estimate_tuning(magnitude, sample_rate=16_000, n_fft=2048, n_chroma=12)
    assert tuning != 0.0  # otherwise this test proves nothing
    untuned = features.clip_features(speech_16k, 16_000, config=FeatureConfig(estimate_tuning=False))
    reference = librosa.feature.chroma_stft(S=np.abs(librosa.stft(speech_16k)), sr=16_000, tuning=0.0)
    np.testing.assert_allclose(untuned[BLOCKS["chroma"]], reference.mean(axis=1), rtol=1e-4, atol=1e-6)


# --- low sample rates --------------------------------------------------------------


def test_librosa_contrast_fails_at_8k_but_our_recipes_work(make_signal: Callable[..., np.ndarray]) -> None:
    # Why contrast_fmin exists: librosa's default bands do not fit under a 4 kHz Nyquist.
    y = make_signal("speech", sample_rate=8_000, duration_s=1.0)
    with pytest.raises(librosa.ParameterError, match="exceeds Nyquist"):
        librosa.feature.spectral_contrast(S=np.abs(librosa.stft(y)), sr=8_000)
    for contrast in (features.clip_features(y, 8_000, config=DEFAULT)[BLOCKS["contrast"]],
                     classic.classic_features(y, 8_000, config=CLASSIC)[BLOCKS["contrast"]]):
        assert np.isfinite(contrast).all() and contrast.shape == (7,)
    # ... and they match librosa given the lowered edge.
    S = np.abs(librosa.stft(y))
    reference = librosa.feature.spectral_contrast(S=S, sr=8_000, fmin=100.0).mean(axis=1)
    fast = features.clip_features(y, 8_000, config=DEFAULT)[BLOCKS["contrast"]]
    np.testing.assert_allclose(fast, reference, rtol=1e-4, atol=1e-4)


# --- errors ------------------------------------------------------------------------


@pytest.mark.parametrize("recipe", ["fast", "classic"])
def test_empty_signal_raises(recipe: str) -> None:
    with pytest.raises(FeatureError, match=r"non-empty mono signal, got shape \(0,\)"):
        features.clip_features(np.zeros(0, np.float32), 16_000, config=FeatureConfig(recipe=recipe))
    with pytest.raises(FeatureError, match="non-empty mono signal"):
        features.frame_features(np.zeros(0, np.float32), 16_000, config=DEFAULT)


@pytest.mark.parametrize("recipe", ["fast", "classic"])
def test_multichannel_signal_raises(recipe: str) -> None:
    with pytest.raises(FeatureError, match=r"mono signal, got shape \(2, 1600\)"):
        features.clip_features(np.zeros((2, 1600), np.float32), 16_000, config=FeatureConfig(recipe=recipe))


@pytest.mark.parametrize(("n_samples", "shown"), [(1, "0.0625"), (100, "6.25"), (1000, "62.5"), (2047, "127")])
def test_signals_shorter_than_a_frame_are_refused(n_samples: int, shown: str) -> None:
    # Below one n_fft frame the STFT holds mostly zero padding: a clear error, not a vector.
    y = np.random.default_rng(0).uniform(-0.5, 0.5, n_samples).astype(np.float32)
    message = (f"too short: {shown} ms; at least 128 ms needed "
               "(one analysis frame, features.n_fft = 2048 samples at 16000 Hz)")
    with pytest.raises(FeatureError) as info:
        features.clip_features(y, 16_000, config=DEFAULT)
    assert str(info.value) == message
    with pytest.raises(FeatureError, match=re.escape(message)):
        features.frame_features(y, 16_000, config=DEFAULT)


def test_one_frame_is_enough() -> None:
    y = np.random.default_rng(0).uniform(-0.5, 0.5, 2048).astype(np.float32)
    frames = features.frame_features(y, 16_000, config=DEFAULT)
    assert frames.shape == (5, N_FEATURES) and np.isfinite(frames).all()


def test_non_finite_signal_is_refused(speech_16k: np.ndarray) -> None:
    y = speech_16k.copy()
    y[100] = np.nan
    with pytest.raises(FeatureError, match="^signal has NaN or infinite samples$"):
        features.clip_features(y, 16_000, config=DEFAULT)


def test_contrast_band_without_stft_bin_raises(speech_16k: np.ndarray) -> None:
    # 250 Hz bins cannot resolve a 25-50 Hz octave band.
    config = FeatureConfig(n_fft=64, hop_length=16, n_mels=16, n_mfcc=13, contrast_fmin=25.0)
    with pytest.raises(FeatureError, match=r"spectral-contrast band 1 \(25-50 Hz\) has no STFT bin"):
        features.clip_features(speech_16k, 16_000, config=config)


# --- real speech ---------------------------------------------------------------------


def pearson_per_column(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    return (a * b).sum(axis=0) / np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))


@needs_shared
def test_fast_tracks_classic_on_ravdess() -> None:
    # 40 clips spread over actors 01-20 and all emotions; classic costs ~0.15 s per clip.
    files = sorted((SHARED / "Audio_Speech_Actors_01-20_16k").rglob("*.wav"))[::30]
    assert len(files) == 40
    assert len({f.parent.name for f in files}) == 20
    fast, reference = [], []
    for path in files:
        y, _ = load_audio(path, sample_rate=16_000)
        fast.append(features.clip_features(y, 16_000, config=DEFAULT))
        reference.append(classic.classic_features(y, 16_000, config=CLASSIC))
    r = pearson_per_column(np.array(fast, np.float64), np.array(reference, np.float64))
    for block in ("mfcc", "mel", "chroma", "contrast"):
        worst = int(np.argmin(r[BLOCKS[block]]))
        assert r[BLOCKS[block]].min() >= 0.99, f"{block} column {worst}: r = {r[BLOCKS[block]][worst]:.4f}"
    # The tonnetz approximation tracks the exact one only loosely on speech (measured on
    # these clips: r = 0.22-0.64 per column), but every column in the right direction.
    assert r[BLOCKS["tonnetz"]].min() > 0.15, np.round(r[BLOCKS["tonnetz"]], 3)

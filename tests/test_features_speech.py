"""The opt-in band-SNR speech detector (``features.speech_detector = "bands"``): streamed equals
whole, it finds the speech that the energy detector loses in noise, it calls noise alone and the
quiet gaps of calls silence, and "energy" stays the default with today's numbers."""

from __future__ import annotations

import numpy as np
import pytest

from ser_batch.audio.telephony import add_noise
from ser_batch.config import Config, FeatureConfig, load_config
from ser_batch.errors import ConfigError
from ser_batch.features import windows
from ser_batch.features.rich import level_column
from ser_batch.features.windows import (
    WindowGrid,
    first_sample_needed,
    judge_speech,
    signal_frames,
    signal_windows,
    speech_context,
    speech_frames,
    stream_windows,
)

from conftest import noise, speech_like

SR = 16_000
ENERGY = FeatureConfig(recipe="rich", speech_detector="energy")
BANDS = FeatureConfig(recipe="rich", speech_detector="bands")
GRID = WindowGrid.of(ENERGY, SR)


def _call(seed: int, n: int = 6) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Speech-like stretches (1.5-3 s, f0 110-220 Hz) after Gaussian gaps (std 0.002, 0.4-1.6 s,
    as ``ser_batch.demo`` calls have), and the gaps' sample ranges."""
    rng = np.random.default_rng(seed)
    parts, gaps, pos = [], [], 0
    for i in range(n):
        gap = rng.normal(0.0, 0.002, int(rng.uniform(0.4, 1.6) * SR)).astype(np.float32)
        talk = speech_like(sample_rate=SR, duration_s=float(rng.uniform(1.5, 3.0)),
                           f0_hz=float(rng.uniform(110.0, 220.0)), seed=seed * 10 + i)
        gaps.append((pos, pos + len(gap)))
        pos += len(gap) + len(talk)
        parts += [gap, talk]
    return np.concatenate(parts).astype(np.float32), gaps


def _flags(y: np.ndarray, config: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """Every frame's speech flag under ``config``'s detector, and the frame levels."""
    frames, _ = signal_frames(y, SR, config=config)
    n = len(frames)
    flags = judge_speech(frames, 0, grid=WindowGrid.of(config, SR), config=config, n_frames=n, lo=0, hi=n)
    return flags, frames[:, level_column(config)]


def _stream(y: np.ndarray, block: int, config: FeatureConfig, *, first_sample: int = 0,
            windows_: tuple[int, int | None] = (0, None)) -> list[windows.WindowBatch]:
    blocks = (y[i : i + block] for i in range(first_sample, len(y), block))
    return list(stream_windows(blocks, sample_rate=SR, config=config, first_sample=first_sample, windows=windows_))


# ------------------------------------------------------------------ streaming = whole


@pytest.mark.parametrize("block_s", [0.37, 5.0, 60.0])
def test_bands_streamed_in_any_block_size_equals_the_whole_signal(monkeypatch: pytest.MonkeyPatch,
                                                                   block_s: float) -> None:
    """The band detector's 110 frames of context are kept and awaited: every batch's speech
    ratios and speech-frame counts equal the whole signal's, also from a later window on."""
    y, _ = _call(0)
    y = add_noise(y, 15.0, np.random.default_rng(1), sample_rate=SR)  # ~19 s, noise everywhere
    _, whole = signal_windows(y, SR, config=BANDS)
    _, energy = signal_windows(y, SR, config=ENERGY)
    assert not np.array_equal(whole.speech_ratio, energy.speech_ratio)  # the band detector is in use
    monkeypatch.setattr(windows, "BLOCK_FRAMES", 150)  # ~5 s of frames per batch: many batches
    batches = _stream(y, int(block_s * SR), BANDS)
    assert len(batches) >= 2
    cat = lambda name: np.concatenate([getattr(b, name) for b in batches])
    np.testing.assert_array_equal(cat("index"), whole.index)
    np.testing.assert_array_equal(cat("speech_ratio"), whole.speech_ratio)
    assert sum(b.speech_frames for b in batches) == whole.speech_frames
    # Vectors: float32 sums over batch-sized STFTs (as for "energy"; the detector adds nothing).
    np.testing.assert_allclose(cat("vectors"), whole.vectors, rtol=1e-4, atol=1e-3)
    # A stream that starts at window 20 (the samples first_sample_needed asks for) agrees too.
    start = first_sample_needed(20, config=BANDS, sample_rate=SR)
    assert start < first_sample_needed(20, config=ENERGY, sample_rate=SR)  # it keeps more context
    later = _stream(y, int(block_s * SR), BANDS, first_sample=start, windows_=(20, None))
    np.testing.assert_array_equal(np.concatenate([b.speech_ratio for b in later]), whole.speech_ratio[20:])


def test_the_context_kept_is_the_detectors() -> None:
    assert speech_context(GRID, ENERGY) == GRID.context == 78  # 2.5 s of 32 ms frames, as before
    assert speech_context(WindowGrid.of(BANDS, SR), BANDS) == 110  # 78 + 2 window hops


# --------------------------------------------------------------------- in noise


def test_bands_finds_the_speech_that_energy_loses_in_white_noise_at_10_db() -> None:
    """Reference: the clean signal's active frames (above -75 dB and within 30 dB of its 95th
    percentile level). Measured on this signal: "energy" finds 64.5% of them in white noise at
    10 dB SNR, "bands" 100% (and both ~99-100% of them in the clean signal)."""
    clean, _ = _call(0)
    clean_energy, level = _flags(clean, ENERGY)
    clean_bands, _ = _flags(clean, BANDS)
    active = (level > windows.SILENCE_DB) & (level >= np.percentile(level, 95) - 30.0)
    assert active.sum() > 400
    assert clean_bands[active].mean() >= 0.98 and clean_energy[active].mean() >= 0.98
    mix = add_noise(clean, 10.0, np.random.default_rng(100), sample_rate=SR)
    energy, _ = _flags(mix, ENERGY)
    bands, _ = _flags(mix, BANDS)
    assert energy[active].mean() <= 0.75
    assert bands[active].mean() >= 0.95
    assert bands[active].mean() - energy[active].mean() >= 0.25
    # Also against each detector's own clean output (64.5% vs 99.8% measured).
    assert bands[clean_bands].mean() >= 0.95 and energy[clean_energy].mean() <= 0.75


@pytest.mark.parametrize("kind", ["white", "gaussian gaps"])
def test_bands_calls_noise_alone_silence(kind: str) -> None:
    """10 s of white noise, or of the Gaussian gaps of calls (std 0.002): no frame is speech
    (measured 0), so no window reaches a speech ratio of 0.3."""
    if kind == "white":
        y = noise(sample_rate=SR, duration_s=10.0, amp=0.05, seed=3)
    else:
        y = np.random.default_rng(4).normal(0.0, 0.002, 10 * SR).astype(np.float32)
    flags, _ = _flags(y, BANDS)
    assert flags.mean() <= 0.01
    _, whole = signal_windows(y, SR, config=BANDS)
    assert (whole.speech_ratio < 0.3).all()


def test_bands_calls_the_gaps_inside_a_call_silence() -> None:
    """Frames wholly inside a call's Gaussian gaps, more than the hangover (3 frames) and one
    frame's overhang from the speech either side: none is speech (measured 0 of 78)."""
    y, gaps = _call(0)
    flags, _ = _flags(y, BANDS)
    centre = np.arange(len(flags)) * ENERGY.hop_length  # frame t covers centre -+ n_fft / 2
    reach = ENERGY.n_fft // 2 + 4 * ENERGY.hop_length
    inside = np.zeros(len(flags), dtype=bool)
    for a, b in gaps:
        inside |= (centre - reach >= a) & (centre + reach <= b)
    assert inside.sum() >= 50
    assert flags[inside].mean() <= 0.02


# --------------------------------------------------------------- energy: unchanged


def test_bands_is_the_default_and_energy_gives_the_old_numbers() -> None:
    assert FeatureConfig().speech_detector == "bands" and Config().features.speech_detector == "bands"
    rng = np.random.default_rng(0)
    parts = []
    for i in range(4):
        parts += [rng.normal(0.0, 0.002, int(rng.uniform(0.4, 1.6) * SR)).astype(np.float32),
                  speech_like(sample_rate=SR, duration_s=float(rng.uniform(1.5, 3.0)), seed=i)]
    y = add_noise(np.concatenate(parts), 10.0, np.random.default_rng(7), sample_rate=SR)
    frames, _ = signal_frames(y, SR, config=ENERGY)
    n = len(frames)
    today = speech_frames(frames[:, level_column(ENERGY)], 0, grid=GRID, margin_db=ENERGY.speech_margin_db,
                          n_frames=n, lo=0, hi=n)
    np.testing.assert_array_equal(judge_speech(frames, 0, grid=GRID, config=ENERGY, n_frames=n, lo=0, hi=n), today)
    _, whole = signal_windows(y, SR, config=ENERGY)
    starts, ends = GRID.bounds(0, GRID.n_windows(n), n)
    csum = np.concatenate([[0], np.cumsum(today)])
    np.testing.assert_array_equal(whole.speech_ratio,
                                  ((csum[ends] - csum[starts]) / (ends - starts)).astype(np.float32))
    # The numbers of 11dbae3's windows.py (before the option existed) on this signal.
    assert whole.speech_frames == 200 and int((whole.speech_ratio >= 0.3).sum()) == 22 and len(starts) == 26
    streamed = _stream(y, 5000, ENERGY)
    np.testing.assert_array_equal(np.concatenate([b.speech_ratio for b in streamed]), whole.speech_ratio)
    # Streams keep and ask for the same samples as before.
    assert first_sample_needed(20, config=ENERGY, sample_rate=SR) == (20 * GRID.hop - 78) * 512 - 1024


def test_the_columns_the_detectors_read_follow_each_config() -> None:
    """``judge_speech`` caches its column indices per config: a config whose columns sit elsewhere
    (more MFCCs) must get its own, not those of the config judged before it."""
    from ser_batch.features import speech
    from ser_batch.features.names import frame_column_names, rich_frame_names

    y, _ = _call(5, n=3)
    y = add_noise(y, 10.0, np.random.default_rng(2), sample_rate=SR)
    judged = {}
    for detector in ("bands", "energy"):
        for n_mfcc in (40, 60):  # the default first: it fills the cache
            config = FeatureConfig(recipe="rich", speech_detector=detector, n_mfcc=n_mfcc)
            frames, _ = signal_frames(y, SR, config=config)
            n, grid = len(frames), WindowGrid.of(config, SR)
            names = rich_frame_names(frame_column_names(config))
            level, mel, flat = (names.index(c) for c in ("rms_db", "mel_db_000", "flatness_log10"))
            if detector == "bands":
                expected = speech.speech_frames(frames[:, level], 0, hop=grid.hop, margin_db=config.speech_margin_db,
                                                n_frames=n, lo=0, hi=n, mel_db=frames[:, mel:mel + 128],
                                                flatness_log10=frames[:, flat], params=windows._band_params(grid))
            else:
                expected = speech_frames(frames[:, level], 0, grid=grid, margin_db=config.speech_margin_db,
                                         n_frames=n, lo=0, hi=n)
            got = judge_speech(frames, 0, grid=grid, config=config, n_frames=n, lo=0, hi=n)
            np.testing.assert_array_equal(got, expected)
            assert 0 < expected.sum() < n
            judged[detector, n_mfcc] = (frames, expected)
            # Equal configs share the entry; the cached value is a tuple (no caller can change it).
            assert windows._speech_columns(FeatureConfig(**vars(config))) == (level, mel, flat)
        # The default's columns read on the other layout judge other frames: a stale entry would show.
        frames, expected = judged[detector, 60]
        default = BANDS if detector == "bands" else ENERGY
        assert not np.array_equal(judge_speech(frames, 0, grid=GRID, config=default, n_frames=len(frames), lo=0,
                                               hi=len(frames)), expected)


# ------------------------------------------------------------------------- config


def test_an_unknown_speech_detector_is_refused() -> None:
    with pytest.raises(ConfigError, match="features.speech_detector must be one of energy, bands"):
        load_config(overrides=['features.speech_detector="silero"'])
    with pytest.raises(ConfigError, match="speech_detector"):
        Config().replace(features={"speech_detector": "Energy"})
    assert load_config(overrides=['features.speech_detector="bands"']).features.speech_detector == "bands"


def test_bands_needs_the_128_mel_bands_it_reads() -> None:
    with pytest.raises(ConfigError, match=r"n_mels = 128, got 64 \(or set features.speech_detector = \"energy\"\)"):
        Config().replace(features={"recipe": "rich", "speech_detector": "bands", "n_mels": 64})
    # The other recipes judge no speech: the default detector does not stop them using other mel bands.
    assert Config().replace(features={"recipe": "fast", "n_mels": 64}).features.n_mels == 64
    energy_64 = Config().replace(features={"recipe": "rich", "speech_detector": "energy", "n_mels": 64})
    assert energy_64.features.n_mels == 64


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 17, 40])
@pytest.mark.parametrize("length", [0, 1, 2, 7, 16, 33])
def test_running_min_equals_brute_force_also_on_arrays_shorter_than_its_span(n: int, length: int) -> None:
    """Signals of a few frames (shorter than the detector's 16-frame reference span) must not
    break the running minimum: it was a broadcast error on 2-4 frames."""
    from ser_batch.features.speech import _running_min, _running_min_pair

    x = np.random.default_rng(n * 100 + length).normal(size=(n, 3))
    forward = np.array([x[t : t + length + 1].min(axis=0) for t in range(n)]).reshape(n, 3)
    backward = np.array([x[max(0, t - length) : t + 1].min(axis=0) for t in range(n)]).reshape(n, 3)
    np.testing.assert_array_equal(_running_min(x, length, forward=True), forward)
    np.testing.assert_array_equal(_running_min(x, length, forward=False), backward)
    pair = _running_min_pair(x, length)  # the backward minima taken from the forward ones
    np.testing.assert_array_equal(pair[0], backward)
    np.testing.assert_array_equal(pair[1], forward)

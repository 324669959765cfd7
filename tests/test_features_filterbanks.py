"""Tests for :mod:`ser_batch.features.filterbanks`: the cached layouts and the numpy mel and chroma
filterbanks equal librosa's, and the signal checks every recipe shares give the promised messages.

Everything is generated; no audio files are read.
"""

from __future__ import annotations

import warnings

import librosa
import numpy as np
import pytest
import scipy.fft

from ser_batch.errors import FeatureError
from ser_batch.features import checks, filterbanks

RATES = [16_000, 8_000, 22_050]


# --- signal checks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_samples", "sample_rate", "n_fft", "message"),
    [
        (1, 16_000, 2048, "too short: 0.0625 ms; at least 128 ms needed"),
        (16, 16_000, 2048, "too short: 1 ms; at least 128 ms needed"),
        (1000, 16_000, 2048, "too short: 62.5 ms; at least 128 ms needed"),
        # Rounded down, so one sample short never reads as the minimum itself.
        (2047, 16_000, 2048, "too short: 127 ms; at least 128 ms needed"),
        (1000, 8_000, 1024, "too short: 125 ms; at least 128 ms needed"),
        # Rounded up, so a signal of the stated minimum is always long enough.
        (100, 22_050, 2048, "too short: 4.53 ms; at least 92.9 ms needed"),
    ],
)
def test_check_signal_too_short_message(n_samples: int, sample_rate: int, n_fft: int, message: str) -> None:
    y = np.zeros(n_samples, np.float32)
    with pytest.raises(FeatureError) as info:
        checks.check_signal(y, sample_rate, min_samples=n_fft,
                                 needed_for=checks.one_frame(n_fft, sample_rate))
    assert str(info.value) == (f"{message} (one analysis frame, features.n_fft = {n_fft} samples "
                               f"at {sample_rate} Hz)")


def test_check_signal_accepts_exactly_one_frame_and_refuses_bad_signals() -> None:
    checks.check_signal(np.zeros(2048, np.float32), 16_000, min_samples=2048, needed_for="")
    with pytest.raises(FeatureError, match=r"^expected a non-empty mono signal, got shape \(0,\)$"):
        checks.check_signal(np.zeros(0, np.float32), 16_000, min_samples=2048, needed_for="")
    with pytest.raises(FeatureError, match=r"^expected a non-empty mono signal, got shape \(2, 4096\)$"):
        checks.check_signal(np.zeros((2, 4096), np.float32), 16_000, min_samples=2048, needed_for="")
    for bad in (np.nan, np.inf, -np.inf):
        y = np.zeros(4096, np.float32)
        y[1234] = bad
        with pytest.raises(FeatureError, match="^signal has NaN or infinite samples$"):
            checks.check_signal(y, 16_000, min_samples=2048, needed_for="")


def test_check_finite() -> None:
    values = np.arange(6, dtype=np.float32)
    assert checks.check_finite(values, "x") is values
    values[3] = np.nan
    with pytest.raises(FeatureError, match="^chroma values are not finite$"):
        checks.check_finite(values, "chroma values")


# --- band layouts ------------------------------------------------------------------------


def test_contrast_fmin() -> None:
    assert filterbanks.contrast_fmin(8_000, fmin=200.0, n_bands=6) == 100.0
    assert filterbanks.contrast_fmin(16_000, fmin=200.0, n_bands=6) == 200.0
    assert filterbanks.contrast_fmin(48_000, fmin=200.0, n_bands=6) == 200.0
    assert filterbanks.contrast_fmin(4_000, fmin=200.0, n_bands=6) == 50.0
    # The top band's lower edge ends up below Nyquist, and only whole octaves are dropped.
    for rate in (4_000, 8_000, 11_025, 16_000, 22_050):
        fmin = filterbanks.contrast_fmin(rate, fmin=200.0, n_bands=6)
        assert fmin * 2 ** 5 < rate / 2
        assert np.log2(200.0 / fmin) == int(np.log2(200.0 / fmin))


@pytest.mark.parametrize("sample_rate", RATES)
def test_contrast_band_bins_reproduce_librosa(sample_rate: int) -> None:
    # A spectrum whose value is its bin index makes each band's valley and peak (the mean
    # of its q lowest and q highest bins) a function of exactly its bin range and q.
    n_fft = 2048
    fmin = filterbanks.contrast_fmin(sample_rate, fmin=200.0, n_bands=6)
    bands = filterbanks.contrast_band_bins(sample_rate, n_fft, 6, fmin)
    assert len(bands) == 7
    bins = np.arange(1, n_fft // 2 + 2, dtype=np.float64)
    S = np.repeat(bins[:, None], 3, axis=1)
    reference = librosa.feature.spectral_contrast(S=S, sr=sample_rate, n_fft=n_fft, fmin=fmin, n_bands=6,
                                                  linear=True)[:, 0]
    ours = [bins[hi - q : hi].mean() - bins[lo : lo + q].mean() for lo, hi, q in bands]
    np.testing.assert_allclose(ours, reference, rtol=1e-12)


def test_contrast_band_without_stft_bin_raises() -> None:
    # 250 Hz bins cannot resolve a 25-50 Hz octave band.
    with pytest.raises(FeatureError, match=r"spectral-contrast band 1 \(25-50 Hz\) has no STFT bin"):
        filterbanks.contrast_band_bins(16_000, 64, 6, 25.0)


@pytest.mark.parametrize("sample_rate", RATES)
def test_tuning_bins_cover_150_to_4000_hz(sample_rate: int) -> None:
    lo, hi = filterbanks.tuning_bins(sample_rate, 2048)
    freq = np.fft.rfftfreq(2048, 1.0 / sample_rate)
    assert freq[lo - 1] < 150.0 <= freq[lo]
    assert freq[hi - 1] < min(4000.0, sample_rate / 2) <= freq[hi]


# --- filterbanks -------------------------------------------------------------------------


def test_stft_window_is_librosas() -> None:
    window = filterbanks.stft_window(2048)
    assert window.dtype == np.float32 and window.shape == (2048,)
    np.testing.assert_allclose(window, librosa.filters.get_window("hann", 2048, fftbins=True), atol=1e-7)


@pytest.mark.parametrize("n_fft", [1, 2, 3, 64, 255, 512, 1000, 1024, 2048, 4096, 65536])
def test_stft_window_equals_scipys_periodic_hann_bit_for_bit(n_fft: int) -> None:
    import scipy.signal

    expected = scipy.signal.get_window("hann", n_fft, fftbins=True).astype(np.float32)
    np.testing.assert_array_equal(filterbanks.stft_window(n_fft), expected)


@pytest.mark.parametrize(("sample_rate", "n_fft", "n_mels"), [(16_000, 2048, 128), (8_000, 1024, 128),
                                                                (22_050, 512, 40), (16_000, 64, 16)])
def test_mel_blocks_hold_the_whole_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> None:
    basis = filterbanks.mel_basis(sample_rate, n_fft, n_mels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # empty filters at small n_fft
        reference = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)
    np.testing.assert_array_equal(basis, reference.astype(np.float32))
    rebuilt = np.zeros_like(basis)
    covered = 0
    for mel_start, mel_stop, lo, hi, weights in filterbanks.mel_blocks(sample_rate, n_fft, n_mels):
        assert mel_start == covered  # consecutive runs of bands, in order
        covered = mel_stop
        rebuilt[mel_start:mel_stop, lo:hi] = weights.T
    assert covered == n_mels
    np.testing.assert_array_equal(rebuilt, basis)


def _cheapest_cut(first: list[int], last: list[int], per_block: float) -> list[int]:
    """The block starts of the cheapest cut, by the plain double loop (the latest start wins a tie)."""
    n = len(first)
    best, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)
    for stop in range(1, n + 1):
        lo, hi = 10**9, 0
        for start in range(stop - 1, -1, -1):
            lo, hi = min(lo, first[start]), max(hi, last[start])
            cost = best[start] + (stop - start) * max(hi - lo, 0) + per_block
            if cost < best[stop]:
                best[stop], cut[stop] = cost, start
    starts, stop = [], n
    while stop > 0:
        starts.append(cut[stop])
        stop = cut[stop]
    return starts[::-1]


@pytest.mark.parametrize(("sample_rate", "n_fft", "n_mels"), [(16_000, 2048, 128), (8_000, 1024, 128),
                                                                (22_050, 512, 40), (16_000, 64, 16)])
def test_mel_blocks_are_the_cheapest_cut(sample_rate: int, n_fft: int, n_mels: int) -> None:
    basis = filterbanks.mel_basis(sample_rate, n_fft, n_mels)
    used = basis != 0
    nonempty = used.any(axis=1)
    first = np.where(nonempty, used.argmax(axis=1), basis.shape[1]).tolist()
    last = np.where(nonempty, basis.shape[1] - used[:, ::-1].argmax(axis=1), 0).tolist()
    starts = [block[0] for block in filterbanks.mel_blocks(sample_rate, n_fft, n_mels)]
    assert starts == _cheapest_cut(first, last, filterbanks._MEL_BLOCK_COST)


@pytest.mark.parametrize("tuning", [0.0, 0.23, -0.5])
def test_chroma_basis_t_is_librosas(tuning: float) -> None:
    ours = filterbanks.chroma_basis_t(16_000, 2048, 12, tuning)
    reference = librosa.filters.chroma(sr=16_000, n_fft=2048, tuning=tuning)
    assert ours.shape == (1025, 12) and ours.flags.c_contiguous
    np.testing.assert_allclose(ours, reference.T, rtol=1e-6, atol=1e-8)


def test_dct_t_is_the_orthonormal_dct() -> None:
    x = np.random.default_rng(0).normal(size=(7, 128))
    np.testing.assert_allclose(x @ filterbanks.dct_t(128, 40),
                               scipy.fft.dct(x, type=2, norm="ortho", axis=-1)[:, :40], atol=1e-12)


def test_tonnetz_basis_t_is_librosas_projection() -> None:
    chroma = np.random.default_rng(0).uniform(size=(12, 9))
    reference = librosa.feature.tonnetz(chroma=chroma)
    ours = filterbanks.tonnetz_basis_t(12).T @ (chroma / chroma.sum(axis=0))
    np.testing.assert_allclose(ours, reference, atol=1e-6)


@pytest.mark.parametrize("sample_rate", [4_000, 8_000, 11_025, 16_000, 22_050, 44_100, 48_000])
@pytest.mark.parametrize("n_fft", [64, 512, 2048, 4096])
def test_mel_filters_equal_librosa_bit_for_bit(sample_rate: int, n_fft: int) -> None:
    for n_mels in (1, 13, 40, 128, 256):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # empty filters with many bands
            reference = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)
        ours = filterbanks.mel_filters(sample_rate, n_fft, n_mels)
        assert ours.dtype == np.float32
        np.testing.assert_array_equal(ours, reference, err_msg=f"n_mels={n_mels}")


def test_mel_scale_round_trips_and_bends_at_1_khz() -> None:
    hz = np.array([0.0, 500.0, 1000.0, 4000.0, 8000.0])
    np.testing.assert_allclose(filterbanks.mel_to_hz(filterbanks.hz_to_mel(hz)), hz, rtol=1e-12)
    np.testing.assert_array_equal(filterbanks.hz_to_mel(hz), librosa.hz_to_mel(hz))
    assert filterbanks.hz_to_mel(np.array([1000.0]))[0] == pytest.approx(15.0)  # 1000 Hz / (200/3 Hz per mel)


@pytest.mark.parametrize("sample_rate", [8_000, 16_000, 22_050, 48_000])
@pytest.mark.parametrize("n_chroma", [7, 12, 24, 36])
def test_chroma_filters_equal_librosa_bit_for_bit(sample_rate: int, n_chroma: int) -> None:
    for n_fft in (256, 2048, 4096):
        for tuning in (0.0, -0.5, 0.13, 0.49):
            reference = librosa.filters.chroma(sr=sample_rate, n_fft=n_fft, n_chroma=n_chroma, tuning=tuning)
            ours = filterbanks.chroma_filters(sample_rate, n_fft, n_chroma, tuning)
            assert ours.dtype == np.float32 and ours.flags.c_contiguous
            np.testing.assert_array_equal(ours, reference, err_msg=f"n_fft={n_fft} tuning={tuning}")

"""The ``classic`` recipe: the reference librosa calls per clip, each averaged over time.

``mfcc(n_mfcc=40)``, ``chroma_stft(S=|stft|)``, ``melspectrogram``,
``spectral_contrast(S=|stft|)`` and ``tonnetz(y=effects.harmonic(y))``: 193 values with the
default config, about 0.15 s per 3.5 s clip. Kept for reproducibility and as the baseline
that the ``fast`` recipe (:mod:`ser_batch.features.fast`) is measured against.

Two changes make it work where the bare calls do not, without changing any number where
those work: at low sample rates the spectral-contrast bands start lower
(:func:`ser_batch.features.filterbanks.contrast_fmin`) and the constant-Q chroma of tonnetz drops
the octaves above Nyquist; and signals the harmonic separation cannot handle are refused
with a :class:`~ser_batch.errors.FeatureError` instead of giving NaN or garbage.
"""

from __future__ import annotations

import warnings

import numpy as np

from ser_batch.config import FeatureConfig
from ser_batch.features.checks import check_finite, check_signal, one_frame
from ser_batch.features.filterbanks import contrast_fmin

#: Frames the harmonic/percussive separation needs. scipy's ``median_filter`` (1.15 and
#: later, here 1.17) returns wrong, run-to-run different values -- sometimes NaN -- in
#: ``reflect`` mode along an axis of exactly two frames; one or three and more are right.
_HPSS_MIN_FRAMES = 3


def min_samples(config: FeatureConfig) -> tuple[int, str]:
    """Shortest signal the classic recipe accepts, in samples, and why.

    One analysis frame (``n_fft``), and with a hop over half the frame, enough samples
    for the three STFT frames its harmonic separation needs.
    """
    frames = (_HPSS_MIN_FRAMES - 1) * config.hop_length
    if frames > config.n_fft:
        return frames, (f"{_HPSS_MIN_FRAMES} STFT frames for the harmonic separation, "
                        f"{_HPSS_MIN_FRAMES - 1} * features.hop_length = {frames} samples")
    return config.n_fft, ""


def classic_features(y: np.ndarray, sample_rate: int, *, config: FeatureConfig) -> np.ndarray:
    """The reference recipe: five librosa calls per clip, each averaged over time.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)], float32 mono signal at ``sample_rate`` Hz, at least
        ``config.n_fft`` samples long
    sample_rate : int, Hz
    config : FeatureConfig

    Returns
    -------
    np.ndarray [shape=(n_features,)], float32, finite

    Raises
    ------
    FeatureError
        If the signal is empty, not mono, too short or not finite, or the harmonic part
        or the features come out non-finite.
    """
    import librosa

    needed, why = min_samples(config)
    check_signal(y, sample_rate, min_samples=needed, needed_for=why or one_frame(config.n_fft, sample_rate))
    n_fft, hop = config.n_fft, config.hop_length
    stft = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop))
    fmin = contrast_fmin(sample_rate, fmin=config.contrast_fmin, n_bands=config.contrast_bands)
    # chroma_cqt spans 7 octaves from C1 by default; drop the octaves above Nyquist.
    c1 = librosa.note_to_hz("C1")
    n_octaves = int(min(7, np.floor(np.log2(0.45 * sample_rate / c1))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        # librosa.tonnetz raises its own ParameterError on a non-finite signal: a
        # FeatureError here says which step failed and keeps a job's other files going.
        harmonic = check_finite(librosa.effects.harmonic(y), "harmonic part (librosa.effects.harmonic) values")
        parts = [
            librosa.feature.mfcc(y=y, sr=sample_rate, n_mfcc=config.n_mfcc, n_fft=n_fft, hop_length=hop,
                                 n_mels=config.n_mels),
            librosa.feature.chroma_stft(S=stft, sr=sample_rate, n_chroma=config.n_chroma, n_fft=n_fft,
                                        hop_length=hop),
            librosa.feature.melspectrogram(y=y, sr=sample_rate, n_fft=n_fft, hop_length=hop,
                                           n_mels=config.n_mels),
            librosa.feature.spectral_contrast(S=stft, sr=sample_rate, n_fft=n_fft, hop_length=hop,
                                              n_bands=config.contrast_bands, fmin=fmin),
            librosa.feature.tonnetz(y=harmonic, sr=sample_rate, hop_length=hop, n_octaves=n_octaves),
        ]
    vector = np.concatenate([p.mean(axis=1) for p in parts]).astype(np.float32)
    return check_finite(vector, "classic features")

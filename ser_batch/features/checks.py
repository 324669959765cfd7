"""The checks every recipe runs on a signal and on what it computes.

A recipe analyses a signal in frames of ``features.n_fft`` samples; a signal shorter than
one frame has no spectrum worth the name (only zero padding), so every recipe refuses it
with :func:`check_signal` rather than return a vector of padding.
"""

from __future__ import annotations

import math

import numpy as np

from ser_batch.errors import FeatureError


def check_signal(y: np.ndarray, sample_rate: int, *, min_samples: int, needed_for: str) -> None:
    """Refuse a signal that no recipe could analyse meaningfully.

    Parameters
    ----------
    y : np.ndarray, expected shape ``(n,)``
    sample_rate : int, Hz (only to state lengths in milliseconds)
    min_samples : int
        The shortest usable signal, in samples (one analysis frame, ``features.n_fft``,
        or more when a recipe needs several frames).
    needed_for : str
        What ``min_samples`` is, for the message (e.g. ``"one analysis frame, features.n_fft
        = 2048 samples at 16000 Hz"``).

    Raises
    ------
    FeatureError
        ``expected a non-empty mono signal ...``, ``too short: 62.5 ms; at least 128 ms
        needed (...)`` or ``signal has NaN or infinite samples``.
    """
    if y.ndim != 1 or y.size == 0:
        raise FeatureError(f"expected a non-empty mono signal, got shape {y.shape}")
    check_length(y.size, sample_rate, min_samples=min_samples, needed_for=needed_for)
    # ~6 us per 3.5 s clip; NaN would otherwise come out as NaN features at best.
    if not np.isfinite(y).all():
        raise FeatureError("signal has NaN or infinite samples")


def check_length(n_samples: int, sample_rate: int, *, min_samples: int, needed_for: str) -> None:
    """The ``too short`` error of :func:`check_signal`, for a length known without the samples."""
    if n_samples < min_samples:
        have = _milliseconds(n_samples, sample_rate, round_up=False)
        need = _milliseconds(min_samples, sample_rate, round_up=True)
        raise FeatureError(f"too short: {have} ms; at least {need} ms needed ({needed_for})")


def one_frame(n_fft: int, sample_rate: int) -> str:
    """How :func:`check_signal` names the one-analysis-frame minimum."""
    return f"one analysis frame, features.n_fft = {n_fft} samples at {sample_rate} Hz"


def check_finite(values: np.ndarray, what: str) -> np.ndarray:
    """``values``, or a FeatureError naming ``what`` if any of them is NaN or infinite."""
    if not np.isfinite(values).all():
        raise FeatureError(f"{what} are not finite")
    return values


def _milliseconds(samples: int, sample_rate: int, *, round_up: bool) -> str:
    """``samples`` as milliseconds with 3 significant digits, rounded towards the safe side
    (a too-short signal never shows as long as the minimum: 2047 samples -> "127", not "128")."""
    ms = 1000.0 * samples / sample_rate
    decimals = max(0, 2 - math.floor(math.log10(ms)))
    scale = 10.0**decimals
    value = (math.ceil if round_up else math.floor)(round(ms * scale, 6)) / scale
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text

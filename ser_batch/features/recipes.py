"""Feature recipes: which frame-level features, pooled how, into one vector per clip or window.

This module is the feature layer's entry point: :func:`file_features` decodes a file and
computes its features (the single code path of extraction and scoring), and
:func:`signal_features` does the same for a decoded signal with any recipe.

``classic`` (:mod:`ser_batch.features.classic`) and ``fast`` (:mod:`ser_batch.features.fast`) give the
193 time-averaged values of the original recipe. ``rich`` keeps the frames of ``fast`` and
adds what they lose when averaged, for better accuracy at ~3x the cost of ``fast`` (still
~10x faster than classic):

* per frame, 199 columns: the 193 ``fast`` columns with the mel bands in dB (a mean of
  power is dominated by the loudest frames), plus RMS level (dB), zero-crossing rate,
  spectral centroid, bandwidth, 85% roll-off (Hz) and log10 spectral flatness, all from
  the same STFT; every frame is **local** (:func:`rich_segment_frames`): the dB scales have
  the fixed floor ``features.db_floor`` and chroma is not retuned, so a frame depends on its
  own samples only;
* pooled over the clip or a window: mean, standard deviation, mean absolute frame-to-
  frame change and standard deviation of that change of every column (4 x 199);
* pitch: 9 statistics of the log2 f0 track of YIN (:mod:`.pitch`, equal to ``librosa.yin``;
  60-600 Hz, on a 4 kHz copy):
  mean, std, 10/50/90th percentiles, 90-10 range, mean absolute change, voiced fraction,
  and the duration in seconds.

805 values in all with the default config. Frames are computed once per signal and pooled
over the clip and over sliding windows (``features.window_s`` = 1.5 s every
``window_hop_s`` = 0.5 s) by :mod:`ser_batch.features.windows`, which also streams long recordings
block by block with the same numbers. Models trained on windows and averaging the windows'
probabilities per clip are ~8 points more accurate than models of whole-clip vectors
(docs/accuracy.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from ser_batch.config import Config, FeatureConfig
from ser_batch.errors import AudioError
from ser_batch.features.checks import check_finite

if TYPE_CHECKING:
    from ser_batch.audio.decode import AudioInfo


@dataclass(frozen=True)
class FileFeatures:
    """Features of one signal.

    Attributes
    ----------
    vector : np.ndarray [shape=(n_features,)], float32, pooled over the whole signal
    segments : np.ndarray [shape=(n_windows, n_features)], float32, or None when the recipe
        has no windows (``fast``, ``classic``, or ``features.window_s = 0``)
    segment_starts_s : np.ndarray [shape=(n_windows,)], float32, window start times (s), or None
    segment_speech_ratio : np.ndarray [shape=(n_windows,)], float32, fraction of each window's
        frames judged speech (see :mod:`ser_batch.features.windows`), or None
    """

    vector: np.ndarray
    segments: np.ndarray | None = None
    segment_starts_s: np.ndarray | None = None
    segment_speech_ratio: np.ndarray | None = None
    #: np.ndarray [shape=(n_frames, n_mels // 2)], float32: the signal's log-mel frames
    #: (:func:`ser_batch.features.melframes.mel_frames`; ``rich`` only), or None
    frames: np.ndarray | None = None
    #: np.ndarray [shape=(n_frames,)], bool: the frames the speech detector keeps (``rich`` only), or None
    frame_speech: np.ndarray | None = None
    #: np.ndarray [shape=(n_windows, 256)], float32: each window's GE2E embedding
    #: (:func:`ser_batch.features.ge2e.embed_windows`; ``extract.embeddings``), or None
    embeddings: np.ndarray | None = None


def signal_features(y: np.ndarray, sample_rate: int, *, config: FeatureConfig) -> FileFeatures:
    """Features of one decoded signal with ``config.recipe``: the clip vector, and for
    ``rich`` with ``window_s > 0`` also one vector per sliding window (frames are computed once).

    Parameters
    ----------
    y : np.ndarray [shape=(n,)], float32 mono signal at ``sample_rate`` Hz, at least
        ``config.n_fft`` samples (one analysis frame) long
    sample_rate : int, Hz

    Raises
    ------
    FeatureError
        If the signal is empty, not mono, shorter than one analysis frame (``too short:
        62.5 ms; at least 128 ms needed (...)``) or not finite, or the features are not.
    """
    return RECIPES[config.recipe].compute(y, sample_rate, config=config)


def _fast(y: np.ndarray, sample_rate: int, *, config: FeatureConfig) -> FileFeatures:
    from ser_batch.features.fast import clip_features

    return FileFeatures(clip_features(y, sample_rate, config=config))


def _classic(y: np.ndarray, sample_rate: int, *, config: FeatureConfig) -> FileFeatures:
    from ser_batch.features.classic import classic_features

    return FileFeatures(classic_features(y, sample_rate, config=config))


def _rich(y: np.ndarray, sample_rate: int, *, config: FeatureConfig) -> FileFeatures:
    from ser_batch.features.windows import frame_windows, signal_frames

    rich, f0 = signal_frames(y, sample_rate, config=config)
    vector, windows = frame_windows(rich, f0, sample_rate, config=config, frames=config.window_s > 0)
    if config.window_s <= 0:
        return FileFeatures(vector)
    return FileFeatures(vector, windows.vectors, windows.start_s.astype(np.float32), windows.speech_ratio,
                        windows.frames.frames, windows.frames.speech)


@dataclass(frozen=True)
class Recipe:
    """One feature recipe: what it computes from a decoded signal, and whether it has windows."""

    name: str
    compute: Callable[..., FileFeatures]
    #: Whether the recipe gives sliding-window vectors (what ``score`` needs) besides the clip vector.
    windows: bool


#: The recipes by name (``features.recipe``; their names: :data:`ser_batch.config.RECIPES`).
RECIPES: dict[str, Recipe] = {r.name: r for r in (Recipe("fast", _fast, False), Recipe("classic", _classic, False),
                                                 Recipe("rich", _rich, True))}


def decode_for_features(path: Path, *, config: Config) -> tuple[np.ndarray, AudioInfo]:
    """Decode one file as every job feeds it to a recipe: mono at ``config.audio.sample_rate``
    (:func:`ser_batch.audio.decode.load_audio`), refusing files over ``audio.max_file_s``.

    Returns
    -------
    y : np.ndarray [shape=(n,)], float32 at ``config.audio.sample_rate`` Hz
    info : AudioInfo of the original file

    Raises
    ------
    AudioError
        If the file cannot be decoded or is over ``audio.max_file_s``.
    """
    from ser_batch.audio.decode import load_audio, probe_audio

    limit = config.audio.max_file_s
    if limit and not config.audio.max_duration_s:
        length = probe_audio(Path(path)).duration_s
        if length > limit:
            raise AudioError(f"file is {length:.0f} s long, over audio.max_file_s = {limit:.0f} s "
                             "(raise it, or set audio.max_duration_s to use the beginning)")
    return load_audio(
        Path(path), sample_rate=config.audio.sample_rate, max_duration_s=config.audio.max_duration_s or None
    )


def checked_features(y: np.ndarray, *, config: Config) -> FileFeatures:
    """:func:`signal_features` of a signal decoded by :func:`decode_for_features`, checked finite.

    Raises
    ------
    FeatureError
        If the signal yields no finite features (too short, for one).
    """
    feats = signal_features(y, config.audio.sample_rate, config=config.features)
    # Every recipe already refuses non-finite values; this guards the one contract all
    # jobs rely on (a row holds finite features or an error) against a recipe that forgets.
    check_finite(feats.vector, "features")
    if feats.segments is not None:
        check_finite(feats.segments, "window features")
    return feats


def file_features(path: Path, *, config: Config) -> tuple[FileFeatures, AudioInfo]:
    """Decode one file and compute its features: the single code path of every job.

    The file is decoded, downmixed and resampled to ``config.audio.sample_rate`` exactly as
    :func:`ser_batch.audio.decode.load_audio` does, then :func:`signal_features` runs the recipe.

    Returns
    -------
    features : FileFeatures (clip vector, and window vectors for the ``rich`` recipe)
    info : AudioInfo of the original file

    Raises
    ------
    AudioError, FeatureError
        If the file cannot be decoded, is over ``audio.max_file_s`` or yields no finite
        features (too short, for one).
    """
    y, info = decode_for_features(path, config=config)
    return checked_features(y, config=config), info


# ------------------------------------------------------------ local frames (streamed)


def with_embeddings(feats: FileFeatures, y: np.ndarray, *, config: Config) -> FileFeatures:
    """``feats`` of the signal ``y`` with each window's GE2E embedding (``extract.embeddings``): the
    windows of ``feats.segments`` on the rich grid, each embedded from its own audio.

    Raises
    ------
    FeatureError
        If the encoder's weights cannot be read (the resemblyzer package is not installed).
    """
    import dataclasses

    from ser_batch.features.ge2e import cached_encoder, embed_windows, window_samples
    from ser_batch.features.windows import WindowGrid, n_frames_of

    if feats.segments is None:
        return feats
    grid = WindowGrid.of(config.features, config.audio.sample_rate)
    n_frames = n_frames_of(len(y), config.features.hop_length)
    starts, ends = grid.bounds(0, grid.n_windows(n_frames), n_frames)
    windows = window_samples(np.asarray(y, dtype=np.float32), starts, ends, hop_length=config.features.hop_length)
    embedded = embed_windows(cached_encoder(), windows)
    check_finite(embedded, "window embeddings")
    return dataclasses.replace(feats, embeddings=embedded)

"""Names of every feature vector, in order: the one source of the features table's column names.

``fast`` and ``classic`` give the 193 time-averaged columns of :func:`frame_column_names`;
``rich`` pools the frame columns of :func:`rich_frame_names` four ways and adds pitch
statistics (:func:`rich_names`, 805 names with the default config).
"""

from __future__ import annotations

from ser_batch.config import FeatureConfig

EXTRA_COLUMNS = ("rms_db", "zcr", "centroid_hz", "bandwidth_hz", "rolloff_hz", "flatness_log10")


POOLED_STATS = ("mean", "std", "dabs", "dstd")


PITCH_STATS = ("f0_log2_mean", "f0_log2_std", "f0_log2_p10", "f0_log2_p50", "f0_log2_p90",
               "f0_log2_range", "f0_log2_dabs", "voiced_fraction", "duration_s")


def rich_frame_names(base_names: list[str]) -> list[str]:
    """Column names of :func:`rich_segment_frames`: the fast columns (mel in dB) and the extras."""
    return [n.replace("mel_", "mel_db_") if n.startswith("mel_") else n for n in base_names] + list(EXTRA_COLUMNS)


def rich_names(base_names: list[str]) -> list[str]:
    """Names of the pooled ``rich`` vector, in order: ``<column>__<stat>`` then pitch."""
    columns = rich_frame_names(base_names)
    return [f"{c}__{s}" for s in POOLED_STATS for c in columns] + list(PITCH_STATS)


def feature_names(features: FeatureConfig) -> list[str]:
    """Stable names of the feature vector of ``features.recipe``, in order.

    ``fast`` and ``classic`` with the default config: ``mfcc_00..mfcc_39, chroma_00..chroma_11,
    mel_000..mel_127, contrast_0..contrast_6, tonnetz_0..tonnetz_5`` (193 names); ``rich``:
    see :func:`ser_batch.features.names.rich_names` (805 names).
    """
    return _NAMES[features.recipe](features)


def _rich_vector_names(features: FeatureConfig) -> list[str]:
    return rich_names(frame_column_names(features))


def frame_column_names(features: FeatureConfig) -> list[str]:
    """Names of the columns of :func:`ser_batch.features.fast.frame_features` (the 193 of the recipe)."""
    return (
        [f"mfcc_{i:02d}" for i in range(features.n_mfcc)]
        + [f"chroma_{i:02d}" for i in range(features.n_chroma)]
        + [f"mel_{i:03d}" for i in range(features.n_mels)]
        + [f"contrast_{i}" for i in range(features.contrast_bands + 1)]
        + [f"tonnetz_{i}" for i in range(6)]
    )


#: Names of each recipe's vector (the recipes themselves: :data:`ser_batch.features.recipes.RECIPES`).
_NAMES = {"fast": frame_column_names, "classic": frame_column_names, "rich": _rich_vector_names}

"""Every Arrow table ser-batch writes, and its metadata, is defined here.

Nothing else spells column names by hand: modules import the constants below.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import pyarrow as pa

from ser_batch.config import FeatureConfig

#: Bumped whenever a column is added, removed or changes meaning.
SCHEMA_VERSION = 1

# Columns of the features table.
PATH = "path"
EMOTION = "emotion"
INTENSITY = "intensity"
STATEMENT = "statement"
REPETITION = "repetition"
ACTOR = "actor"
GENDER = "gender"
DURATION_S = "duration_s"
SAMPLE_RATE_IN = "sample_rate_in"
CHANNELS_IN = "channels_in"
FEATURES = "features"
SEGMENTS = "segments"
SEGMENT_STARTS_S = "segment_starts_s"
ERROR = "error"

#: Label columns, in table order; all nullable (a non-RAVDESS file has none).
LABEL_COLUMNS = (EMOTION, INTENSITY, STATEMENT, REPETITION, ACTOR, GENDER)

#: The eight RAVDESS emotions in code order (code 01 is ``neutral``).
EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")

# Keys of the schema metadata (bytes in Parquet; decoded by :func:`read_metadata`).
META_SCHEMA_VERSION = b"ser_batch.schema_version"
META_TABLE = b"ser_batch.table"
META_RECIPE = b"ser_batch.recipe"
META_FEATURE_NAMES = b"ser_batch.feature_names"
META_CONFIG = b"ser_batch.config"


def feature_names(features: FeatureConfig) -> list[str]:
    """Stable names of the feature vector of ``features.recipe``, in order.

    ``fast`` and ``classic`` with the default config: ``mfcc_00..mfcc_39, chroma_00..chroma_11,
    mel_000..mel_127, contrast_0..contrast_6, tonnetz_0..tonnetz_5`` (193 names); ``rich``:
    see :func:`ser_batch.recipes.rich_names` (805 names).
    """
    if features.recipe == "rich":
        from ser_batch.recipes import rich_names

        return rich_names(frame_column_names(features))
    return frame_column_names(features)


def frame_column_names(features: FeatureConfig) -> list[str]:
    """Names of the columns of :func:`ser_batch.features.frame_features` (the 193 of the recipe)."""
    return (
        [f"mfcc_{i:02d}" for i in range(features.n_mfcc)]
        + [f"chroma_{i:02d}" for i in range(features.n_chroma)]
        + [f"mel_{i:03d}" for i in range(features.n_mels)]
        + [f"contrast_{i}" for i in range(features.contrast_bands + 1)]
        + [f"tonnetz_{i}" for i in range(6)]
    )


def features_schema(*, features: FeatureConfig, config: Mapping[str, Any]) -> pa.Schema:
    """Schema of the ``extract`` output: one row per audio file.

    ``features`` is a fixed-size list of float32 (193 with the default config);
    it is null, and ``error`` holds the reason, when the file could not be read.
    ``segments`` holds one such vector per sliding window (``rich`` recipe) and
    ``segment_starts_s`` their start times in seconds; both are null for other recipes.
    """
    names = feature_names(features)
    fields = [
        pa.field(PATH, pa.string(), nullable=False),
        pa.field(EMOTION, pa.string()),
        pa.field(INTENSITY, pa.string()),
        pa.field(STATEMENT, pa.int8()),
        pa.field(REPETITION, pa.int8()),
        pa.field(ACTOR, pa.int16()),
        pa.field(GENDER, pa.string()),
        pa.field(DURATION_S, pa.float64()),
        pa.field(SAMPLE_RATE_IN, pa.int32()),
        pa.field(CHANNELS_IN, pa.int16()),
        pa.field(FEATURES, pa.list_(pa.float32(), len(names))),
        pa.field(SEGMENTS, pa.list_(pa.list_(pa.float32(), len(names)))),
        pa.field(SEGMENT_STARTS_S, pa.list_(pa.float32())),
        pa.field(ERROR, pa.string()),
    ]
    metadata = {
        META_SCHEMA_VERSION: str(SCHEMA_VERSION).encode(),
        META_TABLE: b"features",
        META_RECIPE: features.recipe.encode(),
        META_FEATURE_NAMES: json.dumps(names).encode(),
        META_CONFIG: json.dumps(config, sort_keys=True).encode(),
    }
    return pa.schema(fields, metadata=metadata)


def read_metadata(schema: pa.Schema) -> dict[str, Any]:
    """Decode the ser-batch metadata of a schema (empty dict if it has none)."""
    raw = schema.metadata or {}
    if META_SCHEMA_VERSION not in raw:
        return {}
    return {
        "schema_version": int(raw[META_SCHEMA_VERSION]),
        "table": raw.get(META_TABLE, b"").decode(),
        "recipe": raw.get(META_RECIPE, b"").decode(),
        "feature_names": json.loads(raw.get(META_FEATURE_NAMES, b"[]")),
        "config": json.loads(raw.get(META_CONFIG, b"{}")),
    }


def vectors_array(vectors: list[Any], width: int) -> pa.FixedSizeListArray:
    """Fixed-size list array of float32 vectors ``[shape=(width,)]``; ``None`` gives a null."""
    import numpy as np

    flat = np.zeros((len(vectors), width), dtype=np.float32)
    for i, v in enumerate(vectors):
        if v is not None:
            flat[i] = v
    mask = pa.array([v is None for v in vectors], pa.bool_())
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1), pa.float32()), width, mask=mask)


def matrices_array(matrices: list[Any], width: int) -> pa.ListArray:
    """List array of per-row matrices ``[shape=(k_i, width)]`` (k_i vectors); ``None`` gives a null."""
    import numpy as np

    offsets = np.zeros(len(matrices) + 1, dtype=np.int32)
    for i, m in enumerate(matrices):
        offsets[i + 1] = offsets[i] + (0 if m is None else len(m))
    rows = [m for m in matrices if m is not None]
    inner = vectors_array(list(np.concatenate(rows)) if rows else [], width)
    mask = pa.array([m is None for m in matrices], pa.bool_())
    return pa.ListArray.from_arrays(pa.array(offsets), inner, mask=mask)

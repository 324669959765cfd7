"""Every Arrow table ser-batch writes, and its metadata, is defined here.

Nothing else spells column names by hand: modules import the constants below.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import pyarrow as pa

#: Bumped whenever a column is added, removed or changes meaning. Version 2: window
#: features are local (fixed dB floor, no tuning estimate, global window grid). Version 3:
#: the features table gains ``augment`` and ``band`` (``extract --augment`` writes several
#: rows per file, so ``path`` is no longer a unique key of it; issue 10).
#:
#: Not bumped for ``corpus`` (a nullable column, added after version 3): this number is also the
#: feature contract a bundle records and checks (``manifest.features.schema_version``), and the
#: window features did not change. Bumping it would make the pretrained bundle (schema 3) refuse
#: every new feature set over a column its models never see. Readers treat a version-3 table
#: without ``corpus`` as the corpus named by its folder (:func:`ser_batch.data.featureset.load_feature_set`).
SCHEMA_VERSION = 3

# ------------------------------------------------------------------ folders and files
# Names inside the output folders (hidden and ``_`` names are skipped by Arrow's discovery).

#: A job's ``OUT/.lock`` (see :mod:`ser_batch.cluster.lock`).
LOCK_NAME = ".lock"
#: ``score``'s output folder: windows, files, the settings every row was made with, the last run.
SEGMENTS_DIR = "segments"
FILES_DIR = "files"
SETTINGS = "_score.json"
RUN_RECORD = "_run.json"
#: What ``ser-batch report OUT`` writes.
REPORT_HTML = "report.html"

# Columns of the features table.
PATH = "path"
EMOTION = "emotion"
INTENSITY = "intensity"
STATEMENT = "statement"
REPETITION = "repetition"
ACTOR = "actor"
GENDER = "gender"
#: The corpus a row belongs to (``ravdess``, ``emovo``, ...): a ``corpus`` column of labels.csv,
#: else ``extract --corpus``, else the input folder's name. Not a label column.
CORPUS = "corpus"
DURATION_S = "duration_s"
SAMPLE_RATE_IN = "sample_rate_in"
CHANNELS_IN = "channels_in"
AUGMENT = "augment"
BAND = "band"
FEATURES = "features"
SEGMENTS = "segments"
SEGMENT_STARTS_S = "segment_starts_s"
SEGMENT_SPEECH_RATIO = "segment_speech_ratio"
FRAMES = "frames"
FRAME_SPEECH = "frame_speech"
GE2E = "ge2e"
#: Values of a window's GE2E embedding (the ``ge2e`` column).
GE2E_SIZE = 256
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


def features_schema(*, recipe: str, names: list[str], config: Mapping[str, Any], frame_bands: int = 0,
                    embeddings: bool = False) -> pa.Schema:
    """Schema of the ``extract`` output: one row per audio file.

    ``features`` is a fixed-size list of float32 (193 with the default config);
    it is null, and ``error`` holds the reason, when the file could not be read.
    ``segments`` holds one such vector per sliding window (``rich`` recipe) and
    ``segment_starts_s`` their start times in seconds and ``segment_speech_ratio`` the fraction
    of each window's frames judged speech; all three are null for other recipes.
    ``augment`` names the augmentation of an augmented copy (``telephone-ulaw``,
    ``noise-20db``, ...; see :mod:`ser_batch.audio.telephony`) and is null on the row of the file's
    own audio; ``band`` is ``narrow`` for telephone copies and files of at most 8 kHz, else
    ``wide`` (null when the file could not be read). ``corpus`` names the corpus of the row (see
    :data:`CORPUS`); tables written before it existed lack the column. With ``frame_bands``
    (``extract.store_frames``, rich recipe) a last column ``frames`` holds each row's log-mel frames,
    ``frame_bands`` values per 32 ms frame (:mod:`ser_batch.features.melframes`), and ``frame_speech``
    which of them the speech detector keeps (the cnn pools its windows over those); tables without
    them read as before (nullable additions: the schema version stays). With ``embeddings``
    (``extract.embeddings = ["ge2e"]``) a column ``ge2e`` holds each window's GE2E speaker embedding
    (:data:`GE2E_SIZE` values per window, the windows of ``segments``).
    """
    fields = [
        pa.field(PATH, pa.string(), nullable=False),
        pa.field(EMOTION, pa.string()),
        pa.field(INTENSITY, pa.string()),
        pa.field(STATEMENT, pa.int8()),
        pa.field(REPETITION, pa.int8()),
        pa.field(ACTOR, pa.int16()),
        pa.field(GENDER, pa.string()),
        pa.field(CORPUS, pa.string()),
        pa.field(DURATION_S, pa.float64()),
        pa.field(SAMPLE_RATE_IN, pa.int32()),
        pa.field(CHANNELS_IN, pa.int16()),
        pa.field(AUGMENT, pa.string()),
        pa.field(BAND, pa.string()),
        pa.field(FEATURES, pa.list_(pa.float32(), len(names))),
        pa.field(SEGMENTS, pa.list_(pa.list_(pa.float32(), len(names)))),
        pa.field(SEGMENT_STARTS_S, pa.list_(pa.float32())),
        pa.field(SEGMENT_SPEECH_RATIO, pa.list_(pa.float32())),
        pa.field(ERROR, pa.string()),
    ]
    if frame_bands:
        fields.append(pa.field(FRAMES, pa.list_(pa.list_(pa.float32(), frame_bands))))
        fields.append(pa.field(FRAME_SPEECH, pa.list_(pa.bool_())))
    if embeddings:
        fields.append(pa.field(GE2E, pa.list_(pa.list_(pa.float32(), GE2E_SIZE))))
    metadata = {
        META_SCHEMA_VERSION: str(SCHEMA_VERSION).encode(),
        META_TABLE: b"features",
        META_RECIPE: recipe.encode(),
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


# ----------------------------------------------------------------- score job tables

# Columns of the segments table (one row per window of each stream).
CHANNEL = "channel"
START_S = "start_s"
END_S = "end_s"
SPEECH_RATIO = "speech_ratio"
LABEL = "label"
CONFIDENCE = "confidence"
# Columns of the files table (one row per file, or per channel with --channels split).
SIZE_BYTES = "size_bytes"
MTIME = "mtime"
N_SEGMENTS = "n_segments"
SPEECH_S = "speech_s"
BUNDLE_ID = "bundle_id"
NORMALIZED = "normalized"
MODEL_SET = "model_set"

META_BUNDLE_ID = b"ser_batch.bundle_id"
META_CLASSES = b"ser_batch.classes"


def proba_column(name: str) -> str:
    """Column of the probability of class ``name``: ``p_<name>``."""
    return f"p_{name}"


def _score_metadata(table: str, *, classes: list[str], bundle_id: str, config: Mapping[str, Any]) -> dict:
    return {
        META_SCHEMA_VERSION: str(SCHEMA_VERSION).encode(),
        META_TABLE: table.encode(),
        META_BUNDLE_ID: bundle_id.encode(),
        META_CLASSES: json.dumps(list(classes)).encode(),
        META_CONFIG: json.dumps(config, sort_keys=True).encode(),
    }


def segments_schema(*, classes: list[str], bundle_id: str, config: Mapping[str, Any]) -> pa.Schema:
    """Schema of ``score``'s ``segments/``: one row per window of each scored stream.

    ``channel`` is null when the channels were mixed down (``--channels mix``) and the
    channel number (0-based) with ``--channels split``; ``start_s``/``end_s`` are seconds from
    the start of the file; ``label`` is null for a window with too little speech
    (``speech_ratio < score.min_speech_ratio``), whose probabilities are still given.
    """
    fields = [
        pa.field(PATH, pa.string(), nullable=False),
        pa.field(CHANNEL, pa.int16()),
        pa.field(START_S, pa.float64(), nullable=False),
        pa.field(END_S, pa.float64(), nullable=False),
        pa.field(SPEECH_RATIO, pa.float32(), nullable=False),
        pa.field(LABEL, pa.string()),
        pa.field(CONFIDENCE, pa.float32(), nullable=False),
        *[pa.field(proba_column(c), pa.float32(), nullable=False) for c in classes],
    ]
    return pa.schema(fields, metadata=_score_metadata("segments", classes=classes, bundle_id=bundle_id,
                                                      config=config))


def files_schema(*, classes: list[str], bundle_id: str, config: Mapping[str, Any]) -> pa.Schema:
    """Schema of ``score``'s ``files/``: one row per file (per channel with ``--channels split``).

    ``label``/``confidence``/``p_<class>`` summarise the windows with speech (mean
    probabilities; null when no window has speech or the file failed); ``error`` is null when
    the file was scored; ``size_bytes`` and ``mtime`` identify the version of the file scored.
    ``model_set`` names the bundle's model set that scored the stream (``global``, ``narrow``
    for inputs at 8 kHz or below when the bundle has one, ``speaker``/``narrow-speaker`` when
    normalised); ``normalized`` is true when the stream's windows were z-scored by its own
    speech statistics (``score.normalize = "file"`` and at least ``score.min_normalize_s`` of
    speech). Both are null on error rows.
    """
    fields = [
        pa.field(PATH, pa.string(), nullable=False),
        pa.field(CHANNEL, pa.int16()),
        pa.field(SIZE_BYTES, pa.int64()),
        pa.field(MTIME, pa.float64()),
        pa.field(DURATION_S, pa.float64()),
        pa.field(SAMPLE_RATE_IN, pa.int32()),
        pa.field(CHANNELS_IN, pa.int16()),
        pa.field(N_SEGMENTS, pa.int32()),
        pa.field(SPEECH_S, pa.float64()),
        pa.field(LABEL, pa.string()),
        pa.field(CONFIDENCE, pa.float32()),
        *[pa.field(proba_column(c), pa.float32()) for c in classes],
        pa.field(NORMALIZED, pa.bool_()),
        pa.field(MODEL_SET, pa.string()),
        pa.field(ERROR, pa.string()),
        pa.field(BUNDLE_ID, pa.string(), nullable=False),
    ]
    return pa.schema(fields, metadata=_score_metadata("files", classes=classes, bundle_id=bundle_id, config=config))


# ------------------------------------------------------------------------ the band rule

#: Inputs at this rate (Hz) or below are telephone band: ``band = "narrow"``, and scored by a
#: bundle's narrow-band model set when it has one.
NARROW_MAX_RATE = 8000
#: Values of the ``band`` column, and the bands a model set is trained on.
WIDE, NARROW = "wide", "narrow"
BANDS = (WIDE, NARROW)


def band_of(sample_rate_in: int | None, augment: str | None = None) -> str | None:
    """The band of a row or an input: ``narrow`` for telephone copies (``augment`` ``telephone-*``)
    and for audio of at most :data:`NARROW_MAX_RATE` Hz, else ``wide``; ``None`` when the rate is
    unknown (an unreadable file)."""
    if augment is not None and augment.startswith("telephone-"):
        return NARROW
    if sample_rate_in is None or sample_rate_in <= 0:
        return None
    return NARROW if sample_rate_in <= NARROW_MAX_RATE else WIDE

"""The rows and Arrow tables of the score job (schemas from :mod:`ser_batch.schema`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ser_batch import schema


def file_rows_of(unit: Any, streams: list[tuple[int | None, Any, Any]], error: str | None, *,
                 classes: list[str], bundle_id: str, frame_s: float) -> list[dict[str, Any]]:
    """``files`` rows of one file: one per stream ``(channel, AudioInfo, StreamSummary)``, or one
    error row."""
    base = {schema.PATH: unit.path, schema.SIZE_BYTES: unit.size, schema.MTIME: unit.mtime,
            schema.BUNDLE_ID: bundle_id, schema.ERROR: error}
    if error is not None or not streams:
        return [dict(base, **{schema.CHANNEL: None})]
    rows = []
    for channel, info, summary in streams:
        row = dict(base, **{schema.CHANNEL: channel, schema.DURATION_S: info.duration_s,
                            schema.SAMPLE_RATE_IN: info.sample_rate, schema.CHANNELS_IN: info.channels,
                            schema.N_SEGMENTS: summary.n_windows,
                            schema.SPEECH_S: round(summary.speech_frames * frame_s, 3),
                            schema.NORMALIZED: bool(summary.normalized), schema.MODEL_SET: summary.model_set})
        mean = summary.mean_proba()
        if mean is not None:
            best = int(np.argmax(mean))
            row.update({schema.LABEL: classes[best], schema.CONFIDENCE: float(mean[best]),
                        **{schema.proba_column(c): float(p) for c, p in zip(classes, mean)}})
        rows.append(row)
    return rows


class ScoreTables:
    """Arrow tables of the score job, with the schemas of :mod:`ser_batch.schema`."""

    def __init__(self, *, classes: list[str], bundle_id: str, config: dict[str, Any]) -> None:
        self.classes = list(classes)
        self.segments_schema = schema.segments_schema(classes=self.classes, bundle_id=bundle_id, config=config)
        self.files_schema = schema.files_schema(classes=self.classes, bundle_id=bundle_id, config=config)

    def segments(self, path: str, streams: list[Any]) -> pa.Table:
        """The windows of ``streams`` of one file, column by column."""
        return self.segments_of([(path, streams)])

    def segments_of(self, files: list[tuple[str, list[Any]]]) -> pa.Table:
        """The windows of the streams of several files ``(path, streams)``, in order: the rows of
        :meth:`segments` of each file, in one table (each column converted once, not per file:
        a shard of short clips built ~15 small Arrow arrays and a table per clip)."""
        n_classes = len(self.classes)
        streams = [s for _, file_streams in files for s in file_streams]
        proba = np.concatenate([s.proba for s in streams if s.proba is not None] or [np.zeros((0, n_classes))])
        speech = np.concatenate([s.speech for s in streams] or [np.zeros(0, dtype=bool)])
        best = np.argmax(proba, axis=1) if len(proba) else np.zeros(0, dtype=np.int64)
        labels = np.asarray(self.classes, dtype=object)[best]
        paths = [path for path, file_streams in files
                 for _ in range(sum(len(s.proba) for s in file_streams if s.proba is not None))]
        columns: dict[str, Any] = {
            schema.PATH: pa.array(paths, pa.string()),
            schema.CHANNEL: pa.array([s.channel for s in streams for _ in range(s.summary.n_windows)], pa.int16()),
            schema.START_S: np.concatenate([s.column("start_s") for s in streams] or [np.zeros(0)]),
            schema.END_S: np.concatenate([s.column("end_s") for s in streams] or [np.zeros(0)]),
            schema.SPEECH_RATIO: np.concatenate([s.column("speech_ratio") for s in streams] or [np.zeros(0)]),
            schema.LABEL: pa.array(list(labels), pa.string(), mask=~speech),
            schema.CONFIDENCE: proba[np.arange(len(best)), best],
        }
        for i, c in enumerate(self.classes):
            columns[schema.proba_column(c)] = proba[:, i]
        arrays = [columns[f.name] if isinstance(columns[f.name], pa.Array) else pa.array(columns[f.name], f.type)
                  for f in self.segments_schema]
        return pa.Table.from_arrays(arrays, schema=self.segments_schema)

    def files(self, rows: list[dict[str, Any]]) -> pa.Table:
        return pa.Table.from_pylist(rows, schema=self.files_schema)

"""What a ``score`` task does with its shard: stream each file, score its windows, write its parts.

The run context (:class:`ScoreRun`) is built once on the driver of :mod:`ser_batch.pipeline.score`
and sent whole to every worker: the settings, the bundle's path and id (the worker loads the
bundle once per process and checks the id), the classes the probabilities are over, the key of
the settings and the bundle's window hop. A task streams its files block by block, scores all
windows of the shard in one batched call of each model, writes its ``segments`` part and then its
``files`` part, and returns counters (:class:`ShardScores`). A chunk of a long file (a range of its
windows) writes its own ``segments`` part and returns its streams' partial summaries
(:class:`ChunkScores`): that file's row is the driver's, once all its chunks are in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from ser_batch import schema
from ser_batch.audio.decode import AudioInfo
from ser_batch.cluster.engine import ShardJob, crash_if_asked
from ser_batch.config import Config, config_to_dict
from ser_batch.data import parts, score_folder
from ser_batch.errors import SerBatchError
from ser_batch.pipeline.score_plan import Shard, Unit
from ser_batch.pipeline.score_tables import ScoreTables, file_rows_of

log = logging.getLogger(__name__)

#: Units of more audio than this (seconds) are scored block by block as they stream, so a
#: worker's memory does not grow with their length; shorter ones wait for the shard's batch.
STREAM_SCORING_S = 120.0

#: One stream of a file as it was summarised: (channel or None, the file's header, its StreamSummary).
Stream = tuple[int | None, AudioInfo, Any]


@dataclass(frozen=True)
class ChunkScores:
    """One chunk of a long file, scored: its ``segments`` part (None if it failed) and its streams'
    partial summaries, which the driver merges into the file's row."""

    path: str
    chunk: int
    error: str | None
    part: str | None
    streams: tuple[Stream, ...] = ()
    #: Seconds of audio the chunk scored (its windows' hops); counted only once the whole file is in
    #: without error, so that a file whose row is an error row adds no audio to the run's figures.
    audio_s: float = 0.0


@dataclass(frozen=True)
class ShardScores:
    """What a shard did: the whole files it committed, their errors, its chunks, its audio."""

    files: int
    errors: tuple[tuple[str, str], ...]
    chunks: tuple[ChunkScores, ...]
    #: Seconds of audio of the whole files the shard scored (its chunks carry their own).
    audio_s: float
    #: With ``score.normalize = "file"``: streams scored normalised, and with too little speech for it.
    normalized: int = 0
    not_normalized: int = 0
    #: The ``files`` part the shard committed, if any (the driver checks that it sees it).
    files_part: str | None = None


@dataclass(frozen=True)
class ScoreRun(ShardJob[Shard, ShardScores]):
    """The run context of ``score``, built once on the driver and sent whole to the workers."""

    out: str
    config: Config
    bundle_path: str
    bundle_id: str
    #: The classes the probabilities are over: ``score.classes``' subset, or all the bundle's.
    classes: tuple[str, ...]
    settings_key: str
    #: Seconds per frame, and frames between window starts, of the bundle's features.
    frame_s: float
    hop: int
    #: With ``score.normalize = "archive"``: the archive's statistics (the first pass's, :class:`ArchivePass`).
    archive: Any = None
    doing: ClassVar[str] = "scoring"
    task: ClassVar[str] = "score_shard"

    def tables(self) -> ScoreTables:
        return ScoreTables(classes=list(self.classes), bundle_id=self.bundle_id, config=config_to_dict(self.config))

    def run_shard(self, shard: Shard) -> ShardScores:
        """Score one shard and commit its parts (no Ray in here).

        A file that fails becomes a ``files`` row with its ``error``; an unexpected exception on
        one file is logged and reported as ``internal error: ...`` so that it cannot sink the job.
        A chunk of a long file writes its own ``segments`` part (named by the file and chunk, so a
        later run overwrites it) and returns its partial summaries: that file's row is the driver's.
        """
        from ser_batch.inference.scoring import attach_probabilities, cached_bundle

        bundle = cached_bundle(self.bundle_path, self.bundle_id)
        score = self.config.score
        # Features of every unit first, then all windows of the shard in one call of each model
        # (long units are scored block by block as they stream).
        done: list[tuple[Unit, list[Any], str | None]] = []
        for unit in shard.units:
            crash_if_asked(unit.path)
            streams, error = self._unit_windows(unit, bundle)
            done.append((unit, streams, error))
        attach_probabilities(bundle, [s for _, streams, _ in done for s in streams], framework=score.framework,
                             score=score, archive=self.archive)
        tables = self.tables()
        out = Path(self.out)
        whole: list[tuple[str, list[Any]]] = []  # (path, streams) of the files scored whole: one table at the end
        file_rows: list[dict[str, Any]] = []
        chunks: list[ChunkScores] = []
        errors: list[tuple[str, str]] = []
        audio_s = 0.0
        normalized = not_normalized = 0
        for unit, streams, error in done:
            summaries = tuple((s.channel, s.info, s.summary) for s in streams)
            if unit.chunk >= 0:
                part = None
                if error is None:
                    part = score_folder.write_part(tables.segments(unit.path, streams), out,
                                                   score_folder.SEGMENTS_DIR, unit.key(self.settings_key))
                chunks.append(ChunkScores(unit.path, unit.chunk, error, part, summaries,
                                          self._chunk_audio_s(unit, streams) if error is None else 0.0))
                continue
            if error is None:
                whole.append((unit.path, streams))
                audio_s += streams[0].info.duration_s
            else:
                errors.append((unit.path, error))
            file_rows.extend(file_rows_of(unit, list(summaries), error, classes=list(self.classes),
                                          bundle_id=self.bundle_id, frame_s=self.frame_s))
            if error is None and score.normalize != "none":
                normalized += sum(bool(s.summary.normalized) for s in streams)
                not_normalized += sum(not s.summary.normalized for s in streams)
        owned = []
        if whole:
            owned.append(score_folder.write_part(tables.segments_of(whole), out, score_folder.SEGMENTS_DIR, shard.key))
        files_part = None
        if file_rows:
            files_part = score_folder.write_part(tables.files(file_rows), out, score_folder.FILES_DIR, shard.key,
                                                 segment_parts=owned)
        return ShardScores(len({r[schema.PATH] for r in file_rows}), tuple(errors), tuple(chunks), audio_s,
                           normalized, not_normalized, files_part)

    def split(self, shard: Shard) -> list[Shard]:
        return [Shard((u,), parts.content_key(u.key(self.settings_key), "alone")) for u in shard.units]

    def lost(self, shard: Shard, error: str) -> ShardScores:
        """The result of a one-unit shard whose worker died on every try (on the driver): a failed
        chunk, or the file's error row, written here."""
        unit = shard.units[0]
        if unit.chunk >= 0:
            return ShardScores(0, (), (ChunkScores(unit.path, unit.chunk, error, None),), 0.0)
        rows = file_rows_of(unit, [], error, classes=list(self.classes), bundle_id=self.bundle_id, frame_s=self.frame_s)
        part = score_folder.write_part(pa.Table.from_pylist(rows, schema=self.tables().files_schema), Path(self.out),
                                       score_folder.FILES_DIR, shard.key, segment_parts=[])
        return ShardScores(1, ((unit.path, error),), (), 0.0, files_part=part)

    def _unit_windows(self, unit: Unit, bundle: Any) -> tuple[list[Any], str | None]:
        from ser_batch.inference.scoring import file_windows

        score = self.config.score
        framework = score.framework if unit.duration_s > STREAM_SCORING_S else None
        try:
            return file_windows(Path(unit.source), bundle=bundle, config=self.config, channels=score.channels,
                                windows=unit.windows, framework=framework, info=unit.info, archive=self.archive), None
        except SerBatchError as exc:
            return [], str(exc) or type(exc).__name__
        except Exception as exc:  # noqa: BLE001 - one odd file must not sink an overnight job
            log.exception("unexpected error on %s", unit.path)
            return [], f"internal error: {type(exc).__name__}: {exc}"

    def _chunk_audio_s(self, unit: Unit, streams: list[Any]) -> float:
        """Seconds of audio a chunk owns (its windows' hops; the rest at the end)."""
        start = unit.windows[0] * self.hop * self.frame_s
        duration = streams[0].info.duration_s if streams else 0.0
        stop = duration if unit.windows[1] is None else min(duration, unit.windows[1] * self.hop * self.frame_s)
        return max(0.0, stop - start)


@dataclass(frozen=True)
class ArchivePass(ShardJob[Shard, dict]):
    """The first pass of ``score --normalize archive``: per shard, the sums of the speech windows'
    inputs of the normalised set that scores each stream (:func:`ser_batch.inference.scoring.archive_sums`),
    merged; the driver adds up every shard's into the archive's statistics. A file that cannot be
    read adds nothing here (the scoring pass gives it its error row)."""

    config: Config
    bundle_path: str
    bundle_id: str
    doing: ClassVar[str] = "taking the archive statistics of"
    task: ClassVar[str] = "archive_shard"

    def run_shard(self, shard: Shard) -> dict:
        from ser_batch.inference.scoring import archive_sums, cached_bundle, merge_archive_sums

        bundle = cached_bundle(self.bundle_path, self.bundle_id)
        found = []
        for unit in shard.units:
            crash_if_asked(unit.path)
            try:
                found.append(archive_sums(Path(unit.source), bundle=bundle, config=self.config,
                                          channels=self.config.score.channels, windows=unit.windows, info=unit.info))
            except SerBatchError:
                continue
            except Exception:  # noqa: BLE001 - as in scoring: one odd file must not sink the job
                log.exception("unexpected error on %s (archive statistics)", unit.path)
        return merge_archive_sums(found)

    def split(self, shard: Shard) -> list[Shard]:
        return [Shard((u,), parts.content_key(u.path, u.windows, "archive")) for u in shard.units]

    def lost(self, shard: Shard, error: str) -> dict:
        return {}  # (its file's error row comes from the scoring pass)

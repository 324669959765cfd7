"""The batch scoring job: an audio archive in, windows and per-file emotions out, as Parquet.

The driver opens and checks the bundle, lists the input once, locks OUT and plans from one read
of what it holds (:func:`ser_batch.pipeline.score_plan.plan_score`): files already scored under
the same bundle and settings are skipped, each remaining file is probed once, and the work is cut
into shards of about ``score.shard_s`` seconds of audio; a file longer than ``score.chunk_s`` is
cut into chunks (ranges of windows aligned to the file's grid, so the result equals scoring it
whole) that separate tasks score, unless ``score.normalize = "file"``, which needs each stream
whole. Only a plan with shards starts the executor. Each task
(:class:`ser_batch.pipeline.score_shard.ScoreRun`) streams its files block by block, scores all
windows of a block in one batched call of each model (loaded once per worker), writes its
``segments`` part and then its ``files`` part, and returns only counters. The driver writes the
``files`` row of a cut file when all its chunks are done (:class:`_Commit`), and the run record
at the end (:mod:`ser_batch.pipeline.score_record`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

from ser_batch.cluster import output
from ser_batch.cluster.engine import Executor, Progress, run_shards
from ser_batch.config import Config
from ser_batch.data import parts, score_folder, score_parts, score_root
from ser_batch.errors import DatasetError
from ser_batch.pipeline.score_plan import ScorePlan, archive_root, list_input, plan_score, settings_of
from ser_batch.pipeline.score_record import ScoreSummary, write_run_record
from ser_batch.pipeline.score_shard import ArchivePass, ChunkScores, ScoreRun, ShardScores
from ser_batch.pipeline.score_tables import file_rows_of

log = logging.getLogger(__name__)


def run_score(input_path: Path, out: Path, *, config: Config, model_dir: Path | None = None, rescore: bool = False,
              retry_errors: bool = False, prune: bool = False, repair: bool = False, executor: Executor | None = None,
              progress: bool = True, on_progress: Callable[[ShardScores], None] | None = None) -> ScoreSummary:
    """Score every audio file of ``input_path`` (a folder or a list of paths) into ``out``.

    Paths are made absolute first; an OUT that is neither empty nor a score folder is refused
    (:func:`ser_batch.data.score_folder.refuse_foreign`), and so is one holding results of other
    settings without ``rescore``; the bundle is loaded and checked whole (every model of every set:
    :func:`open_scoring_bundle`); all before ``OUT/.lock`` is taken, so a bundle that cannot score
    is one error and OUT is not touched. Under the lock the run is planned
    (:func:`ser_batch.pipeline.score_plan.plan_score`, which says what is skipped, retried and
    pruned); a plan without shards starts no executor and only rewrites the run record. Otherwise
    the executor (``executor``, default: Ray as ``config.ray`` says) is started before anything is
    written; on a cluster every node must see INPUT and OUT (:mod:`ser_batch.cluster.output`), and
    afterwards this machine must see every part the tasks committed.

    Raises
    ------
    DatasetError
        On a missing input, no audio, or an output folder holding other results (without ``rescore``).
    BundleError
        If the bundle is unreadable or cannot score windows of audio.
    """
    from ser_batch.inference.scoring import bundle_id
    from ser_batch.models.training_overlap import find_overlap

    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    command_started = time.perf_counter()
    executor = executor or Executor.of(config.ray)
    input_path, out = output.absolute(input_path), output.output_path(out)
    if not input_path.exists() and not input_path.is_symlink():
        raise DatasetError(f"input not found: {input_path}")
    score_folder.refuse_foreign(out)  # notes, audio, an extract output, a bundle: before anything is written
    parts.refuse_links(out)
    bundle, subset = open_scoring_bundle(model_dir, config)
    bid = bundle_id(bundle)
    settings = settings_of(bundle, bid, config, subset)
    entries = list_input(input_path, extensions=config.audio.extensions)
    if not entries:
        raise DatasetError(f"no audio files ({', '.join(config.audio.extensions)}) found in {input_path}")
    root = archive_root(input_path)
    check_out(out, settings, root, rescore=rescore)  # other settings or another archive: refused, nothing written
    features = bundle.config.features
    frame_s = features.hop_length / bundle.config.audio.sample_rate
    job = ScoreRun(str(out), config, str(Path(bundle.path).resolve()), bid,
                   tuple(subset) if subset is not None else tuple(bundle.classes), settings["key"], frame_s,
                   bundle_hop(bundle))
    with output.job_output(out, job="score") as held:
        # Again under the lock: another run (an extract, a score of another archive) may have written OUT
        # since the first look, and only now can none do so until this run ends.
        scope = check_out(out, settings, root, rescore=rescore)
        entries = [(scope.stored(path), source) for path, source in entries]
        settings = dict(settings, **{score_root.INPUT_ROOT: str(scope.root)})
        committed = score_folder.Committed() if rescore else score_folder.read_committed(out)
        # Damaged parts: repaired by scoring their files again (those of this input: at once; others'
        # rows only with --repair), or refused here, before anything is written.
        mending = score_parts.repair_plan(out, committed.damaged, listed={path for path, _ in entries}, repair=repair)
        for path in mending.paths:  # not done any more: scored again (when listed) and their rows dropped
            committed.identities.pop(path, None)
            committed.failed.discard(path)
        plan = plan_score(entries, committed, config=config, settings_key=settings["key"], features=features,
                          sample_rate=bundle.config.audio.sample_rate, scope=scope, retry_errors=retry_errors,
                          prune=prune)
        summary = ScoreSummary(out=out, files_total=plan.files_total, files_skipped=plan.files_skipped,
                               failed_skipped=plan.failed_skipped, retried=plan.retried,
                               files_gone=len(plan.gone), files_pruned=plan.pruned,
                               normalize=config.score.normalize, min_normalize_s=config.score.min_normalize_s,
                               root_moved_from=scope.moved_from, input_root=str(scope.root), repaired=mending.notes)
        plan.changed |= mending.paths
        summary.training_overlap = find_overlap(bundle, [source for _, source in entries])
        stored = _stored_archive(out, settings, committed, rescore=rescore) if config.score.normalize == "archive" \
            else None
        runtime = None
        if plan.shards:
            with output.start_workers(executor, held=held, inputs=[input_path]) as workers:
                runtime = workers.info
                summary.ray_start_s = runtime.start_s
                if config.score.normalize == "archive":
                    job, sums = _archive_pass(job, plan, stored, workers=workers, progress=progress)
                    settings = dict(settings, archive_stats=sums)
                    summary.archive_windows, summary.archive_reused = _windows_of(sums), stored is not None
                _prepare(out, plan, settings=settings, rescore=rescore, mending=mending)
                commit = _Commit(job, plan, summary, on_progress)
                ran = run_shards(job, plan.shards, workers=workers, commit=commit, max_retries=config.ray.max_retries,
                                 progress=Progress(plan.files, "score", progress),
                                 postfix=lambda: f"{summary.audio_s / 3600:.2f} h audio")
                summary.task_cpu_s, summary.peak_rss_mb = ran.task_cpu_s, ran.peak_rss_mb
                summary.tasks_wall_s = ran.wall_s
                # Tasks wrote their parts themselves: make sure this machine sees every one of them.
                output.check_visible(out / score_folder.FILES_DIR, commit.files_parts)
        else:
            if stored is not None:
                settings = dict(settings, archive_stats=stored)
            _prepare(out, plan, settings=settings, rescore=rescore, mending=mending)
        # The error rows in OUT now: those kept (a row dropped for a new one left ``committed``) and this run's.
        summary.errors_in_folder = len(plan.committed.failed) + len(summary.errors)
        summary.wall_s = time.perf_counter() - command_started
        write_run_record(out, summary, config=config, bundle_path=job.bundle_path, bundle_id=bid,
                         started=started_at, runtime=runtime)
    return summary


def check_out(out: Path, settings: dict[str, Any], root: Path, *, rescore: bool) -> score_root.Scope:
    """What OUT holds, checked (read only): a score folder or empty (:func:`score_folder.refuse_foreign`),
    of these settings and of the archive below ``root`` unless ``rescore`` (:func:`score_folder.settings_conflict`,
    :func:`score_root.input_scope`); the run's :class:`score_root.Scope` in it. Called before OUT is locked,
    so that a mistake answers at once, and again once it is, when no other run can change it any more."""
    score_folder.refuse_foreign(out)
    if rescore:
        return score_root.Scope(root)
    score_folder.settings_conflict(out, settings)
    return score_root.input_scope(out, root)


def _stored_archive(out: Path, settings: dict[str, Any], committed: score_folder.Committed, *,
                    rescore: bool) -> dict[str, Any] | None:
    """The archive statistics an earlier run into ``out`` recorded with the same settings (reused:
    every row of the folder is normalised alike); None when there are none to reuse.

    Raises
    ------
    DatasetError
        If ``out`` holds rows normalised by statistics it does not record.
    """
    if rescore:
        return None
    recorded = score_folder.read_settings(out)
    stats = recorded.get("archive_stats") if recorded and recorded.get("key") == settings["key"] else None
    if stats is None and committed.rows:
        raise DatasetError(f"{out} holds rows normalised by archive statistics it does not record; pass --rescore "
                           "to score the whole input again")
    return stats


def _archive_pass(job: ScoreRun, plan: ScorePlan, stored: dict[str, Any] | None, *, workers: Any,
                  progress: bool) -> tuple[ScoreRun, dict[str, Any]]:
    """The first pass of ``--normalize archive``: the statistics of the speech windows of every file
    of the plan, reduced over its shards (or those an earlier run into OUT recorded, reused so that
    every row of the folder is normalised alike); the scoring job that carries them, and their record."""
    from ser_batch.inference.scoring import ArchiveStats, merge_archive_sums
    from ser_batch.models.normalize import StatsSums

    if stored is None:
        found: list[dict[str, Any]] = []
        first = ArchivePass(job.config, job.bundle_path, job.bundle_id)
        run_shards(first, plan.shards, workers=workers, commit=lambda r: found.append(r) or 0,
                   max_retries=job.config.ray.max_retries,
                   progress=Progress(len(plan.shards), "archive statistics", progress, unit="shard"))
        sums = merge_archive_sums(found)
        if not any(part.n for kinds in sums.values() for part in kinds.values()):
            raise DatasetError("--normalize archive: no window of the input has speech to take statistics of")
        stored = {name: {kind: part.to_json() for kind, part in kinds.items()} for name, kinds in sums.items()}
    sums = {name: {kind: StatsSums.from_json(part) for kind, part in kinds.items()} for name, kinds in stored.items()}
    return dataclasses.replace(job, archive=ArchiveStats.from_sums(sums)), stored


def _windows_of(record: dict[str, Any]) -> int:
    """Speech windows behind recorded archive statistics (the most of any input of any set)."""
    return max((int(part.get("n", 0)) for kinds in record.values() for part in kinds.values()), default=0)


def _prepare(out: Path, plan: ScorePlan, *, settings: dict[str, Any], rescore: bool,
             mending: score_parts.Repair) -> None:
    """Make OUT ready for the plan: its settings recorded (old results deleted with ``rescore``),
    damaged parts deleted, what a killed run left removed, the rows to replace, repair or prune dropped."""
    score_folder.check_settings(out, settings, rescore=rescore)
    for kind, name in mending.delete:
        (out / kind / name).unlink(missing_ok=True)
    score_folder.remove_leftovers(out, plan.committed)
    if plan.changed:
        score_folder.drop_paths(out, plan.committed, plan.changed)


def open_scoring_bundle(model_dir: Path | None, config: Config) -> tuple[Any, tuple[str, ...] | None]:
    """The bundle at ``model_dir`` (default: the pretrained one), every model of every set loaded
    and checked, and refused unless it can score audio with ``config``'s framework, normalisation
    and classes: all before any task starts, so no worker ever meets a bundle that cannot load.
    With it, the classes ``score.classes`` keeps (``None``: all the bundle's), parsed here once.

    Raises
    ------
    BundleError, ConfigError
        Naming the bundle file and the reason, or the setting.
    """
    from ser_batch.inference.scoring import check_normalize, check_scoring_bundle, class_subset
    from ser_batch.models.bundle import load_bundle

    bundle = load_bundle(model_dir)
    check_scoring_bundle(bundle, config.score.framework)
    check_normalize(bundle, config.score)
    return bundle, class_subset(bundle, config.score)  # a bad --classes is refused before any task starts


def bundle_hop(bundle: Any) -> int:
    """Frames between window starts of a bundle's windows."""
    from ser_batch.features.windows import WindowGrid

    return WindowGrid.of(bundle.config.features, bundle.config.audio.sample_rate).hop


class _Commit:
    """The driver's side of a pass: adds up each shard's counts, and writes the ``files`` row of a
    long file once all its chunks are in (from their partial summaries)."""

    def __init__(self, job: ScoreRun, plan: ScorePlan, summary: ScoreSummary,
                 on_progress: Callable[[ShardScores], None] | None) -> None:
        self.job, self.summary, self.on_progress = job, summary, on_progress
        self.units = {u.path: u for s in plan.shards for u in s.units}
        self.expected: dict[str, int] = {}
        for shard in plan.shards:
            for unit in shard.units:
                if unit.chunk >= 0:
                    self.expected[unit.path] = self.expected.get(unit.path, 0) + 1
        self.chunks: dict[str, list[ChunkScores]] = {}
        #: The ``files`` parts committed (by the tasks, or here).
        self.files_parts: list[str] = []

    def __call__(self, result: ShardScores) -> int:
        """Fold in one shard's result; the files it completed."""
        summary = self.summary
        done = result.files
        summary.audio_s += result.audio_s
        summary.errors.extend(result.errors)
        summary.streams_normalized += result.normalized
        summary.streams_not_normalized += result.not_normalized
        if result.files_part:
            self.files_parts.append(result.files_part)
        for chunk in result.chunks:
            arrived = self.chunks.setdefault(chunk.path, [])
            arrived.append(chunk)
            if len(arrived) == self.expected[chunk.path]:
                self._commit_long_file(chunk.path, arrived)
                done += 1
        summary.files_scored += done
        if self.on_progress:
            self.on_progress(result)
        return done

    def _commit_long_file(self, path: str, chunks: list[ChunkScores]) -> None:
        """Write the ``files`` row(s) of a file scored in chunks, from their partial summaries."""
        from ser_batch.inference.scoring import StreamSummary

        job, unit = self.job, self.units[path]
        chunks = sorted(chunks, key=lambda c: c.chunk)
        error = next((c.error for c in chunks if c.error), None)
        streams = []
        if error is None:
            self.summary.audio_s += sum(c.audio_s for c in chunks)
            by_channel: dict[Any, tuple[Any, StreamSummary]] = {}
            for chunk in chunks:
                for channel, info, part in chunk.streams:
                    first, total = by_channel.get(channel, (info, StreamSummary()))
                    by_channel[channel] = (first, total.merge(part))
            streams = [(channel, info, total) for channel, (info, total) in by_channel.items()]
        else:
            self.summary.errors.append((path, error))
            for chunk in chunks:  # the windows of a failed file are not kept
                if chunk.part:
                    (Path(job.out) / score_folder.SEGMENTS_DIR / chunk.part).unlink(missing_ok=True)
        rows = file_rows_of(unit, streams, error, classes=list(job.classes), bundle_id=job.bundle_id,
                            frame_s=job.frame_s)
        table = pa.Table.from_pylist(rows, schema=job.tables().files_schema)
        self.files_parts.append(score_folder.write_part(
            table, Path(job.out), score_folder.FILES_DIR, parts.content_key(unit.path, unit.size, unit.mtime, "file"),
            segment_parts=[c.part for c in chunks if c.part] if error is None else []))


"""The batch scoring job: an audio archive in, windows and per-file emotions out, as Parquet.

The driver lists the input, skips files already scored under the same bundle and settings,
reads each remaining file's header, and cuts the work into shards of about
``score.shard_s`` seconds of audio (:mod:`ser_batch.pipeline.score_plan`); a file longer than
``score.chunk_s`` is cut into window ranges that separate tasks score (windows aligned to the
file's grid, so the result equals scoring it whole), unless ``score.normalize = "file"``,
which needs each stream whole. Each Ray task streams its files block by block, scores all windows of a
block in one batched call of each model (loaded once per worker), writes its ``segments``
part and then its ``files`` part, and returns only counters. The driver writes the ``files``
row of a cut file when all its ranges are done, and the run record at the end.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from ser_batch import __version__, schema
from ser_batch.cluster import runtime
from ser_batch.cluster.runtime import crash_if_asked
from ser_batch.config import Config, config_from_dict, config_to_dict
from ser_batch.data import parts as storage
from ser_batch.data import score_folder as results
from ser_batch.errors import DatasetError, SerBatchError
from ser_batch.pipeline.score_plan import Shard, Unit, cut_units, identity_of, list_input, plan_shards, settings_of
from ser_batch.pipeline.score_tables import ScoreTables, file_rows_of
from ser_batch.reports import figures
from ser_batch.reports.failures import counted, format_failures
from ser_batch.reports.progress import progress_bar

log = logging.getLogger(__name__)



@dataclass
class ScoreSummary:
    """What a scoring run did (also written as ``_run.json``)."""

    out: Path
    files_total: int = 0
    files_scored: int = 0
    files_skipped: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    audio_s: float = 0.0
    wall_s: float = 0.0
    task_cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    #: Wall time from the first task submitted to the last one done (no runtime start-up).
    tasks_wall_s: float = 0.0
    #: Files skipped whose committed row is an error row (scored again with ``retry_errors``).
    failed_skipped: int = 0
    #: Files scored again because their row was an error row (``retry_errors``).
    retried: int = 0
    #: Files with rows in OUT that are gone from the input (no file at their path any more).
    files_gone: int = 0
    #: Of those, the files whose rows were removed (``prune``).
    files_pruned: int = 0
    #: Error rows in the output folder after the run (this run's and earlier ones').
    errors_in_folder: int = 0
    #: Seconds of ``wall_s`` spent starting (or joining) Ray; ``None`` when Ray was not started.
    ray_start_s: float | None = None
    #: Input files the bundle was trained on (:mod:`ser_batch.models.training_overlap`).
    training_overlap: Any = None
    #: With ``score.normalize = "file"``: streams scored normalised, and streams with too little
    #: speech for it (under ``score.min_normalize_s``) scored by the plain models instead.
    normalize: str = "none"
    min_normalize_s: float = 0.0
    streams_normalized: int = 0
    streams_not_normalized: int = 0

    @property
    def did_work(self) -> bool:
        """Whether the run scored or removed anything (a run that did not keeps the last record)."""
        return bool(self.files_scored or self.files_pruned)

    @property
    def realtime_factor(self) -> float:
        """Audio seconds / seconds of the whole command (:mod:`ser_batch.reports.figures`)."""
        return figures.realtime_factor(self.audio_s, self.wall_s)

    def line(self) -> str:
        """One-line summary for the CLI."""
        return (f"{counted(self.files_scored, 'file')} scored ({self.files_skipped} already done), "
                f"{counted(len(self.errors), 'error')}, {self.audio_s / 3600:.2f} h of audio "
                f"{figures.timing(self.wall_s, self.ray_start_s, self.audio_s)} -> {self.out}")

    def notes(self) -> list[str]:
        """Lines after :meth:`line` on what the run left for later: failed files skipped, rows
        without a file."""
        notes = []
        overlap = self.training_overlap.line() if self.training_overlap is not None else None
        if overlap:
            notes.append(overlap)
        if self.failed_skipped:
            one = self.failed_skipped == 1
            notes.append(f"{counted(self.failed_skipped, 'file')} failed before and {'was' if one else 'were'} "
                         f"skipped; --retry-errors scores {'it' if one else 'them'} again")
        if self.normalize == "file" and (self.streams_normalized or self.streams_not_normalized):
            total = self.streams_normalized + self.streams_not_normalized
            note = f"--normalize file: {self.streams_normalized} of {counted(total, 'stream')} normalised"
            if self.streams_not_normalized:
                note += (f"; {self.streams_not_normalized} with less than {self.min_normalize_s:g} s of speech "
                         "(score.min_normalize_s) scored by the plain models")
            notes.append(note)
        if self.retried:
            notes.append(f"{counted(self.retried, 'file')} that failed before scored again (--retry-errors)")
        if self.files_total and not self.did_work and not self.errors and self.files_skipped == self.files_total:
            every = "its only file is" if self.files_total == 1 else f"all {self.files_total} of its files are"
            notes.append(f"nothing to do: {every} already scored in {self.out}")
        if self.files_pruned:
            notes.append(f"{counted(self.files_pruned, 'file')} no longer in the input: "
                         f"{'its rows' if self.files_pruned == 1 else 'their rows'} removed (--prune)")
        elif self.files_gone:
            notes.append(f"{counted(self.files_gone, 'file')} in {self.out} no longer in the input "
                         f"(deleted or moved); --prune removes {'its' if self.files_gone == 1 else 'their'} rows")
        return notes

    def failure_report(self) -> str:
        """The first failed files of this run with their reasons, and where the rest are."""
        return format_failures(sorted(self.errors), total=self.files_scored, failed=len(self.errors),
                               where=f"the `error` column of {self.out / results.FILES_DIR}")


# ------------------------------------------------------------------------ the task


def score_shard(shard: Shard, *, out: str, bundle_path: str, bundle_id: str, config: dict[str, Any],
                settings_key: str) -> dict[str, Any]:
    """Score one shard and commit its parts; runs in a Ray task (no Ray in here).

    A file that fails becomes a ``files`` row with its ``error``; an unexpected exception on
    one file is logged and reported as ``internal error: ...`` so that it cannot sink the job.
    A range of a long file writes its own ``segments`` part (named by the file and range, so a
    later run overwrites it) and returns its partial summary: that file's row is the driver's.

    Returns
    -------
    dict
        Counters (files, audio seconds, CPU seconds, peak memory), the failed files, and the
        partial summaries of long-file ranges.
    """
    import resource

    from ser_batch.inference.scoring import attach_probabilities, cached_bundle, output_classes

    cpu0 = time.process_time()
    cfg = config_from_dict(config)
    bundle = cached_bundle(bundle_path, bundle_id)
    frame_s = bundle.config.features.hop_length / bundle.config.audio.sample_rate
    classes = output_classes(bundle, cfg.score)
    tables = ScoreTables(classes=classes, bundle_id=bundle_id, config=config)
    # Features of every unit first, then all windows of the shard in one call of each model
    # (long units are scored block by block as they stream).
    done: list[tuple[Unit, list[Any], str | None]] = []
    for unit in shard.units:
        crash_if_asked(unit.path)
        streams, error = _unit_windows(unit, bundle=bundle, config=cfg)
        done.append((unit, streams, error))
    attach_probabilities(bundle, [s for _, streams, _ in done for s in streams], framework=cfg.score.framework,
                         score=cfg.score)
    segments: list[tuple[str, list[Any]]] = []  # (path, streams) of the files scored whole, one table at the end
    file_rows: list[dict[str, Any]] = []
    chunks: list[dict[str, Any]] = []
    errors: list[tuple[str, str]] = []
    audio_s = 0.0
    normalized = not_normalized = 0
    for unit, streams, error in done:
        if unit.chunk >= 0:
            part = None
            if error is None:
                part = results.write_part(tables.segments(unit.path, streams), Path(out), results.SEGMENTS_DIR,
                                          unit.key(settings_key))
                audio_s += _range_s(unit, streams, hop=bundle_hop(bundle), frame_s=frame_s)
            chunks.append({"path": unit.path, "chunk": unit.chunk, "error": error, "part": part,
                           "streams": [_partial(s) for s in streams]})
            continue
        if error is None:
            segments.append((unit.path, streams))
            audio_s += streams[0].info.duration_s
        else:
            errors.append((unit.path, error))
        file_rows.extend(file_rows_of(unit, [(s.channel, s.info, s.summary) for s in streams], error,
                                      classes=classes, bundle_id=bundle_id, frame_s=frame_s))
        if error is None and cfg.score.normalize == "file":
            normalized += sum(bool(s.summary.normalized) for s in streams)
            not_normalized += sum(not s.summary.normalized for s in streams)
    owned = []
    if segments:
        owned.append(results.write_part(tables.segments_of(segments), Path(out), results.SEGMENTS_DIR, shard.key))
    if file_rows:
        results.write_part(tables.files(file_rows), Path(out), results.FILES_DIR, shard.key, segment_parts=owned)
    return {
        "files": len({r[schema.PATH] for r in file_rows}),
        "errors": errors,
        "chunks": chunks,
        "audio_s": audio_s,
        "normalized": normalized,
        "not_normalized": not_normalized,
        "cpu_s": time.process_time() - cpu0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def bundle_hop(bundle: Any) -> int:
    """Frames between window starts of a bundle's windows."""
    from ser_batch.features.windows import WindowGrid

    return WindowGrid.of(bundle.config.features, bundle.config.audio.sample_rate).hop


def _range_s(unit: Unit, streams: list[Any], *, hop: int, frame_s: float) -> float:
    """Seconds of audio a range of windows owns (its windows' hops; the rest at the end)."""
    start = unit.windows[0] * hop * frame_s
    duration = streams[0].info.duration_s if streams else 0.0
    stop = duration if unit.windows[1] is None else min(duration, unit.windows[1] * hop * frame_s)
    return max(0.0, stop - start)


#: Units of more audio than this (seconds) are scored block by block as they stream, so a
#: worker's memory does not grow with their length; shorter ones wait for the shard's batch.
STREAM_SCORING_S = 120.0


def _unit_windows(unit: Unit, *, bundle: Any, config: Config) -> tuple[list[Any], str | None]:
    from ser_batch.inference.scoring import file_windows

    framework = config.score.framework if unit.duration_s > STREAM_SCORING_S else None
    try:
        return file_windows(Path(unit.source), bundle=bundle, config=config, channels=config.score.channels,
                            windows=unit.windows, framework=framework), None
    except SerBatchError as exc:
        return [], str(exc) or type(exc).__name__
    except Exception as exc:  # noqa: BLE001 - one odd file must not sink an overnight job
        log.exception("unexpected error on %s", unit.path)
        return [], f"internal error: {type(exc).__name__}: {exc}"


def _partial(stream: Any) -> dict[str, Any]:
    s = stream.summary
    return {"channel": stream.channel, "n_windows": s.n_windows, "n_speech": s.n_speech,
            "speech_frames": s.speech_frames, "proba_sum": None if s.proba_sum is None else s.proba_sum.tolist(),
            "model_set": s.model_set, "normalized": s.normalized, "info": stream.info}


# ---------------------------------------------------------------------- the driver


def run_score(input_path: Path, out: Path, *, config: Config, model_dir: Path | None = None, rescore: bool = False,
              retry_errors: bool = False, prune: bool = False, address: str | None = None, progress: bool = True,
              on_progress: Callable[[dict[str, Any]], None] | None = None) -> ScoreSummary:
    """Score every audio file of ``input_path`` (a folder or a list of paths) into ``out``.

    Paths are made absolute first; an OUT that is neither empty nor a score folder is refused
    (:func:`ser_batch.data.score_folder.refuse_foreign`); the bundle is loaded and checked whole (every model of every
    set: :func:`open_scoring_bundle`) before the Ray runtime is started (or the cluster at ``address``
    joined) and ``OUT/.lock`` taken, so a bundle that cannot score is one error and OUT is not
    touched; on a cluster every node must see INPUT and OUT (:mod:`ser_batch.cluster.output`), and
    afterwards this machine must see every row the tasks committed. A run with nothing to score or
    remove (:func:`_has_work`) only rewrites the run record, under the lock, and never starts Ray.
    The work itself is :func:`_score_into`.
    """
    from ser_batch.cluster import lock as outlock
    from ser_batch.cluster import output as launch
    from ser_batch.data.parts import refuse_links
    from ser_batch.errors import ClusterError

    input_path, out = launch.absolute(input_path), launch.output_path(out)
    if not input_path.exists() and not input_path.is_symlink():
        raise DatasetError(f"input not found: {input_path}")
    command_started = time.perf_counter()
    results.refuse_foreign(out)  # notes, audio, an extract output, a bundle: before anything is written
    refuse_links(out)
    bundle = open_scoring_bundle(model_dir, config)
    if not _has_work(input_path, out, config=config, bundle=bundle, rescore=rescore, retry_errors=retry_errors,
                     prune=prune):
        # Nothing to score or remove: the run record is rewritten under the lock, without Ray.
        try:
            with outlock.hold(out, job="score"):
                return _score_into(input_path, out, config=config, model_dir=model_dir,
                                   retry_errors=retry_errors, prune=prune, progress=progress,
                                   on_progress=on_progress, bundle=bundle, with_ray=False,
                                   timing=(command_started, None))
        except _WorkAppeared:
            pass  # a file came in since the check: the run below scores it
    ray_starting = time.perf_counter()
    with launch.job_output(out, job="score", inputs=[input_path], address=address,
                           num_cpus=config.ray.local_cpus):
        ray_start_s = time.perf_counter() - ray_starting
        committed = None if rescore else results.read_committed(out)
        summary = _score_into(input_path, out, config=config, model_dir=model_dir, rescore=rescore,
                              retry_errors=retry_errors, prune=prune, progress=progress, on_progress=on_progress,
                              committed=committed, bundle=bundle,
                              timing=(command_started, ray_start_s))
        # What was there before and kept: the rows _score_into replaced (changed or retried files)
        # left ``committed`` when they were dropped, so their new rows count as seen.
        before = set(committed.identities.items()) if committed is not None else set()
        after = results.read_committed(out)
        summary.errors_in_folder = after.errors
        seen = set(after.identities.items()) - before
        if len(seen) < summary.files_scored:
            raise ClusterError(f"{summary.files_scored - len(seen)} of {summary.files_scored} files the tasks scored "
                               f"have no row visible in {out} from this machine; --out must be on storage every "
                               "node shares")
    return summary


class _WorkAppeared(Exception):
    """Work found by a run that was planned to have none (a file came in meanwhile)."""


def _has_work(input_path: Path, out: Path, *, config: Config, bundle: Any, rescore: bool, retry_errors: bool,
              prune: bool) -> bool:
    """Whether a run has anything to score or remove, found without writing anything or starting
    Ray; raises what the run itself would (no audio in INPUT, OUT holding other settings)."""
    from ser_batch.inference.scoring import bundle_id as id_of

    entries = list_input(Path(input_path), extensions=config.audio.extensions)
    if not entries:
        raise DatasetError(f"no audio files ({', '.join(config.audio.extensions)}) found in {input_path}")
    if rescore:
        return True
    results.settings_conflict(out, settings_of(bundle, id_of(bundle), config))
    committed = results.read_committed(out)
    if any(not committed.is_done(rel, *identity_of(source), retry_errors=retry_errors) for rel, source in entries):
        return True
    return prune and bool(gone_rows(Path(input_path), committed, listed={rel for rel, _ in entries}))


def open_scoring_bundle(model_dir: Path | None, config: Config) -> Any:
    """The bundle at ``model_dir`` (default: the pretrained one), every model of every set loaded
    and checked, and refused unless it can score audio with ``config``'s framework, normalisation
    and classes: all before any task starts, so no worker ever meets a bundle that cannot load.

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
    class_subset(bundle, config.score)  # a bad --classes is refused before any task starts
    return bundle


def _score_into(input_path: Path, out: Path, *, config: Config, model_dir: Path | None = None, rescore: bool = False,
                retry_errors: bool = False, prune: bool = False, progress: bool = True,
                on_progress: Callable[[dict[str, Any]], None] | None = None,
                committed: results.Committed | None = None, bundle: Any = None,
                timing: tuple[float, float | None] | None = None, with_ray: bool = True) -> ScoreSummary:
    """Score every audio file of ``input_path`` (a folder or a list of paths) into ``out``.

    ``committed``: what :func:`ser_batch.data.score_folder.read_committed` found in ``out`` before the
    run, when the caller has read it already (it is read here otherwise). ``bundle``: the bundle
    :func:`open_scoring_bundle` opened from ``model_dir``, when the caller has opened it already.
    ``timing``: (``perf_counter`` at the command's start, seconds Ray took to start, None without
    Ray), so that ``wall_s`` is the whole command's (:mod:`ser_batch.reports.figures`).
    ``with_ray=False``: no runtime is up (the caller found nothing to do); work found all the same
    raises :class:`_WorkAppeared` before any is done.

    Files already scored under the same bundle and settings (same path, size and mtime) are
    skipped; files changed since are scored again and their old rows replaced. A file whose row
    is an error row (unreadable, or its worker died, or the run's own settings failed it) is
    skipped too unless ``retry_errors``, which scores it again and replaces its row. Rows of
    files no longer in the input, with no file at their path, are counted, and removed with
    ``prune``.

    Raises
    ------
    DatasetError
        On a missing input, no audio, or an output folder holding other results (without ``rescore``).
    BundleError
        If the bundle is unreadable or cannot score windows of audio.
    """
    from ser_batch.audio.decode import probe_audio
    from ser_batch.errors import AudioError
    from ser_batch.inference.scoring import bundle_id as id_of
    from ser_batch.models.training_overlap import find_overlap

    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    started = time.perf_counter()
    out = Path(out)
    if bundle is None:
        bundle = open_scoring_bundle(model_dir, config)
    bid = id_of(bundle)
    entries = list_input(Path(input_path), extensions=config.audio.extensions)
    if not entries:
        raise DatasetError(f"no audio files ({', '.join(config.audio.extensions)}) found in {input_path}")
    settings = settings_of(bundle, bid, config)
    results.check_settings(out, settings, rescore=rescore)
    if committed is None or rescore:
        committed = results.read_committed(out)
    results.remove_leftovers(out, committed)
    summary = ScoreSummary(out=out, files_total=len(entries), normalize=config.score.normalize,
                           min_normalize_s=config.score.min_normalize_s)
    summary.training_overlap = find_overlap(bundle, [source for _, source in entries])
    todo, changed = [], set()
    for rel, source in entries:
        size, mtime = identity_of(source)
        if committed.is_done(rel, size, mtime, retry_errors=retry_errors):
            summary.files_skipped += 1
            summary.failed_skipped += rel in committed.failed
            continue
        if rel in committed.identities:
            changed.add(rel)
            summary.retried += rel in committed.failed and committed.is_done(rel, size, mtime)
        try:
            duration = probe_audio(source).duration_s
        except (AudioError, OSError):
            duration = 0.0  # the task makes its error row
        todo.append(cut_units(rel, source, size, mtime, duration, config=config, bundle_config=bundle.config))
    gone = gone_rows(Path(input_path), committed, listed={rel for rel, _ in entries})
    summary.files_gone = len(gone)
    if prune:
        summary.files_pruned = len(gone)
        changed |= gone
    if changed:
        results.drop_paths(out, committed, changed)
    units = [u for file_units in todo for u in file_units]
    shards = plan_shards(units, config=config, settings_key=settings["key"])
    if shards and not with_ray:
        raise _WorkAppeared()
    if not with_ray:  # nothing scored or removed: the folder's error rows are those read above
        summary.errors_in_folder = committed.errors
    if shards:
        _run_shards(shards, out=out, bundle=bundle, bundle_id=bid, config=config, settings_key=settings["key"],
                    summary=summary, progress=progress, on_progress=on_progress)
    if timing is not None:
        started, summary.ray_start_s = timing
    summary.wall_s = time.perf_counter() - started
    _write_run_record(out, summary, config=config, bundle=bundle, bundle_id=bid, started=started_at)
    return summary


def gone_rows(input_path: Path, committed: results.Committed, *, listed: set[str]) -> set[str]:
    """Paths of ``committed`` rows not in this run's input (``listed``) whose file is gone: nothing
    (not even a dangling link) at the path the row names, read as INPUT names it (below the
    folder, or relative to the list's folder). A row of a file that is still there but not
    listed (another list scored into the same OUT) is not gone."""
    import os

    from ser_batch.data.paths import fs_path

    base = input_path.resolve() if input_path.is_dir() else input_path.resolve().parent
    return {path for path in committed.identities
            if path not in listed and not os.path.lexists(os.path.join(base, fs_path(path)))}


def _run_shards(shards: list[Shard], *, out: Path, bundle: Any, bundle_id: str, config: Config, settings_key: str,
                summary: ScoreSummary, progress: bool,
                on_progress: Callable[[dict[str, Any]], None] | None) -> None:
    """Run the shards on the runtime :func:`run_score` holds, committing long files as their last
    range comes in; a file whose worker died on every try, even alone, gets an error row."""
    frame_s = bundle.config.features.hop_length / bundle.config.audio.sample_rate
    n_files = len({u.path for s in shards for u in s.units})
    chunk_counts: dict[str, int] = {}
    for shard in shards:
        for unit in shard.units:
            if unit.chunk >= 0:
                chunk_counts[unit.path] = chunk_counts.get(unit.path, 0) + 1
    chunk_results: dict[str, list[dict[str, Any]]] = {}
    units_by_path = {u.path: u for s in shards for u in s.units}
    bar = progress_bar(total=n_files, desc="score", enabled=progress)
    from ser_batch.inference.scoring import output_classes

    classes = output_classes(bundle, config.score)
    config_dict = config_to_dict(config)
    kwargs = {"out": str(out.resolve()), "bundle_path": str(Path(bundle.path).resolve()), "bundle_id": bundle_id,
              "config": config_dict, "settings_key": settings_key}

    def collect(result: dict[str, Any]) -> None:
        done = result["files"]
        summary.audio_s += result["audio_s"]
        summary.task_cpu_s += result["cpu_s"]
        summary.peak_rss_mb = max(summary.peak_rss_mb, result["peak_rss_mb"])
        summary.errors.extend(result["errors"])
        summary.streams_normalized += result.get("normalized", 0)
        summary.streams_not_normalized += result.get("not_normalized", 0)
        for chunk in result["chunks"]:
            parts = chunk_results.setdefault(chunk["path"], [])
            parts.append(chunk)
            if len(parts) == chunk_counts[chunk["path"]]:
                _commit_long_file(units_by_path[chunk["path"]], parts, out=out, classes=classes, bundle_id=bundle_id,
                                  config=config_dict, frame_s=frame_s, summary=summary)
                done += 1
        summary.files_scored += done
        bar.update(done)
        bar.set_postfix_str(f"{summary.audio_s / 3600:.2f} h audio", refresh=False)
        if on_progress:
            on_progress(result)

    def split(shard: Shard) -> list[Shard]:
        return [Shard((u,), storage.content_key(u.key(settings_key), "alone")) for u in shard.units]

    tasks_started = time.perf_counter()
    lost = runtime.map_shards(score_shard, shards, split=split, kwargs=kwargs, max_retries=config.ray.max_retries,
                              on_result=collect)
    summary.tasks_wall_s = time.perf_counter() - tasks_started
    error = runtime.worker_died("scoring", config.ray.max_retries + 1)
    for shard in lost:
        unit = shard.units[0]
        if unit.chunk >= 0:
            collect({"files": 0, "errors": [], "audio_s": 0.0, "cpu_s": 0.0, "peak_rss_mb": 0.0,
                     "chunks": [{"path": unit.path, "chunk": unit.chunk, "error": error, "part": None, "streams": []}]})
            continue
        rows = file_rows_of(unit, [], error, classes=classes, bundle_id=bundle_id, frame_s=frame_s)
        results.write_part(pa.Table.from_pylist(rows, schema=schema.files_schema(
            classes=classes, bundle_id=bundle_id, config=config_dict)), out, results.FILES_DIR, shard.key,
            segment_parts=[])
        summary.errors.append((unit.path, error))
        summary.files_scored += 1
        bar.update(1)
    bar.close()


def _commit_long_file(unit: Unit, chunks: list[dict[str, Any]], *, out: Path, classes: list[str], bundle_id: str,
                      config: dict[str, Any], frame_s: float, summary: ScoreSummary) -> None:
    """Write the ``files`` row(s) of a file scored in ranges, from its ranges' partial sums."""
    from ser_batch.inference.scoring import StreamSummary

    chunks = sorted(chunks, key=lambda c: c["chunk"])
    error = next((c["error"] for c in chunks if c["error"]), None)
    streams = []
    if error is None:
        by_channel: dict[Any, tuple[Any, StreamSummary]] = {}
        for chunk in chunks:
            for part in chunk["streams"]:
                total = StreamSummary(part["n_windows"], part["n_speech"], part["speech_frames"],
                                      None if part["proba_sum"] is None else np.asarray(part["proba_sum"]),
                                      part["model_set"], part["normalized"])
                info, previous = by_channel.get(part["channel"], (part["info"], StreamSummary()))
                by_channel[part["channel"]] = (info, previous.merge(total))
        streams = [(channel, info, total) for channel, (info, total) in by_channel.items()]
    else:
        summary.errors.append((unit.path, error))
        for chunk in chunks:  # the windows of a failed file are not kept
            if chunk["part"]:
                (Path(out) / results.SEGMENTS_DIR / chunk["part"]).unlink(missing_ok=True)
    rows = file_rows_of(unit, streams, error, classes=classes, bundle_id=bundle_id, frame_s=frame_s)
    table = pa.Table.from_pylist(rows, schema=schema.files_schema(classes=classes, bundle_id=bundle_id, config=config))
    results.write_part(table, out, results.FILES_DIR, storage.content_key(unit.path, unit.size, unit.mtime, "file"),
                       segment_parts=[c["part"] for c in chunks if c["part"]] if error is None else [])


def _write_run_record(out: Path, summary: ScoreSummary, *, config: Config, bundle: Any, bundle_id: str,
                      started: str) -> None:
    """``OUT/_run.json``: this run's record. A run that did no work (everything skipped) also
    carries the record of the last run that did as ``last_work``, so its timings are not lost."""
    record = {
        "job": "score",
        "ser_batch_version": __version__,
        "config": config_to_dict(config),
        "bundle_id": bundle_id,
        "bundle_path": str(Path(bundle.path).resolve()),
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files_total": summary.files_total,
        "files_scored": summary.files_scored,
        "files_skipped": summary.files_skipped,
        "errors": len(summary.errors),
        "failed_files": [{"path": p, "error": e} for p, e in summary.errors[:100]],
        "audio_s": round(summary.audio_s, 3),
        "wall_s": round(summary.wall_s, 3),
        "task_cpu_s": round(summary.task_cpu_s, 3),
        "peak_rss_mb": round(summary.peak_rss_mb, 1),
        "tasks_wall_s": round(summary.tasks_wall_s, 3),
        # audio_s / wall_s (the whole command, Ray start included) and audio_s / task_cpu_s
        "realtime_factor": round(summary.realtime_factor, 2),
        "realtime_factor_per_core": round(figures.per_core_factor(summary.audio_s, summary.task_cpu_s), 2),
        "ray_start_s": None if summary.ray_start_s is None else round(summary.ray_start_s, 3),
        "training_overlap": summary.training_overlap.record() if summary.training_overlap is not None else None,
        "failed_skipped": summary.failed_skipped,
        "retried": summary.retried,
        "files_gone": summary.files_gone - summary.files_pruned,
        "files_pruned": summary.files_pruned,
        "streams_normalized": summary.streams_normalized,
        "streams_not_normalized": summary.streams_not_normalized,
    }
    if not summary.did_work:
        last = last_work(Path(out))
        if last is not None:
            record["last_work"] = last
    storage.write_text_atomic(Path(out) / results.RUN_RECORD, json.dumps(record, indent=2) + "\n")


def last_work(out: Path) -> dict[str, Any] | None:
    """The record of the last run into ``out`` that scored or removed anything: ``_run.json``
    itself, or the ``last_work`` it carries; ``None`` if there is none (or it is unreadable)."""
    try:
        previous = json.loads((Path(out) / results.RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(previous, dict):
        return None
    if previous.get("files_scored") or previous.get("files_pruned"):
        return previous
    last = previous.get("last_work")
    return last if isinstance(last, dict) else None

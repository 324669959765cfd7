"""The parallel feature-extraction job: audio folder in, Parquet feature dataset out.

The driver lists the files and cuts them into shards (:func:`plan_shards`); each shard is one
run of :meth:`ser_batch.pipeline.extract_shard.ExtractRun.run_shard` on the executor (a Ray task,
or this process) that decodes its files, computes their feature vectors and writes one Parquet
part atomically. Only a few counters travel back to the driver (:mod:`ser_batch.cluster.engine`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from ser_batch import __version__, schema
from ser_batch.cluster import output
from ser_batch.cluster.engine import Executor, Progress, run_shards
from ser_batch.cluster.runtime import RuntimeInfo
from ser_batch.config import Config, config_to_dict, config_to_toml
from ser_batch.data import parts
from ser_batch.data.labels import (
    LABELS_CSV,
    Labels,
    LabelsFile,
    discover_audio,
    labels_for,
    parse_ravdess_name,
    read_labels_csv,
)
from ser_batch.data.paths import stored_path
from ser_batch.errors import ConfigError, DatasetError, FeatureError
from ser_batch.features.recipes import signal_features
from ser_batch.pipeline.extract_shard import ExtractResult, ExtractRun, Shard, frame_bands, label_columns
from ser_batch.reports import timing
from ser_batch.reports.failures import SHOWN, counted, format_failures

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractSummary:
    """What an extraction run did.

    ``failures`` holds the first few failed files as (path, reason), in path order (at
    most :data:`ser_batch.reports.failures.SHOWN`); ``errors`` counts them all. ``augmented``
    counts the rows of augmented copies (``extract.augment``, named in ``augment``), kept
    parts included.
    """

    out: Path
    files: int
    errors: int
    parts: int
    skipped_parts: int
    wall_s: float
    failures: tuple[tuple[str, str], ...] = ()
    augmented: int = 0
    augment: tuple[str, ...] = ()
    #: Seconds of ``wall_s`` (the whole command) spent starting or joining Ray; ``None``: no Ray.
    ray_start_s: float | None = None
    #: CPU seconds of the tasks that ran (their worker processes' CPU time while each ran), as
    #: ``score`` records it: files / task_cpu_s is the speed per core without Ray start or driver.
    task_cpu_s: float = 0.0
    #: Wall seconds from the first task submitted to the last one done (no Ray start, no driver).
    tasks_wall_s: float = 0.0
    #: Warnings for the user (how the labels CSV fits the files), printed before the summary.
    notes: tuple[str, ...] = ()

    @property
    def files_per_s(self) -> float:
        return self.files / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def nothing_to_do(self) -> bool:
        """True when every part was already there from a finished run (``--resume``)."""
        return self.parts > 0 and self.skipped_parts == self.parts

    def line(self) -> str:
        """One-line summary for the CLI."""
        counts = f"{counted(self.files, 'file')}, {counted(self.errors, 'error')}"
        if self.augment:
            counts += f", {counted(self.augmented, 'augmented row')} ({', '.join(self.augment)})"
        if self.nothing_to_do:
            return (f"nothing left to do: {counted(self.parts, 'part')} of a finished run are in "
                    f"{self.out} ({counts})")
        skipped = f", {self.skipped_parts} kept from before" if self.skipped_parts else ""
        return (
            f"{counts}, {counted(self.parts, 'part')}{skipped} "
            f"in {self.wall_s:.1f} s ({self.files_per_s:.1f} files/s{self._ray()}) -> {self.out}"
        )

    def _ray(self) -> str:
        """`` over the whole run incl. Ray start 4.1 s`` (``wall_s`` covers the whole command)."""
        return "" if self.ray_start_s is None else f" over the whole run {timing.ray_part(self.ray_start_s)}"

    def failure_report(self) -> str:
        """The failed files (the first few, with reasons) and where the rest are; ``""`` if none."""
        return format_failures(self.failures, total=self.files, failed=self.errors,
                               where=f"the `error` column of {self.out}")


def plan_shards(sources: list[str], *, config: Config, labels: Mapping[str, Labels] | None = None) -> list[Shard]:
    """Cut the sorted file list into shards of ``extract.shard_size`` files.

    A part's name hashes everything its rows depend on (files, their labels, the audio and
    feature settings, the augmentations), so ``--resume`` only keeps parts that would be
    written identically.
    """
    size = config.extract.shard_size
    settings = {"audio": config_to_dict(config)["audio"], "features": config_to_dict(config)["features"],
                "augment": list(config.extract.augment), "store_frames": frame_bands(config)}
    shards = []
    for index, start in enumerate(range(0, len(sources), size)):
        chunk = tuple(sources[start : start + size])
        found = tuple(labels_for(stored_path(source), labels=labels) for source in chunk)
        # labels.csv's corpus and extract.corpus are in the key; the folder-name default is not (a
        # resume is of the same input folder), so plan_shards(paths, config=...) names the same parts.
        key_labels = [label_columns(f, config.extract.corpus or None) for f in found]
        # The package version too: a resumed run after an upgrade recomputes old parts.
        key = parts.content_key(chunk, key_labels, settings, schema.SCHEMA_VERSION, __version__)
        shards.append(Shard(index, chunk, found, parts.part_name(index, key)))
    return shards


def run_extract(
    input_dir: Path,
    out: Path,
    *,
    config: Config,
    overwrite: bool = False,
    resume: bool = False,
    labels_csv: Path | None = None,
    executor: Executor | None = None,
    progress: bool = True,
    on_progress: Callable[[int], None] | None = None,
) -> ExtractSummary:
    """Extract features of every audio file below ``input_dir`` into Parquet parts in ``out``.

    Parameters
    ----------
    input_dir : folder searched recursively for ``config.audio.extensions``
    out : output folder (see :mod:`ser_batch.data.parts` for its layout)
    config : resolved configuration
    overwrite, resume : what to do with an output folder that already holds results
    labels_csv : ``path,label`` file; default ``config.extract.labels_csv``, else
        ``input_dir/labels.csv`` when present
    executor : where the shards run (default: Ray as ``config.ray`` says: ``RAY_ADDRESS`` or an
        embedded local runtime)
    progress : show a progress bar on stderr
    on_progress : called with the number of files of each finished shard

    Raises
    ------
    DatasetError
        If no audio file is found or the output folder would be overwritten silently.
    """
    started = time.perf_counter()
    executor = executor or Executor.of(config.ray)
    # Absolute before anything runs elsewhere: tasks do not share the driver's working directory.
    input_dir, out = output.absolute(input_dir), output.output_path(out)
    sources = discover_audio(input_dir, extensions=config.audio.extensions)
    if not sources:
        raise DatasetError(f"no audio files ({', '.join(config.audio.extensions)}) found below {input_dir}")
    found = _labels(input_dir, labels_csv, config=config, sources=sources)
    notes = _label_notes(found, sources)
    shards = plan_shards(sources, config=config, labels=found.labels if found is not None else None)
    names = {s.name for s in shards}
    with output.job_output(out, job="extract") as held:
        # Under the lock: a score started into the same new OUT a moment before is seen here.
        parts.refuse_score_folder(out)
        if resume and not overwrite and _finished(out, shards):
            # Nothing to compute: no runtime, and the manifest (with the timings of the run that
            # did the work) stays as it is.
            errors, failures, augmented = _kept_counts(out, names)
            return ExtractSummary(out, len(sources), errors, len(shards), len(shards),
                                  time.perf_counter() - started, tuple(failures), augmented, config.extract.augment,
                                  notes=notes)
        _preflight(config)
        if not (overwrite or resume) and _holds_results(out):
            parts.prepare_output(out, overwrite=False, resume=False, planned=[])  # refuses, writes nothing
        # Nothing is written before the runtime is up: a failed start leaves no trace.
        with output.start_workers(executor, held=held, inputs=[input_dir]) as workers:
            done = parts.prepare_output(out, overwrite=overwrite, resume=resume, planned=names)
            todo = [s for s in shards if s.name not in done]
            log.info("%d files in %d shards (%d already done)", len(sources), len(shards), len(shards) - len(todo))
            parts.write_text_atomic(out / parts.CONFIG, config_to_toml(config))
            job = ExtractRun(str(input_dir), str(out), config, corpus_name(input_dir, config=config))
            results: list[ExtractResult] = []

            def commit(result: ExtractResult) -> int:
                results.append(result)
                if on_progress:
                    on_progress(result.files)
                return result.files

            ran = run_shards(job, todo, workers=workers, commit=commit, max_retries=config.ray.max_retries,
                             progress=Progress(sum(len(s.sources) for s in todo), "extract", progress))
            # Tasks wrote their parts themselves: make sure this machine sees every one of them.
            output.check_visible(out, [r.part for r in results])
            errors, failures, augmented = _kept_counts(out, done)
            failures = sorted([*failures, *(f for r in results for f in r.failures)])[:SHOWN]
            summary = ExtractSummary(out, len(sources), errors + sum(r.errors for r in results), len(shards),
                                     len(done), time.perf_counter() - started, tuple(failures),
                                     augmented + sum(r.augmented for r in results), config.extract.augment,
                                     ray_start_s=workers.info.start_s, task_cpu_s=ran.task_cpu_s,
                                     tasks_wall_s=ran.wall_s, notes=notes)
            _write_manifest(summary, input_dir=input_dir, config=config,
                            part_names={*done, *(r.part for r in results)}, runtime=workers.info)
    return summary


def corpus_name(input_dir: Path, *, config: Config) -> str:
    """The ``corpus`` of rows that labels.csv gives none: ``extract.corpus`` (``--corpus``), else
    the input folder's name."""
    return config.extract.corpus or Path(input_dir).name


def _labels(input_dir: Path, labels_csv: Path | None, *, config: Config, sources: list[str]) -> LabelsFile | None:
    """The labels CSV of a run (``--labels``, else ``extract.labels_csv``, else ``INPUT/labels.csv``),
    read row by row against the run's files.

    Raises
    ------
    DatasetError
        If it labels none of them (:meth:`LabelsFile.check`), or is unreadable.
    """
    if labels_csv is None and config.extract.labels_csv:
        labels_csv = Path(config.extract.labels_csv)
    if labels_csv is None and (input_dir / LABELS_CSV).is_file():
        labels_csv = input_dir / LABELS_CSV
    if labels_csv is None:
        return None
    found = read_labels_csv(labels_csv, root=input_dir, files=[stored_path(s) for s in sources])
    found.check(input_dir)
    return found


def _label_notes(found: LabelsFile | None, sources: list[str]) -> tuple[str, ...]:
    """Warnings on how the labels CSV fits the files (:meth:`LabelsFile.notes`)."""
    if found is None:
        return ()
    names = {stored_path(s): n for s in sources if (n := parse_ravdess_name(s)) is not None}
    return tuple(found.notes(names))


def _write_manifest(summary: ExtractSummary, *, input_dir: Path, config: Config, part_names: set[str],
                    runtime: RuntimeInfo) -> None:
    """``OUT/_manifest.json``, written last: its presence means the run completed."""
    manifest = {
        "job": "extract",
        "ser_batch_version": __version__,
        "schema_version": schema.SCHEMA_VERSION,
        "input_dir": str(input_dir),
        "corpus": corpus_name(input_dir, config=config),
        "recipe": config.features.recipe,
        "files": summary.files,
        "errors": summary.errors,
        # What the run warned about (how the labels CSV fits the files).
        "warnings": list(summary.notes),
        "augment": list(config.extract.augment),
        "augmented_rows": summary.augmented,
        "parts": sorted(part_names),
        "wall_s": round(summary.wall_s, 3),  # the whole command, Ray start included
        "ray_start_s": None if summary.ray_start_s is None else round(summary.ray_start_s, 3),
        # CPU seconds inside the tasks, and their wall time from the first submitted to the last done
        "task_cpu_s": round(summary.task_cpu_s, 3),
        "tasks_wall_s": round(summary.tasks_wall_s, 3),
        "executor": runtime.executor,
        "ray": runtime.record(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    parts.write_text_atomic(summary.out / parts.MANIFEST, json.dumps(manifest, indent=2) + "\n")


def _holds_results(out: Path) -> bool:
    """Whether ``out`` already holds ser-batch results (read only, before the runtime starts)."""
    return out.is_dir() and bool(parts.existing_parts(out) or (out / parts.MANIFEST).exists()
                                 or (out / parts.CONFIG).exists())


def _preflight(config: Config) -> None:
    """Compute features of one second of noise, so that settings no file could satisfy
    (say, a contrast band without an STFT bin) fail once, here, not once per file."""
    rate = config.audio.sample_rate
    # One second, or two analysis frames if longer: recipes refuse signals under one frame.
    noise = np.random.default_rng(0).uniform(-0.1, 0.1, max(rate, 2 * config.features.n_fft)).astype(np.float32)
    try:
        signal_features(noise, rate, config=config.features)
    except FeatureError as exc:
        raise ConfigError(f"these feature settings cannot work on any file: {exc}") from None


def _finished(out: Path, shards: list[Shard]) -> bool:
    """Whether ``out`` holds a completed run (manifest written) of exactly these shards."""
    try:
        manifest = parts.read_manifest(out)
    except DatasetError:  # an unreadable manifest: redo the run's end
        return False
    names = sorted(s.name for s in shards)
    return bool(manifest) and manifest.get("parts") == names and all((out / n).is_file() for n in names)


def _kept_counts(out: Path, names: set[str]) -> tuple[int, list[tuple[str, str]], int]:
    """Error rows in parts kept from an earlier run (``--resume``): their number, the first
    :data:`~ser_batch.reports.failures.SHOWN` of them as (path, reason) in path order, and the number
    of augmented rows."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    count, failures, augmented = 0, [], 0
    for name in sorted(names):
        table = pq.read_table(out / name, columns=[schema.PATH, schema.ERROR, schema.AUGMENT])
        failed = table.filter(pc.is_valid(table[schema.ERROR]))
        count += failed.num_rows
        failures += zip(failed[schema.PATH].to_pylist()[:SHOWN], failed[schema.ERROR].to_pylist()[:SHOWN])
        augmented += table.num_rows - table[schema.AUGMENT].null_count
    return count, sorted(failures)[:SHOWN], augmented

"""The parallel feature-extraction job: audio folder in, Parquet feature dataset out.

The driver lists the files and cuts them into shards (:func:`plan_shards`); each shard is one
run of :meth:`ExtractRun.run_shard` on the executor (a Ray task, or this process) that decodes its
files, computes their feature vectors and writes one Parquet part atomically. Only a few
counters travel back to the driver (:mod:`ser_batch.cluster.engine`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
import pyarrow as pa

from ser_batch import __version__, schema
from ser_batch.audio.decode import AudioInfo
from ser_batch.cluster import output
from ser_batch.cluster.engine import Executor, Progress, ShardJob, crash_if_asked, run_shards
from ser_batch.cluster.runtime import RuntimeInfo
from ser_batch.config import Config, config_to_dict, config_to_toml
from ser_batch.data import parts
from ser_batch.data.labels import LABELS_CSV, Labels, discover_audio, labels_for, load_labels_csv
from ser_batch.data.paths import stored_path
from ser_batch.errors import ConfigError, DatasetError, FeatureError, SerBatchError
from ser_batch.features.names import feature_names
from ser_batch.features.recipes import FileFeatures, checked_features, decode_for_features, signal_features
from ser_batch.reports import timing
from ser_batch.reports.failures import SHOWN, counted, format_failures

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    """Files processed by one task and their labels; ``name``, its part file, hashes all of it.

    ``sources`` are the names to open below the input folder (a byte that is not UTF-8 kept as
    a surrogate); rows store each one's printable ``path`` (:func:`ser_batch.data.paths.stored_path`).
    """

    index: int
    sources: tuple[str, ...]
    labels: tuple[Labels, ...]
    name: str


@dataclass(frozen=True)
class ExtractResult:
    """What a shard did: its part, its files, their errors (the first few named) and augmented rows."""

    part: str
    files: int
    errors: int
    augmented: int
    #: The shard's first :data:`~ser_batch.reports.failures.SHOWN` failed files, (path, reason).
    failures: tuple[tuple[str, str], ...]


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


def row_labels(path: str, *, labels: Mapping[str, Labels] | None, corpus: str | None) -> dict[str, Any]:
    """The label columns of a file plus its ``corpus``: labels.csv's, else ``corpus`` (the run's)."""
    return _label_row(labels_for(path, labels=labels), corpus)


def _label_row(found: Labels, corpus: str | None) -> dict[str, Any]:
    return {**found.as_row(), schema.CORPUS: found.corpus or corpus}


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
        key_labels = [_label_row(f, config.extract.corpus or None) for f in found]
        # The package version too: a resumed run after an upgrade recomputes old parts.
        key = parts.content_key(chunk, key_labels, settings, schema.SCHEMA_VERSION, __version__)
        shards.append(Shard(index, chunk, found, parts.part_name(index, key)))
    return shards


@dataclass(frozen=True)
class ExtractRun(ShardJob[Shard, ExtractResult]):
    """The run context of ``extract``, sent whole to every worker: where the files are read and the
    parts written, the settings, and the ``corpus`` of rows that labels.csv gives none."""

    root: str
    out: str
    config: Config
    corpus: str | None = None
    doing: ClassVar[str] = "extracting"
    task: ClassVar[str] = "extract_shard"

    def run_shard(self, shard: Shard) -> ExtractResult:
        """Process one shard and write its part (no Ray in here).

        Each file gives one row of its own audio and, with ``extract.augment``, one row per
        augmentation computed from the same decoded signal (seeded from the file's path and the
        augmentation's name, so a retried task writes the same numbers). Errors of single files
        become one row with ``error`` set and no augmented rows, and the task goes on; that
        includes unexpected exceptions (logged with their traceback, reported as "internal
        error: ..."), so one odd file in an archive cannot sink the whole job. An augmented copy
        whose features fail (a ``tempo`` copy shorter than one frame, say) is left out and logged.
        """
        rows = _PartRows(self.config)
        for source, found in zip(shard.sources, shard.labels):
            path = stored_path(source)
            crash_if_asked(path)
            feats: FileFeatures | None = None
            info: AudioInfo | None = None
            y: np.ndarray | None = None
            error = None
            try:
                y, info = decode_for_features(Path(self.root) / source, config=self.config)
                feats = checked_features(y, config=self.config)
            except SerBatchError as exc:
                error, feats = str(exc) or type(exc).__name__, None
            except Exception as exc:  # noqa: BLE001 - one odd file must not sink an overnight job
                log.exception("unexpected error on %s", path)
                error, feats = f"internal error: {type(exc).__name__}: {exc}", None
            label_row = _label_row(found, self.corpus)
            rows.add(path, label_row, info, None, feats, error)
            if feats is None or y is None:
                continue
            for name in self.config.extract.augment:
                copy = _augmented_features(path, y, name, config=self.config)
                if copy is not None:
                    rows.add(path, label_row, info, name, copy, None)
        return rows.write(Path(self.out) / shard.name)

    def split(self, shard: Shard) -> list[Shard]:
        return [Shard(shard.index, (source,), (found,),
                      parts.part_name(shard.index, parts.content_key(shard.name, source)))
                for source, found in zip(shard.sources, shard.labels)]

    def lost(self, shard: Shard, error: str) -> ExtractResult:
        """Error rows, written by the driver, for the files of a shard whose worker died on every try."""
        rows = _PartRows(self.config)
        for source, found in zip(shard.sources, shard.labels):
            rows.add(stored_path(source), _label_row(found, self.corpus), None, None, None, error)
        return rows.write(Path(self.out) / shard.name)


class _PartRows:
    """The column lists of one part, and the part written from them."""

    def __init__(self, config: Config) -> None:
        self.names = feature_names(config.features)
        self.bands = frame_bands(config)
        self.schema = schema.features_schema(recipe=config.features.recipe, names=self.names,
                                             config=config_to_dict(config), frame_bands=self.bands)
        self.columns: dict[str, list[Any]] = {f.name: [] for f in self.schema}
        self.files = self.augmented = 0
        self.failures: list[tuple[str, str]] = []

    def add(self, path: str, label_row: Mapping[str, Any], info: AudioInfo | None, augment: str | None,
            feats: FileFeatures | None, error: str | None) -> None:
        """One row: a file's own audio when ``augment`` is None, else its augmented copy."""
        rows = self.columns
        if augment is None:
            self.files += 1
        else:
            self.augmented += 1
        if error is not None:
            self.failures.append((path, error))
        for key, value in label_row.items():
            rows[key].append(value)
        rows[schema.PATH].append(path)
        rows[schema.DURATION_S].append(info.duration_s if info else None)
        rows[schema.SAMPLE_RATE_IN].append(info.sample_rate if info else None)
        rows[schema.CHANNELS_IN].append(info.channels if info else None)
        rows[schema.AUGMENT].append(augment)
        rows[schema.BAND].append(schema.band_of(info.sample_rate if info else None, augment))
        rows[schema.FEATURES].append(feats.vector if feats else None)
        rows[schema.SEGMENTS].append(feats.segments if feats else None)
        rows[schema.SEGMENT_STARTS_S].append(feats.segment_starts_s if feats else None)
        rows[schema.SEGMENT_SPEECH_RATIO].append(feats.segment_speech_ratio if feats else None)
        rows[schema.ERROR].append(error)
        if schema.FRAMES in rows:
            rows[schema.FRAMES].append(feats.frames if feats else None)

    def write(self, path: Path) -> ExtractResult:
        """Write the part atomically at ``path``; what it holds."""
        arrays = []
        for field in self.schema:
            values = self.columns[field.name]
            if field.name == schema.FEATURES:
                arrays.append(schema.vectors_array(values, len(self.names)))
            elif field.name == schema.SEGMENTS:
                arrays.append(schema.matrices_array(values, len(self.names)))
            elif field.name == schema.FRAMES:
                arrays.append(schema.matrices_array(values, self.bands))
            else:
                arrays.append(pa.array(values, field.type))
        parts.write_table_atomic(pa.Table.from_arrays(arrays, schema=self.schema), path)
        # Only the first few failures travel back: the summary names no more than that.
        return ExtractResult(path.name, self.files, len(self.failures), self.augmented, tuple(self.failures[:SHOWN]))


def frame_bands(config: Config) -> int:
    """Bands of the ``frames`` column this run writes: ``n_mels // 2`` with ``extract.store_frames``
    and a recipe with windows (``rich``), else 0 (no column)."""
    from ser_batch.features.melframes import n_bands

    if not config.extract.store_frames or config.features.recipe != "rich" or config.features.window_s <= 0:
        return 0
    return n_bands(config.features)


def _augmented_features(path: str, y: np.ndarray, name: str, *, config: Config) -> FileFeatures | None:
    """Features of the augmentation ``name`` of the decoded file ``path``; None (logged) if they fail."""
    from ser_batch.audio.telephony import augment_signal, augmentation_rng

    try:
        copy = augment_signal(y, config.audio.sample_rate, name, rng=augmentation_rng(path, name))
        return checked_features(copy, config=config)
    except SerBatchError as exc:
        log.warning("%s: augmented copy %s left out: %s", path, name, exc)
    except Exception:  # noqa: BLE001 - as for the file itself: log, go on
        log.exception("%s: augmented copy %s left out after an unexpected error", path, name)
    return None


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
    shards = plan_shards(sources, config=config, labels=_labels(input_dir, labels_csv, config=config))
    names = {s.name for s in shards}
    with output.job_output(out, job="extract") as held:
        if resume and not overwrite and _finished(out, shards):
            # Nothing to compute: no runtime, and the manifest (with the timings of the run that
            # did the work) stays as it is.
            errors, failures, augmented = _kept_counts(out, names)
            return ExtractSummary(out, len(sources), errors, len(shards), len(shards),
                                  time.perf_counter() - started, tuple(failures), augmented, config.extract.augment)
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
                                     tasks_wall_s=ran.wall_s)
            _write_manifest(summary, input_dir=input_dir, config=config,
                            part_names={*done, *(r.part for r in results)}, runtime=workers.info)
    return summary


def corpus_name(input_dir: Path, *, config: Config) -> str:
    """The ``corpus`` of rows that labels.csv gives none: ``extract.corpus`` (``--corpus``), else
    the input folder's name."""
    return config.extract.corpus or Path(input_dir).name


def _labels(input_dir: Path, labels_csv: Path | None, *, config: Config) -> Mapping[str, Labels] | None:
    """The labels CSV of a run: ``--labels``, else ``extract.labels_csv``, else ``INPUT/labels.csv``."""
    if labels_csv is None and config.extract.labels_csv:
        labels_csv = Path(config.extract.labels_csv)
    if labels_csv is None and (input_dir / LABELS_CSV).is_file():
        labels_csv = input_dir / LABELS_CSV
    return load_labels_csv(labels_csv, root=input_dir) if labels_csv else None


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

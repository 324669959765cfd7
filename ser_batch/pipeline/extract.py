"""The parallel feature-extraction job: audio folder in, Parquet feature dataset out.

The driver lists the files and cuts them into shards; each shard is one Ray task that
decodes its files, computes their feature vectors and writes one Parquet part
atomically. Only a few counters travel back to the driver.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pyarrow as pa

from ser_batch import __version__, schema
from ser_batch.audio.decode import AudioInfo
from ser_batch.cluster.runtime import crash_if_asked
from ser_batch.config import Config, config_from_dict, config_to_dict, config_to_toml
from ser_batch.data import parts as storage
from ser_batch.data.labels import LABELS_CSV, Labels, discover_audio, labels_for, load_labels_csv
from ser_batch.data.paths import stored_path
from ser_batch.errors import ConfigError, DatasetError, FeatureError, SerBatchError
from ser_batch.features.names import feature_names
from ser_batch.features.recipes import FileFeatures, checked_features, decode_for_features, signal_features
from ser_batch.reports import figures
from ser_batch.reports.failures import SHOWN, counted, format_failures
from ser_batch.reports.progress import progress_bar

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Shard:
    """Files processed by one task; ``name`` is its part file, derived from its content."""

    index: int
    paths: tuple[str, ...]
    name: str


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
        return "" if self.ray_start_s is None else f" over the whole run {figures.ray_part(self.ray_start_s)}"

    def failure_report(self) -> str:
        """The failed files (the first few, with reasons) and where the rest are; ``""`` if none."""
        return format_failures(self.failures, total=self.files, failed=self.errors,
                               where=f"the `error` column of {self.out}")


def row_labels(rel: str, *, labels: Mapping[str, Labels] | None, corpus: str | None) -> dict[str, Any]:
    """The label columns of a file plus its ``corpus``: labels.csv's, else ``corpus`` (the run's)."""
    found = labels_for(rel, labels=labels)
    return {**found.as_row(), schema.CORPUS: found.corpus or corpus}


def plan_shards(
    paths: list[str], *, config: Config, labels: Mapping[str, Labels] | None = None
) -> list[Shard]:
    """Cut the sorted file list into shards.

    A part's name hashes everything its rows depend on (files, their labels, the audio and
    feature settings, the augmentations), so ``--resume`` only keeps parts that would be
    written identically.
    """
    size = config.extract.shard_size
    settings = config_to_dict(config)
    settings = {k: settings[k] for k in ("audio", "features")}
    settings["augment"] = list(config.extract.augment)
    settings["store_frames"] = frame_bands(config)
    shards = []
    for index, start in enumerate(range(0, len(paths), size)):
        chunk = tuple(paths[start : start + size])
        # labels.csv's corpus and extract.corpus are in the key; the folder-name default is not (a
        # resume is of the same input folder), so plan_shards(paths, config=...) names the same parts.
        chunk_labels = [row_labels(stored_path(p), labels=labels, corpus=config.extract.corpus or None) for p in chunk]
        # The package version too: a resumed run after an upgrade recomputes old parts.
        key = storage.content_key(chunk, chunk_labels, settings, schema.SCHEMA_VERSION, __version__)
        shards.append(Shard(index, chunk, storage.part_name(index, key)))
    return shards


def extract_shard(
    shard: Shard, *, root: str, out: str, config: dict[str, Any], labels: Mapping[str, Labels] | None,
    lost: str | None = None, corpus: str | None = None,
) -> dict[str, Any]:
    """Process one shard and write its part; runs inside a Ray task (no Ray in here).

    Each file gives one row of its own audio and, with ``extract.augment``, one row per
    augmentation computed from the same decoded signal (seeded from the file's path and the
    augmentation's name, so a retried task writes the same numbers). Errors of single files
    become one row with ``error`` set and no augmented rows, and the task goes on; that
    includes unexpected exceptions (logged with their traceback, reported as "internal
    error: ..."), so one odd file in an archive cannot sink the whole job. An augmented copy
    whose features fail (a ``tempo`` copy shorter than one frame, say) is left out and logged.
    With ``lost`` (the driver, for files whose worker died on every try) no file is read:
    each becomes an error row with that reason.

    Returns
    -------
    dict
        ``{"part": name, "files": n, "errors": m, "augmented": k, "failures": [(path, reason), ...],
        "cpu_s": s}`` with the shard's first :data:`~ser_batch.reports.failures.SHOWN` failed files and
        the CPU seconds of the worker process during the task.
    """
    cpu0 = time.process_time()
    cfg = config_from_dict(config)
    names = feature_names(cfg.features)
    bands = frame_bands(cfg)
    rows: dict[str, list[Any]] = {f.name: [] for f in schema.features_schema(recipe=cfg.features.recipe, names=names,
                                                                             config={}, frame_bands=bands)}
    failures: list[tuple[str, str]] = []
    augmented = 0
    for on_disk in shard.paths:
        # ``on_disk`` opens the file; ``rel``, its printable form (bytes not UTF-8 escaped), is what rows say.
        rel = stored_path(on_disk)
        if lost is None:
            crash_if_asked(rel)
        feats: FileFeatures | None = None
        info: AudioInfo | None = None
        y: np.ndarray | None = None
        error = lost
        try:
            if lost is None:
                y, info = decode_for_features(Path(root) / on_disk, config=cfg)
                feats = checked_features(y, config=cfg)
        except SerBatchError as exc:
            error, feats = str(exc) or type(exc).__name__, None
        except Exception as exc:  # noqa: BLE001 - one odd file must not sink an overnight job
            log.exception("unexpected error on %s", rel)
            error, feats = f"internal error: {type(exc).__name__}: {exc}", None
        if error is not None:
            failures.append((rel, error))
        label_row = row_labels(rel, labels=labels, corpus=corpus)
        _append_row(rows, rel, label_row, info, None, feats, error)
        if feats is None or y is None:
            continue
        for name in cfg.extract.augment:
            copy = _augmented_features(rel, y, name, config=cfg)
            if copy is not None:
                _append_row(rows, rel, label_row, info, name, copy, None)
                augmented += 1
    table_schema = schema.features_schema(recipe=cfg.features.recipe, names=names, config=config, frame_bands=bands)
    arrays = []
    for field in table_schema:
        if field.name == schema.FEATURES:
            arrays.append(schema.vectors_array(rows[field.name], len(names)))
        elif field.name == schema.SEGMENTS:
            arrays.append(schema.matrices_array(rows[field.name], len(names)))
        elif field.name == schema.FRAMES:
            arrays.append(schema.matrices_array(rows[field.name], bands))
        else:
            arrays.append(pa.array(rows[field.name], field.type))
    table = pa.Table.from_arrays(arrays, schema=table_schema)
    storage.write_table_atomic(table, Path(out) / shard.name)
    # Only the first few failures travel back: the summary names no more than that.
    return {"part": shard.name, "files": len(shard.paths), "errors": len(failures), "augmented": augmented,
            "failures": failures[:SHOWN], "cpu_s": time.process_time() - cpu0}


def frame_bands(config: Config) -> int:
    """Bands of the ``frames`` column this run writes: ``n_mels // 2`` with ``extract.store_frames``
    and a recipe with windows (``rich``), else 0 (no column)."""
    from ser_batch.features.melframes import n_bands

    if not config.extract.store_frames or config.features.recipe != "rich" or config.features.window_s <= 0:
        return 0
    return n_bands(config.features)


def _augmented_features(rel: str, y: np.ndarray, name: str, *, config: Config) -> FileFeatures | None:
    """Features of the augmentation ``name`` of the decoded file ``rel``; None (logged) if they fail."""
    from ser_batch.audio.telephony import augment_signal, augmentation_rng

    try:
        copy = augment_signal(y, config.audio.sample_rate, name, rng=augmentation_rng(rel, name))
        return checked_features(copy, config=config)
    except SerBatchError as exc:
        log.warning("%s: augmented copy %s left out: %s", rel, name, exc)
    except Exception:  # noqa: BLE001 - as for the file itself: log, go on
        log.exception("%s: augmented copy %s left out after an unexpected error", rel, name)
    return None


def _append_row(rows: dict[str, list[Any]], rel: str, label_row: Mapping[str, Any], info: AudioInfo | None,
                augment: str | None, feats: FileFeatures | None, error: str | None) -> None:
    """Append one row (a file's own audio when ``augment`` is None) to the column lists."""
    from ser_batch.schema import band_of

    for key, value in label_row.items():
        rows[key].append(value)
    rows[schema.PATH].append(rel)
    rows[schema.DURATION_S].append(info.duration_s if info else None)
    rows[schema.SAMPLE_RATE_IN].append(info.sample_rate if info else None)
    rows[schema.CHANNELS_IN].append(info.channels if info else None)
    rows[schema.AUGMENT].append(augment)
    rows[schema.BAND].append(band_of(info.sample_rate if info else None, augment))
    rows[schema.FEATURES].append(feats.vector if feats else None)
    rows[schema.SEGMENTS].append(feats.segments if feats else None)
    rows[schema.SEGMENT_STARTS_S].append(feats.segment_starts_s if feats else None)
    rows[schema.SEGMENT_SPEECH_RATIO].append(feats.segment_speech_ratio if feats else None)
    rows[schema.ERROR].append(error)
    if schema.FRAMES in rows:
        rows[schema.FRAMES].append(feats.frames if feats else None)
        rows[schema.FRAME_SPEECH].append(feats.frame_speech if feats else None)


def run_extract(
    input_dir: Path,
    out: Path,
    *,
    config: Config,
    overwrite: bool = False,
    resume: bool = False,
    labels_csv: Path | None = None,
    address: str | None = None,
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
    address : Ray cluster to join (default: ``RAY_ADDRESS`` or an embedded local Ray)
    progress : show a progress bar on stderr
    on_progress : called with the number of files of each finished shard

    Raises
    ------
    DatasetError
        If no audio file is found or the output folder would be overwritten silently.
    """
    from ser_batch.cluster import output as launch

    started = time.perf_counter()
    # Absolute before anything runs elsewhere: tasks do not share the driver's working directory.
    input_dir, out = launch.absolute(input_dir), launch.output_path(out)
    paths = discover_audio(input_dir, extensions=config.audio.extensions)
    if not paths:
        raise DatasetError(
            f"no audio files ({', '.join(config.audio.extensions)}) found below {input_dir}"
        )
    labels = _labels(input_dir, labels_csv, config=config)
    corpus = corpus_name(input_dir, config=config)
    shards = plan_shards(paths, config=config, labels=labels)
    if resume and not overwrite and _finished(out, shards):
        # Nothing to compute: no Ray, and the manifest (with the timings of the run that
        # did the work) stays as it is.
        errors, failures, augmented = _kept_counts(out, {s.name for s in shards})
        return ExtractSummary(out, len(paths), errors, len(shards), len(shards),
                              time.perf_counter() - started, tuple(failures), augmented, config.extract.augment)
    _preflight(config)
    if not (overwrite or resume) and _holds_results(out):
        storage.prepare_output(out, overwrite=False, resume=False, planned=[])  # refuses, writes nothing
    kwargs = {"root": str(input_dir), "out": str(out), "config": config_to_dict(config), "labels": labels,
              "corpus": corpus}
    # Nothing is written before the runtime is up and OUT is ours: a failed start leaves no trace.
    ray_starting = time.perf_counter()
    with launch.job_output(out, job="extract", inputs=[input_dir], address=address,
                           num_cpus=config.ray.local_cpus) as ray_info:
        ray_start_s = time.perf_counter() - ray_starting
        done = storage.prepare_output(out, overwrite=overwrite, resume=resume, planned=[s.name for s in shards])
        todo = [s for s in shards if s.name not in done]
        log.info("%d files in %d shards (%d already done)", len(paths), len(shards), len(shards) - len(todo))
        storage.write_text_atomic(out / storage.CONFIG, config_to_toml(config))

        bar = progress_bar(total=sum(len(s.paths) for s in todo), desc="extract", enabled=progress)

        def advance(result: dict[str, Any]) -> None:
            bar.update(result["files"])
            if on_progress:
                on_progress(result["files"])

        tasks_started = time.perf_counter()
        results = _run_shards(todo, kwargs=kwargs, max_retries=config.ray.max_retries, on_result=advance)
        tasks_wall_s = time.perf_counter() - tasks_started
        bar.close()
        # Tasks wrote their parts themselves: make sure this machine sees every one of them.
        launch.check_visible(out, [r["part"] for r in results])
        errors, failures, augmented = _kept_counts(out, done)
        errors += sum(r["errors"] for r in results)
        augmented += sum(r.get("augmented", 0) for r in results)
        failures = sorted([*failures, *(tuple(f) for r in results for f in r["failures"])])[:SHOWN]
        summary = ExtractSummary(out, len(paths), errors, len(shards), len(done), time.perf_counter() - started,
                                 tuple(failures), augmented, config.extract.augment, ray_start_s=ray_start_s,
                                 task_cpu_s=sum(r.get("cpu_s", 0.0) for r in results), tasks_wall_s=tasks_wall_s)
        _write_manifest(summary, input_dir=input_dir, config=config, parts={*done, *(r["part"] for r in results)},
                        ray_info=ray_info)
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


def _write_manifest(summary: ExtractSummary, *, input_dir: Path, config: Config, parts: set[str],
                    ray_info: dict[str, Any]) -> None:
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
        "parts": sorted(parts),
        "wall_s": round(summary.wall_s, 3),  # the whole command, Ray start included
        "ray_start_s": None if summary.ray_start_s is None else round(summary.ray_start_s, 3),
        # CPU seconds inside the tasks, and their wall time from the first submitted to the last done
        "task_cpu_s": round(summary.task_cpu_s, 3),
        "tasks_wall_s": round(summary.tasks_wall_s, 3),
        "ray": {"address": ray_info["address"], "cpus": ray_info["cpus"], "nodes": ray_info["nodes"]},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    storage.write_text_atomic(summary.out / storage.MANIFEST, json.dumps(manifest, indent=2) + "\n")


def _run_shards(todo: list[Shard], *, kwargs: dict[str, Any], max_retries: int,
                on_result: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    """Run the shards as Ray tasks (:func:`ser_batch.cluster.runtime.map_shards`): a file whose
    worker died on every try, even alone, becomes an error row written here, by the driver, in a
    part of its own."""
    from ser_batch.cluster import runtime

    done: list[dict[str, Any]] = []

    def collect(result: dict[str, Any]) -> None:
        done.append(result)
        on_result(result)

    def split(shard: Shard) -> list[Shard]:
        return [Shard(shard.index, (path,), storage.part_name(shard.index, storage.content_key(shard.name, path)))
                for path in shard.paths]

    lost = runtime.map_shards(extract_shard, todo, split=split, kwargs=kwargs, max_retries=max_retries,
                              on_result=collect)
    reason = runtime.worker_died("extracting", max_retries + 1)
    for shard in lost:
        collect(extract_shard(shard, **kwargs, lost=reason))
    return done


def _holds_results(out: Path) -> bool:
    """Whether ``out`` already holds ser-batch results (read only, before the runtime starts)."""
    return out.is_dir() and bool(storage.existing_parts(out) or (out / storage.MANIFEST).exists()
                                 or (out / storage.CONFIG).exists())


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
        manifest = storage.read_manifest(out)
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

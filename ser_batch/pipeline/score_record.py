"""The record of a scoring run: what it did (:class:`ScoreSummary`: the CLI's lines) and ``OUT/_run.json``.

The keys of ``_run.json`` are a public interface (the contract checks and users' queries read them):
they change only with a migration and a note.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ser_batch import __version__
from ser_batch.cluster.runtime import RuntimeInfo
from ser_batch.config import Config, config_to_dict
from ser_batch.data import parts, score_folder
from ser_batch.reports import timing
from ser_batch.reports.failures import counted, format_failures


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
    #: With ``score.normalize = "archive"``: the speech windows the statistics were taken over, and
    #: whether they were an earlier run's (kept, so that every row of OUT is normalised alike).
    archive_windows: int = 0
    archive_reused: bool = False
    #: The folder OUT's stored paths are relative to (``_score.json``'s ``input_root``), and the one it
    #: replaced when that no longer existed (an archive moved).
    input_root: str | None = None
    root_moved_from: str | None = None
    #: What the run did about damaged parts of OUT, a line each (:func:`ser_batch.data.score_parts.repair_plan`).
    repaired: list[str] = field(default_factory=list)

    @property
    def did_work(self) -> bool:
        """Whether the run scored or removed anything (a run that did not keeps the last record)."""
        return bool(self.files_scored or self.files_pruned)

    @property
    def realtime_factor(self) -> float:
        """Audio seconds / seconds of the whole command (:mod:`ser_batch.reports.timing`)."""
        return timing.realtime_factor(self.audio_s, self.wall_s)

    def line(self) -> str:
        """One-line summary for the CLI."""
        return (f"{counted(self.files_scored, 'file')} scored ({self.files_skipped} already done), "
                f"{counted(len(self.errors), 'error')}, {self.audio_s / 3600:.2f} h of audio "
                f"{timing.timing(self.wall_s, self.ray_start_s, self.audio_s)} -> {self.out}")

    def notes(self) -> list[str]:
        """Lines after :meth:`line` on what the run left for later: failed files skipped, rows
        without a file."""
        notes = list(self.repaired)
        overlap = self.training_overlap.line() if self.training_overlap is not None else None
        if overlap:
            notes.append(overlap)
        if self.failed_skipped:
            one = self.failed_skipped == 1
            notes.append(f"{counted(self.failed_skipped, 'file')} failed before and {'was' if one else 'were'} "
                         f"skipped; --retry-errors scores {'it' if one else 'them'} again")
        if self.normalize == "archive" and self.archive_windows:
            notes.append(f"--normalize archive: statistics of {counted(self.archive_windows, 'speech window')}"
                         + (" recorded by the first run into this folder (--rescore takes them afresh)"
                            if self.archive_reused else " of this input"))
        if self.normalize == "file" and (self.streams_normalized or self.streams_not_normalized):
            total = self.streams_normalized + self.streams_not_normalized
            note = f"--normalize file: {self.streams_normalized} of {counted(total, 'stream')} normalised"
            if self.streams_not_normalized:
                note += (f"; {self.streams_not_normalized} with less than {self.min_normalize_s:g} s of speech "
                         "(score.min_normalize_s) scored by the plain models")
            notes.append(note)
        if self.root_moved_from:
            notes.append(f"the input root {self.out} recorded, {self.root_moved_from}, no longer exists: its paths are "
                         f"now read below {self.input_root} (the archive moved)")
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
                               where=f"the `error` column of {self.out / score_folder.FILES_DIR}")


def write_run_record(out: Path, summary: ScoreSummary, *, config: Config, bundle_path: str, bundle_id: str,
                     started: str, runtime: RuntimeInfo | None) -> None:
    """``OUT/_run.json``: this run's record. A run that did no work (everything skipped) also
    carries the record of the last run that did as ``last_work``, so its timings are not lost."""
    record = {
        "job": "score",
        "ser_batch_version": __version__,
        "config": config_to_dict(config),
        "bundle_id": bundle_id,
        "bundle_path": bundle_path,
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
        "realtime_factor_per_core": round(timing.per_core_factor(summary.audio_s, summary.task_cpu_s), 2),
        "ray_start_s": None if summary.ray_start_s is None else round(summary.ray_start_s, 3),
        "training_overlap": summary.training_overlap.record() if summary.training_overlap is not None else None,
        "failed_skipped": summary.failed_skipped,
        "retried": summary.retried,
        "files_gone": summary.files_gone - summary.files_pruned,
        "files_pruned": summary.files_pruned,
        # Damaged parts of OUT this run deleted or whose rows it dropped, and why (their files scored again).
        "repaired": list(summary.repaired),
        "streams_normalized": summary.streams_normalized,
        "streams_not_normalized": summary.streams_not_normalized,
        # --normalize archive: the speech windows its statistics came from, and whether an earlier run took them.
        "archive_statistics": {"windows": summary.archive_windows, "reused": summary.archive_reused}
        if summary.normalize == "archive" else None,
        # Where the shards ran: "ray" or "in-process"; none when there was nothing to score.
        "executor": runtime.executor if runtime is not None else None,
    }
    if not summary.did_work:
        last = last_work(Path(out))
        if last is not None:
            record["last_work"] = last
    parts.write_text_atomic(Path(out) / score_folder.RUN_RECORD, json.dumps(record, indent=2) + "\n")


def last_work(out: Path) -> dict[str, Any] | None:
    """The record of the last run into ``out`` that scored or removed anything: ``_run.json``
    itself, or the ``last_work`` it carries; ``None`` if there is none (or it is unreadable)."""
    try:
        previous = json.loads((Path(out) / score_folder.RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(previous, dict):
        return None
    if previous.get("files_scored") or previous.get("files_pruned"):
        return previous
    last = previous.get("last_work")
    return last if isinstance(last, dict) else None

"""Speed of feature extraction: the ``fast`` and ``rich`` recipes and the Ray job against ``classic``.

Run from the project root::

    .venv/bin/python benchmarks/extract.py [--files N] [--serial-files K] [--recipes fast,rich]
        [--job-runs R] [--skip-job]

Every number is a ratio against a baseline measured in the same process, so that the
load of a shared machine affects both sides alike:

1. **Per core.** ``classic``, ``fast`` and ``rich`` feature times per file on the same ``N``
   already-decoded RAVDESS clips (decoded once, 16 kHz), with BLAS/OpenMP limited to one
   thread. The recipes are warmed up first (filterbank caches, numba JIT), then timed
   clip by clip, classic then fast then rich, over several passes; each clip's time is its
   median over the passes. Before each timed fast call, untimed fast calls on other clips put
   the caches in the state of a running job (one untimed rich call on another clip before
   each timed rich one). ``rich`` is timed as a job computes it with the default settings:
   clip vector, 1.5 s windows and the log-mel frames stored for the cnn. Wall and thread-CPU
   times are printed; the verdict uses CPU time, which other processes on a shared machine
   do not inflate. Target: ``classic / fast >= 100``.
2. **Whole job.** ``run_extract`` over every file of the corpus on a local Ray runtime with
   2 CPUs, once per recipe of ``--recipes`` (default ``fast`` and ``rich``; each with the
   defaults ``ser-batch extract --recipe NAME`` uses), ``R`` runs each, half before and half
   after the baseline (wall time including Ray start-up and shutdown). The baseline is the
   ``classic`` recipe (decode included) run serially in this process, on one thread, over
   the same files (or ``K`` of them, extrapolated). Per recipe: files per second per core end
   to end (files / wall / 2 CPUs) and inside the tasks (files / the tasks' CPU seconds, from
   the job's ``_manifest.json``), against serial classic files per second on its one core,
   and where the job's wall time went (Ray start, tasks, the rest of the driver, shutdown).
   Target (``fast``): ``serial / job >= 10``.

It is a script, not a test: it prints a report and exits 0 whatever the ratios are
(a FAIL line says when a target is missed); it exits 2 when the data is missing and 1
when the extraction job fails.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import RAVDESS, ROOT, verdict  # noqa: E402

SAMPLE_RATE = 16000
TARGET_PER_CORE = 100.0
TARGET_JOB = 10.0
JOB_CPUS = 2
JOB_RECIPES = ("fast", "rich")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", default=str(RAVDESS),
                        help="folder of RAVDESS 16-kHz WAVs; relative paths are resolved against the repo root")
    parser.add_argument("--files", type=int, default=40, help="clips for the per-core comparison")
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved passes over the clips in the per-core comparison")
    parser.add_argument("--fast-calls", type=int, default=5,
                        help="untimed fast-recipe calls on other clips before each timed one")
    parser.add_argument("--serial-files", type=int, default=None,
                        help="files of the serial classic baseline (default: all; fewer are extrapolated)")
    parser.add_argument("--recipes", default=",".join(JOB_RECIPES),
                        help="recipes of the whole-job part, comma-separated (fast, rich)")
    parser.add_argument("--job-runs", type=int, default=2,
                        help="whole-job runs per recipe, half before and half after the serial baseline")
    parser.add_argument("--skip-job", action="store_true", help="only run the per-core comparison")
    args = parser.parse_args(argv)
    if args.files < 1 or args.repeats < 1 or args.fast_calls < 0 or args.job_runs < 1:
        parser.error("--files, --repeats and --job-runs must be >= 1, --fast-calls >= 0")
    args.recipes = tuple(r.strip() for r in args.recipes.split(",") if r.strip())
    if not args.recipes or not set(args.recipes) <= set(JOB_RECIPES):
        parser.error(f"--recipes: one or more of {', '.join(JOB_RECIPES)}")
    if args.serial_files is not None and args.serial_files < 1:
        parser.error("--serial-files must be >= 1")
    return args


def spread(items: list[str], count: int) -> list[str]:
    """``count`` items evenly spread over ``items`` (all actors and emotions, not just the first)."""
    if count >= len(items):
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def timed(function: Callable[[], object]) -> tuple[float, float]:
    """Wall and thread-CPU seconds of one call of ``function``."""
    wall, cpu = time.perf_counter(), time.thread_time()
    function()
    return time.perf_counter() - wall, time.thread_time() - cpu


def against(ratio: float, target: float) -> str:
    return f"{verdict(ratio >= target)}: {ratio:.1f}x {'>=' if ratio >= target else '<'} {target:.0f}x"


def per_core(data: Path, paths: list[str], *, files: int, repeats: int, fast_calls: int) -> None:
    from threadpoolctl import threadpool_limits

    from ser_batch.audio.decode import load_audio
    from ser_batch.config import FeatureConfig
    from ser_batch.features.recipes import signal_features

    chosen = spread(paths, files)
    print(f"== per core: classic vs fast vs rich on {len(chosen)} clips, 1 BLAS/OpenMP thread, "
          f"{repeats} passes, clip by clip (classic, then fast, then rich)")
    decode, signals = [], []
    for rel in chosen:  # decoded once, up front
        wall, cpu = time.perf_counter(), time.thread_time()
        y, _ = load_audio(data / rel, sample_rate=SAMPLE_RATE)
        decode.append((time.perf_counter() - wall, time.thread_time() - cpu))
        signals.append(y)
    classic = FeatureConfig(recipe="classic")
    fast = FeatureConfig(recipe="fast")
    # What a job computes per file with the defaults: clip vector, windows and the cnn's mel frames.
    rich = FeatureConfig(recipe="rich")
    seconds = sum(y.size for y in signals) / SAMPLE_RATE / len(signals)
    # [pass, clip, (wall, cpu)]
    classic_s = np.empty((repeats, len(signals), 2))
    fast_s = np.empty((repeats, len(signals), 2))
    rich_s = np.empty((repeats, len(signals), 2))
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # First calls build filterbank caches and compile librosa's numba kernels.
        for y in signals[:2]:
            signal_features(y, SAMPLE_RATE, config=classic)
            for _ in range(3):
                signal_features(y, SAMPLE_RATE, config=fast)
                signal_features(y, SAMPLE_RATE, config=rich)
        for r in range(repeats):
            for i, y in enumerate(signals):
                classic_s[r, i] = timed(lambda: signal_features(y, SAMPLE_RATE, config=classic))
                # As in a job, the timed call follows fast calls on *other* clips: neither
                # polluted by the classic call nor warmed by repeating the same clip.
                for j in range(1, fast_calls + 1):
                    signal_features(signals[(i + j) % len(signals)], SAMPLE_RATE, config=fast)
                fast_s[r, i] = timed(lambda: signal_features(y, SAMPLE_RATE, config=fast))
                signal_features(signals[(i + 1) % len(signals)], SAMPLE_RATE, config=rich)
                rich_s[r, i] = timed(lambda: signal_features(y, SAMPLE_RATE, config=rich))
    classic_file = np.median(classic_s, axis=0)  # [clip, (wall, cpu)], median over passes
    fast_file = np.median(fast_s, axis=0)
    rich_file = np.median(rich_s, axis=0)
    decode_file = np.asarray(decode)

    print(f"clips: mean {seconds:.2f} s of audio each; times in ms per clip (median over passes)")
    print(f"{'':<10}{'wall mean':>12}{'wall median':>13}{'CPU mean':>11}{'CPU median':>12}")
    for name, values in (("decode", decode_file), ("classic", classic_file), ("fast", fast_file),
                         ("rich", rich_file)):
        print(f"{name:<10}{1e3 * values[:, 0].mean():>12.3f}{1e3 * np.median(values[:, 0]):>13.3f}"
              f"{1e3 * values[:, 1].mean():>11.3f}{1e3 * np.median(values[:, 1]):>12.3f}")
    ratios = classic_file.mean(axis=0) / fast_file.mean(axis=0)
    pass_ratios = classic_s[..., 1].sum(axis=1) / fast_s[..., 1].sum(axis=1)
    print(f"classic / fast: {ratios[1]:.1f}x CPU time, {ratios[0]:.1f}x wall time (mean times); "
          f"{np.median(classic_file[:, 1] / fast_file[:, 1]):.1f}x median per clip (CPU); "
          f"passes (CPU) {', '.join(f'{r:.1f}' for r in pass_ratios)}")
    decode_mean = decode_file.mean(axis=0)
    with_decode = (classic_file.mean(axis=0) + decode_mean) / (fast_file.mean(axis=0) + decode_mean)
    print(f"(for information) including decode: (classic + decode) / (fast + decode) = "
          f"{with_decode[1]:.1f}x CPU, {with_decode[0]:.1f}x wall")
    rich_ratios = classic_file.mean(axis=0) / rich_file.mean(axis=0)
    print(f"(for information) classic / rich: {rich_ratios[1]:.1f}x CPU time, {rich_ratios[0]:.1f}x wall; "
          f"rich / fast: {rich_file[:, 1].mean() / fast_file[:, 1].mean():.2f}x CPU; "
          f"rich {1e3 * (rich_file[:, 1].mean() + decode_file[:, 1].mean()):.2f} CPU ms per clip with decode, "
          f"i.e. {1 / (rich_file[:, 1].mean() + decode_file[:, 1].mean()):.0f} files per CPU second")
    print(f"{against(ratios[1], TARGET_PER_CORE)} (classic / fast per core: thread CPU time, which time "
          f"stolen by other processes on a shared machine does not inflate; wall time {ratios[0]:.1f}x)")


def folder_mb(folder: Path) -> float:
    """Size of the files in ``folder``, MB."""
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 1e6


def job_run(data: Path, total: int, recipe: str) -> dict[str, float]:
    """One ``run_extract`` of the whole corpus with ``recipe``: the benchmark's wall time around it
    (Ray start-up and shutdown included) and the timings of the job's ``_manifest.json``."""
    from ser_batch.config import Config
    from ser_batch.pipeline.extract import run_extract

    # What `ser-batch extract --recipe RECIPE --num-cpus 2` runs with no config file.
    config = Config().replace(features={"recipe": recipe}, ray={"num_cpus": JOB_CPUS})
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ser_batch_bench_") as tmp:
        out = Path(tmp) / "features"
        started = time.perf_counter()
        summary = run_extract(data, out, config=config, progress=False)
        wall = time.perf_counter() - started
        manifest = json.loads((out / "_manifest.json").read_text())
        size = folder_mb(out)
    if summary.errors or summary.files != total:
        print(f"warning: job reported {summary.files} files and {summary.errors} errors")
    run = {"wall_s": wall, "job_wall_s": manifest["wall_s"], "ray_start_s": manifest["ray_start_s"] or 0.0,
           "tasks_wall_s": manifest.get("tasks_wall_s", float("nan")),
           "task_cpu_s": manifest.get("task_cpu_s", float("nan")), "mb": size, "load": load}
    run["driver_s"] = run["job_wall_s"] - run["ray_start_s"] - run["tasks_wall_s"]
    run["shutdown_s"] = wall - run["job_wall_s"]
    print(f"{recipe} job: {wall:.2f} s wall = Ray start {run['ray_start_s']:.2f} + tasks {run['tasks_wall_s']:.2f} "
          f"+ rest of the driver {run['driver_s']:.2f} + after the job (manifest, Ray shutdown) "
          f"{run['shutdown_s']:.2f}; "
          f"{run['task_cpu_s']:.1f} CPU s in the tasks ({run['task_cpu_s'] / run['tasks_wall_s'] / JOB_CPUS:.0%} "
          f"of {JOB_CPUS} CPUs while they ran); {total / wall:.1f} files/s, {total / wall / JOB_CPUS:.1f} per core; "
          f"{size:.0f} MB written; load {load:.2f} before")
    return run


def whole_job(data: Path, paths: list[str], *, serial_files: int | None, recipes: tuple[str, ...],
              job_runs: int) -> None:
    from threadpoolctl import threadpool_limits

    from ser_batch.config import Config
    from ser_batch.features.recipes import file_features

    total = len(paths)
    classic = Config().replace(features={"recipe": "classic"})
    rich = Config().features
    print(f"\n== whole job: {total} files, run_extract on local Ray with {JOB_CPUS} CPUs "
          f"(recipes {', '.join(recipes)}; {job_runs} runs each) vs classic serially in this process")
    if "rich" in recipes:
        extract = Config().extract
        print(f"rich: the defaults of `ser-batch extract --recipe rich`: clip vector and windows of "
              f"{rich.window_s} s every {rich.window_hop_s} s, extract.store_frames = {extract.store_frames} "
              f"(log-mel frames for the cnn), extract.augment = {list(extract.augment)} (no augmented copies), "
              f"{extract.shard_size} files per task")

    # Half of the job runs before the long serial baseline and half after, so load changes hit both;
    # the recipes' order alternates from one round to the next.
    runs: dict[str, list[dict[str, float]]] = {r: [] for r in recipes}
    before = (job_runs + 1) // 2
    for round_ in range(before):
        for recipe in recipes if round_ % 2 == 0 else recipes[::-1]:
            runs[recipe].append(job_run(data, total, recipe))
    chosen = spread(paths, serial_files or total)
    # One core, as the serial baseline (Ray limits each task's BLAS/OpenMP threads likewise).
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        file_features(data / chosen[0], config=classic)  # warm-up: numba JIT, filterbanks
        load = os.getloadavg()[0]
        started, cpu = time.perf_counter(), time.thread_time()
        for rel in chosen:
            file_features(data / rel, config=classic)
        serial, serial_cpu = time.perf_counter() - started, time.thread_time() - cpu
    per_s, per_cpu_s = len(chosen) / serial, len(chosen) / serial_cpu
    if len(chosen) < total:
        estimate = serial / len(chosen) * total
        print(f"serial classic: {estimate:.1f} s for {total} files, EXTRAPOLATED from {len(chosen)} files "
              f"({serial:.1f} s measured, {per_s:.2f} files/s, {per_cpu_s:.2f} files per CPU s; load {load:.2f})")
        serial = estimate
    else:
        print(f"serial classic: {serial:.1f} s for {total} files ({per_s:.2f} files/s, "
              f"{per_cpu_s:.2f} files per CPU s; load {load:.2f})")
    for round_ in range(before, job_runs):
        for recipe in recipes if round_ % 2 == 0 else recipes[::-1]:
            runs[recipe].append(job_run(data, total, recipe))

    print(f"\nper core (median of {job_runs} runs per recipe; classic: serial, one core, decode included)")
    print(f"{'':<22}{'wall s':>8}{'files/s':>9}{'files/s/core':>14}{'x classic':>11}"
          f"{'files/task CPU s':>18}{'x classic':>11}")
    print(f"{'classic serial':<22}{total / per_s:>8.1f}{per_s:>9.2f}{per_s:>14.2f}{1:>11.1f}"
          f"{per_cpu_s:>18.2f}{1:>11.1f}")
    for recipe, recipe_runs in runs.items():
        wall = statistics.median(r["wall_s"] for r in recipe_runs)
        cpu = statistics.median(r["task_cpu_s"] for r in recipe_runs)
        core = total / wall / JOB_CPUS
        print(f"{recipe + ' job, ' + str(JOB_CPUS) + ' CPUs':<22}{wall:>8.1f}{total / wall:>9.1f}{core:>14.1f}"
              f"{core / per_s:>11.1f}{total / cpu:>18.1f}{total / cpu / per_cpu_s:>11.1f}")
    for recipe, recipe_runs in runs.items():
        parts = {k: statistics.median(r[k] for r in recipe_runs)
                 for k in ("ray_start_s", "tasks_wall_s", "driver_s", "shutdown_s", "wall_s")}
        print(f"{recipe} job wall {parts['wall_s']:.2f} s (medians): Ray start {parts['ray_start_s']:.2f}, "
              f"tasks {parts['tasks_wall_s']:.2f}, rest of the driver {parts['driver_s']:.2f}, "
              f"manifest and Ray shutdown {parts['shutdown_s']:.2f}")
    loads = [r["load"] for rr in runs.values() for r in rr] + [load]
    print(f"load average (1 min) before the runs: {min(loads):.2f}-{max(loads):.2f}")
    if "fast" in runs:
        ratio = serial / statistics.median(r["wall_s"] for r in runs["fast"])
        print(f"serial classic / parallel fast job: {ratio:.1f}x")
        print(f"{against(ratio, TARGET_JOB)} (serial classic / parallel fast job)")
    if "rich" in runs:
        ratio = serial / statistics.median(r["wall_s"] for r in runs["rich"])
        print(f"(for information, no target) serial classic / parallel rich job: {ratio:.1f}x")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = Path(args.data)
    if not data.is_absolute():
        data = (ROOT / data).resolve()
    if not data.is_dir():
        print(f"error: benchmark data not found: {data}\n"
              f"(expects the RAVDESS 16-kHz speech WAVs from ../shared; pass --data DIR)", file=sys.stderr)
        return 2
    from ser_batch.config import AudioConfig
    from ser_batch.data.labels import discover_audio

    paths = discover_audio(data, extensions=AudioConfig().extensions)
    if not paths:
        print(f"error: no audio files in {data}", file=sys.stderr)
        return 2
    print(f"data: {data} ({len(paths)} files)")
    per_core(data, paths, files=args.files, repeats=args.repeats, fast_calls=args.fast_calls)
    if not args.skip_job:
        from ser_batch.errors import SerBatchError

        try:
            whole_job(data, paths, serial_files=args.serial_files, recipes=args.recipes, job_runs=args.job_runs)
        except SerBatchError as exc:
            print(f"error: the extraction job failed: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

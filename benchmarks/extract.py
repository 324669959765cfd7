"""Speed of feature extraction: the ``fast`` recipe and the Ray job against ``classic``.

Run from the project root::

    .venv/bin/python benchmarks/extract.py [--files N] [--serial-files K] [--skip-job]

Every number is a ratio against a baseline measured in the same process, so that the
load of a shared machine affects both sides alike:

1. **Per core.** ``classic`` and ``fast`` feature times per file on the same ``N``
   already-decoded RAVDESS clips (decoded once, 16 kHz), with BLAS/OpenMP limited to one
   thread. Both recipes are warmed up first (filterbank caches, numba JIT), then timed
   clip by clip, classic then fast, over several passes; each clip's time is its median
   over the passes. Before each timed fast call, untimed fast calls on other clips put the
   caches in the state of a running job. Wall and thread-CPU times are printed; the verdict
   uses CPU time, which other processes on a shared machine do not inflate.
   Target: ``classic / fast >= 100``.
2. **Whole job.** ``run_extract`` over every file of the corpus on a local Ray runtime with
   2 CPUs (wall time including Ray start-up, run before and after the baseline), against
   the ``classic`` recipe (decode included) run serially in this process, on one thread,
   over the same files (or ``K`` of them, extrapolated). Target: ``serial / job >= 10``.

It is a script, not a test: it prints a report and exits 0 whatever the ratios are
(a FAIL line says when a target is missed); it exits 2 when the data is missing and 1
when the extraction job fails.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = "../shared/data/ravdess/Audio_Speech_Actors_01-20_16k"
SAMPLE_RATE = 16000
TARGET_PER_CORE = 100.0
TARGET_JOB = 10.0
JOB_CPUS = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", default=DEFAULT_DATA,
                        help="folder of RAVDESS 16-kHz WAVs; relative paths are resolved against the repo root")
    parser.add_argument("--files", type=int, default=40, help="clips for the per-core comparison")
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved passes over the clips in the per-core comparison")
    parser.add_argument("--fast-calls", type=int, default=5,
                        help="untimed fast-recipe calls on other clips before each timed one")
    parser.add_argument("--serial-files", type=int, default=None,
                        help="files of the serial classic baseline (default: all; fewer are extrapolated)")
    parser.add_argument("--skip-job", action="store_true", help="only run the per-core comparison")
    args = parser.parse_args(argv)
    if args.files < 1 or args.repeats < 1 or args.fast_calls < 0:
        parser.error("--files and --repeats must be >= 1, --fast-calls >= 0")
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


def verdict(ratio: float, target: float) -> str:
    return f"{'PASS' if ratio >= target else 'FAIL'}: {ratio:.1f}x {'>=' if ratio >= target else '<'} {target:.0f}x"


def per_core(data: Path, paths: list[str], *, files: int, repeats: int, fast_calls: int) -> None:
    from threadpoolctl import threadpool_limits

    from ser_batch.audio.decode import load_audio
    from ser_batch.config import FeatureConfig
    from ser_batch.features.fast import clip_features

    chosen = spread(paths, files)
    print(f"== per core: classic vs fast on {len(chosen)} clips, 1 BLAS/OpenMP thread, "
          f"{repeats} passes, clip by clip (classic, then fast)")
    decode, signals = [], []
    for rel in chosen:  # decoded once, up front
        wall, cpu = time.perf_counter(), time.thread_time()
        y, _ = load_audio(data / rel, sample_rate=SAMPLE_RATE)
        decode.append((time.perf_counter() - wall, time.thread_time() - cpu))
        signals.append(y)
    classic = FeatureConfig(recipe="classic")
    fast = FeatureConfig(recipe="fast")
    seconds = sum(y.size for y in signals) / SAMPLE_RATE / len(signals)
    # [pass, clip, (wall, cpu)]
    classic_s = np.empty((repeats, len(signals), 2))
    fast_s = np.empty((repeats, len(signals), 2))
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # First calls build filterbank caches and compile librosa's numba kernels.
        for y in signals[:2]:
            clip_features(y, SAMPLE_RATE, config=classic)
            for _ in range(3):
                clip_features(y, SAMPLE_RATE, config=fast)
        for r in range(repeats):
            for i, y in enumerate(signals):
                classic_s[r, i] = timed(lambda: clip_features(y, SAMPLE_RATE, config=classic))
                # As in a job, the timed call follows fast calls on *other* clips: neither
                # polluted by the classic call nor warmed by repeating the same clip.
                for j in range(1, fast_calls + 1):
                    clip_features(signals[(i + j) % len(signals)], SAMPLE_RATE, config=fast)
                fast_s[r, i] = timed(lambda: clip_features(y, SAMPLE_RATE, config=fast))
    classic_file = np.median(classic_s, axis=0)  # [clip, (wall, cpu)], median over passes
    fast_file = np.median(fast_s, axis=0)
    decode_file = np.asarray(decode)

    print(f"clips: mean {seconds:.2f} s of audio each; times in ms per clip (median over passes)")
    print(f"{'':<10}{'wall mean':>12}{'wall median':>13}{'CPU mean':>11}{'CPU median':>12}")
    for name, values in (("decode", decode_file), ("classic", classic_file), ("fast", fast_file)):
        print(f"{name:<10}{1e3 * values[:, 0].mean():>12.3f}{1e3 * np.median(values[:, 0]):>13.3f}"
              f"{1e3 * values[:, 1].mean():>11.3f}{1e3 * np.median(values[:, 1]):>12.3f}")
    ratios = classic_file.mean(axis=0) / fast_file.mean(axis=0)
    pass_ratios = classic_s[..., 1].sum(axis=1) / fast_s[..., 1].sum(axis=1)
    print(f"classic / fast: {ratios[1]:.1f}x CPU time, {ratios[0]:.1f}x wall time (mean times); "
          f"{np.median(classic_file[:, 1] / fast_file[:, 1]):.1f}x median per clip (CPU); "
          f"passes (CPU) {', '.join(f'{r:.1f}' for r in pass_ratios)}")
    with_decode = (classic_file.mean(axis=0) + decode_file.mean(axis=0)) / (fast_file.mean(axis=0) + decode_file.mean(axis=0))
    print(f"(for information) including decode: (classic + decode) / (fast + decode) = "
          f"{with_decode[1]:.1f}x CPU, {with_decode[0]:.1f}x wall")
    print(f"{verdict(ratios[1], TARGET_PER_CORE)} (classic / fast per core: thread CPU time, which time "
          f"stolen by other processes on a shared machine does not inflate; wall time {ratios[0]:.1f}x)")


def whole_job(data: Path, paths: list[str], *, serial_files: int | None) -> None:
    from threadpoolctl import threadpool_limits

    from ser_batch.config import Config
    from ser_batch.features.recipes import file_features
    from ser_batch.pipeline.extract import run_extract

    total = len(paths)
    config = Config().replace(ray={"num_cpus": JOB_CPUS})
    classic = Config().replace(features={"recipe": "classic"})
    print(f"\n== whole job: {total} files, run_extract on local Ray with {JOB_CPUS} CPUs "
          f"(recipe {config.features.recipe}) vs classic serially in this process")

    def job() -> float:
        with tempfile.TemporaryDirectory(prefix="ser_batch_bench_") as tmp:
            started = time.perf_counter()
            summary = run_extract(data, Path(tmp) / "features", config=config, progress=False)
            wall = time.perf_counter() - started
        if summary.errors or summary.files != total:
            print(f"warning: job reported {summary.files} files and {summary.errors} errors")
        print(f"parallel job: {wall:.2f} s wall incl. Ray start-up ({total / wall:.1f} files/s)")
        return wall

    # The job runs before and after the long serial baseline, so load changes hit both.
    job_walls = [job()]
    chosen = spread(paths, serial_files or total)
    # One core, as the serial baseline (Ray limits each task's BLAS/OpenMP threads likewise).
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        file_features(data / chosen[0], config=classic)  # warm-up: numba JIT, filterbanks
        started = time.perf_counter()
        for rel in chosen:
            file_features(data / rel, config=classic)
        serial = time.perf_counter() - started
    if len(chosen) < total:
        estimate = serial / len(chosen) * total
        print(f"serial classic: {estimate:.1f} s for {total} files, EXTRAPOLATED from {len(chosen)} files "
              f"({serial:.1f} s measured, {len(chosen) / serial:.2f} files/s)")
        serial = estimate
    else:
        print(f"serial classic: {serial:.1f} s for {total} files ({total / serial:.2f} files/s)")
    job_walls.append(job())
    wall = statistics.median(job_walls)
    ratio = serial / wall
    print(f"serial classic / parallel job: {ratio:.1f}x (job wall: median of {len(job_walls)} runs, {wall:.2f} s)")
    print(f"{verdict(ratio, TARGET_JOB)} (serial classic / parallel job)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = Path(args.data)
    if not data.is_absolute():
        data = (REPO_ROOT / data).resolve()
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
            whole_job(data, paths, serial_files=args.serial_files)
        except SerBatchError as exc:
            print(f"error: the extraction job failed: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

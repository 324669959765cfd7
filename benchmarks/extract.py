"""Speed of feature extraction: the ``fast`` recipe and the Ray job against ``classic``.

Run from the project root::

    .venv/bin/python benchmarks/extract.py [--files N] [--serial-files K] [--skip-job]

Every number is a ratio against a baseline measured in the same process, so that the
load of a shared machine affects both sides alike:

1. **Per core.** ``classic`` and ``fast`` feature times per file on the same ``N``
   already-decoded RAVDESS clips (decoded once, 16 kHz), with BLAS/OpenMP limited to one
   thread. Both recipes are warmed up first (filterbank caches, numba JIT), then timed
   interleaved file by file over several repeats; each file's time is its median over the
   repeats. Target: ``classic / fast >= 100``.
2. **Whole job.** ``run_extract`` over every file of the corpus on a local Ray runtime with
   2 CPUs (wall time including Ray start-up, run before and after the baseline), against
   the ``classic`` recipe (decode included) run serially in this process on the same files.
   Target: ``serial classic / parallel job >= 10``.

It is a script, not a test: it prints a report and exits 0 whatever the ratios are
(a FAIL line says when a target is missed); it exits 2 when the data is missing.
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
                        help="fast-recipe calls per clip and pass (their median is kept)")
    parser.add_argument("--serial-files", type=int, default=None,
                        help="files of the serial classic baseline (default: all; fewer are extrapolated)")
    parser.add_argument("--skip-job", action="store_true", help="only run the per-core comparison")
    args = parser.parse_args(argv)
    if args.files < 1 or args.repeats < 1 or args.fast_calls < 1:
        parser.error("--files, --repeats and --fast-calls must be >= 1")
    if args.serial_files is not None and args.serial_files < 1:
        parser.error("--serial-files must be >= 1")
    return args


def spread(items: list[str], count: int) -> list[str]:
    """``count`` items evenly spread over ``items`` (all actors and emotions, not just the first)."""
    if count >= len(items):
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def timed(function: Callable[[], object]) -> float:
    """Seconds one call of ``function`` takes."""
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def verdict(ratio: float, target: float) -> str:
    return f"{'PASS' if ratio >= target else 'FAIL'}: {ratio:.1f}x {'>=' if ratio >= target else '<'} {target:.0f}x"


def per_core(data: Path, paths: list[str], *, files: int, repeats: int, fast_calls: int) -> None:
    from threadpoolctl import threadpool_limits

    from ser_batch.audio import load_audio
    from ser_batch.config import FeatureConfig
    from ser_batch.features import clip_features

    chosen = spread(paths, files)
    print(f"== per core: classic vs fast on {len(chosen)} clips, 1 BLAS/OpenMP thread, "
          f"{repeats} interleaved passes ({fast_calls} fast calls per clip and pass)")
    decode_s, signals = [], []
    for rel in chosen:
        started = time.perf_counter()
        y, _ = load_audio(data / rel, sample_rate=SAMPLE_RATE)
        decode_s.append(time.perf_counter() - started)
        signals.append(y)
    classic = FeatureConfig(recipe="classic")
    fast = FeatureConfig(recipe="fast")
    seconds = sum(y.size for y in signals) / SAMPLE_RATE / len(signals)
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # First calls build filterbank caches and compile librosa's numba kernels.
        for y in signals[:2]:
            clip_features(y, SAMPLE_RATE, config=classic)
            for _ in range(3):
                clip_features(y, SAMPLE_RATE, config=fast)
        classic_s = np.empty((repeats, len(signals)))
        fast_s = np.empty((repeats, len(signals)))
        for r in range(repeats):
            for i, y in enumerate(signals):
                classic_s[r, i] = timed(lambda: clip_features(y, SAMPLE_RATE, config=classic))
                fast_s[r, i] = statistics.median(
                    timed(lambda: clip_features(y, SAMPLE_RATE, config=fast)) for _ in range(fast_calls))
    classic_file = np.median(classic_s, axis=0)  # per clip, median over passes
    fast_file = np.median(fast_s, axis=0)
    decode = np.asarray(decode_s)
    pass_ratios = classic_s.sum(axis=1) / fast_s.sum(axis=1)

    print(f"clips: mean {seconds:.2f} s of audio each")
    print(f"{'ms per clip':<22}{'mean':>10}{'median':>10}")
    for name, values in (("decode", decode), ("classic", classic_file), ("fast", fast_file)):
        print(f"{name:<22}{1e3 * values.mean():>10.3f}{1e3 * np.median(values):>10.3f}")
    ratio = classic_file.mean() / fast_file.mean()
    print(f"classic / fast: {ratio:.1f}x on mean times, {np.median(classic_file / fast_file):.1f}x median per clip, "
          f"passes {', '.join(f'{r:.1f}' for r in pass_ratios)}")
    with_decode = (classic_file.mean() + decode.mean()) / (fast_file.mean() + decode.mean())
    print(f"(for information) including decode: (classic + decode) / (fast + decode) = {with_decode:.1f}x")
    print(f"{verdict(ratio, TARGET_PER_CORE)} (classic / fast per core, mean times)")


def whole_job(data: Path, paths: list[str], *, serial_files: int | None) -> None:
    from ser_batch.config import Config
    from ser_batch.extract import file_features, run_extract

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
    with warnings.catch_warnings():
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
    from ser_batch.dataset import discover_audio

    paths = discover_audio(data, extensions=AudioConfig().extensions)
    if not paths:
        print(f"error: no audio files in {data}", file=sys.stderr)
        return 2
    print(f"data: {data} ({len(paths)} files)")
    per_core(data, paths, files=args.files, repeats=args.repeats, fast_calls=args.fast_calls)
    if not args.skip_job:
        whole_job(data, paths, serial_files=args.serial_files)
    return 0


if __name__ == "__main__":
    sys.exit(main())

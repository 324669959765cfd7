"""What a fresh scoring worker pays before its first result, and the pitch track's cost.

    python benchmarks/worker_start.py [--baseline REF] [--repeat 5] [--cold]

1. **A worker's start**: a fresh ``python -c`` imports the scoring modules (those a ``score``
   worker imports: ``ser_batch.pipeline.score``, ``ser_batch.inference.scoring``), loads the
   pretrained bundle, scores one generated 3 s clip (the first task) and then another (a warm
   task, for comparison). Each phase is timed in CPU and wall seconds inside the process, the
   whole process in wall seconds from outside, and the process says whether librosa or numba
   were imported. With ``--baseline REF`` the same runs go against the tree of a git ref (e.g.
   the commit before the numpy pitch track), interleaved with this tree's so that a change in
   the machine's load hits both alike; the report gives medians and the ratio baseline / this.
   ``--cold`` gives numba an empty cache folder in every run (first run after an install).
2. **The pitch track**: ``librosa.yin`` against :func:`ser_batch.features.pitch.yin` in this
   process, on the 4 kHz copies of RAVDESS clips (or generated speech when ../shared is
   absent), with the rich recipe's arguments; CPU ms per second of audio, median of 5 passes,
   and a check that the two give the same values.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout under test, also as a plain script
from benchmarks.common import RAVDESS, ROOT, checkout, generated_speech, run_json  # noqa: E402

_ONE_WORKER = r"""
import json, sys, time
marks = [(time.perf_counter(), time.process_time())]
phases = {}
def mark(name):
    marks.append((time.perf_counter(), time.process_time()))
    phases[name] = [marks[-1][0] - marks[-2][0], marks[-1][1] - marks[-2][1]]
import ser_batch.pipeline.score
from ser_batch.inference.scoring import cached_bundle, predict_files
from ser_batch.models.bundle import default_bundle_path
mark("import")
bundle = cached_bundle(default_bundle_path())
mark("bundle")
predict_files([sys.argv[1]], bundle=bundle, framework="both")
mark("first clip")
predict_files([sys.argv[2]], bundle=bundle, framework="both")
mark("warm clip")
print(json.dumps({"phases": phases, "loaded": [m for m in ("librosa", "numba") if m in sys.modules]}))
"""


def _run_worker(tree: Path, wavs: list[Path], *, cold: bool) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        report = run_json([sys.executable, "-c", _ONE_WORKER, *map(str, wavs)], tree=tree,
                          env={"NUMBA_CACHE_DIR": cache} if cold else {})
        report["process wall"] = time.perf_counter() - start
    return report


def worker_start(args: argparse.Namespace, work: Path) -> None:
    import soundfile as sf

    wavs = []
    for seed in (1, 2):
        wavs.append(work / f"clip{seed}.wav")
        sf.write(wavs[-1], generated_speech(16_000, 3.0, seed=seed), 16_000)
    trees = {"this tree": ROOT}
    if args.baseline:
        trees = {f"baseline {args.baseline}": checkout(args.baseline, work / "baseline"), **trees}
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    for i in range(args.repeat):
        for name, tree in trees.items():
            report = _run_worker(tree, wavs, cold=args.cold)
            runs[name].append(report)
            print(f"run {i + 1} {name:>22}: load {os.getloadavg()[0]:4.1f}  process {report['process wall']:.2f} s  "
                  + "  ".join(f"{k} {v[1]:.2f}" for k, v in report["phases"].items())
                  + f" CPU s  loaded {report['loaded'] or 'neither librosa nor numba'}", flush=True)
    print(f"\nmedian of {args.repeat} fresh processes ({'cold' if args.cold else 'warm'} numba cache), "
          "CPU s (wall s):")
    medians: dict[str, dict[str, float]] = {}
    for name, reports in runs.items():
        phases = reports[0]["phases"]
        med = {k: statistics.median(r["phases"][k][1] for r in reports) for k in phases}
        med_wall = {k: statistics.median(r["phases"][k][0] for r in reports) for k in phases}
        med["import + bundle + first clip"] = statistics.median(
            sum(r["phases"][k][1] for k in ("import", "bundle", "first clip")) for r in reports)
        med["process wall"] = statistics.median(r["process wall"] for r in reports)
        medians[name] = med
        print(f"  {name}: " + "  ".join(f"{k} {med[k]:.3f} ({med_wall[k]:.3f})" for k in phases)
              + f"  | import + bundle + first clip {med['import + bundle + first clip']:.3f} CPU s"
              + f"  | whole process {med['process wall']:.2f} s wall")
    if len(medians) == 2:
        before, after = medians.values()
        print("  ratio baseline / this tree: " + "  ".join(f"{k} {before[k] / after[k]:.2f}x" for k in after))


def pitch_track() -> None:
    import librosa
    import soundfile as sf
    import soxr

    from ser_batch.features.pitch import yin
    from ser_batch.features.rich import F0_MAX_HZ, F0_MIN_HZ, PITCH_RATE

    clips = sorted(RAVDESS.glob("Actor_*/*.wav"))[::30]
    if clips:
        lows = [soxr.resample(sf.read(c, dtype="float32", always_2d=True)[0].mean(axis=1), 16_000, PITCH_RATE,
                              quality="HQ").astype(np.float32) for c in clips]
        source = f"{len(clips)} RAVDESS clips"
    else:
        lows = [generated_speech(PITCH_RATE, 3.5, seed=s) for s in range(40)]
        source = "40 generated 3.5 s clips (../shared absent)"
    seconds = sum(len(y) for y in lows) / PITCH_RATE
    # The rich recipe's call at 16 kHz: n_fft 2048 / 4, every other 512-sample hop.
    options = {"fmin": F0_MIN_HZ, "fmax": F0_MAX_HZ, "sr": PITCH_RATE, "frame_length": 512, "hop_length": 256,
               "center": False}
    worst = max(float(np.abs(librosa.yin(y, **options) - yin(y, **options)).max()) for y in lows)
    cost = {}
    for name, track in (("librosa.yin", librosa.yin), ("numpy yin", yin)):
        passes = []
        for _ in range(5):
            cpu = time.process_time()
            for y in lows:
                track(y, **options)
            passes.append(time.process_time() - cpu)
        cost[name] = statistics.median(passes) / seconds * 1e3
    print(f"\npitch track on {source} ({seconds:.0f} s of audio), CPU ms per audio second, median of 5 passes:")
    print(f"  librosa.yin {cost['librosa.yin']:.3f}  numpy yin {cost['numpy yin']:.3f}  "
          f"ratio {cost['librosa.yin'] / cost['numpy yin']:.2f}x  max |difference| {worst:.3g} Hz")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="git ref to compare against (its tree is extracted to a temp folder)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cold", action="store_true", help="empty numba cache in every run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        worker_start(args, Path(work))
    pitch_track()


if __name__ == "__main__":
    main()

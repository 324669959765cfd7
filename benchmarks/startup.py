"""Where the fixed cost of a small job goes: imports, the driver's feature check, Ray start,
the first task in each worker, Ray shutdown.

    python benchmarks/startup.py [--recipe rich] [--cold] [--repeat 3]

``--cold`` points numba at an empty cache folder (NUMBA_CACHE_DIR), as on the first run
after an install that did not warm it: librosa then compiles its numba functions. Each
repetition is a fresh process; the report gives every run and the median of each phase.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import run_child  # noqa: E402

_ONE_RUN = r"""
import json, sys, time
marks = [time.perf_counter()]
phases = {}
def mark(name):
    marks.append(time.perf_counter()); phases[name] = marks[-1] - marks[-2]
import ser_batch.cli, ser_batch.pipeline.extract
from ser_batch.config import config_to_dict, load_config
mark("import ser_batch")
config = load_config().replace(features={"recipe": sys.argv[1]})
ser_batch.pipeline.extract._preflight(config)
mark("driver feature check")
import ray
ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
mark("ray.init")

@ray.remote
def first_task(settings):
    import numpy as np
    from ser_batch.config import config_from_dict
    from ser_batch.features.recipes import signal_features
    y = np.random.default_rng(0).uniform(-0.1, 0.1, 48000).astype(np.float32)
    signal_features(y, 16000, config=config_from_dict(settings).features)
    import sys
    return [m for m in ("librosa", "numba") if m in sys.modules]

loaded = ray.get([first_task.remote(config_to_dict(config)) for _ in range(2)])
mark("first task in 2 workers")
ray.shutdown()
mark("ray.shutdown")
print("librosa/numba in the workers:", loaded)
print(json.dumps(phases))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="rich", choices=["fast", "classic", "rich"])
    parser.add_argument("--cold", action="store_true", help="empty numba cache (first run after install)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    runs = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as cache:
            load = os.getloadavg()[0]
            out = run_child([sys.executable, "-c", _ONE_RUN, args.recipe],
                            env={"NUMBA_CACHE_DIR": cache} if args.cold else {})
        *notes, last = out.stdout.strip().splitlines()
        phases = json.loads(last)
        runs.append(phases)
        print(f"load {load:4.1f}  " + "  ".join(f"{k} {v:.2f}" for k, v in phases.items())
              + f"  total {sum(phases.values()):.2f} s  " + " ".join(notes[-1:]), flush=True)
    print(f"median over {len(runs)} runs, {os.cpu_count()} cores, {'cold' if args.cold else 'warm'} numba cache, "
          f"recipe {args.recipe}:")
    for name in runs[0]:
        print(f"  {statistics.median(r[name] for r in runs):6.2f} s  {name}")
    print(f"  {statistics.median(sum(r.values()) for r in runs):6.2f} s  total")


if __name__ == "__main__":
    main()

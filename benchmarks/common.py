"""What the benchmark scripts share: the data, an older checkout to time against, a child process
whose last line of output is its JSON report, and a verdict. The scripts put the project root first
on ``sys.path`` and import ``benchmarks.common``, so they measure this checkout from anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path
from typing import Any, Mapping, Sequence

#: The checkout the scripts belong to, and measure unless told otherwise.
ROOT = Path(__file__).resolve().parents[1]
#: The corpora the team shares (never copied into the project): RAVDESS speech at 16 kHz, and EMOVO.
SHARED_DATA = ROOT.parent / "shared" / "data"
RAVDESS = SHARED_DATA / "ravdess" / "Audio_Speech_Actors_01-20_16k"
EMOVO = SHARED_DATA / "emovo"


def checkout(ref: str, into: Path) -> Path:
    """The files of git ref ``ref`` of this repository, extracted in ``into`` (a baseline to time)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True).stdout
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def run_child(command: Sequence[str], *, tree: Path = ROOT, env: Mapping[str, str] | None = None,
              timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in ``tree`` with ``tree`` first on ``PYTHONPATH`` (so that it imports that
    checkout's ser_batch), ``env`` added to this process's environment. A run that fails ends this
    script with the tail of its stderr (exit 1)."""
    base = {**os.environ, **(env or {})}
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), base.get("PYTHONPATH")]))
    done = subprocess.run(list(command), cwd=tree, env=base, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"a run failed (exit {done.returncode}): {' '.join(map(str, command))}")
    return done


def run_json(command: Sequence[str], **options: Any) -> dict[str, Any]:
    """The JSON report a child process prints as its last line (:func:`run_child`'s options)."""
    return json.loads(run_child(command, **options).stdout.strip().splitlines()[-1])


def generated_speech(rate: int, seconds: float, *, seed: int) -> Any:
    """Speech without a corpus: harmonics of a gliding f0 under a syllable envelope, light noise (float32)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(round(rate * seconds)) / rate
    f0 = (120.0 + 40 * seed) * (1.0 + 0.1 * np.sin(2 * np.pi * 1.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 * (1.0 + np.sin(2 * np.pi * 4.0 * t - np.pi / 2))
    return (0.3 * envelope * voiced + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def verdict(ok: bool) -> str:
    """How every script marks a target met or missed."""
    return "PASS" if ok else "FAIL"


def load_average() -> str:
    """The machine's load averages (1, 5, 15 minutes): others' work that slows a run."""
    return "/".join(f"{x:.2f}" for x in os.getloadavg())

"""What the benchmark scripts share: where the data are, an older checkout to time against, a child
process whose last line of output is its JSON report, and a verdict against a target.

The scripts put the project root first on ``sys.path`` and import ``benchmarks.common``, so that
they run as ``.venv/bin/python benchmarks/NAME.py`` from anywhere and measure this checkout.
"""

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
    """The files of git ref ``ref`` of this repository (``git archive``), extracted in ``into``: the
    baseline a script times against the working tree."""
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


def verdict(ok: bool) -> str:
    """``PASS`` or ``FAIL``: how every script marks a target met or missed."""
    return "PASS" if ok else "FAIL"


def load_average() -> str:
    """The machine's load averages (1, 5, 15 minutes): others' work that slows a run."""
    return "/".join(f"{x:.2f}" for x in os.getloadavg())

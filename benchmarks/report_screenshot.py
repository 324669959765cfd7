"""Render the scoring report of a real score run to a PNG in a headless browser, to look at it.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/report_screenshot.py [--work /tmp/report-shot]
        [--png report.png] [--calls 4] [--clips 12] [--skip-score] [--width 1400] [--height 2600]

1. Builds ``--calls`` calls of ``--clips`` RAVDESS clips each (one actor per call, low noise
   between clips: :func:`ser_batch.demo.calls.build_call`, as ``make demo`` does) under
   ``WORK/calls`` with their ``truth.csv``. Needs the 16 kHz RAVDESS copy in
   ``../shared/data/ravdess/Audio_Speech_Actors_01-20_16k`` (or ``--data DIR``).
2. Scores them with the pretrained bundle into ``WORK/scores`` (an embedded Ray; about 30 s on
   two cores), unless ``--skip-score`` and the scores are there.
3. Writes ``WORK/scores/report.html`` with the truth overlaid (``ser-batch report WORK/scores
   --truth WORK/calls/truth.csv``).
4. Runs Debian's ``chromium`` headless (``apt-get install -y chromium``) on the page and writes
   the PNG (default ``WORK/report.png``; never commit it).

Exits with status 2 and a message when the data or the browser is missing. The pretrained
bundle has heard actors 01-20, so the truth agreement on the page flatters it: the point here
is the layout.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import RAVDESS  # noqa: E402

#: Chromium flags the machine notes ask for (no network, no profile state, no GPU).
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")


def build_calls(data: Path, target: Path, *, calls: int, clips: int) -> Path:
    """``calls`` calls of ``clips`` clips of one actor each, every emotion in turn; returns truth.csv."""
    from ser_batch.data.labels import parse_ravdess_name
    from ser_batch.demo.calls import build_call, write_truth

    truth = []
    actors = sorted(p for p in data.iterdir() if p.is_dir())[:calls]
    for number, actor in enumerate(actors):
        labelled = [(p, parse_ravdess_name(p.name)) for p in sorted(actor.glob("*.wav"))]
        by_emotion: dict[str, list[Path]] = {}
        for path, labels in labelled:
            if labels is not None:
                by_emotion.setdefault(labels.emotion, []).append(path)
        # Round-robin over the emotions, so each call changes emotion clip by clip.
        chosen, turn = [], 0
        while len(chosen) < clips and any(by_emotion.values()):
            emotion = sorted(by_emotion)[turn % len(by_emotion)]
            if by_emotion[emotion]:
                chosen.append((by_emotion[emotion].pop(number % len(by_emotion[emotion])), emotion))
            turn += 1
        truth += build_call(chosen, target / f"call_{number + 1:02d}_{actor.name.lower()}.flac", seed=number)
    return write_truth(truth, target / "truth.csv")


def screenshot(page: Path, png: Path, *, width: int, height: int) -> None:
    """Render ``page`` with headless chromium (a new empty profile) to ``png``."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("no chromium on PATH: apt-get install -y chromium", file=sys.stderr)
        sys.exit(2)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}",
                        f"--window-size={width},{height}", page.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
    if not png.is_file():
        sys.exit(f"chromium wrote no {png}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "report-shot")
    parser.add_argument("--data", type=Path, default=RAVDESS)
    parser.add_argument("--png", type=Path, default=None)
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--skip-score", action="store_true")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=2600)
    args = parser.parse_args()
    png = args.png or args.work / "report.png"
    scores, calls = args.work / "scores", args.work / "calls"
    if not (args.skip_score and (scores / "files").is_dir()):
        if not args.data.is_dir():
            print(f"RAVDESS 16 kHz copy not found at {args.data} (--data DIR)", file=sys.stderr)
            sys.exit(2)
        from ser_batch.config import load_config
        from ser_batch.pipeline.score import run_score

        build_calls(args.data, calls, calls=args.calls, clips=args.clips)
        summary = run_score(calls, scores, config=load_config(overrides=["ray.num_cpus=2"]), rescore=True,
                            progress=False)
        print(summary.line())
    from ser_batch.reports.score_page import write_score_report

    page = write_score_report(scores, truth=calls / "truth.csv")
    print(f"report: {page}")
    screenshot(page, png, width=args.width, height=args.height)
    print(f"screenshot: {png}")


if __name__ == "__main__":
    main()

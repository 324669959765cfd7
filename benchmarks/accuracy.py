"""Accuracy table of docs/accuracy.md: every recipe x split x model, through the real CLI.

Run from the project root (needs ../shared/data/ravdess; ~10 minutes on 2 cores):

    .venv/bin/python benchmarks/accuracy.py [--out output/accuracy] [--only rich]

It extracts the 1200 RAVDESS clips once per recipe (skipped when the folder exists),
trains one bundle per configuration line with `ser-batch train`, and prints a Markdown
table of test accuracy / macro-F1 per model with the command that reproduces each line.
Speaker split: actors 17-20 held out (never used for tuning); random: stratified 70/30.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import RAVDESS, ROOT, run_child  # noqa: E402

SER = [sys.executable, "-m", "ser_batch.cli"]

# The original recipe's models: Keras ANN without regularisation and early stopping,
# MLPClassifier(300,) with sklearn's small default alpha.
ORIGINAL_MODELS = ["--set", "keras.dropout=[0.0]", "--set", "keras.input_dropout=0.0", "--set", "keras.l2=0.0",
                   "--set", "keras.label_smoothing=0.0", "--set", "keras.early_stopping=true",
                   "--set", "keras.epochs=300", "--set", "keras.batch_size=32",
                   "--set", "sklearn.hidden_layer_sizes=[300]", "--set", "sklearn.alpha=0.0001",
                   "--set", "sklearn.max_iter=500"]

#: (name, recipe, split, extra train options)
LINES = [
    ("classic, original models", "classic", "speaker", ORIGINAL_MODELS),
    ("classic, original models", "classic", "random", ORIGINAL_MODELS),
    ("classic, tuned models", "classic", "speaker", []),
    ("classic, tuned models", "classic", "random", []),
    ("fast, tuned models", "fast", "speaker", []),
    ("fast, tuned models", "fast", "random", []),
    ("rich, whole clips", "rich", "speaker", ["--set", "train.use_segments=false"]),
    ("rich, whole clips", "rich", "random", ["--set", "train.use_segments=false"]),
    ("rich, 1.5 s windows (default)", "rich", "speaker", []),
    ("rich, 1.5 s windows (default)", "rich", "random", []),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "output" / "accuracy")
    parser.add_argument("--only", choices=["classic", "fast", "rich"], help="Run the lines of one recipe.")
    args = parser.parse_args()
    if not RAVDESS.is_dir():
        print(f"RAVDESS not found at {RAVDESS}", file=sys.stderr)
        return 2
    rows = []
    for name, recipe, split, extra in LINES:
        if args.only and recipe != args.only:
            continue
        features = args.out / f"features-{recipe}"
        if not (features / "_manifest.json").is_file():
            run_child([*SER, "extract", str(RAVDESS), "--out", str(features), "--recipe", recipe, "--overwrite",
                 "--no-progress"])
        bundle = args.out / f"model-{recipe}-{split}-{len(rows)}"
        command = ["train", str(features), "--out", str(bundle), "--split", split, "--overwrite", *extra]
        started = time.perf_counter()
        run_child([*SER, *command])
        wall = time.perf_counter() - started
        metrics = json.loads((bundle / "manifest.json").read_text())["metrics"]
        rows.append((name, recipe, split, metrics, wall, command))
        print(f"{name:32s} {split:8s} " + "  ".join(f"{m} {v['accuracy']:.3f}" for m, v in metrics.items())
              + f"  ({wall:.0f} s)", flush=True)
    print("\n| recipe / models | split | Keras ANN | sklearn MLP | both (mean) | train s | command |")
    print("|---|---|---|---|---|---|---|")
    for name, _recipe, split, metrics, wall, command in rows:
        cells = [f"{metrics[m]['accuracy']:.3f} ({metrics[m]['macro_f1']:.3f})" for m in ("keras", "sklearn", "both")]
        shown = shlex.join(["ser-batch", *command]).replace(str(ROOT) + "/", "")
        print(f"| {name} | {split} | " + " | ".join(cells) + f" | {wall:.0f} | `{shown}` |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

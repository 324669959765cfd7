"""Accuracy that carries to unseen voices and corpora: one table per model family and training mix.

Run from the project root (needs ../shared/data/ravdess and ../shared/data/emovo):

    .venv/bin/python benchmarks/transfer.py [--work output/transfer] [--seeds 42,43,44] [--calls]

1. Extracts RAVDESS (actors 1-20, corpus ``ravdess``) and EMOVO with the rich recipe and the
   copies the pretrained bundle trains on (``AUGMENT``: telephone and tempo), once (kept in --work).
2. For each seed trains two bundles with ``ser-batch train`` (keras, sklearn and cnn; normalised sets
   too, for ``--normalize file``):
   * ``ravdess``: RAVDESS actors 1-16; RAVDESS 17-20 and all of EMOVO are never seen;
   * ``ravdess+emovo``: the same plus EMOVO speakers f1, f2, m1, m2 (101, 102, 104, 105); RAVDESS
     17-20 and EMOVO f3, m3 (103, 106) held out.
   RAVDESS 17-20 were held out of all tuning (docs/accuracy.md): they are reported, never tuned on.
3. Scores the held-out originals with ``evaluate`` (the product's scoring of stored windows) and
   prints accuracy per model family - each network alone, today's pair ``keras+sklearn`` and the
   three together - as mean +- std over seeds: RAVDESS 17-20 (8 classes), EMOVO with the argmax
   restricted to its 7 classes and over all 8.
4. ``--calls``: per clip inside calls of actors 17-20 per format, global models and
   ``--normalize file`` (``benchmarks/score.py --accuracy-only`` on the first seed's bundles).
5. The CPU cost of each model family in one scoring process on one thread: milliseconds of CPU per
   second of audio for the rich features (decode, STFT, windows) and for each network's forward pass.

The targets are issue 15's; each line says whether it is met.
"""

from __future__ import annotations

import os

# One thread, as in a one-CPU Ray worker: the cost figures are per core.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
RAVDESS = SHARED / "ravdess" / "Audio_Speech_Actors_01-20_16k"
EMOVO = SHARED / "emovo"
SER = [sys.executable, "-m", "ser_batch.cli"]
#: The copies ``make pretrained`` trains on.
AUGMENT = "telephone-pcm,telephone-ulaw,telephone-alaw-band,tempo-0.9,tempo-1.1"
MODELS = "keras,sklearn,cnn"
RAVDESS_TEST = [17, 18, 19, 20]
EMOVO_TEST = [103, 106]
MIXES = {
    "ravdess": {"features": ["ravdess"], "test_actors": RAVDESS_TEST, "emovo_actors": None},
    "ravdess+emovo": {"features": ["ravdess", "emovo"], "test_actors": RAVDESS_TEST + EMOVO_TEST,
                      "emovo_actors": EMOVO_TEST},
}
#: Model families: one network, or the mean of their probabilities (the product's ensemble).
FAMILIES = {"keras": ["keras"], "sklearn": ["sklearn"], "cnn": ["cnn"], "keras+sklearn": ["keras", "sklearn"],
            "keras+sklearn+cnn": ["keras", "sklearn", "cnn"]}
TARGETS = {"ravdess": 65.0, "emovo7": 45.0, "calls_global": 55.0, "calls_normalized": 70.0}


def run(command: list[str]) -> float:
    """Run a ser-batch command; its wall time in seconds."""
    started = time.perf_counter()
    done = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"failed (exit {done.returncode}): {shlex.join(command)}\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def extract(work: Path) -> dict[str, Path]:
    folders = {"ravdess": work / "features-ravdess", "emovo": work / "features-emovo"}
    for name, source in (("ravdess", RAVDESS), ("emovo", EMOVO)):
        if (folders[name] / "_manifest.json").is_file():
            print(f"  features {name}: kept from {folders[name]}")
            continue
        wall = run([*SER, "extract", str(source), "--out", str(folders[name]), "--recipe", "rich",
                    "--corpus", name, "--augment", AUGMENT, "--overwrite"])
        print(f"  features {name}: extracted in {wall:.0f} s")
    return folders


def train(work: Path, features: dict[str, Path], mix: str, seed: int) -> Path:
    out = work / f"model-{mix}-seed{seed}"
    spec = MIXES[mix]
    if (out / "manifest.json").is_file():
        print(f"  bundle {out.name}: kept")
        return out
    command = [*SER, "train", *(str(features[f]) for f in spec["features"]), "--out", str(out),
               "--models", MODELS, "--normalize", "speaker", "--seed", str(seed),
               "--test-actors", ",".join(map(str, spec["test_actors"])), "--overwrite",
               "--set", "train.export_native=false"]
    wall = run(command)
    print(f"  bundle {out.name}: trained in {wall:.0f} s ({shlex.join(command[2:])})")
    return out


def family_accuracy(results: dict[str, Any], classes: list[str], keep: list[str] | None) -> dict[str, float]:
    """Accuracy (%) of every family on the rows of ``results`` (evaluate with probabilities),
    with the argmax over ``keep`` when given."""
    from ser_batch.models.classes import restrict

    labels = results["labels"].astype(str)
    out = {}
    for family, members in FAMILIES.items():
        proba = np.mean([results["probabilities"][m] for m in members], axis=0)
        scored = keep or classes
        pred = np.asarray(scored)[np.argmax(restrict(proba, classes, keep), axis=1)]
        out[family] = 100.0 * float(np.mean(pred == labels))
    return out


def evaluate(bundle: Path, features: dict[str, Path], mix: str) -> dict[str, dict[str, float]]:
    from ser_batch.pipeline.evaluate import evaluate_bundle

    ravdess = evaluate_bundle(bundle, features["ravdess"], actors=RAVDESS_TEST, probabilities=True)
    classes = ravdess["classes"]["classes"]
    emovo = evaluate_bundle(bundle, features["emovo"], actors=MIXES[mix]["emovo_actors"], probabilities=True)
    emovo_classes = [c for c in classes if c in set(emovo["labels"].astype(str))]
    return {"ravdess": family_accuracy(ravdess, classes, None),
            "emovo7": family_accuracy(emovo, classes, emovo_classes),
            "emovo8": family_accuracy(emovo, classes, None),
            "rows": {"ravdess": ravdess["rows"], "emovo": emovo["rows"], "emovo_actors": emovo["actors"]}}


def calls(work: Path, bundle: Path) -> dict[str, Any]:
    path = work / f"calls-{bundle.name}.json"
    if not path.is_file():
        command = [sys.executable, str(ROOT / "benchmarks" / "score.py"), "--model", str(bundle), "--accuracy-only",
                   "--json", str(path), "--work", str(work / "calls-work")]
        done = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True)
        if not path.is_file():
            sys.exit(f"calls benchmark failed: {shlex.join(command)}\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return json.loads(path.read_text())["accuracy"]["formats"]


def cost(bundle: Path, seconds: float = 60.0) -> dict[str, float]:
    """CPU ms per audio second on one thread: the rich features of a ``seconds`` clip-train, and
    each network's forward pass over its windows (after one warm-up run)."""
    import soundfile as sf

    from ser_batch.inference.scoring import batch_frames, cached_bundle, stream_file_windows, window_proba

    clips = sorted((RAVDESS / "Actor_20").glob("*.wav"))
    audio, total = [], 0
    for clip in clips:
        y, rate = sf.read(clip, dtype="float32")
        audio.append(y.mean(axis=1) if y.ndim > 1 else y)  # a few RAVDESS clips are stereo
        total += len(y)
        if total >= seconds * rate:
            break
    signal = np.concatenate(audio)[: int(seconds * rate)]
    loaded = cached_bundle(bundle)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.wav"
        sf.write(path, signal, rate)
        list(stream_file_windows(path, bundle=loaded, config=loaded.config))  # warm-up (numba, filterbanks)
        started = time.process_time()
        batches = list(stream_file_windows(path, bundle=loaded, config=loaded.config))
        out = {"features": 1000 * (time.process_time() - started) / seconds}
    vectors = np.concatenate([b.vectors for b in batches])
    frames = batch_frames(batches)
    for framework in ("keras", "sklearn", "cnn"):
        window_proba(loaded, vectors, framework=framework, frames=frames)
        started, repeats = time.process_time(), 5
        for _ in range(repeats):
            window_proba(loaded, vectors, framework=framework, frames=frames)
        out[framework] = 1000 * (time.process_time() - started) / repeats / seconds
    out["windows"] = len(vectors)
    return out


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.1f}" if len(values) == 1 else f"{np.mean(values):.1f} +- {np.std(values):.1f}"


def verdict(ok: bool) -> str:
    return "MET   " if ok else "MISSED"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "output" / "transfer",
                        help="features, bundles and results (reused when present) [default: output/transfer]")
    parser.add_argument("--seeds", default="42,43,44", help="comma-separated training seeds [default: 42,43,44]")
    parser.add_argument("--mixes", default=",".join(MIXES), help=f"training mixes [default: {','.join(MIXES)}]")
    parser.add_argument("--seeds-for", action="append", default=[], metavar="MIX=SEEDS",
                        help="other seeds for one mix, e.g. ravdess+emovo=42 (repeatable)")
    parser.add_argument("--calls", action="store_true", help="also accuracy inside calls (the first seed's bundles)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    mixes = [m for m in args.mixes.split(",") if m]
    if unknown := [m for m in mixes if m not in MIXES]:
        parser.error(f"unknown mix {unknown[0]!r}; use {', '.join(MIXES)}")
    mix_seeds = {m: seeds for m in mixes}
    for entry in args.seeds_for:
        mix, _, listed = entry.partition("=")
        if mix not in mix_seeds or not listed:
            parser.error(f"--seeds-for {entry!r}: use MIX=SEEDS with MIX one of {', '.join(mixes)}")
        mix_seeds[mix] = [int(s) for s in listed.split(",")]
    for source in (RAVDESS, EMOVO):
        if not source.is_dir():
            sys.exit(f"not found: {source}")
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"transfer benchmark: seeds {seeds}, mixes {mixes}, work {args.work}")
    features = extract(args.work)
    report: dict[str, Any] = {"seeds": mix_seeds, "augment": AUGMENT, "models": MODELS, "mixes": {}}
    for mix in mixes:
        per_seed = [evaluate(train(args.work, features, mix, seed), features, mix) for seed in mix_seeds[mix]]
        report["mixes"][mix] = {"seeds": per_seed}
        if args.calls:
            report["mixes"][mix]["calls"] = calls(args.work, args.work / f"model-{mix}-seed{mix_seeds[mix][0]}")
    report["cost_ms_per_s"] = cost(args.work / f"model-{mixes[0]}-seed{mix_seeds[mixes[0]][0]}")

    print(f"\naccuracy of the held-out originals, %, mean +- std over the seeds {mix_seeds}")
    print("| training mix | model family | RAVDESS 17-20 (8) | EMOVO, restricted to its 7 | EMOVO, all 8 |")
    print("| --- | --- | --- | --- | --- |")
    for mix in mixes:
        rows = report["mixes"][mix]["seeds"][0]["rows"]
        emovo = "all 6 speakers" if MIXES[mix]["emovo_actors"] is None else "f3, m3"
        for family in FAMILIES:
            cells = [mean_std([s[k][family] for s in report["mixes"][mix]["seeds"]])
                     for k in ("ravdess", "emovo7", "emovo8")]
            print(f"| {mix} | {family} | {' | '.join(cells)} |")
        print(f"| ({mix}: {rows['ravdess']} RAVDESS clips; EMOVO {emovo}, {rows['emovo']} clips) | | | | |")
    if args.calls:
        print("\nper clip inside calls of actors 17-20 (keras+sklearn+cnn, the bundles' `both`; first seed), %")
        print("| training mix | format | global | --normalize file | clips as files |")
        print("| --- | --- | --- | --- | --- |")
        for mix in mixes:
            for key, row in report["mixes"][mix]["calls"].items():
                cells = f"{row['calls_speech']:.1f} | {row['normalized']:.1f} | {row['separate']:.1f}"
                print(f"| {mix} | {key} | {cells} |")
    c = report["cost_ms_per_s"]
    print(f"\nCPU ms per second of audio, one thread ({c['windows']} windows of a 60 s signal): rich features "
          f"{c['features']:.2f}; keras {c['keras']:.3f}; sklearn {c['sklearn']:.3f}; cnn {c['cnn']:.3f}")
    for family, members in FAMILIES.items():
        ms = c["features"] + sum(c[m] for m in members)
        print(f"  {family:18s} features + networks {ms:.2f} ms/s = {1000 / ms:,.0f}x realtime per core")

    best = "keras+sklearn+cnn"
    first = report["mixes"][mixes[0]]["seeds"]
    print("\ntargets (issue 15)")
    ravdess = float(np.mean([s["ravdess"][best] for s in first]))
    print(f"  {verdict(ravdess >= TARGETS['ravdess'])}  RAVDESS never heard, {best}, trained on RAVDESS: "
          f"{ravdess:.1f}% (>= {TARGETS['ravdess']:.0f}%)")
    if "ravdess" in mixes:
        emovo7 = float(np.mean([s["emovo7"][best] for s in report["mixes"]["ravdess"]["seeds"]]))
        print(f"  {verdict(emovo7 >= TARGETS['emovo7'])}  RAVDESS-trained on EMOVO, restricted to 7: {emovo7:.1f}% "
              f"(>= {TARGETS['emovo7']:.0f}%)")
    if args.calls:
        for mix in mixes:
            table = report["mixes"][mix]["calls"]
            low, low_norm = min(r["calls_speech"] for r in table.values()), min(r["normalized"] for r in table.values())
            print(f"  {verdict(low >= TARGETS['calls_global'])}  {mix}: calls, global, lowest format {low:.1f}% "
                  f"(>= {TARGETS['calls_global']:.0f}%)")
            print(f"  {verdict(low_norm >= TARGETS['calls_normalized'])}  {mix}: calls, --normalize file, lowest "
                  f"format {low_norm:.1f}% (>= {TARGETS['calls_normalized']:.0f}%)")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

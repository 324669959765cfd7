"""Transfer: the yardstick every model choice is made on, measured with the product's own commands.

Run from the project root (needs ../shared/data/ravdess and ../shared/data/emovo):

    .venv/bin/python benchmarks/transfer.py [--work output/transfer] [--seeds 1,2,3]
        [--stages dev,final] [--candidate NAME='--set k=v ...'] [--calls]

A model that wins on RAVDESS actors alone may lose everywhere else (RAVDESS is two sentences in
one studio), so every choice -- features, model size, augmentation, ensemble members and weights --
is made on how models carry to voices, languages and recording conditions they never met:

* **dev** (choices are made here):
  - ``dev-mix``: trained on RAVDESS actors 1-12 and EMOVO f1, m1 (101, 104); tested on RAVDESS
    13-16, clean and in conditions made from their clips (:data:`CONDITIONS`: white, pink and babble
    noise at 5-10 dB SNR, mains hum, a reverberant room, 8 kHz mu-law, -20 dB, peak-normalised),
    and on EMOVO f2, m2 (102, 105), unseen speakers of a corpus it heard;
  - ``dev-loco``: trained on RAVDESS 1-16 only, tested on EMOVO f1, f2, m1, m2: a corpus, language
    and sentences never heard (leave one corpus out).
  The yardstick is the mean of four figures: RAVDESS 13-16 clean, the mean over its conditions,
  EMOVO 102/105, EMOVO-dev LOCO.
* **final** (reported last, never tuned on):
  - ``final-mix``: RAVDESS 1-16 + EMOVO f1, f2, m1, m2; tested on RAVDESS 17-20 (clean and in the
    conditions) and EMOVO f3, m3 (103, 106);
  - ``final-loco``: RAVDESS 1-20 only; tested on all of EMOVO (and f3, m3 alone).

EMOVO figures take the argmax over its 7 classes (it has no calm). A clip is scored as ``score``
scores a file: the mean of its speech windows' probabilities. Per bundle (``ser-batch train
--models keras,sklearn,cnn``), every model family and every mix of them is scored from the same
probabilities; the mixes' weights are chosen on the dev yardstick and then applied, unchanged, to
the final stage. Each candidate (``--candidate NAME='--set cnn.width=64 ...'``, repeatable; default:
the configuration as it is) is trained with each seed. ``--archive`` also scores with
``normalize archive`` (each test set z-scored by its own speech windows' statistics).

Last, the CPU cost of each part in one scoring process on one thread (ms per second of audio).
"""

from __future__ import annotations

import os

# One thread, as in a one-CPU Ray worker: the cost figures are per core.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import hashlib
import itertools
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
RATE = 16000
#: The copies every bundle trains on (telephone lines, speed).
AUGMENT = "telephone-pcm,telephone-ulaw,telephone-alaw-band,tempo-0.9,tempo-1.1"
MODELS = ("keras", "sklearn", "cnn")
#: Test conditions made from held-out RAVDESS clips (name -> how); ``clean`` is the clips themselves.
CONDITIONS = ("white-10", "pink-5", "babble-5", "hum-10", "reverb-0.8", "ulaw8k", "quiet-20", "peak")
CONDITION_ACTORS = tuple(range(13, 21))
STAGES = {
    "dev": {
        "dev-mix": {"features": ["ravdess", "emovo"], "test_actors": [*range(13, 21), 102, 103, 105, 106],
                    "tests": {"R13-16": ("ravdess", [13, 14, 15, 16], True), "E102,105": ("emovo", [102, 105], False)}},
        "dev-loco": {"features": ["ravdess"], "test_actors": [17, 18, 19, 20],
                     "tests": {"E-dev (LOCO)": ("emovo", [101, 102, 104, 105], False)}},
    },
    "final": {
        "final-mix": {"features": ["ravdess", "emovo"], "test_actors": [17, 18, 19, 20, 103, 106],
                      "tests": {"R17-20": ("ravdess", [17, 18, 19, 20], True),
                                "E103,106": ("emovo", [103, 106], False)}},
        "final-loco": {"features": ["ravdess"], "test_actors": None,
                       "tests": {"E-all (LOCO)": ("emovo", [101, 102, 103, 104, 105, 106], False),
                                 "E103,106 (LOCO)": ("emovo", [103, 106], False)}},
    },
}
#: Mixes scored from each bundle's models: every family alone, and weighted mixes (weights on a grid).
WEIGHT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


def run(command: list[str]) -> float:
    """Run a ser-batch command; its wall time in seconds (exit on failure, with its stderr)."""
    started = time.perf_counter()
    done = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"failed (exit {done.returncode}): {shlex.join(command)}\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------- data


def _rng(*parts: str) -> np.random.Generator:
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def write_conditions(folder: Path) -> None:
    """The held-out RAVDESS clips (actors 13-20) in every condition, as audio files named as RAVDESS
    names them (so their labels and actors come from the names): ``folder/<condition>/Actor_NN/*``."""
    import soundfile as sf

    from ser_batch.audio import conditions
    from ser_batch.audio.decode import load_audio
    from ser_batch.audio.telephony import telephone_copy

    clips = sorted(p for a in CONDITION_ACTORS for p in (RAVDESS / f"Actor_{a:02d}").glob("*.wav"))
    audio = {p: load_audio(p, sample_rate=RATE)[0] for p in clips}
    for name in CONDITIONS:
        target = folder / name
        if (target / ".done").is_file():
            continue
        for clip, y in audio.items():
            rng = _rng(clip.name, name)
            kind, _, value = name.partition("-")
            rate = RATE
            if kind in ("white", "pink", "hum"):
                out = conditions.add_noise(y, float(value), rng, sample_rate=RATE, kind=kind)
            elif kind == "babble":  # four other held-out speakers of the same group talking
                actor = int(clip.parent.name[-2:])
                others = [p for p in clips if int(p.parent.name[-2:]) != actor]
                picks = rng.choice(len(others), size=4, replace=False)
                out = conditions.add_noise(y, float(value), rng, sample_rate=RATE, kind="babble",
                                           sources=[audio[others[i]] for i in picks])
            elif kind == "reverb":
                out = conditions.reverberate(y, float(value), rng, sample_rate=RATE)
            elif kind == "quiet":
                out = conditions.gain(y, -float(value))
            elif kind == "peak":
                out = (0.99 * y / max(float(np.abs(y).max()), 1e-9)).astype(np.float32)
            else:  # ulaw8k: a real 8 kHz mu-law file (scored by the narrow-band models)
                import soxr

                out, rate = soxr.resample(telephone_copy(y, RATE, codec="pcm"), RATE, 8000), 8000
            path = target / clip.parent.name / clip.name
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, np.asarray(out, dtype=np.float32), rate, subtype="ULAW" if kind == "ulaw8k" else "PCM_16")
        (target / ".done").write_text("")


def extract_all(work: Path) -> dict[str, Path]:
    """Features of RAVDESS and EMOVO (with the training copies) and of every condition folder."""
    folders = {"ravdess": work / "features-ravdess", "emovo": work / "features-emovo"}
    jobs = [("ravdess", RAVDESS, ["--augment", AUGMENT]), ("emovo", EMOVO, ["--augment", AUGMENT])]
    write_conditions(work / "conditions")
    for name in CONDITIONS:
        folders[name] = work / f"features-{name}"
        jobs.append((name, work / "conditions" / name, []))
    for name, source, extra in jobs:
        if (folders[name] / "_manifest.json").is_file():
            continue
        wall = run([*SER, "extract", str(source), "--out", str(folders[name]), "--recipe", "rich",
                    "--corpus", "ravdess" if name in CONDITIONS else name, *extra, "--overwrite", "--no-progress"])
        print(f"  features {name}: extracted in {wall:.0f} s", flush=True)
    return folders


# ------------------------------------------------------------------------------ training


def train(work: Path, features: dict[str, Path], mix: str, spec: dict[str, Any], seed: int, candidate: str,
          settings: list[str], *, normalized: bool) -> Path:
    out = work / "bundles" / candidate / (f"{mix}-seed{seed}" + ("-normalized" if normalized else ""))
    if (out / "manifest.json").is_file():
        return out
    held = ["--test-actors", ",".join(map(str, spec["test_actors"]))] if spec["test_actors"] else ["--split", "none"]
    command = [*SER, "train", *(str(features[f]) for f in spec["features"]), "--out", str(out),
               "--models", ",".join(MODELS), "--seed", str(seed), *held, "--overwrite",
               *(["--normalize", "speaker"] if normalized else []), "--set", "train.export_native=false", *settings]
    wall = run(command)
    print(f"  {candidate} {mix} seed {seed}: trained in {wall:.0f} s", flush=True)
    return out


# ------------------------------------------------------------------------------- scoring


def probabilities(bundle: Path, features: Path, actors: list[int], *, normalize: str = "none") -> dict[str, Any]:
    """Every model's probabilities of the held-out originals of ``actors`` (evaluate's rows), scored as
    they are or normalised (``speaker``: each actor by its own windows, as ``--normalize file`` does a
    call; ``archive``: all of them together)."""
    from ser_batch.pipeline.evaluate import evaluate_bundle

    result = evaluate_bundle(bundle, features, actors=actors, probabilities=True, normalize=normalize)
    return {"classes": result["classes"]["classes"], "labels": result["labels"].astype(str),
            "probabilities": {m: result["probabilities"][m] for m in MODELS if m in result["probabilities"]}}


def mixes() -> list[dict[str, float]]:
    """Every family alone and every weighted mix on :data:`WEIGHT_GRID` (weights summing to 1)."""
    out = []
    for weights in itertools.product(WEIGHT_GRID, repeat=len(MODELS)):
        if abs(sum(weights) - 1.0) < 1e-9:
            out.append({m: w for m, w in zip(MODELS, weights) if w > 0})
    return out


def mix_name(weights: dict[str, float]) -> str:
    if len(weights) == 1:
        return next(iter(weights))
    return "+".join(f"{m}:{w:g}" for m, w in weights.items())


def accuracy(scored: dict[str, Any], weights: dict[str, float], *, restrict_to_present: bool) -> float:
    from ser_batch.models.classes import restrict

    classes, labels = scored["classes"], scored["labels"]
    proba = sum(w * scored["probabilities"][m] for m, w in weights.items())
    keep = sorted(set(labels), key=classes.index) if restrict_to_present else None
    pred = np.asarray(keep or classes)[np.argmax(restrict(proba, classes, keep), axis=1)]
    return 100.0 * float(np.mean(pred == labels))


def score_stage(work: Path, features: dict[str, Path], stage: str, candidate: str, settings: list[str],
                seeds: list[int], *, archive: bool) -> dict[str, Any]:
    """{mix of models: {test: [accuracy per seed]}} for one candidate and stage."""
    table: dict[str, dict[str, list[float]]] = {}
    for mix, spec in STAGES[stage].items():
        for seed in seeds:
            bundle = train(work, features, mix, spec, seed, candidate, settings, normalized=archive)
            for test, (corpus, actors, conditions) in spec["tests"].items():
                folders = [("clean", features[corpus])] + ([(c, features[c]) for c in CONDITIONS] if conditions else [])
                for variant in ("none", "archive", "speaker") if archive else ("none",):
                    for condition, folder in folders:
                        scored = probabilities(bundle, folder, actors, normalize=variant)
                        key = f"{test}/{condition}" + ("" if variant == "none" else f" +{variant}")
                        for weights in mixes():
                            table.setdefault(mix_name(weights), {}).setdefault(key, []).append(
                                accuracy(scored, weights, restrict_to_present=corpus == "emovo"))
    return table


def _condition(key: str) -> str:
    """The condition of a result key ``test/condition[ +variant]``."""
    return key.split("/")[1].split(" ")[0]


def yardstick(row: dict[str, list[float]]) -> float:
    """A stage's one figure for a mix (scored as is, not normalised): the mean of its clean figures
    (RAVDESS and EMOVO) and of the mean over the RAVDESS conditions."""
    plain = {k: v for k, v in row.items() if " +" not in k}
    parts = [float(np.mean(v)) for k, v in plain.items() if _condition(k) == "clean"]
    conditions = [float(np.mean(v)) for k, v in plain.items() if _condition(k) in CONDITIONS]
    if conditions:
        parts.append(float(np.mean(conditions)))
    return float(np.mean(parts))


def cell(values: list[float]) -> str:
    return f"{np.mean(values):.1f}" if len(values) == 1 else f"{np.mean(values):.1f} +- {np.std(values):.1f}"


def print_stage(name: str, tables: dict[str, dict[str, dict[str, list[float]]]],
                chosen: list[str] | None = None) -> list[str]:
    """Print each candidate's model families, the best mixes (and ``chosen``), per condition; returns
    each candidate's best mix on this stage's yardstick."""
    print(f"\n## {name}: accuracy %, mean +- std over seeds (clips as files; EMOVO restricted to its 7 classes)")
    best = []
    for candidate, table in tables.items():
        rows = sorted(table, key=lambda m: -yardstick(table[m]))
        shown = list(dict.fromkeys([m for m in rows if m in MODELS] + [m for m in (chosen or []) if m in table]
                                   + rows[:3]))
        keys = list(next(iter(table.values())))
        clean = [k for k in keys if _condition(k) == "clean"]
        conditions = [k for k in keys if _condition(k) in CONDITIONS and " +" not in k]
        print(f"\n### candidate {candidate}")
        print("| mix | " + " | ".join(clean) + " | conditions (mean) | yardstick |")
        print("| --- |" + " --- |" * (len(clean) + 2))
        for mix in shown:
            row = table[mix]
            mean_conditions = f"{np.mean([np.mean(row[k]) for k in conditions]):.1f}" if conditions else "-"
            print(f"| {mix} | " + " | ".join(cell(row[k]) for k in clean) + f" | {mean_conditions} | "
                  f"{yardstick(row):.1f} |")
        if conditions:
            print("\n| mix | " + " | ".join(_condition(k) for k in conditions) + " |")
            print("| --- |" + " --- |" * len(conditions))
            for mix in shown[:5]:
                print(f"| {mix} | " + " | ".join(f"{np.mean(table[mix][k]):.1f}" for k in conditions) + " |")
        best.append(rows[0])
    return best


# ---------------------------------------------------------------------------------- cost


def cost(bundle: Path, seconds: float = 60.0, repeats: int = 3) -> dict[str, float]:
    """CPU ms per audio second on one thread: decoding, the frames scoring computes for a cnn alone
    (lean) and for the dense models (every rich column, pitch, pooled vectors), and each network."""
    import soundfile as sf

    from ser_batch.audio.decode import iter_audio_blocks
    from ser_batch.config import Config
    from ser_batch.features.windows import stream_windows
    from ser_batch.inference.scoring import batch_frames, cached_bundle, window_proba

    clips = sorted((RAVDESS / "Actor_20").glob("*.wav"))
    parts, total = [], 0
    for clip in clips:
        y, rate = sf.read(clip, dtype="float32")
        parts.append(y.mean(axis=1) if y.ndim > 1 else y)
        total += len(y)
        if total >= seconds * rate:
            break
    signal = np.concatenate(parts)[: int(seconds * RATE)]
    loaded = cached_bundle(bundle)
    settings = loaded.config.features
    reach = loaded.frame_reach
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.flac"
        sf.write(path, signal, RATE)

        def timed(fn: Any) -> tuple[float, Any]:
            fn()  # warm-up: filterbanks, caches
            started = time.process_time()
            for _ in range(repeats):
                result = fn()
            return 1000 * (time.process_time() - started) / repeats / seconds, result

        out["decode"], _ = timed(lambda: [b for _, b in iter_audio_blocks(path, sample_rate=RATE, block_s=60.0)])
        blocks = [b for _, b in iter_audio_blocks(path, sample_rate=RATE, block_s=60.0)]
        out["frames_lean"], lean = timed(lambda: list(stream_windows(iter(blocks), sample_rate=RATE, config=settings,
                                                                     frame_reach=reach, vectors=False)))
        out["frames_rich"], rich = timed(lambda: list(stream_windows(iter(blocks), sample_rate=RATE, config=settings,
                                                                     frame_reach=reach, vectors=True)))
    vectors = np.concatenate([b.vectors for b in rich])
    frames = batch_frames(rich)
    for framework in loaded.frameworks:
        out[framework], _ = timed(lambda: window_proba(loaded, vectors, framework=framework, frames=frames))
    out["windows"] = float(len(vectors))
    del Config
    return out


# ---------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "output" / "transfer",
                        help="features, bundles and results, reused when present [default: output/transfer]")
    parser.add_argument("--seeds", default="1,2,3", help="training seeds [default: 1,2,3]")
    parser.add_argument("--stages", default="dev,final", help="dev, final or both [default: dev,final]")
    parser.add_argument("--candidate", action="append", default=[], metavar="NAME='--set k=v ...'",
                        help="a configuration to train (repeatable) [default: the configuration as it is]")
    parser.add_argument("--archive", action="store_true",
                        help="also score normalised: by each test set's statistics (normalize archive) and each "
                             "speaker's (normalize speaker, as --normalize file does a call)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--extract-only", action="store_true", help="only extract the features (kept in --work)")
    args = parser.parse_args()
    for source in (RAVDESS, EMOVO):
        if not source.is_dir():
            print(f"not found: {source}", file=sys.stderr)
            return 2
    seeds = [int(s) for s in args.seeds.split(",")]
    stages = [s for s in args.stages.split(",") if s]
    if unknown := [s for s in stages if s not in STAGES]:
        parser.error(f"unknown stage {unknown[0]!r}; use dev, final")
    candidates = {"as-is": []}
    if args.candidate:
        candidates = {}
        for entry in args.candidate:
            name, _, settings = entry.partition("=")
            candidates[name] = shlex.split(settings)
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"transfer benchmark: seeds {seeds}, stages {stages}, candidates {list(candidates)}, work {args.work}",
          flush=True)
    features = extract_all(args.work)
    if args.extract_only:
        return 0
    report: dict[str, Any] = {"seeds": seeds, "augment": AUGMENT, "candidates": candidates, "stages": {}}
    chosen: list[str] | None = None
    for stage in stages:
        tables = {name: score_stage(args.work, features, stage, name, settings, seeds, archive=args.archive)
                  for name, settings in candidates.items()}
        report["stages"][stage] = tables
        best = print_stage(stage, tables, chosen)
        if stage == "dev":
            chosen = best
            print(f"\nchosen on dev (the best mix of each candidate): {', '.join(best)}")
    first = next(iter(candidates))
    bundle = args.work / "bundles" / first / (f"{next(iter(STAGES[stages[-1]]))}-seed{seeds[0]}"
                                               + ("-normalized" if args.archive else ""))
    report["cost_ms_per_s"] = c = cost(bundle)
    print(f"\nCPU ms per second of audio, one thread ({int(c['windows'])} windows of a 60 s signal): decode "
          f"{c['decode']:.3f}; frames for a cnn alone {c['frames_lean']:.3f}; all rich frames, pitch and vectors "
          f"{c['frames_rich']:.3f}; " + "; ".join(f"{m} {c[m]:.3f}" for m in MODELS if m in c))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

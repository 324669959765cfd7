"""Where a scoring worker's CPU goes: a per-stage table in CPU milliseconds per second of audio.

Run from the project root::

    .venv/bin/python benchmarks/stages.py [--baseline REF] [--repeats 3] [--minutes 10] [--model DIR] [--json F]

In one process, on one thread (BLAS and OpenMP limited with ``threadpoolctl``), the score job's
worker function (:func:`ser_batch.pipeline.score.score_shard`, no Ray) scores an archive built
from the RAVDESS 16-kHz clips (generated speech without ../shared): a ``--minutes`` long 16 kHz
FLAC file (scored block by block as it streams, as ``score`` does for files over 2 minutes),
a 90 s 8 kHz mu-law call and 40 clips as separate files (scored in one batch per shard, as
``score`` does for short files). The bundle is the default one (the pretrained bundle, every
model of it: ``score.framework = "both"``); its load is timed apart.

Each stage is a function of the scoring path wrapped with a timer of the thread's CPU time,
**exclusive** of the stages it calls (the STFT is not counted again in the frame features).
"other" is the worker's total minus the stages: the glue between them. A pass scores the
archive into a fresh output folder; the first pass warms the caches and is not counted; each
stage keeps its median over ``--repeats`` passes.

With ``--baseline REF`` the same runs are made on the tree of a git ref (``git archive``) in a
second process, alternating with this tree, and the table gets a column per tree and their
ratio; stages whose function the baseline does not have show "-" (``librosa.yin`` is its own
stage for trees that still call it).

A script, not a test: exits 0 whatever the figures, 2 when the bundle is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import RAVDESS, ROOT, checkout, generated_speech, run_json  # noqa: E402

#: (stage, module, attribute): the functions timed. ``Class.method`` attributes wrap the method.
#: Order = the table's order (the scoring path's order).
STAGES: list[tuple[str, str, str]] = [
    ("decode (soundfile)", "soundfile", "SoundFile.read"),
    ("resample (soxr)", "soxr", "resample"),
    ("resample (soxr)", "soxr", "ResampleStream.resample_chunk"),
    ("STFT |X|", "ser_batch.features.fast", "stft_magnitude"),
    ("mel, chroma, contrast, mfcc", "ser_batch.features.fast", "spectral_frames"),
    ("other frame columns", "ser_batch.features.rich", "rich_segment_frames"),
    ("lean frame columns (cnn alone)", "ser_batch.features.rich", "lean_segment_frames"),
    ("pitch (yin)", "ser_batch.features.pitch", "yin"),
    ("pitch (yin)", "librosa", "yin"),
    ("speech detector", "ser_batch.features.windows", "judge_speech"),
    ("pooling", "ser_batch.features.windows", "pool_windows"),
    ("cnn input frames", "ser_batch.features.windows", "_frames_of"),
    ("cnn input frames", "ser_batch.features.windows", "_stream_frames"),
    ("cnn normalisation", "ser_batch.features.melframes", "normalize_frames"),
    ("window glue", "ser_batch.features.windows", "stream_windows"),
    ("model: keras", "ser_batch.models.networks", "DenseNetwork.predict_proba"),
    ("model: cnn", "ser_batch.models.sequence", "SequenceNetwork.predict_proba"),
    ("model: cnn", "ser_batch.models.sequence", "StreamNetwork.predict_proba"),
    ("model: cnn", "ser_batch.models.window_cnn", "WindowNetwork.predict_proba"),
    ("tables (Arrow)", "ser_batch.pipeline.score_tables", "ScoreTables.segments"),
    ("tables (Arrow)", "ser_batch.pipeline.score_tables", "ScoreTables.segments_of"),
    ("tables (Arrow)", "ser_batch.pipeline.score_tables", "ScoreTables.files"),
    ("Parquet writing", "ser_batch.data.score_folder", "write_part"),
]
#: keras and sklearn are both DenseNetwork: told apart by the instance.
DENSE_NAMES = {"model: keras": "keras", "model: sklearn": "sklearn"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--baseline", default=None, help="git ref to compare with (its tree, same runs)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per tree (median per stage)")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the long 16 kHz file")
    parser.add_argument("--model", type=Path, default=None, help="bundle (default: the pretrained one)")
    parser.add_argument("--data", type=Path, default=RAVDESS, help="RAVDESS 16-kHz WAVs")
    parser.add_argument("--framework", default="both",
                        help="score.framework: both (the default: every model), keras, sklearn or cnn")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)  # archive folder
    parser.add_argument("--passes", type=int, default=1, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------- the archive


def build_archive(folder: Path, *, data: Path, minutes: float) -> dict[str, Any]:
    """The long FLAC file, the mu-law call and 40 clips; returns what the child needs."""
    import numpy as np
    import soundfile as sf
    import soxr

    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    clips: list[np.ndarray] = []
    if data.is_dir():
        files = sorted(data.rglob("*.wav"))
        picked = [files[i] for i in rng.choice(len(files), size=min(120, len(files)), replace=False)]
        # Mono (a few RAVDESS files are stereo).
        clips = [sf.read(str(p), dtype="float32", always_2d=True)[0].mean(axis=1, dtype=np.float32) for p in picked]
    else:
        clips = [generated_speech(16_000, 3.0, seed=k % 12) for k in range(120)]

    def join(pieces: list[np.ndarray], seconds: float) -> np.ndarray:
        out, total, i = [], 0, 0
        while total < seconds * 16000:
            gap = (0.002 * rng.standard_normal(int(rng.uniform(0.4, 1.6) * 16000))).astype(np.float32)
            out += [pieces[i % len(pieces)], gap]
            total += len(pieces[i % len(pieces)]) + len(gap)
            i += 1
        return np.concatenate(out)[: int(seconds * 16000)]

    long = join(clips, minutes * 60)
    sf.write(str(folder / "long.flac"), long, 16000, format="FLAC", subtype="PCM_16")
    call = soxr.resample(join(clips[::-1], 90.0), 16000, 8000)
    sf.write(str(folder / "call_ulaw.wav"), call, 8000, format="WAV", subtype="ULAW")
    (folder / "clips").mkdir(exist_ok=True)
    for i, clip in enumerate(clips[:40]):
        sf.write(str(folder / "clips" / f"clip{i:02d}.wav"), clip, 16000, subtype="PCM_16")
    return {"source": "RAVDESS" if data.is_dir() else "generated speech"}


# ---------------------------------------------------------------------- the child: timed passes


class StageTimer:
    """Exclusive thread-CPU time per stage of wrapped functions (a stack of open calls)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.stack: list[list[float]] = []  # per open call: [child time]

    def wrap(self, stage: str | Callable[..., str], function: Callable[..., Any]) -> Callable[..., Any]:
        import functools

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.stack.append([0.0])
            t0 = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                spent = time.thread_time() - t0
                children = self.stack.pop()[0]
                name = stage(*args) if callable(stage) else stage
                self.totals[name] = self.totals.get(name, 0.0) + spent - children
                if self.stack:
                    self.stack[-1][0] += spent

        return timed


def _dense_stage(network: Any, *args: Any) -> str:
    return getattr(network, "_stage_name", "model: keras")


def install(timer: StageTimer) -> list[str]:
    """Wrap every stage function this tree has; returns the stages found."""
    import importlib

    found = []
    for stage, module_name, attribute in STAGES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        owner: Any = module
        *path, name = attribute.split(".")
        try:
            for part in path:
                owner = getattr(owner, part)
            function = getattr(owner, name)
        except AttributeError:
            continue
        label: Any = _dense_stage if attribute == "DenseNetwork.predict_proba" else stage
        setattr(owner, name, timer.wrap(label, function))
        found += list(DENSE_NAMES) if attribute == "DenseNetwork.predict_proba" else [stage]
        # Modules that imported the function by name get the wrapped one too.
        if not path:
            for other in list(sys.modules.values()):
                if getattr(other, "__name__", "").startswith("ser_batch") and getattr(other, name, None) is function:
                    setattr(other, name, getattr(owner, name))
    return sorted(set(found), key=_order)


def child(folder: Path, *, model: Path | None, passes: int, framework: str = "both") -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    from ser_batch.config import Config
    from ser_batch.pipeline import score
    from ser_batch.pipeline.score_plan import Shard, Unit

    timer = StageTimer()
    found = install(timer)
    from ser_batch.audio.decode import probe_audio
    from ser_batch.inference import scoring
    from ser_batch.models.bundle import default_bundle_path, load_bundle

    config = Config().replace(score={"framework": framework})
    bundle_path = model or default_bundle_path()
    bid = scoring.bundle_id(load_bundle(Path(bundle_path), verify=False))
    t0 = time.thread_time()
    bundle = scoring.cached_bundle(str(bundle_path), bid)  # the one score_shard gets from its cache
    load_s = time.thread_time() - t0
    for name in ("keras", "sklearn"):
        if name in bundle.frameworks:
            for set_name in bundle.model_sets:
                try:
                    bundle.model(name, set_name)._stage_name = f"model: {name}"
                except Exception:  # noqa: BLE001 - a set without that model
                    pass
    files = [folder / "long.flac", folder / "call_ulaw.wav"] + sorted((folder / "clips").glob("*.wav"))
    units = []
    for path in files:
        info = probe_audio(path)
        st = path.stat()
        units.append(Unit(path=path.name, source=str(path), size=st.st_size, mtime=st.st_mtime,
                          duration_s=info.duration_s))
    audio_s = sum(u.duration_s for u in units)
    score_units = _shard_scorer(score, config, bundle, bundle_path=str(bundle_path), bundle_id=bid)
    runs = []
    for _ in range(passes + 1):
        out = Path(tempfile.mkdtemp(prefix="stages-out-", dir=folder))
        timer.totals.clear()
        t0 = time.thread_time()
        for i, unit in enumerate(units[:2]):  # the long file and the call: one shard each
            score_units(Shard(units=(unit,), key=f"s{i}"), out)
        score_units(Shard(units=tuple(units[2:]), key="clips"), out)
        total = time.thread_time() - t0
        runs.append({"total_s": total, "stages": dict(timer.totals)})
    return {"audio_s": audio_s, "bundle_load_s": load_s, "found": found, "runs": runs[1:]}


def _shard_scorer(score: Any, config: Any, bundle: Any, *, bundle_path: str, bundle_id: str) -> Any:
    """``score(shard, out)``: what a score task does with a shard, in the tree under test (its run
    context since the shard-job engine, the plain task function before)."""
    try:
        from ser_batch.pipeline.score_shard import ScoreRun
    except ImportError:  # a tree before the engine (--baseline)
        from ser_batch.config import config_to_dict

        return lambda shard, out: score.score_shard(shard, out=str(out), bundle_path=bundle_path, bundle_id=bundle_id,
                                                    config=config_to_dict(config), settings_key="k")
    frame_s = bundle.config.features.hop_length / bundle.config.audio.sample_rate
    run = ScoreRun("", config, bundle_path, bundle_id, tuple(bundle.classes), "k", frame_s, score.bundle_hop(bundle))
    return lambda shard, out: replace(run, out=str(out)).run_shard(shard)


# ---------------------------------------------------------------------- the driver


def run_child(tree: Path, folder: Path, *, model: Path | None, passes: int, framework: str) -> dict[str, Any]:
    command = [sys.executable, str(ROOT / "benchmarks" / "stages.py"), "--child", str(folder),
               "--passes", str(passes), "--framework", framework]
    if model is not None:
        command += ["--model", str(model)]
    return run_json(command, tree=tree, env={"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    runs = [r for result in results for r in result["runs"]]
    audio_s = results[0]["audio_s"]
    names = sorted({s for r in runs for s in r["stages"]}, key=_order)
    stages = {n: 1000 * statistics.median(r["stages"].get(n, 0.0) for r in runs) / audio_s for n in names}
    total = 1000 * statistics.median(r["total_s"] for r in runs) / audio_s
    stages["other"] = total - sum(stages.values())
    return {"audio_s": audio_s, "ms_per_s": stages, "total_ms_per_s": total, "realtime_per_core": 1000 / total,
            "bundle_load_s": statistics.median(r["bundle_load_s"] for r in results),
            "found": results[0]["found"]}


def _order(stage: str) -> int:
    order = list(dict.fromkeys([s for s, _, _ in STAGES[:12]] + ["model: keras", "model: sklearn"]
                               + [s for s, _, _ in STAGES[12:]]))
    return order.index(stage) if stage in order else len(order)


def print_table(columns: dict[str, dict[str, Any]]) -> None:
    names = list(columns)
    stages = sorted({s for c in columns.values() for s in c["ms_per_s"]}, key=_order)
    head = f"{'stage (CPU ms per audio second)':34s}" + "".join(f"{n:>14s}" for n in names)
    if len(names) == 2:
        head += f"{'ratio':>9s}"
    print(head)
    for stage in stages:
        cells = []
        for n in names:
            c = columns[n]
            known = stage == "other" or stage in c["found"]
            cells.append(f"{c['ms_per_s'].get(stage, 0.0):14.4f}" if known else f"{'-':>14s}")
        line = f"{stage:34s}" + "".join(cells)
        if len(names) == 2:
            a, b = (columns[n]["ms_per_s"].get(stage, 0.0) for n in names)
            line += f"{a / b:9.2f}x" if b > 1e-4 and a > 1e-4 else f"{'':9s}"
        print(line)
    totals = [columns[n]["total_ms_per_s"] for n in names]
    print(f"{'total':34s}" + "".join(f"{t:14.4f}" for t in totals)
          + (f"{totals[0] / totals[1]:9.2f}x" if len(names) == 2 else ""))
    print(f"{'= realtime per core (warm)':34s}" + "".join(f"{1000 / t:13.0f}x" for t in totals))
    print(f"{'bundle load (CPU s, once)':34s}" + "".join(f"{columns[n]['bundle_load_s']:14.3f}" for n in names))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child, model=args.model, passes=args.passes, framework=args.framework)))
        return 0
    if args.model is not None and not (args.model / "manifest.json").is_file():
        print(f"error: no bundle at {args.model}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ser-stages-") as tmp:
        work = Path(tmp)
        meta = build_archive(work / "archive", data=args.data, minutes=args.minutes)
        trees = {"this tree": ROOT}
        if args.baseline:
            trees = {args.baseline: checkout(args.baseline, work / "baseline"), "this tree": ROOT}
        results: dict[str, list[dict[str, Any]]] = {n: [] for n in trees}
        for _ in range(args.repeats):
            for name, tree in trees.items():  # alternating, so load drift hits both
                results[name].append(run_child(tree, work / "archive", model=args.model, passes=1,
                                               framework=args.framework))
        columns = {n: summarise(r) for n, r in results.items()}
    audio = columns["this tree"]["audio_s"]
    print(f"archive: {audio / 60:.1f} min of {meta['source']} (a {args.minutes:g}-min 16 kHz FLAC file, a 90 s "
          f"8 kHz mu-law call, 40 clips); --framework {args.framework}; one thread; median of {args.repeats} "
          f"passes after a warm one; load average {os.getloadavg()[0]:.1f}")
    print_table(columns)
    if args.json:
        args.json.write_text(json.dumps({"columns": columns, "archive": meta}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Two corpora with different class sets, end to end through the CLI: extract each (corpus from
labels.csv and from the folder name), train on both with ``--split corpus``, evaluate per corpus
with the argmax restricted to the held-out corpus's classes, and score with ``--classes``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
import soundfile as sf
from click.testing import CliRunner

from ser_batch.cli import main

#: A class's voice: its pitch and syllable rate, so that the networks have something to learn.
VOICES = {"angry": (260.0, 6.0), "happy": (210.0, 5.0), "calm": (110.0, 2.5), "sad": (140.0, 3.0)}
FAST = ["--set", "keras.epochs=10", "--set", "sklearn.max_iter=40", "--set", "cnn.epochs=3",
        "--set", "train.export_native=false"]


def _clip(path: Path, label: str, seed: int) -> None:
    f0, rate = VOICES[label]
    sr, n = 16_000, 32_000
    t = np.arange(n) / sr
    rng = np.random.default_rng(seed)
    f0 = f0 * (1 + 0.03 * rng.standard_normal()) * (1 + 0.08 * np.sin(2 * np.pi * 1.3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 10))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * rate * t - np.pi / 2))
    y = 0.2 * envelope * voiced + 0.003 * rng.standard_normal(n)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, y.astype(np.float32), sr)


def _corpus(root: Path, classes: list[str], actors: list[int], *, corpus_column: str | None) -> Path:
    lines = ["path,label,actor" + (",corpus" if corpus_column else "")]
    for actor in actors:
        for label in classes:
            for take in range(3):
                rel = f"spk{actor}/{label}-{take}.wav"
                _clip(root / rel, label, seed=actor * 100 + take * 7 + len(label))
                lines.append(f"{rel},{label},{actor}" + (f",{corpus_column}" if corpus_column else ""))
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def two_corpora(tmp_path_factory: pytest.TempPathFactory, ray_session: None) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corpora")
    alpha = _corpus(root / "alpha_audio", ["angry", "happy", "calm", "sad"], [1, 2, 3], corpus_column="alpha")
    beta = _corpus(root / "beta", ["angry", "happy", "sad"], [101, 102], corpus_column=None)
    runner = CliRunner()
    out = {}
    for name, audio in (("alpha", alpha), ("beta", beta)):
        out[name] = root / f"features-{name}"
        result = runner.invoke(main, ["extract", str(audio), "--out", str(out[name]), "--recipe", "rich",
                                      "--num-cpus", "2"])
        assert result.exit_code == 0, result.output
    out["beta_audio"] = beta
    return out


def test_extract_keeps_the_corpus_of_each_set(two_corpora: dict[str, Path]) -> None:
    for name in ("alpha", "beta"):  # alpha from its labels.csv column, beta from the folder name
        table = ds.dataset(two_corpora[name], format="parquet").to_table(columns=["corpus", "emotion"]).to_pandas()
        assert set(table["corpus"]) == {name}
    beta = ds.dataset(two_corpora["beta"], format="parquet").to_table(columns=["emotion"]).to_pandas()
    assert "calm" not in set(beta["emotion"])


def test_train_on_two_corpora_holds_one_out_and_evaluates_it_restricted(two_corpora: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    runner = CliRunner()
    bundle = tmp_path / "bundle"
    result = runner.invoke(main, ["train", str(two_corpora["alpha"]), str(two_corpora["beta"]), "--out", str(bundle),
                                  "--split", "corpus", "--test-corpus", "beta", "--models", "keras,sklearn,cnn",
                                  "--num-cpus", "2", *FAST])
    assert result.exit_code == 0, result.output
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["split"]["kind"] == "corpus"
    assert "calm" in manifest["classes"]
    trained = json.loads((bundle / "training_files.json").read_text())
    assert trained and all("beta" not in str(entry) for entry in trained)  # the held-out corpus never trained

    report = tmp_path / "eval.json"
    result = runner.invoke(main, ["evaluate", str(bundle), str(two_corpora["beta"]), "--out", str(report)])
    assert result.exit_code == 0, result.output
    assert "restricted" in result.output and "no calm" in result.output
    metrics = json.loads(report.read_text())
    beta = metrics["corpora"]["beta"]
    assert beta["rows"] == 18 and beta["restricted_to"] == ["angry", "happy", "sad"]
    for model in ("keras", "sklearn", "cnn", "both"):
        restricted = beta["restricted"][model]
        assert set(restricted["per_class"]) <= {"angry", "happy", "sad"}
        # Restricting the argmax can only turn wrong answers into right ones for these rows.
        assert restricted["accuracy"] >= beta["models"][model]["accuracy"] - 1e-9

    # The same bundle scores the held-out corpus's audio over its classes only.
    scores = tmp_path / "scores"
    result = runner.invoke(main, ["score", str(two_corpora["beta_audio"]), "--out", str(scores), "--model",
                                  str(bundle), "--classes", "angry,happy,sad", "--num-cpus", "2"])
    assert result.exit_code == 0, result.output
    files = ds.dataset(scores / "files", format="parquet").to_table().to_pandas()
    columns = sorted(c for c in files.columns if c.startswith("p_"))
    assert columns == ["p_angry", "p_happy", "p_sad"]
    speech = files.dropna(subset=columns)
    assert len(speech) and np.allclose(speech[columns].sum(axis=1), 1.0, atol=1e-5)


def test_train_on_everything_with_cnn_and_float16_arrays(two_corpora: dict[str, Path], tmp_path: Path) -> None:
    """`make pretrained`'s shape: --split none (no test rows: the cnn had none to score and failed)
    with float16 array exports only, then predict with the bundle."""
    runner = CliRunner()
    bundle = tmp_path / "bundle"
    result = runner.invoke(main, ["train", str(two_corpora["alpha"]), str(two_corpora["beta"]), "--out", str(bundle),
                                  "--split", "none", "--models", "sklearn,cnn", "--num-cpus", "2", *FAST,
                                  "--set", "train.array_dtype=float16"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert sorted(manifest["models"]) == ["cnn", "sklearn"]
    assert (bundle / "cnn.npz").is_file() and not (bundle / "cnn.keras").exists()
    clip = next((two_corpora["beta_audio"] / "spk101").glob("angry-*.wav"))
    result = runner.invoke(main, ["predict", str(clip), "--model", str(bundle), "--json"])
    assert result.exit_code == 0, result.output
    assert {"cnn", "sklearn", "both"} <= set(json.loads(result.output)[0]["predictions"])

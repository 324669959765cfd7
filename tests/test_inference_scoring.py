"""Scoring single files (ser_batch/inference/scoring.py) with the shipped pretrained bundle.

That predictions equal the models applied to the extracted rows is tested in
tests/test_pipeline_train.py; the pretrained bundle's exact outputs in tests/test_models_bundle.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ser_batch.errors import BundleError
from ser_batch.inference.scoring import predict_files
from ser_batch.models import bundle as bundle_io

from conftest import write_audio

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pretrained() -> bundle_io.Bundle:
    return bundle_io.load_bundle()


def test_predict_files_gives_each_model_and_their_mean(pretrained: bundle_io.Bundle, tmp_path: Path) -> None:
    """``both`` shows each member of the bundle's ensemble (the pretrained one's: the cnn alone) and
    their weighted mean; every other model answers when named."""
    wav = write_audio(tmp_path / "speech.wav", duration_s=2.5, seed=4)
    [entry] = predict_files([wav], bundle=pretrained, framework="both")
    assert entry["error"] is None and entry["path"] == str(wav) and entry["duration_s"] == 2.5
    weights = pretrained.ensemble_weights()
    assert list(entry["predictions"]) == [*weights, "both"] == ["cnn", "both"]
    singles = {name: predict_files([wav], bundle=pretrained, framework=name)[0]["predictions"]
               for name in pretrained.frameworks}
    assert all(list(p) == [name] for name, p in singles.items())
    table = {name: np.array([p[name]["probabilities"][c] for c in pretrained.classes]) for name, p in singles.items()}
    both = np.array([entry["predictions"]["both"]["probabilities"][c] for c in pretrained.classes])
    np.testing.assert_allclose(both, sum(w * table[name] for name, w in weights.items()), atol=1e-4)
    assert singles["cnn"]["cnn"] == entry["predictions"]["cnn"]
    for name, pred in {**entry["predictions"], **{n: p[n] for n, p in singles.items()}}.items():
        probabilities = np.array([pred["probabilities"][c] for c in pretrained.classes])
        assert abs(probabilities.sum() - 1) < 1e-3
        assert pred["label"] == pretrained.classes[int(np.argmax(probabilities))]
    assert not np.allclose(table["keras"], table["sklearn"], atol=1e-3)  # two models, two answers


def test_unreadable_files_become_error_entries(pretrained: bundle_io.Bundle, tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("not audio\n" * 50)
    good = write_audio(tmp_path / "ok.flac", duration_s=1.0)
    results = predict_files([empty, good, text], bundle=pretrained, framework="sklearn")
    assert [r["error"] is None for r in results] == [False, True, False]
    assert results[0]["error"] == "empty file" and results[0]["predictions"] == {}
    assert "not an audio file" in results[2]["error"]
    assert results[1]["predictions"]["sklearn"]["label"] in pretrained.classes


def test_framework_errors_come_before_any_audio_is_read(pretrained: bundle_io.Bundle, tmp_path: Path) -> None:
    missing = tmp_path / "never-read.wav"
    with pytest.raises(BundleError, match="unknown framework 'svm'"):
        predict_files([missing], bundle=pretrained, framework="svm")

    # a bundle with only the scikit-learn model
    copy = tmp_path / "sklearn-only"
    shutil.copytree(pretrained.path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["models"] = ["sklearn"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    sklearn_only = bundle_io.load_bundle(copy)
    with pytest.raises(BundleError, match=r"has no keras model \(it has: sklearn\)"):
        predict_files([missing], bundle=sklearn_only, framework="keras")
    wav = write_audio(tmp_path / "speech.wav", duration_s=1.0)
    [entry] = predict_files([wav], bundle=sklearn_only, framework="both")
    assert list(entry["predictions"]) == ["sklearn"]  # no ensemble of one model


#: Scores its argv's files with the pretrained bundle in a fresh interpreter, then prints the
#: predictions and which of the heavy libraries the scoring path pulled in.
_FRESH_SCORER = r"""
import json, sys
import ser_batch.pipeline.score  # the module whose score_shard runs in every score worker
from ser_batch.inference.scoring import predict_files
from ser_batch.models.bundle import load_bundle
results = predict_files(sys.argv[1:], bundle=load_bundle(), framework="both")
print(json.dumps({"predictions": [r["predictions"] for r in results], "errors": [r["error"] for r in results],
                  "loaded": [m for m in ("librosa", "numba", "llvmlite", "tensorflow", "sklearn", "pandas",
                                         "scipy.fft", "scipy.special") if m in sys.modules]}))
"""


def test_scoring_imports_neither_librosa_nor_numba(pretrained: bundle_io.Bundle, tmp_path: Path) -> None:
    # A wide-band call (the global set) and a narrow-band one (the 8 kHz set), 3 s each.
    wavs = [write_audio(tmp_path / "wide.wav", duration_s=3.0, seed=5),
            write_audio(tmp_path / "narrow.wav", sample_rate=8_000, duration_s=3.0, seed=6)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", _FRESH_SCORER, *map(str, wavs)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["errors"] == [None, None]
    # No librosa, numba, TensorFlow or scikit-learn in a scoring process, nor scipy.fft (~0.45 CPU s to
    # import; ser_batch.features.fft calls its compiled kernel directly).
    assert report["loaded"] == []
    # The same predictions as this process, where librosa is loaded (the tests import it).
    expected = [entry["predictions"] for entry in predict_files(wavs, bundle=pretrained, framework="both")]
    assert report["predictions"] == json.loads(json.dumps(expected))
    assert all(set(p) == {*pretrained.ensemble_weights(), "both"} for p in report["predictions"])


def test_log_mel_frames_are_made_only_for_a_framework_that_reads_them(pretrained: bundle_io.Bundle,
                                                                       tmp_path: Path) -> None:
    """The cnn's input frames cost ~0.09 CPU ms per audio second: ``--framework keras`` skips them,
    ``both`` and ``cnn`` get them (also when the settings name another framework than predict's)."""
    from ser_batch.config import Config
    from ser_batch.inference.scoring import file_windows

    wav = write_audio(tmp_path / "speech.wav", duration_s=3.0, seed=2)
    for framework, with_frames in (("keras", False), ("sklearn", False), ("cnn", True), ("both", True)):
        [stream] = file_windows(wav, bundle=pretrained, config=Config().replace(score={"framework": framework}))
        assert all((w.frames is not None) == with_frames for w in stream.windows), framework
    config = Config().replace(score={"framework": "keras"})
    [entry] = predict_files([wav], bundle=pretrained, framework="both", config=config)
    assert set(entry["predictions"]) == {*pretrained.ensemble_weights(), "both"}

"""Hostile model bundles (issue 16, points 3, 4 and duplicate classes of 8): each test copies the
shipped pretrained bundle, breaks one thing, and rewrites the manifest's checksums with hashlib so
that only the point under test can fail. A bundle that cannot load is refused when it is opened
(``load_bundle``: the one loading path of ``score``, ``predict`` and ``evaluate``), with one line
naming the file and the reason, and no path a bundle names leads out of its folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from ser_batch.cli import main
from ser_batch.errors import BundleError
from ser_batch.models import bundle as bundle_io
from ser_batch.models import networks

from conftest import write_audio


def hostile_copy(tmp_path: Path, name: str = "bundle") -> Path:
    """A copy of the pretrained bundle to break."""
    return Path(shutil.copytree(bundle_io.default_bundle_path(), tmp_path / name))


def edit_manifest(bundle: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = bundle / bundle_io.MANIFEST
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def rechecksum(bundle: Path) -> None:
    """Make every checksum of the manifest match the files as they are now (as an attacker would)."""

    def fix(manifest: dict[str, Any]) -> None:
        for name in manifest["files"]:
            file = bundle / name
            if file.is_file() and not file.is_symlink():
                manifest["files"][name] = hashlib.sha256(file.read_bytes()).hexdigest()

    edit_manifest(bundle, fix)


def arrays_of(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def rewrite_arrays(bundle: Path, name: str, change: Callable[[dict[str, np.ndarray]], None]) -> None:
    arrays = arrays_of(bundle / name)
    change(arrays)
    np.savez_compressed(bundle / name, **arrays)
    rechecksum(bundle)


def one_line_error(result: Any) -> str:
    """The CLI's output for a refused bundle: exit 1, one line ``error: ...``, no traceback."""
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


# ------------------------------------------------------------------ 3. a bundle that cannot load


def _set(key: str, value: Any) -> Callable[[dict[str, np.ndarray]], None]:
    return lambda arrays: arrays.__setitem__(key, value)


def _nan_kernel(arrays: dict[str, np.ndarray]) -> None:
    arrays["kernel_1"] = arrays["kernel_1"].copy()
    arrays["kernel_1"][3, 4] = np.nan


BROKEN_ARRAYS = {
    # what is broken: (file, change, words of the reason)
    "input width": ("keras_ann.npz", lambda a: a.update(kernel_0=a["kernel_0"][:-1]), "kernel_0' has shape (804, 300)"),
    "scaler width": ("sklearn_mlp.npz", lambda a: a.update(mean=a["mean"][:100]), "'mean' has shape (100,)"),
    "layer chain": ("keras_ann.npz", lambda a: a.update(kernel_2=a["kernel_2"][:49]), "kernel_2' has shape (49, 20)"),
    "bias": ("keras_ann.npz", lambda a: a.update(bias_0=a["bias_0"][:7]), "bias_0' has shape (7,)"),
    "output classes": (
        "sklearn_mlp.npz",
        lambda a: a.update(kernel_1=a["kernel_1"][:, :7], bias_1=a["bias_1"][:7]),
        "7 outputs for the bundle's 8 classes",
    ),
    "nan weights": ("keras_ann.npz", _nan_kernel, "'kernel_1' holds NaN"),
    "text weights": ("keras_ann.npz", _set("kernel_4", np.array([["x"] * 8] * 10)), "kernel_4' has dtype <U1"),
    "activation": ("keras_ann.npz", _set("activation_0", np.array("tanh")), "'activation_0' is 'tanh'"),
    "missing layer": ("sklearn_mlp.npz", lambda a: a.pop("bias_1"), "no bias_1"),
    "model set": ("narrow/keras_ann.npz", lambda a: a.update(kernel_0=a["kernel_0"].T), "shape (300, 805)"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_ARRAYS))
def test_arrays_that_do_not_fit_are_refused_when_the_bundle_opens(tmp_path: Path, case: str) -> None:
    name, change, reason = BROKEN_ARRAYS[case]
    bad = hostile_copy(tmp_path)
    rewrite_arrays(bad, name, change)
    with pytest.raises(BundleError) as error:
        bundle_io.load_bundle(bad)
    message = str(error.value)
    assert f"({name})" in message and reason in message and "\n" not in message, message


def test_an_unloadable_bundle_fails_score_predict_and_evaluate_at_once(tmp_path: Path) -> None:
    bad = hostile_copy(tmp_path)
    for npz in bad.rglob("*.npz"):
        npz.write_bytes(b"PK\x03\x04 not a real archive")
    rechecksum(bad)
    audio = tmp_path / "in"
    write_audio(audio / "a.wav", duration_s=2.0)
    out = tmp_path / "out"
    runner = CliRunner()
    # score: refused in the driver before Ray starts or OUT is created (no files/, no lock, nothing)
    line = one_line_error(
        runner.invoke(main, ["score", str(audio), "--out", str(out), "--model", str(bad), "--no-progress"])
    )
    assert "keras_ann.npz" in line and "not an array archive" in line and "died" not in line
    assert not out.exists()
    line = one_line_error(runner.invoke(main, ["predict", str(audio / "a.wav"), "--model", str(bad)]))
    assert "cannot load the keras model" in line and "keras_ann.npz" in line
    features = tmp_path / "features"
    features.mkdir()
    line = one_line_error(runner.invoke(main, ["evaluate", str(bad), str(features)]))
    assert "keras_ann.npz" in line  # the bundle is refused before the (empty) feature folder is read


def _npz_claiming(path: Path, arrays: dict[str, np.ndarray], key: str, shape: tuple[int, ...]) -> None:
    """Write ``arrays`` as an .npz whose ``key`` header claims ``shape`` (float32) over a few bytes."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, value in arrays.items():
            buffer = io.BytesIO()
            if name == key:
                np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": shape})
                buffer.write(b"\0" * 64)
            else:
                np.lib.format.write_array(buffer, value)
            archive.writestr(f"{name}.npy", buffer.getvalue())


def test_an_array_header_claiming_absurd_shapes_is_refused_before_allocating(tmp_path: Path) -> None:
    bad = hostile_copy(tmp_path)
    _npz_claiming(bad / "keras_ann.npz", arrays_of(bad / "keras_ann.npz"), "kernel_0", (20_000, 20_000))  # 1.6 GB
    rechecksum(bad)
    wav = write_audio(tmp_path / "a.wav", duration_s=1.0)
    tracemalloc.start()
    try:
        result = CliRunner().invoke(main, ["predict", str(wav), "--model", str(bad)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    line = one_line_error(result)
    assert "keras_ann.npz" in line and "header claims shape (20000, 20000)" in line and "64 bytes are stored" in line
    assert peak < 100 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_arrays_above_the_size_limit_are_refused_from_their_sizes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = hostile_copy(tmp_path)
    # a consistent archive of 3 MB of zeros (it compresses to a few KB): refused from the sizes it states
    rewrite_arrays(bad, "sklearn_mlp.npz", lambda a: a.update(extra=np.zeros((1000, 805), np.float32)))
    monkeypatch.setattr(networks, "MAX_ARRAY_BYTES", 2**20)
    with pytest.raises(BundleError, match=r"\(sklearn_mlp.npz\): its arrays hold \d MiB \(at most 1 MiB\)"):
        bundle_io.load_bundle(bad)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="not an exported network"):  # an unknown array is no network either
        networks.DenseNetwork({"extra": np.zeros(3, np.float32)}, ["a", "b"])
    bundle_io.load_bundle(bad)  # under the real limit, an extra array is ignored


def test_a_skops_file_whose_arrays_claim_absurd_shapes_is_refused_unpacked(tmp_path: Path) -> None:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from ser_batch.models.estimators import save_sklearn

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 4)), np.array(["angry", "happy", "sad"])[rng.integers(0, 3, 30)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipeline = Pipeline([("scaler", StandardScaler()), ("mlp", MLPClassifier((5,), max_iter=20))]).fit(X, y)
    staging = bundle_io.staging_dir(tmp_path / "skops")
    save_sklearn(pipeline, staging / bundle_io.SKLEARN_FILE)
    (staging / "sklearn_mlp.npz").unlink()  # no array export: the skops file is what would be loaded
    manifest = {
        "bundle_format": 2,
        "classes": ["angry", "happy", "sad"],
        "models": ["sklearn"],
        "aggregation": "clip",
        "features": {"n_features": 4},
    }
    bad = bundle_io.finalize_bundle(staging, tmp_path / "skops", manifest=manifest, overwrite=False)
    bundle_io.load_bundle(bad)  # as written, it loads
    skops = bad / bundle_io.SKLEARN_FILE
    with zipfile.ZipFile(skops) as archive:
        members = {m.filename: archive.read(m) for m in archive.infolist()}
    victim = next(name for name in members if name.endswith(".npy"))
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": (10**5, 10**5)})
    members[victim] = buffer.getvalue() + b"\0" * 8
    with zipfile.ZipFile(skops, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    rechecksum(bad)
    with pytest.raises(
        BundleError, match=r"\(sklearn_mlp.skops\): array '.*': its header claims shape \(100000, 100000\)"
    ):
        bundle_io.load_bundle(bad)


def test_a_keras_file_refused_by_safe_mode_is_reported_when_the_bundle_opens(tmp_path: Path) -> None:
    import keras

    bad = hostile_copy(tmp_path)
    inputs = keras.Input(shape=(805,))
    hidden = keras.layers.Lambda(lambda x: x * 2.0)(inputs)  # serialised Python code: safe mode refuses it
    keras.Model(inputs, keras.layers.Dense(8, activation="softmax")(hidden)).save(bad / bundle_io.KERAS_FILE)
    (bad / "keras_ann.npz").unlink()  # no array export: the Keras file is what would be loaded

    def native_keras(manifest: dict[str, Any]) -> None:
        del manifest["files"]["keras_ann.npz"]
        manifest["files"][bundle_io.KERAS_FILE] = ""

    edit_manifest(bad, native_keras)
    rechecksum(bad)
    with pytest.raises(BundleError) as error:
        bundle_io.load_bundle(bad)
    message = str(error.value)
    assert "cannot load the keras model" in message and f"({bundle_io.KERAS_FILE})" in message
    assert "safe" in message.lower() and "\n" not in message, message


# ------------------------------------------------------------------ 4. names that leave the bundle


def _outside(tmp_path: Path) -> Path:
    outside = tmp_path / "outside.npz"
    shutil.copy(bundle_io.default_bundle_path() / "keras_ann.npz", outside)
    return outside


def _list_outside(where: str) -> Callable[[Path, Path], None]:
    def change(bundle: Path, outside: Path) -> None:
        name = str(outside) if where == "absolute" else "../" + outside.name
        digest = hashlib.sha256(outside.read_bytes()).hexdigest()  # a matching checksum: it would be read
        edit_manifest(bundle, lambda m: m["files"].update({name: digest}))

    return change


def _symlinked_model(bundle: Path, outside: Path) -> None:
    (bundle / "keras_ann.npz").unlink()
    (bundle / "keras_ann.npz").symlink_to(outside)
    digest = hashlib.sha256(outside.read_bytes()).hexdigest()
    edit_manifest(bundle, lambda m: m["files"].update({"keras_ann.npz": digest}))


def _set_dir_outside(bundle: Path, outside: Path) -> None:
    elsewhere = outside.parent / "elsewhere"
    shutil.copytree(bundle / "narrow", elsewhere)

    def change(manifest: dict[str, Any]) -> None:
        manifest["model_sets"]["narrow"]["dir"] = "../elsewhere"
        for name in ("keras_ann.npz", "sklearn_mlp.npz"):
            manifest["files"][f"../elsewhere/{name}"] = hashlib.sha256((elsewhere / name).read_bytes()).hexdigest()

    edit_manifest(bundle, change)


def _symlinked_set_dir(bundle: Path, outside: Path) -> None:
    elsewhere = outside.parent / "elsewhere"
    shutil.move(bundle / "narrow", elsewhere)
    (bundle / "narrow").symlink_to(elsewhere, target_is_directory=True)


def _training_list_outside(bundle: Path, outside: Path) -> None:
    edit_manifest(bundle, lambda m: m["training_data"]["files"].update(list="../outside.npz"))


def _cnn_unlisted(bundle: Path, outside: Path) -> None:
    # a cnn whose arrays are not among the checksummed files (here a link to a file outside)
    (bundle / bundle_io.CNN_FILE).write_bytes(b"listed but never the file scored")
    (bundle / "cnn.npz").unlink(missing_ok=True)  # the shipped bundle lists its own
    (bundle / "cnn.npz").symlink_to(outside)

    def change(manifest: dict[str, Any]) -> None:
        manifest["models"] = ["keras", "sklearn", "cnn"]
        manifest["files"].pop("cnn.npz", None)
        manifest["files"][bundle_io.CNN_FILE] = ""

    edit_manifest(bundle, change)
    rechecksum(bundle)


ESCAPES = {
    "dotdot name": (_list_outside("dotdot"), "names file '../outside.npz'"),
    "absolute name": (_list_outside("absolute"), "which is not a path inside the bundle"),
    "symlinked model file": (_symlinked_model, "file keras_ann.npz is a symbolic link"),
    "set dir outside": (_set_dir_outside, "names file '../elsewhere/keras_ann.npz'"),
    "symlinked set dir": (_symlinked_set_dir, "is a symbolic link (narrow)"),
    "training list outside": (_training_list_outside, "names list of training files '../outside.npz'"),
    "cnn arrays unlisted": (_cnn_unlisted, "cnn.npz is not among the bundle's checksummed files"),
}


@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_no_path_a_bundle_names_leads_out_of_it(tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    change, reason = ESCAPES[case]
    bad = hostile_copy(tmp_path)
    outside = _outside(tmp_path)
    change(bad, outside)
    opened: list[Path] = []
    real_sha = bundle_io.sha256_of
    monkeypatch.setattr(bundle_io, "sha256_of", lambda p: opened.append(Path(p)) or real_sha(p))
    real_read = networks.read_arrays
    monkeypatch.setattr(networks, "read_arrays", lambda p, **k: opened.append(Path(p)) or real_read(p, **k))
    with pytest.raises(BundleError) as error:
        bundle_io.load_bundle(bad)
    assert reason in str(error.value), str(error.value)
    # nothing outside the bundle was read, and nothing through a link
    root = bad.resolve()
    assert all(p.resolve().is_relative_to(root) and not p.is_symlink() for p in opened), opened


def test_refusing_an_outside_name_does_not_tell_whether_it_exists(tmp_path: Path) -> None:
    _outside(tmp_path)  # exists for the first name only
    messages = []
    for target in ("outside.npz", "no-such-file.npz"):
        bad = hostile_copy(tmp_path, f"bundle-{target}")
        edit_manifest(bad, lambda m, name=f"../{target}": m["files"].update({name: "0" * 64}))
        with pytest.raises(BundleError) as error:
            bundle_io.load_bundle(bad)
        messages.append(str(error.value).replace(str(bad), "B").replace(target, "T"))
    assert messages[0] == messages[1] and "checksum" not in messages[0] and "missing" not in messages[0]


def test_a_symlinked_manifest_is_refused(tmp_path: Path) -> None:
    bad = hostile_copy(tmp_path)
    real = tmp_path / "manifest-elsewhere.json"
    shutil.move(bad / bundle_io.MANIFEST, real)
    (bad / bundle_io.MANIFEST).symlink_to(real)
    with pytest.raises(BundleError, match="manifest.json is a symbolic link"):
        bundle_io.load_bundle(bad)


def test_the_shipped_bundle_passes_every_check() -> None:
    bundle = bundle_io.load_bundle()
    # every model of every set is loaded and checked when the bundle opens
    assert set(bundle._models) == {
        f"{s}/{f}" if s != "global" else f for s, models in bundle.model_sets.items() for f in models.models
    }
    assert "cnn" in bundle._models and "narrow/cnn" in bundle._models


# ------------------------------------------------------------------ 8. duplicate class names


def test_duplicate_class_names_are_refused(tmp_path: Path) -> None:
    bad = hostile_copy(tmp_path)
    edit_manifest(bad, lambda m: m.update(classes=[*m["classes"][:7], m["classes"][0]]))
    with pytest.raises(BundleError, match="lists class 'angry' 2 times in its manifest.json; class names must be"):
        bundle_io.load_bundle(bad)
    wav = write_audio(tmp_path / "a.wav", duration_s=1.0)
    line = one_line_error(CliRunner().invoke(main, ["predict", str(wav), "--model", str(bad)]))
    assert "class 'angry'" in line


@pytest.mark.parametrize("in_process", [False, True])
def test_a_bundle_error_inside_a_task_stops_the_job_instead_of_worker_died_rows(ray_session: None,
                                                                                in_process: bool) -> None:
    from dataclasses import dataclass

    from ser_batch.cluster.engine import Executor, Progress, ShardJob, run_shards

    @dataclass(frozen=True)
    class Refuse(ShardJob[int, int]):
        def run_shard(self, shard: int) -> int:
            if shard == 1:
                raise BundleError("bundle /b changed while the run was using it")
            return shard

        def split(self, shard: int) -> list[int]:
            return [shard]

        def lost(self, shard: int, error: str) -> int:
            raise AssertionError(f"shard {shard} recorded as lost ({error})")

    committed: list[int] = []
    with Executor(in_process=in_process).start() as workers, \
            pytest.raises(BundleError, match="changed while the run was using it"):
        run_shards(Refuse(), [0, 1, 2], workers=workers, commit=lambda r: committed.append(r) or 1, max_retries=1,
                   progress=Progress(3, "test", enabled=False))
    assert 1 not in committed

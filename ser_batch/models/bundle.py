"""Model bundles: one folder with the fitted models, their feature contract and checksums.

Layout (bundle format 2)::

    manifest.json          format version, package version, classes, feature recipe,
                           sample rate, schema version, effective config, training data
                           summary, split, metrics, sha256 of every other file
    training_files.json    paths of the rows the models were trained on
    sklearn_mlp.skops      Pipeline(StandardScaler, MLPClassifier), no pickle
    sklearn_mlp.joblib     the same as a pickle, only with ``train.export_joblib``
    keras_ann.keras        Keras ANN (standardisation built in) + keras_ann.h5 export
    keras_ann.npz, sklearn_mlp.npz   both networks as arrays (what ser-batch evaluates: numpy only)
    metrics.json, confusion_*.png, report.html
    <set>/keras_ann.npz, <set>/sklearn_mlp.npz   optional extra model sets (manifest key
                           ``model_sets``: narrow band, per-speaker normalised; see
                           :mod:`ser_batch.models.model_sets`), arrays only

:func:`load_bundle` refuses every path the manifest names that could lead out of the
bundle (absolute, ``..``, a symbolic link anywhere below the bundle's folder) before reading
or even looking for it, verifies every checksum before any model is read, then loads and
checks every model of every set (arrays that fit together, the bundle's features and
distinct classes, finite weights; sizes checked from the array headers before anything is
allocated), so a bundle that cannot score is refused when it is opened, with the file and
the reason, and never in a worker. Checksums prove
that the files are the ones the manifest lists, not who made them (the manifest travels
with the files), so nothing a bundle holds is unpickled unless the caller says it trusts
the bundle: the scikit-learn model is read with skops (scikit-learn and numpy types
only) and the Keras model in Keras' safe mode. Format-1 bundles, whose scikit-learn
model exists only as a pickle, need ``trust_pickle=True`` (``--trust-pickle``).
:meth:`Bundle.check_features` refuses features made with another recipe or schema.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ser_batch import __version__, schema
from ser_batch.config import ENSEMBLE, Config, config_from_dict, config_to_dict
from ser_batch.errors import BundleError, ConfigError, SerBatchError
from ser_batch.features.melframes import StreamFrames
from ser_batch.models.bundle_checks import (
    MANIFEST,
    check_keras_shapes,
    check_manifest_contract,
    check_model_fits,
    inside_bundle,
)
from ser_batch.models.model_sets import GLOBAL, ModelSet, choose_set, no_normalized_sets_message, parse_model_sets

#: 2: the scikit-learn model is a skops file and the training rows are listed;
#: 1: the scikit-learn model is only a joblib pickle (read with ``trust_pickle`` only).
BUNDLE_FORMAT = 2
SKLEARN_FILE = "sklearn_mlp.skops"
SKLEARN_PICKLE = "sklearn_mlp.joblib"
KERAS_FILE = "keras_ann.keras"
#: The frame-sequence model's Keras file (its arrays, cnn.npz, are what ser-batch evaluates).
CNN_FILE = "cnn.keras"
TRAINING_FILES = "training_files.json"
#: The speech detector of bundles whose config predates ``features.speech_detector``.
OLD_SPEECH_DETECTOR = "energy"


def model_files(bundle_format: int) -> dict[str, str]:
    """The file each framework's model is read from, in a bundle of that format."""
    from ser_batch.models.networks import GE2E_ARRAYS

    return {"keras": KERAS_FILE, "sklearn": SKLEARN_FILE if bundle_format >= 2 else SKLEARN_PICKLE, "cnn": CNN_FILE,
            "ge2e": GE2E_ARRAYS}


#: Manifest value of ``training_data.files.keys`` when the list holds ``corpus:path`` keys.
CORPUS_KEYS = "corpus:path"


def training_key(corpus: str | None, path: str) -> str:
    """A training file's key in a multi-corpus bundle: ``corpus:path`` (``:path`` without a corpus)."""
    return f"{corpus or ''}:{path}"


def write_training_files(directory: Path, paths: Sequence[str], *, qualified: bool = False) -> dict[str, Any]:
    """Write the training rows' paths (``corpus:path`` keys when ``qualified``) into a bundle folder;
    return the manifest entry."""
    names = sorted({str(p) for p in paths})
    (Path(directory) / TRAINING_FILES).write_text(json.dumps(names, indent=0) + "\n", encoding="utf-8")
    entry: dict[str, Any] = {"list": TRAINING_FILES, "count": len(names)}
    if qualified:
        entry["keys"] = CORPUS_KEYS
    return entry


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_bundle_path() -> Path:
    """The pretrained bundle shipped inside the package."""
    return Path(str(resources.files("ser_batch") / "pretrained"))


def finalize_bundle(staging: Path, out: Path, *, manifest: dict[str, Any], overwrite: bool) -> Path:
    """Checksum every file in ``staging``, write the manifest, and move it to ``out`` atomically.

    The folder appears at ``out`` complete or not at all; an existing ``out`` is replaced
    only with ``overwrite``.
    """
    staging, out = Path(staging), Path(out)
    files = sorted(p for p in staging.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = dict(manifest, files={p.relative_to(staging).as_posix(): sha256_of(p) for p in files})
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    if out.exists():
        held = {p.name for p in out.iterdir()} - {schema.LOCK_NAME}
        if held and not overwrite:
            raise BundleError(f"model folder {out} already exists; pass --overwrite to replace it")
        if (out / schema.LOCK_NAME).exists():
            # The training run's lock (ser_batch.cluster.lock) moves with the folder it guards.
            os.replace(out / schema.LOCK_NAME, staging / schema.LOCK_NAME)
        trash = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        out.rename(trash)
        staging.rename(out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(out)
    return out


def staging_dir(out: Path) -> Path:
    """A fresh hidden folder next to ``out`` to build a bundle in."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.with_name(f".{out.name}.staging-{uuid.uuid4().hex[:8]}")
    path.mkdir()
    return path


@dataclass
class Bundle:
    """A verified model bundle; models are loaded on first use."""

    path: Path
    manifest: dict[str, Any]
    #: Allow unpickling a format-1 bundle's joblib file (it can run any code).
    trust_pickle: bool = False
    _models: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def format(self) -> int:
        return int(self.manifest["bundle_format"])

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def frameworks(self) -> list[str]:
        return list(self.manifest["models"])

    @property
    def aggregation(self) -> str:
        """``segments`` (models see window vectors; a file is their mean) or ``clip``."""
        return str(self.manifest.get("aggregation", "clip"))

    @property
    def needs_frames(self) -> bool:
        """Whether some model of the bundle (``cnn``) scores windows' log-mel frames."""
        return any("cnn" in self.set_frameworks(name) for name in self.model_sets)

    @property
    def needs_embeddings(self) -> bool:
        """Whether some model of the bundle (``ge2e``) scores windows' speaker embeddings."""
        return any("ge2e" in self.set_frameworks(name) for name in self.model_sets)

    @functools.cached_property
    def encoder(self) -> Any:
        """The GE2E speaker encoder a ``ge2e`` model's embeddings come from (the bundle's copy of its
        weights, checksummed like every file of the bundle).

        Raises
        ------
        BundleError
            If the bundle has no such file or it is not the encoder's weights.
        """
        from ser_batch.features.ge2e import SpeakerEncoder
        from ser_batch.models.networks import GE2E_ENCODER, read_arrays

        if GE2E_ENCODER not in self.manifest.get("files", {}):
            raise BundleError(f"bundle {self.path} has a ge2e model but not the encoder's weights ({GE2E_ENCODER})")
        try:
            return SpeakerEncoder(read_arrays(inside_bundle(self.path, GE2E_ENCODER, what="encoder weights")))
        except (ValueError, SerBatchError) as exc:
            raise BundleError(f"cannot load the GE2E encoder of {self.path} ({GE2E_ENCODER}): {exc}") from None

    @property
    def frame_reach(self) -> int:
        """Frames of context a stretch of a stream must hold past its windows on each side for the
        bundle's ``cnn`` models (their normalisation and encoder; 0 without any): loads them."""
        reach = [self.model("cnn", name).reach for name in self.model_sets if "cnn" in self.set_frameworks(name)]
        return max(reach, default=0)

    @property
    def n_features(self) -> int | None:
        """Length of the feature vectors the dense models take (``None`` when the manifest does not say)."""
        features = self.manifest["features"]
        if "n_features" in features:
            return int(features["n_features"])
        return len(features["names"]) if features.get("names") else None

    @functools.cached_property
    def model_sets(self) -> dict[str, ModelSet]:
        """The bundle's model sets by name; ``global`` (the root's models) always among them."""
        return parse_model_sets(self.manifest, where=str(self.path))

    @property
    def has_normalized(self) -> bool:
        """Whether some set was trained on per-speaker normalised features."""
        return any(s.normalized for s in self.model_sets.values())

    def require_normalized(self) -> None:
        """Refuse, with a message that says what to do, when the bundle has no normalised set."""
        if not self.has_normalized:
            raise BundleError(no_normalized_sets_message(str(self.path)))

    def choose_set(self, sample_rate_in: int | None = None, normalize: bool = False, *,
                   band: str | None = None) -> str:
        """The set that scores an input: its band's (narrow for <= 8000 Hz) when the bundle has
        one, else the wideband set; the normalised variant when ``normalize``."""
        return choose_set(self.model_sets, sample_rate_in=sample_rate_in, band=band, normalize=normalize,
                          where=str(self.path))

    @property
    def training_files_qualified(self) -> bool:
        """Whether :meth:`training_files` holds ``corpus:path`` keys (a bundle trained on several corpora)."""
        entry = self.manifest.get("training_data", {}).get("files") or {}
        return isinstance(entry, dict) and entry.get("keys") == CORPUS_KEYS

    def training_files(self) -> frozenset[str] | None:
        """Paths (relative to the extracted folder) of the rows the models were trained on,
        or ``None`` when the bundle does not list them (format 1)."""
        entry = self.manifest.get("training_data", {}).get("files")
        if not entry:
            return None
        try:
            names = json.loads((self.path / entry["list"]).read_text(encoding="utf-8"))
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError("not a list of paths")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"bundle {self.path} has an unreadable list of training files: {exc}") from None
        return frozenset(names)

    @functools.cached_property
    def config(self) -> Config:
        """Audio and feature settings the models were trained with (parsed once: every file
        scored asks for them)."""
        stored = copy.deepcopy(self.manifest["config"])
        # Bundles older than ``features.speech_detector`` were trained on the level detector.
        features = stored.get("features")
        if isinstance(features, dict):
            features.setdefault("speech_detector", OLD_SPEECH_DETECTOR)
        try:
            return config_from_dict(stored)
        except ConfigError as exc:
            raise BundleError(f"bundle {self.path} has an invalid config: {exc}") from None

    def check_features(self, metadata: dict[str, Any]) -> None:
        """Refuse features (``schema.read_metadata`` of their table) this bundle cannot use."""
        want = self.manifest["features"]
        problems = []
        if metadata.get("schema_version") != want["schema_version"]:
            problems.append(f"schema version {metadata.get('schema_version')} != {want['schema_version']}")
        if metadata.get("recipe") != want["recipe"]:
            problems.append(f"recipe {metadata.get('recipe')!r} != {want['recipe']!r}")
        if metadata.get("feature_names") != want["names"]:
            problems.append(f"{len(metadata.get('feature_names') or [])} feature columns that differ from "
                            f"the model's {len(want['names'])}")
        config = metadata.get("config") or {}
        rate = config.get("audio", {}).get("sample_rate")
        if rate != want["sample_rate"]:
            problems.append(f"sample rate {rate} Hz != {want['sample_rate']} Hz")
        cut = config.get("audio", {}).get("max_duration_s", 0.0)
        if "max_duration_s" in want and cut != want["max_duration_s"]:
            problems.append(f"audio cut to {cut} s != {want['max_duration_s']} s (0 = whole file)")
        # Every feature setting changes the numbers (frame-to-frame deltas depend on the hop,
        # for one); window settings matter only to a bundle that scores windows.
        theirs, ours = config.get("features", {}), want.get("settings", {})
        ignored = {"recipe"} | ({"window_s", "window_hop_s"} if self.aggregation != "segments" else set())
        differing = sorted(k for k in ours if k not in ignored and theirs.get(k) != ours[k])
        if differing:
            problems.append("feature settings differ: " + ", ".join(
                f"{k} {theirs.get(k)!r} != {ours[k]!r}" for k in differing))
        if problems:
            raise BundleError(
                f"features do not match model bundle {self.path}: " + "; ".join(problems)
                + f". Re-extract with the bundle's settings (recipe {want['recipe']!r}, "
                  f"{want['sample_rate']} Hz)."
            )

    def model(self, framework: str, model_set: str = GLOBAL) -> Any:
        """The fitted estimator of ``framework`` ("keras", "sklearn" or "cnn") in set ``model_set``."""
        if model_set != GLOBAL:
            return self._set_model(framework, model_set)
        if framework not in self.frameworks:
            raise BundleError(f"bundle {self.path} has no {framework} model (it has: {', '.join(self.frameworks)})")
        if framework not in self._models:
            if framework == "sklearn" and self.format < 2 and not self.trust_pickle:
                raise BundleError(
                    f"bundle {self.path} is format {self.format}: its scikit-learn model exists only as a "
                    f"pickle ({SKLEARN_PICKLE}), and unpickling a file runs whatever code it holds. If you "
                    "trust where this bundle came from, pass --trust-pickle (trust_pickle=True); otherwise "
                    "use --framework keras or retrain it with this ser-batch")
            from ser_batch.models.networks import ARRAYS

            files = self.manifest.get("files", {})
            if ARRAYS[framework] in files or framework == "cnn":
                # The same network as the framework's own file, evaluated with numpy: no
                # TensorFlow or scikit-learn in the process, nothing unpickled.
                name, native = ARRAYS[framework], False
            else:
                name, native = model_files(self.format)[framework], True
            self._models[framework] = self._load_model(framework, name, native=native,
                                                       what=f"the {framework} model of {self.path}")
        return self._models[framework]

    def _set_model(self, framework: str, model_set: str) -> Any:
        """An extra set's network: its array export, evaluated with numpy."""
        from ser_batch.models.networks import ARRAYS

        entry = self.model_sets.get(model_set)
        if entry is None:
            raise BundleError(f"bundle {self.path} has no model set {model_set!r} "
                              f"(it has: {', '.join(self.model_sets)})")
        if framework not in entry.models:
            raise BundleError(f"model set {model_set!r} of {self.path} has no {framework} model "
                              f"(it has: {', '.join(entry.models)})")
        key = f"{model_set}/{framework}"
        if key not in self._models:
            name = f"{entry.dir}/{ARRAYS[framework]}" if entry.dir else ARRAYS[framework]
            self._models[key] = self._load_model(framework, name, native=False,
                                                 what=f"the {framework} model of set {model_set!r} of {self.path}")
        return self._models[key]

    def _load_model(self, framework: str, name: str, *, native: bool, what: str) -> Any:
        """Read and check the model file ``name`` (a checksummed file of the manifest, relative to the
        bundle): its arrays, or with ``native`` the framework's own file (skops, Keras safe mode, or a
        trusted pickle). The model must take the bundle's features and give its classes."""
        if name not in self.manifest.get("files", {}):
            raise BundleError(f"cannot load {what}: {name} is not among the bundle's checksummed files")
        path = inside_bundle(self.path, name, what="model file")
        try:
            model = self._read_model(framework, path, native=native)
            from ser_batch.features.ge2e import EMBEDDING_SIZE

            check_model_fits(model, classes=self.classes,
                             n_features=EMBEDDING_SIZE if framework == "ge2e" else self.n_features)
        except Exception as exc:  # noqa: BLE001 - deserialising fails in many ways across versions
            reason = " ".join(str(exc).split())[:400]  # one line, whatever the library printed
            if not isinstance(exc, ValueError):
                reason = f"{type(exc).__name__}: {reason}"
            if native:
                made_with = self.manifest.get("library_versions", {})
                reason += f" (bundle made with {made_with or 'unknown versions'})"
            raise BundleError(f"cannot load {what} ({name}): {reason}") from None
        return model

    def _read_model(self, framework: str, path: Path, *, native: bool) -> Any:
        n_features = self.n_features
        if framework == "ge2e":
            from ser_batch.features.ge2e import EMBEDDING_SIZE
            from ser_batch.models.networks import DenseNetwork

            return DenseNetwork.load(path, classes=self.classes, n_features=EMBEDDING_SIZE)
        if framework == "cnn":
            from ser_batch.features.melframes import n_bands
            from ser_batch.models.sequence import load_frame_network

            bands = n_bands(self.config.features) if "config" in self.manifest else None
            return load_frame_network(path, classes=self.classes, n_bands=bands)
        if not native:
            from ser_batch.models.networks import DenseNetwork

            return DenseNetwork.load(path, classes=self.classes, n_features=n_features)
        if framework == "keras" or self.format >= 2:  # zip archives (.keras, skops): sizes checked unpacked
            from ser_batch.models.networks import check_archive

            check_archive(path)
        if framework == "sklearn" and self.format >= 2:
            from ser_batch.models.estimators import load_sklearn

            return load_sklearn(path)
        if framework == "sklearn":
            import joblib

            return joblib.load(path)
        from ser_batch.models.estimators import KerasANN

        model = KerasANN.load(path, classes=self.classes)
        check_keras_shapes(model.model_, classes=self.classes, n_features=n_features)
        return model

    def load_models(self) -> None:
        """Load and check every model of every set, so that a bundle that cannot score fails here, in
        the process that opens it, naming the file and the reason (not in a worker). A format-1
        bundle's scikit-learn pickle stays unread unless ``trust_pickle``: using it is refused then.

        Raises
        ------
        BundleError
            Naming the model file and what is wrong with it.
        """
        for name in self.model_sets:
            for framework in self.set_frameworks(name):
                if name == GLOBAL and framework == "sklearn" and self.format < 2 and not self.trust_pickle:
                    continue
                self.model(framework, name)
        if self.needs_embeddings:
            self.encoder  # noqa: B018 - loads and checks the encoder's weights

    def set_frameworks(self, model_set: str = GLOBAL) -> list[str]:
        """The frameworks of one set."""
        return list(self.model_sets[model_set].models) if model_set != GLOBAL else self.frameworks

    def ensemble(self, model_set: str = GLOBAL) -> list[tuple[str, str]]:
        """The ``(framework, set)`` pairs whose mean is ``both`` in ``model_set``: the set's own models,
        and for a normalised set without a cnn the cnn of the plain set of its band. The cnn's input is
        normalised per window already (relative floor, band means subtracted), so training does not
        fit it per speaker, and leaving it out would cost normalised streams its gain (docs/accuracy.md)."""
        entry = self.model_sets.get(model_set)
        if entry is None:
            return [(f, model_set) for f in self.frameworks]  # an unknown set: self.model says so
        own = [(f, model_set) for f in self.set_frameworks(model_set)]
        if not entry.normalized:
            return own
        for framework in ("cnn", "ge2e"):  # models of their own inputs: borrowed from the band's plain set
            if framework in entry.models:
                continue
            plain = next((s.name for s in self.model_sets.values()
                          if s.band == entry.band and not s.normalized and framework in s.models), None)
            if plain is not None:
                own.append((framework, plain))
        return own

    def ensemble_weights(self, model_set: str = GLOBAL) -> dict[str, float]:
        """The weight of each framework in ``both`` for ``model_set`` (summing to 1): the manifest's
        ``ensemble`` entry of the set (``train.ensemble``, ``train.ensemble_normalized``) restricted to
        the set's members, or equal weights (bundles without the key, sets holding none of its members)."""
        members = [f for f, _ in self.ensemble(model_set)]
        chosen = (self.manifest.get("ensemble") or {}).get(model_set) or {}
        weights = {f: float(chosen[f]) for f in members if f in chosen}
        if not weights:
            weights = {f: 1.0 for f in members}
        total = sum(weights.values())
        return {f: w / total for f, w in weights.items()}

    def reads_vectors(self, framework: str, *, normalize: bool = False) -> bool:
        """Whether scoring with ``framework`` reads window vectors: a dense model (keras, sklearn)
        takes part, in the plain sets, or with ``normalize`` in any set. When not, scoring skips
        computing them (:func:`ser_batch.features.windows.stream_windows` with ``vectors=False``)."""
        if framework != ENSEMBLE:
            return framework != "cnn"
        sets = [name for name, entry in self.model_sets.items() if normalize or not entry.normalized]
        return any(f != "cnn" for name in sets for f in self.ensemble_weights(name))

    def reads_embeddings(self, framework: str, *, normalize: bool = False) -> bool:
        """Whether scoring with ``framework`` reads windows' speaker embeddings (a ``ge2e`` model takes
        part, in the plain sets, or with ``normalize`` in any set's ensemble)."""
        if framework != ENSEMBLE:
            return framework == "ge2e"
        sets = [name for name, entry in self.model_sets.items() if normalize or not entry.normalized]
        return any(f == "ge2e" for name in sets for f in self.ensemble_weights(name))

    def predict_rows(self, X: np.ndarray, segments: list[np.ndarray] | None, *, framework: str,
                     keep: np.ndarray | None = None, model_set: str = GLOBAL,
                     frames: list[np.ndarray] | None = None, frame_speech: list[np.ndarray] | None = None,
                     normalize: Callable[[np.ndarray], np.ndarray] | None = None,
                     embeddings: list[np.ndarray] | None = None) -> np.ndarray:
        """Probabilities per row [shape=(n, n_classes)]: of its window vectors averaged when
        the bundle was trained on windows (only those in ``keep``, a mask over the stacked
        windows such as the ones with speech, when a row has any), else of the clip vectors ``X``.
        ``frames``: each row's log-mel frames (the ``frames`` column) and ``frame_speech`` the frames
        judged speech (``frame_speech``), each row one stream, for a ``cnn`` model.

        Raises
        ------
        BundleError
            If a ``cnn`` that pools over speech frames would score rows without ``frame_speech``."""
        if self.aggregation != "segments":
            return self.predict_proba(X, framework=framework, model_set=model_set)
        if segments is None:
            raise BundleError(f"bundle {self.path} scores sliding windows but the features have none; "
                              "extract with the bundle's recipe and window settings")
        from ser_batch.models.estimators import mean_by_row, stack_segments

        stacked, rows = stack_segments(segments)
        windows = None
        if frames is not None and self.needs_frames:
            from ser_batch.features.windows import row_stream

            if frame_speech is None and any(getattr(self.model("cnn", name), "pooling", "all") == "speech"
                                            for name in self.model_sets if "cnn" in self.set_frameworks(name)):
                raise BundleError(f"the cnn of {self.path} pools windows over the frames judged speech, and these "
                                  "features do not say which those are (no frame_speech column: written by an older "
                                  "ser-batch); re-extract them")
            windows = [row_stream(f, None if frame_speech is None else frame_speech[i], config=self.config.features,
                                  sample_rate=self.config.audio.sample_rate) for i, f in enumerate(frames)]
        stacked_embeddings = None
        if embeddings is not None and self.needs_embeddings:
            stacked_embeddings = np.concatenate(embeddings) if embeddings else np.zeros((0, 256), dtype=np.float32)
        return mean_by_row(self.predict_proba(stacked, framework=framework, model_set=model_set, frames=windows,
                                              normalize=normalize, embeddings=stacked_embeddings),
                           rows, len(segments), keep=keep)

    def predict_proba(self, X: np.ndarray, *, framework: str, model_set: str = GLOBAL,
                      frames: Sequence[StreamFrames] | None = None,
                      normalize: Callable[[np.ndarray], np.ndarray] | None = None,
                      embeddings: np.ndarray | None = None) -> np.ndarray:
        """Probabilities [shape=(n, n_classes)] in :attr:`classes` order, by the models of ``model_set``.

        ``framework="both"`` averages the models' probabilities with :meth:`ensemble_weights` (a
        soft-voting ensemble). The
        dense models see the vectors ``X``; ``cnn`` sees ``frames``, the stretches of log-mel frames
        of the streams the same windows are in, in order (their windows are the rows of ``X``). A
        normalised set's own cnn z-scores its pooled statistics with ``normalize``; ``ge2e`` sees
        ``embeddings``, the same windows' speaker embeddings ``(n, 256)``.
        """
        members = self.ensemble(model_set)
        if framework == ENSEMBLE:
            weights = self.ensemble_weights(model_set)
            return sum(weights[f] * self.predict_proba(X, framework=f, model_set=s, frames=frames, normalize=normalize,
                                                       embeddings=embeddings)
                       for f, s in members if f in weights)
        model_set = dict(members).get(framework, model_set)  # a normalised set's cnn is its band's plain one
        model = self.model(framework, model_set)
        if framework == "ge2e":
            if embeddings is None:
                raise BundleError(f"the ge2e model of {self.path} scores windows' speaker embeddings and none were "
                                  "given (feature tables need the ge2e column: extract.embeddings = [\"ge2e\"])")
            proba = np.asarray(model.predict_proba(np.asarray(embeddings, dtype=np.float32)), dtype=np.float64)
        elif framework == "cnn":
            if frames is None:
                raise BundleError(f"the cnn model of {self.path} scores windows' log-mel frames and none were "
                                  "given (feature tables need the frames column: extract.store_frames = true)")
            if getattr(model, "normalized", False):
                if normalize is None:
                    raise BundleError(f"the cnn of model set {model_set!r} of {self.path} scores normalised "
                                      "statistics: score with --normalize file or archive")
                proba = np.asarray(model.predict_proba(frames, normalize=normalize), dtype=np.float64)
            else:
                proba = np.asarray(model.predict_proba(frames), dtype=np.float64)
        else:
            proba = np.asarray(model.predict_proba(np.asarray(X, dtype=np.float32)), dtype=np.float64)
        order = [list(model.classes_).index(c) for c in self.classes]
        return proba[:, order]


def load_bundle(path: Path | None = None, *, verify: bool = True, trust_pickle: bool = False) -> Bundle:
    """Open a bundle (default: the pretrained one) after verifying every file's sha256.

    Nothing is deserialised here; models load on first use. ``trust_pickle`` lets a
    format-1 bundle's scikit-learn pickle be loaded: only for bundles from a trusted source.

    Raises
    ------
    BundleError
        If the folder or manifest is missing or malformed, the format is newer than this
        ser-batch reads, or any file is missing or does not match its checksum.
    """
    path = Path(path) if path is not None else default_bundle_path()
    manifest_path = path / MANIFEST
    if manifest_path.is_symlink():
        raise BundleError(f"bundle {path}: {MANIFEST} is a symbolic link; a bundle's files must be regular files "
                          "inside its folder")
    if not manifest_path.is_file():
        raise BundleError(f"not a model bundle (no {MANIFEST}): {path}")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = dict(manifest["files"])
        fmt = int(manifest["bundle_format"])
        manifest["classes"], manifest["models"], dict(manifest["features"])
        if not all(isinstance(digest, str) for digest in files.values()):
            raise ValueError("a checksum in 'files' is not a string")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"malformed {manifest_path}: {exc}") from None
    if fmt > BUNDLE_FORMAT:
        raise BundleError(f"bundle format {fmt} is newer than this ser-batch ({__version__}) reads ({BUNDLE_FORMAT})")
    if fmt < 1:
        raise BundleError(f"malformed {manifest_path}: bundle_format {fmt}")
    check_manifest_contract(manifest, manifest_path)
    # Every name is checked before any file is looked at: a name leading out of the bundle is
    # refused the same way whether or not something exists there.
    for name in files:
        inside_bundle(path, name, what="file")
    from ser_batch.models.networks import ARRAYS

    required = model_files(fmt)
    # A model is there as its framework's file or, with train.export_native = false, as arrays only.
    unlisted = [required[f] for f in manifest["models"]
                if f in required and required[f] not in files and not (fmt >= 2 and ARRAYS.get(f) in files)]
    if unlisted:
        raise BundleError(f"bundle {path} is incomplete: {', '.join(unlisted)} not in its manifest")
    bundle = Bundle(path=path, manifest=manifest, trust_pickle=trust_pickle)
    for name, entry in bundle.model_sets.items():  # a malformed model_sets entry is refused on opening
        if entry.dir:
            inside_bundle(path, entry.dir, what=f"folder of model set {name!r}")
    listed = (manifest.get("training_data") or {}).get("files")
    if isinstance(listed, dict) and "list" in listed:
        inside_bundle(path, listed["list"], what="list of training files")
        if verify and listed["list"] not in files:
            raise BundleError(f"bundle {path} is incomplete: its list of training files {listed['list']} is not "
                              "among its checksummed files")
    if verify:
        for name, digest in files.items():
            file = path / name
            if not file.is_file():
                raise BundleError(f"bundle {path} is incomplete: {name} is missing")
            if sha256_of(file) != digest:
                raise BundleError(f"bundle {path} is corrupt or was modified: checksum mismatch for {name}")
    bundle.load_models()
    return bundle


def feature_contract(config: Config, metadata: dict[str, Any]) -> dict[str, Any]:
    """The ``features`` section of a manifest for models trained on ``metadata``'s features."""
    return {
        "recipe": metadata["recipe"],
        "names": metadata["feature_names"],
        "schema_version": metadata["schema_version"],
        "sample_rate": config.audio.sample_rate,
        "n_features": len(metadata["feature_names"]),
        "window_s": config.features.window_s,
        "window_hop_s": config.features.window_hop_s,
        "settings": config_to_dict(config)["features"],
        "max_duration_s": config.audio.max_duration_s,
    }



def upgrade_bundle(source: Path, out: Path, *, training_files: Sequence[str] | None = None,
                   keep_pickle: bool = False, overwrite: bool = False) -> Path:
    """Rewrite a format-1 bundle as format 2 without retraining. **Unpickles** ``source``'s
    scikit-learn model once, so run it only on a bundle you trust.

    The pipeline is stored with skops (kept as a pickle too with ``keep_pickle``), and the
    copy must give bit-identical probabilities on random inputs or nothing is written.
    ``training_files`` lists the paths the models were trained on, when they are known.
    Files the manifest does not list (a licence note, say) are not copied.

    Raises
    ------
    BundleError
        If ``source`` is not a valid format-1 bundle, or the skops copy predicts differently.
    """
    import time
    from importlib.metadata import version

    from ser_batch.models.estimators import load_sklearn, save_sklearn

    old = load_bundle(source, trust_pickle=True)
    if old.format >= 2:
        raise BundleError(f"bundle {source} is already format {old.format}")
    staging = staging_dir(out)
    try:
        for name in old.manifest["files"]:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(old.path / name, staging / name)
        manifest = {k: v for k, v in old.manifest.items() if k != "files"}
        manifest["bundle_format"] = BUNDLE_FORMAT
        if "sklearn" in old.frameworks:
            pipeline = old.model("sklearn")
            (staging / SKLEARN_PICKLE).unlink()
            save_sklearn(pipeline, staging / SKLEARN_FILE,
                         pickle_path=staging / SKLEARN_PICKLE if keep_pickle else None)
            probe = np.random.default_rng(0).normal(size=(64, int(manifest["features"]["n_features"])))
            probe = probe.astype(np.float32)
            if not np.array_equal(load_sklearn(staging / SKLEARN_FILE).predict_proba(probe),
                                  pipeline.predict_proba(probe)):
                raise BundleError(f"the skops copy of {source}'s scikit-learn model predicts differently")
            manifest["library_versions"] = dict(manifest.get("library_versions", {}), skops=version("skops"))
        if training_files is not None:
            manifest["training_data"] = dict(manifest.get("training_data", {}),
                                             files=write_training_files(staging, training_files))
        manifest["upgraded"] = {"from_format": old.format, "on": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                "ser_batch_version": __version__,
                                "note": "models not retrained; scikit-learn pipeline re-serialised with skops"}
        return finalize_bundle(staging, out, manifest=manifest, overwrite=overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

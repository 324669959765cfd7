"""Configuration: TOML files loaded into frozen dataclasses, with ``--set`` overrides.

Every job takes a :class:`Config`; every output stores the resolved config next to
it (:func:`config_to_toml`), so a result can always be traced to its settings.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple

from ser_batch.augmentations import parse_augmentation
from ser_batch.errors import ConfigError

#: Feature recipes (``features.recipe``; see :mod:`ser_batch.features.recipes`).
RECIPES = ("fast", "classic", "rich")
#: Recipes that track pitch (their ``n_fft`` must hold two periods of 60 Hz).
PITCH_RECIPES = ("rich",)
#: ``features.speech_detector``: which frames of a window count as speech (its ``speech_ratio``):
#: "energy" (level over a local noise floor) or "bands" (band SNR, robust to steady noise; see
#: :mod:`ser_batch.features.speech`).
SPEECH_DETECTORS = ("energy", "bands")
#: The models a bundle can hold (``train.models``), and the name of their averaged ensemble.
#: ``keras`` and ``sklearn`` see window vectors; ``cnn`` sees each window's log-mel frames
#: (:mod:`ser_batch.models.sequence`).
FRAMEWORKS = ("keras", "sklearn", "cnn")
ENSEMBLE = "both"
#: What ``score.framework`` (and ``--framework``) may name: one model or the ensemble.
SCORE_FRAMEWORKS = (*FRAMEWORKS, ENSEMBLE)
#: ``score.channels``: mixed down into one stream, or each channel a stream of its own.
CHANNELS = ("mix", "split")
#: ``train.array_dtype``: weights of the array exports.
ARRAY_DTYPES = ("float32", "float16")
SPLITS = ("speaker", "random", "none", "corpus")
#: ``train.absent_classes``: how the Keras ANN treats classes a row's corpus does not have.
ABSENT_CLASSES = ("mask", "none")
#: ``train.normalize``: also fit sets on features z-scored per speaker (the ``actor`` column).
TRAIN_NORMALIZE = ("none", "speaker")
#: ``train.narrowband``: telephone-band rows get their own sets, or join the wideband ones.
NARROWBAND = ("separate", "mixed")
#: ``score.normalize``: z-score each stream by its own speech windows' statistics.
SCORE_NORMALIZE = ("none", "file")


@dataclass(frozen=True)
class AudioConfig:
    """How audio is decoded before features are computed."""

    #: Every file is resampled to this rate (Hz) before feature extraction.
    sample_rate: int = 16000
    #: File name endings (lower case) that discovery treats as audio. The one list of them:
    #: ``extract --help`` prints it, configs/default.toml and the README refer to it.
    extensions: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".opus")
    #: Longest stretch decoded per file, seconds; 0 means the whole file.
    max_duration_s: float = 0.0
    #: Files longer than this (seconds) become error rows instead of being decoded whole:
    #: a recording of hours would need gigabytes in one worker. 0 = no limit.
    max_file_s: float = 1800.0


@dataclass(frozen=True)
class FeatureConfig:
    """The feature recipe and its STFT parameters (samples at ``audio.sample_rate``)."""

    recipe: str = "fast"
    n_fft: int = 2048
    hop_length: int = 512
    n_mfcc: int = 40
    n_chroma: int = 12
    n_mels: int = 128
    contrast_bands: int = 6
    #: Lower edge of the first spectral-contrast octave band, Hz. Halved (octave by octave)
    #: when the top band would pass Nyquist, e.g. at 8 kHz; see ``features.contrast_fmin``.
    contrast_fmin: float = 200.0
    #: ``fast`` only: estimate the tuning offset for chroma as librosa does (cheap version).
    estimate_tuning: bool = True
    #: ``rich`` only: sliding windows pooled besides the whole clip, seconds; 0 = clip only.
    window_s: float = 1.5
    window_hop_s: float = 0.5
    #: ``rich`` only: fixed floor of the dB scales (mel, MFCC, contrast), dB re full scale power.
    #: A fixed reference keeps every window's features local (librosa's default floor is 80 dB
    #: below the loudest moment of the whole signal).
    db_floor: float = -80.0
    #: ``rich`` only: a frame is speech when its level is this many dB above the local noise
    #: floor (see ``ser_batch.features.windows``); windows store the fraction of such frames.
    speech_margin_db: float = 6.0
    #: ``rich`` only: the speech detector, one of :data:`SPEECH_DETECTORS`. "energy": the level
    #: test above; "bands": also a band-SNR test on mel bands 8..88 (~190 Hz - 3 kHz), which finds
    #: speech in steady noise the level test loses (its own, stricter, level margin of 10 dB).
    #: Bundles written before the key existed used "energy" (``Bundle.config`` keeps that).
    speech_detector: str = "bands"


@dataclass(frozen=True)
class ExtractConfig:
    """The parallel feature-extraction job."""

    #: Files per Ray task (one Parquet part each).
    shard_size: int = 32
    #: Default output folder of ``extract``.
    out: str = "output/features"
    #: Optional ``path,label`` CSV for corpora whose names carry no label.
    labels_csv: str = ""
    #: ``rich`` only: also store each row's log-mel frames (column ``frames``: the 128 mel dB bands
    #: averaged in pairs, /20; ~2x the table) for frame-sequence models (``train --models ...,cnn``).
    store_frames: bool = True
    #: Augmented copies written besides each file's own row (``ser_batch.audio.telephony``):
    #: telephone-pcm, telephone-ulaw, telephone-alaw, noise-<snr>db, pink-<snr>db,
    #: gain-<db>db, tempo-<factor>. Empty: the original audio only.
    augment: tuple[str, ...] = ()
    #: Value of the ``corpus`` column for files that labels.csv gives none; empty: the input folder's name.
    corpus: str = ""


@dataclass(frozen=True)
class TrainConfig:
    """The training job: which models, which split."""

    #: Models to fit: any of :data:`FRAMEWORKS`.
    models: tuple[str, ...] = ("keras", "sklearn")
    #: "speaker" (whole actors held out), "random" (stratified, the original recipe) or
    #: "none" (train on every row; for a final model whose accuracy was measured before).
    split: str = "speaker"
    #: Fraction of rows held out by the random split.
    test_size: float = 0.3
    #: The corpus held out whole by ``split = "corpus"``.
    test_corpus: str = ""
    #: "mask": the Keras ANN's softmax, in the loss, covers only the classes of each row's corpus, so
    #: a corpus without ``calm`` never pushes ``calm`` down; "none": every class for every row.
    #: (The scikit-learn MLP has no such loss: it sees every class for every row either way.)
    absent_classes: str = "mask"
    #: Actors held out by the speaker split.
    test_actors: tuple[int, ...] = (17, 18, 19, 20)
    #: Used instead of ``test_actors`` when that is empty: this fraction of actors, drawn with ``seed``.
    test_actor_fraction: float = 0.2
    #: Train on the sliding-window vectors when the features have them (``rich``) and
    #: predict a clip as the mean of its windows' probabilities.
    use_segments: bool = True
    seed: int = 42
    #: Also write the scikit-learn model as a joblib pickle (``sklearn_mlp.joblib``) for
    #: tools that want one; ser-batch itself reads the pickle-free skops file.
    export_joblib: bool = False
    #: Also write the Keras ANN as HDF5 (``keras_ann.h5``) for tools that read only that format.
    export_h5: bool = True
    #: False: keep only the array exports (``*.npz``, what ser-batch evaluates) of every model,
    #: not the Keras and skops files; with ``array_dtype = "float16"`` this keeps the pretrained
    #: bundle with four model sets at a few MB.
    export_native: bool = True
    #: Weights of the array exports: "float32", or "float16" (half the size; probabilities
    #: move by ~1e-3).
    array_dtype: str = "float32"
    #: "speaker": besides the global models, fit sets on window features z-scored by each
    #: actor's own statistics (per band, never pooled across the split); "none": global only.
    normalize: str = "none"
    #: How telephone-band rows (8 kHz inputs, telephone copies) are used: "separate" fits
    #: "narrow" sets on them and the wideband sets on the rest; "mixed" fits one wideband set
    #: on all rows and no narrow set.
    narrowband: str = "separate"


@dataclass(frozen=True)
class KerasConfig:
    """The Keras ANN: Dense layers with ReLU, softmax output, Adam, categorical cross-entropy.

    Defaults were chosen by cross-validation inside the training actors (docs/accuracy.md):
    without dropout and L2 the 300-50-20-10 network overfits and early stopping on a small
    validation part stops it too early.
    """

    hidden_layers: tuple[int, ...] = (300, 50, 20, 10)
    epochs: int = 50
    batch_size: int = 128
    learning_rate: float = 0.001
    #: Dropout on the input features.
    input_dropout: float = 0.2
    #: Dropout after each hidden layer (missing entries mean 0).
    dropout: tuple[float, ...] = (0.5, 0.2, 0.0, 0.0)
    l2: float = 0.0001
    label_smoothing: float = 0.1
    #: Stop when the loss on a stratified validation part stops improving (and keep the
    #: best weights); off by default: a fixed number of epochs generalised better.
    early_stopping: bool = False
    patience: int = 30
    validation_fraction: float = 0.15


@dataclass(frozen=True)
class CnnConfig:
    """The frame-sequence network (``cnn``, :mod:`ser_batch.models.sequence`): 1-D convolutions over
    a window's log-mel frames (each band's mean over the window subtracted), statistics pooling
    (mean and standard deviation over time), a Dense ReLU layer and a softmax.

    Trained on random window-long crops of the training rows' frames with SpecAugment-style
    masks, AdamW with a cosine decay, label smoothing. Defaults: the research runs of
    docs/accuracy.md ("frame-sequence model").
    """

    #: Kernel size and dilation of each convolution ('same' padding, batch norm, ReLU).
    kernels: tuple[int, ...] = (5, 3, 3, 3)
    dilations: tuple[int, ...] = (1, 2, 3, 1)
    width: int = 128
    dense: int = 128
    dropout: float = 0.3
    #: Floor of each window at its loudest value minus this many dB (before the band means
    #: are subtracted); 0 = only the extraction's fixed floor (``features.db_floor``). 50 dB: +2.5
    #: points over none in cross-validation over RAVDESS actors (docs/accuracy.md).
    relative_floor_db: float = 50.0
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 0.002
    weight_decay: float = 0.0001
    label_smoothing: float = 0.05
    #: SpecAugment: this many frequency masks of up to ``freq_mask_bands`` bands and time masks
    #: of up to ``time_mask_fraction`` of the crop, per training crop.
    freq_masks: int = 2
    freq_mask_bands: int = 8
    time_masks: int = 2
    time_mask_fraction: float = 0.1


@dataclass(frozen=True)
class SklearnConfig:
    """scikit-learn's MLPClassifier, in a Pipeline after a StandardScaler."""

    hidden_layer_sizes: tuple[int, ...] = (512,)
    #: L2 penalty; strong regularisation of one wide layer beat deeper nets (docs/accuracy.md).
    alpha: float = 1.0
    learning_rate_init: float = 0.001
    batch_size: int = 200
    max_iter: int = 200
    early_stopping: bool = False
    validation_fraction: float = 0.15
    n_iter_no_change: int = 10


@dataclass(frozen=True)
class ScoreConfig:
    """The batch scoring job (``ser-batch score``)."""

    #: Default output folder of ``score``.
    out: str = "output/scores"
    #: "keras", "sklearn" or "both" (the average of the two models' probabilities).
    framework: str = ENSEMBLE
    #: "mix": channels averaged into one stream; "split": each channel scored as its own stream.
    channels: str = "mix"
    #: Files longer than this (seconds) are cut into ranges that separate tasks score.
    chunk_s: float = 600.0
    #: Audio per task (seconds): shards are balanced by duration, not by file count.
    shard_s: float = 300.0
    #: Most files per task (bounds the per-task bookkeeping for archives of tiny files).
    shard_files: int = 256
    #: Seconds decoded per block inside a task (bounds a worker's memory, whatever the file length).
    block_s: float = 60.0
    #: Windows with a smaller fraction of speech frames get no label and stay out of summaries.
    min_speech_ratio: float = 0.3
    #: "file": z-score each stream (file, or channel with channels = "split") by the statistics
    #: of its own speech windows and score it with the bundle's normalised models; "none": as extracted.
    normalize: str = "none"
    #: Streams with less speech than this (seconds) are scored by the global models instead
    #: (too few windows for trustworthy statistics); the files table says which was used.
    min_normalize_s: float = 20.0
    #: Score over these of the bundle's classes only (``--classes angry,happy,neutral,sad``):
    #: probabilities renormalised over them, columns only for them. Empty: all the bundle's classes.
    classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class RayConfig:
    """Where jobs run."""

    #: Cluster address; empty means an embedded local Ray (or ``RAY_ADDRESS`` when set).
    address: str = ""
    #: CPUs for the embedded local Ray; 0 means all of this machine's.
    num_cpus: int = 0
    #: Times a failed task is retried (its writes are idempotent).
    max_retries: int = 3

    @property
    def local_cpus(self) -> int | None:
        """CPUs to start an embedded runtime with: ``num_cpus``, or ``None`` (all) for 0."""
        return self.num_cpus or None


@dataclass(frozen=True)
class Config:
    """The whole resolved configuration."""

    audio: AudioConfig = field(default_factory=AudioConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    keras: KerasConfig = field(default_factory=KerasConfig)
    sklearn: SklearnConfig = field(default_factory=SklearnConfig)
    cnn: CnnConfig = field(default_factory=CnnConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def replace(self, **sections: Mapping[str, Any]) -> "Config":
        """Return a copy with ``section={key: value}`` changes applied and validated."""
        return _apply(self, {name: dict(values) for name, values in sections.items()})

    def with_sections(self, **sections: Any) -> "Config":
        """Return a copy with whole sections replaced (``audio=other.audio``), validated."""
        result = dataclasses.replace(self, **sections)
        validate(result)
        return result


class Range(NamedTuple):
    """The values a numeric key may take: ``low`` to ``high``, each end included unless open."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    unit: str = ""

    def holds(self, value: float) -> bool:
        """Whether ``value`` is in range (NaN never is)."""
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return bool(above and below)

    def describe(self) -> str:
        return (f"{'(' if self.low_open else '['}{_number(self.low)}, {_number(self.high)}"
                f"{')' if self.high_open else ']'}{' ' + self.unit if self.unit else ''}")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


_FRACTION = Range(0, 1, low_open=True, high_open=True)  # a share of rows: (0, 1)
_RATE = Range(0, 1, high_open=True)  # dropout, label smoothing: [0, 1)
_COUNT = Range(1, 1_000_000)
_BATCH = Range(1, 10_000_000)
_LEARNING_RATE = Range(0, 10, low_open=True)
_SECONDS = Range(0, 1_000_000, unit="s")  # 0 = no limit; at most ~11.6 days

#: Every numeric key of every section (tuples: each element) and the values it may take. Checked
#: first (:func:`validate`), so NaN, infinities and absurd magnitudes never reach a job; the
#: section validators add what depends on other keys. tests/test_config.py checks that every
#: numeric key has an entry.
RANGES: dict[str, Range] = {
    "audio.sample_rate": Range(4000, 384_000, unit="Hz"),
    "audio.max_duration_s": _SECONDS,
    "audio.max_file_s": _SECONDS,
    "features.n_fft": Range(64, 65536),
    "features.hop_length": Range(1, 65536),
    "features.n_mfcc": Range(1, 1024),
    "features.n_chroma": Range(1, 120),
    "features.n_mels": Range(1, 1024),
    "features.contrast_bands": Range(1, 16),
    "features.contrast_fmin": Range(0, 20_000, low_open=True, unit="Hz"),
    "features.window_s": Range(0, 3600, unit="s"),
    "features.window_hop_s": Range(0, 3600, low_open=True, unit="s"),
    "features.db_floor": Range(-300, 0, high_open=True, unit="dB"),
    "features.speech_margin_db": Range(0, 120, unit="dB"),
    "extract.shard_size": _COUNT,
    "train.test_size": _FRACTION,
    "train.test_actors": Range(0, 2**31 - 1),
    "train.test_actor_fraction": _FRACTION,
    "train.seed": Range(0, 2**32 - 1),  # numpy's seed range
    "keras.hidden_layers": Range(1, 100_000),
    "keras.epochs": _COUNT,
    "keras.batch_size": _BATCH,
    "keras.learning_rate": _LEARNING_RATE,
    "keras.input_dropout": _RATE,
    "keras.dropout": _RATE,
    "keras.l2": Range(0, 100),
    "keras.label_smoothing": _RATE,
    "keras.patience": _COUNT,
    "keras.validation_fraction": _FRACTION,
    "sklearn.hidden_layer_sizes": Range(1, 100_000),
    "sklearn.alpha": Range(0, 1_000_000),
    "sklearn.learning_rate_init": _LEARNING_RATE,
    "sklearn.batch_size": _BATCH,
    "sklearn.max_iter": _BATCH,
    "sklearn.validation_fraction": _FRACTION,
    "sklearn.n_iter_no_change": _COUNT,
    "cnn.kernels": Range(1, 1024),
    "cnn.dilations": Range(1, 1024),
    "cnn.width": Range(1, 65536),
    "cnn.dense": Range(1, 65536),
    "cnn.dropout": _RATE,
    "cnn.relative_floor_db": Range(0, 300, unit="dB"),
    "cnn.epochs": _COUNT,
    "cnn.batch_size": _BATCH,
    "cnn.learning_rate": _LEARNING_RATE,
    "cnn.weight_decay": Range(0, 100),
    "cnn.label_smoothing": _RATE,
    "cnn.freq_masks": Range(0, 64),
    "cnn.freq_mask_bands": Range(0, 1024),
    "cnn.time_masks": Range(0, 64),
    "cnn.time_mask_fraction": _RATE,
    # Ranges or blocks of less than a second only multiply the bookkeeping (a block of 1e-9 s holds
    # no sample at all, so every file failed); blocks over an hour would break the memory bound.
    "score.chunk_s": Range(1, 1_000_000, unit="s"),
    "score.shard_s": Range(1, 1_000_000, unit="s"),
    "score.shard_files": _COUNT,
    "score.block_s": Range(1, 3600, unit="s"),
    "score.min_speech_ratio": Range(0, 1),
    "score.min_normalize_s": _SECONDS,
    "ray.num_cpus": Range(0, 100_000),  # 0 = all of this machine's
    "ray.max_retries": Range(0, 100),
}


def _coerce(section: str, key: str, value: Any, default: Any) -> Any:
    expected = type(default)
    if isinstance(default, tuple):
        if isinstance(value, str):
            # ``--set score.classes=angry,sad``: a comma-separated string stands for a list.
            value = [v.strip() for v in value.split(",")]
        elif isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{section}.{key} must be a list, got {value!r}")
        if default and not all(type(v) is type(default[0]) for v in value):
            raise ConfigError(f"{section}.{key} must be a list of {type(default[0]).__name__}, got {value!r}")
        return tuple(value)
    if expected is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{section}.{key} must be true or false, got {value!r}")
        return value
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, expected) or isinstance(value, bool) and expected is not bool:
        raise ConfigError(f"{section}.{key} must be of type {expected.__name__}, got {value!r}")
    return value


def _apply(config: Config, changes: Mapping[str, Mapping[str, Any]]) -> Config:
    sections = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    for section, values in changes.items():
        if section not in sections:
            raise ConfigError(f"unknown config section [{section}] (known: {', '.join(sections)})")
        if not isinstance(values, Mapping):
            raise ConfigError(f"[{section}] must be a table")
        current = sections[section]
        known = {f.name: getattr(current, f.name) for f in dataclasses.fields(current)}
        updates = {}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"unknown config key {section}.{key} (known: {', '.join(known)})")
            updates[key] = _coerce(section, key, value, known[key])
        sections[section] = dataclasses.replace(current, **updates)
    result = Config(**sections)
    validate(result)
    return result


def validate(config: Config) -> None:
    """Raise :class:`ConfigError` when a value is out of range: every numeric key against
    :data:`RANGES` first, then one validator per section."""
    for check in (_check_ranges, _check_audio, _check_features, _check_extract, _check_train, _check_networks,
                  _check_score):
        check(config)


def _check_ranges(config: Config) -> None:
    for name, allowed in RANGES.items():
        section, key = name.split(".")
        value = getattr(getattr(config, section), key)
        values = value if isinstance(value, tuple) else (value,)
        if all(allowed.holds(v) for v in values):
            continue
        kind = "whole number" if isinstance(values[0], int) else "number"
        if isinstance(value, tuple):
            raise ConfigError(f"{name} must list {kind}s in {allowed.describe()}, got "
                              f"[{', '.join(_toml_value(v) for v in value)}]")
        raise ConfigError(f"{name} must be a {kind} in {allowed.describe()}, got {_toml_value(value)}")


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def _check_audio(config: Config) -> None:
    audio = config.audio
    if not audio.extensions or not all(e.startswith(".") for e in audio.extensions):
        raise ConfigError("audio.extensions must be a non-empty list like ['.wav', '.flac']")


def _check_features(config: Config) -> None:
    feats, rate = config.features, config.audio.sample_rate
    _one_of("features.recipe", feats.recipe, RECIPES)
    if feats.n_fft < 64 or feats.n_fft & (feats.n_fft - 1):
        raise ConfigError(f"features.n_fft must be a power of two >= 64, got {feats.n_fft}")
    if not 0 < feats.hop_length <= feats.n_fft:
        raise ConfigError("features.hop_length must be in (0, n_fft]")
    if feats.n_mfcc > feats.n_mels:
        raise ConfigError("features.n_mfcc cannot exceed features.n_mels")
    if feats.window_s and feats.window_hop_s > feats.window_s:
        raise ConfigError("features.window_hop_s cannot exceed features.window_s (frames would be skipped)")
    if feats.recipe in PITCH_RECIPES and rate / 60.0 >= feats.n_fft - 1:
        # yin needs two periods of its lowest pitch (60 Hz) inside one frame.
        raise ConfigError(f"features.n_fft={feats.n_fft} is too short for the {feats.recipe} recipe's pitch tracking "
                          f"at {rate} Hz; use at least {_next_pow2(rate / 60.0 + 1)}")
    _one_of("features.speech_detector", feats.speech_detector, SPEECH_DETECTORS)
    if feats.recipe == "rich" and feats.speech_detector == "bands" and feats.n_mels != 128:
        # Its bands are mel bands 8..88 of 128 (~190 Hz - 3 kHz at 16 kHz); only the rich recipe
        # judges speech.
        raise ConfigError(f"features.speech_detector = \"bands\" needs features.n_mels = 128, got {feats.n_mels} "
                          "(or set features.speech_detector = \"energy\")")


def _check_extract(config: Config) -> None:
    extract = config.extract
    if not all(isinstance(name, str) for name in extract.augment):
        raise ConfigError(f"extract.augment must be a list of names, got {list(extract.augment)}")
    if len(set(extract.augment)) != len(extract.augment):
        raise ConfigError(f"extract.augment names an augmentation twice: {', '.join(extract.augment)}")
    for name in extract.augment:
        parse_augmentation(name)


def _check_train(config: Config) -> None:
    train = config.train
    if not train.models or not set(train.models) <= set(FRAMEWORKS) or len(set(train.models)) != len(train.models):
        raise ConfigError(f"train.models must list each of {', '.join(FRAMEWORKS)} at most once, got {train.models}")
    _one_of("train.array_dtype", train.array_dtype, ARRAY_DTYPES)
    _one_of("train.split", train.split, SPLITS)
    _one_of("train.absent_classes", train.absent_classes, ABSENT_CLASSES)
    if train.split == "corpus" and not train.test_corpus:
        raise ConfigError("train.split = \"corpus\" needs train.test_corpus (--test-corpus NAME)")
    _one_of("train.normalize", train.normalize, TRAIN_NORMALIZE)
    _one_of("train.narrowband", train.narrowband, NARROWBAND)


def _check_networks(config: Config) -> None:
    # Each number's range is in RANGES; what is left: lists that must not be empty or must match.
    if not config.keras.hidden_layers or not config.sklearn.hidden_layer_sizes:
        raise ConfigError("hidden layer sizes must be positive integers")
    cnn = config.cnn
    if not cnn.kernels or len(cnn.kernels) != len(cnn.dilations):
        raise ConfigError("cnn.kernels and cnn.dilations must be lists of positive integers of the same length")


def _check_score(config: Config) -> None:
    score = config.score
    _one_of("score.framework", score.framework, SCORE_FRAMEWORKS)
    _one_of("score.channels", score.channels, CHANNELS)
    _one_of("score.normalize", score.normalize, SCORE_NORMALIZE)
    # Whether the names are the bundle's is checked once the bundle is loaded (models.classes).
    if not all(isinstance(c, str) and c.strip() for c in score.classes):
        raise ConfigError(f"score.classes must be a list of class names like ['angry', 'sad'], "
                          f"got {list(score.classes)}")
    if len(set(score.classes)) != len(score.classes):
        raise ConfigError(f"score.classes names a class twice: {', '.join(score.classes)}")


def _next_pow2(value: float) -> int:
    power = 1
    while power <= value:
        power *= 2
    return power


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse ``section.key=value``; the value is read as TOML, else kept as a string."""
    if "=" not in text:
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    dotted, raw = text.split("=", 1)
    parts = dotted.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return parts[0], parts[1], value


def load_config(path: Path | None = None, *, overrides: Iterable[str] = (),
                changes: Mapping[str, Mapping[str, Any]] | None = None) -> Config:
    """Load defaults, then the TOML file at ``path`` (if any), then ``overrides`` (``--set``), then
    ``changes`` (a command's own options, section -> {key: value}): merged, then checked once.

    Raises
    ------
    ConfigError
        On a missing or malformed file, an unknown key, or a value of the wrong type.
    """
    merged: dict[str, dict[str, Any]] = {}
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        for section, values in data.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: top-level key {section!r} must be a [section]")
            merged.setdefault(section, {}).update(values)
    for text in overrides:
        section, key, value = parse_override(text)
        merged.setdefault(section, {})[key] = value
    for section, values in (changes or {}).items():
        merged.setdefault(section, {}).update(values)
    return _apply(Config(), merged)


def config_to_dict(config: Config) -> dict[str, dict[str, Any]]:
    """Plain nested dict of the config (tuples become lists), JSON- and TOML-ready."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_from_dict(data: Mapping[str, Mapping[str, Any]]) -> Config:
    """Inverse of :func:`config_to_dict`; unknown sections are ignored for forward compat."""
    known = {f.name for f in dataclasses.fields(Config)}
    return _apply(Config(), {k: v for k, v in data.items() if k in known})


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # JSON's ASCII escapes of non-BMP characters are surrogate pairs, which TOML
        # rejects; write them raw. DEL is the one raw character TOML forbids that JSON keeps.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def config_to_toml(config: Config) -> str:
    """The resolved config as TOML text that :func:`load_config` reads back unchanged."""
    lines = ["# Resolved ser-batch configuration (defaults + file + --set overrides)."]
    for section, values in config_to_dict(config).items():
        lines.append(f"\n[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
    return "\n".join(lines) + "\n"



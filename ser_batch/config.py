"""Configuration: TOML files loaded into frozen dataclasses, with ``--set`` overrides.

Every job takes a :class:`Config`, one object from the command line to the run record: merged
once (:func:`load_config`), sent whole to the workers, and written out only at the edges (the
resolved config next to every output, :func:`config_to_toml`; manifests and table metadata,
:func:`config_to_dict`), so a result can always be traced to its settings. What each key allows
(a range, or names) is declared beside it (:func:`ser_batch.config_rules.setting`).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from ser_batch.config_rules import (
    BATCH,
    COUNT,
    FRACTION,
    LEARNING_RATE,
    RATE,
    SECONDS,
    Range,
    allowed_values,
    check,
    coerce,
    setting,
    toml_value,
)
from ser_batch.errors import ConfigError

#: Feature recipes (``features.recipe``; the recipes themselves: :mod:`ser_batch.features.recipes`).
RECIPE_NAMES = ("fast", "classic", "rich")
#: ``features.speech_detector``: which frames of a window count as speech (its ``speech_ratio``):
#: "energy" (level over a local noise floor) or "bands" (band SNR, robust to steady noise; see
#: :mod:`ser_batch.features.speech`).
SPEECH_DETECTORS = ("energy", "bands")
#: The models a bundle can hold (``train.models``), and the name of their averaged ensemble.
#: ``keras`` and ``sklearn`` see window vectors; ``cnn`` sees each window's log-mel frames
#: (:mod:`ser_batch.models.sequence`); ``ge2e`` each window's embedding by a pretrained speaker
#: encoder (:mod:`ser_batch.features.ge2e`: an option, milliseconds of CPU per second of audio).
FRAMEWORKS = ("keras", "sklearn", "cnn", "ge2e")
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
#: ``score.normalize``: z-score each stream by its own speech windows' statistics ("file"), or
#: every stream by the statistics of the whole archive's speech windows ("archive": a first pass).
SCORE_NORMALIZE = ("none", "file", "archive")
#: ``extract.embeddings``: pretrained encoders whose window embeddings extraction can store.
EMBEDDINGS = ("ge2e",)
#: ``cnn.pooling``: the frames a window's encoder statistics are taken over.
CNN_POOLINGS = ("speech", "all")
#: ``cnn.augment``: noises, reverberation and gain applied to training frames
#: (:mod:`ser_batch.models.frame_augment`).
CNN_AUGMENTATIONS = ("babble", "white", "pink", "brown", "hum", "tones", "reverb", "gain")


@dataclass(frozen=True)
class AudioConfig:
    """How audio is decoded before features are computed."""

    #: Every file is resampled to this rate (Hz) before feature extraction.
    sample_rate: int = setting(16000, Range(4000, 384_000, unit="Hz"))
    #: File name endings (lower case) that discovery treats as audio. The one list of them:
    #: ``extract --help`` prints it, configs/default.toml and the README refer to it.
    extensions: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".opus")
    #: Longest stretch decoded per file, seconds; 0 means the whole file.
    max_duration_s: float = setting(0.0, SECONDS)
    #: Files longer than this (seconds) become error rows instead of being decoded whole:
    #: a recording of hours would need gigabytes in one worker. 0 = no limit.
    max_file_s: float = setting(1800.0, SECONDS)


@dataclass(frozen=True)
class FeatureConfig:
    """The feature recipe and its STFT parameters (samples at ``audio.sample_rate``)."""

    recipe: str = setting("fast", RECIPE_NAMES)
    n_fft: int = setting(2048, Range(64, 65536))
    hop_length: int = setting(512, Range(1, 65536))
    n_mfcc: int = setting(40, Range(1, 1024))
    n_chroma: int = setting(12, Range(1, 120))
    n_mels: int = setting(128, Range(1, 1024))
    contrast_bands: int = setting(6, Range(1, 16))
    #: Lower edge of the first spectral-contrast octave band, Hz. Halved (octave by octave)
    #: when the top band would pass Nyquist, e.g. at 8 kHz; see ``features.contrast_fmin``.
    contrast_fmin: float = setting(200.0, Range(0, 20_000, low_open=True, unit="Hz"))
    #: ``fast`` only: estimate the tuning offset for chroma as librosa does (cheap version).
    estimate_tuning: bool = True
    #: ``rich`` only: sliding windows pooled besides the whole clip, seconds; 0 = clip only.
    window_s: float = setting(1.5, Range(0, 3600, unit="s"))
    window_hop_s: float = setting(0.5, Range(0, 3600, low_open=True, unit="s"))
    #: ``rich`` only: fixed floor of the dB scales (mel, MFCC, contrast), dB re full scale power.
    #: A fixed reference keeps every window's features local (librosa's default floor is 80 dB
    #: below the loudest moment of the whole signal).
    db_floor: float = setting(-80.0, Range(-300, 0, high_open=True, unit="dB"))
    #: ``rich`` only: a frame is speech when its level is this many dB above the local noise
    #: floor (see ``ser_batch.features.windows``); windows store the fraction of such frames.
    speech_margin_db: float = setting(6.0, Range(0, 120, unit="dB"))
    #: ``rich`` only: the speech detector, one of :data:`SPEECH_DETECTORS`. "energy": the level
    #: test above; "bands": also a band-SNR test on mel bands 8..88 (~190 Hz - 3 kHz), which finds
    #: speech in steady noise the level test loses (its own, stricter, level margin of 10 dB).
    #: Bundles written before the key existed used "energy" (``Bundle.config`` keeps that).
    speech_detector: str = setting("bands", SPEECH_DETECTORS)


@dataclass(frozen=True)
class ExtractConfig:
    """The parallel feature-extraction job."""

    #: Files per Ray task (one Parquet part each).
    shard_size: int = setting(32, COUNT)
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
    #: ``rich`` only: also store each window's embedding by a pretrained encoder, for ``train --models
    #: ...,ge2e`` (column ``ge2e``): "ge2e", Resemblyzer's GE2E speaker encoder (its weights from the
    #: resemblyzer package: ``pip install --no-deps resemblyzer``). Costs ~15-40 ms of CPU per second of
    #: audio, 10-40x the rest of the recipe. Empty: none.
    embeddings: tuple[str, ...] = setting((), EMBEDDINGS)


@dataclass(frozen=True)
class TrainConfig:
    """The training job: which models, which split."""

    #: Models to fit: any of :data:`FRAMEWORKS`.
    models: tuple[str, ...] = setting(("keras", "sklearn"), FRAMEWORKS)
    #: The bundle's ensemble (``--framework both``, the default of every command) in its plain sets:
    #: its members among ``models``, each ``name`` or ``name:weight``; their probabilities are
    #: averaged with those weights. Empty: every model, equal weights. ``ensemble_normalized``: the
    #: same for the normalised sets (``--normalize file`` and ``archive``).
    ensemble: tuple[str, ...] = ()
    ensemble_normalized: tuple[str, ...] = ()
    #: "speaker" (whole actors held out), "random" (stratified, the original recipe) or
    #: "none" (train on every row; for a final model whose accuracy was measured before).
    split: str = setting("speaker", SPLITS)
    #: Fraction of rows held out by the random split.
    test_size: float = setting(0.3, FRACTION)
    #: The corpus held out whole by ``split = "corpus"``.
    test_corpus: str = ""
    #: "mask": the Keras ANN's softmax, in the loss, covers only the classes of each row's corpus, so
    #: a corpus without ``calm`` never pushes ``calm`` down; "none": every class for every row.
    #: (The scikit-learn MLP has no such loss: it sees every class for every row either way.)
    absent_classes: str = setting("mask", ABSENT_CLASSES)
    #: Actors held out by the speaker split.
    test_actors: tuple[int, ...] = setting((17, 18, 19, 20), Range(0, 2**31 - 1))
    #: Used instead of ``test_actors`` when that is empty: this fraction of actors, drawn with ``seed``.
    test_actor_fraction: float = setting(0.2, FRACTION)
    #: Train on the sliding-window vectors when the features have them (``rich``) and
    #: predict a clip as the mean of its windows' probabilities.
    use_segments: bool = True
    seed: int = setting(42, Range(0, 2**32 - 1))  # numpy's seed range
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
    array_dtype: str = setting("float32", ARRAY_DTYPES)
    #: "speaker": besides the global models, fit sets on window features z-scored by each
    #: actor's own statistics (per band, never pooled across the split); "none": global only.
    normalize: str = setting("none", TRAIN_NORMALIZE)
    #: How telephone-band rows (8 kHz inputs, telephone copies) are used: "separate" fits
    #: "narrow" sets on them and the wideband sets on the rest; "mixed" fits one wideband set
    #: on all rows and no narrow set.
    narrowband: str = setting("separate", NARROWBAND)


@dataclass(frozen=True)
class KerasConfig:
    """The Keras ANN: Dense layers with ReLU, softmax output, Adam, categorical cross-entropy.

    Defaults were chosen by cross-validation inside the training actors (docs/accuracy.md):
    without dropout and L2 the 300-50-20-10 network overfits and early stopping on a small
    validation part stops it too early.
    """

    hidden_layers: tuple[int, ...] = setting((300, 50, 20, 10), Range(1, 100_000))
    epochs: int = setting(50, COUNT)
    batch_size: int = setting(128, BATCH)
    learning_rate: float = setting(0.001, LEARNING_RATE)
    #: Dropout on the input features.
    input_dropout: float = setting(0.2, RATE)
    #: Dropout after each hidden layer (missing entries mean 0).
    dropout: tuple[float, ...] = setting((0.5, 0.2, 0.0, 0.0), RATE)
    l2: float = setting(0.0001, Range(0, 100))
    label_smoothing: float = setting(0.1, RATE)
    #: Stop when the loss on a stratified validation part stops improving (and keep the
    #: best weights); off by default: a fixed number of epochs generalised better.
    early_stopping: bool = False
    patience: int = setting(30, COUNT)
    validation_fraction: float = setting(0.15, FRACTION)


@dataclass(frozen=True)
class CnnConfig:
    """The frame network (``cnn``, :mod:`ser_batch.models.sequence`): a convolutional encoder run once
    over a stream's log-mel frames (normalised per frame), each window's encoder frames pooled (mean
    and standard deviation, over the frames judged speech), a Dense ReLU layer and a softmax.

    Trained on random window-long crops of the training rows' frames (with the encoder's context),
    augmented in the frame domain and masked (SpecAugment), AdamW with a cosine decay, label
    smoothing. Defaults: chosen on the transfer yardstick (docs/accuracy.md).
    """

    #: Kernel size and dilation of each convolution of the encoder (batch norm, ReLU); each
    #: ``dilation * (kernel - 1)`` must be even (the encoder's frames are centred).
    kernels: tuple[int, ...] = setting((5, 3, 3, 3), Range(1, 1024))
    dilations: tuple[int, ...] = setting((1, 2, 3, 1), Range(1, 1024))
    width: int = setting(128, Range(1, 65536))
    dense: int = setting(128, Range(1, 65536))
    dropout: float = setting(0.3, RATE)
    #: Per-frame normalisation (:func:`ser_batch.features.melframes.normalize_frames`): values raised
    #: to the loudest value within ``norm_context_s`` minus this many dB (0: only the extraction's
    #: fixed floor, ``features.db_floor``), then each band's mean within ``norm_context_s`` subtracted.
    relative_floor_db: float = setting(50.0, Range(0, 300, unit="dB"))
    norm_context_s: float = setting(1.0, Range(0, 30, unit="s"))
    #: A window's encoder frames pooled over its frames judged speech ("speech"; all of them when
    #: it has none) or over all its frames ("all").
    pooling: str = setting("speech", CNN_POOLINGS)
    #: Training augmentation in the frame domain (:mod:`ser_batch.models.frame_augment`), drawn
    #: afresh for every crop: any of :data:`CNN_AUGMENTATIONS`. A crop gets one of the noises named
    #: with ``noise_prob`` at an SNR drawn from ``snr_db``, reverberation with ``reverb_prob``
    #: (reverberation time from ``rt60_s``), a gain change of up to ``gain_db`` with ``gain_prob``.
    augment: tuple[str, ...] = setting(CNN_AUGMENTATIONS, CNN_AUGMENTATIONS)
    noise_prob: float = setting(0.5, Range(0, 1))
    snr_db: tuple[float, ...] = setting((0.0, 20.0), Range(-30, 60, unit="dB"))
    reverb_prob: float = setting(0.3, Range(0, 1))
    rt60_s: tuple[float, ...] = setting((0.2, 1.0), Range(0.05, 3, unit="s"))
    gain_prob: float = setting(0.3, Range(0, 1))
    gain_db: float = setting(10.0, Range(0, 60, unit="dB"))
    epochs: int = setting(30, COUNT)
    batch_size: int = setting(64, BATCH)
    learning_rate: float = setting(0.002, LEARNING_RATE)
    weight_decay: float = setting(0.0001, Range(0, 100))
    label_smoothing: float = setting(0.05, RATE)
    #: SpecAugment: this many frequency masks of up to ``freq_mask_bands`` bands and time masks
    #: of up to ``time_mask_fraction`` of the crop, per training crop.
    freq_masks: int = setting(2, Range(0, 64))
    freq_mask_bands: int = setting(8, Range(0, 1024))
    time_masks: int = setting(2, Range(0, 64))
    time_mask_fraction: float = setting(0.1, RATE)


@dataclass(frozen=True)
class SklearnConfig:
    """scikit-learn's MLPClassifier, in a Pipeline after a StandardScaler."""

    hidden_layer_sizes: tuple[int, ...] = setting((512,), Range(1, 100_000))
    #: L2 penalty; strong regularisation of one wide layer beat deeper nets (docs/accuracy.md).
    alpha: float = setting(1.0, Range(0, 1_000_000))
    learning_rate_init: float = setting(0.001, LEARNING_RATE)
    batch_size: int = setting(200, BATCH)
    max_iter: int = setting(200, BATCH)
    early_stopping: bool = False
    validation_fraction: float = setting(0.15, FRACTION)
    n_iter_no_change: int = setting(10, COUNT)


@dataclass(frozen=True)
class ScoreConfig:
    """The batch scoring job (``ser-batch score``)."""

    #: Default output folder of ``score``.
    out: str = "output/scores"
    #: "keras", "sklearn" or "both" (the average of the two models' probabilities).
    framework: str = setting(ENSEMBLE, SCORE_FRAMEWORKS)
    #: "mix": channels averaged into one stream; "split": each channel scored as its own stream.
    channels: str = setting("mix", CHANNELS)
    #: Files longer than this (seconds) are cut into chunks (ranges of windows) that separate tasks score.
    chunk_s: float = setting(600.0, Range(1, 1_000_000, unit="s"))
    #: Audio per task (seconds): shards are balanced by duration, not by file count.
    shard_s: float = setting(300.0, Range(1, 1_000_000, unit="s"))
    #: Most files per task (bounds the per-task bookkeeping for archives of tiny files).
    shard_files: int = setting(256, COUNT)
    #: Seconds decoded per block inside a task (bounds a worker's memory, whatever the file length).
    block_s: float = setting(60.0, Range(1, 3600, unit="s"))
    #: Windows with a smaller fraction of speech frames get no label and stay out of summaries.
    min_speech_ratio: float = setting(0.3, Range(0, 1))
    #: "file": z-score each stream (file, or channel with channels = "split") by the statistics
    #: of its own speech windows and score it with the bundle's normalised models; "archive": z-score
    #: every stream by the statistics of all the archive's speech windows (a first pass over the
    #: archive computes them; for archives of short clips from many voices); "none": as extracted.
    normalize: str = setting("none", SCORE_NORMALIZE)
    #: Streams with less speech than this (seconds) are scored by the global models instead
    #: (too few windows for trustworthy statistics); the files table says which was used.
    min_normalize_s: float = setting(20.0, SECONDS)
    #: Score over these of the bundle's classes only (``--classes angry,happy,neutral,sad``):
    #: probabilities renormalised over them, columns only for them. Empty: all the bundle's classes.
    classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class RayConfig:
    """Where jobs run."""

    #: Cluster address; empty means an embedded local Ray (or ``RAY_ADDRESS`` when set).
    address: str = ""
    #: CPUs for the embedded local Ray; 0 means all of this machine's.
    num_cpus: int = setting(0, Range(0, 100_000))
    #: Times a failed task is retried (its writes are idempotent).
    max_retries: int = setting(3, Range(0, 100))

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


#: Every numeric key (``section.key``) and its range, as declared beside it (tests/test_config.py
#: checks that every numeric key has one).
RANGES: dict[str, Range] = {k: v for k, v in allowed_values(Config()).items() if isinstance(v, Range)}


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
            updates[key] = coerce(section, key, value, known[key])
        sections[section] = dataclasses.replace(current, **updates)
    result = Config(**sections)
    validate(result)
    return result


def validate(config: Config) -> None:
    """Raise :class:`ConfigError` when a value is not allowed (:func:`ser_batch.config_rules.check`)."""
    check(config)


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


def config_to_toml(config: Config) -> str:
    """The resolved config as TOML text that :func:`load_config` reads back unchanged."""
    lines = ["# Resolved ser-batch configuration (defaults + file + --set overrides)."]
    for section, values in config_to_dict(config).items():
        lines.append(f"\n[{section}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
    return "\n".join(lines) + "\n"



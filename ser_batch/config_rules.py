"""The rules settings follow: what each key allows, how a TOML value becomes the key's type, and
the checks that tie keys together.

What a key allows is declared beside it, in :mod:`ser_batch.config`, with :func:`setting`: a
:class:`Range` for a number (each element of a list of numbers), or the names a choice may take
(each element of a list of names). :func:`check` tests every key against that first, so NaN,
infinities, absurd magnitudes and unknown names never reach a job, then the rules that involve
several keys.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

from ser_batch.augmentations import parse_augmentation
from ser_batch.errors import ConfigError

#: Recipes that track pitch (their ``n_fft`` must hold two periods of 60 Hz).
PITCH_RECIPES = ("rich",)
#: Metadata key of a setting's allowed values (see :func:`setting`).
ALLOWED = "allowed"


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


FRACTION = Range(0, 1, low_open=True, high_open=True)  # a share of rows: (0, 1)
RATE = Range(0, 1, high_open=True)  # dropout, label smoothing: [0, 1)
COUNT = Range(1, 1_000_000)
BATCH = Range(1, 10_000_000)
LEARNING_RATE = Range(0, 10, low_open=True)
SECONDS = Range(0, 1_000_000, unit="s")  # 0 = no limit; at most ~11.6 days


def setting(default: Any, allowed: Range | tuple[str, ...] | None = None) -> Any:
    """A key of a settings section: its default and what it allows (a :class:`Range`, or names)."""
    return dataclasses.field(default=default, metadata={ALLOWED: allowed} if allowed is not None else {})


def allowed_values(config: Any) -> dict[str, Range | tuple[str, ...]]:
    """``section.key`` -> what it allows, for every key of ``config`` (a :class:`ser_batch.config.Config`)
    that declares it."""
    return {f"{section.name}.{key.name}": key.metadata[ALLOWED]
            for section in dataclasses.fields(config)
            for key in dataclasses.fields(getattr(config, section.name)) if ALLOWED in key.metadata}


def coerce(section: str, key: str, value: Any, default: Any) -> Any:
    """``value`` (from TOML or ``--set``) as the type of the key's ``default``."""
    expected = type(default)
    if isinstance(default, tuple):
        if isinstance(value, str):
            # ``--set score.classes=angry,sad``: a comma-separated string stands for a list.
            value = [v.strip() for v in value.split(",")]
        elif isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{section}.{key} must be a list, got {value!r}")
        if default and isinstance(default[0], float):  # [0, 20] for floats: ints are fine
            value = [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
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


def check(config: Any) -> None:
    """Raise :class:`ConfigError` when a value is not allowed: every number against its range first,
    then every name, then the rules that tie keys together."""
    allowed = allowed_values(config)
    for name, rule in allowed.items():
        if isinstance(rule, Range):
            _check_range(name, _value(config, name), rule)
    for name, rule in allowed.items():
        if not isinstance(rule, Range):
            _check_names(name, _value(config, name), rule, may_be_empty=name in _EMPTY_ALLOWED)
    for rules in (_check_audio, _check_features, _check_extract, _check_train, _check_networks, _check_score):
        rules(config)


def _value(config: Any, name: str) -> Any:
    section, key = name.split(".")
    return getattr(getattr(config, section), key)


def _check_range(name: str, value: Any, allowed: Range) -> None:
    values = value if isinstance(value, tuple) else (value,)
    if all(allowed.holds(v) for v in values):
        return
    kind = "whole number" if isinstance(values[0], int) else "number"
    if isinstance(value, tuple):
        raise ConfigError(f"{name} must list {kind}s in {allowed.describe()}, got "
                          f"[{', '.join(toml_value(v) for v in value)}]")
    raise ConfigError(f"{name} must be a {kind} in {allowed.describe()}, got {toml_value(value)}")


#: Lists of names that may be empty (``cnn.augment = []``: no augmentation).
_EMPTY_ALLOWED = {"cnn.augment", "extract.embeddings"}


def _check_names(name: str, value: Any, allowed: tuple[str, ...], *, may_be_empty: bool = False) -> None:
    if isinstance(value, tuple):  # a list of names: each allowed, each at most once, at least one (unless optional)
        if (not value and not may_be_empty) or not set(value) <= set(allowed) or len(set(value)) != len(value):
            raise ConfigError(f"{name} must list each of {', '.join(allowed)} at most once, got {value}")
    elif value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def _check_audio(config: Any) -> None:
    audio = config.audio
    if not audio.extensions or not all(e.startswith(".") for e in audio.extensions):
        raise ConfigError("audio.extensions must be a non-empty list like ['.wav', '.flac']")


def _check_features(config: Any) -> None:
    feats, rate = config.features, config.audio.sample_rate
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
    if feats.recipe == "rich" and feats.speech_detector == "bands" and feats.n_mels != 128:
        # Its bands are mel bands 8..88 of 128 (~190 Hz - 3 kHz at 16 kHz); only the rich recipe
        # judges speech.
        raise ConfigError(f"features.speech_detector = \"bands\" needs features.n_mels = 128, got {feats.n_mels} "
                          "(or set features.speech_detector = \"energy\")")


def _check_extract(config: Any) -> None:
    extract = config.extract
    if not all(isinstance(name, str) for name in extract.augment):
        raise ConfigError(f"extract.augment must be a list of names, got {list(extract.augment)}")
    if len(set(extract.augment)) != len(extract.augment):
        raise ConfigError(f"extract.augment names an augmentation twice: {', '.join(extract.augment)}")
    for name in extract.augment:
        parse_augmentation(name)


def _check_train(config: Any) -> None:
    train = config.train
    if train.split == "corpus" and not train.test_corpus:
        raise ConfigError("train.split = \"corpus\" needs train.test_corpus (--test-corpus NAME)")
    # Names and weights here; that the members are among train.models is checked by train, once the
    # command's own --models has been applied.
    models = dataclasses.fields(train)[0].metadata[ALLOWED]  # every framework
    parse_ensemble(train.ensemble, models)
    parse_ensemble(train.ensemble_normalized, models)


def parse_ensemble(entries: Any, models: Any) -> dict[str, float]:
    """The weights of ``train.ensemble`` (``["cnn:0.7", "keras:0.3"]``, or names alone for equal
    weights; empty: every one of ``models``), summing to 1, in ``models`` order.

    Raises
    ------
    ConfigError
        On a name that is not among ``models``, a weight that is not a positive number, or a name twice.
    """
    models = list(models)
    weights: dict[str, float] = {}
    for entry in entries or models:
        name, _, value = str(entry).partition(":")
        if name not in models:
            raise ConfigError(f"train.ensemble names {name!r}, which is not among the models trained "
                              f"({', '.join(models)}): add it to --models, or leave it out of the ensemble")
        if name in weights:
            raise ConfigError(f"train.ensemble names {name!r} twice")
        try:
            weight = float(value) if value else 1.0
        except ValueError:
            raise ConfigError(f"train.ensemble entry {entry!r}: the weight must be a number") from None
        if not weight > 0 or weight == float("inf"):
            raise ConfigError(f"train.ensemble entry {entry!r}: the weight must be a positive number")
        weights[name] = weight
    total = sum(weights.values())
    return {m: weights[m] / total for m in models if m in weights}


def _check_networks(config: Any) -> None:
    # Each number's range is declared beside it; what is left: lists that must not be empty or must match.
    if not config.keras.hidden_layers or not config.sklearn.hidden_layer_sizes:
        raise ConfigError("hidden layer sizes must be positive integers")
    cnn = config.cnn
    if not cnn.kernels or len(cnn.kernels) != len(cnn.dilations):
        raise ConfigError("cnn.kernels and cnn.dilations must be lists of positive integers of the same length")
    if any(d * (k - 1) % 2 for k, d in zip(cnn.kernels, cnn.dilations)):
        raise ConfigError(f"cnn.kernels {list(cnn.kernels)} with cnn.dilations {list(cnn.dilations)}: each "
                          "dilation * (kernel - 1) must be even (odd kernels, or even dilations)")
    for key in ("snr_db", "rt60_s"):
        pair = getattr(cnn, key)
        if len(pair) != 2 or pair[0] > pair[1]:
            raise ConfigError(f"cnn.{key} must be [low, high] with low <= high, got {list(pair)}")


def _check_score(config: Any) -> None:
    score = config.score
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


def toml_value(value: Any) -> str:
    """``value`` written as TOML (a number, string, boolean or list of them)."""
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # JSON's ASCII escapes of non-BMP characters are surrogate pairs, which TOML
        # rejects; write them raw. DEL is the one raw character TOML forbids that JSON keeps.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")

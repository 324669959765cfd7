"""Tests for :mod:`ser_batch.config`: defaults, TOML files, ``--set`` overrides, round trips."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from ser_batch.config import (
    RANGES,
    Config,
    config_from_dict,
    config_to_dict,
    config_to_toml,
    load_config,
    parse_override,
)
from ser_batch.errors import ConfigError, SerBatchError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


# --- defaults and files ------------------------------------------------------


def test_defaults() -> None:
    config = Config()
    assert config.audio.sample_rate == 16_000
    assert config.audio.max_duration_s == 0.0
    assert {".wav", ".flac", ".ogg", ".mp3"} <= set(config.audio.extensions)
    assert all(e.startswith(".") and e == e.lower() for e in config.audio.extensions)
    feats = config.features
    assert (feats.recipe, feats.n_fft, feats.hop_length) == ("fast", 2048, 512)
    assert (feats.n_mfcc, feats.n_chroma, feats.n_mels, feats.contrast_bands) == (40, 12, 128, 6)
    assert feats.contrast_fmin == 200.0 and feats.estimate_tuning is True
    assert config.extract.shard_size == 32 and config.extract.out == "output/features"
    assert config.extract.labels_csv == ""
    assert (config.ray.address, config.ray.num_cpus, config.ray.max_retries) == ("", 0, 3)


def test_load_config_without_file_gives_defaults() -> None:
    assert load_config() == Config()


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().audio.sample_rate = 8000  # type: ignore[misc]


def test_default_toml_matches_built_in_defaults() -> None:
    # configs/default.toml documents every default; it must not drift from the code.
    assert load_config(CONFIGS / "default.toml") == Config()


def test_telephony_toml() -> None:
    config = load_config(CONFIGS / "telephony.toml")
    assert config.audio.sample_rate == 8000
    assert (config.features.n_fft, config.features.hop_length) == (1024, 256)
    assert config.features.contrast_fmin == 100.0
    assert config.extract.out == "output/features-telephony"
    # Same analysis windows in seconds as the default at twice the rate.
    default = Config()
    assert config.features.n_fft / config.audio.sample_rate == default.features.n_fft / default.audio.sample_rate


def test_cluster_toml() -> None:
    config = load_config(CONFIGS / "cluster.toml")
    assert config.extract.shard_size == 128
    assert config.ray.address == "" and config.ray.max_retries == 5  # the cluster: --address or RAY_ADDRESS
    assert config.features == Config().features  # untouched sections keep their defaults


def test_every_shipped_config_loads() -> None:
    names = sorted(p.name for p in CONFIGS.glob("*.toml"))
    assert {"default.toml", "telephony.toml", "cluster.toml"} <= set(names)
    for path in CONFIGS.glob("*.toml"):
        resolved = config_to_dict(load_config(path))
        written = tomllib.loads(path.read_text(encoding="utf-8"))
        for section, values in written.items():  # every value the file sets is the one in force
            for key, value in values.items():
                got = resolved[section][key]
                assert got == (list(value) if isinstance(value, tuple) else value), (path.name, section, key)


def test_overrides_apply_after_file() -> None:
    config = load_config(CONFIGS / "telephony.toml", overrides=["audio.sample_rate=11025"])
    assert config.audio.sample_rate == 11025
    assert config.features.n_fft == 1024  # the rest of the file still applies


# --- --set overrides ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("audio.sample_rate=8000", ("audio", "sample_rate", 8000)),
        ("features.contrast_fmin=150.5", ("features", "contrast_fmin", 150.5)),
        ("features.estimate_tuning=false", ("features", "estimate_tuning", False)),
        ('audio.extensions=[".wav", ".flac"]', ("audio", "extensions", [".wav", ".flac"])),
        ('features.recipe="classic"', ("features", "recipe", "classic")),
        ("features.recipe=classic", ("features", "recipe", "classic")),  # bare word: kept as string
        ("extract.out=out/my features", ("extract", "out", "out/my features")),
        (" extract.shard_size = 7 ", ("extract", "shard_size", 7)),
        ("extract.out=a=b", ("extract", "out", "a=b")),  # only the first '=' splits
    ],
)
def test_parse_override_values(text: str, expected: tuple[str, str, object]) -> None:
    assert parse_override(text) == expected


def test_overrides_of_every_type() -> None:
    config = load_config(overrides=[
        "audio.sample_rate=8000",
        "audio.max_duration_s=2",  # int accepted for a float
        'audio.extensions=[".wav"]',
        "features.recipe=classic",
        "features.estimate_tuning=false",
        "features.contrast_fmin=100.0",
        "extract.shard_size=4",
        "extract.out=somewhere/else",
        "ray.address=auto",
    ])
    assert config.audio.sample_rate == 8000
    assert config.audio.max_duration_s == 2.0 and isinstance(config.audio.max_duration_s, float)
    assert config.audio.extensions == (".wav",)
    assert config.features.recipe == "classic"
    assert config.features.estimate_tuning is False
    assert config.features.contrast_fmin == 100.0
    assert config.extract.shard_size == 4 and config.extract.out == "somewhere/else"
    assert config.ray.address == "auto"


def test_single_string_becomes_one_element_list() -> None:
    assert load_config(overrides=["audio.extensions=.wav"]).audio.extensions == (".wav",)


def test_later_override_wins() -> None:
    config = load_config(overrides=["extract.shard_size=4", "extract.shard_size=9"])
    assert config.extract.shard_size == 9


@pytest.mark.parametrize("text", ["audio.sample_rate", "sample_rate=8000", "a.b.c=1", ".x=1", "audio.=1"])
def test_malformed_override(text: str) -> None:
    with pytest.raises(ConfigError, match="--set expects section.key=value"):
        parse_override(text)


def test_replace_validates_and_keeps_original() -> None:
    base = Config()
    changed = base.replace(extract={"shard_size": 3}, features={"recipe": "classic"})
    assert changed.extract.shard_size == 3 and changed.features.recipe == "classic"
    assert base.extract.shard_size == 32  # frozen original untouched
    with pytest.raises(ConfigError, match="shard_size"):
        base.replace(extract={"shard_size": 0})


# --- errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["nosuch.key=1"], r"unknown config section \[nosuch\] \(known: audio, features, extract"),
        (["audio.rate=8000"], r"unknown config key audio.rate \(known: sample_rate, extensions"),
        (["audio.sample_rate=16k"], r"audio.sample_rate must be of type int, got '16k'"),
        (["audio.sample_rate=16000.0"], r"audio.sample_rate must be of type int"),
        (["audio.sample_rate=true"], r"audio.sample_rate must be of type int, got True"),
        (["features.estimate_tuning=1"], r"features.estimate_tuning must be true or false, got 1"),
        (["features.contrast_fmin=low"], r"features.contrast_fmin must be of type float"),
        (["extract.out=[1, 2]"], r"extract.out must be of type str"),
        (["audio.extensions={a = 1}"], r"audio.extensions must be a list"),
        (["audio.extensions=[1, 2]"], r"audio.extensions must be a list of str"),
        (["features.n_fft=1000"], r"features.n_fft must be a power of two >= 64, got 1000"),
        (["features.n_fft=32"], r"features.n_fft must be a whole number in \[64, 65536\], got 32"),
        (["features.hop_length=4096"], r"features.hop_length must be in \(0, n_fft\]"),
        (["features.hop_length=0"], r"features.hop_length must be a whole number in \[1, 65536\], got 0"),
        (["features.recipe=foo"], r"features.recipe must be one of fast, classic, rich, got 'foo'"),
        (["features.n_mfcc=0"], r"features.n_mfcc must be a whole number in \[1, 1024\], got 0"),
        (["features.n_mfcc=200"], r"n_mfcc cannot exceed features.n_mels"),
        (["features.contrast_fmin=0"], r"features.contrast_fmin must be a number in \(0, 20000\] Hz, got 0.0"),
        (["audio.sample_rate=1000"], r"audio.sample_rate must be a whole number in \[4000, 384000\] Hz, got 1000"),
        (["audio.max_duration_s=-1"], r"audio.max_duration_s must be a number in \[0, 1000000\] s, got -1.0"),
        (["audio.max_file_s=-1"], r"audio.max_file_s must be a number in \[0, 1000000\] s, got -1.0"),
        (["audio.extensions=[]"], r"audio.extensions must be a non-empty list"),
        (['audio.extensions=["wav"]'], r"audio.extensions must be a non-empty list like"),
        (["extract.shard_size=0"], r"extract.shard_size must be a whole number in \[1, 1000000\], got 0"),
        (["ray.num_cpus=-1"], r"ray.num_cpus must be a whole number in \[0, 100000\], got -1"),
    ],
)
def test_bad_overrides_raise_config_error(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)


def test_config_error_is_a_ser_batch_error() -> None:
    assert issubclass(ConfigError, SerBatchError)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found: .*nope.toml"):
        load_config(tmp_path / "nope.toml")


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[audio\nsample_rate = 8000\n")
    with pytest.raises(ConfigError, match=r"bad.toml is not valid TOML"):
        load_config(path)


def test_top_level_key_must_be_a_section(tmp_path: Path) -> None:
    path = tmp_path / "flat.toml"
    path.write_text("sample_rate = 8000\n")
    with pytest.raises(ConfigError, match=r"top-level key 'sample_rate' must be a \[section\]"):
        load_config(path)


def test_unknown_key_in_file(tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text("[features]\nnfft = 1024\n")
    with pytest.raises(ConfigError, match="unknown config key features.nfft"):
        load_config(path)


def test_bad_value_in_file(tmp_path: Path) -> None:
    path = tmp_path / "bad_value.toml"
    path.write_text('[features]\nrecipe = "foo"\n')
    with pytest.raises(ConfigError, match="features.recipe must be one of fast, classic"):
        load_config(path)


# --- round trips ---------------------------------------------------------------


def non_default_config() -> Config:
    return Config().replace(
        audio={"sample_rate": 22050, "extensions": [".wav", ".flac"], "max_duration_s": 2.5},
        features={"recipe": "classic", "n_fft": 1024, "hop_length": 160, "estimate_tuning": False,
                  "contrast_fmin": 123.456},
        extract={"shard_size": 5, "out": 'out dir/with "quotes" \\ and é', "labels_csv": "labels.csv"},
        ray={"address": "ray://head:10001", "num_cpus": 2, "max_retries": 0},
    )


@pytest.mark.parametrize("config", [Config(), non_default_config()], ids=["defaults", "changed"])
def test_toml_round_trip(tmp_path: Path, config: Config) -> None:
    text = config_to_toml(config)
    assert tomllib.loads(text)  # valid TOML on its own
    path = tmp_path / "resolved.toml"
    path.write_text(text, encoding="utf-8")
    assert load_config(path) == config


def test_toml_round_trip_of_characters_outside_the_bmp(tmp_path: Path) -> None:
    # JSON escapes these as surrogate pairs, which TOML rejects.
    config = Config().replace(extract={"out": "output/\U0001f600 run\x7f"})
    path = tmp_path / "resolved.toml"
    path.write_text(config_to_toml(config), encoding="utf-8")
    assert load_config(path) == config


@pytest.mark.parametrize("config", [Config(), non_default_config()], ids=["defaults", "changed"])
def test_dict_round_trip(config: Config) -> None:
    data = config_to_dict(config)
    assert isinstance(data["audio"]["extensions"], list)  # plain, JSON-ready types
    assert data["features"]["recipe"] == config.features.recipe
    assert config_from_dict(data) == config


def test_config_from_dict_ignores_unknown_sections_but_not_keys() -> None:
    data = config_to_dict(Config())
    data["from_the_future"] = {"x": 1}
    assert config_from_dict(data) == Config()
    data["audio"]["from_the_future"] = 1
    with pytest.raises(ConfigError, match="unknown config key audio.from_the_future"):
        config_from_dict(data)


def test_rich_recipe_needs_a_frame_long_enough_for_pitch() -> None:
    with pytest.raises(ConfigError, match="too short for the rich recipe's pitch tracking at 16000 Hz; use at least 512"):
        load_config(overrides=['features.recipe="rich"', "features.n_fft=256", "features.hop_length=128"])
    load_config(overrides=['features.recipe="rich"', "features.n_fft=512", "features.hop_length=128"])
    # the telephony config keeps rich working at 8 kHz
    load_config(CONFIGS / "telephony.toml", overrides=['features.recipe="rich"'])
    with pytest.raises(ConfigError, match="window_hop_s cannot exceed"):
        load_config(overrides=["features.window_s=1.0", "features.window_hop_s=2.0"])


def test_models_listed_once() -> None:
    with pytest.raises(ConfigError, match="at most once"):
        load_config(overrides=['train.models=["keras", "keras"]'])


def test_extract_augment_from_set_and_toml(tmp_path: Path) -> None:
    assert load_config().extract.augment == ()
    assert load_config(overrides=["extract.augment=noise-20db"]).extract.augment == ("noise-20db",)
    path = tmp_path / "c.toml"
    path.write_text('[extract]\naugment = ["telephone-ulaw", "tempo-0.95"]\n')
    assert load_config(path).extract.augment == ("telephone-ulaw", "tempo-0.95")


@pytest.mark.parametrize(("value", "message"), [
    ('["telephone-gsm"]', "unknown augmentation 'telephone-gsm'"),
    ('["noise-20db", "noise-20db"]', "names an augmentation twice"),
    ('["tempo-1.5"]', "speed factor must be in"),
    ("[3]", "must be a list of names"),
])
def test_extract_augment_is_validated(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[f"extract.augment={value}"])


# --- every numeric key: no NaN, no infinity, nothing out of range (issue 16, point 6) ----------


def _numeric_keys() -> dict[str, object]:
    """``section.key`` -> default of every numeric key (a tuple: the element's type decides)."""
    found = {}
    for section in dataclasses.fields(Config):
        values = getattr(Config(), section.name)
        for key in dataclasses.fields(values):
            default = getattr(values, key.name)
            element = default[0] if isinstance(default, tuple) and default else default
            if isinstance(element, (int, float)) and not isinstance(element, bool):
                found[f"{section.name}.{key.name}"] = default
    return found


NUMERIC = _numeric_keys()


def test_every_numeric_key_has_a_range() -> None:
    assert sorted(NUMERIC) == sorted(RANGES)
    assert len(NUMERIC) > 50  # the introspection found them (every section has some)
    for name, default in NUMERIC.items():
        values = default if isinstance(default, tuple) else (default,)
        assert all(RANGES[name].holds(v) for v in values), name


def _hostile_values(name: str) -> list[str]:
    """TOML values ``--set name=...`` must refuse: not numbers, infinite, or out of range."""
    default, allowed = NUMERIC[name], RANGES[name]
    is_int = isinstance(default[0] if isinstance(default, tuple) else default, int)
    below = allowed.low if allowed.low_open else allowed.low - 1
    above = allowed.high if allowed.high_open else allowed.high + 1
    if is_int:
        values = ["99999999999999999999", str(int(below)), str(int(above)), "nan", "inf"]
    else:
        values = ["nan", "inf", "-inf", "1e400", "-1e300", repr(float(below)), repr(float(above))]
    return [f"[{v}]" for v in values] if isinstance(default, tuple) else values


@pytest.mark.parametrize("name", sorted(NUMERIC))
def test_nan_infinite_and_out_of_range_values_are_refused(name: str) -> None:
    for value in _hostile_values(name):
        with pytest.raises(ConfigError, match=rf"^{name} must ") as caught:
            load_config(overrides=[f"{name}={value}"])
        assert "\n" not in str(caught.value)
        # the same value in a config file (as TOML reads it) is refused the same way
        section, key = name.split(".")
        with pytest.raises(ConfigError, match=rf"^{name} must "):
            config_from_dict({section: {key: tomllib.loads(f"v = {value}")["v"]}})


@pytest.mark.parametrize(("override", "message"), [
    ("score.chunk_s=nan", r"score.chunk_s must be a number in \[1, 1000000\] s, got nan"),
    ("score.block_s=nan", r"score.block_s must be a number in \[1, 3600\] s, got nan"),
    ("score.block_s=1e-9", r"score.block_s must be a number in \[1, 3600\] s, got 1e-09"),
    ("ray.max_retries=99999999999999999999",
     r"ray.max_retries must be a whole number in \[0, 100\], got 99999999999999999999"),
    ("keras.dropout=[0.5, nan]", r"keras.dropout must list numbers in \[0, 1\), got \[0.5, nan\]"),
    ("train.seed=-1", r"train.seed must be a whole number in \[0, 4294967295\], got -1"),
])
def test_the_issue_values_name_the_key_and_the_range(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{message}$"):
        load_config(overrides=[override])

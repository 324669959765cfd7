"""Shared fixtures: one Ray runtime per session, generated audio, the ../shared corpus.

Audio is generated (sine, noise and amplitude-modulated "speech-like" tones) and
written with soundfile into temporary folders; real RAVDESS clips are read from
``../shared/data/ravdess`` and tests that need them skip when it is absent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

#: The RAVDESS speech corpus shared by the team (never copied into the project).
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ravdess"

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/ravdess not present")


def link_ravdess_actors(root: Path, actors: tuple[int, ...]) -> Path:
    """A folder ``root/Actor_NN/*.wav`` of symlinks to those actors' 16 kHz RAVDESS clips."""
    for actor in actors:
        folder = root / f"Actor_{actor:02d}"
        folder.mkdir(parents=True)
        for wav in sorted((SHARED / "Audio_Speech_Actors_01-20_16k" / folder.name).glob("*.wav")):
            (folder / wav.name).symlink_to(wav)
    return root


# ----------------------------------------------------------------------------- Ray


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray runtime for the whole session; jobs under test reuse it.

    ``ser_batch.cluster.runtime.ray_runtime`` leaves a runtime it did not start running, so
    every ``run_extract`` and CLI call in the session shares these two CPUs and their
    already warm workers.
    """
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False)
        started = True
    yield
    if started:
        ray.shutdown()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses Ray ``slow`` (STYLE.md: marked, but still run by default)."""
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


# --------------------------------------------------------------------------- signals


def sine(freq_hz: float, *, sample_rate: int, duration_s: float, amp: float = 0.5) -> np.ndarray:
    """Float32 sine [shape=(round(duration_s * sample_rate),)]."""
    t = np.arange(round(duration_s * sample_rate)) / sample_rate
    return (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def noise(*, sample_rate: int, duration_s: float, amp: float = 0.1, seed: int = 0) -> np.ndarray:
    """Float32 white noise, uniform in [-amp, amp]."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-amp, amp, round(duration_s * sample_rate)).astype(np.float32)


def speech_like(*, sample_rate: int, duration_s: float, f0_hz: float = 180.0, seed: int = 0) -> np.ndarray:
    """A voiced-speech stand-in: harmonics of a gliding f0, 4 Hz syllable envelope, light noise.

    Rich enough that every feature (pitch chroma, formant-ish mel energy, contrast
    between harmonics and gaps) varies over time, unlike a pure tone.
    """
    n = round(duration_s * sample_rate)
    t = np.arange(n) / sample_rate
    f0 = f0_hz * (1.0 + 0.1 * np.sin(2 * np.pi * 1.5 * t))  # intonation
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    nyquist = sample_rate / 2
    voiced = sum(
        np.sin(k * phase) / k for k in range(1, 12) if k * f0_hz * 1.1 < nyquist
    )
    envelope = 0.5 * (1.0 + np.sin(2 * np.pi * 4.0 * t - np.pi / 2))  # syllables, starts silent
    y = 0.3 * envelope * voiced + noise(sample_rate=sample_rate, duration_s=duration_s, amp=0.01, seed=seed)
    return y.astype(np.float32)


SIGNALS: dict[str, Callable[..., np.ndarray]] = {
    "sine": lambda *, sample_rate, duration_s, seed: sine(440.0, sample_rate=sample_rate, duration_s=duration_s),
    "noise": lambda *, sample_rate, duration_s, seed: noise(sample_rate=sample_rate, duration_s=duration_s,
                                                           seed=seed),
    "speech": lambda *, sample_rate, duration_s, seed: speech_like(sample_rate=sample_rate,
                                                                  duration_s=duration_s, seed=seed),
}


@pytest.fixture
def make_signal() -> Callable[..., np.ndarray]:
    """Factory ``make_signal(kind="speech", *, sample_rate=16000, duration_s=1.0, seed=0)``."""

    def make(kind: str = "speech", *, sample_rate: int = 16_000, duration_s: float = 1.0,
             seed: int = 0) -> np.ndarray:
        return SIGNALS[kind](sample_rate=sample_rate, duration_s=duration_s, seed=seed)

    return make


def write_audio(
    path: Path,
    *,
    kind: str = "speech",
    sample_rate: int = 16_000,
    duration_s: float = 1.0,
    channels: int = 1,
    subtype: str | None = None,
    seed: int = 0,
) -> Path:
    """Write a generated signal to ``path`` (format from its suffix); parents are created."""
    y = SIGNALS[kind](sample_rate=sample_rate, duration_s=duration_s, seed=seed)
    data = np.stack([y] * channels, axis=1) if channels > 1 else y
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sample_rate, subtype=subtype)
    return path


@pytest.fixture
def audio_file(tmp_path: Path) -> Callable[..., Path]:
    """Factory ``audio_file(name, **write_audio options)`` writing into ``tmp_path``."""

    def make(name: str, **options: object) -> Path:
        return write_audio(tmp_path / name, **options)  # type: ignore[arg-type]

    return make


# ----------------------------------------------------------------------------- corpus

#: Readable files of :func:`build_corpus`: relative path -> (native rate Hz, channels, duration s).
CORPUS_GOOD = {
    "Actor_01/03-01-05-01-01-01-01.wav": (16_000, 1, 0.75),
    "Actor_01/03-01-01-01-02-02-01.wav": (16_000, 1, 0.5),
    "Actor_02/session_b/03-01-08-02-01-01-02.wav": (16_000, 1, 0.6),
    "Actor_02/session_b/take_2/03-01-03-02-02-01-02.wav": (16_000, 1, 0.5),
    "misc/interview.wav": (16_000, 1, 0.5),
    "Actor_03/03-01-04-02-01-02-03.wav": (48_000, 2, 0.5),
    "phone/call_8k.wav": (8_000, 1, 1.0),
    "Actor_05/03-01-06-01-01-01-05.flac": (22_050, 1, 0.4),
}
#: Broken files and the reason their error row must give.
CORPUS_BROKEN = {
    "broken/random_bytes.wav": "not an audio file",
    "broken/empty.wav": "empty file",
    "broken/notes.wav": "not an audio file",
}


def build_corpus(root: Path) -> Path:
    """Write the mixed corpus (see ``CORPUS_GOOD``/``CORPUS_BROKEN``) below ``root``.

    Besides the audio it holds a ``README.txt`` and a hidden ``.cache/x.wav``, neither
    of which may become a row.
    """
    subtypes = {"phone/call_8k.wav": "ULAW"}
    for seed, (rel, (rate, channels, duration_s)) in enumerate(CORPUS_GOOD.items()):
        write_audio(root / rel, sample_rate=rate, channels=channels, duration_s=duration_s,
                    subtype=subtypes.get(rel), seed=seed)
    (root / "broken").mkdir(parents=True)
    (root / "broken/random_bytes.wav").write_bytes(np.random.default_rng(7).bytes(4096))
    (root / "broken/empty.wav").write_bytes(b"")
    (root / "broken/notes.wav").write_text("meeting notes, not audio\n" * 20)
    (root / "README.txt").write_text("not audio\n")
    write_audio(root / ".cache/x.wav", duration_s=0.2)
    return root


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mixed corpus, built once per session; tests must not modify it."""
    return build_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture
def corpus_copy(tmp_path: Path) -> Path:
    """A private copy of the mixed corpus that a test may change."""
    return build_corpus(tmp_path / "corpus")


def band_energy(y: np.ndarray, low_hz: float, high_hz: float, rate: int = 16000) -> float:
    """The share of ``y``'s energy between ``low_hz`` and ``high_hz``."""
    # Hann-windowed: the edges of a finite signal would otherwise leak into every band.
    spectrum = np.abs(np.fft.rfft(y.astype(np.float64) * np.hanning(len(y)))) ** 2
    freqs = np.fft.rfftfreq(len(y), 1 / rate)
    return float(spectrum[(freqs >= low_hz) & (freqs < high_hz)].sum() / spectrum.sum())

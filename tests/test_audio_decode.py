"""Tests for :mod:`ser_batch.audio.decode`; every file is generated in ``tmp_path``."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser_batch.audio.decode import (
    MIN_SAMPLE_RATE,
    AudioInfo,
    _os_error_reason,
    check_plausible,
    iter_audio_blocks,
    load_audio,
    probe_audio,
)
from ser_batch.errors import AudioError, SerBatchError

MP3_WRITABLE = "MP3" in sf.available_formats()


def sine(freq_hz: float, *, sample_rate: int, duration_s: float, amp: float = 0.5) -> np.ndarray:
    """Float32 sine [shape=(round(duration_s * sample_rate),)]."""
    t = np.arange(round(duration_s * sample_rate)) / sample_rate
    return (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def peak_hz(signal: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(signal.size)))
    return float(np.fft.rfftfreq(signal.size, 1 / sample_rate)[np.argmax(spectrum)])


def write(path: Path, data: np.ndarray, sample_rate: int, **kwargs: str) -> Path:
    sf.write(path, data, sample_rate, **kwargs)
    return path


# --- formats and subtypes --------------------------------------------------

# (extension, format, subtype, max abs error expected for a 0.5-amplitude sine)
LOSSLESS_CASES = [
    (".wav", "WAV", "PCM_U8", 1e-2),
    (".wav", "WAV", "PCM_16", 1e-4),
    (".wav", "WAV", "PCM_24", 1e-6),
    (".wav", "WAV", "PCM_32", 1e-6),
    (".wav", "WAV", "FLOAT", 0.0),
    (".wav", "WAV", "DOUBLE", 1e-7),
    (".wav", "WAV", "ULAW", 2e-2),
    (".wav", "WAV", "ALAW", 2e-2),
    (".flac", "FLAC", "PCM_16", 1e-4),
    (".flac", "FLAC", "PCM_24", 1e-6),
]


@pytest.mark.parametrize(("ext", "fmt", "subtype", "tol"), LOSSLESS_CASES)
def test_lossless_subtypes_round_trip(
    tmp_path: Path, ext: str, fmt: str, subtype: str, tol: float
) -> None:
    x = sine(440, sample_rate=16_000, duration_s=0.5)
    path = write(tmp_path / f"a{ext}", x, 16_000, format=fmt, subtype=subtype)
    y, info = load_audio(path, sample_rate=16_000)
    assert y.shape == x.shape and y.dtype == np.float32 and y.flags.c_contiguous
    assert (info.format, info.subtype, info.sample_rate, info.channels) == (fmt, subtype, 16_000, 1)
    assert np.abs(y - x).max() <= tol


@pytest.mark.parametrize(
    ("ext", "fmt", "subtype"),
    [
        (".ogg", "OGG", "VORBIS"),
        pytest.param(
            ".mp3", "MP3", "MPEG_LAYER_III",
            marks=pytest.mark.skipif(not MP3_WRITABLE, reason="libsndfile built without MP3"),
        ),
    ],
)
def test_lossy_formats_decode(tmp_path: Path, ext: str, fmt: str, subtype: str) -> None:
    x = sine(440, sample_rate=16_000, duration_s=1.0)
    path = write(tmp_path / f"a{ext}", x, 16_000, format=fmt, subtype=subtype)
    y, info = load_audio(path, sample_rate=16_000)
    assert (info.format, info.subtype) == (fmt, subtype)
    assert y.dtype == np.float32 and abs(y.size - x.size) <= 1
    assert abs(peak_hz(y, 16_000) - 440) < 5


# --- downmix and resampling ------------------------------------------------


def test_stereo_opposite_channels_cancel(tmp_path: Path) -> None:
    x = sine(440, sample_rate=16_000, duration_s=0.25)
    path = write(tmp_path / "s.wav", np.stack([x, -x], axis=1), 16_000, subtype="FLOAT")
    y, info = load_audio(path, sample_rate=16_000)
    assert info.channels == 2 and y.shape == x.shape
    assert np.abs(y).max() < 1e-7


def test_stereo_identical_channels_keep_signal(tmp_path: Path) -> None:
    x = sine(440, sample_rate=16_000, duration_s=0.25)
    path = write(tmp_path / "s.wav", np.stack([x, x], axis=1), 16_000, subtype="FLOAT")
    y, _ = load_audio(path, sample_rate=16_000)
    np.testing.assert_allclose(y, x, atol=1e-7)


def test_48k_resampled_to_16k_keeps_length_and_pitch(tmp_path: Path) -> None:
    path = write(tmp_path / "hi.wav", sine(440, sample_rate=48_000, duration_s=1.0), 48_000)
    y, info = load_audio(path, sample_rate=16_000)
    assert info.sample_rate == 48_000 and info.frames == 48_000
    assert abs(y.size - 16_000) <= 1 and y.dtype == np.float32
    assert abs(peak_hz(y, 16_000) - 440) < 2


@pytest.mark.parametrize("target", [8_000, 16_000])
def test_8k_ulaw_loads_at_native_and_higher_rate(tmp_path: Path, target: int) -> None:
    x = sine(440, sample_rate=8_000, duration_s=1.0)
    path = write(tmp_path / "tel.wav", x, 8_000, subtype="ULAW")
    y, info = load_audio(path, sample_rate=target)
    assert (info.sample_rate, info.subtype) == (8_000, "ULAW")
    assert abs(y.size - target) <= 1
    assert abs(peak_hz(y, target) - 440) < 2


def test_max_duration_truncates(tmp_path: Path) -> None:
    path = write(tmp_path / "a.wav", sine(440, sample_rate=48_000, duration_s=2.0), 48_000)
    y, info = load_audio(path, sample_rate=16_000, max_duration_s=0.5)
    assert abs(y.size - 8_000) <= 1
    assert info.duration_s == pytest.approx(2.0)  # info describes the whole file
    full, _ = load_audio(path, sample_rate=16_000, max_duration_s=10.0)
    assert abs(full.size - 32_000) <= 1


# --- probe -----------------------------------------------------------------


def test_probe_reads_header_only(tmp_path: Path) -> None:
    data = np.zeros((24_000, 2), dtype=np.float32)
    data[100, 0] = np.nan  # decoding would fail, so a successful probe proves it did not decode
    path = write(tmp_path / "p.wav", data, 48_000, subtype="FLOAT")
    assert probe_audio(path) == AudioInfo(
        sample_rate=48_000, channels=2, frames=24_000, duration_s=0.5,
        format="WAV", subtype="FLOAT",
    )
    with pytest.raises(AudioError, match="NaN or infinite"):
        load_audio(path, sample_rate=48_000)


# --- errors ----------------------------------------------------------------


def truncated(path: Path, *, keep: int) -> Path:
    """Copy of ``path`` with only its first ``keep`` bytes."""
    out = path.with_name("cut_" + path.name)
    out.write_bytes(path.read_bytes()[:keep])
    return out


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="^file not found$"):
        load_audio(tmp_path / "nope.wav", sample_rate=16_000)
    with pytest.raises(AudioError, match="file not found"):
        probe_audio(tmp_path / "nope.wav")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.wav").touch()
    with pytest.raises(AudioError, match="^empty file$"):
        load_audio(tmp_path / "e.wav", sample_rate=16_000)


def test_dangling_symlink_is_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "gone.wav").symlink_to(tmp_path / "moved-away.wav")
    for read in (probe_audio, lambda p: load_audio(p, sample_rate=16_000),
                 lambda p: list(iter_audio_blocks(p, sample_rate=16_000, block_s=1.0))):
        with pytest.raises(AudioError, match="^broken link$"):
            read(tmp_path / "gone.wav")


def test_symlink_loop_is_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "a.wav").symlink_to(tmp_path / "b.wav")
    (tmp_path / "b.wav").symlink_to(tmp_path / "a.wav")
    with pytest.raises(AudioError, match="^broken link$"):
        load_audio(tmp_path / "a.wav", sample_rate=16_000)


def test_symlink_to_a_good_file_loads(tmp_path: Path) -> None:
    path = write(tmp_path / "real.wav", sine(440, sample_rate=16_000, duration_s=0.2), 16_000)
    (tmp_path / "link.wav").symlink_to(path)
    assert load_audio(tmp_path / "link.wav", sample_rate=16_000)[0].size == 3200


def test_folder_and_pipe_are_not_regular_files(tmp_path: Path) -> None:
    (tmp_path / "folder.wav").mkdir()
    os.mkfifo(tmp_path / "pipe.wav")
    for name in ("folder.wav", "pipe.wav"):  # the pipe must be refused before it is opened (would block)
        with pytest.raises(AudioError, match="^not a regular file$"):
            load_audio(tmp_path / name, sample_rate=16_000)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files without read permission; "
                    "test_unreadable_file_as_the_os_reports_it covers the message")
def test_file_without_read_permission(tmp_path: Path) -> None:
    path = write(tmp_path / "locked.wav", sine(440, sample_rate=16_000, duration_s=0.2), 16_000)
    path.chmod(0)
    with pytest.raises(AudioError, match="^no read permission$"):
        load_audio(path, sample_rate=16_000)


def test_unreadable_file_as_the_os_reports_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As root, chmod 000 does not stop reads, so the refusal the OS gives everyone else is simulated.
    path = write(tmp_path / "locked.wav", sine(440, sample_rate=16_000, duration_s=0.2), 16_000)
    real_open = os.open

    def refuse(target: object, flags: int, *args: object, **kwargs: object) -> int:
        if Path(target) == path:  # type: ignore[arg-type]
            raise PermissionError(errno.EACCES, "Permission denied", str(target))
        return real_open(target, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", refuse)
    for read in (probe_audio, lambda p: load_audio(p, sample_rate=16_000)):
        with pytest.raises(AudioError, match="^no read permission$"):
            read(path)


@pytest.mark.parametrize(("code", "link", "reason"), [
    (errno.EACCES, False, "no read permission"),
    (errno.EPERM, False, "no read permission"),
    (errno.ENOENT, False, "file not found"),
    (errno.ENOENT, True, "broken link"),
    (errno.ELOOP, False, "broken link (symlink loop)"),
    (errno.EISDIR, False, "not a regular file"),
    (errno.EIO, False, "cannot read file (Input/output error)"),
])
def test_os_error_reasons(code: int, link: bool, reason: str) -> None:
    assert _os_error_reason(OSError(code, os.strerror(code)), link=link) == reason


def test_text_renamed_to_wav(tmp_path: Path) -> None:
    (tmp_path / "t.wav").write_text("this is not audio\n" * 20)
    for call in (lambda p: load_audio(p, sample_rate=16_000), probe_audio):
        with pytest.raises(AudioError, match=r"not an audio file \(unrecognised format\)"):
            call(tmp_path / "t.wav")


def test_wav_without_data_chunk_is_corrupt(tmp_path: Path) -> None:
    path = write(tmp_path / "a.wav", sine(440, sample_rate=16_000, duration_s=0.1), 16_000)
    with pytest.raises(AudioError, match="truncated or corrupt audio data"):
        load_audio(truncated(path, keep=30), sample_rate=16_000)


@pytest.mark.parametrize(
    ("fmt", "subtype", "keep_fraction"),
    [
        ("FLAC", "PCM_16", 0.5),  # libsndfile: "flac decoder lost sync" while reading
        # Cut OGG early: cut late, libsndfile clamps to the last whole page like a WAV.
        ("OGG", "VORBIS", 0.25),  # libsndfile: "file is malformed" on open
        pytest.param(  # libsndfile: silently returns fewer frames than the header declares
            "MP3", "MPEG_LAYER_III", 0.5,
            marks=pytest.mark.skipif(not MP3_WRITABLE, reason="libsndfile built without MP3"),
        ),
    ],
)
def test_cut_compressed_file_is_truncated(
    tmp_path: Path, fmt: str, subtype: str, keep_fraction: float
) -> None:
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 32_000).astype(np.float32)
    path = write(tmp_path / f"a.{fmt.lower()}", x, 16_000, format=fmt, subtype=subtype)
    cut = truncated(path, keep=round(path.stat().st_size * keep_fraction))
    with pytest.raises(AudioError, match="truncated or corrupt audio data"):
        load_audio(cut, sample_rate=16_000)
    with pytest.raises(AudioError, match="truncated or corrupt audio data"):
        list(iter_audio_blocks(cut, sample_rate=16_000, block_s=0.5))


def test_wav_missing_tail_loads_what_is_there(tmp_path: Path) -> None:
    # libsndfile clamps the header's frame count to the bytes present, so a WAV
    # cut mid-data is indistinguishable from a shorter file and is accepted.
    x = sine(440, sample_rate=16_000, duration_s=1.0)
    path = write(tmp_path / "a.wav", x, 16_000, subtype="PCM_16")
    cut = truncated(path, keep=path.stat().st_size - 100)
    y, info = load_audio(cut, sample_rate=16_000)
    assert info.frames == y.size == 16_000 - 50
    np.testing.assert_allclose(y, x[: y.size], atol=1e-4)


def test_zero_frames(tmp_path: Path) -> None:
    path = write(tmp_path / "z.wav", np.zeros((0, 1), dtype=np.float32), 16_000)
    assert probe_audio(path).frames == 0
    with pytest.raises(AudioError, match="^no audio samples$"):
        load_audio(path, sample_rate=16_000)
    with pytest.raises(AudioError, match="^no audio samples$"):
        list(iter_audio_blocks(path, sample_rate=16_000, block_s=1.0))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path: Path, bad: float) -> None:
    x = sine(440, sample_rate=16_000, duration_s=0.1)
    x[500] = bad
    path = write(tmp_path / "f.wav", x, 16_000, subtype="FLOAT")
    with pytest.raises(AudioError, match="audio contains NaN or infinite samples"):
        load_audio(path, sample_rate=16_000)
    with pytest.raises(AudioError, match="audio contains NaN or infinite samples"):
        list(iter_audio_blocks(path, sample_rate=16_000, block_s=0.05))


@pytest.mark.parametrize("rate", [0, -16_000])
def test_invalid_target_rate(tmp_path: Path, rate: int) -> None:
    path = write(tmp_path / "a.wav", sine(440, sample_rate=16_000, duration_s=0.1), 16_000)
    with pytest.raises(AudioError, match="invalid target sample rate"):
        load_audio(path, sample_rate=rate)
    with pytest.raises(AudioError, match="invalid target sample rate"):
        list(iter_audio_blocks(path, sample_rate=rate, block_s=1.0))


def test_invalid_options(tmp_path: Path) -> None:
    path = write(tmp_path / "a.wav", sine(440, sample_rate=16_000, duration_s=0.1), 16_000)
    with pytest.raises(AudioError, match="max_duration_s"):
        load_audio(path, sample_rate=16_000, max_duration_s=0)
    for block_s, overlap_s in [(0.0, 0.0), (1.0, 1.0), (1.0, -0.1)]:
        with pytest.raises(AudioError, match="invalid blocks"):
            list(iter_audio_blocks(path, sample_rate=16_000, block_s=block_s, overlap_s=overlap_s))


def test_audio_error_belongs_to_family() -> None:
    assert issubclass(AudioError, SerBatchError)


# --- streaming -------------------------------------------------------------


def stitch(blocks: list[tuple[float, np.ndarray]], *, overlap: int) -> np.ndarray:
    """Drop each later block's leading overlap and concatenate."""
    return np.concatenate([blocks[0][1]] + [b[overlap:] for _, b in blocks[1:]])


@pytest.mark.parametrize(
    ("native_rate", "channels", "target", "block_s", "overlap_s"),
    [
        (16_000, 1, 16_000, 0.5, 0.0),
        (16_000, 1, 16_000, 0.5, 0.25),
        (48_000, 1, 16_000, 0.5, 0.1),
        (44_100, 2, 16_000, 1.0, 0.5),
        (8_000, 1, 16_000, 0.3, 0.0),
    ],
)
def test_blocks_stitch_back_to_load_audio(
    tmp_path: Path, native_rate: int, channels: int, target: int, block_s: float, overlap_s: float
) -> None:
    # 3.7 s spans several internal reads (65 536 native frames) and ends mid-block.
    rng = np.random.default_rng(1)
    data = rng.uniform(-0.5, 0.5, (round(3.7 * native_rate), channels)).astype(np.float32)
    path = write(tmp_path / "long.wav", data, native_rate, subtype="FLOAT")
    whole, _ = load_audio(path, sample_rate=target)
    blocks = list(iter_audio_blocks(path, sample_rate=target, block_s=block_s, overlap_s=overlap_s))

    block_len, hop = round(block_s * target), round((block_s - overlap_s) * target)
    starts = [start for start, _ in blocks]
    np.testing.assert_allclose(starts, np.arange(len(blocks)) * (block_s - overlap_s), atol=1e-9)
    assert all(b.dtype == np.float32 and b.ndim == 1 for _, b in blocks)
    assert all(b.size == block_len for _, b in blocks[:-1])
    assert 0 < blocks[-1][1].size <= block_len
    # Overlapping samples must be identical copies, not re-resampled ones.
    for (_, a), (_, b) in zip(blocks, blocks[1:]):
        np.testing.assert_array_equal(a[hop:], b[: a.size - hop])

    stream = stitch(blocks, overlap=block_len - hop)
    assert abs(stream.size - whole.size) <= 1
    n = min(stream.size, whole.size)
    skip = round(0.005 * target)  # resampler start-up transient
    assert np.abs(stream[skip:n] - whole[skip:n]).max() < 1e-3


@pytest.mark.parametrize("overlap_s", [0.0, 0.7])
def test_blocks_across_reads_are_the_samples_and_their_own_arrays(tmp_path: Path, overlap_s: float) -> None:
    """Blocks of 2.5 s are joined from reads of 65 536 frames (a block spans two reads, a read
    several blocks): exactly the file's samples, and each block its own array, which the caller
    may change in place without changing the next block."""
    x = np.random.default_rng(3).uniform(-0.5, 0.5, 10 * 16_000 + 123).astype(np.float32)
    path = write(tmp_path / "reads.wav", x, 16_000, subtype="FLOAT")
    blocks = []
    for start, block in iter_audio_blocks(path, sample_rate=16_000, block_s=2.5, overlap_s=overlap_s):
        blocks.append((start, block.copy()))
        block[:] = np.nan
    assert len(blocks) == -(-(x.size - round(overlap_s * 16_000)) // round((2.5 - overlap_s) * 16_000))
    np.testing.assert_array_equal(stitch(blocks, overlap=round(overlap_s * 16_000)), x)


def test_blocks_of_file_with_exact_multiple_length(tmp_path: Path) -> None:
    # 65 536 frames = one internal read exactly, so the end is found by an empty read.
    x = np.random.default_rng(2).uniform(-0.5, 0.5, 65_536).astype(np.float32)
    path = write(tmp_path / "exact.wav", x, 16_384, subtype="FLOAT")
    blocks = list(iter_audio_blocks(path, sample_rate=16_384, block_s=1.0))
    assert [s for s, _ in blocks] == [0.0, 1.0, 2.0, 3.0]
    np.testing.assert_array_equal(stitch(blocks, overlap=0), x)


def test_short_file_gives_one_short_block(tmp_path: Path) -> None:
    x = sine(440, sample_rate=16_000, duration_s=0.2)
    path = write(tmp_path / "short.wav", x, 16_000, subtype="FLOAT")
    blocks = list(iter_audio_blocks(path, sample_rate=16_000, block_s=1.0, overlap_s=0.5))
    assert len(blocks) == 1 and blocks[0][0] == 0.0
    np.testing.assert_array_equal(blocks[0][1], x)


# --- headers that lie ---------------------------------------------------------


def pcm16_wav(path: Path, *, sample_rate: int, data: bytes, claimed_bytes: int | None = None) -> Path:
    """A mono 16-bit WAV written byte by byte, so that its header may claim anything."""
    import struct

    claimed = len(data) if claimed_bytes is None else claimed_bytes
    header = (b"RIFF" + struct.pack("<I", 36 + claimed) + b"WAVE"
              + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, 2 * sample_rate, 2, 16)
              + b"data" + struct.pack("<I", claimed))
    path.write_bytes(header + data)
    return path


def test_a_1_hz_header_is_refused_not_decoded_as_an_hour(tmp_path: Path) -> None:
    # 7 KB of samples at a declared 1 Hz: one hour of "audio" before this check.
    noise = np.random.default_rng(0).integers(-3000, 3000, 3500).astype("<i2").tobytes()
    path = pcm16_wav(tmp_path / "one_hz.wav", sample_rate=1, data=noise)
    assert sf.info(str(path)).duration > 3000  # what the header claims
    message = f"^implausible header: sample rate 1 Hz is below {MIN_SAMPLE_RATE} Hz$"
    with pytest.raises(AudioError, match=message):
        probe_audio(path)
    with pytest.raises(AudioError, match=message):
        load_audio(path, sample_rate=16_000)
    with pytest.raises(AudioError, match=message):
        list(iter_audio_blocks(path, sample_rate=16_000, block_s=1.5))
    # the floor itself is still audio
    ok = pcm16_wav(tmp_path / "floor.wav", sample_rate=MIN_SAMPLE_RATE, data=noise)
    assert load_audio(ok, sample_rate=16_000)[0].size == 4 * 3500


def test_a_wav_header_claiming_more_frames_than_the_file_holds(tmp_path: Path) -> None:
    # libsndfile clamps a WAV's frames to the bytes present: it loads, shorter, as 3500 frames.
    data = np.zeros(3500, "<i2").tobytes()
    path = pcm16_wav(tmp_path / "claims.wav", sample_rate=16_000, data=data, claimed_bytes=10_000_000)
    assert probe_audio(path).frames == 3500
    assert load_audio(path, sample_rate=16_000)[0].size == 3500


def test_an_uncompressed_header_with_more_frames_than_bytes_is_refused() -> None:
    # What libsndfile would pass on for a format it does not clamp: 10 s of PCM_16 in 7 KB.
    info = AudioInfo(sample_rate=16_000, channels=2, frames=160_000, duration_s=10.0, format="AIFF", subtype="PCM_16")
    with pytest.raises(AudioError, match=r"^implausible header: 160000 frames \(10.0 s\) of PCM_16 need 640000 "
                                         r"bytes, the file has 7044$"):
        check_plausible(info, size_bytes=7044)
    assert check_plausible(info, size_bytes=640_044) is info


def test_a_flac_header_claiming_days_in_a_few_bytes_is_refused_before_allocating(tmp_path: Path) -> None:
    path = tmp_path / "days.flac"
    sf.write(path, np.zeros(16_000, dtype=np.float32), 16_000)
    blob = bytearray(path.read_bytes())
    info = blob.index(b"fLaC") + 8  # STREAMINFO, after its 4-byte block header
    total = 2**35  # 24 days at 16 kHz; reading it would allocate 128 GiB
    blob[info + 13] = (blob[info + 13] & 0xF0) | (total >> 32)
    blob[info + 14 : info + 18] = (total & 0xFFFFFFFF).to_bytes(4, "big")
    path.write_bytes(bytes(blob))
    assert sf.info(str(path)).frames == total
    message = rf"^implausible header: {total} frames \(.* s\) of PCM_16 claimed by a {len(blob)}-byte FLAC file$"
    with pytest.raises(AudioError, match=message):
        load_audio(path, sample_rate=16_000)
    with pytest.raises(AudioError, match=message):
        list(iter_audio_blocks(path, sample_rate=16_000, block_s=1.5))


def test_streaming_reads_are_bounded_in_output_samples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # At 4 kHz into 48 kHz every native frame makes 12 output samples: reads shrink to match.
    from ser_batch.audio import decode

    monkeypatch.setattr(decode, "_STREAM_READ_FRAMES", 4096)
    path = write(tmp_path / "low.wav", sine(200, sample_rate=4000, duration_s=3.0), 4000, subtype="PCM_16")
    reads = []
    original = sf.SoundFile.read

    def spy(self: sf.SoundFile, frames: int = -1, *args: object, **kwargs: object) -> np.ndarray:
        reads.append(frames)
        return original(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    blocks = list(iter_audio_blocks(path, sample_rate=48_000, block_s=0.5))
    assert sum(b.size for _, b in blocks) == pytest.approx(3 * 48_000, abs=48)
    assert reads and max(reads) <= 4096 * 4000 // 48_000
    reads.clear()
    assert load_audio(path, sample_rate=48_000)[0].size == pytest.approx(3 * 48_000, abs=48)
    assert max(reads) <= 4096


def test_a_file_name_that_is_not_utf8_is_decoded(tmp_path: Path) -> None:
    good = write(tmp_path / "good.wav", sine(440, sample_rate=16_000, duration_s=0.5), 16_000)
    odd = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"bad\xffname.wav")))
    os.rename(good, odd)
    assert probe_audio(odd).frames == 8000
    assert load_audio(odd, sample_rate=16_000)[0].size == 8000
    assert sum(b.size for _, b in iter_audio_blocks(odd, sample_rate=16_000, block_s=0.2)) == 8000


# --- reads from a seek (ranges of long files) ---------------------------------------


def silence_and_tones(native_rate: int, *, seconds: float = 25.0) -> np.ndarray:
    """Tones and noise bursts with stretches of digital silence (exact zeros) between them, as a
    telephone call between utterances: where a resampler's rounding shows as 1e-8 noise."""
    rng = np.random.default_rng(native_rate)
    y = np.zeros(round(seconds * native_rate), dtype=np.float32)
    at = 0
    while at < y.size:
        length = int(rng.uniform(0.4, 2.5) * native_rate)
        t = np.arange(min(length, y.size - at)) / native_rate
        y[at : at + t.size] = 0.3 * np.sin(2 * np.pi * rng.uniform(120, 900) * t) + rng.uniform(-0.05, 0.05, t.size)
        at += length + int(rng.uniform(0.2, 3.0) * native_rate)  # then silence
    return y


@pytest.mark.parametrize("native_rate", [8000, 11025, 22050, 44100, 48000, 16000])
def test_a_read_from_a_seek_gives_the_samples_of_a_read_from_the_start_bit_for_bit(tmp_path: Path,
                                                                                   native_rate: int) -> None:
    """Issue 25: one soxr stream per read made a read from a seek differ from a read from the start by
    a few 1e-8, so exactly silent frames of the whole file became 1e-8 noise in a range (other spectral
    centroids, roll-offs, bandwidths: other probabilities at 8 kHz). Resampled on the file's own grid
    of segments, every sample is the same whichever sample a read starts at, and the same as load_audio."""
    from ser_batch.audio.decode import ResampleGrid

    path = write(tmp_path / "call.wav", silence_and_tones(native_rate), native_rate, subtype="PCM_16")
    whole, _ = load_audio(path, sample_rate=16_000)
    assert (whole == 0).sum() > 16_000  # seconds of exact silence survive resampling
    streamed = np.concatenate([b for _, b in iter_audio_blocks(path, sample_rate=16_000, block_s=1.3)])
    np.testing.assert_array_equal(streamed, whole)
    boundary = ResampleGrid.of(native_rate, 16_000).output(ResampleGrid.of(native_rate, 16_000).segment)
    for start in (1, 777, 12_345, boundary - 1, boundary, boundary + 1, 2 * boundary + 3, whole.size - 100):
        part = np.concatenate([b for _, b in iter_audio_blocks(path, sample_rate=16_000, block_s=2.0,
                                                               start_sample=start)])
        np.testing.assert_array_equal(part, whole[start:], err_msg=f"read from sample {start}")


def test_a_resampled_file_that_ends_early_gives_its_samples_then_the_error(tmp_path: Path) -> None:
    """A FLAC cut short (its header claims 40 s): the blocks before the damage, then the error."""
    path = write(tmp_path / "cut.flac", silence_and_tones(8000, seconds=40.0), 8000)
    blob = path.read_bytes()
    path.write_bytes(blob[: int(len(blob) * 0.6)])
    got = []
    with pytest.raises(AudioError, match="truncated or corrupt audio data"):
        for _, block in iter_audio_blocks(path, sample_rate=16_000, block_s=5.0):
            got.append(block)
    assert 10 * 16_000 <= sum(b.size for b in got) < 40 * 16_000
    with pytest.raises(AudioError, match="truncated or corrupt audio data"):
        list(iter_audio_blocks(path, sample_rate=16_000, block_s=5.0, start_sample=35 * 16_000))


# --- MP3s of a tag only, and mpg123's notes (issue 25) ---------------------------------------


def id3_only(path: Path) -> Path:
    """An MP3 that is an ID3v2 tag (a title) and its padding: no MPEG audio frame."""
    frame = b"TIT2" + (6).to_bytes(4, "big") + b"\x00\x00" + b"\x00title"
    size = len(frame) + 512
    syncsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    path.write_bytes(b"ID3\x03\x00\x00" + syncsafe + frame + b"\x00" * 512)
    return path


def test_an_mp3_of_an_id3_tag_only_has_no_audio_and_its_decoder_notes_stay_off_stderr(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Issue 25: such a file was "truncated or corrupt", and mpg123's `Note: Illegal Audio-MPEG-Header
    ... Trying to resync...` lines went to stderr between the job's own."""
    path = id3_only(tmp_path / "tag_only.mp3")
    for read in (probe_audio, lambda p: load_audio(p, sample_rate=16_000),
                 lambda p: list(iter_audio_blocks(p, sample_rate=16_000, block_s=1.0))):
        with pytest.raises(AudioError, match="^no audio: an ID3 tag and no MPEG audio frames$"):
            read(path)
    captured = capfd.readouterr()
    assert "Note:" not in captured.err and captured.err == ""
    # A tag followed by bytes that are not MPEG audio stays damage, not "no audio".
    path.write_bytes(path.read_bytes() + bytes([0xFF, 0xFB, 0x90, 0x00]) + os.urandom(3000))
    with pytest.raises(AudioError, match="^truncated or corrupt audio data$"):
        probe_audio(path)
    assert "Note:" not in capfd.readouterr().err


@pytest.mark.skipif(not MP3_WRITABLE, reason="this libsndfile cannot write MP3")
def test_a_damaged_mp3_decodes_without_decoder_notes_on_stderr(tmp_path: Path,
                                                               capfd: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "damaged.mp3", sine(300, sample_rate=16_000, duration_s=4.0), 16_000, format="MP3")
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2 : len(blob) // 2 + 400] = bytes(400)  # zeros mid-stream: mpg123 resyncs, saying so
    path.write_bytes(bytes(blob))
    try:
        load_audio(path, sample_rate=16_000)
    except AudioError:
        pass  # (damage it may report: only stderr matters here)
    assert "Note:" not in capfd.readouterr().err

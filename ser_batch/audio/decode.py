"""Decode audio files into mono float32 signals at a chosen sample rate.

Every failure raises :class:`~ser_batch.errors.AudioError` with a short reason
("file not found", "broken link", "no read permission", "empty file", ...); the caller
adds the path. Which file endings count as audio is ``audio.extensions`` of the config
(:class:`ser_batch.config.AudioConfig`), the one list of them.

Truncation, as libsndfile 1.2 (soundfile 0.14) reports it:

* WAV cut mid-data: libsndfile clamps ``frames`` to the bytes present and reads
  them silently, so the file loads, shorter. A cut into the header is refused.
* OGG: cut early, refused on open; cut late, clamped to the last whole page
  like WAV (sometimes to 0 frames, which gives "no audio samples").
* FLAC raises mid-read ("decoder lost sync"); MP3 returns fewer frames than its
  header declares. Both become "truncated or corrupt audio data".

A header is believed only when it is plausible (:func:`check_plausible`): a native rate of
at least :data:`MIN_SAMPLE_RATE` Hz, and no more frames than the file's bytes can hold
(exactly for uncompressed samples, within :data:`MAX_SAMPLES_PER_BYTE` for compressed
ones). A 7 KB file claiming a 1 Hz rate (an hour of audio) is refused before any decoding,
and decoding reads a bounded number of output samples at a time, so memory does not
follow what a header claims.

Paths may be ``str`` holding :func:`os.fsdecode` surrogate escapes (file names that are not
UTF-8): files are opened by their bytes (:func:`os.fsencode`), which libsndfile takes as is.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from ser_batch.errors import AudioError

log = logging.getLogger(__name__)

_RESAMPLE_QUALITY = "HQ"
_STREAM_READ_FRAMES = 65_536  # native frames per read; bounds memory, not output blocks
_SF_ERR_UNRECOGNISED_FORMAT = 1  # libsndfile error codes, from sndfile.h
_SF_ERR_SYSTEM = 2

#: Lowest native sample rate believed, in Hz: below it a header is taken as crafted or broken.
MIN_SAMPLE_RATE = 4000
#: Bytes per sample (per channel) of the uncompressed subtypes, whose size bounds their frames.
_BYTES_PER_SAMPLE = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8,
                     "ULAW": 1, "ALAW": 1}
#: Samples (frames x channels) a compressed file may claim per byte. Digital silence in FLAC with
#: the largest blocks compresses to about 3,000 per byte; no codec libsndfile reads gets near this.
MAX_SAMPLES_PER_BYTE = 20_000
#: Containers whose samples are compressed whatever their subtype says (FLAC reports ``PCM_16``).
_COMPRESSED_FORMATS = {"FLAC", "OGG", "MP3"}


@dataclass(frozen=True)
class AudioInfo:
    """What the file header says about the audio, before any resampling.

    Attributes
    ----------
    sample_rate : int
        Native sample rate of the file, in Hz.
    channels : int
        Number of channels.
    frames : int
        Native frames (samples per channel).
    duration_s : float
        ``frames / sample_rate``, in seconds.
    format : str
        soundfile container format, e.g. ``"WAV"``.
    subtype : str
        soundfile sample encoding, e.g. ``"PCM_16"`` or ``"ULAW"``.
    """

    sample_rate: int
    channels: int
    frames: int
    duration_s: float
    format: str
    subtype: str

    def samples_at(self, sample_rate: int) -> int:
        """Samples of the file decoded at ``sample_rate`` (what :func:`load_audio` and
        :func:`iter_audio_blocks` give: soxr's rounded count)."""
        return self.frames if sample_rate == self.sample_rate else round(self.frames * sample_rate / self.sample_rate)


def probe_audio(path: Path) -> AudioInfo:
    """Read only the header of ``path``; no samples are decoded.

    A header announcing zero frames is reported as is (``frames == 0``); it is
    :func:`load_audio` that refuses it.

    Raises
    ------
    AudioError
        If the file is missing, empty, not audio or has a broken header.
    """
    size = _check_file(path)
    try:
        with _open_sound(path) as sound:
            return check_plausible(_info_of(sound), size_bytes=size)
    except sf.SoundFileError as exc:
        raise _audio_error_from(exc, path) from exc


def check_plausible(info: AudioInfo, *, size_bytes: int) -> AudioInfo:
    """``info`` if the header it came from is believable for a file of ``size_bytes`` bytes.

    Raises
    ------
    AudioError
        If the native rate is under :data:`MIN_SAMPLE_RATE` Hz, or the header claims more
        frames than the file can hold: for uncompressed samples, ``frames * channels * bytes
        per sample`` over the file size; for compressed ones, over :data:`MAX_SAMPLES_PER_BYTE`
        samples per byte.
    """
    if info.sample_rate < MIN_SAMPLE_RATE:
        raise AudioError(f"implausible header: sample rate {info.sample_rate} Hz is below {MIN_SAMPLE_RATE} Hz")
    samples = info.frames * info.channels
    width = None if info.format in _COMPRESSED_FORMATS else _BYTES_PER_SAMPLE.get(info.subtype)
    if width is not None and samples * width > size_bytes:
        raise AudioError(f"implausible header: {info.frames} frames ({info.duration_s:.1f} s) of {info.subtype} "
                         f"need {samples * width} bytes, the file has {size_bytes}")
    if width is None and samples > size_bytes * MAX_SAMPLES_PER_BYTE:
        raise AudioError(f"implausible header: {info.frames} frames ({info.duration_s:.1f} s) of {info.subtype} "
                         f"claimed by a {size_bytes}-byte {info.format} file")
    return info


def _open_sound(path: Path) -> sf.SoundFile:
    return _Sound(path)


class _Sound(sf.SoundFile):
    """A sound file opened by its bytes (soundfile encodes a str path strictly, which fails on a file
    name that is not UTF-8; libsndfile takes any bytes), whose native decoder's notes stay off stderr.

    libsndfile decodes MPEG audio with mpg123, which writes what it meets to the process's stderr
    itself (``Note: Illegal Audio-MPEG-Header 0x00000000 at offset 534.``, ``Note: Trying to
    resync...``): lines that are not ser-batch's and interleave with its progress and summary, once
    per damaged or tag-only MP3 of an archive. For MPEG files, stderr is pointed elsewhere while the
    decoder runs (each open, read and seek, never while the caller's code does), and the notes are
    logged at debug level (``-vv``)."""

    def __init__(self, path: Path) -> None:
        self._quiet = _is_mpeg(path)
        with _decoder_notes(self._quiet, path):
            super().__init__(os.fsencode(path))

    def read(self, *args: Any, **kwargs: Any) -> Any:
        with _decoder_notes(self._quiet, self.name):
            return super().read(*args, **kwargs)

    def seek(self, *args: Any, **kwargs: Any) -> int:
        with _decoder_notes(self._quiet, self.name):
            return super().seek(*args, **kwargs)


def _is_mpeg(path: Path) -> bool:
    """Whether libsndfile will hand ``path`` to mpg123: an ID3 tag or an MPEG frame sync first, or an
    MPEG file ending."""
    if Path(path).suffix.lower() in (".mp3", ".mp2", ".mpga"):
        return True
    try:
        with open(os.fsencode(path), "rb") as handle:
            head = handle.read(3)
    except OSError:
        return False
    return head == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)


@contextmanager
def _decoder_notes(on: bool, path: Any) -> Iterator[None]:
    """While the body runs, what native code writes to the process's stderr (file descriptor 2) goes to
    a temporary file, then to the debug log; nothing is redirected unless ``on``."""
    if not on:
        yield
        return
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass
    try:
        sink = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
    except OSError:  # no temporary folder to write: the notes are dropped
        sink = open(os.devnull, "w+b")  # noqa: SIM115 - closed below
    saved = os.dup(2)
    try:
        os.dup2(sink.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        try:
            sink.seek(0)
            notes = sink.read().decode("utf-8", "replace").strip()
        except OSError:
            notes = ""
        sink.close()
        if notes:
            log.debug("decoder notes on %s: %s", os.fsdecode(path) if isinstance(path, bytes) else path,
                      " / ".join(notes.splitlines()))


def load_audio(
    path: Path, *, sample_rate: int, max_duration_s: float | None = None
) -> tuple[np.ndarray, AudioInfo]:
    """Decode a whole file into a mono signal at ``sample_rate``.

    Channels are averaged; the signal is resampled with soxr (HQ) only when the
    native rate differs.

    Parameters
    ----------
    path : Path
        Audio file in any format libsndfile reads.
    sample_rate : int
        Target sample rate, in Hz.
    max_duration_s : float, optional
        Decode at most this many seconds from the start of the file.

    Returns
    -------
    signal : np.ndarray [shape=(n,), dtype=float32]
        C-contiguous mono signal at ``sample_rate``.
    info : AudioInfo
        Header of the original file (native rate, channels, full length).

    Raises
    ------
    AudioError
        On any unreadable, truncated, empty or non-finite audio, or bad option.
    """
    _check_rate(sample_rate)
    if max_duration_s is not None and not max_duration_s > 0:
        raise AudioError(f"invalid max_duration_s {max_duration_s!r} (must be > 0 seconds)")
    size = _check_file(path)
    try:
        with _open_sound(path) as sound:
            info = check_plausible(_info_of(sound), size_bytes=size)
            if info.frames <= 0:
                raise AudioError("no audio samples")
            wanted = info.frames
            if max_duration_s is not None:
                wanted = min(wanted, max(1, round(max_duration_s * info.sample_rate)))
            # Block by block: soundfile allocates what it is asked for, so one read of ``wanted``
            # would cost what the header claims, not what the file holds.
            pieces, got = [], 0
            while got < wanted:
                native = sound.read(min(_STREAM_READ_FRAMES, wanted - got), dtype="float32", always_2d=True)
                if not native.shape[0]:
                    break
                pieces.append(_downmix(native))
                got += native.shape[0]
    except sf.SoundFileError as exc:
        raise _audio_error_from(exc, path) from exc
    # libsndfile returns short reads instead of failing on some truncated streams (MP3).
    if got < wanted:
        raise AudioError("truncated or corrupt audio data")
    mono = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
    if info.sample_rate != sample_rate:
        grid = ResampleGrid.of(info.sample_rate, sample_rate)
        mono = np.concatenate([grid.resample_segment(mono, k, n_frames=len(mono))
                               for k in range(grid.segments(len(mono)))])
    return np.ascontiguousarray(mono, dtype=np.float32), info


def iter_audio_blocks(
    path: Path, *, sample_rate: int, block_s: float, overlap_s: float = 0.0, start_sample: int = 0,
    channel: int | None = None,
) -> Iterator[tuple[float, np.ndarray]]:
    """Stream a file as overlapping mono blocks without loading it whole.

    Block ``i`` starts at ``i * (block_s - overlap_s)`` seconds (rounded to whole
    samples at ``sample_rate``). Resampling is done on the file's own grid of
    segments (:class:`ResampleGrid`), so block boundaries add no clicks and the
    samples do not depend on the blocks: dropping the first
    ``round(overlap_s * sample_rate)`` samples of every block but the first and
    concatenating gives exactly the signal of :func:`load_audio`. The last block
    may be shorter than ``block_s``.

    Parameters
    ----------
    path : Path
        Audio file in any format libsndfile reads.
    sample_rate : int
        Target sample rate, in Hz.
    block_s : float
        Block length, in seconds (> 0).
    overlap_s : float, default 0.0
        Overlap between consecutive blocks, in seconds (``0 <= overlap_s < block_s``).
    start_sample : int, default 0
        Start at this sample of the resampled signal (block times stay relative to the
        file). Decoding seeks to the start of its resampling segment (less the segment's
        margin), so the samples are those of a read from the start, bit for bit.
    channel : int, optional
        Read only this channel (0-based) instead of the average of all channels.

    Yields
    ------
    start_s : float
        Start time of the block in the file, in seconds.
    block : np.ndarray [shape=(m,), dtype=float32]
        Mono samples at ``sample_rate``; ``m == round(block_s * sample_rate)``
        except possibly for the last block.

    Raises
    ------
    AudioError
        As :func:`load_audio`, and for invalid block or overlap lengths.
        Damage found mid-file is raised when reached, after the blocks before it.
    """
    _check_rate(sample_rate)
    if start_sample < 0:
        raise AudioError(f"invalid start_sample {start_sample!r} (must be >= 0)")
    block_len = round(block_s * sample_rate)
    hop = block_len - round(overlap_s * sample_rate)
    if block_len <= 0 or overlap_s < 0 or hop <= 0:
        raise AudioError(
            f"invalid blocks: block_s={block_s!r}, overlap_s={overlap_s!r} "
            "(need block_s > 0 and 0 <= overlap_s < block_s)"
        )
    size = _check_file(path)
    try:
        with _open_sound(path) as sound:
            info = check_plausible(_info_of(sound), size_bytes=size)
            if info.frames <= 0:
                raise AudioError("no audio samples")
            if channel is not None and not 0 <= channel < info.channels:
                raise AudioError(f"no channel {channel} (the file has {info.channels})")
            pieces = _decoded_pieces(sound, info, sample_rate=sample_rate, start_sample=start_sample,
                                     channel=channel)
            pending_start = next(pieces)  # output sample of the first piece
            pending = SampleBuffer()  # output samples not yet fully consumed
            next_start = start_sample  # absolute sample index where the next block starts
            emitted_end = start_sample  # absolute sample index just past the last yielded block
            for mono in pieces:
                pending.push(mono)
                while next_start + block_len <= pending_start + len(pending):
                    offset = next_start - pending_start
                    # A copy: a block is its caller's to change in place, the buffer is reused.
                    yield next_start / sample_rate, pending.view[offset : offset + block_len].copy()
                    emitted_end = next_start + block_len
                    next_start += hop
                # Keep only what later blocks still need; overlap lives in ``pending``.
                drop = min(next_start - pending_start, len(pending))
                pending.drop(drop)
                pending_start += drop
            if pending_start + len(pending) > emitted_end:
                yield next_start / sample_rate, pending.view[next_start - pending_start :].copy()
    except sf.SoundFileError as exc:
        raise _audio_error_from(exc, path) from exc


class SampleBuffer:
    """A growing float32 array of samples, appended to at the end and dropped from the front.

    One buffer reused for a whole stream (decoded blocks here, the padded signal and its pitch
    copy in :mod:`ser_batch.features.windows`): a push copies the new samples once, into memory
    already touched, and the samples kept are moved to the front only when the space behind
    them runs out (then few); joining each piece onto the kept samples with ``np.concatenate``
    copied them all again every time. Views from :attr:`view` are valid until the next
    :meth:`push`."""

    def __init__(self) -> None:
        self.buffer = np.zeros(0, dtype=np.float32)
        self.lo = self.hi = 0

    def __len__(self) -> int:
        return self.hi - self.lo

    @property
    def view(self) -> np.ndarray:
        return self.buffer[self.lo : self.hi]

    def push(self, samples: np.ndarray) -> None:
        n, live = len(samples), self.hi - self.lo
        if self.hi + n > len(self.buffer):
            if live + n <= len(self.buffer) // 2:  # room at the front: move the kept samples there
                self.buffer[:live] = self.buffer[self.lo : self.hi]
            else:
                grown = np.empty(2 * (live + n), dtype=np.float32)
                grown[:live] = self.buffer[self.lo : self.hi]
                self.buffer = grown
            self.lo, self.hi = 0, live
        self.buffer[self.hi : self.hi + n] = samples
        self.hi += n

    def drop(self, count: int) -> None:
        self.lo += min(count, self.hi - self.lo)


#: Seconds of margin decoded each side of a resampling segment, so that the resampler's start-up
#: and its end have passed where the segment's samples are taken.
PREROLL_S = 0.1
#: Seconds of native audio in one resampling segment (:class:`ResampleGrid`).
RESAMPLE_SEGMENT_S = 10.0


@dataclass(frozen=True)
class ResampleGrid:
    """The file's own grid on which it is resampled, in native frames.

    Output sample ``n`` is taken from the resampling of one segment, ``[k * segment, (k + 1) *
    segment)`` with ``margin`` frames more on each side (cut at the file's ends), which soxr
    resamples on its own. So every output sample depends only on the file, never on where a
    read started: a read from a seek (a range of a long file) gives the same samples, bit for
    bit, as a read from the start. One soxr stream over the whole file would not: its arithmetic
    depends on where it started, by a few 1e-8, which is enough to turn an exactly silent
    analysis frame into one of 1e-8 noise, whose spectral centroid, roll-off and bandwidth are
    those of the noise (issue 25: 8 kHz calls with digital silence gave other numbers in
    ranges than whole). Segments start and end on the grid where native frames and output
    samples coincide (``step`` native frames), so each segment's output is a whole number of
    samples and the segments join without a gap.
    """

    native_rate: int
    sample_rate: int
    step: int
    segment: int
    margin: int

    @classmethod
    def of(cls, native_rate: int, sample_rate: int) -> ResampleGrid:
        from math import ceil, gcd

        step = native_rate // gcd(native_rate, sample_rate)  # native frames per grid point (at most 1 s)
        segment = max(1, round(RESAMPLE_SEGMENT_S * native_rate / step)) * step
        margin = max(1, ceil(PREROLL_S * native_rate / step)) * step
        return cls(native_rate, sample_rate, step, segment, margin)

    def output(self, frames: int) -> int:
        """Output samples of ``frames`` native frames from a grid point (soxr's count: rounded)."""
        return round(frames * self.sample_rate / self.native_rate)

    def segments(self, n_frames: int) -> int:
        """Segments of a file of ``n_frames`` native frames: the last one takes the file's end, so
        that no segment is cut short by the end of the file within its margin."""
        return max(1, -(-max(0, n_frames - self.margin) // self.segment))

    def segment_of(self, output_sample: int) -> int:
        """The segment that holds ``output_sample``."""
        return output_sample * self.native_rate // self.sample_rate // self.segment

    def span(self, k: int, n_frames: int) -> tuple[int, int, int, int]:
        """Native frames ``(lo, a, b, hi)`` of segment ``k``: it owns ``[a, b)`` and is resampled
        from ``[lo, hi)``; the last owns everything to the end (``b = hi = n_frames``)."""
        a = k * self.segment
        last = k >= self.segments(n_frames) - 1
        b = n_frames if last else a + self.segment
        return max(0, a - self.margin), a, b, (n_frames if last else min(n_frames, b + self.margin))

    def resample_segment(self, native: np.ndarray, k: int, *, n_frames: int, first: int = 0) -> np.ndarray:
        """Output samples segment ``k`` owns, from ``native``: mono native frames ``first ..`` that
        cover its span."""
        lo, a, b, hi = self.span(k, n_frames)
        out = _resample(soxr.resample, native[lo - first : hi - first], self.native_rate, self.sample_rate,
                        quality=_RESAMPLE_QUALITY)
        skip = self.output(a - lo)
        return out[skip:] if b == hi == n_frames else out[skip : skip + self.output(b - a)]


def _decoded_pieces(sound: sf.SoundFile, info: AudioInfo, *, sample_rate: int, start_sample: int,
                    channel: int | None) -> Iterator[Any]:
    """The output sample where decoding starts (at or before ``start_sample``), then consecutive
    mono pieces at ``sample_rate`` from it: native reads as they come when no resampling is
    needed, else the segments of the file's :class:`ResampleGrid`.

    Raises
    ------
    AudioError
        After the pieces before it, when the file holds fewer frames than its header says.
    """
    native_rate, n_frames = info.sample_rate, info.frames
    # Native frames per read such that the output stays under _STREAM_READ_FRAMES samples too:
    # memory is flat whatever the rates.
    per_read = max(1, min(_STREAM_READ_FRAMES, _STREAM_READ_FRAMES * native_rate // sample_rate))

    def read(count: int) -> np.ndarray:
        native = sound.read(count, dtype="float32", always_2d=True)
        return _downmix(native) if channel is None else _one_channel(native, channel)

    if native_rate == sample_rate:
        first = min(start_sample, n_frames)
        if first:
            sound.seek(first)
        yield first
        done = first
        while done < n_frames:
            mono = read(min(per_read, n_frames - done))
            if not len(mono):
                break
            done += len(mono)
            yield mono
        if done < n_frames:
            raise AudioError("truncated or corrupt audio data")
        return
    grid = ResampleGrid.of(native_rate, sample_rate)
    k = min(grid.segment_of(start_sample), grid.segments(n_frames) - 1)
    lo = grid.span(k, n_frames)[0]
    if lo:
        sound.seek(lo)
    yield grid.output(k * grid.segment)
    buffer, buffer_first, read_to = SampleBuffer(), lo, lo
    while k < grid.segments(n_frames):
        lo, a, b, hi = grid.span(k, n_frames)
        while read_to < hi:
            mono = read(min(per_read, hi - read_to))
            if not len(mono):
                break
            buffer.push(mono)
            read_to += len(mono)
        if read_to < hi:  # the file ends before its header says: what was read, then the error
            if read_to > a:
                yield grid.resample_segment(buffer.view, k, n_frames=read_to, first=buffer_first)[
                    : grid.output(min(b, read_to) - a)]
            raise AudioError("truncated or corrupt audio data")
        yield grid.resample_segment(buffer.view, k, n_frames=n_frames, first=buffer_first)
        k += 1
        keep_from = grid.span(k, n_frames)[0] if k < grid.segments(n_frames) else read_to
        buffer.drop(keep_from - buffer_first)
        buffer_first = keep_from


def _one_channel(native: np.ndarray, channel: int) -> np.ndarray:
    if not np.isfinite(native[:, channel]).all():
        raise AudioError("audio contains NaN or infinite samples")
    return np.ascontiguousarray(native[:, channel])


def _resample(function: Callable[..., np.ndarray], *args: Any, **kwargs: Any) -> np.ndarray:
    # soxr signals bad input with plain Python exceptions; keep them inside AudioError.
    try:
        return function(*args, **kwargs)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise AudioError(f"resampling failed ({exc})") from exc


def _check_rate(sample_rate: int) -> None:
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise AudioError(f"invalid target sample rate {sample_rate!r} (need a positive int, Hz)")


def _check_file(path: Path) -> int:
    """Size in bytes of ``path`` once it is known to be a readable, non-empty regular file."""
    # libsndfile reports a missing or unreadable file as a bare "System error" and an
    # empty one as "Format not recognised", so we name those cases ourselves first.
    path = Path(path)
    try:
        info = path.stat()
    except OSError as exc:
        raise AudioError(_os_error_reason(exc, link=path.is_symlink())) from None
    if not stat.S_ISREG(info.st_mode):
        raise AudioError("not a regular file")  # checked before opening: a pipe would block
    if info.st_size == 0:
        raise AudioError("empty file")
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError as exc:
        raise AudioError(_os_error_reason(exc)) from None
    return int(info.st_size)


def _os_error_reason(exc: OSError, *, link: bool = False) -> str:
    """The short reason of an error row for an operating-system error on a file.

    ``link`` says the path is a symbolic link, whose target is then what is missing.
    """
    if link and exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
        return "broken link"
    if exc.errno == errno.ELOOP:
        return "broken link (symlink loop)"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return "file not found"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "no read permission"
    if exc.errno == errno.EISDIR:
        return "not a regular file"
    return f"cannot read file ({exc.strerror or exc})"


def _info_of(sound: sf.SoundFile) -> AudioInfo:
    if sound.samplerate <= 0 or sound.channels <= 0:
        raise AudioError("truncated or corrupt audio data")
    return AudioInfo(
        sample_rate=int(sound.samplerate),
        channels=int(sound.channels),
        frames=int(sound.frames),
        duration_s=sound.frames / sound.samplerate,
        format=sound.format,
        subtype=sound.subtype,
    )


def _audio_error_from(exc: sf.SoundFileError, path: Path) -> AudioError:
    code = getattr(exc, "code", None)  # only LibsndfileError carries one
    if code == _SF_ERR_SYSTEM:
        return AudioError("cannot read file (permission or I/O error)")
    if _tag_only(path):
        return AudioError("no audio: an ID3 tag and no MPEG audio frames")
    if code == _SF_ERR_UNRECOGNISED_FORMAT:
        return AudioError("not an audio file (unrecognised format)")
    return AudioError("truncated or corrupt audio data")


#: Bytes after an ID3 tag searched for an MPEG frame (a longer file without one is damaged, not empty).
_TAG_SCAN_BYTES = 1 << 20


def _tag_only(path: Path) -> bool:
    """Whether ``path`` holds an ID3v2 tag and no MPEG audio frame after it (an MP3 whose audio was
    never written or was cut away): "no audio", not damage."""
    try:
        with open(os.fsencode(path), "rb") as handle:
            header = handle.read(10)
            if len(header) < 10 or header[:3] != b"ID3":
                return False
            size = (header[6] << 21) | (header[7] << 14) | (header[8] << 7) | header[9]
            handle.seek(10 + size + (10 if header[5] & 0x10 else 0))  # (a footer follows when flagged)
            rest = handle.read(_TAG_SCAN_BYTES + 1)
    except OSError:
        return False
    if len(rest) > _TAG_SCAN_BYTES:
        return False
    # An MPEG frame header begins with 11 set bits: 0xFF, then a byte whose top three bits are set.
    return not any(rest[i + 1] & 0xE0 == 0xE0 for i in range(len(rest) - 1) if rest[i] == 0xFF)


def _downmix(native: np.ndarray) -> np.ndarray:
    """Average ``native`` [shape=(frames, channels)] into contiguous float32 [shape=(frames,)]."""
    if not np.isfinite(native).all():
        raise AudioError("audio contains NaN or infinite samples")
    if native.shape[1] == 1:
        return np.ascontiguousarray(native[:, 0])
    return native.mean(axis=1, dtype=np.float32)

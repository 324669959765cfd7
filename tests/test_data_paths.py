"""Tests for :mod:`ser_batch.data.paths`: the stored, printable form of any file name, and back."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

from ser_batch.data.paths import fs_path, stored_path


def fsdecode(raw: bytes) -> str:
    return os.fsdecode(raw)


@pytest.mark.parametrize(("raw", "stored"), [
    (b"Actor_01/03-01-05-01-02-01-12.wav", "Actor_01/03-01-05-01-02-01-12.wav"),
    ("caf\u00e9/\u00e9t\u00e9.wav".encode(), "caf\u00e9/\u00e9t\u00e9.wav"),  # valid UTF-8: unchanged
    (b"bad\xffname.wav", "bad\\xffname.wav"),
    (b"latin1 caf\xe9.wav", "latin1 caf\\xe9.wav"),
    (b"cut\xc3.wav", "cut\\xc3.wav"),  # the first byte of a UTF-8 pair, alone
    (b"back\\slash.wav", "back\\slash.wav"),  # a backslash not followed by an escape stays
    (b"a\\x41.wav", "a\\x41.wav"),  # \x41 is never an escape we write: stays
    (b"looks\\xffescaped.wav", "looks\\x5cxffescaped.wav"),  # a literal "\xff": its backslash escaped
    (b"\\\xff.wav", "\\\\xff.wav"),
])
def test_stored_form_is_printable_and_lossless(raw: bytes, stored: str) -> None:
    name = fsdecode(raw)
    assert stored_path(name) == stored
    assert os.fsencode(fs_path(stored)) == raw
    pa.array([stored], pa.string())  # Arrow takes it (it refuses the surrogate escapes themselves)
    stored.encode("utf-8")


def test_different_names_never_share_a_stored_form() -> None:
    names = [b"x\xff.wav", b"x\\xff.wav", b"x\\x5cxff.wav", b"x\\\xff.wav", b"x\xc3\xbf.wav"]
    assert len({stored_path(fsdecode(n)) for n in names}) == len(names)


def test_a_file_opens_by_its_stored_form(tmp_path: Path) -> None:
    raw = os.path.join(os.fsencode(tmp_path), b"bad\xffname.wav")
    with open(raw, "wb") as handle:
        handle.write(b"x")
    (listed,) = os.listdir(tmp_path)
    assert (tmp_path / fs_path(stored_path(listed))).read_bytes() == b"x"


def test_the_stored_form_does_not_depend_on_the_locale() -> None:
    """Issue 25: under PYTHONUTF8=0 and a POSIX locale Python decodes file names as ASCII, so café.wav
    came as caf\\udcc3\\udca9.wav and was stored as caf\\xc3\\xa9.wav; a later UTF-8 run stored a second
    row for the same file. The stored form is the bytes read as UTF-8, however they were decoded."""
    raw = "café/été.wav".encode()
    as_ascii = raw.decode("ascii", "surrogateescape")  # what os.listdir gives under that locale
    assert stored_path(as_ascii) == stored_path(os.fsdecode(raw)) == "café/été.wav"
    assert os.fsencode(fs_path("café/été.wav")) == raw
    assert stored_path("bad\udcffname.wav") == "bad\\xffname.wav"  # bytes that are not UTF-8 stay escaped

"""File names as the tables store them: printable UTF-8 for every name, and back.

On POSIX a file name is bytes. Python lists a name that is not valid UTF-8 (``bad\\xffname.wav``
from an old archive) as a ``str`` holding surrogate escapes (:func:`os.fsdecode`), which
Parquet, JSON and a terminal all refuse. The ``path`` column holds instead its *stored* form
(:func:`stored_path`): each byte that is not UTF-8 written as the four characters ``\\xHH``, the
way Python's ``backslashreplace`` shows it. The form is lossless: :func:`fs_path` gives the name
back, and from it the exact bytes to open, so an incremental re-run matches the same file.

Names that are valid UTF-8 are stored unchanged, except in one case that would otherwise be
ambiguous: a literal backslash followed by ``x`` and the two hex digits of an escape
(``x\\x5c`` or ``\\x80``-``\\xff``) is itself written ``\\x5c``.
"""

from __future__ import annotations

import os
import re

#: The escapes :func:`stored_path` writes: a backslash (5c) and the bytes that are never UTF-8 alone.
_ESCAPE = re.compile(r"\\x(5[cC]|[89a-fA-F][0-9a-fA-F])")


def stored_path(name: str) -> str:
    """The printable form of ``name`` (a path as :func:`os.fsdecode` and :func:`os.listdir` give it).

    The form depends on the name's bytes only, not on the locale: under ``PYTHONUTF8=0`` and a POSIX
    locale Python decodes names as ASCII (``caf\\udcc3\\udca9.wav``), and a later run under UTF-8 would
    store the same file under a second name; the bytes are read as UTF-8 whatever the locale says.

    >>> stored_path("bad\\udcffname.wav")
    'bad\\\\xffname.wav'
    >>> stored_path("Actor_01/03-01-05.wav")
    'Actor_01/03-01-05.wav'
    """
    if name.isascii() and "\\" not in name:
        return name
    name = _as_utf8(name)
    if "\\" not in name and not any("\udc80" <= c <= "\udcff" for c in name):
        return name
    out = []
    for i, c in enumerate(name):
        if "\udc80" <= c <= "\udcff":
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        elif c == "\\" and _ESCAPE.match(name, i):
            out.append("\\x5c")
        else:
            out.append(c)
    return "".join(out)


def fs_path(stored: str) -> str:
    """The name of the file ``stored`` (a ``path`` value) denotes, for :func:`open` and :mod:`os` in
    this process's file system encoding (surrogate escapes where it cannot decode the bytes); the
    inverse of :func:`stored_path`."""
    if stored.isascii() and "\\x" not in stored:
        return stored

    def byte(match: re.Match[str]) -> str:
        value = int(match.group(1), 16)
        return "\\" if value == 0x5C else chr(0xDC00 + value)

    return os.fsdecode(_ESCAPE.sub(byte, stored).encode("utf-8", "surrogateescape"))


def _as_utf8(name: str) -> str:
    """``name`` (decoded by the file system encoding) as its bytes read as UTF-8 (surrogate escapes
    for the bytes that are not)."""
    try:
        raw = os.fsencode(name)
    except UnicodeEncodeError:  # (a name that came as text, not from the file system: already UTF-8)
        return name
    return raw.decode("utf-8", "surrogateescape")

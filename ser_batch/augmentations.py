"""The names of ``extract --augment``: their grammar, apart from the numpy code that applies them
(:mod:`ser_batch.audio.telephony`), so that the config can validate them and ``--help`` list them
without importing any audio code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ser_batch.errors import ConfigError

#: Speed factors allowed by ``tempo-<factor>`` (a few percent is what augmentation wants).
TEMPO_RANGE = (0.8, 1.25)
#: Reverberation times allowed by ``reverb-<rt60>s``, seconds (a small office to a hall).
REVERB_RANGE = (0.05, 3.0)


@dataclass(frozen=True)
class Augmentation:
    """One parsed augmentation name: ``kind`` (telephone, telephone-band, noise, pink, brown, hum,
    tones, reverb, gain, tempo) and its value (codec name, SNR in dB, reverberation time in seconds,
    gain in dB or speed factor)."""

    name: str
    kind: str
    value: str | float


_PATTERNS = (
    (re.compile(r"^telephone-(pcm|ulaw|alaw)$"), "telephone", str),
    (re.compile(r"^telephone-(pcm|ulaw|alaw)-band$"), "telephone-band", str),
    (re.compile(r"^noise-(-?\d+(?:\.\d+)?)db$"), "noise", float),
    (re.compile(r"^pink-(-?\d+(?:\.\d+)?)db$"), "pink", float),
    (re.compile(r"^brown-(-?\d+(?:\.\d+)?)db$"), "brown", float),
    (re.compile(r"^hum-(-?\d+(?:\.\d+)?)db$"), "hum", float),
    (re.compile(r"^tones-(-?\d+(?:\.\d+)?)db$"), "tones", float),
    (re.compile(r"^reverb-(\d+(?:\.\d+)?)s$"), "reverb", float),
    (re.compile(r"^gain-(-?\d+(?:\.\d+)?)db$"), "gain", float),
    (re.compile(r"^tempo-(\d+(?:\.\d+)?)$"), "tempo", float),
)


def parse_augmentation(name: str) -> Augmentation:
    """Parse an augmentation name such as ``telephone-ulaw``, ``noise-20db``, ``pink-10db``,
    ``gain--6db`` or ``tempo-1.05``.

    Raises
    ------
    ConfigError
        If the name has none of the forms of :data:`AUGMENT_FORMS`, or a speed factor is
        outside :data:`TEMPO_RANGE`.
    """
    for pattern, kind, cast in _PATTERNS:
        match = pattern.match(name)
        if match:
            value = cast(match.group(1))
            if kind == "tempo" and not TEMPO_RANGE[0] <= value <= TEMPO_RANGE[1]:
                raise ConfigError(f"augmentation {name!r}: the speed factor must be in "
                                  f"[{TEMPO_RANGE[0]}, {TEMPO_RANGE[1]}]")
            if kind == "reverb" and not REVERB_RANGE[0] <= value <= REVERB_RANGE[1]:
                raise ConfigError(f"augmentation {name!r}: the reverberation time must be in "
                                  f"[{REVERB_RANGE[0]}, {REVERB_RANGE[1]}] s")
            return Augmentation(name, kind, value)
    raise ConfigError(f"unknown augmentation {name!r} (known forms: {', '.join(AUGMENT_FORMS)})")


#: Forms of the names in ``extract.augment`` (parsed by :func:`parse_augmentation` below); kept here so
#: that ``extract --help`` lists them without importing the audio code.
AUGMENT_FORMS = ("telephone-pcm", "telephone-ulaw", "telephone-alaw", "telephone-<codec>-band", "noise-<snr>db",
                 "pink-<snr>db", "brown-<snr>db", "hum-<snr>db", "tones-<snr>db", "reverb-<rt60>s", "gain-<db>db",
                 "tempo-<factor>")

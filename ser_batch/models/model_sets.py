"""Named sets of models inside one bundle, and the one rule that picks the set for an input.

A bundle's root holds its ``global`` models (wideband audio, features as extracted). Training
can add sets beside them, each in its own sub-folder of the bundle and holding only the
array exports (``keras_ann.npz``, ``sklearn_mlp.npz``: what ser-batch evaluates), listed in
the manifest under ``model_sets``::

    "model_sets": {
      "global":         {"dir": "",               "band": "wide",   "normalize": "none",    ...},
      "speaker":        {"dir": "speaker",        "band": "wide",   "normalize": "speaker", ...},
      "narrow":         {"dir": "narrow",         "band": "narrow", "normalize": "none",    ...},
      "narrow-speaker": {"dir": "narrow-speaker", "band": "narrow", "normalize": "speaker", ...}
    }

Each entry also lists its ``models`` and its test ``metrics``. A bundle without the key has
just ``global``. ``band`` is what the set was trained on: ``narrow`` are telephone-band rows
(8 kHz inputs and telephone copies), ``wide`` the rest. ``normalize = "speaker"``: trained on
window features z-scored per speaker (:mod:`ser_batch.models.normalize`), so its inputs must be
z-scored per speaker or per stream too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ser_batch.errors import BundleError
from ser_batch.schema import BANDS, NARROW, WIDE, band_of

GLOBAL = "global"
SPEAKER = "speaker"
NARROW_SPEAKER = "narrow-speaker"
#: What a set's features were normalised by: nothing, or each speaker's own statistics.
SET_NORMALIZATIONS = ("none", "speaker")


@dataclass(frozen=True)
class ModelSet:
    """One set of a bundle: where its files are and what it was trained on."""

    name: str
    dir: str
    band: str
    normalize: str
    models: tuple[str, ...]
    metrics: Mapping[str, Any]

    @property
    def normalized(self) -> bool:
        return self.normalize != "none"

    def entry(self) -> dict[str, Any]:
        """The manifest entry of this set."""
        return {"dir": self.dir, "band": self.band, "normalize": self.normalize, "models": list(self.models),
                "metrics": dict(self.metrics)}


def set_name(band: str, normalized: bool) -> str:
    """Name of the set of a band, plain or normalised: ``global``, ``speaker``, ``narrow``, ``narrow-speaker``."""
    if band == WIDE:
        return SPEAKER if normalized else GLOBAL
    return NARROW_SPEAKER if normalized else NARROW


def parse_model_sets(manifest: Mapping[str, Any], *, where: str) -> dict[str, ModelSet]:
    """The sets a manifest lists (just ``global``, at the root, when it lists none).

    Raises
    ------
    BundleError
        If an entry is malformed, ``global`` is missing or not at the root, or an extra set's
        array files are not in the manifest's checksummed files.
    """
    frameworks = tuple(manifest["models"])
    raw = manifest.get("model_sets")
    if raw is None:
        return {GLOBAL: ModelSet(GLOBAL, "", WIDE, "none", frameworks, manifest.get("metrics", {}))}
    from ser_batch.models.networks import ARRAYS

    sets = {}
    files = manifest.get("files", {})
    try:
        for name, entry in dict(raw).items():
            model_set = ModelSet(str(name), str(entry.get("dir", "")), str(entry["band"]), str(entry["normalize"]),
                                 tuple(entry.get("models", frameworks)), dict(entry.get("metrics", {})))
            if model_set.band not in BANDS or model_set.normalize not in SET_NORMALIZATIONS:
                raise ValueError(f"set {name!r}: band {model_set.band!r} / normalize {model_set.normalize!r}")
            if model_set.dir:
                missing = [f"{model_set.dir}/{ARRAYS[f]}" for f in model_set.models
                           if f not in ARRAYS or f"{model_set.dir}/{ARRAYS[f]}" not in files]
                if missing:
                    raise BundleError(f"bundle {where} is incomplete: model set {name!r} lacks "
                                      f"{', '.join(missing)} in its manifest")
            sets[model_set.name] = model_set
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"bundle {where} has a malformed model_sets entry: {exc}") from None
    if GLOBAL not in sets or sets[GLOBAL].dir:
        raise BundleError(f"bundle {where} has model_sets without a {GLOBAL!r} set at its root")
    return sets


def choose_set(sets: Mapping[str, ModelSet], *, sample_rate_in: int | None = None, band: str | None = None,
               normalize: bool = False, where: str = "the bundle") -> str:
    """Name of the set that scores an input.

    The set of the input's band (``band``, or from ``sample_rate_in``: narrow at 8 kHz and
    below) when the bundle has one, else the wideband set; the normalised variant when
    ``normalize`` is asked.

    Raises
    ------
    BundleError
        If ``normalize`` is asked and the bundle has no normalised set.
    """
    band = band or band_of(sample_rate_in) or WIDE
    wanted = [set_name(band, normalize), set_name(WIDE, normalize)]
    for name in wanted:
        if name in sets:
            return name
    if normalize:
        raise BundleError(no_normalized_sets_message(where))
    return GLOBAL


def no_normalized_sets_message(where: str) -> str:
    return (f"model bundle {where} has no normalised models (no model set trained with `train --normalize "
            "speaker`), so it cannot score per-speaker or per-call normalised features; retrain with "
            "`ser-batch train FEATURES --normalize speaker`, or leave out --normalize")

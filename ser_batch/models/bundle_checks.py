"""Checks of a model bundle that need no model loaded: every path it names stays inside its folder,
its class and framework lists make sense, and a loaded model fits the bundle's features and classes.

:func:`ser_batch.models.bundle.load_bundle` runs them before and while it opens a bundle; each
failure is a :class:`~ser_batch.errors.BundleError` of one line naming the entry and the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ser_batch.errors import BundleError

MANIFEST = "manifest.json"


def inside_bundle(root: Path, name: Any, *, what: str) -> Path:
    """``root / name`` for a relative ``name`` the manifest gives, refused unless it stays inside
    the bundle: plain components only (no absolute path, ``..``, ``.``, empty part, backslash or NUL)
    and no symbolic link among them (a link is not followed, wherever it points).

    Raises
    ------
    BundleError
        Naming the entry; the check never looks outside the bundle, so the message is the same
        whether or not something exists there.
    """
    root = Path(root)
    text = name if isinstance(name, str) else ""
    parts = text.split("/")
    if not text or text.startswith("/") or "\\" in text or "\0" in text or any(p in ("", ".", "..") for p in parts):
        shown = repr(name) if len(repr(name)) <= 120 else repr(name)[:117] + "..."
        raise BundleError(f"bundle {root} names {what} {shown} in its {MANIFEST}, which is not a path inside the "
                          "bundle (every path a bundle names must be relative, without '..'); refused unread")
    current = root
    for part in parts:
        current = current / part
        if current.is_symlink():
            raise BundleError(f"bundle {root}: {what} {text} is a symbolic link ({current.relative_to(root)}); a "
                              "bundle's files must be regular files inside its folder, and no link is followed")
    return current


def check_manifest_contract(manifest: dict[str, Any], manifest_path: Path) -> None:
    """Refuse class and framework lists that no model could fit: duplicate or empty class names
    (each becomes a ``p_<class>`` column), unknown or repeated frameworks, a feature count that
    disagrees with the feature names."""
    from ser_batch.models.networks import ARRAYS

    classes, models, features = manifest["classes"], manifest["models"], manifest["features"]
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) and c for c in classes):
        raise BundleError(f"malformed {manifest_path}: 'classes' must list at least two class names")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise BundleError(f"bundle {manifest_path.parent} lists class {repeated[0]!r} {classes.count(repeated[0])} "
                          f"times in its {MANIFEST}; class names must be distinct (each is a column p_<class>)")
    if not isinstance(models, list) or not models or any(m not in ARRAYS for m in models) \
            or len(set(models)) != len(models):
        raise BundleError(f"malformed {manifest_path}: 'models' is {str(models)[:80]}; it lists each of "
                          f"{', '.join(ARRAYS)} at most once")
    names, count = features.get("names"), features.get("n_features")
    if count is not None and (not isinstance(count, int) or count < 1 or (names and len(names) != count)):
        raise BundleError(f"malformed {manifest_path}: n_features {count!r} for {len(names or [])} feature names")


def check_model_fits(model: Any, *, classes: list[str], n_features: int | None) -> None:
    """A model read from a bundle must give the bundle's classes (``classes_``) and take its
    features (``n_features_in_``, where the estimator states it).

    Raises
    ------
    ValueError
        Saying what differs.
    """
    known = [str(c) for c in getattr(model, "classes_", [])]
    missing = [c for c in classes if c not in known]
    if missing or len(known) != len(classes):
        raise ValueError(f"its classes ({', '.join(known)}) are not the bundle's ({', '.join(classes)})")
    width = getattr(model, "n_features_in_", None)
    if width is not None and n_features is not None and int(width) != n_features:
        raise ValueError(f"it takes {width} features, the bundle's recipe gives {n_features}")


def check_keras_shapes(network: Any, *, classes: list[str], n_features: int | None) -> None:
    """A Keras network must map the bundle's ``n_features`` inputs to one output per class.

    Raises
    ------
    ValueError
        Saying what the network maps from and to.
    """
    inputs, outputs = tuple(network.input_shape), tuple(network.output_shape)
    if (n_features is not None and inputs[-1] != n_features) or outputs[-1] != len(classes):
        raise ValueError(f"the network maps {inputs[1:]} inputs to {outputs[1:]} outputs; the bundle has "
                         f"{n_features} features and {len(classes)} classes")

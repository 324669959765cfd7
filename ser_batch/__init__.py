"""ser-batch: speech emotion recognition as a distributed batch job.

The public Python API, imported on first use (so ``import ser_batch`` stays instant)::

    import ser_batch
    config = ser_batch.load_config()                         # defaults; or a TOML file, --set overrides
    features, info = ser_batch.file_features("clip.wav", config=config)
    bundle = ser_batch.load_bundle()                         # the pretrained bundle
    ser_batch.predict_files(["clip.wav"], bundle=bundle)     # what `ser-batch predict` prints
    ser_batch.run_score("calls/", "output/scores", config=config)   # what `ser-batch score` runs
    ser_batch.run_score("calls/", "output/scores", config=config,   # ... with --in-process
                        executor=ser_batch.Executor(in_process=True))

The code is laid out by layer, each importing only the ones before it: ``audio``, ``features``,
``data``, ``models``, ``inference``, ``reports``, ``cluster``, ``pipeline``, ``demo``, ``cli``
(see docs/architecture.md).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

#: Public names and the module each comes from.
_API = {
    "load_config": "ser_batch.config",
    "Config": "ser_batch.config",
    "load_audio": "ser_batch.audio.decode",
    "file_features": "ser_batch.features.recipes",
    "signal_features": "ser_batch.features.recipes",
    "load_feature_set": "ser_batch.data.featureset",
    "load_bundle": "ser_batch.models.bundle",
    "default_bundle_path": "ser_batch.models.bundle",
    "predict_files": "ser_batch.inference.scoring",
    "run_extract": "ser_batch.pipeline.extract",
    "run_train": "ser_batch.pipeline.train",
    "evaluate_bundle": "ser_batch.pipeline.evaluate",
    "run_score": "ser_batch.pipeline.score",
    "Executor": "ser_batch.cluster.engine",
    "SerBatchError": "ser_batch.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ser_batch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))

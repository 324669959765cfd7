"""One exception family for ser-batch.

The CLI turns any :class:`SerBatchError` into a one-line message and a non-zero
exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SerBatchError(Exception):
    """Base class of every error ser-batch raises on purpose."""


class ConfigError(SerBatchError):
    """A configuration file, override or option is invalid."""


class AudioError(SerBatchError):
    """An audio file cannot be decoded; the message says why in plain words."""


class FeatureError(SerBatchError):
    """Features cannot be computed with the requested parameters."""


class DatasetError(SerBatchError):
    """A feature dataset is missing, empty or does not match what is expected."""


class BundleError(SerBatchError):
    """A model bundle is missing, corrupt, tampered with or incompatible."""


class ClusterError(SerBatchError):
    """Ray could not be started or reached, or a task failed for good."""

"""The ``ser-batch`` command line: the root group (:mod:`.root`) and the modules whose commands register
on it: the jobs (:mod:`.jobs`), models and results (:mod:`.inspect`) and clusters (:mod:`.cluster`).
Commands only parse options and call one library function; the library never imports click."""

from ser_batch.cli import cluster, inspect, jobs  # noqa: F401  (each registers its commands on main)
from ser_batch.cli.root import main

__all__ = ["main"]

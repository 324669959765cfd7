"""The ``ser-batch`` command line: parses options and calls one library function per verb.

Heavy imports (Ray, librosa, TensorFlow) happen inside the commands so that ``--help``
is instant. Every :class:`~ser_batch.errors.SerBatchError` becomes a one-line message on
stderr and exit code 1; bad usage exits with 2 (click's convention), and so does a
:class:`~ser_batch.errors.ConfigError` (a bad ``--set``, ``--config`` or option value); Ctrl-C
exits with 130, as shells expect of a command stopped by SIGINT.
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click
from click.core import ParameterSource

from ser_batch import __version__
from ser_batch.errors import ConfigError, SerBatchError

if TYPE_CHECKING:
    from ser_batch.cluster.engine import Executor
    from ser_batch.config import Config

#: Exit code of bad usage: click's own errors, and settings or option values that are refused.
EXIT_USAGE = 2
#: Exit code when the job ran but some files failed and ``--fail-on-error`` was given.
EXIT_FILE_ERRORS = 3
#: Exit code after Ctrl-C (128 + SIGINT), what shells report for a command stopped that way.
EXIT_INTERRUPTED = 130
ADDRESS_HELP = ("Ray cluster to run on instead of an embedded local Ray: its GCS address HOST:PORT (or auto), "
                 "as printed by `ser-batch cluster start` or `ray start`; not the dashboard's http:// address, "
                 "which `ser-batch submit --jobs-address` takes. INPUT and --out must then be on storage every "
                 "node shares.")


def handle_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ConfigError as exc:  # a setting or option value: bad usage, like click's own errors
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USAGE)
        except SerBatchError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except OSError as exc:  # disk full, permissions, unreadable folders: not a bug
            click.echo(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), err=True)
            sys.exit(1)

    return wrapper


def config_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option(
        "--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
        help="Override one config value (TOML syntax for the value); repeatable, "
             "e.g. --set audio.sample_rate=8000 --set extract.shard_size=16.",
    )(command)
    command = click.option(
        "--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="TOML config file (see configs/); defaults are used for anything it leaves out.",
    )(command)
    return command


def load_cli_config(config_path: Path | None, overrides: tuple[str, ...], runtime: RuntimeOptions | None = None,
                    **options: dict[str, Any]) -> Config:
    """The settings of a command, merged once: defaults, ``--config``, ``--set``, then the command's
    own options (``options``: section -> {key: value}; a ``None`` value is an option not given)."""
    from ser_batch.config import load_config

    if runtime is not None:
        options = {**options, "ray": {"num_cpus": runtime.num_cpus}}
    changes = {section: {k: v for k, v in values.items() if v is not None} for section, values in options.items()}
    return load_config(config_path, overrides=overrides, changes={s: v for s, v in changes.items() if v})


@dataclass(frozen=True)
class RuntimeOptions:
    """``--num-cpus``, ``--address`` and ``--in-process`` of a job command: where its shards run."""

    num_cpus: int | None
    address: str | None
    in_process: bool

    def executor(self, config: Config) -> Executor:
        """The executor of a run (``--address``, else ``ray.address``, else ``RAY_ADDRESS`` or embedded)."""
        from ser_batch.cluster.engine import Executor

        return Executor.of(config.ray, address=self.address, in_process=self.in_process)


def runtime_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--num-cpus``, ``--address`` and ``--in-process`` to a job command, which gets them as
    one ``runtime`` (:class:`RuntimeOptions`) argument."""

    @functools.wraps(command)
    def wrapper(*args: Any, num_cpus: int | None, address: str | None, in_process: bool, **kwargs: Any) -> Any:
        context = click.get_current_context()
        if in_process and address and context.get_parameter_source("address") is ParameterSource.COMMANDLINE:
            raise click.UsageError("--in-process runs the job in this process: it joins no cluster (--address)")
        return command(*args, runtime=RuntimeOptions(num_cpus, address, in_process), **kwargs)

    wrapper = click.option(
        "--in-process", is_flag=True,
        help="Run every shard in this process, one after the other, without Ray: no runtime to start "
             "(for small runs, tests and debugging; a failure's traceback is the job's own). "
             "RAY_ADDRESS and ray.address are then ignored.")(wrapper)
    wrapper = click.option("--address", default=None, envvar="RAY_ADDRESS", show_envvar=True, metavar="HOST:PORT",
                           help=ADDRESS_HELP)(wrapper)
    return click.option("--num-cpus", type=click.IntRange(min=1), default=None,
                        help="CPUs of the embedded local Ray (with --in-process: the threads train's fits "
                             "share)  [default: all]")(wrapper)


class RootGroup(click.Group):
    """The ``ser-batch`` group: Ctrl-C in any command exits with 130 (click alone prints
    ``Aborted!`` and exits 1, which scripts cannot tell from a failure)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("\ninterrupted (Ctrl-C)", err=True)
            ctx.exit(EXIT_INTERRUPTED)


@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="ser-batch")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Speech emotion recognition over large audio archives, as Ray batch jobs.

    Typical flow: `extract` features from an audio folder into Parquet, `train` models
    on them, then `predict` or score new audio. Jobs run on an embedded local Ray unless
    --address (or RAY_ADDRESS) names a cluster.
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    stop_cleanly_on_sigterm()


def stop_cleanly_on_sigterm() -> None:
    """SIGTERM (``ser-batch jobs stop``, a scheduler's stop) ends the command as an exit would: OUT's
    lock is released and temporary files go, as when Ray's driver gets it (``ray.init`` installs
    the same handler; a job takes OUT's lock before it starts or joins Ray, and only plans with
    work start it at all). Exit status 15, Ray's."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))


def parse_test_actors(text: str | None) -> dict[str, Any]:
    """``17,18,19,20`` -> explicit actors; ``0.2`` -> that fraction of actors at random."""
    if text is None:
        return {}
    text = text.strip()
    try:
        if "," not in text and "." in text:
            return {"test_actors": [], "test_actor_fraction": float(text)}
        return {"test_actors": [int(a) for a in text.split(",") if a.strip()]}
    except ValueError:
        raise click.BadParameter("use actor numbers like 17,18,19,20 or a fraction like 0.2",
                                 param_hint="--test-actors") from None


TRUST_PICKLE_HELP = ("Allow loading the scikit-learn pickle of an old (format-1) bundle. Unpickling "
                      "runs any code the file holds: only for bundles from a source you trust.")

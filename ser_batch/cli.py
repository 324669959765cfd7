"""The ``ser-batch`` command line: parses options and calls one library function per verb.

Heavy imports (Ray, librosa, TensorFlow) happen inside the commands so that ``--help``
is instant. Every :class:`~ser_batch.errors.SerBatchError` becomes a one-line message on
stderr and exit code 1; bad usage exits with 2 (click's convention).
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import click

from ser_batch import __version__
from ser_batch.errors import SerBatchError

#: Exit code when the job ran but some files failed and ``--fail-on-error`` was given.
EXIT_FILE_ERRORS = 3


def _handle_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except SerBatchError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper


def _config_options(command: Callable[..., Any]) -> Callable[..., Any]:
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


def _load_config(config_path: Path | None, overrides: tuple[str, ...], **extra: dict[str, Any]) -> Any:
    from ser_batch.config import load_config

    config = load_config(config_path, overrides=overrides)
    extra = {section: {k: v for k, v in values.items() if v is not None} for section, values in extra.items()}
    return config.replace(**{s: v for s, v in extra.items() if v})


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
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


@main.command()
@click.argument("input_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder for the Parquet parts  [default: extract.out of the config, "
                   "output/features]")
@click.option("--recipe", type=click.Choice(["fast", "classic"]), default=None,
              help="Feature recipe: fast (one shared STFT) or classic (the reference librosa "
                   "calls)  [default: features.recipe of the config, fast]")
@click.option("--labels", "labels_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV with path,label[,actor][,gender] for files whose names carry no "
                   "RAVDESS labels  [default: INPUT_DIR/labels.csv if present]")
@click.option("--num-cpus", type=click.IntRange(min=1), default=None,
              help="CPUs of the embedded local Ray  [default: all]")
@click.option("--address", default=None, envvar="RAY_ADDRESS", show_envvar=True,
              help="Ray cluster to run on instead of an embedded local Ray.")
@click.option("--overwrite", is_flag=True, help="Replace results already in --out.")
@click.option("--resume", is_flag=True,
              help="Keep parts of an interrupted run with the same files and settings; do the rest.")
@click.option("--fail-on-error", is_flag=True,
              help=f"Exit with code {EXIT_FILE_ERRORS} if any file could not be processed.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@_config_options
@_handle_errors
def extract(input_dir: Path, out: Path | None, recipe: str | None, labels_csv: Path | None,
            num_cpus: int | None, address: str | None, overwrite: bool, resume: bool,
            fail_on_error: bool, no_progress: bool, config_path: Path | None,
            overrides: tuple[str, ...]) -> None:
    """Extract emotion features of every audio file below INPUT_DIR into Parquet.

    Files are found recursively (wav, flac, ogg, mp3, ...), decoded to mono at
    audio.sample_rate, and processed in parallel Ray tasks, one Parquet part per shard.
    A file that cannot be read becomes a row with its `error` set; the job goes on.

    Example: ser-batch extract ../shared/data/ravdess/Audio_Speech_Actors_01-20_16k
    --out output/features
    """
    from ser_batch.extract import run_extract

    config = _load_config(config_path, overrides, features={"recipe": recipe},
                          ray={"num_cpus": num_cpus})
    summary = run_extract(input_dir, out or Path(config.extract.out), config=config,
                          overwrite=overwrite, resume=resume, labels_csv=labels_csv,
                          address=address or config.ray.address or None, progress=not no_progress)
    click.echo(summary.line())
    if fail_on_error and summary.errors:
        click.echo(f"error: {summary.errors} file(s) failed; see the `error` column", err=True)
        sys.exit(EXIT_FILE_ERRORS)


if __name__ == "__main__":  # pragma: no cover
    main()

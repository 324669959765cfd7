"""``ser-batch submit``, ``jobs`` and ``cluster``: the cluster commands of the command line.

Registered on the ``ser-batch`` group by :mod:`ser_batch.cli`; like it, they only parse
options and call :mod:`ser_batch.cluster.jobs_api` and :mod:`ser_batch.cluster.local`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ser_batch.cli.root import handle_errors, load_cli_config, main

JOB_COMMANDS = ("extract", "train", "score")
_JOBS_ADDRESS = click.option(
    "--jobs-address", envvar="RAY_API_SERVER_ADDRESS", show_envvar=True, default=None, metavar="URL",
    help="The cluster's Jobs API, i.e. its dashboard http://HOST:PORT (not the GCS address of --address)  "
         "[default: the local cluster of `ser-batch cluster start`, else http://127.0.0.1:8265]")


def absolute_args(command: click.Command, args: list[str]) -> list[str]:
    """``args`` of ``command`` with every path made absolute, and ``--out`` added when left out.

    A job runs in a temporary copy of the project on the cluster: a relative path, or a
    default output such as ``output/scores``, would point inside that copy. Paths are made
    absolute on the submitting machine (they must exist there on the cluster, i.e. on shared
    storage), without checking that they exist here.
    """
    from ser_batch.cluster.output import absolute

    options = {name: p for p in command.params if isinstance(p, click.Option) for name in p.opts}
    arguments = [p for p in command.params if isinstance(p, click.Argument)]

    def fix(param: click.Parameter | None, value: str) -> str:
        return str(absolute(value)) if param is not None and isinstance(param.type, click.Path) else value

    result, given, position, i = [], {}, 0, 0
    while i < len(args):
        token = args[i]
        if token.startswith("-") and token != "-":
            name, eq, value = token.partition("=")
            param = options.get(name)
            if param is None:
                raise click.UsageError(f"`ser-batch {command.name}` has no option {name}")
            if param.is_flag or param.count:
                result.append(token)
                i += 1
                continue
            if not eq:
                if i + 1 >= len(args):
                    raise click.UsageError(f"option {name} of `ser-batch {command.name}` needs a value")
                value, i = args[i + 1], i + 1
            given.setdefault(param.name, []).append(value)
            result += [name, fix(param, value)]
        else:
            param = arguments[position] if position < len(arguments) else None
            position += 1
            result.append(fix(param, token))
        i += 1
    if "out" in {p.name for p in command.params} and "out" not in given:
        result += ["--out", str(absolute(_default_out(command, given)))]
    return result


def _default_out(command: click.Command, given: dict[str, list[str]]) -> str:
    """Where ``command`` would write without ``--out``: its option default or the config's."""
    out = next(p for p in command.params if p.name == "out")
    if out.default is not None:
        return str(out.default)
    config_path = given.get("config_path", [None])[-1]
    config = load_cli_config(Path(config_path) if config_path else None, tuple(given.get("overrides", [])))
    return str(getattr(config, command.name).out)


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("command", type=click.Choice(JOB_COMMANDS))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@_JOBS_ADDRESS
@click.option("--submission-id", default=None, metavar="ID",
              help="Job id to use; an id the cluster already knows is not run again (nightly: score-$(date +%F)).")
@click.option("--wait", is_flag=True, help="Follow the job's log to its end and exit with its status.")
@handle_errors
def submit(command: str, args: tuple[str, ...], jobs_address: str | None, submission_id: str | None,
           wait: bool) -> None:
    """Run `ser-batch COMMAND ARGS` as a Ray job on a cluster (extract, train or score).

    The job runs this project's code on the cluster (uploaded as the job's working_dir) and
    joins the cluster itself; paths in ARGS are made absolute here and must exist at that
    path on the cluster (shared storage), --out included (added when left out). Prints the
    job id and its dashboard page; with --wait, follows the log to the end and exits with
    the job's status (0 when it succeeded).

    Example: ser-batch submit score /archive/calls --out /archive/scores --wait
    """
    from ser_batch.cluster import jobs_api

    target = main.commands[command]
    job = jobs_api.submit(command, absolute_args(target, list(args)), address=jobs_address,
                            submission_id=submission_id)
    if job.new:
        click.echo(f"submitted job {job.job_id}: {job.entrypoint}")
    else:
        status = jobs_api.job_info(jobs_address, job.job_id).status
        click.echo(f"job {job.job_id} was submitted before ({jobs_api.status_name(status)}); not run again")
    click.echo(f"dashboard: {job.dashboard}/#/jobs/{job.job_id}")
    if wait:
        _follow(jobs_address, job.job_id)


def _follow(jobs_address: str | None, job_id: str) -> None:
    from ser_batch.cluster import jobs_api

    info = jobs_api.follow(jobs_address, job_id, lambda text: click.echo(text, nl=False))
    status = jobs_api.status_name(info.status)
    code = jobs_api.exit_code(info)
    # Ray's message of a failed job repeats the end of the log just printed: keep its first clause.
    first = (info.message or "").strip().splitlines()[0].split(", last available logs")[0] if info.message else ""
    message = f": {first}" if first and code else ""
    click.echo(f"job {job_id} {status}{message}", err=bool(code))
    if code:
        sys.exit(code)


@main.group()
def jobs() -> None:
    """List, inspect, follow and stop Ray jobs (see `ser-batch submit`)."""


@jobs.command("list")
@_JOBS_ADDRESS
@handle_errors
def jobs_list(jobs_address: str | None) -> None:
    """Every job of the cluster: id, status, start time, command."""
    from ser_batch.cluster import jobs_api

    found = jobs_api.list_jobs(jobs_address)
    for info in found:
        click.echo(jobs_api.describe(info))
    if not found:
        click.echo(f"no jobs on {jobs_api.jobs_address(jobs_address)}")


@jobs.command("status")
@click.argument("job_id", metavar="ID")
@_JOBS_ADDRESS
@handle_errors
def jobs_status(job_id: str, jobs_address: str | None) -> None:
    """Status of job ID (and its message); exit status 0 unless it failed or was stopped."""
    from ser_batch.cluster import jobs_api

    info = jobs_api.job_info(jobs_address, job_id)
    click.echo(jobs_api.describe(info))
    if info.message:
        click.echo(info.message.strip().splitlines()[0])
    status = jobs_api.status_name(info.status)
    if status in ("FAILED", "STOPPED"):
        sys.exit(jobs_api.exit_code(info))


@jobs.command("logs")
@click.argument("job_id", metavar="ID")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job ends; exit with its status.")
@_JOBS_ADDRESS
@handle_errors
def jobs_logs(job_id: str, follow: bool, jobs_address: str | None) -> None:
    """The log (stdout and stderr of the driver) of job ID."""
    from ser_batch.cluster import jobs_api

    if follow:
        _follow(jobs_address, job_id)
    else:
        click.echo(jobs_api.logs(jobs_address, job_id), nl=False)


@jobs.command("stop")
@click.argument("job_id", metavar="ID")
@_JOBS_ADDRESS
@handle_errors
def jobs_stop(job_id: str, jobs_address: str | None) -> None:
    """Stop job ID: its driver gets SIGTERM (then SIGKILL), releases its --out and its tasks end."""
    from ser_batch.cluster import jobs_api

    status = jobs_api.stop(jobs_address, job_id)
    click.echo(f"job {job_id} {status}")


@main.group()
def cluster() -> None:
    """A Ray cluster of one or more nodes on this machine (try the cluster path on a laptop)."""


@cluster.command("start")
@click.option("--num-cpus", type=click.IntRange(min=1), default=None,
              help="CPUs each node offers  [default: this machine's CPUs shared among the nodes]")
@click.option("--workers", type=click.IntRange(min=0), default=0, help="Worker nodes besides the head node.")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="GCS port  [default: a free port]")
@click.option("--dashboard-port", type=click.IntRange(1, 65535), default=None,
              help="Dashboard and Jobs API port (on 127.0.0.1)  [default: a free port]")
@handle_errors
def cluster_start(num_cpus: int | None, workers: int, port: int | None, dashboard_port: int | None) -> None:
    """Start a head node (and --workers worker nodes) on this machine; print the addresses to use.

    Every node gets ports of its own; the dashboard and Jobs API listen on 127.0.0.1 only;
    token authentication stays on, with the token in ~/.ray/auth_token that ser-batch
    clients send. State: SER_BATCH_CLUSTER_DIR (default ~/.ser-batch/cluster).
    """
    from ser_batch.cluster.local import start_cluster

    started = start_cluster(num_cpus=num_cpus, workers=workers, port=port, dashboard_port=dashboard_port)
    for line in started.lines():
        click.echo(line)


@cluster.command("status")
@handle_errors
def cluster_status() -> None:
    """Addresses, nodes and `ray status` of the local cluster; exit status 1 when none runs.

    (`ray status` is the autoscaler's view: a node that just joined may show a few seconds late.)
    """
    from ser_batch.cluster.local import cluster_pids, load_state, node_lines, ray_status

    state = load_state()
    if state is None or not cluster_pids(state.temp_dir, state.gcs_address):
        click.echo("no local cluster is running (`ser-batch cluster start`)", err=True)
        sys.exit(1)
    for line in [*state.lines(), *node_lines(state)]:
        click.echo(line)
    click.echo(ray_status(state))


@cluster.command("stop")
@handle_errors
def cluster_stop() -> None:
    """Stop the local cluster: exactly its processes, never other Ray runtimes of the machine."""
    from ser_batch.cluster.local import stop_cluster

    count = stop_cluster()
    click.echo(f"local cluster stopped ({count} processes)" if count else "no local cluster was running")

"""A Ray cluster of several nodes on this machine, for trying the cluster path on a laptop.

``start_cluster`` runs ``ray start --head`` and then ``ray start --address`` once per extra
worker node, each node on ports of its own (free ports chosen at start) so that nodes,
other Ray runtimes and other local clusters on the machine never collide, all under one
private Ray temporary folder (so ``ray.init(address="auto")`` elsewhere does not stumble on
it). The dashboard and its Jobs API listen on 127.0.0.1 only; token authentication stays
on (``RAY_AUTH_MODE=token``), with the token Ray keeps in ``~/.ray/auth_token`` (generated
once if missing, readable by its owner only), which every ser-batch client on this machine sends.

Ray's per-node Prometheus endpoints (``metrics-export-port``) have no authentication and listen
on every interface; ``ray start`` offers no way to bind them to 127.0.0.1 (it turns a
``--node-ip-address`` of 127.0.0.1 into the machine's address), so metrics collection is switched
off (``RAY_enable_metrics_collection=0``). The dashboard's own metrics endpoint (port 44227) cannot
be bound or switched off that way; docs/cluster.md says so.

What was started is recorded in ``cluster.json`` in the state folder
(``SER_BATCH_CLUSTER_DIR``, default ``~/.ser-batch/cluster``). ``stop_cluster`` ends exactly
the processes of that cluster (found by its temporary folder, plus their children), never
other Ray processes: ``ray stop`` would end every Ray runtime of the machine. Process
discovery reads ``/proc``, so the local cluster is for Linux.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ser_batch.errors import ClusterError

STATE_ENV = "SER_BATCH_CLUSTER_DIR"
STATE_FILE = "cluster.json"
#: Per-node ports besides the head's own; each node gets its own free ones.
NODE_PORTS = ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
              "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")


@dataclass
class LocalCluster:
    """A cluster started by :func:`start_cluster` (what ``cluster.json`` holds)."""

    gcs_address: str  # HOST:PORT for --address / RAY_ADDRESS / ray.init
    jobs_address: str  # http://127.0.0.1:PORT for --jobs-address (the dashboard too)
    temp_dir: str  # Ray's temporary folder of every node of this cluster
    num_cpus: int  # per node
    nodes: list[dict[str, int]] = field(default_factory=list)  # ports of each node, head first
    started: str = ""

    def lines(self) -> list[str]:
        """What to tell a user: the addresses and how clients authenticate."""
        workers = len(self.nodes) - 1
        shape = f"1 head node + {workers} worker node{'s' if workers != 1 else ''}" if workers else "1 head node"
        return [
            f"local Ray cluster running: {shape}, {self.num_cpus} CPU{'s' if self.num_cpus != 1 else ''} each; "
            "token authentication on",
            f"  cluster (GCS) address:  {self.gcs_address}    "
            f"-> ser-batch extract|train|score ... --address {self.gcs_address}",
            f"  Jobs API and dashboard: {self.jobs_address}    "
            f"-> ser-batch submit|jobs ... --jobs-address {self.jobs_address}",
            f"  token: {token_source()} (ser-batch clients on this machine send it; for the ray CLI "
            "export RAY_AUTH_MODE=token)",
            "  stop it with: ser-batch cluster stop",
        ]


def state_dir() -> Path:
    return Path(os.environ.get(STATE_ENV) or Path.home() / ".ser-batch" / "cluster")


def load_state() -> LocalCluster | None:
    """The recorded local cluster, or ``None``."""
    path = state_dir() / STATE_FILE
    try:
        return LocalCluster(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise ClusterError(f"unreadable cluster state {path}: {exc}; delete it and stop leftover "
                           "processes by hand") from None


def token_source() -> str:
    """Where Ray clients find the token (as Ray looks: variable, file variable, default file)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    return os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that nothing listens on right now."""
    sockets, ports = [], []
    try:
        while len(ports) < count:
            s = socket.socket()
            s.bind(("", 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


def _ray_executable() -> str:
    beside = Path(sys.executable).parent / "ray"
    found = str(beside) if beside.exists() else shutil.which("ray")
    if not found:
        raise ClusterError("the `ray` command was not found (install ray[default])")
    return found


def _environment() -> dict[str, str]:
    """Environment of the cluster's processes: this Python first on PATH (so a job's
    ``python`` entrypoint is this interpreter), token authentication on, no inherited
    cluster addresses."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # No per-node Prometheus endpoints: they answer anyone on every interface (see the module docstring).
    env["RAY_enable_metrics_collection"] = "0"
    return env


def _ensure_token(env: dict[str, str]) -> None:
    """Generate Ray's token file if there is none, and keep it readable by its owner only."""
    if env.get("RAY_AUTH_TOKEN"):
        return
    path = Path(token_source())
    if not path.is_file():
        # Ray writes the file with the default umask (mode 644); 077 creates it 600 from the start.
        result = subprocess.run([_ray_executable(), "get-auth-token", "--generate"], env=env, capture_output=True,
                                text=True, timeout=120, umask=0o077)
        if result.returncode != 0:
            raise ClusterError(f"could not create a Ray authentication token: {_tail(result)}")
    private_token_file(path)


def private_token_file(path: Path) -> None:
    """Make the token file at ``path`` mode 600 if it is ours and others may read it: the token
    lets anyone who holds it run any command on the cluster."""
    try:
        info = path.stat()
        if info.st_uid == os.getuid() and info.st_mode & 0o077:
            path.chmod(0o600)
    except OSError:
        pass  # not there, or not ours to change: Ray reports a missing token itself


def _tail(result: subprocess.CompletedProcess[str], lines: int = 3) -> str:
    text = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    return " | ".join(text[-lines:]) or f"exit status {result.returncode}"


def _ray_start(args: list[str], env: dict[str, str]) -> None:
    result = subprocess.run([_ray_executable(), "start", "--disable-usage-stats", *args], env=env,
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise ClusterError(f"`ray start` failed: {_tail(result)}")


def start_cluster(*, num_cpus: int | None = None, workers: int = 0, port: int | None = None,
                  dashboard_port: int | None = None, ready_timeout_s: float = 60.0) -> LocalCluster:
    """Start a head node and ``workers`` worker nodes on this machine and record them.

    Parameters
    ----------
    num_cpus : CPUs each node offers (default: this machine's CPUs shared among the nodes)
    workers : extra worker nodes besides the head
    port, dashboard_port : the GCS and dashboard ports (default: free ones)

    Raises
    ------
    ClusterError
        If a local cluster is already running, or a node does not start (then nothing of
        the new cluster is left running).
    """
    current = load_state()
    if current is not None and cluster_pids(current.temp_dir, current.gcs_address):
        raise ClusterError(f"a local cluster is already running at {current.gcs_address} "
                           f"({current.jobs_address}); `ser-batch cluster stop` first")
    if current is not None:
        stop_cluster()  # stale record: clear its folder
    n_nodes = workers + 1
    cpus = num_cpus or max(1, (os.cpu_count() or 1) // n_nodes)
    env = _environment()
    _ensure_token(env)
    temp_dir = tempfile.mkdtemp(prefix="serb-", dir="/tmp")  # short: socket paths are limited to 107 bytes
    try:
        for attempt in range(_PORT_ATTEMPTS):
            # All ports from one call, so that no two components get the same one.
            head_port, dash_port, client_port, *node_ports = free_ports(3 + len(NODE_PORTS))
            head_port, dash_port = port or head_port, dashboard_port or dash_port
            ports = dict(zip(NODE_PORTS, node_ports))
            try:
                _ray_start(["--head", f"--port={head_port}", "--include-dashboard=true",
                            "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}",
                            f"--ray-client-server-port={client_port}", *_node_args(cpus, temp_dir, ports)], env)
                break
            except ClusterError as exc:
                # A port free a moment ago may have been taken by another process since.
                if "port" not in str(exc).lower() or attempt == _PORT_ATTEMPTS - 1:
                    raise
        gcs_address = (Path(temp_dir) / "ray_current_cluster").read_text().strip()
        nodes = [ports]
        for _ in range(workers):
            nodes.append(_start_worker(gcs_address, cpus, temp_dir, env))
        cluster = LocalCluster(gcs_address=gcs_address, jobs_address=f"http://127.0.0.1:{dash_port}",
                               temp_dir=temp_dir, num_cpus=cpus, nodes=nodes,
                               started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        _wait_for_jobs_api(cluster.jobs_address, timeout_s=ready_timeout_s)
    except (ClusterError, OSError, subprocess.TimeoutExpired) as exc:
        address_file = Path(temp_dir) / "ray_current_cluster"
        _terminate(cluster_pids(temp_dir, address_file.read_text().strip() if address_file.is_file() else ""))
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise exc if isinstance(exc, ClusterError) else ClusterError(f"cannot start a local cluster: {exc}") from None
    _save(cluster)
    return cluster


def _node_args(cpus: int, temp_dir: str, ports: dict[str, int]) -> list[str]:
    return [f"--num-cpus={cpus}", f"--temp-dir={temp_dir}", *(f"--{k}={v}" for k, v in ports.items())]


def _start_worker(gcs_address: str, cpus: int, temp_dir: str, env: dict[str, str]) -> dict[str, int]:
    for attempt in range(_PORT_ATTEMPTS):
        ports = dict(zip(NODE_PORTS, free_ports(len(NODE_PORTS))))
        try:
            _ray_start([f"--address={gcs_address}", *_node_args(cpus, temp_dir, ports)], env)
            return ports
        except ClusterError as exc:
            if "port" not in str(exc).lower() or attempt == _PORT_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


#: Tries of `ray start` when a port chosen free was taken in the meantime.
_PORT_ATTEMPTS = 3


def add_node(*, num_cpus: int | None = None) -> int:
    """Add a worker node to the running local cluster; returns its index (for :func:`stop_node`)."""
    cluster = load_state()
    if cluster is None or not cluster_pids(cluster.temp_dir, cluster.gcs_address):
        raise ClusterError("no local cluster is running (`ser-batch cluster start`)")
    cluster.nodes.append(_start_worker(cluster.gcs_address, num_cpus or cluster.num_cpus, cluster.temp_dir,
                                       _environment()))
    _save(cluster)
    return len(cluster.nodes) - 1


def _save(cluster: LocalCluster) -> None:
    folder = state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STATE_FILE).write_text(json.dumps(asdict(cluster), indent=2) + "\n", encoding="utf-8")


def _wait_for_jobs_api(url: str, *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=5):
                return
        except urllib.error.HTTPError:
            return  # it answers (an authentication refusal still means it is up)
        except OSError:
            if time.monotonic() > deadline:
                raise ClusterError(f"the dashboard / Jobs API at {url} did not come up within {timeout_s:.0f} s")
            time.sleep(0.5)


def stop_cluster() -> int:
    """Stop the recorded local cluster and forget it; returns how many processes were ended."""
    cluster = load_state()
    if cluster is None:
        return 0
    count = _terminate(cluster_pids(cluster.temp_dir, cluster.gcs_address))
    shutil.rmtree(cluster.temp_dir, ignore_errors=True)
    (state_dir() / STATE_FILE).unlink(missing_ok=True)
    return count


def node_lines(cluster: LocalCluster) -> list[str]:
    """One line per recorded node: its role, ports and whether its raylet runs."""
    table = _processes()
    lines = []
    for index, ports in enumerate(cluster.nodes):
        port = ports["node-manager-port"]
        up = any(f"--node_manager_port={port}" in cmd and "raylet" in cmd and state != "Z"
                 for _, cmd, state in table.values())
        role = "head node" if index == 0 else f"worker node {index}"
        lines.append(f"  {role:14s} raylet on port {port}: {'up' if up else 'DOWN'}")
    return lines


def stop_node(cluster: LocalCluster, index: int, *, sig: int = signal.SIGKILL) -> int:
    """End worker node ``index`` (1 = the first worker) at once, as a machine failure would:
    its raylet and every process under it (agents, workers). Returns how many were ended."""
    port = cluster.nodes[index]["node-manager-port"]
    pids = _with_children({pid for pid, (_, cmd, _) in _processes().items()
                           if f"--node_manager_port={port}" in cmd and "raylet" in cmd})
    for pid in pids:
        _signal(pid, sig)
    return len(pids)


# ------------------------------------------------------------------------- processes


def _processes() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, command line, state) of every process, from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmd = handle.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        table[int(entry)] = (int(fields[1]), cmd, fields[0])
    return table


def _with_children(roots: set[int]) -> set[int]:
    table = _processes()
    found = set(roots)
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _, _) in table.items():
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    return {pid for pid in found if pid in table and table[pid][2] != "Z"}


def cluster_pids(temp_dir: str, gcs_address: str = "") -> set[int]:
    """Live processes of the cluster using ``temp_dir``: those naming it or its GCS address
    (the Ray Client server names only the latter), and their children."""
    if not temp_dir or Path(temp_dir) in (Path("/"), Path("/tmp")):
        return set()  # a damaged record must not make every process "ours"
    me = os.getpid()
    marks = [temp_dir] + ([f"={gcs_address} "] if gcs_address else [])
    roots = {pid for pid, (_, cmd, state) in _processes().items()
             if pid != me and state != "Z" and any(mark in cmd + " " for mark in marks)}
    return _with_children(roots) - {me}


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _terminate(pids: set[int], *, grace_s: float = 3.0) -> int:
    """SIGTERM, then SIGKILL what is still running after ``grace_s`` (raylets and the GCS
    may take far longer to wind down on their own; a local cluster has nothing to save)."""
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        table = _processes()
        alive = {pid for pid in alive if pid in table and table[pid][2] != "Z"}
    for pid in alive:
        _signal(pid, signal.SIGKILL)
    return len(pids)


#: Seconds ``ray status`` is asked again while a cluster that just started has no report yet.
STATUS_WAIT_S = 20.0


def ray_status(cluster: LocalCluster) -> str:
    """``ray status`` of the cluster (nodes, resources, usage), with the token sent.

    Right after a start, Ray's autoscaler has no report for a few seconds ("No cluster
    status"): ask again until it has one, for up to :data:`STATUS_WAIT_S`."""
    deadline = time.monotonic() + STATUS_WAIT_S
    while True:
        result = subprocess.run([_ray_executable(), "status", f"--address={cluster.gcs_address}"],
                                env=_environment(), capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise ClusterError(f"`ray status` failed: {_tail(result)}")
        if "No cluster status" not in result.stdout or time.monotonic() > deadline:
            return result.stdout.rstrip()
        time.sleep(1.0)

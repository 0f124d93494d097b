"""``tether cluster status`` and ``tether cluster stop``.

``local`` profile: the embedded Ray cluster on this machine. ``status`` says whether one runs
at the profile's dashboard port (or where ``.tether/local-cluster.json`` says tether started
one), with its addresses, nodes/CPUs/GPUs, temp dir, and whether tether started it. ``stop``
stops only a cluster tether started (every process of it, see ``localcluster``), never one
someone else started (``ray stop`` would stop every Ray process on the machine).

``ssh`` profile: ``status`` is ``ray status`` on the head, over the profile's SSH channel;
``stop`` is refused: a cluster from ``ray up cluster.yaml`` ends with ``ray down cluster.yaml``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

from .errors import ClusterError

if TYPE_CHECKING:  # imported where used: the CLI builds its parser from this module
    from .config import LocalProfile
    from .head import Head


@dataclass(frozen=True)
class ClusterStatus:
    profile: str
    kind: str  # "local" or "ssh"
    running: bool
    started_by_tether: bool
    dashboard_url: str | None = None
    gcs_address: str | None = None
    temp_dir: str | None = None
    ray_version: str | None = None
    nodes: int | None = None
    cpus: float | None = None
    gpus: float | None = None
    ray_status: str | None = None  # ssh: what `ray status` printed on the head


@dataclass(frozen=True)
class _Found:
    dashboard_url: str
    gcs_address: str | None
    temp_dir: Path | None
    started_by_tether: bool
    ray_version: str | None  # None: its processes live but the dashboard does not answer


def _find_local(*, repo: Path, profile: LocalProfile) -> _Found | None:
    """The cluster tether recorded for this repository while its processes live, else
    whatever Ray dashboard answers at the profile's port. A stale record is removed."""
    from .localcluster import (
        LOOPBACK,
        cluster_processes,
        default_temp_dir,
        find_dashboard,
        forget_cluster,
        ray_version_at,
        read_record,
    )

    record = read_record(repo=repo)
    if record is not None:
        temp = Path(record.temp_dir)
        if cluster_processes(temp_dir=temp):
            version = ray_version_at(record.dashboard_url)
            return _Found(record.dashboard_url, record.gcs_address, temp, True, version)
        forget_cluster(repo=repo)
    url = f"http://{LOOPBACK}:{profile.dashboard_port}"
    version = ray_version_at(url)
    if version is None:
        return None
    temp, gcs = find_dashboard(port=profile.dashboard_port) or (None, None)
    # tether's own temp dir: started by tether from another repository or `tether demo`.
    ours = temp is not None and temp == default_temp_dir()
    return _Found(url, gcs, temp, ours, version)


def _resources(url: str) -> tuple[int | None, float | None, float | None]:
    """(alive nodes, CPUs, GPUs) from the dashboard's state API; Nones when it fails."""
    from ray.util.state import list_nodes

    saved = {
        k: os.environ.pop(k) for k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS") if k in os.environ
    }
    try:
        nodes = [n for n in list_nodes(address=url, timeout=10) if n.state == "ALIVE"]
    except Exception:  # the state API raises several kinds; the status says "unknown"
        return None, None, None
    finally:
        os.environ.update(saved)
    total = {k: sum(n.resources_total.get(k, 0.0) for n in nodes) for k in ("CPU", "GPU")}
    return len(nodes), total["CPU"], total["GPU"]


def local_status(*, repo: Path, profile_name: str, profile: LocalProfile) -> ClusterStatus:
    found = _find_local(repo=repo, profile=profile)
    if found is None:
        url = f"http://127.0.0.1:{profile.dashboard_port}"
        return ClusterStatus(
            profile=profile_name, kind="local", running=False, started_by_tether=False,
            dashboard_url=url,
        )  # fmt: skip
    nodes, cpus, gpus = _resources(found.dashboard_url) if found.ray_version else (None,) * 3
    return ClusterStatus(
        profile=profile_name,
        kind="local",
        running=True,
        started_by_tether=found.started_by_tether,
        dashboard_url=found.dashboard_url,
        gcs_address=found.gcs_address,
        temp_dir=str(found.temp_dir) if found.temp_dir else None,
        ray_version=found.ray_version,
        nodes=nodes,
        cpus=cpus,
        gpus=gpus,
    )


def stop_local(*, repo: Path, profile: LocalProfile, force: bool = False) -> str:
    """Stop the local cluster tether started; returns what happened, in words. Raises
    ClusterError for a cluster tether did not start, or one with runs still going."""
    from .localcluster import forget_cluster, read_record, stop_local_cluster

    found = _find_local(repo=repo, profile=profile)
    if found is None:
        return (
            f"no local Ray cluster is running (nothing answers at "
            f"http://127.0.0.1:{profile.dashboard_port})"
        )
    where = f" (temp dir {found.temp_dir})" if found.temp_dir else ""
    if not found.started_by_tether or found.temp_dir is None:
        raise ClusterError(
            f"the Ray cluster at {found.dashboard_url} was not started by tether{where}; "
            "tether stops only the cluster it started",
            hint="stop it the way it was started; `ray stop` stops every Ray process on "
            "this machine",
        )
    if not force and found.ray_version is not None:
        active = _active_runs(found.dashboard_url)
        if active:
            raise ClusterError(
                f"{len(active)} run(s) still going on the local cluster: {', '.join(active)}",
                hint="stop them with `tether stop RUN`, or run `tether cluster stop --force`",
            )
    count = stop_local_cluster(temp_dir=found.temp_dir)
    record = read_record(repo=repo)
    if record is not None and Path(record.temp_dir) == found.temp_dir:
        forget_cluster(repo=repo)
    return f"stopped the local Ray cluster tether started: {count} processes{where}"


def _active_runs(url: str) -> list[str]:
    from .jobs import JobsClient

    with contextlib.suppress(ClusterError):
        return [
            r.run_id for r in JobsClient(address=url, timeout_s=10).runs() if not r.is_terminal()
        ]
    return []


def ssh_status(*, head: Head, profile_name: str) -> ClusterStatus:
    """``ray status`` on the head (the Ray next to the profile's python)."""
    command = f"{shlex.quote(head.python)} -m ray.scripts.scripts status"
    res = head.remote.run(command, timeout=120, check=False)
    host = head.profile.host
    if not res.ok:
        out = (res.stdout + "\n" + res.stderr).strip()
        last = "\n".join("  " + ln for ln in out.splitlines()[-5:])
        if res.exit_code in (126, 127) or "No module named ray" in out:
            raise ClusterError(
                f"Ray is not found on the head {host}: `{command}` exited {res.exit_code}\n{last}",
                hint=f"install tether (with ray[default]) in the profile's python {head.python} "
                f"on the head, or set `python` in [profiles.{profile_name}]; "
                f"`tether doctor --profile {profile_name}` checks the head",
            )
        raise ClusterError(
            f"`ray status` on the head {host} exited {res.exit_code}\n{last}",
            hint="is the cluster up? `ray up cluster.yaml` starts it",
        )
    return ClusterStatus(
        profile=profile_name, kind="ssh", running=True, started_by_tether=False,
        ray_status=res.stdout,
    )  # fmt: skip


# --------------------------------------------------------------------------- the CLI


def add_cluster_parser(*, sub: argparse._SubParsersAction) -> None:
    """``tether cluster status|stop`` on the CLI's subparsers."""
    p = sub.add_parser("cluster", help="the profile's Ray cluster: status, or stop the local one")
    verbs = p.add_subparsers(dest="cluster_command", metavar="VERB", required=True)
    status = verbs.add_parser(
        "status", help="is the profile's Ray cluster running, and what has it"
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    stop = verbs.add_parser("stop", help="stop the local Ray cluster tether started")
    stop.add_argument(
        "--force", action="store_true", help="stop it even while runs are still going"
    )
    for v in (status, stop):
        v.add_argument("--profile", help="profile from tether.toml (default: default_profile)")
        v.add_argument(
            "--trust-new-host",
            action="store_true",
            help="accept and record the head's SSH host key if it is not in known_hosts yet",
        )


def cluster_command(*, args: argparse.Namespace, console: Console) -> int:
    """Run ``tether cluster VERB``. Exit status of ``status``: 0 running, 1 not running."""
    from .config import LocalProfile, SSHProfile, load_config
    from .repo import repo_root

    cwd = Path.cwd()
    config, _ = load_config(path=args.config, cwd=cwd)
    name, profile = config.profile(args.profile)
    if args.cluster_command == "stop":
        if isinstance(profile, SSHProfile):
            raise ClusterError(
                f"tether does not stop the cluster of the ssh profile {name!r}: it was started "
                "with `ray up`",
                hint="run `ray down cluster.yaml` on your laptop (it stops the head and the "
                "worker nodes)",
            )
        console.print(Text(stop_local(repo=repo_root(cwd), profile=profile, force=args.force)))
        return 0
    if isinstance(profile, LocalProfile):
        status = local_status(repo=repo_root(cwd), profile_name=name, profile=profile)
    else:
        from .runverbs import head_for

        with head_for(
            config=config, profile_name=name, cwd=cwd, trust_new_host=args.trust_new_host
        ) as head:
            status = ssh_status(head=head, profile_name=name)
    if args.json:
        console.file.write(json.dumps(asdict(status), indent=2) + "\n")
    else:
        _print_status(status, console)
    return 0 if status.running else 1


def _print_status(s: ClusterStatus, console: Console) -> None:
    if s.kind == "ssh":
        console.print(Text(f"profile {s.profile}: `ray status` on the head"))
        console.print(Text(s.ray_status or ""))
        return
    if not s.running:
        console.print(
            Text(f"profile {s.profile}: no local Ray cluster is running ({s.dashboard_url})")
        )
        return
    who = "started by tether" if s.started_by_tether else "not started by tether"
    console.print(Text(f"profile {s.profile}: local Ray cluster running, {who}"))

    def num(x: float | None) -> str:
        return "?" if x is None else f"{x:g}"

    rows = [
        ("dashboard", s.dashboard_url or "?"),
        ("address", s.gcs_address or "?"),
        ("nodes", f"{num(s.nodes)} (CPUs {num(s.cpus)}, GPUs {num(s.gpus)})"),
        ("temp dir", s.temp_dir or "?"),
        ("ray", s.ray_version or "dashboard not answering"),
    ]
    for key, value in rows:
        console.print(Text(f"  {key:<10} {value}"))
    if s.gcs_address and s.gcs_address.startswith("127.0.0.1:"):  # Ray's single-machine mode
        from .localcluster import LOOPBACK_ENV

        env = " ".join(f"{k}={v}" for k, v in LOOPBACK_ENV.items())
        console.print(
            Text(f"  a driver connects with {env} and ray.init(address={s.gcs_address!r})")
        )

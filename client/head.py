"""The head node of a profile: its command channel, its git repository, its Jobs API.

``open_head`` connects first (the SSH host key is checked here) so that a bad profile or an
unreachable head fails before anything changes anywhere. For the embedded ``local`` profile
the head is this machine: the laptop repository is the head repository (run worktrees go to
``<repo>/.tether/runs/``), and the local Ray cluster is started when none is running.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .config import LocalProfile, SSHProfile, TetherConfig
from .errors import ClusterError
from .headrepo import HeadRepo
from .jobs import JobsClient
from .localcluster import LOOPBACK_ENV
from .localstate import state_dir
from .remote import LocalRemote, Remote, SSHRemote

LOCAL_RUNS = ".tether/runs"


@dataclass
class Head:
    profile_name: str
    profile: LocalProfile | SSHProfile
    remote: Remote
    repo: HeadRepo
    python: str  # the head's Python that has tether installed
    runs_path: str  # absolute folder of the run worktrees on the head
    laptop_repo: Path

    @property
    def is_local(self) -> bool:
        return isinstance(self.profile, LocalProfile)

    def worktree(self, run_id: str) -> str:
        return f"{self.runs_path}/{run_id}"

    @contextlib.contextmanager
    def jobs(self, *, start_local: bool = False) -> Iterator[JobsClient]:
        """A Jobs API client: through an SSH tunnel to the dashboard port, or direct to the
        local cluster (started when ``start_local`` and none is running)."""
        port = self.profile.dashboard_port
        if self.is_local:
            url = f"http://127.0.0.1:{port}"
            if start_local:
                _ensure_local_cluster(self.profile, url, repo=self.laptop_repo)
            yield JobsClient(address=url)
            return
        token = self._ray_token()
        with self.remote.forward_port(remote_port=port) as local_port:
            yield JobsClient(address=f"http://127.0.0.1:{local_port}", token=token)

    def _ray_token(self) -> str | None:
        """The head's Ray auth token when the cluster uses token auth (read over SSH each
        time; never stored on the laptop)."""
        res = self.remote.run(
            'f="${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}"; [ -f "$f" ] && cat "$f" || true',
            timeout=30,
            check=False,
        )
        return res.stdout.strip() or None

    def write_file(self, *, path: str, data: bytes | str, private: bool = False) -> None:
        """Write ``data`` to ``path`` on the head through stdin (never on a command line);
        ``private``: mode 600 in a folder only the user can enter."""
        folder = path.rsplit("/", 1)[0]
        umask = "umask 077 && " if private else ""
        tmp = f"{path}.tmp-tether"
        command = (
            f"{umask}mkdir -p {shlex.quote(folder)} && cat > {shlex.quote(tmp)} && "
            f"mv -f {shlex.quote(tmp)} {shlex.quote(path)}"
        )
        self.remote.run(command, stdin=data, timeout=60)

    def close(self) -> None:
        self.remote.close()


def open_head(
    *,
    config: TetherConfig,
    profile_name: str | None,
    laptop_repo: Path,
    trust_new_host: bool = False,
) -> Head:
    """Connect to the profile's head. Raises ConfigError (unknown profile), HostKeyError,
    RemoteError (unreachable) before anything is changed."""
    name, profile = config.profile(profile_name)
    if isinstance(profile, LocalProfile):
        state_dir(laptop_repo)  # .tether/ (run worktrees, secrets) is git-ignored from the start
        # Commands on this "head" that connect to the loopback-only embedded cluster (the
        # event stream) must keep Ray on 127.0.0.1 too: see client/localcluster.py.
        remote: Remote = LocalRemote(env=LOOPBACK_ENV)
        repo = HeadRepo.for_remote(
            remote=remote, repo_path=str(laptop_repo), ssh_alias=None, ssh_config=None
        )
        return Head(
            profile_name=name,
            profile=profile,
            remote=remote,
            repo=repo,
            python=sys.executable,
            runs_path=str(laptop_repo / LOCAL_RUNS),
            laptop_repo=laptop_repo,
        )
    remote = SSHRemote(
        host=profile.host,
        ssh_config=profile.ssh_config,
        trust_new_host=trust_new_host,
        connect_timeout=profile.connect_timeout_s,
    )
    try:
        remote.open()
        repo = HeadRepo.for_remote(
            remote=remote,
            repo_path=profile.repo_path,
            ssh_alias=profile.host,
            ssh_config=profile.ssh_config,
        )
        return Head(
            profile_name=name,
            profile=profile,
            remote=remote,
            repo=repo,
            python=remote.expand(profile.python),
            runs_path=remote.expand(profile.runs_path),
            laptop_repo=laptop_repo,
        )
    except BaseException:
        remote.close()
        raise


def _ensure_local_cluster(profile: LocalProfile, url: str, *, repo: Path) -> None:
    """Start the embedded cluster unless a dashboard answers at ``url``; record the one it
    starts in ``.tether/local-cluster.json`` for ``tether cluster status|stop``."""
    from .localcluster import (
        default_temp_dir,
        ray_version_at,
        record_cluster,
        start_local_cluster,
    )

    if ray_version_at(url) is not None:
        return
    try:
        cluster = start_local_cluster(
            temp_dir=default_temp_dir(),
            dashboard_port=profile.dashboard_port,
            num_gpus=profile.num_gpus,
        )
    except ClusterError:
        raise
    except Exception as exc:  # ray start fails in many ways
        raise ClusterError(
            f"could not start the local Ray cluster at {url}: {exc}",
            hint="run `tether doctor`; `tether cluster status` shows what runs there",
        ) from None
    record_cluster(repo=repo, cluster=cluster)

"""A real OpenSSH sshd on 127.0.0.1 for tests and benchmarks: a temp host key, an
authorized client key, an ssh_config naming it, and a known_hosts that trusts it."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tether.client.localcluster import free_port


@dataclass(frozen=True)
class SSHD:
    host_alias: str  # Host in ssh_config
    port: int
    user: str
    ssh_config: Path  # HostName/Port/User/IdentityFile/UserKnownHostsFile for host_alias
    known_hosts: Path  # holds the server's host key
    client_key: Path
    host_public_key: str  # "ssh-ed25519 AAAA..."
    workdir: Path
    pid: int

    def ssh_command(self) -> str:
        """For GIT_SSH_COMMAND and friends."""
        return f"ssh -F {self.ssh_config}"


def find_sshd() -> str | None:
    forced = os.environ.get("TETHER_SSHD_BINARY")  # lets a test play "no sshd here"
    candidates = (
        (forced,) if forced else (shutil.which("sshd"), "/usr/sbin/sshd", "/usr/local/sbin/sshd")
    )
    for cand in candidates:
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def _wait_for_banner(port: int, proc: subprocess.Popen, *, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited {proc.returncode}: {proc.stderr.read().decode()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"sshd did not answer on 127.0.0.1:{port} within {timeout}s")


def start_sshd(workdir: Path, binary: str) -> tuple[SSHD, subprocess.Popen]:
    """Start sshd with its files under ``workdir``; the caller stops ``proc``."""
    host_key = workdir / "host_ed25519"
    client_key = workdir / "client_ed25519"
    for key in (host_key, client_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (workdir / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
    port = free_port()
    user = getpass.getuser()
    config = workdir / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"PidFile {workdir / 'sshd.pid'}",
                f"AuthorizedKeysFile {workdir / 'authorized_keys'}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "StrictModes no",
                "UsePAM no",
                "AllowTcpForwarding yes",
                "MaxStartups 100:30:200",
                "MaxSessions 50",
                "Subsystem sftp internal-sftp",
                "LogLevel VERBOSE",
                "",
            ]
        )
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
    proc = subprocess.Popen(
        [binary, "-D", "-e", "-f", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "sshd.log", "wb"),  # noqa: SIM115 - lives as long as sshd
    )
    try:
        _wait_for_banner(port, proc)
    except RuntimeError:
        proc.kill()
        raise
    host_public = " ".join(host_key.with_suffix(".pub").read_text().split()[:2])
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_public}\n")
    ssh_config = workdir / "ssh_config"
    alias = "tether-test-head"
    ssh_config.write_text(
        "\n".join(
            [
                f"Host {alias}",
                "  HostName 127.0.0.1",
                f"  Port {port}",
                f"  User {user}",
                f"  IdentityFile {client_key}",
                "  IdentitiesOnly yes",
                f"  UserKnownHostsFile {known_hosts}",
                "  StrictHostKeyChecking yes",
                "  BatchMode yes",
                "",
            ]
        )
    )
    sshd = SSHD(
        host_alias=alias,
        port=port,
        user=user,
        ssh_config=ssh_config,
        known_hosts=known_hosts,
        client_key=client_key,
        host_public_key=host_public,
        workdir=workdir,
        pid=proc.pid,
    )
    return sshd, proc


def stop_sshd(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()


def client_port(remote) -> int:
    """Our end of ``remote``'s SSH connection, as the head sees it."""
    return int(remote.run("echo $SSH_CLIENT").stdout.split()[1])


def kill_connection(sshd: SSHD, client_port: int) -> None:
    """SIGKILL the sshd processes holding the TCP connection from ``client_port``."""
    import psutil

    victims = []
    for proc in psutil.Process(sshd.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            conns = proc.net_connections(kind="tcp")
            if any(c.raddr and c.raddr.port == client_port for c in conns):
                victims.append(proc)
    assert victims, f"no sshd process serves 127.0.0.1:{client_port}"
    for proc in victims:
        proc.kill()

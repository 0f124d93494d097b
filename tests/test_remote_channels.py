"""The command channels beyond `run`: stdin, streaming, retries, port forwarding, home paths.

SSH tests use the real sshd fixture; each behaviour also runs on LocalRemote. No mocks: a
dropped connection is the real sshd process serving it, killed.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import pwd
import random
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sshdserver import client_port, kill_connection

from tether.client.errors import CommandFailed, ConnectionLost, HostKeyError, RemoteError
from tether.client.localcluster import free_port
from tether.client.remote import LocalRemote, SSHRemote


def _pids(pattern: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _eventually(cond: Callable[[], bool], *, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def _unique_sleep() -> str:
    """A sleep duration no other process on this machine has on its command line."""
    return f"30.{random.randrange(10**6):06d}"


def _sshd_connections(sshd) -> int:
    return (sshd.workdir / "sshd.log").read_text().count("Connection from")


def _config_with(sshd, tmp_path: Path, replace: dict[str, str]) -> Path:
    """A copy of the fixture's ssh_config with ``replace`` applied."""
    text = sshd.ssh_config.read_text()
    for old, new in replace.items():
        text = text.replace(old, new)
    cfg = tmp_path / "ssh_config"
    cfg.write_text(text)
    return cfg


# --------------------------------------------------------------------------- stdin


def test_stdin_reaches_the_command_and_writes_a_private_file(remote, tmp_path):
    token = f"sk-tether-{random.randrange(10**12)}"
    secret = token.encode() + b"\n\x00\xff\xfe caf\xc3\xa9 \xe2\x82\xac\r\n" + os.urandom(4096)
    path = tmp_path / "secret key"
    # `; exit $?` keeps the shell (and its command line) alive while ps looks.
    command = f"umask 077 && cat > {shlex.quote(str(path))} && ps -eo args; exit $?"
    assert token not in command
    res = remote.run(command, stdin=secret)
    assert path.read_bytes() == secret
    assert path.stat().st_mode & 0o777 == 0o600
    # While the command ran, no process on the machine had the secret on its command line.
    assert "umask 077" in res.stdout and token not in res.stdout
    assert remote.run("cat", stdin="héllo ✓\n").stdout == "héllo ✓\n"
    assert remote.run("cat; echo end", timeout=10).stdout == "end\n"  # no stdin: empty, no hang


def test_run_collects_megabytes_of_stdout_and_stderr_at_once(remote):
    mib3 = 3 * 1024 * 1024
    res = remote.run(
        f"head -c {mib3} /dev/zero | tr '\\0' e >&2 & head -c {mib3} /dev/zero | tr '\\0' o; wait",
        stdin=b"unread input " * 100_000,  # the command never reads it
        timeout=60,
    )
    assert res.stdout == "o" * mib3 and res.stderr == "e" * mib3


# --------------------------------------------------------------------------- stream_lines


def test_stream_lines_yields_each_line_as_it_is_printed(remote):
    start = time.monotonic()
    lines = remote.stream_lines("echo a; sleep 2; printf 'b\\nc'")
    assert next(lines) == "a"
    first_at = time.monotonic() - start
    assert list(lines) == ["b", "c"]
    last_at = time.monotonic() - start
    assert first_at < 1.5, f"first line took {first_at:.2f}s: not streamed"
    assert last_at - first_at > 1.0


def test_stream_lines_raises_command_failed_with_exit_code_and_stderr(remote):
    got = []
    with pytest.raises(CommandFailed) as err:
        for line in remote.stream_lines("echo partial; echo 'it broke' >&2; exit 3"):
            got.append(line)
    assert got == ["partial"]
    assert err.value.exit_code == 3
    assert "it broke" in str(err.value)


def test_stream_lines_keeps_flowing_under_heavy_stderr(remote):
    command = "for i in 1 2 3; do head -c 3000000 /dev/zero >&2; echo line$i; done"
    assert list(remote.stream_lines(command, timeout=60)) == ["line1", "line2", "line3"]


def test_a_silent_stream_times_out(remote):
    lines = remote.stream_lines(f"echo a; sleep {_unique_sleep()}", timeout=1)
    assert next(lines) == "a"
    with pytest.raises(RemoteError) as err:
        next(lines)
    assert "no output for 1s" in err.value.message


def test_closing_a_stream_early_stops_the_command(remote):
    duration = _unique_sleep()
    lines = remote.stream_lines(f"echo started; sleep {duration}; echo never")
    assert next(lines) == "started"
    assert _pids(f"sleep {duration}")
    lines.close()
    assert _eventually(lambda: not _pids(f"sleep {duration}")), "the command outlived its stream"
    assert remote.run("echo next").stdout == "next\n"


def test_a_dropped_connection_raises_connection_lost_then_run_reconnects(sshd, ssh_remote):
    port = client_port(ssh_remote)
    duration = _unique_sleep()
    lines = ssh_remote.stream_lines(f"echo ready; sleep {duration}")
    assert next(lines) == "ready"
    kill_connection(sshd, port)
    start = time.monotonic()
    with pytest.raises(ConnectionLost) as err:
        next(lines)
    assert time.monotonic() - start < 10
    assert sshd.host_alias in err.value.message and "sleep" in err.value.message
    assert ssh_remote.run("echo back", retries=2).stdout == "back\n"
    assert client_port(ssh_remote) != port
    # The head stopped the command whose connection went away.
    assert _eventually(lambda: not _pids(f"sleep {duration}"))


# --------------------------------------------------------------------------- retries


def test_run_retries_an_idempotent_command_after_a_drop(sshd, ssh_remote):
    for retries in (2, 0):
        killer = threading.Timer(0.5, kill_connection, (sshd, client_port(ssh_remote)))
        killer.start()
        try:
            if retries:
                res = ssh_remote.run("sleep 1.5; echo done", retries=retries)
                assert res.stdout == "done\n"
            else:
                with pytest.raises(ConnectionLost) as err:
                    ssh_remote.run("sleep 1.5; echo done")
                assert "lost while running 'sleep 1.5; echo done'" in err.value.message
        finally:
            killer.join()


def test_open_retries_until_the_head_answers(sshd, tmp_path):
    port = free_port()  # nothing listens yet: the first attempt is refused
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {sshd.host_public_key}\n")
    cfg = _config_with(
        sshd, tmp_path, {f"Port {sshd.port}": f"Port {port}", str(sshd.known_hosts): str(known)}
    )
    stop = threading.Event()

    def relay(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def head_comes_up() -> None:
        time.sleep(0.3)
        with socket.create_server(("127.0.0.1", port)) as srv:
            srv.settimeout(10)
            conn, _ = srv.accept()
            upstream = socket.create_connection(("127.0.0.1", sshd.port))
            threading.Thread(target=relay, args=(upstream, conn), daemon=True).start()
            relay(conn, upstream)
            stop.wait(5)
            conn.close()
            upstream.close()

    proxy = threading.Thread(target=head_comes_up, daemon=True)
    proxy.start()
    remote = SSHRemote(host=sshd.host_alias, ssh_config=cfg, connect_timeout=5)
    try:
        assert remote.run("echo up").stdout == "up\n"
    finally:
        remote.close()
        stop.set()
        proxy.join(timeout=10)


def test_an_unreachable_head_is_tried_three_times(sshd, tmp_path):
    port = free_port()
    cfg = _config_with(sshd, tmp_path, {f"Port {sshd.port}": f"Port {port}"})
    remote = SSHRemote(host=sshd.host_alias, ssh_config=cfg, connect_timeout=2)
    start = time.monotonic()
    with pytest.raises(ConnectionLost) as err:
        remote.run("true")
    assert time.monotonic() - start >= 1.4  # waited 0.5 s, then 1 s
    assert f"127.0.0.1:{port}) after 3 attempts" in err.value.message
    assert "ray up cluster.yaml" in (err.value.hint or "")


def test_host_key_and_auth_failures_are_not_retried(sshd, tmp_path, monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    other = tmp_path / "other_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong_key = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {wrong_key}\n")
    bad_host_key = _config_with(sshd, tmp_path, {str(sshd.known_hosts): str(known)})
    before = _sshd_connections(sshd)
    with pytest.raises(HostKeyError):
        SSHRemote(host=sshd.host_alias, ssh_config=bad_host_key).run("true", retries=2)
    assert _sshd_connections(sshd) - before == 1

    (tmp_path / "auth").mkdir()
    bad_key = _config_with(sshd, tmp_path / "auth", {str(sshd.client_key): str(other)})
    before = _sshd_connections(sshd)
    with pytest.raises(RemoteError) as err:
        SSHRemote(host=sshd.host_alias, ssh_config=bad_key).run("true", retries=2)
    assert not isinstance(err.value, ConnectionLost)
    assert "authentication failed" in err.value.message
    assert f"ssh {sshd.host_alias} true" in (err.value.hint or "")
    assert _sshd_connections(sshd) - before == 1


# --------------------------------------------------------------------------- forward_port


@pytest.fixture
def http_server() -> Iterator[int]:
    """A tiny HTTP server on 127.0.0.1: /big answers 1 MiB, any other path echoes itself."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"x" * (1 << 20) if self.path == "/big" else f"hello {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return resp.read()


def test_forward_port_reaches_a_port_on_the_head(ssh_remote, http_server):
    with ssh_remote.forward_port(remote_port=http_server) as local:
        assert local != http_server
        assert _get(local, "/dashboard") == b"hello /dashboard"
        assert _get(local, "/big") == b"x" * (1 << 20)
        assert _get(local, "/again") == b"hello /again"
    with pytest.raises(OSError):
        _get(local, "/closed")
    nothing_there = free_port()
    with ssh_remote.forward_port(remote_port=nothing_there) as local, pytest.raises(OSError):
        _get(local, "/")


def test_local_forward_port_is_the_port_itself(http_server):
    with LocalRemote().forward_port(remote_port=http_server) as local:
        assert local == http_server
        assert _get(local, "/jobs") == b"hello /jobs"


# --------------------------------------------------------------------------- agent, home, sftp


def test_agent_forwarding_stays_off_even_when_ssh_config_asks(sshd, tmp_path, monkeypatch):
    agent_dir = Path(tempfile.mkdtemp(prefix="tt-agent-", dir="/tmp"))  # short socket path
    sock = agent_dir / "agent.sock"
    agent = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        assert _eventually(sock.exists), "ssh-agent did not start"
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        cfg = tmp_path / "ssh_config"
        cfg.write_text(sshd.ssh_config.read_text() + "  ForwardAgent yes\n")
        # Control: OpenSSH itself forwards the agent with this config, and the sshd allows it.
        res = subprocess.run(
            ["ssh", "-F", str(cfg), sshd.host_alias, "echo ${SSH_AUTH_SOCK:-none}"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        assert res.returncode == 0 and res.stdout.strip() not in ("", "none"), res.stderr
        remote = SSHRemote(host=sshd.host_alias, ssh_config=cfg)
        try:
            assert remote.run("echo ${SSH_AUTH_SOCK:-none}").stdout == "none\n"
            assert list(remote.stream_lines("echo ${SSH_AUTH_SOCK:-none}")) == ["none"]
        finally:
            remote.close()
    finally:
        agent.terminate()
        agent.wait(timeout=5)
        shutil.rmtree(agent_dir, ignore_errors=True)


def test_home_and_expand(remote):
    home = remote.home()
    if isinstance(remote, SSHRemote):
        assert home == pwd.getpwuid(os.getuid()).pw_dir
    else:
        assert home == os.path.expanduser("~")
    assert remote.home() is home  # cached
    assert remote.expand("~") == home
    assert remote.expand("~/runs/a b") == f"{home.rstrip('/')}/runs/a b"
    assert remote.expand("/srv/repo") == "/srv/repo"
    assert remote.expand("~other/x") == "~other/x"
    assert remote.expand("runs/~/x") == "runs/~/x"
    assert remote.run(f"test -d {shlex.quote(remote.expand('~/'))}").ok


def test_both_remotes_reconnect_and_then_run_and_stream(remote):
    """``reconnect`` is part of the Remote protocol: a new connection over SSH, nothing to do
    locally; either way the next commands and binary streams run."""
    first = client_port(remote) if isinstance(remote, SSHRemote) else None
    remote.reconnect()
    assert remote.run("echo again").stdout == "again\n"
    if first is not None:
        assert client_port(remote) != first  # a new TCP connection
    with remote.open_binary("cat", stdin=b"\x00after\xff") as out:
        assert out.read() == b"\x00after\xff"


def test_sftp_is_the_connections_session_and_survives_reconnect(ssh_remote, tmp_path):
    sftp = ssh_remote.sftp()
    assert ssh_remote.sftp() is sftp
    with sftp.open(str(tmp_path / "a.txt"), "wb") as f:
        f.write(b"over sftp\n")
    assert (tmp_path / "a.txt").read_bytes() == b"over sftp\n"
    ssh_remote.reconnect()
    assert sorted(ssh_remote.sftp().listdir(str(tmp_path))) == ["a.txt"]

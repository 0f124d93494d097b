"""SSHRemote over the real sshd fixture: commands run, host keys are checked."""

from __future__ import annotations

import os
import subprocess

import pytest

from tether.client.errors import CommandFailed, HostKeyError, RemoteError
from tether.client.localcluster import free_port
from tether.client.remote import LocalRemote, SSHRemote


def test_runs_a_command_on_the_head_with_a_verified_host_key(sshd):
    remote = SSHRemote(host=sshd.host_alias, ssh_config=sshd.ssh_config)
    try:
        res = remote.run("echo hello-from-head; id -un; exit 0")
        assert res.ok
        assert res.stdout.split() == ["hello-from-head", sshd.user]
        assert remote.address == f"{sshd.user}@127.0.0.1:{sshd.port}"
    finally:
        remote.close()


def test_a_failing_command_reports_command_exit_code_and_last_lines(sshd):
    remote = SSHRemote(host=sshd.host_alias, ssh_config=sshd.ssh_config)
    try:
        with pytest.raises(CommandFailed) as err:
            remote.run("echo first; echo second >&2; exit 7")
        assert err.value.exit_code == 7
        assert "exit 7" in str(err.value)
        assert "second" in str(err.value)
        assert remote.run("exit 3", check=False).exit_code == 3
    finally:
        remote.close()


def _config_with_known_hosts(sshd, tmp_path, known_hosts_text: str):
    known = tmp_path / "known_hosts"
    known.write_text(known_hosts_text)
    cfg = tmp_path / "ssh_config"
    cfg.write_text(sshd.ssh_config.read_text().replace(str(sshd.known_hosts), str(known)))
    return cfg, known


def test_unknown_host_key_is_refused_with_what_to_do(sshd, tmp_path):
    cfg, known = _config_with_known_hosts(sshd, tmp_path, "")
    remote = SSHRemote(host=sshd.host_alias, ssh_config=cfg)
    with pytest.raises(HostKeyError) as err:
        remote.run("echo should-not-run")
    assert "not in known_hosts" in err.value.message
    assert "--trust-new-host" in (err.value.hint or "")
    assert known.read_text() == ""


def test_trust_new_host_records_the_key_and_then_plain_connections_work(sshd, tmp_path):
    cfg, known = _config_with_known_hosts(sshd, tmp_path, "")
    remote = SSHRemote(host=sshd.host_alias, ssh_config=cfg, trust_new_host=True)
    assert remote.run("echo ok").stdout.strip() == "ok"
    remote.close()
    recorded = known.read_text()
    assert f"[127.0.0.1]:{sshd.port}" in recorded
    assert sshd.host_public_key.split()[1] in recorded
    # OpenSSH itself now trusts it too: the file is in the standard format.
    res = subprocess.run(
        ["ssh", "-F", str(cfg), sshd.host_alias, "echo", "openssh-ok"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert res.stdout.strip() == "openssh-ok", res.stderr
    again = SSHRemote(host=sshd.host_alias, ssh_config=cfg)
    assert again.run("echo ok").ok
    again.close()


def test_a_changed_host_key_is_refused_even_with_trust_new_host(sshd, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    cfg, known = _config_with_known_hosts(sshd, tmp_path, f"[127.0.0.1]:{sshd.port} {wrong}\n")
    for trust in (False, True):
        remote = SSHRemote(host=sshd.host_alias, ssh_config=cfg, trust_new_host=trust)
        with pytest.raises(HostKeyError) as err:
            remote.run("true")
        assert "does NOT match" in err.value.message
    assert wrong in known.read_text()


def test_unreachable_head_says_how_to_fix_it(sshd, tmp_path):
    port = free_port()  # nothing listens there
    cfg = tmp_path / "ssh_config"
    cfg.write_text(sshd.ssh_config.read_text().replace(f"Port {sshd.port}", f"Port {port}"))
    remote = SSHRemote(host=sshd.host_alias, ssh_config=cfg, connect_timeout=5)
    with pytest.raises(RemoteError) as err:
        remote.run("true")
    assert f"127.0.0.1:{port}" in err.value.message
    assert "ray up cluster.yaml" in (err.value.hint or "")


def test_local_remote_runs_commands_here(tmp_path):
    remote = LocalRemote()
    res = remote.run(f"cd {tmp_path} && pwd && echo $$")
    lines = res.stdout.split()
    assert lines[0] == str(tmp_path)
    assert int(lines[1]) != os.getpid()
    with pytest.raises(CommandFailed) as err:
        remote.run("echo boom >&2; exit 4")
    assert err.value.exit_code == 4 and "boom" in str(err.value)
    with pytest.raises(RemoteError) as err:
        remote.run("sleep 20", timeout=1)
    assert "timed out after 1s" in err.value.message


def test_ssh_command_timeout_is_an_error_that_names_the_command(sshd):
    remote = SSHRemote(host=sshd.host_alias, ssh_config=sshd.ssh_config)
    try:
        with pytest.raises(RemoteError) as err:
            remote.run("sleep 20", timeout=1)
        assert "timed out after 1s: sleep 20" in err.value.message
        assert remote.run("echo still-usable").stdout.strip() == "still-usable"
    finally:
        remote.close()

"""`tether doctor` against real parts: the local Ray cluster, the sshd head, git."""

from __future__ import annotations

import sys

import pytest

from tether.client.cli import main
from tether.client.localcluster import free_port


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")


def _doctor(capsys, *args: str) -> tuple[int, str]:
    code = main(["doctor", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def _row(output: str, name: str) -> str:
    for line in output.splitlines():
        if line.strip("│ ").startswith(name + " "):
            return line
    raise AssertionError(f"no row {name!r} in:\n{output}")


def test_healthy_local_setup_passes_and_compares_ray_with_the_running_cluster(
    git_repo, ray_cluster, monkeypatch, capsys
):
    port = ray_cluster.dashboard_url.rsplit(":", 1)[1]
    (git_repo.path / "tether.toml").write_text(
        f'default_profile = "local"\n\n[profiles.local]\nkind = "local"\ndashboard_port = {port}\n'
    )
    monkeypatch.chdir(git_repo.path)
    code, out = _doctor(capsys)
    assert code == 0, out
    assert "same as local" in _row(out, "cluster (local)")
    assert "pass" in _row(out, "git repository")
    assert "all checks passed" in out


def test_api_key_is_reported_but_never_printed(git_repo, monkeypatch, capsys):
    secret = "sk-ant-test-" + "x7" * 20
    monkeypatch.setenv("ANTHROPIC_API_KEY", secret)
    monkeypatch.chdir(git_repo.path)
    code, out = _doctor(capsys)
    assert "set (value not shown)" in _row(out, "ANTHROPIC_API_KEY")
    assert secret not in out and secret[:16] not in out
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    code, out = _doctor(capsys)
    assert "warn" in _row(out, "ANTHROPIC_API_KEY")
    assert code == 0, out  # a missing LLM key is a warning, not a failure


def _ssh_profile(repo, sshd, *, ssh_config=None) -> None:
    (repo / "tether.toml").write_text(
        'default_profile = "gpu"\n\n'
        "[profiles.gpu]\n"
        'kind = "ssh"\n'
        f'host = "{sshd.host_alias}"\n'
        f'python = "{sys.executable}"\n'
        f'ssh_config = "{ssh_config or sshd.ssh_config}"\n'
        "connect_timeout_s = 5\n"
    )


def test_reachable_ssh_head_passes_with_versions_compared(git_repo, sshd, monkeypatch, capsys):
    _ssh_profile(git_repo.path, sshd)
    monkeypatch.chdir(git_repo.path)
    code, out = _doctor(capsys)
    assert code == 0, out
    assert "host key verified" in _row(out, "ssh head")
    assert "same as local" in _row(out, "cluster ray")


def test_unreachable_ssh_head_fails_with_an_actionable_line(
    git_repo, sshd, tmp_path, monkeypatch, capsys
):
    cfg = tmp_path / "ssh_config"
    cfg.write_text(sshd.ssh_config.read_text().replace(f"Port {sshd.port}", f"Port {free_port()}"))
    _ssh_profile(git_repo.path, sshd, ssh_config=cfg)
    monkeypatch.chdir(git_repo.path)
    code, out = _doctor(capsys)
    assert code == 1
    fail_lines = [ln for ln in out.splitlines() if ln.startswith("FAIL")]
    assert len(fail_lines) == 1 and "cannot reach" in fail_lines[0], out
    assert "-> is the head node up? `ray up cluster.yaml` starts it" in out


def test_unknown_host_key_fails_until_trusted(git_repo, sshd, tmp_path, monkeypatch, capsys):
    known = tmp_path / "known_hosts"
    known.write_text("")
    cfg = tmp_path / "ssh_config"
    cfg.write_text(sshd.ssh_config.read_text().replace(str(sshd.known_hosts), str(known)))
    _ssh_profile(git_repo.path, sshd, ssh_config=cfg)
    monkeypatch.chdir(git_repo.path)
    code, out = _doctor(capsys)
    assert code == 1
    assert "not in known_hosts" in out and "--trust-new-host" in out
    code, out = _doctor(capsys, "--trust-new-host")
    assert code == 0, out
    assert sshd.host_public_key.split()[1] in known.read_text()


def test_outside_a_git_repository_fails(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    code, out = _doctor(capsys)
    assert code == 1
    assert "not inside a git repository" in _row(out, "git repository")

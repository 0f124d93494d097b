"""``tether doctor``: is this machine (and the configured head) ready to run tether?

Each check returns a ``Check`` with a status and, for anything not passing, what to do.
Failures make the command exit non-zero; warnings do not (e.g. no LLM key: commentary is
optional).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import ray

from .config import LocalProfile, SSHProfile, TetherConfig, load_config
from .errors import TetherError
from .localcluster import ray_version_at
from .localstate import tracked_state
from .remote import SSHRemote

MIN_PYTHON = (3, 10)
MIN_GIT = (2, 20)


class Status(str, Enum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


def check_python() -> Check:
    v = sys.version_info
    found = f"{v.major}.{v.minor}.{v.micro}"
    if (v.major, v.minor) >= MIN_PYTHON:
        return Check("python", Status.PASS, found)
    need = ".".join(map(str, MIN_PYTHON))
    return Check("python", Status.FAIL, found, f"install Python >= {need} and rerun `make demo`")


def check_ray_local() -> Check:
    return Check("ray (local)", Status.PASS, ray.__version__)


def check_git(*, cwd: Path) -> list[Check]:
    git = shutil.which("git")
    if git is None:
        return [Check("git", Status.FAIL, "not found", "install git (apt-get install git)")]
    out = subprocess.run([git, "--version"], capture_output=True, text=True).stdout.strip()
    numbers = out.split()[-1].split(".")
    try:
        found = (int(numbers[0]), int(numbers[1]))
    except (IndexError, ValueError):
        found = (0, 0)
    checks = []
    if found >= MIN_GIT:
        checks.append(Check("git", Status.PASS, out))
    else:
        need = ".".join(map(str, MIN_GIT))
        checks.append(Check("git", Status.FAIL, out, f"upgrade git to >= {need} (worktrees)"))
    top = subprocess.run(
        [git, "rev-parse", "--show-toplevel"], capture_output=True, text=True, cwd=cwd
    )
    if top.returncode == 0:
        checks.append(Check("git repository", Status.PASS, top.stdout.strip()))
    else:
        checks.append(
            Check(
                "git repository",
                Status.FAIL,
                f"{cwd} is not inside a git repository",
                "run tether from your project's repository (or `git init` there)",
            )
        )
    return checks


def check_tracked_state(*, cwd: Path, results_dir: str) -> Check:
    """tether's own folders (``.tether/``, ``results/<run-id>/``) must not be tracked: a
    committed run worktree is an embedded repository, committed results bloat every clone."""
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                         cwd=cwd)  # fmt: skip
    if top.returncode != 0:
        return Check("tether state untracked", Status.WARN, "not in a git repository")
    root = Path(top.stdout.strip())
    tracked = tracked_state(repo=root, results_dir=results_dir)
    if not tracked:
        return Check(
            "tether state untracked", Status.PASS, f".tether/ and {results_dir}/<run-id>/ ignored"
        )
    folders = sorted({"/".join(p.split("/")[:2]) for p in tracked})
    shown = ", ".join(folders[:3]) + (f" and {len(folders) - 3} more" if len(folders) > 3 else "")
    quoted = " ".join(shlex.quote(f) for f in folders)
    return Check(
        "tether state untracked",
        Status.FAIL,
        f"git tracks {len(tracked)} files of tether's local state: {shown}",
        f"untrack them (the files stay on disk): git rm -r -q --cached -- {quoted} && "
        "git commit -m 'untrack tether state'",
    )


def check_local_cluster(profile: LocalProfile) -> Check:
    url = f"http://127.0.0.1:{profile.dashboard_port}"
    remote_version = ray_version_at(url)
    if remote_version is None:
        return Check(
            "cluster (local)",
            Status.PASS,
            f"none running at {url}; `tether demo` / `tether submit` start one on demand",
        )
    return _compare_ray("cluster (local)", remote_version, where=url)


def _compare_ray(name: str, remote_version: str, *, where: str) -> Check:
    if remote_version == ray.__version__:
        return Check(name, Status.PASS, f"ray {remote_version} at {where} (same as local)")
    return Check(
        name,
        Status.FAIL,
        f"ray {remote_version} at {where}, ray {ray.__version__} here",
        f"install the same Ray on both: pip install 'ray[default]=={remote_version}' here, "
        "or update the cluster's setup_commands and `ray up cluster.yaml` again",
    )


_REMOTE_PROBE = (
    "import sys; v = sys.version_info; print(f'{v.major}.{v.minor}.{v.micro}');\n"
    "try:\n    import ray; print(ray.__version__)\nexcept ImportError:\n    print('none')"
)


def check_ssh_head(name: str, profile: SSHProfile, *, trust_new_host: bool = False) -> list[Check]:
    remote = SSHRemote(
        host=profile.host,
        ssh_config=profile.ssh_config,
        trust_new_host=trust_new_host,
        connect_timeout=profile.connect_timeout_s,
    )
    label = f"ssh head ({name}: {profile.host})"
    try:
        remote.open()
    except TetherError as exc:
        return [Check(label, Status.FAIL, exc.message, exc.hint or "")]
    checks = [Check(label, Status.PASS, f"connected to {remote.address}, host key verified")]
    try:
        python = profile.python
        if python.startswith("~/"):
            python = "$HOME/" + shlex.quote(python[2:])
        else:
            python = shlex.quote(python)
        res = remote.run(f"{python} -c {shlex.quote(_REMOTE_PROBE)}", timeout=60, check=False)
    except TetherError as exc:
        return [*checks, Check("head python", Status.FAIL, exc.message, exc.hint or "")]
    finally:
        remote.close()
    lines = res.stdout.split()
    if res.exit_code != 0 or len(lines) < 2:
        last = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
        return [
            *checks,
            Check(
                "head python",
                Status.FAIL,
                f"`{profile.python}` on {profile.host} exited {res.exit_code}: {last[0]}",
                f"set [profiles.{name}] python to the head's venv python (see cluster.yaml)",
            ),
        ]
    head_py, head_ray = lines[0], lines[1]
    here_py = "{}.{}".format(*sys.version_info[:2])
    if head_py.rsplit(".", 1)[0] == here_py:
        checks.append(Check("head python", Status.PASS, f"{head_py} (same minor as local)"))
    else:
        checks.append(
            Check(
                "head python",
                Status.WARN,
                f"{head_py} on the head, {sys.version.split()[0]} here",
                "use the same Python minor version on both to avoid pickling surprises",
            )
        )
    if head_ray == "none":
        checks.append(
            Check(
                "cluster ray",
                Status.FAIL,
                f"ray is not installed for {profile.python} on {profile.host}",
                "run `ray up cluster.yaml` (its setup_commands install ray and tether)",
            )
        )
    else:
        checks.append(_compare_ray("cluster ray", head_ray, where=profile.host))
    return checks


def check_binary(name: str, *, purpose: str, fix: str, candidates: tuple[str, ...] = ()) -> Check:
    found = shutil.which(name) or next((c for c in candidates if os.access(c, os.X_OK)), None)
    if found:
        return Check(name, Status.PASS, found)
    return Check(name, Status.WARN, f"not found ({purpose})", fix)


def check_llm_key() -> Check:
    if os.environ.get("ANTHROPIC_API_KEY"):
        return Check("ANTHROPIC_API_KEY", Status.PASS, "set (value not shown)")
    return Check(
        "ANTHROPIC_API_KEY",
        Status.WARN,
        "not set: LLM commentary is off; everything else works",
        "export ANTHROPIC_API_KEY=... in your shell (never put it in tether.toml)",
    )


def run_checks(
    *,
    cwd: Path,
    config_path: Path | None = None,
    profile: str | None = None,
    trust_new_host: bool = False,
) -> list[Check]:
    checks = [check_python(), check_ray_local(), *check_git(cwd=cwd)]
    try:
        config, found = load_config(path=config_path, cwd=cwd)
        checks.append(
            Check("config", Status.PASS, str(found) if found else "no tether.toml: defaults")
        )
    except TetherError as exc:
        checks.append(Check("config", Status.FAIL, exc.message, exc.hint or "fix tether.toml"))
        config = None
    if config is not None:
        checks.append(check_tracked_state(cwd=cwd, results_dir=config.results_dir))
        checks.extend(_profile_checks(config, profile, trust_new_host=trust_new_host))
    checks.append(
        check_binary(
            "ssh",
            purpose="OpenSSH client, for `ssh <head>` by hand",
            fix="install openssh-client",
        )
    )
    checks.append(
        check_binary(
            "sshd",
            purpose="OpenSSH server, needed only by the test suite",
            fix="apt-get install openssh-server (make test does this when root)",
            candidates=("/usr/sbin/sshd", "/usr/local/sbin/sshd"),
        )
    )
    checks.append(check_llm_key())
    return checks


def _profile_checks(
    config: TetherConfig, profile: str | None, *, trust_new_host: bool
) -> list[Check]:
    try:
        name, prof = config.profile(profile)
    except TetherError as exc:
        return [Check("profile", Status.FAIL, exc.message, exc.hint or "")]
    checks = [Check("profile", Status.PASS, f"{name} ({prof.kind})")]
    if isinstance(prof, LocalProfile):
        checks.append(check_local_cluster(prof))
    else:
        checks.extend(check_ssh_head(name, prof, trust_new_host=trust_new_host))
    return checks


def exit_code(checks: list[Check]) -> int:
    return 1 if any(c.status is Status.FAIL for c in checks) else 0

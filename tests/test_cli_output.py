"""What tether prints reaches the terminal literally: rich never eats ``[...]`` as markup or
``:name:`` as an emoji code, and the run tables keep ids, branches and commits whole at any
terminal width."""

from __future__ import annotations

import io
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import git, write_local_profile
from rich.console import Console

from tether.client.branches import BranchInfo
from tether.client.jobs import JobRecord, JobsClient
from tether.client.output import make_console, styled, write_raw
from tether.client.runviews import print_branches, print_runs

TETHER = str(Path(sys.executable).with_name("tether"))


def _tether(*args: str, cwd: Path, columns: int = 200) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TETHER, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": str(columns)},
        timeout=180,
        stdin=subprocess.DEVNULL,
    )


def _repo(path: Path) -> Path:
    """A real git repository at ``path`` (any name, brackets included) with a tether.toml."""
    path.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=path)
    (path / "tether.toml").write_text('[profiles.other]\nkind = "local"\n')
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "initial commit", cwd=path)
    return path


@pytest.fixture
def repo(git_repo) -> Path:
    (git_repo.path / "tether.toml").write_text('[profiles.other]\nkind = "local"\n')
    return git_repo.path


# --------------------------------------------------------------------------- the CLI


def test_unknown_profile_hint_keeps_the_bracketed_table_name(repo):
    res = _tether("runs", "--profile", "gpu", cwd=repo)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert "error: no profile named 'gpu'" in res.stderr
    assert "hint: use one of: local, other, or add [profiles.gpu]" in res.stderr


def test_spec_path_and_branch_names_with_brackets_print_literally(repo):
    specs = repo / "specs[bold]"
    specs.mkdir()
    (specs / "b.toml").write_text('name = "exp"\nbranch = "x[red]y"\n[[stages]]\nname = "test"\n')
    (specs / "ok.toml").write_text('name = "exp"\n[[stages]]\nname = "test"\n')

    res = _tether("submit", "specs[bold]/b.toml", cwd=repo)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "specs[bold]/b.toml:2: branch:" in res.stderr
    assert "'x[red]y'" in res.stderr

    res = _tether("submit", "specs[bold]/ok.toml", "--branch", "tether/[bold]x", cwd=repo)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "'tether/[bold]x' is not a safe branch name" in res.stderr

    res = _tether("submit", "specs[bold]/missing[1].toml", cwd=repo)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "specs[bold]/missing[1].toml" in res.stderr


def test_doctor_details_and_fixes_print_literally(tmp_path):
    # A folder name with a rich tag and an emoji code in it: both must print as they are.
    repo = _repo(tmp_path / "lab[bold]:100:repo")
    res = _tether("doctor", "--profile", "gpu", cwd=repo, columns=400)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    assert str(repo) in res.stdout  # the "git repository" detail
    assert str(repo / "tether.toml") in res.stdout  # the "config" detail
    assert "💯" not in res.stdout
    assert "FAIL profile: no profile named 'gpu'" in res.stdout
    assert "-> use one of: local, other, or add [profiles.gpu]" in res.stdout


# --------------------------------------------------------------------------- log lines

LOG = "[epoch 3] loss=0.1\n[bold]not bold[/bold] ratio :100: [link=x]y[/link]\n"


def test_log_text_is_written_byte_for_byte():
    """``tether logs`` hands the job's log text to ``write_raw``: no rich rendering at all."""
    for console in (Console(file=io.StringIO()), make_console(file=io.StringIO())):
        write_raw(LOG, console=console)
        write_raw("partial line without newline", console=console)
        assert console.file.getvalue() == LOG + "partial line without newline"


def test_the_cli_console_prints_strings_and_styled_text_literally():
    console = make_console(file=io.StringIO(), width=200)
    for line in LOG.splitlines():
        console.print(line)  # the demo's and analyze's echo lines
    console.print(styled(("error:", "bold red"), " ", "or add [profiles.gpu]"))
    assert console.file.getvalue() == LOG + "error: or add [profiles.gpu]\n"


# --------------------------------------------------------------------------- run tables


def _records() -> list[JobRecord]:
    start = datetime(2026, 11, 22, 10, 15, tzinfo=timezone.utc).timestamp()
    runs = []
    for i, (spec, status, branch) in enumerate(
        [
            ("extractors", "SUCCEEDED", None),
            ("lr-sweep", "RUNNING", "feature/magvit-vs-i3d-on-tracks"),
            ("exp", "FAILED", None),
        ]
    ):
        run_id = f"{spec}-20261122-10150{i}-ab1{i}"
        runs.append(
            JobRecord(
                run_id=run_id,
                submission_id=f"tether-{run_id}",
                status=status,
                entrypoint="python -m tether.cluster.entrypoint",
                metadata={
                    "tether_run": run_id,
                    "spec": spec,
                    "branch": branch or f"tether/{spec}/{run_id}",
                    "commit": f"{i}f3a9c2e7b1d4" + "0" * 28,
                    "dirty": "true" if i == 1 else "false",
                },
                start_time=start + 60 * i,
                end_time=None if status == "RUNNING" else start + 3600,
            )
        )
    return runs


def _whole(value: str, lines: list[str]) -> bool:
    """``value`` appears on one line as a cell of its own (not inside a longer word, e.g. a
    run id inside its branch name)."""
    cell = re.compile(r"(?:^|[\s│┃])" + re.escape(value) + r"(?:$|[\s│┃])")
    return any(cell.search(line) for line in lines)


@pytest.mark.parametrize("width", [60, 80, 100, 160])
def test_runs_table_keeps_ids_branches_and_commits_whole(width):
    runs = _records()
    console = Console(width=width, file=io.StringIO())
    print_runs(console=console, runs=runs, title="runs on local (local)")
    lines = console.file.getvalue().splitlines()
    assert lines and max(len(line) for line in lines) <= width, "\n".join(lines)
    for r in runs:
        for value in (r.run_id, r.metadata["branch"], r.metadata["commit"][:10], r.status):
            assert _whole(value, lines), f"{value!r} broken at width {width}:\n" + "\n".join(lines)
    text = "\n".join(lines)
    if width >= 160:  # room for the table, with its start times
        assert "┃ run" in text and "2026-11-22" in text
    if width <= 80:  # no room for a table: a block of lines per run, times included
        assert "┃" not in text and "started " in text


@pytest.mark.parametrize("width", [60, 80, 160])
def test_branches_table_keeps_branches_and_commits_whole(width):
    date = datetime(2026, 11, 22, 11, 2, tzinfo=timezone.utc)
    branches = [
        BranchInfo(
            name=r.metadata["branch"],
            commit=r.metadata["commit"],
            subject="train: extractor=magvit 20 epochs, val_acc=0.912",
            date=date,
        )
        for r in _records()
    ]
    console = Console(width=width, file=io.StringIO())
    print_branches(console=console, branches=branches, title="run branches on local")
    lines = console.file.getvalue().splitlines()
    assert max(len(line) for line in lines) <= width, "\n".join(lines)
    for b in branches:
        assert _whole(b.name, lines) and _whole(b.commit[:10], lines), "\n".join(lines)


def test_runs_table_prints_bracketed_text_literally():
    run = _records()[0]
    run.metadata["spec"] = "sweep[bold]"
    for console in (Console(width=200, file=io.StringIO()), make_console(file=io.StringIO())):
        print_runs(console=console, runs=[run], title="runs on [red]head[/red] (ssh)")
        text = console.file.getvalue()
        assert "sweep[bold]" in text and "runs on [red]head[/red] (ssh)" in text


# --------------------------------------------------------------------------- real cluster


@pytest.mark.slow
def test_tether_logs_and_runs_on_a_real_cluster_at_80_columns(git_repo, ray_cluster):
    """A real Ray job whose log has brackets and emoji codes: ``tether logs`` prints it
    exactly; ``tether runs`` in 80 columns keeps the run's id, branch and commit whole."""
    repo = git_repo.path
    write_local_profile(repo, ray_cluster)
    run_id = f"brackets-{uuid.uuid4().hex[:8]}"
    branch = f"tether/brackets/{run_id}"
    code = "print('[epoch 3] loss=0.1'); print('[bold]x[/bold] :100:')"
    jobs = JobsClient(address=ray_cluster.dashboard_url)
    jobs.submit(
        entrypoint=f"{shlex.quote(sys.executable)} -u -c {shlex.quote(code)}",
        run_id=run_id,
        metadata={"spec": "brackets", "branch": branch, "commit": git_repo.head},
    )
    deadline = time.monotonic() + 120
    while not jobs.status(run_id=run_id).is_terminal():
        assert time.monotonic() < deadline, jobs.logs(run_id=run_id)
        time.sleep(0.3)

    res = _tether("logs", run_id, cwd=repo)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert "[epoch 3] loss=0.1\n[bold]x[/bold] :100:\n" in res.stdout

    res = _tether("runs", cwd=repo, columns=80)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    lines = res.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, res.stdout
    for value in (run_id, branch, git_repo.head[:10], "SUCCEEDED"):
        assert _whole(value, lines), f"{value!r} broken:\n{res.stdout}"

"""What ``tether watch``'s actions do, apart from the app: blocking functions its thread
workers call (pull, stop, fetch, re-run, open a report), and what they return.

Each either returns a short line for a notification or raises; the app turns any exception
into a notification through :func:`explain` (message and hint of a ``TetherError``, or a
library error mapped to one), never a traceback.
"""

from __future__ import annotations

import json
import time
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TetherError, from_library_error
from .model import RunModel

REPORT_NAMES = ("report.html", "comparison.html")
_OWN_FILES = (".gitignore", ".tether-sync")  # tether's bookkeeping in a run folder
STOP_WAIT_S = 60.0


def explain(exc: BaseException, *, what: str) -> str:
    """One notification text for ``exc``: what failed, why, and what to do."""
    error = exc if isinstance(exc, TetherError) else from_library_error(exc)
    if error is None:
        return f"{what}: {type(exc).__name__}: {exc} (TETHER_DEBUG=1 tether ... shows where)"
    text = f"{what}: {error.message}" if error.message else what
    return text + (f"\nwhat to do: {error.hint}" if error.hint else "")


@dataclass(frozen=True)
class LocalResults:
    """A run folder on the laptop as the last pull (or a scan) left it."""

    files: int = 0
    bytes: int = 0
    reports: list[str] = field(default_factory=list)  # relative paths, newest first
    refused: list[str] = field(default_factory=list)  # "path (why)" from the last pull
    last_pull: float | None = None


def scan_results(dest: Path) -> LocalResults:
    """Count the files in ``dest`` (tether's own bookkeeping left out) and find its reports."""
    files = size = 0
    reports: list[tuple[float, str]] = []
    if Path(dest).is_dir():
        for p in Path(dest).rglob("*"):
            if p.name.startswith(_OWN_FILES) or not p.is_file():
                continue
            try:
                st = p.stat()
            except OSError:
                continue
            files += 1
            size += st.st_size
            if p.name in REPORT_NAMES:
                reports.append((st.st_mtime, p.relative_to(dest).as_posix()))
    newest = [name for _, name in sorted(reports, reverse=True)]
    return LocalResults(files=files, bytes=size, reports=newest)


def pull_run(*, head, config, run_id: str) -> tuple[LocalResults, str]:
    """One pull of the run's results into ``results/<run-id>/``; what is there now, and the
    summary line of the pull."""
    from ..pullcmd import plan_pull, pull_once, summary_line

    plan = plan_pull(head=head, config=config, run_id=run_id)
    result = pull_once(head=head, plan=plan, config=config)
    local = scan_results(plan.dest)
    refused = [f"{path} ({why})" for path, why in result.refused]
    rel = f"{config.results_dir.strip('/') or 'results'}/{run_id}/"
    local = LocalResults(
        files=local.files, bytes=local.bytes, reports=local.reports, refused=refused,
        last_pull=time.time(),
    )  # fmt: skip
    return local, f"pulled {summary_line(result)} into {rel}"


def stop_run(*, head, run_id: str, wait_s: float = STOP_WAIT_S) -> str:
    """Ask Ray to stop the run's job and wait (bounded) until Ray says it ended."""
    with head.jobs() as jobs:
        if not jobs.stop(run_id=run_id):
            return f"run {run_id} had already ended ({jobs.status(run_id=run_id).status})"
        deadline = time.monotonic() + wait_s
        while True:
            status = jobs.status(run_id=run_id).status
            if status in ("STOPPED", "SUCCEEDED", "FAILED") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    if status == "STOPPED":
        return f"run {run_id}: Ray says STOPPED; `tether resume {run_id}` runs what is left"
    return f"run {run_id}: asked Ray to stop it; its job is {status}"


def fetch_run(*, head, run_id: str) -> str:
    from ..runverbs import fetch_run as fetch

    branch, commit = fetch(head, run_id)
    return f"{branch} is at {commit[:10]}: git log {branch}"


def rerun_failed(*, config, repo: Path, profile: str | None, trust_new_host: bool, run_id: str):
    """``tether resume RUN``: its failed and unfinished stages (and trials) run again."""
    from ..resume import resume_run

    res = resume_run(
        run_id=run_id, config=config, cwd=repo, profile_name=profile,
        trust_new_host=trust_new_host, echo=lambda line: None,
    )  # fmt: skip
    again = ", ".join(res.rerun) or "nothing"
    return f"resumed run {run_id} as Ray job {res.job_id}: running {again} again"


def open_report(
    *, dest: Path, run_id: str, opener: Callable[[str], bool] | None = None
) -> tuple[str, bool]:
    """Open the newest report of the run folder in a browser; (what happened, opened)."""
    local = scan_results(dest)
    if not local.reports:
        return (
            f"no report in {dest} yet: the report and compare stages write report.html and "
            "compare/comparison.html; pull them with u once a stage has written one",
            False,
        )
    path = Path(dest) / local.reports[0]
    opened = (opener or webbrowser.open)(path.resolve().as_uri())
    if not opened:
        return f"no browser could be started; the report is {path}", False
    others = f" (also: {', '.join(local.reports[1:])})" if len(local.reports) > 1 else ""
    return f"opened {path}{others}", True


def compare_settings(*, dest: Path, model: RunModel) -> tuple[str, str]:
    """The metric and mode to rank by: the pulled comparison's settings, else the compare
    spec's defaults (test.accuracy, max), else a metric the trials reported."""
    try:
        settings = json.loads((Path(dest) / "compare" / "comparison.json").read_text())["settings"]
        if settings.get("mode") in ("max", "min") and settings.get("metric"):
            return str(settings["metric"]), str(settings["mode"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    reported = {m for t in model.trials.values() for m in t.results}
    if not reported or "test.accuracy" in reported:
        return "test.accuracy", "max"
    metric = sorted(reported)[0]
    return metric, "min" if "loss" in metric or "error" in metric else "max"

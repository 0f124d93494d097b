"""The built-in stages, and how user-defined ones are called.

Each stage body gets a :class:`StageContext` and returns a :class:`StageOutcome` (a one-line
summary for the commit message, and a dict recorded in ``<stage>/stage.json``). It writes its
files into ``ctx.out_dir``, a folder on the node it runs on; the pipeline ships that folder to
the head's run directory through the artifact sink. A stage that fails raises
:class:`StageError` (or anything else: the pipeline records the message).

* ``setup``: records the environment (Python, packages, GPUs, commit) in ``environment.json``.
* ``test``: ``pytest`` in the run's worktree; ``tests.json`` and ``junit.xml``.
* ``train``: ``ml.train.fit`` with the spec's ``[train]`` config, checkpoints in the run's
  checkpoint store (a retried task resumes), ``training_results.json``.
* ``evaluate``: the test metrics recomputed from the confusion matrix and checked against
  the spec's targets, ``evaluation.json``.
* ``visualize``: training curves (and the confusion matrix) as PNG.
* ``analyze``: the training-curve diagnosis, ``diagnosis.json`` / ``diagnosis.txt``.
* ``report``: the full Markdown/HTML/text report (``ml.report.analyze_results``), with LLM
  commentary when the spec sets ``llm = true``.
"""

from __future__ import annotations

import importlib
import inspect
import platform
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from tether.ml.atomic import write_bytes_atomic, write_json_atomic

from .batch_reporter import Reporter
from .command_stage import run_command_stage
from .compare_spec import TrialSpec
from .errors import ClusterRuntimeError
from .spec import ExperimentSpec, StageSpec

RESULTS_FILE = "training_results.json"


class StageError(ClusterRuntimeError):
    """A stage failed; ``last_lines`` holds the last output lines when there are any."""

    def __init__(self, message: str, *, last_lines: list[str] | None = None) -> None:
        super().__init__(message)
        self.last_lines = list(last_lines or [])

    def __reduce__(self):  # keep last_lines across Ray's pickling
        return (_stage_error, (str(self), self.last_lines))


def _stage_error(message: str, last_lines: list[str]) -> StageError:
    return StageError(message, last_lines=last_lines)


@dataclass(frozen=True)
class StageOutcome:
    summary: str = ""  # the commit message's text after "train: "
    data: dict = field(default_factory=dict)


@dataclass
class StageContext:
    """What a stage body (built-in or ``run = "module:function"``) works with."""

    run_id: str
    stage: StageSpec
    spec: ExperimentSpec
    out_dir: Path  # this stage's files: shipped to <run_dir>/<stage>/ on the head
    worktree: Path  # the run's code (the working directory of the stage)
    reporter: Reporter
    checkpoint_root: Path  # the head-disk checkpoint store's root (when no checkpoint_uri)
    fetch: Callable[[str], bytes | None]  # a file of the head run dir, by relative path
    branch: str | None = None
    trial: TrialSpec | None = None  # a compare trial: its name, extractor, seed, overrides

    @property
    def files_prefix(self) -> str:
        """Where ``out_dir``'s files land in the head run directory."""
        if self.trial is None:
            return self.stage.name
        return f"{self.stage.name}/trials/{self.trial.name}"

    def fetch_to(self, rel: str, dest: Path) -> Path:
        """Copy ``<run_dir>/<rel>`` from the head to ``dest``; StageError when it is missing."""
        data = self.fetch(rel)
        if data is None:
            raise StageError(
                f"the {self.stage.name} stage needs {rel} in the run directory, and it is not "
                "there: run the stage that writes it first (list it earlier in [[stages]])"
            )
        write_bytes_atomic(dest, data)
        return dest

    def training_results(self) -> Path:
        return self.fetch_to(f"train/{RESULTS_FILE}", self.out_dir.parent / f"in-{RESULTS_FILE}")


# --------------------------------------------------------------------------- built-ins


def run_setup(ctx: StageContext) -> StageOutcome:
    from .probe import heartbeat_fields

    packages = {}
    for name in ("torch", "ray", "numpy", "pydantic", "anthropic", "textual"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    commit = _git(ctx.worktree, "rev-parse", "HEAD")
    gpus = heartbeat_fields().get("gpus") or []
    env = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "packages": packages,
        "gpus": gpus,
        "commit": commit,
        "dirty": bool(_git(ctx.worktree, "status", "--porcelain")) if commit else None,
    }
    write_json_atomic(ctx.out_dir / "environment.json", env)
    summary = (
        f"python {env['python']}, torch {packages['torch']}, ray {packages['ray']}, "
        f"{len(gpus)} GPU{'s' if len(gpus) != 1 else ''}"
    )
    return StageOutcome(summary=summary, data=env)


def run_test(ctx: StageContext) -> StageOutcome:
    junit = ctx.out_dir / "junit.xml"
    command = (
        f"{_quote(sys.executable)} -m pytest -q -p no:cacheprovider --junitxml={_quote(str(junit))}"
    )
    outcome = run_command_stage(
        command=command,
        cwd=ctx.worktree,
        reporter=ctx.reporter,
        timeout_s=ctx.stage.timeout_s,
        echo=True,
    )
    counts = _junit_counts(junit)
    counts["exit_code"] = outcome.exit_code
    write_json_atomic(ctx.out_dir / "tests.json", counts)
    bad = counts["failures"] + counts["errors"]
    text = (
        f"{counts['passed']} passed, {counts['failures']} failed, {counts['errors']} errors, "
        f"{counts['skipped']} skipped"
    )
    if outcome.timed_out:
        raise StageError(
            f"pytest timed out after {ctx.stage.timeout_s:g}s ({text} so far)",
            last_lines=outcome.last_lines,
        )
    if outcome.exit_code == 5:  # pytest: no tests collected
        ctx.reporter.alert("the test stage found no tests", level="warning", code="test:none")
        return StageOutcome(summary="no tests collected", data=counts)
    if outcome.exit_code != 0 or bad:
        names = ", ".join(counts["failed_tests"][:5])
        message = f"tests failed: {text}" + (f" ({names})" if names else "")
        if not ctx.spec.allow_failing_tests:
            raise StageError(
                message + "; fix them, or set allow_failing_tests = true in the spec",
                last_lines=outcome.last_lines,
            )
        ctx.reporter.alert(
            message + " (allow_failing_tests = true: the run goes on)",
            level="warning",
            code="test:failed",
        )
    return StageOutcome(summary=text, data=counts)


def run_train(ctx: StageContext) -> StageOutcome:
    from tether.ml.train import TrainConfig

    from .artifacts import checkpoint_store
    from .train_stage import train_with_store

    config = TrainConfig.from_dict(ctx.spec.train) if ctx.spec.train else TrainConfig()
    store = checkpoint_store(
        run_id=ctx.run_id, head_root=ctx.checkpoint_root, uri=ctx.spec.checkpoint_uri
    )
    res = train_with_store(
        config=config,
        out_dir=ctx.out_dir,
        store=store,
        key_prefix=ctx.stage.name,
        reporter=ctx.reporter,
    )
    val = res.val_history.series()
    shown = ""
    for key in ("accuracy", "mse", "loss"):
        values = [v for v in val.get(key, []) if v is not None]
        if values:
            shown = f", val_{'acc' if key == 'accuracy' else key}={values[-1]:.3f}"
            break
    summary = f"{_model_label(res.model)} {res.num_epochs} epochs{shown}"
    return StageOutcome(
        summary=summary,
        data={"model": res.model, "epochs": res.num_epochs, "best_epoch": res.best_epoch},
    )


def run_evaluate(ctx: StageContext) -> StageOutcome:
    from tether.ml.diagnose import Target
    from tether.ml.report import check_classification
    from tether.ml.results import ClassificationResults, read_training_results

    results = read_training_results(ctx.training_results())
    test = results.test_results
    if isinstance(test, ClassificationResults):
        metrics, checks = check_classification(test)
        disagree = [c.name for c in checks if not c.agrees]
    else:
        metrics, disagree = {"mse": test.mse, "mae": test.mae}, []
    targets = []
    for text in ctx.spec.targets:
        t = Target.parse(text)
        if t.metric in metrics:
            value = metrics[t.metric]
            targets.append({"target": text, "value": value, "flag": t.flag(value).value})
    data = {
        "model": results.model,
        "metrics": metrics,
        "stored_metrics_disagree": disagree,
        "targets": targets,
    }
    write_json_atomic(ctx.out_dir / "evaluation.json", data)
    summary = " ".join(f"{k}={v:.3f}" for k, v in metrics.items() if v is not None)
    return StageOutcome(summary=f"{_model_label(results.model)} test {summary}", data=data)


def run_visualize(ctx: StageContext) -> StageOutcome:
    from tether.ml import plots
    from tether.ml.results import ClassificationResults, read_training_results

    results = read_training_results(ctx.training_results())
    made = [
        plots.training_curves(
            train=results.train_history.series(),
            val=results.val_history.series(),
            path=ctx.out_dir / "training_curves.png",
            title=f"{results.model}: training curves",
            best_epoch=results.best_epoch or None,
        )
    ]
    test = results.test_results
    if isinstance(test, ClassificationResults):
        made.append(
            plots.confusion_matrix_plot(
                matrix=test.confusion_matrix,
                class_names=test.class_names,
                path=ctx.out_dir / "confusion_matrix.png",
            )
        )
    names = [Path(p).name for p in made]
    return StageOutcome(summary=f"{len(names)} plots", data={"plots": names})


def run_analyze(ctx: StageContext) -> StageOutcome:
    from tether.ml.diagnose import Milestone, Target, diagnose, history_from_results
    from tether.ml.report import split_targets
    from tether.ml.results import read_training_results

    results = read_training_results(ctx.training_results())
    history = history_from_results(results.model_dump(by_alias=True))
    # The history targets, split as the report does (a test metric such as ``accuracy`` is
    # the evaluate stage's, not a check on the training curve of the same name).
    _, history_targets = split_targets(
        [Target.parse(t) for t in ctx.spec.targets], history_keys=list(history)
    )
    diag = diagnose(
        history,
        targets=history_targets,
        milestones=[Milestone.parse(m) for m in ctx.spec.milestones],
        patience=results.model_config_.get("patience", 5),
        min_delta=results.model_config_.get("min_delta", 1e-4),
    )
    write_json_atomic(ctx.out_dir / "diagnosis.json", diag.to_dict())
    write_bytes_atomic(ctx.out_dir / "diagnosis.txt", (diag.to_text() + "\n").encode())
    flags = [f.code for f in diag.findings if f.severity != "info"]
    summary = diag.status.value
    if diag.fit.value != "unknown":
        summary += f", {diag.fit.value}"
    if flags:
        summary += f", flags: {', '.join(flags)}"
    return StageOutcome(summary=summary, data={"status": diag.status.value, "flags": flags})


def run_report(ctx: StageContext) -> StageOutcome:
    from tether.ml.diagnose import Milestone, Target
    from tether.ml.report import analyze_results

    analysis = analyze_results(
        results_path=ctx.training_results(),
        out_dir=ctx.out_dir,
        targets=[Target.parse(t) for t in ctx.spec.targets],
        milestones=[Milestone.parse(m) for m in ctx.spec.milestones],
        run_meta={"run": ctx.run_id, "spec": ctx.spec.name, "branch": ctx.branch},
        llm=ctx.spec.llm,
    )
    return StageOutcome(summary="", data={"summary": analysis.summary})  # "docs: final report"


BUILTINS: dict[str, Callable[[StageContext], StageOutcome]] = {
    "setup": run_setup,
    "test": run_test,
    "train": run_train,
    "evaluate": run_evaluate,
    "visualize": run_visualize,
    "analyze": run_analyze,
    "report": run_report,
}


# --------------------------------------------------------------------------- user stages


def run_function(ctx: StageContext) -> StageOutcome:
    """``run = "pkg.module:function"``: imported from the worktree and called with the
    context (when it takes a parameter). A returned dict is recorded, a string is the
    summary."""
    module_name, func_name = ctx.stage.run.split(":")
    root = str(ctx.worktree)
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise StageError(
            f"stage {ctx.stage.name}: cannot import {module_name!r} from {ctx.worktree}: {exc}"
        ) from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise StageError(f"stage {ctx.stage.name}: {module_name} has no function {func_name!r}")
    takes_ctx = bool(inspect.signature(func).parameters)
    value = func(ctx) if takes_ctx else func()
    if isinstance(value, StageOutcome):
        return value
    if isinstance(value, str):
        return StageOutcome(summary=value)
    if isinstance(value, dict):
        return StageOutcome(data=_jsonable(value))
    return StageOutcome()


def run_command(ctx: StageContext) -> StageOutcome:
    """``command = "..."``: ``bash -c`` in the worktree; TETHER lines become events and
    ``TETHER_OUT_DIR`` names the folder whose files are kept."""
    outcome = run_command_stage(
        command=ctx.stage.command,
        cwd=ctx.worktree,
        env={"TETHER_OUT_DIR": str(ctx.out_dir)},
        reporter=ctx.reporter,
        timeout_s=ctx.stage.timeout_s,
        echo=True,
    )
    if outcome.timed_out:
        raise StageError(
            f"command timed out after {ctx.stage.timeout_s:g}s: {ctx.stage.command}",
            last_lines=outcome.last_lines,
        )
    if outcome.exit_code != 0:
        raise StageError(
            f"command exited {outcome.exit_code}: {ctx.stage.command}",
            last_lines=outcome.last_lines,
        )
    return StageOutcome(data={"exit_code": 0, "events_forwarded": outcome.events_forwarded})


def body_for(stage: StageSpec) -> Callable[[StageContext], StageOutcome]:
    if stage.run:
        return run_function
    if stage.command:
        return run_command
    if stage.name not in BUILTINS:
        raise StageError(f"stage {stage.name!r} is not built in yet: give it run= or command=")
    return BUILTINS[stage.name]


# --------------------------------------------------------------------------- helpers


def _model_label(model: str) -> str:
    return f"model={model}" if model == "lstm" else f"extractor={model}"


def _junit_counts(path: Path) -> dict:
    counts = {"tests": 0, "passed": 0, "failures": 0, "errors": 0, "skipped": 0}
    failed: list[str] = []
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return {**counts, "failed_tests": failed}
    for suite in root.iter("testsuite"):
        for key in ("tests", "failures", "errors", "skipped"):
            counts[key] += int(suite.get(key, 0))
        for case in suite.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                failed.append(f"{case.get('classname', '')}::{case.get('name', '')}")
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {**counts, "failed_tests": failed}


def _git(cwd: Path, *args: str) -> str | None:
    try:
        res = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def _quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))

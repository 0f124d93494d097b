"""``tether analyze`` and ``tether diagnose``: the laptop side of the analysis.

Thin: parse the command's inputs, call ``ml.report`` / ``ml.diagnose`` (the same functions
the pipeline's analyze and report stages call), print a short summary and the paths written.
Nothing here loads torch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from tether.ml.atomic import write_json_atomic
from tether.ml.diagnose import Target, diagnose, history_from_results, read_milestones

from .errors import TetherError

Echo = Callable[[str], None]
_HISTORY_HINT = "give a history JSON or a training_results.json (formats: docs/analysis.md)"


def _targets(texts: Sequence[str]) -> list[Target]:
    return [Target.parse(t) for t in texts]


def run_analyze(
    *,
    results: Path | None,
    csv: Sequence[Path],
    out: Path | None,
    targets: Sequence[str],
    milestones: Path | None,
    llm: bool,
    llm_model: str | None,
    echo: Echo,
) -> int:
    from tether.ml.report import analyze_csv, analyze_results

    if results is None and not csv:
        raise TetherError(
            "nothing to analyze", hint="give a training_results.json, or --csv FILE..."
        )
    if results is not None and csv:
        raise TetherError("give either a results file or --csv files, not both")
    if csv:
        if targets or milestones:
            raise TetherError(
                "--target and --milestones apply to a results file, not to --csv",
                hint="use `tether diagnose` on a history JSON for targets on any metric",
            )
        analysis = analyze_csv(
            paths=list(csv),
            out_dir=out or csv[0].parent / "analysis",
            llm=llm,
            llm_model=llm_model,
        )
    else:
        analysis = analyze_results(
            results_path=results,
            out_dir=out,
            targets=_targets(targets),
            milestones=read_milestones(milestones) if milestones else (),
            llm=llm,
            llm_model=llm_model,
        )
    for line in analysis.summary:
        echo(line)
    if analysis.llm is not None and analysis.llm.status != "ok":
        echo(analysis.llm.message)
    echo("wrote:")
    for path in analysis.paths.values():
        echo(f"  {path}")
    return 0


def load_history(path: Path) -> dict[str, list]:
    """A JSON object of metric -> per-epoch values, or a training_results.json."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TetherError(f"{path}: not found", hint=_HISTORY_HINT) from None
    except json.JSONDecodeError as exc:
        raise TetherError(
            f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})", hint=_HISTORY_HINT
        ) from None
    if isinstance(data, dict) and "train_history" in data:
        return history_from_results(data)
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise TetherError(
            f"{path}: expected a JSON object of metric name -> list of per-epoch values "
            '(e.g. {"loss": [0.9, 0.5], "val_loss": [1.0, 0.7]}) or a training_results.json',
            hint=_HISTORY_HINT,
        )
    return data


def run_diagnose(
    *,
    history: Path,
    targets: Sequence[str],
    milestones: Path | None,
    monitor: str | None,
    out: Path | None,
    as_json: bool,
    echo: Echo,
) -> int:
    parsed_targets = _targets(targets)  # user input first: fail before reading files
    parsed_milestones = read_milestones(milestones) if milestones else ()
    d = diagnose(
        load_history(history),
        monitor=monitor,
        targets=parsed_targets,
        milestones=parsed_milestones,
    )
    out_path = (out or history.parent) / "diagnosis.json"
    write_json_atomic(out_path, d.to_dict())
    echo(json.dumps(d.to_dict(), indent=2) if as_json else d.to_text())
    echo(f"wrote: {out_path}")
    return 0

"""``tether analyze --compare RUN_DIR``: rebuild a comparison report on the laptop.

RUN_DIR is a pulled run folder (``results/<run-id>/``) or its comparison folder
(``results/<run-id>/compare/``). The trials are read back from ``trials/<trial>/`` (their
``training_results.json`` where they have one, else their ``trial.json``), the settings
(metric, mode, epoch), the run's provenance and the trials not pulled yet (pending ones have no
folder) from the ``comparison.json`` the compare stage wrote, and the report is written again
by ``tether.ml.comparison_report.write_comparison``, the function the stage itself calls.
``--metric``/``--mode`` rank by another metric. Nothing here loads torch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from tether.ml.comparison_report import (
    JSON_FILE,
    TRIALS_DIR,
    Provenance,
    TrialRecord,
    read_trials,
    tested_epoch,
    write_comparison,
)
from tether.ml.metrics import lower_is_better

from .errors import TetherError

Echo = Callable[[str], None]
DEFAULT_METRIC = "test.accuracy"
_WHERE_HINT = (
    "give a pulled run folder (results/<run-id>/, `tether pull RUN`) or its compare/ folder"
)


def find_compare_dir(path: Path) -> Path:
    """The comparison folder (the one holding ``trials/``) of a run folder, or ``path``."""
    if not path.is_dir():
        raise TetherError(f"{path}: no such folder", hint=_WHERE_HINT)
    if (path / TRIALS_DIR).is_dir():
        return path
    if (path / "compare" / TRIALS_DIR).is_dir():
        return path / "compare"
    found = sorted(p for p in path.iterdir() if p.is_dir() and (p / TRIALS_DIR).is_dir())
    if len(found) == 1:
        return found[0]
    if found:
        names = ", ".join(str(p) for p in found)
        raise TetherError(
            f"{path} holds several comparisons ({names})",
            hint="give one of them: tether analyze --compare FOLDER",
        )
    raise TetherError(
        f"{path} has no comparison: no {TRIALS_DIR}/ folder in it or in {path / 'compare'}",
        hint="the run has no compare stage, or its trials have not been pulled yet "
        "(`tether pull RUN`); " + _WHERE_HINT,
    )


def _previous(path: Path) -> dict:
    """The comparison.json the compare stage wrote, or {} when there is none."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TetherError(
            f"{path} cannot be read ({exc})",
            hint="pull the run again, or remove the file and give --metric/--mode",
        ) from None
    if not isinstance(data, dict):
        raise TetherError(f"{path} is not a comparison", hint="pull the run again")
    return data


def _provenance(previous: dict, run_dir: Path) -> Provenance:
    if isinstance(previous.get("provenance"), dict):
        return Provenance.model_validate(previous["provenance"])
    try:  # the run record `tether submit` wrote beside the run's results
        run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Provenance()
    if not isinstance(run, dict):
        return Provenance()
    dirty = run.get("dirty")
    return Provenance(
        run=run.get("run_id"), spec=run.get("spec"), branch=run.get("branch"),
        commit=run.get("commit"), dirty=dirty if isinstance(dirty, bool) else None,
    )  # fmt: skip


def _not_pulled(previous: dict, have: set[str], source: Path) -> list[TrialRecord]:
    """Trials the comparison.json lists that have no folder here (pending ones have none)."""
    out = []
    for i, raw in enumerate(previous.get("trials") or []):
        try:
            rec = TrialRecord.model_validate(raw)
        except ValidationError as exc:
            raise TetherError(
                f"{source}: trials[{i}] is not a trial record ({exc.errors()[0]['msg']})",
                hint="pull the run again",
            ) from None
        if rec.trial not in have:
            out.append(rec)
    return out


def run_analyze_compare(
    *,
    run_dir: Path,
    out: Path | None,
    metric: str | None,
    mode: str | None,
    echo: Echo,
) -> int:
    compare_dir = find_compare_dir(Path(run_dir))
    records = read_trials(compare_dir)
    if not records:
        raise TetherError(
            f"{compare_dir / TRIALS_DIR} holds no trial folders",
            hint="no trial has ended yet, or they have not been pulled (`tether pull RUN`)",
        )
    previous = _previous(compare_dir / JSON_FILE)
    settings = previous.get("settings") if isinstance(previous.get("settings"), dict) else {}
    records += _not_pulled(previous, {r.trial for r in records}, compare_dir / JSON_FILE)
    chosen = metric or settings.get("metric") or DEFAULT_METRIC
    if mode is None:
        same = chosen == settings.get("metric") and settings.get("mode") in ("max", "min")
        mode = settings["mode"] if same else ("min" if lower_is_better(chosen) else "max")
    finished = [r for r in records if r.status == "finished"]
    if finished and all(r.value(chosen) is None for r in finished):
        have = sorted({m for r in finished for m in r.metrics if r.value(m) is not None})
        raise TetherError(
            f"no finished trial has a value of {chosen!r}",
            hint=f"give --metric as one of: {', '.join(have) or 'none: they recorded no metric'}",
        )
    epoch = settings["epoch"] if "epoch" in settings else tested_epoch(compare_dir)
    counts = previous.get("counts") if isinstance(previous.get("counts"), dict) else {}
    expected = counts.get("expected") if isinstance(counts.get("expected"), int) else None
    comparison = write_comparison(
        records=records,
        metric=chosen,
        mode=mode,
        epoch=epoch if epoch in ("best", "last", "trial") else None,
        provenance=_provenance(previous, compare_dir.parent),
        out_dir=out or compare_dir,
        expected_trials=max(expected, len(records)) if expected is not None else None,
    )
    for line in comparison.text.splitlines():
        echo(line)
    echo("wrote:")
    for path in comparison.paths.values():
        echo(f"  {path}")
    return 0

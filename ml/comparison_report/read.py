"""Rebuild a comparison's trial records from its folder: ``<dir>/trials/<trial>/trial.json``,
with the metrics and validation curves taken from the trial's ``training_results.json`` where
it has one (the built-in training), so ``tether analyze --compare`` on a pulled run recomputes
the report from what the trials themselves wrote."""

from __future__ import annotations

import json
from pathlib import Path

from ..results import read_training_results
from .build import Epoch
from .records import (
    RESULTS_FILE,
    TRIAL_FILE,
    ComparisonRecordError,
    TrialRecord,
    metrics_from_training_results,
    read_trial,
    val_curves_from_training_results,
)

TRIALS_DIR = "trials"
_HINT = (
    "pull the run again (`tether pull RUN`), or remove the trial's folder if the trial is to "
    "be left out"
)


def _from_folder_name(folder: Path) -> TrialRecord:
    """A finished trial known only by its results: extractor and seed from ``<ext>-s<seed>``."""
    extractor, sep, seed = folder.name.rpartition("-s")
    if not sep or not extractor or not seed.isdigit():
        raise ComparisonRecordError(
            f"{folder} has a {RESULTS_FILE} but no {TRIAL_FILE}, and its name is not "
            "<extractor>-s<seed>: the trial's extractor and seed are unknown",
            hint=_HINT,
        )
    return TrialRecord(trial=folder.name, extractor=extractor, seed=int(seed), status="finished")


def _with_results(rec: TrialRecord, path: Path, *, recorded: bool) -> TrialRecord:
    results = read_training_results(path).to_json_dict()
    metrics = metrics_from_training_results(results, gpus=rec.gpus)
    if not recorded:  # the trial's GPU share is in its record only: GPU-hours unknown
        metrics["gpu_hours"] = None
    return rec.model_copy(
        update={
            "metrics": {**rec.metrics, **metrics},
            "val_curves": val_curves_from_training_results(results),
            "device": rec.device or results.get("device"),
        }
    )


def read_trials(compare_dir: Path) -> list[TrialRecord]:
    """The trial records of the comparison in ``compare_dir`` (sorted by folder name)."""
    trials_dir = Path(compare_dir) / TRIALS_DIR
    if not trials_dir.is_dir():
        raise ComparisonRecordError(
            f"{compare_dir} has no {TRIALS_DIR}/ folder: it is not a comparison's folder",
            hint="give a run's compare folder (results/<run-id>/compare), pulled with "
            "`tether pull RUN`",
        )
    out = []
    for folder in sorted(p for p in trials_dir.iterdir() if p.is_dir()):
        if folder.name.startswith("."):
            continue
        record, results = folder / TRIAL_FILE, folder / RESULTS_FILE
        if record.is_file():
            rec = read_trial(record)
        elif results.is_file():
            rec = _from_folder_name(folder)
        else:
            raise ComparisonRecordError(
                f"{folder} has neither {TRIAL_FILE} nor {RESULTS_FILE}: not a trial's folder",
                hint=_HINT,
            )
        if results.is_file():
            rec = _with_results(rec, results, recorded=record.is_file())
        out.append(rec)
    return out


def tested_epoch(compare_dir: Path) -> Epoch:
    """Whose test metrics the trials' ``training_results.json`` hold ("best"/"last", from
    their ``model_config.test_weights``); None when none says, or when they disagree."""
    seen: set[str] = set()
    for path in sorted((Path(compare_dir) / TRIALS_DIR).glob(f"*/{RESULTS_FILE}")):
        try:
            config = json.loads(path.read_text(encoding="utf-8")).get("model_config") or {}
        except (OSError, ValueError, AttributeError):
            continue
        if config.get("test_weights") in ("best", "last"):
            seen.add(config["test_weights"])
        elif "test_weights" not in config and config:
            seen.add("best")  # TrainConfig's default
    return seen.pop() if len(seen) == 1 else None  # type: ignore[return-value]

"""The comparison report of a compare stage (extractor x seed trials), torch-free.

``write_comparison(records=..., metric=..., mode=..., epoch=..., provenance=..., out_dir=...)``
writes ``comparison.json``, ``comparison.md``, a self-contained ``comparison.html`` and the
plots (``plots/val_curves.png``, ``plots/metric_bars.png``, ``plots/accuracy_vs_latency.png``)
and returns a ``Comparison`` (``summary_line`` for the commit message, ``text`` for the job
log, ``paths``). ``read_trials(compare_dir)`` rebuilds the records from a comparison's folder.
Every statistic comes from ``tether.ml.comparison_stats``.

One module per concern: ``records`` (a trial's record), ``build`` (the content and the JSON),
``summary`` (the line, the log text, number formats), ``render`` (the report blocks),
``plots``, ``write`` (``write_comparison``) and ``read`` (``read_trials``).
"""

import importlib
from typing import Any

_WHERE = {  # name -> the submodule that defines it: imported on first use
    "Comparison": "write",
    "ComparisonData": "build",
    "ComparisonRecordError": "records",
    "EPOCH_TEXT": "build",
    "Epoch": "build",
    "ExtractorView": "build",
    "HTML_FILE": "write",
    "JSON_FILE": "write",
    "MARKDOWN_FILE": "write",
    "OTHER_METRICS": "build",
    "PLOTS": "write",
    "PLOTS_DIR": "write",
    "Provenance": "build",
    "RESULTS_FILE": "records",
    "TRIALS_DIR": "read",
    "TRIAL_FILE": "records",
    "TrialRecord": "records",
    "TrialStatus": "records",
    "config_hash": "records",
    "metrics_from_training_results": "records",
    "read_trial": "records",
    "read_trials": "read",
    "tested_epoch": "read",
    "trial_id": "records",
    "val_curves_from_training_results": "records",
    "write_comparison": "write",
}


def __getattr__(name: str) -> Any:
    """Names load their submodule on first use (PEP 562): the records (which the spec reads
    on the laptop) stay light, without matplotlib and scipy."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "EPOCH_TEXT",
    "HTML_FILE",
    "JSON_FILE",
    "MARKDOWN_FILE",
    "OTHER_METRICS",
    "PLOTS",
    "PLOTS_DIR",
    "RESULTS_FILE",
    "TRIALS_DIR",
    "TRIAL_FILE",
    "Comparison",
    "ComparisonData",
    "ComparisonRecordError",
    "Epoch",
    "ExtractorView",
    "Provenance",
    "TrialRecord",
    "TrialStatus",
    "config_hash",
    "metrics_from_training_results",
    "read_trial",
    "read_trials",
    "tested_epoch",
    "trial_id",
    "val_curves_from_training_results",
    "write_comparison",
]

"""The widgets of the Run and Compare screens: one per module, each with its DEFAULT_CSS,
each rendering from the ``RunModel`` and redrawing only what changed."""

from .alerts_panel import AlertsPanel
from .banner import ConnectionBanner
from .compare_table import CompareRow, CompareTable, compare_rows, split_trial, trial_states
from .health_table import HealthTable
from .log_panel import LogPanel
from .metric_chart import ChartsGrid, MetricChart
from .results_panel import ResultsInfo, ResultsPanel
from .run_header import RunHeader
from .stage_strip import StageStrip
from .trial_progress import TrialRow, TrialsPanel, visible_trials

__all__ = [
    "AlertsPanel",
    "ChartsGrid",
    "CompareRow",
    "CompareTable",
    "ConnectionBanner",
    "HealthTable",
    "LogPanel",
    "MetricChart",
    "ResultsInfo",
    "ResultsPanel",
    "RunHeader",
    "StageStrip",
    "TrialRow",
    "TrialsPanel",
    "compare_rows",
    "split_trial",
    "trial_states",
    "visible_trials",
]
